"""``overview.png``: axial, coronal and sagittal slices with the labels, and the most telling token maps."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from .geometry import Grid, image_from_array, model_grid, resample_image
from .output_folder import write_file_atomically

TILE = 220  # pixels per view


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 image as PNG (no imaging library needed), all at once: a full disk or a kill while it
    is written leaves the file that was there (:func:`.output_folder.write_file_atomically`)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    write_file_atomically(path, png)
    return Path(path)


def _hot(values: np.ndarray) -> np.ndarray:
    v = np.clip(values, 0, 1)[..., None]
    return np.clip(np.concatenate([3 * v, 3 * v - 1, 3 * v - 2], axis=-1), 0, 1)


def _oriented(planes: list[np.ndarray]) -> list[np.ndarray]:
    """The (x, y), (x, z) and (y, z) planes of an RAS-aligned grid as displayed: rows anterior -> posterior
    (axial) or superior -> inferior (coronal, sagittal); columns right -> left (axial, coronal) or anterior ->
    posterior (sagittal)."""
    return [plane.T[::-1, ::-1] for plane in planes]


def plane_views(array, source, grid: Grid, point, interpolation: str, default: float, dtype=np.float32):
    """The axial, coronal and sagittal views (:func:`_oriented`) through ``point`` of ``array`` resampled onto
    ``grid``; only those three planes are resampled (a 512 x 512 x 300 CT onto the whole display grid took most
    of the overview's second)."""
    x, y, z = (int(v) for v in point)
    nx, ny, nz = grid.shape
    planes = [
        grid.sub_grid((0, 0, z), (nx, ny, 1)),
        grid.sub_grid((0, y, 0), (nx, 1, nz)),
        grid.sub_grid((x, 0, 0), (1, ny, nz)),
    ]
    source = source if isinstance(source, Grid) else Grid(tuple(array.shape), source)
    resampled = []
    for plane in planes:  # each from the part of the volume around it: no copy of the whole volume
        box = _footprint(plane, source)
        part = source.sub_grid([b.start for b in box], [b.stop - b.start for b in box])
        image = image_from_array(array[box], part.affine)
        resampled.append(resample_image(image, plane, interpolation, default, dtype))
    return _oriented([resampled[0][:, :, 0], resampled[1][:, 0, :], resampled[2][0, :, :]])


def _footprint(target: Grid, source: Grid, margin: int = 2) -> tuple[slice, ...]:
    """The index box of ``source`` that holds every voxel an interpolation onto ``target`` can read (its box
    plus ``margin`` voxels, within the volume; at least one voxel wide so that the image stays 3D)."""
    corners = np.linalg.solve(source.affine, np.c_[target.corners_ras(), np.ones(8)].T)[:3].T
    low = np.clip(np.floor(corners.min(axis=0)).astype(int) - margin, 0, np.array(source.shape) - 1)
    high = np.clip(np.ceil(corners.max(axis=0)).astype(int) + margin + 1, low + 1, np.array(source.shape))
    return tuple(slice(int(lo), int(hi)) for lo, hi in zip(low, high, strict=True))


def label_centre(labels: np.ndarray, source: Grid, grid: Grid) -> np.ndarray:
    """The index on ``grid`` nearest to the centroid of ``labels`` > 0 (the grid's centre when none), from
    per-axis voxel counts on the labels' own grid."""
    step = 2 if min(labels.shape) >= 64 else 1  # every 8th voxel of a large map is plenty for a view's centre
    mask = labels[::step, ::step, ::step] > 0
    if step > 1 and not mask.any():  # small structures between the sampled voxels
        step, mask = 1, labels > 0
    total = int(np.count_nonzero(mask))
    if not total:
        return np.array(grid.shape) // 2
    centre = [
        step * float(np.dot(np.count_nonzero(mask, axis=tuple(a for a in range(3) if a != axis)), np.arange(n))) / total
        for axis, n in enumerate(mask.shape)
    ]
    ras = source.affine @ np.array([*centre, 1.0])
    index = np.linalg.solve(grid.affine, ras)[:3]
    return np.clip(np.rint(index), 0, np.array(grid.shape) - 1).astype(int)


def display_window(image: np.ndarray, most: int = 2_000_000) -> tuple[float, float]:
    """The 1st and 99th percentiles of ``image`` (from an even subsample of at most ``most`` voxels)."""
    if not image.size:
        return 0.0, 1.0
    step = max(1, round((image.size / most) ** (1 / 3)))
    low, high = np.percentile(image[::step, ::step, ::step], [1, 99])
    return float(low), float(high)


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
    point = label_centre(result.labels, source, grid)
    low, high = display_window(image) if window is None else (float(window[0]), float(window[1]))
    gray_views = [
        np.clip((view - low) / max(high - low, 1e-6), 0, 1)
        for view in plane_views(image, source, grid, point, "linear", float(image.min()))
    ]
    label_views = plane_views(result.labels, source, grid, point, "nearest", 0, np.uint8)
    colors = np.zeros((256, 3), np.float32)
    for label in result.label_table:
        colors[label.value] = np.asarray(label.color) / 255.0
    rows = [
        [
            _fit(np.where((lab > 0)[..., None], 0.45 * g[..., None] + 0.55 * colors[lab], g[..., None]))
            for g, lab in zip(gray_views, label_views, strict=True)
        ]
    ]
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
            maps = plane_views(heat.coarse["gather"][token], heat.coarse_grid, grid, point, "linear", 0.0)
            rows.append(
                [
                    _fit(
                        0.5 * g[..., None]
                        + 0.5 * _hot(m) * (m[..., None] > 0.05)
                        + 0.5 * g[..., None] * (m[..., None] <= 0.05)
                    )
                    for g, m in zip(gray_views, maps, strict=True)
                ]
            )
    canvas = np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)
    return write_png(path, (np.clip(canvas, 0, 1) * 255).astype(np.uint8))
