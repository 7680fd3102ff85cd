"""From the model grid back onto the input's own grid: labels, probabilities, token maps and label volumes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .geometry import Grid, resample, resample_nearest
from .metadata import Inference, Label
from .postprocess import ModelGridOutputs, keep_largest_component
from .preprocess import Prepared
from .result import TokenMaps


@dataclass
class InputGridOutputs:
    """Everything a result holds on the input grid."""

    labels: np.ndarray
    volumes_ml: dict[str, float]
    probabilities: dict[str, np.ndarray] | None
    token_maps: TokenMaps | None


def map_back(
    outputs: ModelGridOutputs,
    prepared: Prepared,
    target: Grid,
    inference: Inference,
    table: Sequence[Label],
    largest_component: Sequence[str] = (),
    smooth: bool = False,
    with_probabilities: bool = False,
) -> InputGridOutputs:
    """Map the model-grid outputs onto ``target`` (the first input's grid).

    ``smooth``: decide labels on ``target`` from linearly interpolated probabilities (needs
    ``outputs.probability_maps``) instead of mapping the model-grid labels with nearest neighbours.
    """
    if smooth:
        labels = smooth_labels(outputs.probability_maps, prepared, target, inference, table)
        keep_largest_component(labels, [label.value for label in table if label.name in largest_component])
    else:
        labels = resample_nearest(outputs.labels, prepared.grid, target, np.uint8)
    counts = label_counts(labels)
    volumes_ml = {label.name: float(counts[label.value]) * target.voxel_volume_mm3 / 1000.0 for label in table}
    probabilities = None
    if with_probabilities:
        probabilities = {
            label.name: region_on_target(outputs.probability_maps[label.value], prepared, target) for label in table
        }
    token_maps = None
    if outputs.coarse_maps is not None:
        factor = prepared.region.shape[0] // next(iter(outputs.coarse_maps.values())).shape[1]
        token_maps = TokenMaps(outputs.coarse_maps, prepared.region.downsampled(factor), target)
    return InputGridOutputs(labels, volumes_ml, probabilities, token_maps)


def label_counts(labels: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """Voxels per value (256 counts) of a uint8 map, counted in chunks: ``np.bincount`` converts its input to
    64-bit integers, a 624 MB temporary for a 512 x 512 x 300 map (measured 0.35-2.9 s against 0.2 s)."""
    flat = labels.ravel(order="K")  # any memory order: no copy
    counts = np.zeros(256, np.int64)
    for start in range(0, flat.size, chunk):
        counts += np.bincount(flat[start : start + chunk], minlength=256)
    return counts


def region_on_target(region_array: np.ndarray, prepared: Prepared, target: Grid) -> np.ndarray:
    """A float map over the processed region, placed on the model grid (zero outside) and resampled onto
    ``target`` linearly."""
    in_grid, in_region = prepared.paste_slices()
    canvas = np.zeros(prepared.grid.shape, np.float32)
    canvas[in_grid] = region_array[in_region]
    return resample(canvas, prepared.grid, target, "linear", 0.0)


def smooth_labels(
    probability_maps: dict[int, np.ndarray], prepared: Prepared, target: Grid, inference: Inference, table
) -> np.ndarray:
    """Labels decided on the input grid from linearly interpolated probabilities (running argmax, or the
    ordered region thresholds of sigmoid models)."""
    out = np.zeros(target.shape, np.uint8)
    if inference.activation == "sigmoid":
        for region in inference.regions:
            out[region_on_target(probability_maps[region.label], prepared, target) > inference.threshold] = region.label
        return out
    # background probability (outside the crop: 1)
    best = 1.0 - region_on_target(sum(probability_maps.values()), prepared, target)
    for label in table:
        p = region_on_target(probability_maps[label.value], prepared, target)
        better = p > best
        out[better] = label.value
        best[better] = p[better]
    return out
