"""Sliding windows over a volume and the blended stitching of their outputs, in torch alone.

It computes what MONAI's ``sliding_window_inference`` computes for the pipeline's settings (constant padding
with zeros up to the window, per-axis overlaps, ``gaussian`` or ``constant`` blending with MONAI's importance
map, several outputs of which some are on a coarser grid such as token maps) without importing MONAI, whose
package import costs 1 s on a laptop and 15 s on a machine with many optional packages installed, on every run
of the command line. ``Testing/pipeline/test_stitching.py`` checks it against MONAI's function.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

GAUSSIAN_SIGMA_SCALE = 0.125  # sigma of the Gaussian blending, as a fraction of the window side
SMALLEST_WEIGHT = 1e-3  # no voxel of a window weighs less (MONAI's floor for the Gaussian map)


def importance_map(roi_size: Sequence[int], blending: str, device=None) -> torch.Tensor:
    """The weight of each voxel of a window, (1, 1, *roi_size) float32: all ones for ``constant``; for
    ``gaussian`` a product of per-axis Gaussians centred on the window (sigma 1/8 of its side), floored at the
    larger of its smallest value and 1e-3, so that window edges count for little but never for nothing."""
    if blending == "constant":
        return torch.ones((1, 1, *roi_size), dtype=torch.float32, device=device)
    if blending != "gaussian":
        raise ValueError(f"unknown blending '{blending}'; use 'gaussian' or 'constant'")
    weights = None
    for side in roi_size:
        x = torch.arange(-(side - 1) / 2.0, (side - 1) / 2.0 + 1, dtype=torch.float32, device=device)
        profile = torch.exp(x**2 / (-2 * (side * GAUSSIAN_SIGMA_SCALE) ** 2))
        weights = profile if weights is None else weights.unsqueeze(-1) * profile
    floor = max(float(weights.min()), SMALLEST_WEIGHT)
    return weights.clamp_(min=floor)[None, None]


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """First voxels of the windows along one axis of ``size`` voxels (at least ``roi``): steps of
    ``int(roi * (1 - overlap))`` (at least 1), the last window moved back to end at the edge."""
    step = roi if roi == size else max(1, int(roi * (1 - overlap)))
    count = next(n for n in range(1, size + 2) if (n - 1) * step + roi >= size)
    return [i * step - max(i * step + roi - size, 0) for i in range(count)]


def stitch_windows(
    image: torch.Tensor,
    roi_size: Sequence[int],
    overlaps: Sequence[float],
    batch_size: int,
    predictor: Callable[[torch.Tensor], torch.Tensor | tuple[torch.Tensor, ...]],
    blending: str = "gaussian",
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, ...]:
    """Run ``predictor`` over windows of ``image`` and blend its outputs into whole volumes.

    Args:
        image: (1, C, X, Y, Z) on the CPU; sides shorter than the window are padded with zeros on both sides.
        roi_size: the window (X, Y, Z).
        overlaps: fraction of the window that neighbours share, per axis.
        batch_size: windows per call of ``predictor``.
        predictor: (B, C, *roi_size) on ``device`` -> one float32 tensor or a tuple, each (B, c, *side) where
            every side is the window's side times the output's scale (e.g. 1/16 for token maps).
        blending: ``gaussian`` (window centres count most) or ``constant``.
        device: where windows are run and weighted; the volumes are accumulated on the CPU.

    Returns:
        One (1, c, ...) float32 CPU tensor per predictor output, each on the image's grid times its scale.
    """
    size = image.shape[2:]
    roi = tuple(int(r) for r in roi_size)
    before = [max(r - s, 0) // 2 for r, s in zip(roi, size, strict=True)]
    after = [max(r - s, 0) - b for r, s, b in zip(roi, size, before, strict=True)]
    if any(before) or any(after):
        pads = [amount for axis in (2, 1, 0) for amount in (before[axis], after[axis])]
        image = F.pad(image, pads, mode="constant", value=0.0)
    full = image.shape[2:]
    starts = [window_starts(s, r, o) for s, r, o in zip(full, roi, overlaps, strict=True)]
    windows = list(itertools.product(*starts))  # the first axis slowest, as MONAI orders them
    weights = importance_map(roi, blending, device)
    sums: list[torch.Tensor] = []
    counts: list[torch.Tensor] = []
    scales: list[list[float]] = []
    part_weights: list[torch.Tensor] = []  # per output: the window weights on its grid
    for first in range(0, len(windows), batch_size):
        batch = windows[first : first + batch_size]
        pieces = [image[(slice(None), slice(None), *_slices(start, roi))] for start in batch]
        out = predictor(torch.cat(pieces).to(device))
        outputs = out if isinstance(out, tuple) else (out,)
        for index, part in enumerate(outputs):
            if index == len(sums):  # the first batch: each output's grid, weights and summed weights
                side = tuple(part.shape[2:])
                weight = weights if side == roi else F.interpolate(weights, side, mode="nearest-exact")
                scale = [s / r for s, r in zip(side, roi, strict=True)]
                shape = [int(n * z) for n, z in zip(full, scale, strict=True)]
                sums.append(_zeros((1, part.shape[1], *shape)))
                counts.append(_count_map(windows, roi, scale, shape, weight.cpu()))
                scales.append(scale)
                part_weights.append(weight)
            on_cpu = part.device.type == "cpu"  # weighted and summed in one pass; a GPU weighs before the copy
            weighted = part if on_cpu else (part * part_weights[index]).cpu()
            for item, start in enumerate(batch):
                where = (slice(None), slice(None), *_slices(start, roi, scales[index]))
                if on_cpu:
                    sums[index][where].addcmul_(weighted[item : item + 1], part_weights[index])
                else:
                    sums[index][where] += weighted[item : item + 1]
    results = []
    for total, count, scale in zip(sums, counts, scales, strict=True):
        total /= count
        keep = tuple(
            slice(round(b * z), round((b + n) * z)) for b, n, z in zip(before, size, scale, strict=True)
        )  # Python's round, as MONAI crops
        results.append(total[(slice(None), slice(None), *keep)])
    return tuple(results)


def _zeros(shape) -> torch.Tensor:
    """A float32 CPU tensor of zeros whose pages the kernel zeroes when they are first written (numpy asks the C
    library for zeroed memory): ``torch.zeros`` writes every byte first, 0.75 s of the 1.2 GB of logit sums of a
    512 x 512 x 300 CT at 1.5 mm, up to 2 s when the system must first gather huge pages."""
    return torch.from_numpy(np.zeros(shape, np.float32))


def _slices(start: Sequence[int], roi: Sequence[int], scale: Sequence[float] | None = None) -> tuple[slice, ...]:
    if scale is None:
        return tuple(slice(s, s + r) for s, r in zip(start, roi, strict=True))
    return tuple(slice(int(s * z), int((s + r) * z)) for s, r, z in zip(start, roi, scale, strict=True))


def _count_map(windows, roi, scale, shape, weight: torch.Tensor) -> torch.Tensor:
    """The summed weight of every window at each voxel of an output on ``shape``."""
    count = _zeros((1, 1, *shape))
    for start in windows:
        count[(slice(None), slice(None), *_slices(start, roi, scale))] += weight
    return count
