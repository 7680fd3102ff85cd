"""Write a run's files: segmentation.seg.nrrd, attention/*.nrrd, report.json, overview.png
(and probabilities/*.nrrd when the result has them).

Files are written into a staging folder and moved into place only when all are complete, so a failed or
cancelled run leaves no partial output.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from .nrrd import write_nrrd, write_segmentation
from .overview import render_overview
from .package import describe_environment

SEGMENTATION_FILE = "segmentation.seg.nrrd"
REPORT_FILE = "report.json"
OVERVIEW_FILE = "overview.png"
ATTENTION_DIR = "attention"
PROBABILITY_DIR = "probabilities"
MAP_STEPS = 1024  # token maps are written in steps of 1/1024
AUTO_INPUT_GRID_LIMIT = 2 * 2**30  # bytes of float32 maps on the input grid beyond which "auto" keeps the token grid


def write_outputs(
    result,
    out_dir: str | Path,
    *,
    image=None,
    window=None,
    attention_grid: str = "auto",
    overview: bool = True,
    extra_report: dict | None = None,
    progress=None,
) -> dict[str, Path]:
    """Write every output of ``result`` into ``out_dir`` (created if needed); returns name -> path.

    Args:
        result: a SegmentationResult.
        image: the first input channel's array (i, j, k) for the overview (skipped when None).
        window: display window (low, high) for the overview.
        attention_grid: ``"input"`` maps each token map onto the input grid (exactly its geometry);
            ``"token"`` writes the coarse token grid with its own geometry (small and fast; same place in space);
            ``"auto"`` is ``"input"`` unless that would exceed 2 GiB of maps (e.g. 64 maps of a 512^2 x 300 CT).
        progress: optional ``progress(fraction)`` called after each file.
    """
    out_dir = Path(out_dir)
    staging = Path(tempfile.mkdtemp(prefix="tokenunet-run-"))
    written: dict[str, Path] = {}
    try:
        write_segmentation(staging / SEGMENTATION_FILE, result.labels, result.affine, result.label_table)
        written["segmentation"] = Path(SEGMENTATION_FILE)
        maps = []
        if attention_grid == "auto":
            size = (
                0
                if result.heatmaps is None
                else (len(result.heatmaps.kinds) * result.heatmaps.num_tokens * result.labels.size * 4)
            )
            attention_grid = "input" if size <= AUTO_INPUT_GRID_LIMIT else "token"
        if result.heatmaps is not None:
            (staging / ATTENTION_DIR).mkdir()
            best = {(m["kind"], m["token"]): m for m in result.token_matches}
            tasks = [(kind, token) for kind in result.heatmaps.kinds for token in range(result.heatmaps.num_tokens)]

            def write_map(kind: str, token: int) -> dict:
                match = best.get((kind, token), {})
                name = f"token{token:02d}_{kind}.nrrd"
                fields = {
                    "TokenUNet_Token": str(token),
                    "TokenUNet_Kind": kind,
                    "TokenUNet_BestLabel": match.get("best_label", ""),
                    "TokenUNet_SoftDice": str(match.get("soft_dice", "")),
                }
                if attention_grid == "token":
                    array = result.heatmaps.coarse[kind][token].astype(np.float32)  # a copy
                    affine = result.heatmaps.coarse_grid.affine
                else:
                    array, affine = result.heatmaps.get(kind, token), result.affine
                # stored in steps of 1/1024 (exact in float32): compresses about twice as fast and small
                np.multiply(array, MAP_STEPS, out=array)
                np.round(array, out=array)
                array *= np.float32(1.0 / MAP_STEPS)
                write_nrrd(staging / ATTENTION_DIR / name, array, affine, fields)
                return {
                    "file": f"{ATTENTION_DIR}/{name}",
                    "token": token,
                    "kind": kind,
                    "best_label": match.get("best_label"),
                    "soft_dice": match.get("soft_dice"),
                }

            # zlib and SimpleITK release the GIL: a few threads write maps in parallel
            with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
                futures = [pool.submit(write_map, kind, token) for kind, token in tasks]
                for number, future in enumerate(as_completed(futures)):
                    future.result()
                    if progress:
                        progress(0.8 * (number + 1) / len(tasks))
                maps = [future.result() for future in futures]
            written["attention"] = Path(ATTENTION_DIR)
        if result.probabilities:
            (staging / PROBABILITY_DIR).mkdir()
            for name, array in result.probabilities.items():
                write_nrrd(staging / PROBABILITY_DIR / f"{name}.nrrd", array, result.affine)
            written["probabilities"] = Path(PROBABILITY_DIR)
        if overview and image is not None:
            render_overview(staging / OVERVIEW_FILE, image, result, window)
            written["overview"] = Path(OVERVIEW_FILE)
        report = result.report()
        report["environment"] = describe_environment()
        report["attention_maps"] = maps
        report["attention_grid"] = attention_grid
        report.update(extra_report or {})
        report["files"] = sorted(str(p) for p in written.values()) + [REPORT_FILE]
        (staging / REPORT_FILE).write_text(json.dumps(report, indent=2), encoding="utf-8")
        written["report"] = Path(REPORT_FILE)
        out_dir.mkdir(parents=True, exist_ok=True)
        for relative in written.values():
            target = out_dir / relative
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            shutil.move(str(staging / relative), str(target))
        if progress:
            progress(1.0)
        return {key: out_dir / relative for key, relative in written.items()}
    finally:
        shutil.rmtree(staging, ignore_errors=True)
