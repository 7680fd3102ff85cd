"""Gantry-tilted DICOM series: slices shifted in plane by the same step each, resampled onto a regular grid.

A CT gantry tilted by an angle a acquires slices whose planes stay parallel but whose positions step along the
slice normal and, by tan(a) of that step, within the plane: the voxels form a sheared grid, which the pipeline (and
ITK's image model) cannot hold. The slices are stacked as they are, then resampled (linearly) onto the grid with the
slices' own row, column and normal axes and spacing that covers every slice: each slice plane is kept, each slice
moved in plane to where its position puts it. Points outside the scanned slices get the scan's lowest value (air).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..errors import InputError

MAX_TILT_DEGREES = 45.0  # gantries tilt up to about 30 degrees: a steeper shear is no tilt
ADVICE = "resample it onto a regular grid first (e.g. in Slicer) and save it as NRRD"


def _in_plane(ordered) -> np.ndarray:
    """The slices' positions along their row and column directions, shape (slices, 2)."""
    return np.array([s.position for s in ordered]) @ ordered[0].orientation.T


def in_plane_shift(ordered) -> float:
    """The largest in-plane distance (mm) of a slice's position from the first slice's."""
    in_plane = _in_plane(ordered)
    return float(np.max(np.abs(in_plane - in_plane[0])))


def tilt_step(ordered, name: str, tolerance: float) -> np.ndarray | None:
    """The in-plane shift (along row, column; mm) from each slice to the next of slices in order along their normal
    when they shift steadily with their travel along it (a gantry tilt), None when they do not shift (by more than
    ``tolerance`` mm). The shift is fitted per mm of travel, so slightly uneven slice spacing (which
    :func:`.dicom.check_slices` accepts) shifts the slices unevenly as the table moved them.

    Raises:
        InputError: the slices shift unevenly, or more steeply than :data:`MAX_TILT_DEGREES`.
    """
    in_plane = _in_plane(ordered)
    if np.max(np.abs(in_plane - in_plane[0])) <= tolerance:
        return None
    row, column = ordered[0].orientation
    travel = np.array([s.position for s in ordered]) @ np.cross(row, column)
    travel -= travel[0]
    per_mm = (in_plane[-1] - in_plane[0]) / travel[-1]
    off = float(np.abs(in_plane - in_plane[0] - np.outer(travel, per_mm)).max())
    if off > tolerance:
        raise InputError(
            f"the DICOM slices in {name} shift in plane unevenly (up to {off:.2f} mm off a gantry tilt's steady shift)",
            ADVICE,
        )
    step = per_mm * _normal_step(ordered)
    if _degrees(ordered, step) > MAX_TILT_DEGREES:
        raise InputError(f"the DICOM slices in {name} are sheared by more than {MAX_TILT_DEGREES:g} degrees", ADVICE)
    return step


def _normal_step(ordered) -> float:
    row, column = ordered[0].orientation
    return float((ordered[-1].position - ordered[0].position) @ np.cross(row, column)) / (len(ordered) - 1)


def _degrees(ordered, step: np.ndarray) -> float:
    return math.degrees(math.atan2(float(np.linalg.norm(step)), _normal_step(ordered)))


@dataclass(frozen=True)
class TiltedGrid:
    """Where tilted slices are resampled to (LPS): ``size`` (i, j, k), ``origin``, ``spacing``, ``direction``
    (row, column, normal as columns); ``first`` the first slice's position, ``shift`` the in-plane shift per slice
    in LPS, ``degrees`` the tilt."""

    size: tuple[int, int, int]
    origin: np.ndarray
    spacing: tuple[float, float, float]
    direction: np.ndarray
    first: np.ndarray
    shift: np.ndarray
    degrees: float


def tilted_grid(ordered, step: np.ndarray) -> TiltedGrid:
    """The regular grid covering every slice of a tilt: the slices' axes and spacing, widened in plane by the
    whole shift (in whole voxels, so that the first slice's voxels keep their places)."""
    first = ordered[0]
    row, column = first.orientation
    spacing = (float(first.spacing[0]), float(first.spacing[1]), _normal_step(ordered))
    total = step * (len(ordered) - 1)  # mm along row and column from the first slice to the last
    extra = [math.ceil(abs(float(t)) / s - 1e-3) for t, s in zip(total, spacing[:2], strict=True)]
    start = [-e * s if t < 0 else 0.0 for e, s, t in zip(extra, spacing[:2], total, strict=True)]
    origin = first.position + start[0] * row + start[1] * column
    return TiltedGrid(
        (first.size[0] + extra[0], first.size[1] + extra[1], len(ordered)),
        origin,
        spacing,
        np.stack([row, column, np.cross(row, column)], axis=1),
        np.asarray(first.position, dtype=np.float64),
        step[0] * row + step[1] * column,
        _degrees(ordered, step),
    )


def untilted(stacked: sitk.Image, grid: TiltedGrid, padded: np.ndarray | None = None) -> sitk.Image:
    """The slices ``stacked`` in order (slice k at index k) resampled onto ``grid`` as float32, linearly.

    The stacked image is given the unsheared geometry (first slice's position, the grid's axes and spacing); a point
    X of the scan then lies in it at X - ((X - first) . normal / spacing_k) shift, the transform handed to ITK.
    ``padded``: the voxels (k, j, i) outside the scanner's field of view (PixelPaddingValue), kept out of the
    interpolation: values and weights are interpolated apart, and a point mostly outside gets the lowest value.
    """
    source = sitk.Image(stacked)
    _place(source, grid.first, grid)
    normal = grid.direction[:, 2]
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(tuple(float(v) for v in (np.eye(3) - np.outer(grid.shift, normal) / grid.spacing[2]).ravel()))
    transform.SetCenter(tuple(float(v) for v in grid.first))
    reference = sitk.Image([int(n) for n in grid.size], sitk.sitkFloat32)
    _place(reference, grid.origin, grid)
    lowest = float(sitk.GetArrayViewFromImage(stacked).min())
    if padded is None:
        return sitk.Resample(source, reference, transform, sitk.sitkLinear, lowest, sitk.sitkFloat32)
    values = sitk.GetArrayFromImage(stacked).astype(np.float32)
    values[padded] = 0.0
    values = sitk.GetImageFromArray(values)
    weights = sitk.GetImageFromArray((~padded).view(np.uint8))
    for image in (values, weights):
        _place(image, grid.first, grid)
    sums, covered = (
        sitk.Resample(image, reference, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        for image in (values, weights)
    )
    del values, weights
    inside = sitk.GetArrayViewFromImage(covered) >= 0.5
    array = np.full(inside.shape, lowest, np.float32)
    array[inside] = sitk.GetArrayViewFromImage(sums)[inside] / sitk.GetArrayViewFromImage(covered)[inside]
    del sums, covered
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(reference)
    return result


def _place(image: sitk.Image, origin, grid: TiltedGrid) -> None:
    """Give ``image`` ``origin`` and the grid's spacing and axes."""
    image.SetOrigin(tuple(float(v) for v in origin))
    image.SetSpacing(grid.spacing)
    image.SetDirection(tuple(float(v) for v in grid.direction.ravel()))
