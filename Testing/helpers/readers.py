"""Helpers for the reader tests: small volumes written in every supported format, header edits, DICOM series."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing, image_from_array

SHAPE = (9, 8, 7)  # (i, j, k)
AFFINE = affine_from_spacing((0.8, 0.9, 2.5), origin=(10.0, -20.0, 30.0), direction=np.diag([-1.0, 1.0, 1.0]))
FORMATS = ("nii", "nii.gz", "nrrd", "gz.nrrd", "mha", "z.mha", "nhdr", "mhd")
"""Suffixes of :func:`write_volume`: ``gz.nrrd`` and ``z.mha`` are the compressed NRRD and MetaImage."""


def volume_array(shape=SHAPE, dtype=np.int16) -> np.ndarray:
    """A deterministic (i, j, k) array with no two equal neighbours along i (so shifts and zeros show)."""
    values = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape) * 7 % 2000 - 1000
    return values.astype(dtype)


def write_volume(folder: Path, kind: str, array=None, affine=AFFINE, stem="scan") -> Path:
    """Write ``array`` (default :func:`volume_array`) as ``stem.<kind>`` (one of :data:`FORMATS`)."""
    array = volume_array() if array is None else array
    compressed = kind in ("nii.gz", "gz.nrrd", "z.mha")
    suffix = {"gz.nrrd": "nrrd", "z.mha": "mha"}.get(kind, kind)
    path = Path(folder) / f"{stem}.{suffix}"
    sitk.WriteImage(image_from_array(array, affine), str(path), useCompression=compressed)
    return path


def data_start(path: Path) -> int:
    """Where the voxel data starts in an uncompressed single file (NIfTI vox_offset, after a text header)."""
    data = path.read_bytes()
    if path.name.endswith(".nii"):
        return int(struct.unpack_from("<f", data, 108)[0])
    if path.name.endswith(".nrrd"):
        return data.index(b"\n\n") + 2
    return data.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")


def data_file_of(path: Path) -> Path:
    """The detached data file named by a .nhdr or .mhd header."""
    text = path.read_text(errors="replace")
    match = re.search(r"^(?:data file|datafile|ElementDataFile)\s*[:=]\s*(.+)$", text, re.MULTILINE)
    return path.with_name(match.group(1).strip())


def edit_text_header(path: Path, pattern: str, replacement: str) -> Path:
    """Replace a line of a NRRD/MetaImage text header (the voxel data after it is kept byte for byte)."""
    data = path.read_bytes()
    if path.suffix == ".nrrd":
        end = data.index(b"\n\n") + 2
    elif path.suffix == ".mha":
        end = re.search(rb"ElementDataFile = [^\n]*\n", data).end()
    else:  # a detached header is all header
        end = len(data)
    edited, count = re.subn(pattern, replacement, data[:end].decode(), flags=re.MULTILINE)
    assert count, f"{pattern!r} not in the header of {path.name}"
    path.write_bytes(edited.encode() + data[end:])
    return path


def edit_nifti(path: Path, offset: int, fmt: str, *values) -> Path:
    """Overwrite a field of a NIfTI-1 header (little endian), compressed or not."""
    compressed = path.name.endswith(".gz")
    data = bytearray(gzip.decompress(path.read_bytes()) if compressed else path.read_bytes())
    struct.pack_into("<" + fmt, data, offset, *values)
    path.write_bytes(gzip.compress(bytes(data)) if compressed else bytes(data))
    return path


def sparse_nrrd(path: Path, sizes, spacing=1.0) -> Path:
    """An int16 NRRD that declares ``sizes`` voxels, its data a hole in the file (no disk used)."""
    header = (
        f"NRRD0004\ntype: int16\ndimension: 3\nsizes: {' '.join(str(s) for s in sizes)}\n"
        f"space: left-posterior-superior\nspace directions: ({spacing},0,0) (0,{spacing},0) (0,0,{spacing})\n"
        "endian: little\nencoding: raw\n\n"
    ).encode()
    with open(path, "wb") as stream:
        stream.write(header)
        stream.truncate(len(header) + 2 * int(np.prod(sizes)))
    return path


def refuse_reading(monkeypatch) -> None:
    """Make reading any NIfTI, NRRD or MetaImage file's voxels fail the test (its header may still be read)."""
    from TokenUNetSegmentLib.pipeline import readers

    def read(path, *args, **kwargs):
        raise AssertionError(f"the voxels of {Path(path).name} were read")

    monkeypatch.setattr(readers, "_read_file", read)


# NIfTI-1 field offsets (nifti1.h)
NIFTI_DIM, NIFTI_PIXDIM, NIFTI_VOX_OFFSET, NIFTI_SFORM_CODE, NIFTI_SROW = 40, 76, 108, 254, 280


def write_dicom_series(
    folder: Path,
    array_kji: np.ndarray,
    spacing=(0.8, 0.8, 2.5),
    positions=None,
    origin=(0.0, 0.0),
    orientation=(1, 0, 0, 0, 1, 0),
    series="1.2.826.0.1.3680043.2.1125.1.1",
    description="test series",
    prefix="IM",
    first_number=1,
    modality="CT",
    extra_tags=None,
) -> list[Path]:
    """Write one 2D DICOM CT file per slice (k, j, i indexing) with its own position; returns the files.

    ``positions``: the slices' offsets along the slice normal (default: ``k * spacing[2]``); ``origin``: the
    in-plane position of every slice (a list of pairs gives each slice its own, e.g. for a gantry tilt); ``extra_tags``:
    more DICOM tags (``{"0008|0008": "ORIGINAL\\PRIMARY\\LOCALIZER"}``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, column)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    for k, pixels in enumerate(np.asarray(array_kji)):
        offset = k * spacing[2] if positions is None else positions[k]
        in_plane = origin[k] if isinstance(origin, list) else origin
        position = in_plane[0] * row + in_plane[1] * column + offset * normal
        image = sitk.GetImageFromArray(np.ascontiguousarray(pixels, dtype=np.int16))
        image.SetSpacing(tuple(float(s) for s in spacing[:2]))
        number = first_number + k
        tags = {
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": f"{series}.{number}",
            "0008|0060": modality,
            "0008|103e": description,
            "0010|0010": "Test^Patient",
            "0010|0020": "P1",
            "0018|0050": str(spacing[2]),
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": series,
            "0020|0013": str(number),
            "0020|0032": "\\".join(f"{v:.4f}" for v in position),
            "0020|0037": "\\".join(str(float(v)) for v in orientation),
            "0028|0030": f"{spacing[1]}\\{spacing[0]}",
            **(extra_tags or {}),
        }
        for key, value in tags.items():
            image.SetMetaData(key, value)
        path = folder / f"{prefix}{number:04d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(image)
        files.append(path)
    return files


def dicom_array(slices=12, rows=16, columns=20) -> np.ndarray:
    """A (k, j, i) int16 array for :func:`write_dicom_series` with distinct slices."""
    return (np.arange(slices * rows * columns).reshape(slices, rows, columns) % 500).astype(np.int16)


def _dicom_element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    """One explicit-VR little-endian DICOM data element."""
    value += b"\0" * (len(value) % 2)
    if vr in (b"OB", b"SQ", b"UN", b"UT"):
        return struct.pack("<HH", group, element) + vr + b"\0\0" + struct.pack("<I", len(value)) + value
    return struct.pack("<HH", group, element) + vr + struct.pack("<H", len(value)) + value


def write_non_image_dicom(path: Path, sop_class: str, modality: str = "SR") -> Path:
    """A valid DICOM file without pixels (a structured report, a DICOMDIR...): the file meta group naming
    ``sop_class``, then its SOP class, modality and a series UID."""
    meta = (
        _dicom_element(2, 0x01, b"OB", b"\0\1")
        + _dicom_element(2, 0x02, b"UI", sop_class.encode())
        + _dicom_element(2, 0x03, b"UI", b"1.2.826.0.1.3680043.2.1125.9.1")
        + _dicom_element(2, 0x10, b"UI", b"1.2.840.10008.1.2.1")
    )
    body = (
        _dicom_element(8, 0x16, b"UI", sop_class.encode())
        + _dicom_element(8, 0x60, b"CS", modality.encode())
        + _dicom_element(0x20, 0x0E, b"UI", b"1.2.826.0.1.3680043.2.1125.9")
    )
    group_length = _dicom_element(2, 0x00, b"UL", struct.pack("<I", len(meta)))
    Path(path).write_bytes(b"\0" * 128 + b"DICM" + group_length + meta + body)
    return Path(path)


def write_enhanced_ct(
    path: Path,
    array_kji: np.ndarray,
    spacing=(0.8, 0.8, 2.5),
    positions=None,
    order=None,
    legacy=None,
    unsigned=False,
    rescale=(1, 0),
    frame_rescales=None,
    padding=None,
    frame_spacings=None,
    frame_orientations=None,
    origins=None,
    frame_groups=None,
    sop_class="1.2.840.10008.5.1.4.1.1.2.1",
    modality="CT",
    instance=1,
) -> Path:
    """One enhanced (multi-frame) CT file: frames of ``array_kji`` (stored values) at ``positions`` along z (default
    k * spacing) with pixel spacing, orientation and rescale in the shared functional groups and each frame's position
    in its own; ``order``: the frames' order in the file (default 0, 1, ...). ``legacy``: a SOP class UID for an older
    multi-frame file instead, with one position, orientation and SpacingBetweenSlices for all its frames.

    Per frame k (before ``order``), each in the frame's own functional groups instead of the shared ones:
    ``frame_rescales`` (slope, intercept), ``frame_spacings`` (column, row spacing), ``frame_orientations`` (6
    direction cosines), ``origins`` (in-plane x, y of its position, e.g. a gantry tilt), ``frame_groups`` (more
    functional groups: ``{"FrameContentSequence": {"TemporalPositionIndex": 2}}``). ``padding``: PixelPaddingValue,
    or (value, range limit); ``unsigned``: unsigned stored values; ``instance``: its InstanceNumber, in its UID."""
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian

    array = np.asarray(array_kji, np.uint16 if unsigned else np.int16)
    order = list(range(len(array))) if order is None else list(order)
    positions = [k * spacing[2] for k in range(len(array))] if positions is None else positions
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.2.1125.7.1.{instance}"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = modality, "Test^Patient", "P1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.2.1125.7", "1.2.826.0.1.3680043.2.1125.7.2"
    ds.InstanceNumber, ds.NumberOfFrames = instance, len(order)
    ds.Rows, ds.Columns = array.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, int(not unsigned)
    if padding is not None:
        value, limit = padding if isinstance(padding, tuple) else (padding, None)
        ds.add_new(0x00280120, "US" if unsigned else "SS", value)  # PixelPaddingValue
        if limit is not None:
            ds.add_new(0x00280121, "US" if unsigned else "SS", limit)  # PixelPaddingRangeLimit

    def item(**values) -> Sequence:
        entry = Dataset()
        for keyword, value in values.items():
            setattr(entry, keyword, value)
        return Sequence([entry])

    shared = Dataset()
    if frame_spacings is None:
        shared.PixelMeasuresSequence = item(PixelSpacing=[spacing[1], spacing[0]], SliceThickness=spacing[2])
    if frame_orientations is None:
        shared.PlaneOrientationSequence = item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    if frame_rescales is None:
        shared.PixelValueTransformationSequence = item(
            RescaleSlope=rescale[0], RescaleIntercept=rescale[1], RescaleType="HU"
        )
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in order:
        frame = Dataset()
        x, y = (0.0, 0.0) if origins is None else origins[k]
        frame.PlanePositionSequence = item(ImagePositionPatient=[float(x), float(y), float(positions[k])])
        if frame_spacings is not None:
            frame.PixelMeasuresSequence = item(
                PixelSpacing=[frame_spacings[k][1], frame_spacings[k][0]], SliceThickness=spacing[2]
            )
        if frame_orientations is not None:
            frame.PlaneOrientationSequence = item(ImageOrientationPatient=list(frame_orientations[k]))
        if frame_rescales is not None:
            slope, intercept = frame_rescales[k]
            frame.PixelValueTransformationSequence = item(
                RescaleSlope=slope, RescaleIntercept=intercept, RescaleType="HU"
            )
        for sequence, values in ({} if frame_groups is None else frame_groups[k]).items():
            setattr(frame, sequence, item(**values))
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    if legacy:
        del ds.SharedFunctionalGroupsSequence, ds.PerFrameFunctionalGroupsSequence
        ds.SOPClassUID = meta.MediaStorageSOPClassUID = legacy
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, 0.0], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SpacingBetweenSlices = [spacing[1], spacing[0]], spacing[2]
        if tuple(rescale) != (1, 0):
            ds.RescaleSlope, ds.RescaleIntercept = rescale
    ds.PixelData = np.ascontiguousarray(array[order]).tobytes()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return Path(path)
