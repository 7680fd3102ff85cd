"""NRRD headers (``.nrrd`` with attached data, ``.nhdr`` with detached data files), parsed without the voxels.

Follows the NRRD0001-5 format description (teem.sourceforge.net/nrrd/format.html): ``field: value`` lines,
``key:=value`` pairs, ``#`` comments, and a blank line before attached data.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from .header import (
    ImageHeader,
    Payload,
    data_file,
    header_error,
    listed_files,
    parse_numbers,
    positive_sizes,
    read_text_header,
)

KIND = "NRRD"
TYPES = {
    1: ("int8", "signed char", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"),
    2: ("short", "short int", "signed short", "signed short int", "int16", "int16_t")
    + ("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"),
    4: ("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t", "float"),
    8: ("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64", "int64_t")
    + ("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t", "double"),
}
TYPE_BYTES = {name: size for size, names in TYPES.items() for name in names}
ENCODINGS = {
    "raw": "raw",
    "gz": "gzip",
    "gzip": "gzip",
    "hex": "hex",
    "txt": "text",
    "text": "text",
    "ascii": "text",
}
SPATIAL_KINDS = {"domain", "space", "time", "???", "none"}
"""Axis kinds of sample positions; other kinds (vector, RGB-color, list...) are values of one voxel."""


def read_fields(path: Path, name: str) -> tuple[dict[str, str], dict[str, str], list[str], int]:
    """(fields, key/value pairs, lines after ``data file: LIST``, header length in bytes) of a NRRD header.

    Field names are lower-cased without spaces (``space directions`` -> ``spacedirections``).
    """
    text, length = read_text_header(path, name, KIND, lambda line: line in ("\n", "\r\n"))
    lines = text.splitlines()
    if not lines or not re.fullmatch(r"NRRD000[1-5]", lines[0].strip()):
        raise header_error(name, KIND, "its first line is not a NRRD magic (NRRD0001 to NRRD0005)")
    fields, pairs, listed = {}, {}, []
    for index, line in enumerate(lines[1:], start=1):
        if not line.strip():
            break
        if line.startswith("#"):
            continue
        if ":=" in line:
            key, value = line.split(":=", 1)
            pairs[key] = value
            continue
        if ": " not in line:
            raise header_error(name, KIND, f"line {index + 1} is neither a field nor a key:=value pair")
        key, value = line.split(": ", 1)
        key = key.strip().lower().replace(" ", "")
        fields[key] = value.strip()
        if key == "datafile" and value.split()[:1] == ["LIST"]:
            listed = [entry.strip() for entry in lines[index + 1 :] if entry.strip()]
            break
    return fields, pairs, listed, length


def parse_nrrd(path: Path, name: str) -> ImageHeader:
    """The header of a NRRD file, attached or detached."""
    fields, _, listed, length = read_fields(path, name)
    for required in ("type", "dimension", "sizes", "encoding"):
        if required not in fields:
            raise header_error(name, KIND, f"the required field '{required}' is missing")
    value_type = fields["type"].lower()
    if value_type not in TYPE_BYTES:
        raise header_error(name, KIND, f"unsupported type '{fields['type'][:20]}'")
    value_bytes = TYPE_BYTES[value_type]
    dimension = parse_numbers(fields["dimension"], 1, name, KIND, "dimension", int)[0]
    if not 1 <= dimension <= 16:
        raise header_error(name, KIND, f"dimension {dimension} is not 1 to 16")
    sizes = positive_sizes(parse_numbers(fields["sizes"], dimension, name, KIND, "sizes", int), name, KIND)
    encoding = ENCODINGS.get(fields["encoding"].lower())
    if encoding is None:
        raise header_error(name, KIND, f"unsupported encoding '{fields['encoding'][:20]}' (use raw or gzip)")
    spacing, directions, warnings = _geometry(fields, dimension, name)
    data_bytes = math.prod(sizes) * value_bytes
    return ImageHeader(
        kind=KIND,
        sizes=sizes,
        value_type=value_type.replace(" ", "_"),
        value_bytes=value_bytes,
        memory_bytes=value_bytes,
        spacing=spacing,
        directions=directions,
        payloads=_payloads(path, name, fields, listed, length, encoding, data_bytes, value_bytes),
        warnings=warnings,
    )


def _kinds(fields: dict, dimension: int, name: str) -> list[str]:
    if "kinds" not in fields:
        return ["domain"] * dimension
    kinds = fields["kinds"].split()
    if len(kinds) != dimension:
        raise header_error(name, KIND, f"kinds needs {dimension} values, got {len(kinds)}")
    return [k.lower() for k in kinds]


def _geometry(fields: dict, dimension: int, name: str) -> tuple[tuple[float, ...], np.ndarray | None, list[str]]:
    """(spacing of each spatial axis, spatial axis vectors as columns or None, warnings)."""
    spatial = [kind in SPATIAL_KINDS for kind in _kinds(fields, dimension, name)]
    if "spacedirections" in fields:
        vectors = re.findall(r"\(([^)]*)\)|(none)", fields["spacedirections"])
        if len(vectors) != dimension:
            raise header_error(name, KIND, f"space directions needs {dimension} entries, got {len(vectors)}")
        columns = []
        for vector, none in vectors:
            if none:
                continue
            try:
                columns.append([float(v) for v in vector.split(",")])
            except ValueError:
                raise header_error(name, KIND, f"space direction ({vector[:40]}) is not numbers") from None
        if len({len(c) for c in columns}) > 1:
            raise header_error(name, KIND, "its space directions have different lengths")
        matrix = np.asarray(columns, dtype=np.float64).T if columns else np.zeros((0, 0))
        spacing = tuple(float(np.linalg.norm(c)) if np.all(np.isfinite(c)) else math.nan for c in columns)
        return spacing, matrix, []
    if "spacings" in fields:
        values = parse_numbers(fields["spacings"], dimension, name, KIND, "spacings")
        orientation = (
            f"{name} declares no orientation (spacings without space directions): read with its axes along LPS "
            "at origin 0, as ITK and 3D Slicer do; left and right may be wrong"
        )
        return tuple(v for v, is_spatial in zip(values, spatial, strict=True) if is_spatial), None, [orientation]
    return (), None, [f"{name} declares no voxel spacing: 1 mm is assumed"]


def _payloads(path, name, fields, listed, length, encoding, data_bytes, value_bytes) -> list[Payload]:
    line_skip = _skip(fields, "lineskip", name, 0)
    byte_skip = _skip(fields, "byteskip", name, -1)
    if byte_skip == -1 and encoding != "raw":
        raise header_error(name, KIND, "byte skip -1 is only allowed with raw encoding")
    entry = fields.get("datafile")
    if entry is None:  # attached data after the blank line
        files = [path]
    else:
        files = [data_file(path, f, name) for f in (listed or listed_files(entry, name, KIND))]
    share = data_bytes // max(1, len(files))
    payloads = []
    for file in files:
        offset = length if file == path else 0
        if line_skip and file.is_file():
            offset = _after_lines(file, offset, line_skip)
        if encoding == "raw":
            payloads.append(Payload(file, -1 if byte_skip == -1 else offset + byte_skip, share))
        else:  # the byte skip counts decoded bytes
            payloads.append(Payload(file, offset, share + max(byte_skip, 0), encoding, value_bytes))
    return payloads


def _skip(fields: dict, key: str, name: str, lowest: int) -> int:
    value = parse_numbers(fields.get(key, "0"), 1, name, KIND, key, int)[0]
    if value < lowest:
        raise header_error(name, KIND, f"{key} {value} is negative")
    return value


def _after_lines(path: Path, offset: int, count: int) -> int:
    with open(path, "rb") as stream:
        stream.seek(offset)
        for _ in range(count):
            stream.readline(1 << 16)
        return stream.tell()
