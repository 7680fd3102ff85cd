"""Test-time augmentation: the network's probabilities averaged over a few fixed in-plane changes of the scan.

The scan on the model grid is run as it is, rotated by +/-15 degrees about its axial axis, and scaled in-plane
by 0.85 and 1.15 (a smaller and a larger body); each run's probabilities are moved back onto the model grid and
averaged where that run saw the voxel. The changes lie inside the training augmentation of the bundled model
(rotations to 30 degrees, body-size scale 0.75-1.3) and leave the axial axis alone: resampling a thin slab
along it would make up slices above and below it. Averaging predictions over such changes (Wang et al. 2019,
"Aleatoric uncertainty estimation with test-time augmentation for medical image segmentation") trades run time
(five passes of the network) for predictions that depend less on one pose of the body.

Only the label probabilities are averaged; token maps come from the unchanged pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

# (in-plane rotation in degrees, in-plane scale): the unchanged pass first
AUGMENTATIONS = ((0.0, 1.0), (15.0, 1.0), (-15.0, 1.0), (0.0, 0.85), (0.0, 1.15))
SMALLEST_PROBABILITY = 1e-7  # floor before the logarithm that turns averaged probabilities back into scores


def axial_axis(direction: np.ndarray) -> int:
    """The index axis that runs most nearly head-foot (the one whose direction has the largest S component)."""
    return int(np.argmax(np.abs(np.asarray(direction)[2, :3])))


def in_plane_matrix(degrees: float, scale: float, axial: int, spacing) -> np.ndarray:
    """3 x 3 map from an output voxel's offset from the grid centre to the offset it is sampled from, in index
    units: a rotation by ``degrees`` about ``axial`` and a zoom by ``scale`` of the other two axes, both in
    millimetres (the in-plane spacings may differ)."""
    plane = [axis for axis in range(3) if axis != axial]
    change = np.eye(3)
    angle = math.radians(degrees)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    change[np.ix_(plane, plane)] = rotation / scale
    millimetres = np.diag(np.broadcast_to(np.asarray(spacing, float), (3,)))
    return np.linalg.inv(millimetres) @ change @ millimetres


def _sampling_grid(matrix: np.ndarray, shape) -> torch.Tensor:
    """``grid_sample``'s grid for a (1, C, X, Y, Z) tensor that samples index offset ``matrix @ offset``."""
    size = np.asarray(shape, float)
    normalised = np.diag(1.0 / size) @ matrix @ np.diag(size)  # align_corners=False: offset = normalised * size / 2
    reverse = normalised[::-1, ::-1]  # grid_sample's coordinates run (Z, Y, X) for a (X, Y, Z) volume
    theta = torch.zeros((1, 3, 4), dtype=torch.float32)
    theta[0, :, :3] = torch.from_numpy(reverse.copy())
    return F.affine_grid(theta, (1, 1, *shape), align_corners=False)


def _warp(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _from_the_image(grid: torch.Tensor) -> torch.Tensor:
    """(1, 1, X, Y, Z): 1 where ``grid`` samples between the image's voxel centres, 0 where it blends them with what
    lies beyond (the outer half voxel and past it)."""
    shape = grid.shape[1:4]
    reach = torch.tensor([1.0 - 1.0 / n for n in reversed(shape)]) + 1e-5  # grid_sample's (Z, Y, X) order
    return (grid.abs() <= reach).all(-1)[:, None].float()


def _changed_copy(source: torch.Tensor, grid: torch.Tensor, padding) -> np.ndarray:
    """``source`` (1, C, X, Y, Z) sampled at ``grid``, each channel's ``padding`` value where the grid leaves it
    (blended as the image's own voxels are)."""
    changed = _warp(source, grid)
    if any(padding):
        beyond = 1.0 - _warp(torch.ones((1, 1, *source.shape[2:])), grid)[:, 0]
        for channel, value in enumerate(padding):
            changed[:, channel] += float(value) * beyond
    return changed[0].numpy()


def to_probabilities(scores: np.ndarray, activation: str) -> torch.Tensor:
    """(1, out, X, Y, Z) probabilities of ``scores``; infinite scores count as the largest finite ones (the label
    that an argmax gives them, where a softmax of +inf is NaN), NaN as 0."""
    tensor = torch.from_numpy(scores)[None]
    if not bool(torch.isfinite(tensor).all()):  # a copy only then
        tensor = torch.nan_to_num(tensor)
    return tensor.sigmoid() if activation == "sigmoid" else tensor.softmax(1)


def to_scores(probabilities: torch.Tensor, activation: str) -> np.ndarray:
    """Scores whose activation gives back ``probabilities`` (log-probabilities for softmax, logits for sigmoid),
    computed in place: ``probabilities`` becomes them (no temporary copies of every channel)."""
    scores = probabilities.clamp_(SMALLEST_PROBABILITY, 1.0 - SMALLEST_PROBABILITY)
    scores = scores.logit_() if activation == "sigmoid" else scores.log_()
    return np.ascontiguousarray(scores[0].numpy())


def averaged_scores(
    image: np.ndarray,
    first_scores: np.ndarray,
    run: Callable[[np.ndarray, int], np.ndarray],
    direction: np.ndarray,
    spacing,
    activation: str = "softmax",
    padding=(),
    check: Callable[[], None] | None = None,
) -> np.ndarray:
    """The scores of the probabilities averaged over :data:`AUGMENTATIONS`.

    Args:
        image: the network input (C, X, Y, Z) on the model grid.
        first_scores: the network's scores (out, X, Y, Z) of the unchanged ``image``.
        run: ``run(changed_image, pass_index)`` -> its scores, for each further pass (pass_index from 1).
        direction, spacing: the model grid's axis directions (RAS columns) and spacing, which fix the axial axis
            and millimetres.
        activation: the package's ``softmax`` or ``sigmoid``.
        padding: each input channel's value beyond the image (:attr:`.preprocess.Prepared.padding`; default 0),
            which fills what a turned or shrunk copy shows beyond it, as the image itself is padded.
        check: called between the whole-volume steps (e.g. :meth:`.progress.Progress.check`): what it raises ends
            the averaging, as a stop between windows ends a pass.
    """
    check = check or (lambda: None)
    shape = image.shape[1:]
    axial = axial_axis(direction)
    total = to_probabilities(first_scores, activation)
    seen = torch.ones((1, 1, *shape), dtype=torch.float32)
    source = torch.from_numpy(image)[None]
    for index, (degrees, scale) in enumerate(AUGMENTATIONS[1:], start=1):
        check()
        matrix = in_plane_matrix(degrees, scale, axial, spacing)
        forward = _sampling_grid(matrix, shape)
        changed = _changed_copy(source, forward, padding)
        trusted = _from_the_image(forward)  # the copy's voxels not blended with its padding
        del forward
        check()
        probabilities = to_probabilities(run(np.ascontiguousarray(changed), index), activation)
        del changed
        check()
        back = _sampling_grid(np.linalg.inv(matrix), shape)
        # each voxel's share of trusted voxels of this pass, as the moving back blends them (0 where it saw none):
        # near the edges the pass counts as much as it saw of the scan itself, not of its padding
        weight = _warp(trusted, back)
        for channel in range(probabilities.shape[1]):  # one channel at a time: two volumes of temporaries
            check()
            total[:, channel : channel + 1] += _warp(probabilities[:, channel : channel + 1] * trusted, back)
        seen += weight
        del probabilities, trusted, weight
    check()
    total /= seen
    return to_scores(total, activation)
