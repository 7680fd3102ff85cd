"""NIfTI-1 and NIfTI-2 single-file headers (``.nii``, ``.nii.gz``), parsed without reading the voxels.

Field offsets follow nifti1.h / nifti2.h. SimpleITK reads a zero, NaN or infinite ``pixdim`` as 1 mm and a
negative one as a flipped axis, and fills a short file with zeros: these are caught here.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import InputError
from .header import ImageHeader, Payload, header_error

KIND = "NIfTI"
# datatype code -> (name, bytes per voxel); complex and RGB are listed so that their size is known
DATATYPES = {
    2: ("uint8", 1),
    4: ("int16", 2),
    8: ("int32", 4),
    16: ("float32", 4),
    32: ("complex64", 8),
    64: ("float64", 8),
    128: ("RGB24", 3),
    256: ("int8", 1),
    512: ("uint16", 2),
    768: ("uint32", 4),
    1024: ("int64", 8),
    1280: ("uint64", 8),
    1536: ("float128", 16),
    1792: ("complex128", 16),
    2048: ("complex256", 32),
    2304: ("RGBA32", 4),
}
COMPONENTS = {128: 3, 2304: 4}
"""Datatypes of colour voxels: RGB24 and RGBA32 are that many uint8 components per voxel."""
FLOATS = {16: "f4", 64: "f8"}
"""Datatypes whose NaN and infinite values ITK's NIfTI reader sets to 0 without a word (checked in the data)."""
ITK_READS_NIFTI2 = False
"""SimpleITK 2.5.7 (ITK 5.4) finds no reader for a NIfTI-2 file (and its NIfTI library prints to stderr when asked):
``test_a_nifti2_file_is_read_or_refused_in_plain_words`` fails when a SimpleITK that reads them comes."""
REFUSED_VOXELS = 1.0
"""Geometries of ITK and nibabel that place a corner of the volume more than this many voxels apart are refused."""
WARNED_VOXELS = 0.1
"""Geometries that place a corner more than this share of a voxel apart (and no more than ``REFUSED_VOXELS``) are
read as ITK reads them, with a warning (e.g. a pixdim rounded to two decimals: 0.64 mm over 512 voxels of 0.78 mm)."""
# header size -> (offset of the magic, the single-file magic, version)
VERSIONS = {348: (344, b"n+1\0", "NIfTI-1"), 540: (4, b"n+2\0", "NIfTI-2")}


def _open_start(path: Path, name: str) -> tuple[bytes, bool]:
    """The first 540 bytes (decompressed when the file is gzip, whatever its name) and whether it is."""
    with open(path, "rb") as stream:
        compressed = stream.read(2) == b"\x1f\x8b"
    try:
        if compressed:
            with gzip.open(path, "rb") as stream:
                return stream.read(540), True
        with open(path, "rb") as stream:
            return stream.read(540), False
    except EOFError:
        raise InputError(
            f"{name} is truncated: it ends inside its header", "the file is incomplete: copy or export it again"
        ) from None
    except (OSError, zlib.error) as error:
        raise header_error(name, KIND, f"its gzip stream is broken ({str(error).split(': ')[-1][:50]})") from None


def parse_nifti(path: Path, name: str) -> ImageHeader:
    """The header of a single-file NIfTI-1 or NIfTI-2 image."""
    start, compressed = _open_start(path, name)
    if len(start) < 348:
        raise header_error(name, KIND, f"only {len(start)} bytes, shorter than a NIfTI header")
    for order in ("<", ">"):
        size = struct.unpack(order + "i", start[:4])[0]
        if size in VERSIONS:
            break
    else:
        raise header_error(name, KIND, "its first 4 bytes are not a NIfTI-1 (348) or NIfTI-2 (540) header size")
    magic_at, magic, version = VERSIONS[size]
    if len(start) < size:
        raise header_error(name, KIND, f"only {len(start)} bytes, shorter than a {version} header")
    if start[magic_at : magic_at + 4] != magic:
        raise header_error(name, KIND, f"no {version} single-file magic (a .hdr/.img pair is not supported)")
    if size == 540 and not ITK_READS_NIFTI2:
        raise InputError(
            f"{name} is a NIfTI-2 file, which the image reader here (ITK) cannot read",
            "save it as NIfTI-1 (nibabel's Nifti1Image), NRRD or MetaImage",
        )
    fields = _fields_v1(start, order) if size == 348 else _fields_v2(start, order)
    fields["order"] = order
    return _header(path, name, fields, compressed)


def _fields_v1(data: bytes, order: str) -> dict:
    get = lambda fmt, at: struct.unpack_from(order + fmt, data, at)  # noqa: E731
    return {
        "dim": get("8h", 40),
        "intent_code": get("h", 68)[0],
        "xyzt_units": data[123],
        "datatype": get("h", 70)[0],
        "pixdim": get("8f", 76),
        "vox_offset": get("f", 108)[0],
        "scl": get("2f", 112),
        "codes": get("2h", 252),
        "quatern": get("6f", 256),
        "srow": get("12f", 280),
        "header_size": 348,
    }


def _fields_v2(data: bytes, order: str) -> dict:
    get = lambda fmt, at: struct.unpack_from(order + fmt, data, at)  # noqa: E731
    return {
        "dim": get("8q", 16),
        "intent_code": get("i", 504)[0],
        "xyzt_units": get("i", 500)[0],
        "datatype": get("h", 12)[0],
        "pixdim": get("8d", 104),
        "vox_offset": get("q", 168)[0],
        "scl": get("2d", 176),
        "codes": get("2i", 344),
        "quatern": get("6d", 352),
        "srow": get("12d", 400),
        "header_size": 540,
    }


def _header(path: Path, name: str, f: dict, compressed: bool) -> ImageHeader:
    ndim = f["dim"][0]
    if not 1 <= ndim <= 7:
        raise header_error(name, KIND, f"dim[0] (the number of dimensions) is {ndim}, not 1 to 7")
    sizes = tuple(int(s) for s in f["dim"][1 : ndim + 1])
    if any(s < 1 for s in sizes):
        raise header_error(name, KIND, f"its sizes must be positive, got {' x '.join(map(str, sizes))}")
    if f["datatype"] not in DATATYPES:
        raise header_error(name, KIND, f"unknown voxel type code {f['datatype']}")
    value_type, value_bytes = DATATYPES[f["datatype"]]
    stacked = sizes[3:]
    while stacked and stacked[-1] == 1:  # trailing axes of one: a 3D volume (as ITK reads it)
        stacked = stacked[:-1]
    per_voxel = f["intent_code"] in VECTOR_INTENTS and stacked[:1] == (1,)  # dim[5]: each voxel's values
    if per_voxel:  # a VECTOR's values may be volumes (SimpleITK's Compose of sequences), as a NRRD vector axis's
        stacked = stacked[1:] if f["intent_code"] == VECTOR_INTENT and len(stacked) == 2 else ()
    components = COMPONENTS.get(f["datatype"], 1)
    if components > 1:  # read by ITK as a vector of uint8 per voxel
        sizes, value_bytes = (*sizes, components), 1
    slope, inter = f["scl"]
    rescaled = np.isfinite(slope) and slope != 0 and (slope != 1 or inter != 0)
    offset = f["vox_offset"]
    if not np.isfinite(offset) or offset < 0 or offset > 1 << 40:
        raise header_error(name, KIND, f"vox_offset {offset} is not a valid data offset")
    offset = max(int(offset), f["header_size"])
    qform_code, sform_code = f["codes"]
    directions = None
    if sform_code > 0:
        directions = np.asarray(f["srow"], dtype=np.float64).reshape(3, 4)[:, :3]
        if not np.all(np.isfinite(f["srow"])):
            directions = np.full((3, 3), np.nan)
    elif qform_code > 0 and not np.all(np.isfinite(f["quatern"])):
        directions = np.full((3, 3), np.nan)  # a quaternion that is not numbers: no orientation at all
    data_bytes = math.prod(sizes) * value_bytes
    floats = f["order"] + FLOATS[f["datatype"]] if f["datatype"] in FLOATS else None
    # a .nii.gz is one gzip stream, header included: it must decode to the header and all the voxels
    if compressed:
        payload = Payload(path, 0, offset + data_bytes, "gzip", floats=floats, floats_from=offset)
    else:
        payload = Payload(path, offset, data_bytes, floats=floats)
    return ImageHeader(
        kind=KIND,
        sizes=sizes,
        value_type=value_type,
        value_bytes=value_bytes,
        memory_bytes=max(value_bytes, 4) if rescaled else value_bytes,
        spacing=tuple(float(p) for p in f["pixdim"][1 : min(ndim, 3) + 1]),
        directions=directions,
        payloads=[payload],
        warnings=_geometry_warnings(f, tuple(int(s) for s in f["dim"][1 : min(ndim, 3) + 1]), name),
        stacked=stacked,
        stacked_axis=_fourth_axis(f) if len(stacked) == 1 and not per_voxel else "",
        finite_checked=floats is not None and not rescaled,  # a slope can make infinite values (3e38 x 10)
    )


VECTOR_INTENTS = (1005, 1006, 1007)
"""NIFTI_INTENT_SYMMATRIX, DISPVECT and VECTOR (nifti1.h): dim[5] holds each voxel's values, which ITK reads as the
components of one 3D image (a multi-component image written by ITK). A symmetric matrix's or a displacement's values
are one geometric quantity, never volumes; a VECTOR's (what ITK writes for any multi-component image, e.g. sequences
joined with SimpleITK's Compose) are taken as volumes whose order the user names, as a NRRD ``vector`` axis's are."""
VECTOR_INTENT = 1007
TIME_INTENT = 2001
"""NIFTI_INTENT_TIME_SERIES (nifti1.h): the values along the 4th axis are a time series."""
TIME_UNITS = {8: "s", 16: "ms", 24: "us", 32: "Hz", 40: "ppm", 48: "rad/s"}
"""The time (and frequency) units of xyzt_units (bits 3-5, nifti1.h's NIFTI_UNITS_SEC ... NIFTI_UNITS_RADS)."""


def _fourth_axis(f: dict) -> str:
    """What the header says the 4th axis is when it is a time (or frequency) axis rather than a list of volumes, else
    "". A step of 0 or 1 in time units is what writers put on any 4D image (ITK writes mm and s, step 1), so only a
    TIME_SERIES intent or another step in time units counts."""
    step = float(f["pixdim"][4])
    units = TIME_UNITS.get(int(f["xyzt_units"]) & 0x38)
    if f["intent_code"] == TIME_INTENT:
        return "a time series (NIfTI intent TIME_SERIES)"
    if units and math.isfinite(step) and step > 0 and step != 1:
        return f"time (volumes {step:g} {units} apart in pixdim[4])"
    return ""


def _qform(f: dict) -> np.ndarray:
    """The qform's voxel-to-RAS 4x4 matrix (nifti1_io's nifti_quatern_to_mat44)."""
    b, c, d, *offsets = (float(v) for v in f["quatern"])
    a = 1.0 - (b * b + c * c + d * d)
    if a < 1e-7:  # a 180 degree rotation: (b, c, d) is the axis
        norm = math.sqrt(b * b + c * c + d * d)
        a, b, c, d = 0.0, b / norm, c / norm, d / norm
    else:
        a = math.sqrt(a)
    rotation = np.array(
        [
            [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
            [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
            [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
        ]
    )
    qfac = -1.0 if f["pixdim"][0] < 0 else 1.0
    affine = np.eye(4)
    affine[:3, :3] = rotation * (np.asarray(f["pixdim"][1:4], float) * [1.0, 1.0, qfac])
    affine[:3, 3] = offsets
    return affine


def _geometry_warnings(f: dict, sizes, name: str) -> list[str]:
    """Refuse a header whose qform, sform and pixdim give ITK (and so 3D Slicer, and this tool) one geometry and
    nibabel (MONAI, TotalSegmentator) another; warn when the two forms disagree but both read the same one, or when
    there is no orientation at all.

    ITK (itkNiftiImageIO.cxx) reads the sform when it is a rotation with scales and the qform is unset, the sform
    code is 1 (scanner) or both forms agree, and takes the spacing from pixdim, not from the sform; otherwise the
    qform. nibabel reads the sform whenever its code is set, scales included.
    """
    qform_code, sform_code = f["codes"]
    pixdim = np.asarray(f["pixdim"][1:4], float)
    numbers = np.concatenate([pixdim, f["quatern"], f["srow"]])
    if qform_code <= 0 and sform_code <= 0:
        return [
            f"{name} declares no orientation (qform and sform codes 0): read with its axes along LPS at origin 0, "
            "as ITK and 3D Slicer do; left and right may be wrong"
        ]
    if not np.all(np.isfinite(numbers)) or np.any(pixdim <= 0) or len(sizes) < 3:
        return []  # refused by the spacing and orientation checks, or not a volume
    qform = _qform(f) if qform_code > 0 else None
    sform = np.vstack([np.asarray(f["srow"], float).reshape(3, 4), [0, 0, 0, 1]]) if sform_code > 0 else None
    used, itk = "qform", qform
    if sform is not None:
        scales = np.linalg.norm(sform[:3, :3], axis=0)
        axes = sform[:3, :3] / np.where(scales > 0, scales, 1)
        if np.any(scales == 0) or abs(np.linalg.det(axes)) < 1e-6:
            return []  # a degenerate sform: refused by the orientation check
        rotation = np.allclose(axes.T @ axes, np.eye(3), atol=1e-4)
        if rotation and (qform is None or sform_code == 1 or _apart(qform, sform, sizes) < 1e-3):
            used, itk = "sform", sform.copy()
            itk[:3, :3] = axes * pixdim  # ITK's spacing is pixdim's
    if itk is None:  # a sheared sform alone (ITK's own message: "No orthonormal definition found!")
        raise InputError(
            f"{name} has a sheared sform (its axes are not at right angles) and no qform",
            "resample the image to an orthogonal grid first",
        )
    nibabel = sform if sform is not None else qform
    voxel = float(pixdim.min())
    apart = _apart(itk, nibabel, sizes)
    read = "the sform's axes with pixdim's spacing" if used == "sform" else "the qform"
    nibabel_read = "the whole sform" if used == "sform" else "the sform"
    if apart > REFUSED_VOXELS * voxel:
        raise InputError(
            f"{name} has two geometries up to {apart:.1f} mm apart: Slicer/ITK read {read}, "
            f"nibabel/MONAI {nibabel_read}",
            "make its qform, sform and pixdim agree",
        )
    if apart > WARNED_VOXELS * voxel:
        return [
            f"{name}: Slicer/ITK read {read}, nibabel/MONAI {nibabel_read}, up to {apart:.2f} mm apart; "
            "read as Slicer reads it"
        ]
    if qform is not None and sform is not None:
        apart = _apart(qform, sform, sizes)
        if apart > WARNED_VOXELS * voxel:
            return [
                f"{name}: its qform and sform disagree (up to {apart:.1f} mm apart); read with the sform, as ITK, "
                "3D Slicer and nibabel do"
            ]
    return []


def _apart(a: np.ndarray, b: np.ndarray, sizes) -> float:
    """The largest distance (mm) between where two voxel-to-world matrices put the corners of a volume."""
    last = [s - 1 for s in sizes]
    corners = np.array([[i, j, k, 1.0] for i in (0, last[0]) for j in (0, last[1]) for k in (0, last[2])])
    return float(np.max(np.linalg.norm((corners @ a.T - corners @ b.T)[:, :3], axis=1)))
