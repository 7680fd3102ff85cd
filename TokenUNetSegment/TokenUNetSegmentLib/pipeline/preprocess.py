"""Preprocessing per package: channels onto one grid, model orientation and spacing, foreground crop,
intensity normalisation and padding to the network's size multiple and window size."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .geometry import Grid, model_grid, overlaps, resample, same_grid
from .metadata import Intensity, PackageConfig
from .scan_summary import BODY_THRESHOLD_HU, IntensitySummary, covered_share, field_of_view, summarise_intensities
from .volumes import Volume


@dataclass
class Prepared:
    """The network input and where it sits in physical space.

    ``image`` (C, *region.shape) is the preprocessed region of ``grid`` (the model grid) starting at index
    ``start``; parts of the region outside the model grid are padding, each channel's ``padding`` value (its lowest
    value, normalised). ``field_of_view`` marks the model-grid voxels inside the first input's box and ``intensity``
    summarises its raw values there (for judging the result, :mod:`.confidence`).
    """

    image: np.ndarray
    grid: Grid
    start: np.ndarray
    region: Grid
    warnings: list[str] = field(default_factory=list)
    field_of_view: np.ndarray | None = None
    intensity: IntensitySummary | None = None
    padding: tuple[float, ...] = ()

    def paste_slices(self) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """(slices into the model grid, slices into the region) of their intersection."""
        stop = self.start + np.asarray(self.region.shape)
        lo, hi = np.maximum(self.start, 0), np.minimum(stop, self.grid.shape)
        in_grid = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        in_region = tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(lo, hi, self.start, strict=True))
        return in_grid, in_region


MIN_CHANNEL_COVER = 0.9
"""A channel covering less of the first channel's box than this share is reported (the rest is filled)."""


def stack_channels(volumes: list[Volume], names: list[str]) -> tuple[list[np.ndarray], Grid, list[str]]:
    """Every channel on the first channel's grid (resampled in physical space when needed), and warnings for
    channels that cover only part of it (the model sees their lowest value there)."""
    reference = volumes[0].grid
    arrays = [volumes[0].array]
    warnings = []
    for volume, name in zip(volumes[1:], names[1:], strict=True):
        grid = volume.grid
        if same_grid(grid, reference):
            arrays.append(volume.array)
            continue
        if not overlaps(reference, grid) or not overlaps(grid, reference):
            raise InputError(
                f"channel '{name}' ({volume.name}) does not overlap channel '{names[0]}' "
                f"({volumes[0].name}) in physical space",
                "the images must show the same anatomy; check that they belong to the same patient/study",
            )
        share = covered_share(reference, grid)
        if share < MIN_CHANNEL_COVER:
            warnings.append(
                f"{_channel(name, volume)} covers only {100 * share:.0f}% of {_channel(names[0], volumes[0])}, "
                f"whose grid the result is on; elsewhere the model sees no '{name}' image: check that the scans "
                "cover the same region"
            )
        arrays.append(resample(volume.array, grid, reference, "linear", default=float(volume.array.min())))
    return arrays, reference, warnings


def _channel(name: str, volume: Volume) -> str:
    """``channel 'T1' (t1.nii.gz)`` in messages; the volume's name only when it says more than the channel's."""
    return f"channel '{name}'" + (f" ({volume.name})" if volume.name != name else "")


def _foreground(raw: np.ndarray, setting: Intensity) -> np.ndarray:
    if setting.method == "ct_window":
        return raw > setting.window[0]
    if setting.method == "zscore":
        return raw != 0
    return raw > raw.min()


def _bbox(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    if not mask.any():
        return None
    lo, hi = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        lo.append(hits[0])
        hi.append(hits[-1] + 1)
    return np.array(lo), np.array(hi)


def normalise_intensity(array: np.ndarray, setting: Intensity) -> np.ndarray:
    """In-place intensity normalisation of a float32 array (CT window to [0, 1], or z-score over non-zero)."""
    method = setting.method
    if method == "ct_window":
        low, high = setting.window
        np.clip(array, low, high, out=array)
        array -= low
        array *= 1.0 / (high - low)
    elif method == "zscore":
        mask = array != 0
        values = array[mask]
        if values.size == 0:
            return array
        mean, std = float(values.mean()), float(values.std())
        array[mask] = (values - mean) / std if std > 0 else 0.0
    return array


def normalised_low(low: float, normalised: np.ndarray, setting: Intensity) -> float:
    """What a channel's lowest raw value ``low`` (its padding) became in ``normalised``: a z-score leaves zeros
    alone and turns any other lowest value into the lowest z-score; the other methods keep the order of values."""
    if setting.method == "ct_window":
        low_hu, high_hu = setting.window
        return float(np.clip((low - low_hu) / (high_hu - low_hu), 0.0, 1.0))
    if setting.method == "zscore":
        return 0.0 if low == 0 else float(normalised.min())
    return low


CT_AIR_HU = -500.0
CT_AIR_SHARE = 0.1
"""An MR channel with at least this share of voxels at or below ``CT_AIR_HU`` is reported as a likely CT (MR
magnitude images are not negative; the air around a head or body in a CT is about -1000)."""
MIN_VOXELS = 8
MIN_WINDOW_SHARE = 0.25


def small_volume_warning(source: Grid, model: Grid, roi_size) -> str | None:
    """A warning when the volume is too small to hold what the model was trained on: fewer than ``MIN_VOXELS``
    voxels along an axis, or a side shorter than ``MIN_WINDOW_SHARE`` of the model's window (in mm)."""
    extent = np.asarray(source.shape) * source.spacing
    window = float(np.min(np.asarray(roi_size, float) * model.spacing))
    if min(source.shape) >= MIN_VOXELS and extent.min() >= MIN_WINDOW_SHARE * window:
        return None
    shape = " x ".join(str(s) for s in source.shape)
    size = " x ".join(f"{e:.0f}" if e >= 10 else f"{e:.2g}" for e in extent)  # microns too (a file in wrong units)
    return (
        f"the volume is small for this model ({shape} voxels, {size} mm; the model looks at {window:.0f} mm "
        "windows): anatomy may be cut off or missing, check the result"
    )


def resample_ahead(volumes: list[Volume], config: PackageConfig, threads: int | None = None) -> None:
    """Resample the channels that lie on the first channel's grid onto the model grid now, into each
    ``Volume.on_model_grid``, where :func:`prepare` takes them (the same values it would compute).

    The command line calls this in its reading thread while torch is imported (SimpleITK's resampler lets the
    import run on: 0.45 s of a 512 x 512 x 300 CT at 1.5 mm on 2 cores). On ``threads`` threads: the command line
    leaves the import a core of its own (on both cores of the 2-core CPU the import slowed from 1.1 to 1.5 s; the
    first window came 0.25 s sooner with one thread, median of 10 alternating runs). A channel whose model-grid
    copy would take more memory than its own voxels is left to :func:`prepare`, after the run's memory check.
    """
    pre = config.preprocessing
    reference = volumes[0].grid
    grid = model_grid(reference, pre.orientation, pre.spacing)
    if same_grid(grid, reference):
        return
    for volume in volumes:
        if same_grid(volume.grid, reference) and 4 * int(np.prod(grid.shape)) <= volume.array.nbytes:
            array = volume.array
            low = float(array.min())
            volume.on_model_grid = (grid, resample(array, reference, grid, "linear", low, threads=threads))


def _take_ahead(volume: Volume, grid: Grid) -> np.ndarray | None:
    """The volume's array resampled ahead onto ``grid`` (dropped from the volume), or None."""
    ahead, volume.on_model_grid = volume.on_model_grid, None
    if ahead is None or not same_grid(ahead[0], grid):
        return None
    return ahead[1]


def prepare(volumes: list[Volume], config: PackageConfig, size_multiple: int, roi_size, progress=None) -> Prepared:
    """Preprocess ``volumes`` (one per input channel, in the package's order) for the package ``config``."""
    names = config.input_names
    pre = config.preprocessing
    settings = pre.intensity
    warnings = [message for volume in volumes for message in volume.warnings]  # what the readers noticed
    arrays, reference, stacked = stack_channels(volumes, names)
    warnings += stacked
    grid = model_grid(reference, pre.orientation, pre.spacing)
    small = small_volume_warning(reference, grid, roi_size)
    if small:
        warnings.append(small)
    model_arrays = []
    for index, (array, name) in enumerate(zip(arrays, names, strict=True)):
        low, high = float(array.min()), float(array.max())
        if low == high:
            warnings.append(f"channel '{name}' is constant ({low:g}); the result will be meaningless")
        elif config.inputs[index].modality.upper().startswith("MR") and low <= CT_AIR_HU:
            air = np.count_nonzero(array <= CT_AIR_HU) / array.size
            if air >= CT_AIR_SHARE:
                warnings.append(
                    f"{_channel(name, volumes[index])} looks like a CT, not an MRI: {100 * air:.0f}% of its "
                    f"voxels are at or below {CT_AIR_HU:g}, as air in Hounsfield units; this model expects "
                    f"{config.inputs[index].modality}"
                )
        if same_grid(grid, reference):
            model_arrays.append(np.asarray(array, dtype=np.float32))
        else:
            ahead = _take_ahead(volumes[index], grid) if same_grid(volumes[index].grid, reference) else None
            model_arrays.append(ahead if ahead is not None else resample(array, reference, grid, "linear", default=low))
        arrays[index] = None  # free the source-grid copy early
        if progress:
            progress.update("preprocess", 0.6 * (index + 1) / len(volumes))
    inside = field_of_view(reference, grid)
    statistics = config.statistics
    recorded = statistics.intensity_hu if statistics is not None else None
    threshold = (recorded or {}).get("body_threshold_hu", BODY_THRESHOLD_HU)
    intensity = summarise_intensities(model_arrays[0], inside, threshold)
    shape = np.asarray(grid.shape)
    lo, hi = np.zeros(3, int), shape.copy()
    if pre.crop_foreground:
        mask = None  # the channels' foreground together (the first one's own mask: no zeroed grid to OR it into)
        for array, setting in zip(model_arrays, settings, strict=True):
            found = _foreground(array, setting)
            mask = found if mask is None else np.logical_or(mask, found, out=mask)
        box = _bbox(mask)
        if box is not None:
            margin = np.ceil(pre.crop_margin_mm / grid.spacing).astype(int)
            lo, hi = np.maximum(box[0] - margin, 0), np.minimum(box[1] + margin, shape)
    roi = np.asarray(roi_size, int)
    length = hi - lo
    target = np.maximum(roi, np.array([math.ceil(n / size_multiple) * size_multiple for n in length]))
    start = lo - (target - length) // 2
    region = grid.sub_grid(start, target)
    image = np.empty((len(model_arrays), *target), np.float32)
    prepared = Prepared(image, grid, start, region, warnings, inside, intensity)
    in_grid, in_region = prepared.paste_slices()
    padding = []
    for channel, (array, setting) in enumerate(zip(model_arrays, settings, strict=True)):
        low = float(array.min())
        image[channel].fill(low)
        image[channel][in_region] = array[in_grid]
        model_arrays[channel] = None
        normalise_intensity(image[channel], setting)
        padding.append(normalised_low(low, image[channel], setting))
    prepared.padding = tuple(padding)
    if progress:
        progress.update("preprocess", 1.0)
    return prepared
