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
    fields = _fields_v1(start, order) if size == 348 else _fields_v2(start, order)
    return _header(path, name, fields, compressed)


def _fields_v1(data: bytes, order: str) -> dict:
    get = lambda fmt, at: struct.unpack_from(order + fmt, data, at)  # noqa: E731
    return {
        "dim": get("8h", 40),
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
    # a .nii.gz is one gzip stream, header included: it must decode to the header and all the voxels
    payload = Payload(path, 0, offset + data_bytes, "gzip") if compressed else Payload(path, offset, data_bytes)
    return ImageHeader(
        kind=KIND,
        sizes=sizes,
        value_type=value_type,
        value_bytes=value_bytes,
        memory_bytes=max(value_bytes, 4) if rescaled else value_bytes,
        spacing=tuple(float(p) for p in f["pixdim"][1 : min(ndim, 3) + 1]),
        directions=directions,
        payloads=[payload],
    )
