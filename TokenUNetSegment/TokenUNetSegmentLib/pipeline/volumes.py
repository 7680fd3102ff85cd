"""Input volumes: (array, IJK->RAS) pairs or files (NIfTI, NRRD, MetaImage, a DICOM series folder)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .geometry import Grid, affine_of_image, check_affine

SUPPORTED_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass
class Volume:
    """A scalar 3D volume: ``array`` indexed (i, j, k) and its IJK->RAS ``affine``."""

    array: np.ndarray
    affine: np.ndarray
    name: str = "volume"

    @property
    def grid(self) -> Grid:
        return Grid(tuple(int(s) for s in self.array.shape), self.affine)


def as_volume(item, name: str | None = None) -> Volume:
    """A checked :class:`Volume` from a Volume, an ``(array, ijk_to_ras)`` pair, a path or ``sample:ID``."""
    from .samples import resolve_input

    item = resolve_input(item)
    if isinstance(item, Volume):
        volume = item
    elif isinstance(item, (str, Path)):
        volume = read_volume(item)
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        volume = Volume(np.asarray(item[0]), np.asarray(item[1]), name or "array")
    else:
        raise InputError(
            f"unsupported input {type(item).__name__}",
            "pass a file path, a DICOM folder or an (array, ijk_to_ras 4x4) pair",
        )
    check_volume(volume)
    return volume


def check_volume(volume: Volume) -> None:
    """Raise :class:`InputError` for anything but a finite scalar 3D volume with a valid geometry."""
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
    if np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise InputError(
                f"{volume.name} has {bad} NaN or infinite voxels",
                "replace them (e.g. by the background value) before segmenting",
            )
    volume.affine = check_affine(volume.affine, volume.name)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def read_volume(path: str | Path) -> Volume:
    """Read a scalar 3D volume from a file or a DICOM series folder."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if path.is_dir():
        image = _read_dicom_folder(path)
    else:
        if _suffix(path) not in SUPPORTED_SUFFIXES:
            raise InputError(
                f"unsupported file type '{_suffix(path) or path.name}' for {path.name}",
                f"use one of {', '.join(SUPPORTED_SUFFIXES)} or a DICOM series folder",
            )
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as error:
            raise InputError(f"cannot read {path.name}: {str(error).strip().splitlines()[-1][:200]}") from None
    return volume_from_image(image, path.name)


def _read_dicom_folder(path: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(path))
    if not series:
        raise InputError(f"{path} is a folder without a DICOM series", "pass an image file or a folder of DICOM slices")
    # the series with the most slices
    files = max((reader.GetGDCMSeriesFileNames(str(path), s) for s in series), key=len)
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as error:
        raise InputError(f"cannot read the DICOM series in {path}: {str(error).strip()[-200:]}") from None


def volume_from_image(image: sitk.Image, name: str = "volume") -> Volume:
    """A :class:`Volume` from a SimpleITK image, refusing 2D, 4D, multi-component and bad spacing."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{name} has {image.GetNumberOfComponentsPerPixel()} components per voxel",
            "use one scalar volume per channel",
        )
    if image.GetDimension() == 2:
        raise InputError(f"{name} is a 2D image", "segmentation needs a 3D volume")
    if image.GetDimension() != 3:
        raise InputError(
            f"{name} has {image.GetDimension()} dimensions; a 3D volume is needed",
            "split 4D images into one 3D volume per channel",
        )
    spacing = np.asarray(image.GetSpacing())
    if np.any(spacing <= 0) or not np.all(np.isfinite(spacing)):
        raise InputError(f"{name} has zero or negative voxel spacing {tuple(spacing)}", "fix the image header")
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    return Volume(array, affine_of_image(image), name)
