"""What a file's DICOM preamble and file meta say, read without a DICOM library: whether it is DICOM at all, and
its SOP class (an image slice, a structured report, a DICOMDIR, ...)."""

from __future__ import annotations

import struct
from pathlib import Path

DICOM_MAGIC_AT, DICOM_MAGIC = 128, b"DICM"
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage: a DICOMDIR
MEDIA_SOP_CLASS_ELEMENT, TRANSFER_SYNTAX_ELEMENT = 0x0002, 0x0010  # in group 0002, the file meta
FILE_META_BYTES = 4096  # the file meta group (0002) holding the Media Storage SOP Class UID fits in this
LONG_LENGTH_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
ENHANCED_CLASSES = {  # SOP classes whose frames carry their geometry and rescale in functional groups
    "1.2.840.10008.5.1.4.1.1.2.1": "an enhanced CT",
    "1.2.840.10008.5.1.4.1.1.2.2": "a legacy converted enhanced CT",
    "1.2.840.10008.5.1.4.1.1.4.1": "an enhanced MR",
    "1.2.840.10008.5.1.4.1.1.4.4": "a legacy converted enhanced MR",
    "1.2.840.10008.5.1.4.1.1.130": "an enhanced PET",
    "1.2.840.10008.5.1.4.1.1.128.1": "a legacy converted enhanced PET",
}

NOT_VOLUMES = {  # SOP class UID prefix: what the file is, and what to pass instead
    "1.2.840.10008.5.1.4.1.1.7": (
        "a secondary capture: a picture made from images (a screenshot or a derived view), without a scan's geometry",
        "pass the CT/MR series it was made from",
    ),
    "1.2.840.10008.5.1.4.1.1.481.2": (
        "an RT dose grid: the radiation dose a treatment plan computed, not an image of the body",
        "pass the CT series the plan was made on",
    ),
    "1.2.840.10008.5.1.4.1.1.66.4": (
        "a segmentation: labels drawn on a scan, not the scan itself",
        "pass the CT/MR series it segments",
    ),
}


def not_a_volume(sop_class: str) -> tuple[str, str] | None:
    """(what it is, what to pass instead) for a SOP class that holds no scanner volume (:data:`NOT_VOLUMES`)."""
    for prefix, kind in NOT_VOLUMES.items():
        if sop_class == prefix or sop_class.startswith(prefix + "."):
            return kind
    return None


def modality_matches(modality: str, expected: str) -> bool:
    """Whether a series' Modality (CT, MR, PT, ...) is what a model input expects (``CT``, ``MR``; ``MR-T1``-like
    names count as MR)."""
    modality, expected = modality.strip().upper(), expected.strip().upper()
    return bool(modality) and (modality == expected or (modality == "MR" and expected.startswith("MR")))


def dicom_file_class(path: Path) -> str | None:
    """None when ``path`` does not start like a DICOM file (the DICM preamble), else the SOP class its file meta
    names ("" where that cannot be read; :data:`DICOMDIR_CLASS` for a DICOMDIR)."""
    return dicom_file_meta(path, MEDIA_SOP_CLASS_ELEMENT)


def dicom_file_meta(path: Path, element: int) -> str | None:
    """None when ``path`` does not start like a DICOM file (the DICM preamble) or is no regular file, else the UID its
    file meta gives in (0002,``element``) ("" where that cannot be read)."""
    from ..special_files import open_regular

    try:
        stream = open_regular(path)  # a FIFO among the slices: never opened for good (it would block)
        if stream is None:
            return None
        with stream:
            stream.seek(DICOM_MAGIC_AT)
            if stream.read(4) != DICOM_MAGIC:
                return None
            return _file_meta_uid(stream.read(FILE_META_BYTES), element)
    except OSError:
        return None


def _file_meta_uid(meta: bytes, wanted: int) -> str:
    """The UID (0002,``wanted``) from the bytes after the DICM preamble ("" if not found)."""
    at = 0
    while at + 8 <= len(meta):
        group, element = struct.unpack_from("<HH", meta, at)
        vr = meta[at + 4 : at + 6]
        if group != 2 or not vr.isalpha():
            return ""
        if vr in LONG_LENGTH_VRS:
            if at + 12 > len(meta):
                return ""
            (length,), at = struct.unpack_from("<I", meta, at + 8), at + 12
        else:
            (length,), at = struct.unpack_from("<H", meta, at + 6), at + 8
        if element == wanted:
            return meta[at : at + length].decode("ascii", "replace").strip(" \0")
        at += length
    return ""
