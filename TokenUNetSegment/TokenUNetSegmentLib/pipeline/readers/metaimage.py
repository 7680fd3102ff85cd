"""MetaImage headers (``.mha`` with the data after the header, ``.mhd`` with a data file), without the voxels.

``Key = Value`` lines; ``ElementDataFile`` is the last one: ``LOCAL``, a file name, ``LIST`` (file names on the
following lines) or ``FORMAT MIN MAX STEP`` (e.g. ``slice%03d.raw 1 40 1``).

Volumes lie along a 4th axis (``NDims = 4``: ITK's 4D image) or in each voxel's channels (``ElementNumberOfChannels``,
which ITK reads as a vector whatever their count). MetaIO has no field that says what they are (no time, no colour:
``DistanceUnits`` is one unit for every axis; ``ElementSpacing`` a step without unit), so they are never taken as time
or colour here: they are volumes whose names the user or a dataset.json gives.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import InputError
from .header import (
    MAX_HEADER_BYTES,
    ImageHeader,
    Payload,
    data_file,
    header_error,
    listed_files,
    parse_numbers,
    positive_sizes,
    read_text_header,
    spatial_part,
)

KIND = "MetaImage"
# bytes per value as MetaIO stores them (its MET_ValueTypeSize table)
TYPES = {
    "MET_CHAR": 1,
    "MET_UCHAR": 1,
    "MET_SHORT": 2,
    "MET_USHORT": 2,
    "MET_INT": 4,
    "MET_UINT": 4,
    "MET_LONG": 4,
    "MET_ULONG": 4,
    "MET_LONG_LONG": 8,
    "MET_ULONG_LONG": 8,
    "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}


def read_fields(path: Path, name: str) -> tuple[dict[str, str], list[str], int]:
    """(fields by lower-cased key, lines after ``ElementDataFile = LIST``, header length in bytes)."""
    text, length = read_text_header(path, name, KIND, lambda line: line.strip().lower().startswith("elementdatafile"))
    fields, listed = {}, []
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        if "=" not in line:
            raise header_error(name, KIND, f"line {index + 1} is not 'Key = Value'")
        key, value = (part.strip() for part in line.split("=", 1))
        fields[key.lower()] = value
    if "elementdatafile" not in fields:
        raise header_error(name, KIND, "the field ElementDataFile is missing")
    if fields["elementdatafile"].split()[:1] == ["LIST"]:
        with open(path, "rb") as stream:
            stream.seek(length)
            rest = stream.read(MAX_HEADER_BYTES).decode("utf-8", errors="replace")
        listed = _listed_names(rest.splitlines(), name)
    return fields, listed, length


def _listed_names(lines: list[str], name: str) -> list[str]:
    """The file names after ``ElementDataFile = LIST``, one a line: MetaIO trims a name's end but not its start, and
    takes an empty line before the last name for the folder, so such a line is refused here, naming it."""
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    for entry in lines:
        if not entry.strip() or entry[0] in " \t":
            raise InputError(
                f"{name}: its data file list has the line {entry!r}, which the image reader (ITK) cannot open as a "
                "file",
                "give one file name a line, without spaces or tabs before it, or export it again",
            )
    return [entry.rstrip() for entry in lines]


def _flag(fields: dict, key: str) -> bool:
    return fields.get(key, "False").strip().lower() in ("true", "1")


def parse_metaimage(path: Path, name: str) -> ImageHeader:
    """The header of a MetaImage file, with local or separate data."""
    fields, listed, length = read_fields(path, name)
    if fields.get("objecttype", "Image").lower() != "image":
        raise header_error(name, KIND, f"ObjectType is {fields['objecttype'][:20]}, not Image")
    for required in ("ndims", "dimsize", "elementtype"):
        if required not in fields:
            raise header_error(name, KIND, f"the required field '{required}' is missing")
    ndims = parse_numbers(fields["ndims"], 1, name, KIND, "NDims", int)[0]
    if not 1 <= ndims <= 10:
        raise header_error(name, KIND, f"NDims {ndims} is not 1 to 10")
    sizes = positive_sizes(parse_numbers(fields["dimsize"], ndims, name, KIND, "DimSize", int), name, KIND)
    value_type = fields["elementtype"].upper()
    if value_type not in TYPES:
        raise header_error(name, KIND, f"unsupported ElementType '{fields['elementtype'][:20]}'")
    channels = parse_numbers(fields.get("elementnumberofchannels", "1"), 1, name, KIND, "channels", int)[0]
    if channels < 1:
        raise header_error(name, KIND, f"ElementNumberOfChannels {channels} is not positive")
    warnings = []
    if "elementspacing" in fields or "elementsize" in fields:
        key = "elementspacing" if "elementspacing" in fields else "elementsize"
        spacing = tuple(parse_numbers(fields[key], ndims, name, KIND, key))
    else:
        spacing = ()
        warnings.append(f"{name} declares no voxel spacing: 1 mm is assumed")
    directions = None
    for key in ("transformmatrix", "rotation", "orientation"):
        if key in fields:
            directions = np.asarray(parse_numbers(fields[key], ndims * ndims, name, KIND, key), float)
            directions = directions.reshape(ndims, ndims).T  # MetaIO lists the matrix row by row, axes as rows
            break
    beyond = () if ndims == 4 and sizes[3] == 1 else sizes[3:]  # a 4th axis of one: the 3D volume (or channels) it is
    stacked = (*beyond, channels) if ndims >= 3 else ()  # a 2D image is refused as such
    while stacked and stacked[-1] == 1:  # trailing axes of one
        stacked = stacked[:-1]
    if ndims == 4:  # ITK's 4D image: the 4th axis holds the volumes (one: read as the 3D volume it is)
        if len(spacing) == 4 and math.isnan(spacing[3]):
            spacing = (*spacing[:3], 0.0)  # MetaIO reads what is no number as 0
        directions, spacing = spatial_part(directions, spacing, name)
    value_bytes = TYPES[value_type]
    data_bytes = math.prod(sizes) * channels * value_bytes
    return ImageHeader(
        kind=KIND,
        sizes=(*sizes, channels) if channels > 1 else sizes,
        value_type=value_type[4:].lower(),
        value_bytes=value_bytes,
        memory_bytes=value_bytes,
        spacing=spacing,
        directions=directions,
        payloads=_payloads(path, name, fields, listed, length, data_bytes, value_bytes),
        warnings=warnings,
        stacked=stacked,
    )


def _payloads(path, name, fields, listed, length, data_bytes, value_bytes) -> list[Payload]:
    entry = fields["elementdatafile"]
    compressed = _flag(fields, "compresseddata")
    binary = fields.get("binarydata", "True").strip().lower() in ("true", "1")
    encoding = "gzip" if compressed else ("raw" if binary else "text")
    if entry.upper() == "LOCAL":
        files = [path]
        if compressed and "compresseddatasize" not in fields:  # MetaIO then reads other values, saying only on stderr
            raise InputError(
                f"{name} holds compressed data after its header without CompressedDataSize, which the image reader "
                "(ITK) cannot read",
                f"add the line 'CompressedDataSize = {max(path.stat().st_size - length, 0)}' before ElementDataFile, "
                "or export it again",
            )
    elif listed:
        files = [data_file(path, f, name) for f in listed]
    else:
        files = [data_file(path, f, name) for f in listed_files(entry, name, KIND)]
    header_size = parse_numbers(fields.get("headersize", "0"), 1, name, KIND, "HeaderSize", int)[0]
    if header_size < -1:
        raise header_error(name, KIND, f"HeaderSize {header_size} is negative")
    share = data_bytes // len(files)
    stored = fields.get("compresseddatasize") if compressed and len(files) == 1 else None
    payloads = []
    for file in files:
        offset = length if file == path else max(header_size, 0)
        if header_size == -1 and encoding == "raw" and file != path:
            offset = -1  # the data are the file's last bytes
        payloads.append(Payload(file, offset, share, encoding, value_bytes))
        if stored is not None:  # MetaIO reads exactly this many compressed bytes
            size = parse_numbers(stored, 1, name, KIND, "CompressedDataSize", int)[0]
            payloads.append(Payload(file, offset, max(size, 0)))
    return payloads
