"""Multi-frame DICOM files (enhanced CT, older multi-frame images): each frame placed as the slice of a series is,
checked like one, and the image GDCM stacks compared with the frames' own positions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .dicom import EXACT_MM, PIXEL_SPACING, SLICE_STEP, Slice, _grid, _numbers, _read_files, _values, check_slices
from .header import OpenedImage
from .itk import quiet_itk


def open_multi_frame(file: Slice, reader, folder: Path, limit, warnings: list[str], unread: list[str]) -> OpenedImage:
    """One multi-frame file: its frames are checked as the slices of a series are, and the image GDCM stacks must
    put every frame where the header says (GDCM falls back to 1 mm voxels where it does not find the geometry)."""
    frames = _frames(file, folder) if file.position is None else _frames_of_one_plane(file, folder)
    try:
        ordered, uneven = check_slices(frames, Path(file.file).name)
    except InputError as error:
        if unread:
            raise InputError(f"{error.message}; {len(unread)} damaged file(s) left out", "export it again") from None
        raise
    if uneven:
        warnings.append(uneven)

    def read() -> tuple[sitk.Image, list[str]]:
        image = _read_files(reader, [file.file], [file], folder, limit)
        if not _frames_placed_as_declared(image, frames):
            raise InputError(
                f"the DICOM reader placed the frames of {Path(file.file).name} elsewhere than their headers say",
                "convert it to NRRD in Slicer, or export classic single-frame slices",
            )
        return image, warnings

    return OpenedImage(_values(file, 1), read, file.modality, _grid(ordered))  # the frames' grid, for memory


def _frames(file: Slice, folder: Path) -> list[Slice]:
    """The frames of an enhanced multi-frame file as slices, in file order, from its functional groups (pydicom:
    SimpleITK does not show sequences)."""
    name = Path(file.file).name
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:
        raise InputError(
            f"{name} is an enhanced multi-frame DICOM file: checking its frames' positions needs pydicom",
            "pip install pydicom, or convert it to NRRD in Slicer",
        ) from None
    try:
        ds = pydicom.dcmread(file.file, stop_before_pixels=True)
        shared = ds.get("SharedFunctionalGroupsSequence") or [pydicom.Dataset()]
        groups = ds.get("PerFrameFunctionalGroupsSequence") or []
        frames = []
        for group in groups:
            position = _group_value(group, shared[0], "PlanePositionSequence", "ImagePositionPatient", 3)
            orientation = _group_value(group, shared[0], "PlaneOrientationSequence", "ImageOrientationPatient", 6)
            spacing = _group_value(group, shared[0], "PixelMeasuresSequence", "PixelSpacing", 2)
            if position is None or orientation is None or spacing is None:
                break
            frame = (*file.size[:2], 1)
            in_plane = (float(spacing[1]), float(spacing[0]))  # DICOM: row spacing (y) first
            frames.append(
                Slice(file.file, frame, in_plane, file.pixel, file.components, position, orientation.reshape(2, 3))
            )
    except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, KeyError) as error:
        raise InputError(
            f"the DICOM file {name} in {folder.name} cannot be read: {error}"[:160], "export it again"
        ) from None
    if len(frames) != file.size[2] or not frames:
        raise InputError(
            f"the DICOM file {name} in {folder.name} has frames without a position or orientation",
            "this is not a volume (e.g. a cine loop or a screenshot): pick the CT/MR series",
        )
    return frames


def _frames_of_one_plane(file: Slice, folder: Path) -> list[Slice]:
    """The frames of an older multi-frame file: one position and orientation for all, SpacingBetweenSlices apart."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(file.file)
    with quiet_itk():
        reader.ReadImageInformation()
    spacing, step = _numbers(reader, PIXEL_SPACING, 2), _numbers(reader, SLICE_STEP, 1)
    if spacing is None or step is None or step[0] <= 0:
        raise InputError(
            f"the multi-frame DICOM file {Path(file.file).name} does not say how far apart its frames are",
            "convert it to NRRD in Slicer, or export classic single-frame slices",
        )
    normal = np.cross(*file.orientation)
    in_plane = (float(spacing[1]), float(spacing[0]))  # DICOM: row spacing (y) first
    frame = (*file.size[:2], 1)
    return [
        Slice(
            file.file,
            frame,
            in_plane,
            file.pixel,
            file.components,
            file.position + k * step[0] * normal,
            file.orientation,
        )
        for k in range(file.size[2])
    ]


def _group_value(frame, shared, sequence: str, keyword: str, count: int) -> np.ndarray | None:
    """``keyword`` from the frame's functional group ``sequence``, else from the shared one."""
    for group in (frame, shared):
        items = group.get(sequence)
        if items and keyword in items[0]:
            values = np.array([float(v) for v in items[0][keyword].value], float)
            return values if values.size == count and np.all(np.isfinite(values)) else None
    return None


def _frames_placed_as_declared(image: sitk.Image, frames: list[Slice]) -> bool:
    """Whether frame k (file order) of ``image`` lies at its header's position, with its pixel spacing and axes."""
    if image.GetDimension() != 3 or image.GetSize()[2] != len(frames):
        return False
    points = np.array([image.TransformIndexToPhysicalPoint((0, 0, k)) for k in range(len(frames))])
    row = np.subtract(image.TransformIndexToPhysicalPoint((1, 0, 0)), points[0])
    column = np.subtract(image.TransformIndexToPhysicalPoint((0, 1, 0)), points[0])
    first = frames[0]
    return (
        np.allclose(points, [f.position for f in frames], atol=EXACT_MM)
        and np.allclose(row, first.spacing[0] * first.orientation[0], atol=1e-3)
        and np.allclose(column, first.spacing[1] * first.orientation[1], atol=1e-3)
    )
