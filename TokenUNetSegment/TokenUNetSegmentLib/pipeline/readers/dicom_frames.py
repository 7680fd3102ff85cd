"""Multi-frame DICOM files: enhanced CT, MR and PET (and their legacy-converted forms) and older multi-frame CT/MR.

GDCM (SimpleITK's DICOM reader) decodes the frames in file order, applies one rescale to all of them (the shared
functional group's, else the first frame's) and places them from the first frames' geometry. Here each frame's
functional groups are read with pydicom (its position, orientation, pixel spacing and rescale), the frames are checked
as the slices of a series are (gaps, duplicates, mixed orientations or spacings; a gantry tilt is resampled as a
series' is), and the volume is built from them: frames stacked by position, each with its own rescale (in float32
where they differ), PixelPaddingValue kept out, the geometry from the frames' headers. A file that holds several
volumes (phases, stacks, echoes) or no scanner volume (a secondary capture, an RT dose grid, a cine loop) is refused.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from warnings import catch_warnings, simplefilter

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .dicom import (
    PIXEL_SPACING,
    SLICE_STEP,
    Slice,
    _numbers,
    _padding_mask,
    _values,
    _without_padding,
    check_slices,
    declared_grid,
    execute,
    fill_padding,
    in_plane_tolerance,
    padding_mask,
    placement_warnings,
)
from .dicom_meta import ENHANCED_CLASSES, not_a_volume
from .dicom_tilt import tilt_step, tilted_grid, untilted
from .header import OpenedImage, check_size
from .itk import pixel_bytes, quiet_itk

ONE_PLANE = {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.128"}  # CT, MR, PET
VOLUME_KEYS = (  # (functional group, attribute, what frames differing in it are): several volumes in one file
    ("FrameContentSequence", "StackID", "stacks"),
    ("FrameContentSequence", "TemporalPositionIndex", "temporal positions"),
    ("MREchoSequence", "EffectiveEchoTime", "echoes"),
    ("MRDiffusionSequence", "DiffusionBValue", "diffusion b-values"),
    ("CardiacSynchronizationSequence", "NominalCardiacTripDelay", "cardiac phases"),
    ("CardiacSynchronizationSequence", "NominalPercentageOfCardiacPhase", "cardiac phases"),
)
SPATIAL_DIMENSIONS = {0x00209057, 0x00200032, 0x00201041}  # InStackPositionNumber, ImagePositionPatient, SliceLocation
NATIVE = {"1.2.840.10008.1.2": "<", "1.2.840.10008.1.2.1": "<", "1.2.840.10008.1.2.2": ">"}  # uncompressed: byte order


def open_multi_frame(file: Slice, folder: Path, limit, warnings: list[str], unread: list[str]) -> OpenedImage:
    """One multi-frame file: its frames are checked as the slices of a series are, then read as one volume (see the
    module). Raises :class:`InputError` for a file that is no volume, holds several, or whose frames make no grid."""
    name = Path(file.file).name
    _check_kind(file, name)
    if file.components > 1:
        raise InputError(f"{name} has {file.components} components per voxel", "use one scalar volume per channel")
    frames, applied, probe = (
        _frames(file, folder, warnings) if file.position is None else (_frames_of_one_plane(file), None, None)
    )
    several = _several_volumes(frames, name)  # also where they interleave into one regular grid
    if several is not None:
        raise several
    try:
        ordered, uneven = check_slices(frames, name, tilt=True)
    except InputError as error:
        if unread:
            raise InputError(f"{error.message}; {len(unread)} damaged file(s) left out", "export it again") from None
        raise
    if uneven:
        warnings.append(uneven)
    step = tilt_step(ordered, name, in_plane_tolerance(ordered[0]))
    tilted = None if step is None else tilted_grid(ordered, step)
    warnings.extend(placement_warnings(ordered, tilted, f"frames of {name}"))
    if tilted is None and [id(f) for f in frames] == [id(f) for f in reversed(ordered)]:  # top to bottom: kept so
        ordered = frames

    def read() -> tuple[sitk.Image, list[str]]:
        return _read_frames(file, frames, ordered, (applied, probe), limit, tilted), warnings

    values = _values(file, 1) if tilted is None else int(np.prod(tilted.size))
    return OpenedImage(values, read, file.modality, declared_grid(ordered, tilted))


def _check_kind(file: Slice, name: str) -> None:
    """Refuse a multi-frame file whose SOP class holds no scanner volume (frames that are pictures, doses, times)."""
    kind = not_a_volume(file.sop_class)
    if kind is not None:
        raise InputError(f"{name} is {kind[0]}", kind[1])
    known = ONE_PLANE if file.position is not None else set(ENHANCED_CLASSES)
    if file.sop_class and file.sop_class not in known:
        raise InputError(
            f"{name} is a multi-frame {_class_name(file.sop_class)} file: its frames are not known to be one "
            "volume's slices (e.g. a cine loop)",
            "pass a CT/MR series, or convert a volume to NRRD in Slicer",
        )


def single_frame(file: Slice, folder: Path) -> Slice:
    """The one frame of an enhanced file as a series' slice (Siemens XA-style exports write a series of them):
    placed and rescaled by its functional groups, as GDCM reads it."""
    frame = _frames(file, folder, probe=False)[0][0]
    return replace(frame, file=file.file, sop_class=file.sop_class, modality=file.modality, image_type=file.image_type)


def _class_name(uid: str) -> str:
    """A SOP class's name (``Ultrasound Multi-frame Image``) where pydicom knows it."""
    try:
        from pydicom.uid import UID

        known = UID(uid).name
    except ImportError:
        known = uid
    return known.removesuffix(" Storage") if known != uid else f"SOP class {uid}"


def _frames(
    file: Slice, folder: Path, warnings=None, probe: bool = True
) -> tuple[list[Slice], tuple[float, float], tuple | None]:
    """The frames of an enhanced multi-frame file as slices, in file order, from its functional groups (pydicom:
    SimpleITK does not show sequences), each with its own rescale, padding and volume keys; the rescale GDCM
    applies to every frame (:func:`gdcm_rescale`, else the file's own, else none); and where the first frame's stored
    values lie in an uncompressed file (:func:`_first_frame`), to check that rescale once GDCM has read it.
    ``warnings``: where to say that a CT's values are not Hounsfield units (:func:`_units_warning`); ``probe``
    False: the first frame's place is not looked up (one frame of a series: its file is not opened again)."""
    name = Path(file.file).name
    try:
        import pydicom
    except ImportError:
        raise InputError(
            f"{name} is an enhanced multi-frame DICOM file: checking its frames' positions needs pydicom",
            "pip install pydicom, or convert it to NRRD in Slicer",
        ) from None
    try:
        with catch_warnings():  # pydicom's own about odd values: not the user's to read on stderr
            simplefilter("ignore")
            ds = pydicom.dcmread(file.file, defer_size=1024)  # the pixel data's place noted, not read
        shared = (ds.get("SharedFunctionalGroupsSequence") or [pydicom.Dataset()])[0]
        groups = ds.get("PerFrameFunctionalGroupsSequence") or []
        pointers = [
            int(d.DimensionIndexPointer)
            for d in ds.get("DimensionIndexSequence") or []
            if d.get("DimensionIndexPointer")
        ]
        own = _rescale(ds) or (1.0, 0.0)
        applied = gdcm_rescale(shared, groups)
        first = _first_frame(ds, file) if probe else None
        if warnings is not None and groups:
            warnings.extend(_units_warning(ds, shared, groups[0], file))
        padding = [float(v) for v in (ds.get("PixelPaddingValue"), ds.get("PixelPaddingRangeLimit")) if v is not None]
        frames = []
        for number, group in enumerate(groups, 1):
            position = _group_value(group, shared, "PlanePositionSequence", "ImagePositionPatient", 3)
            orientation = _group_value(group, shared, "PlaneOrientationSequence", "ImageOrientationPatient", 6)
            spacing = _group_value(group, shared, "PixelMeasuresSequence", "PixelSpacing", 2)
            if position is None or orientation is None or spacing is None:
                break
            slope, intercept = _rescale(_item(group)) or _rescale(_item(shared)) or own
            if slope == 0:
                raise InputError(
                    f"frame {number} of {name} in {folder.name} has RescaleSlope 0: its stored values cannot be "
                    "turned into CT numbers or intensities (each would be its intercept)",
                    "export it again",
                )
            ends = sorted(v * slope + intercept for v in (padding[0], padding[-1])) if padding else None
            frames.append(
                Slice(
                    f"{file.file} frame {number}",  # named so in messages
                    (*file.size[:2], 1),
                    (float(spacing[1]), float(spacing[0])),  # DICOM: row spacing (y) first
                    file.pixel,
                    file.components,
                    position,
                    orientation.reshape(2, 3),
                    padding=None if ends is None else (ends[0], ends[1], abs(slope)),
                    rescale=(slope, intercept),
                    content=tuple(
                        (keyword, what, _key(group, shared, sequence, keyword))
                        for sequence, keyword, what in VOLUME_KEYS
                    )
                    + _dimensions(group, pointers),
                )
            )
    except (InputError, MemoryError):
        raise
    except Exception as error:  # a damaged file: pydicom raises many kinds (an unknown VR: NotImplementedError)
        raise InputError(
            f"the DICOM file {name} in {folder.name} cannot be read: {error}"[:160], "export it again"
        ) from None
    if (not frames and not groups) and file.sop_class in ENHANCED_CLASSES:  # stripped (pydicom-data's emri_small)
        raise InputError(
            f"{name} is {ENHANCED_CLASSES[file.sop_class]} without functional groups: no frame has a position or "
            "orientation to place it by",
            "export it again, or convert it to NRRD in Slicer",
        )
    if len(frames) != file.size[2] or not frames:
        raise InputError(
            f"the DICOM file {name} in {folder.name} has frames without a position or orientation",
            "this is not a volume (e.g. a cine loop or a screenshot): pick the CT/MR series",
        )
    return frames, applied or own, first


def _units_warning(ds, shared, first, file: Slice) -> list[str]:
    """The warning that a CT's values are not Hounsfield units: its first frame's RescaleType (else the file's) is
    not HU (a perfusion map: US, ml/100ml/s in a real-world value mapping); none otherwise."""
    kind = _key(first, shared, "PixelValueTransformationSequence", "RescaleType") or ds.get("RescaleType")
    if file.modality != "CT" or not kind or str(kind).strip().upper() == "HU":
        return []
    image_type = "\\".join(ds.get("ImageType") or []) or "not given"
    return [
        f"the values of {Path(file.file).name} are not Hounsfield units (RescaleType {str(kind).strip()}; ImageType "
        f"{image_type}): a CT model reads them as if they were"
    ]


def gdcm_rescale(shared, groups) -> tuple[float, float] | None:
    """The rescale GDCM applies to every frame (its ``ImageHelper::GetRescaleInterceptSlopeValue``): the shared
    functional group's when it gives both slope and intercept, else the first frame's; None for neither."""
    return _rescale(_item(shared), both=True) or (_rescale(_item(groups[0]), both=True) if groups else None)


def _first_frame(ds, file: Slice) -> tuple[int, str, int] | None:
    """(file offset, numpy type, BitsStored) of the first frame's stored values in an uncompressed file of one value
    per pixel of 8 or 16 bits, its high bit BitsStored - 1 (PS3.5 8.1.1: frames follow each other in the Pixel Data
    value); None otherwise."""
    syntax = str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", ""))
    order = NATIVE.get(syntax)
    bits, stored = ds.get("BitsAllocated"), ds.get("BitsStored")
    element = ds.get_item(0x7FE00010) if 0x7FE00010 in ds else None
    if order is None or file.components != 1 or bits not in (8, 16) or element is None:
        return None
    if not isinstance(stored, int) or not 0 < stored <= bits or ds.get("HighBit") != stored - 1:
        return None
    at = getattr(element, "file_tell", getattr(element, "value_tell", None))  # where pydicom found the value, after
    if at is None:  # its tag, (VR, 2 reserved bytes,) 4-byte length (deferred: file_tell; read: a raw value_tell)
        return None
    header = 8 if syntax == "1.2.840.10008.1.2" else 12
    with open(file.file, "rb") as stream:  # the Pixel Data tag there, or nothing is known of that place
        stream.seek(max(at - header, 0))
        if stream.read(4) != (b"\xe0\x7f\x10\x00" if order == "<" else b"\x7f\xe0\x00\x10"):
            return None
    return at, f"{order}{'i' if ds.get('PixelRepresentation') == 1 else 'u'}{bits // 8}", stored


def _item(group, sequence: str = "PixelValueTransformationSequence"):
    """The first item of a functional group's ``sequence``, None without."""
    items = group.get(sequence)
    return items[0] if items else None


def _rescale(item, both: bool = False) -> tuple[float, float] | None:
    """(slope, intercept) a dataset (a file, a PixelValueTransformationSequence item) gives; None for neither
    (``both``: None unless it gives both, as GDCM reads a functional group's)."""
    given = [keyword in item for keyword in ("RescaleSlope", "RescaleIntercept")] if item is not None else [False]
    if not (all(given) if both else any(given)):
        return None
    slope, intercept = item.get("RescaleSlope"), item.get("RescaleIntercept")
    return float(1.0 if slope is None else slope), float(0.0 if intercept is None else intercept)


def _key(frame, shared, sequence: str, keyword: str):
    """The value of ``keyword`` in the frame's functional group ``sequence`` (else the shared one's), None without."""
    for group in (frame, shared):
        item = _item(group, sequence)
        if item is not None and keyword in item:
            value = item[keyword].value
            return float(value) if isinstance(value, (int, float)) else str(value).strip()
    return None


def _dimensions(group, pointers: list[int]) -> tuple:
    """The frame's index along each of the file's non-spatial dimensions (DimensionIndexValues against the
    DimensionIndexSequence's pointers: a time, a phase, an echo, ...), as :attr:`Slice.content` entries."""
    from pydicom.datadict import keyword_for_tag

    item = _item(group, "FrameContentSequence")
    values = item.get("DimensionIndexValues") if item is not None else None
    values = [] if values is None else [values] if isinstance(values, int) else list(values)
    return tuple(
        (f"dimension index {keyword_for_tag(pointer) or f'{pointer:08X}'}", "volumes", int(value))
        for pointer, value in zip(pointers, values, strict=False)
        if pointer not in SPATIAL_DIMENSIONS
    )


def _several_volumes(frames: list[Slice], name: str) -> InputError | None:
    """The refusal of a file that holds several volumes told apart by one of :data:`VOLUME_KEYS` (phases of a
    multi-phase CT, stacks, echoes) or by a non-spatial dimension index shared by several frames each, whether or
    not their frames happen to make one grid; None when none differs."""
    keys: dict[str, tuple[str, list]] = {}
    for k, frame in enumerate(frames):
        for keyword, what, value in frame.content:
            keys.setdefault(keyword, (what, [None] * len(frames)))[1][k] = value
    for keyword, (what, values) in keys.items():
        kinds = sorted({v for v in values if v is not None}, key=lambda v: (isinstance(v, str), str(v).zfill(12)))
        if what == "volumes" and len(kinds) == len(frames):  # one per frame: an order, not volumes
            continue
        if len(kinds) > 1:
            counts = sorted({values.count(v) for v in kinds})
            each = f"{counts[0]} frames each" if len(counts) == 1 else f"{counts[0]} to {counts[-1]} frames"
            shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in kinds[:4])
            return InputError(
                f"{name} holds {len(kinds)} {what} ({keyword} {shown}{', ...' if len(kinds) > 4 else ''}) of {each}: "
                "several volumes in one file",
                "save the one to segment on its own, e.g. as NRRD in Slicer",
            )
    return None


def _frames_of_one_plane(file: Slice) -> list[Slice]:
    """The frames of an older multi-frame file: one position and orientation for all, SpacingBetweenSlices apart
    (GDCM applies the file's one rescale to every frame)."""
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
            f"{file.file} frame {k + 1}",
            frame,
            in_plane,
            file.pixel,
            file.components,
            file.position + k * step[0] * normal,
            file.orientation,
            padding=file.padding,
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


def _read_frames(file: Slice, frames: list[Slice], ordered: list[Slice], expected, limit, tilted) -> sitk.Image:
    """The frames' voxels as one volume: GDCM's decoding (frames in file order, the ``expected`` (rescale, first
    frame's place) checked on the first), restacked in ``ordered``, each frame given its own rescale, padding kept out,
    placed by the frames' headers (``tilted``: resampled onto that :class:`.dicom_tilt.TiltedGrid`)."""
    name = Path(file.file).name
    applied, probe = expected
    at = {id(f): k for k, f in enumerate(frames)}
    order = [at[id(f)] for f in ordered]
    rescaled = applied is not None and any(f.rescale != applied for f in frames)
    copied = rescaled or tilted is not None or order != list(range(len(frames)))
    read_bytes = pixel_bytes(file.pixel)
    kept = sitk.sitkFloat32 if rescaled else file.pixel
    sizes, extra = (*file.size[:2], len(frames)), (pixel_bytes(kept) if copied else 0)
    check_size(sizes, sitk.GetPixelIDValueAsString(kept), read_bytes + extra, name, limit)
    if tilted is not None:  # the float32 grid it is resampled onto, with padding its values and weights apart
        check_size(tilted.size, "32-bit float", 4 + (12 if any(f.padding for f in frames) else 4), name, limit)
    reader = sitk.ImageFileReader()
    reader.SetFileName(file.file)
    image = execute(reader, f"the DICOM file {name}", "file", file.file)
    if image.GetDimension() != 3 or image.GetSize() != sizes:
        raise InputError(
            f"the DICOM reader read {name} as {' x '.join(map(str, image.GetSize()))} voxels where its frames make "
            f"{' x '.join(map(str, sizes))}",
            "convert it to NRRD in Slicer, or export classic single-frame slices",
        )
    if probe is not None and applied is not None:
        _check_rescale(file, sitk.GetArrayViewFromImage(image)[0], probe, applied)
    if not copied:  # GDCM's image as it is, its padding (if it reads high) replaced in a copy as a series'
        return _placed(_without_padding(image, _padding_mask(image, ordered)), ordered)
    view = sitk.GetArrayViewFromImage(image)  # (k, j, i), frames in file order
    array = np.empty(view.shape, np.float32 if rescaled else view.dtype)
    for k, source in enumerate(order):
        if rescaled:  # the stored values back from GDCM's rescale, then the frame's own
            slope, intercept = ordered[k].rescale
            array[k] = (view[source] - applied[1]) / applied[0] * slope + intercept
        else:
            array[k] = view[source]
    del view, image
    mask = padding_mask(array, ordered)
    fill_padding(array, mask)
    stacked = _placed(sitk.GetImageFromArray(array), ordered)
    del array
    return stacked if tilted is None else untilted(stacked, tilted, mask)


def _check_rescale(file: Slice, read: np.ndarray, probe: tuple, applied: tuple[float, float]) -> None:
    """Refuse when GDCM's first frame (``read``) is not its stored values (at ``probe``: :func:`_first_frame`) times
    the ``applied`` rescale this module expects of GDCM: another GDCM may pick another rescale, which would give wrong
    units without a word."""
    at, kind, bits = probe
    try:
        raw = np.fromfile(file.file, kind, count=read.size, offset=at).reshape(read.shape).astype(np.int64)
    except (OSError, ValueError):  # not there (truncated): GDCM's read would have failed first; nothing to compare
        return
    stored = raw & ((1 << bits) - 1)  # the bits above the high bit are no part of the value (PS3.5 8.1.1)
    if "i" in kind:
        stored = (stored ^ (1 << (bits - 1))) - (1 << (bits - 1))  # two's complement in BitsStored bits
    want = stored * applied[0] + applied[1]
    bad = ~np.isclose(read, want, rtol=1e-5, atol=1e-3)
    if bad.any():
        k = np.unravel_index(np.argmax(bad), bad.shape)
        raise InputError(
            f"the DICOM reader rescaled {Path(file.file).name} otherwise than expected (frame 1: {read[k]:g} for "
            f"stored {stored[k]:g} x {applied[0]:g} + {applied[1]:g})",
            "convert it to NRRD in Slicer",
        )


def _placed(image: sitk.Image, ordered: list[Slice]) -> sitk.Image:
    """``image`` (frame k at index k) placed where ``ordered``'s headers put the frames: the first frame's position,
    its row and column axes and spacing, and the step from frame to frame along the normal."""
    first, last = ordered[0], ordered[-1]
    row, column = first.orientation
    normal = np.cross(row, column)
    step = float((last.position - first.position) @ normal) / (len(ordered) - 1) if len(ordered) > 1 else 1.0
    image.SetOrigin(tuple(float(v) for v in first.position))
    image.SetSpacing((*first.spacing, abs(step)))
    image.SetDirection(tuple(float(v) for v in np.stack([row, column, np.sign(step) * normal], axis=1).ravel()))
    return image
