"""Input volumes: (array, IJK->RAS) pairs or files (NIfTI, NRRD, MetaImage, a DICOM series folder)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .geometry import Grid, affine_of_image, check_affine
from .readers import open_image
from .readers.payload import non_finite_voxels


@dataclass
class Volume:
    """A scalar 3D volume: ``array`` indexed (i, j, k), its IJK->RAS ``affine``, and what its reader warned
    about (these go into the segmentation's ``warnings`` and ``report.json``)."""

    array: np.ndarray
    affine: np.ndarray
    name: str = "volume"
    warnings: list[str] = field(default_factory=list)
    modality: str = ""  # a DICOM series' Modality (CT, MR, ...); "" when its source does not say
    on_model_grid: tuple[Grid, np.ndarray] | None = field(default=None, repr=False)  # see preprocess.resample_ahead

    @property
    def grid(self) -> Grid:
        return Grid(tuple(int(s) for s in self.array.shape), self.affine)


def as_volume(item, name: str | None = None, modality: str = "") -> Volume:
    """A checked :class:`Volume` from a Volume, an ``(array, ijk_to_ras)`` pair, a path or ``sample:ID`` (``modality``:
    see :func:`open_input`)."""
    return open_input(item, name, modality)()


@dataclass(frozen=True)
class OpenedVolume:
    """An input whose header has been checked: the ``values`` it declares (its voxels, for a scalar volume) and
    ``read()`` for the checked :class:`Volume`; ``grid``: the voxel grid its header declares (origin aside), None
    when it declares none."""

    values: int
    read: Callable[[], Volume]
    modality: str = ""  # as Volume.modality, known from the header
    grid: Grid | None = None
    series: str = ""  # a DICOM series' SeriesInstanceUID
    description: str = ""  # a DICOM series' SeriesDescription
    stacked: tuple[int, ...] = ()  # the sizes of a 4D image's axes after the spatial ones (see readers.header)
    stacked_axis: str = ""  # what its header says a 4th axis is when it is time, else ""
    finite_checked: bool = False  # its NaN and infinite values were counted as it was read (readers.header)

    def __call__(self) -> Volume:
        return self.read()


def open_input(item, name: str | None = None, modality: str = "") -> OpenedVolume:
    """:func:`as_volume` in two steps: a file's header (a DICOM series' slice headers) is read and checked now; calling
    the result reads the voxels and checks the volume (see :func:`.readers.open_image`). ``modality``: what the
    model's input expects (chooses among the series of a DICOM folder)."""
    from .samples import resolve_input

    item = resolve_input(item)
    if isinstance(item, (str, Path)):
        opened = open_volume(item, modality=modality)
        return replace(opened, read=lambda: _checked(opened(), opened.finite_checked))
    if isinstance(item, Volume):
        volume = item
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        volume = Volume(np.asarray(item[0]), np.asarray(item[1]), name or "array")
    else:
        raise InputError(
            f"unsupported input {type(item).__name__}",
            "pass a file path, a DICOM folder or an (array, ijk_to_ras 4x4) pair",
        )
    _checked(volume)
    return OpenedVolume(int(volume.array.size), lambda: volume, volume.modality, volume.grid)


def _checked(volume: Volume, finite_checked: bool = False) -> Volume:
    check_volume(volume, finite_checked=finite_checked)
    return volume


NOT_HOUNSFIELD = {"MR", "PT", "NM", "US"}  # DICOM modalities whose values are no CT numbers


def check_modality(modality: str, expected: str, name: str, model: str, channel: str) -> None:
    """Refuse a DICOM series whose Modality contradicts the model channel's: an MR, PET, SPECT or ultrasound
    series given to a CT channel, or a CT series given to an MR one (e.g. ``modality`` "MR", ``expected`` "CT")."""
    modality, expected = modality.upper(), (expected or "").upper()
    if (expected == "CT" and modality in NOT_HOUNSFIELD) or (expected.startswith("MR") and modality == "CT"):
        raise InputError(
            f"the DICOM series {name} is {modality} (its Modality); model '{model}' expects {expected} for its "
            f"input {channel}",
            f"pass a {expected} series, or choose a model for {modality}",
        )


def check_volume(volume: Volume, purpose: str = "segmenting", finite_checked: bool = False) -> None:
    """Raise :class:`InputError` for anything but a finite scalar 3D volume with a valid geometry (``purpose``: what it
    is for, as :func:`read_volume`'s; ``finite_checked``: its reader counted its NaN and infinite values already)."""
    array = volume.array
    if array.ndim == 2 or (array.ndim == 3 and min(array.shape) == 1):
        raise InputError(f"{volume.name} is a 2D image (shape {array.shape})", "segmentation needs a 3D volume")
    if array.ndim != 3:
        raise InputError(
            f"{volume.name} has {array.ndim} dimensions (shape {array.shape}); a 3D volume is needed",
            "split 4D/multi-component images into one 3D volume per channel",
        )
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.iscomplexobj(array):
        raise InputError(f"{volume.name} has unsupported voxel type {array.dtype}")
    if array.dtype == bool or array.dtype.type in (np.float16, np.int64, np.uint64):
        volume.array = array = array.astype(np.float32)  # types SimpleITK cannot take as they are
    if not finite_checked:
        refuse_non_finite(array, volume.name, purpose)
    volume.affine = check_affine(volume.affine, volume.name)


def refuse_non_finite(array: np.ndarray, name: str, purpose: str = "segmenting", chunk: int = 1 << 22) -> None:
    """Raise :class:`InputError` when a float ``array`` holds NaN or infinite values, its hint saying to replace them
    before ``purpose``; counted in chunks, with no temporary array of the volume's size."""
    if not np.issubdtype(array.dtype, np.floating):
        return
    # slabs along the axis of the largest stride: views whatever the layout (a transposed array, or one component of
    # a vector volume, every n-th value), where np.ravel would copy a strided array whole
    slabs = np.moveaxis(array, int(np.argmax(np.abs(array.strides))), 0) if array.ndim else array.reshape(1)
    step = max(1, chunk // max(1, slabs[0].size)) if len(slabs) else 1
    bad = 0
    for start in range(0, len(slabs), step):
        part = slabs[start : start + step]
        bad += part.size - int(np.count_nonzero(np.isfinite(part)))
    if bad:
        raise non_finite_voxels(name, bad, purpose)


def read_volume(path: str | Path, limit: int | None = None, purpose: str = "segmenting") -> Volume:
    """Read a scalar 3D volume from a file or a DICOM series folder, checked by :mod:`.readers`.

    ``limit``: bytes the voxels may take while read (default: free memory or ``TOKENUNET_MEMORY_LIMIT``).
    The reader's warnings (e.g. uneven DICOM slices) are kept in ``Volume.warnings``. NaN or infinite voxels are
    refused, the hint saying what to do before ``purpose``: what it is read for ("segmenting", "evaluating",
    "training").
    """
    opened = open_volume(path, limit, purpose=purpose)
    volume = opened()
    if not opened.finite_checked:  # NRRD and MetaImage keep them; a float NIfTI's were counted as it was read
        refuse_non_finite(volume.array, volume.name, purpose)
    return volume


def open_volume(
    path: str | Path, limit: int | None = None, modality: str = "", purpose: str = "segmenting"
) -> OpenedVolume:
    """:func:`read_volume` in two steps: the header now, the voxels when the result is called."""
    from .arguments import as_path

    path = as_path(path, "an input volume")
    opened = open_image(path, limit, modality, purpose)

    def read() -> Volume:
        image, warnings = opened()
        volume = volume_from_image(image, path.name)
        volume.warnings, volume.modality = warnings, opened.modality
        return volume

    return OpenedVolume(
        opened.values,
        read,
        opened.modality,
        opened.grid,
        opened.series,
        opened.description,
        opened.stacked,
        opened.stacked_axis,
        opened.finite_checked,
    )


def volume_from_image(image: sitk.Image, name: str = "volume") -> Volume:
    """A :class:`Volume` from a SimpleITK image, refusing 2D, 4D, multi-component and bad spacing."""
    if image.GetNumberOfComponentsPerPixel() != 1 and name.lower().endswith(".seg.nrrd"):
        raise InputError(
            f"{name} has {image.GetNumberOfComponentsPerPixel()} layers (Slicer stores overlapping segments so)",
            "export the segments you need to a labelmap volume in Slicer's Segmentations module and use that",
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{name} has {image.GetNumberOfComponentsPerPixel()} components per voxel",
            "use one scalar volume per channel",
        )
    if image.GetDimension() == 2:
        raise InputError(f"{name} is a 2D image", "segmentation needs a 3D volume")
    one_volume = image.GetDimension() == 4 and image.GetSize()[3] == 1  # a NRRD's or MetaImage's 4th axis of one
    if image.GetDimension() != 3 and not one_volume:
        raise InputError(
            f"{name} has {image.GetDimension()} dimensions; a 3D volume is needed",
            "split 4D images into one 3D volume per channel",
        )
    spacing = np.asarray(image.GetSpacing()[:3])
    if np.any(spacing <= 0) or not np.all(np.isfinite(spacing)):
        raise InputError(f"{name} has zero or negative voxel spacing {tuple(spacing)}", "fix the image header")
    array = sitk.GetArrayFromImage(image)  # (k, j, i), or (1, k, j, i)
    return Volume((array[0] if one_volume else array).transpose(2, 1, 0), affine_of_image(image), name)
