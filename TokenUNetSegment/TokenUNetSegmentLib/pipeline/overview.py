"""``overview.png``: axial, coronal and sagittal slices with the labels, and the most telling token maps."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from .geometry import model_grid, resample

TILE = 220  # pixels per view


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 image as PNG (no imaging library needed)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    Path(path).write_bytes(png)
    return Path(path)


def _hot(values: np.ndarray) -> np.ndarray:
    v = np.clip(values, 0, 1)[..., None]
    return np.clip(np.concatenate([3 * v, 3 * v - 1, 3 * v - 2], axis=-1), 0, 1)


def _views(volume: np.ndarray, point) -> list[np.ndarray]:
    """Axial, coronal, sagittal slices of an RAS-aligned (x, y, z) volume, oriented for display
    (radiological: patient right on the left; anterior and superior up)."""
    x, y, z = point
    axial = volume[:, :, z].T[::-1, ::-1]  # rows: anterior -> posterior; columns: right -> left
    coronal = volume[:, y, :].T[::-1, ::-1]  # rows: superior -> inferior
    sagittal = volume[x, :, :].T[::-1, ::-1]  # rows: superior -> inferior; columns: anterior -> posterior
    return [axial, coronal, sagittal]


def _fit(tile: np.ndarray) -> np.ndarray:
    """Nearest-neighbour scale into a TILE x TILE square (aspect kept, black borders)."""
    height, width = tile.shape[:2]
    scale = TILE / max(height, width)
    rows = np.minimum((np.arange(int(height * scale)) / scale).astype(int), height - 1)
    cols = np.minimum((np.arange(int(width * scale)) / scale).astype(int), width - 1)
    scaled = tile[rows][:, cols]
    out = np.zeros((TILE, TILE, 3), np.float32)
    top, left = (TILE - scaled.shape[0]) // 2, (TILE - scaled.shape[1]) // 2
    out[top : top + scaled.shape[0], left : left + scaled.shape[1]] = scaled
    return out


def render_overview(path: str | Path, image: np.ndarray, result, window=None, max_tokens: int = 3) -> Path:
    """Render the overview of ``result`` (a SegmentationResult) over the first input ``image``."""
    source = result.grid
    spacing = max(float(source.spacing.min()), float(np.max(np.ptp(source.corners_ras(), axis=0))) / 200)
    grid = model_grid(source, "RAS", (spacing,) * 3)
    low_default = float(image.min())
    display = resample(image, source, grid, "linear", default=low_default)
    labels = resample(result.labels, source, grid, "nearest", 0, np.uint8)
    if window is None:
        window = np.percentile(display, [1, 99]) if display.size else (0, 1)
    low, high = float(window[0]), float(window[1])
    gray = np.clip((display - low) / max(high - low, 1e-6), 0, 1)
    colors = np.zeros((256, 3), np.float32)
    for label in result.label_table:
        colors[label.value] = np.asarray(label.color) / 255.0
    point = (np.argwhere(labels > 0).mean(axis=0) if labels.any() else np.array(grid.shape) / 2).astype(int)
    rows = []
    gray_views = _views(gray, point)
    label_views = _views(labels, point)
    rows.append(
        [
            _fit(np.where((lab > 0)[..., None], 0.45 * g[..., None] + 0.55 * colors[lab], g[..., None]))
            for g, lab in zip(gray_views, label_views, strict=True)
        ]
    )
    heat = result.token_maps
    if heat is not None and result.token_matches:
        matches = sorted((m for m in result.token_matches if m["kind"] == "gather"), key=lambda m: -m["soft_dice"])
        chosen, seen = [], set()
        for match in matches:  # the best token of each label first, then the next best
            if match["best_label"] not in seen:
                chosen.append(match["token"])
                seen.add(match["best_label"])
        chosen += [m["token"] for m in matches if m["token"] not in chosen]
        for token in chosen[:max_tokens]:
            maps = resample(heat.coarse["gather"][token], heat.coarse_grid, grid, "linear", 0.0)
            rows.append(
                [
                    _fit(
                        0.5 * g[..., None]
                        + 0.5 * _hot(m) * (m[..., None] > 0.05)
                        + 0.5 * g[..., None] * (m[..., None] <= 0.05)
                    )
                    for g, m in zip(gray_views, _views(maps, point), strict=True)
                ]
            )
    canvas = np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)
    return write_png(path, (np.clip(canvas, 0, 1) * 255).astype(np.uint8))
