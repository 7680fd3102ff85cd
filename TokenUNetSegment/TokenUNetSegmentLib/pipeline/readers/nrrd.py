"""NRRD headers (``.nrrd`` with attached data, ``.nhdr`` with detached data files), parsed without the voxels.

Follows the NRRD0001-5 format description (teem.sourceforge.net/nrrd/format.html): ``field: value`` lines,
``key:=value`` pairs, ``#`` comments, and a blank line before attached data.
"""

from __future__ import annotations

import math
import re
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
DOMAIN_KINDS = {"domain", "space", "time", "???", "none"}
"""Axis kinds of sample positions (teem's domain kinds, and no kind: ``nrrdDomainAxesGet``); ITK reads one axis of any
other kind (list, vector, RGB-color...) as the values of each voxel."""
CHANNEL_KINDS = {"list", "vector"}
"""Kinds of an axis whose values are volumes the model may take as channels, named by the user or a dataset.json. The
NRRD format gives ``list`` no geometric meaning (teem: "any list of values"); ``vector`` is "a (contravariant) vector"
of any length, which ITK writes for every multi-component image (SimpleITK's ``Compose``; a Slicer vector volume).
The other kinds are geometric (``point``, ``covariant-vector``, ``normal``, and the fixed-size ``2-vector``,
``3-vector``, ``3-gradient``, ``3-normal``, ``4-vector``, ``quaternion``), colours (``RGB-color``, ``3-color``...),
tensors or ``complex``: the components of one value, never channels (refused as components per voxel)."""
TIME_SPACES = {
    "right-anterior-superior-time",
    "ras-time",
    "rast",
    "left-anterior-superior-time",
    "las-time",
    "last",
    "left-posterior-superior-time",
    "lps-time",
    "lpst",
    "scanner-xyz-time",
    "3d-right-handed-time",
    "3d-left-handed-time",
}
"""The NRRD spaces whose 4th dimension is time (format definition, "space")."""
WHOLE_LINE_FIELDS = {"type", "endian", "encoding", "space", "datafile"}
"""Fields whose value ITK's NRRD reader (teem) takes up to the line's end: one space or tab after it is refused
("couldn't parse type "short ""; a data file's name gets it; but not a ``data file`` of numbered files, ``s%03d.raw 1
6 1``, or ``LIST 2``, whose numbers are read with blanks after them: :func:`_data_file_names_a_file`)."""
PER_AXIS_FIELDS = {"sizes", "kinds", "centers", "centerings"}
"""Fields of one word per axis, which ITK's NRRD reader reads with one space or tab after the last but not two ("seem
to have more than expected 3 kinds"): measured on ITK 5.4; the others (numbers, vectors, strings) take any."""


def read_fields(path: Path, name: str) -> tuple[dict[str, str], dict[str, str], list[str], int]:
    """(fields, key/value pairs, lines after ``data file: LIST``, header length in bytes) of a NRRD header.

    Field names are lower-cased without spaces (``space directions`` -> ``spacedirections``).
    """
    text, length = read_text_header(path, name, KIND, lambda line: line in ("\n", "\r\n"))
    lines = text.splitlines()
    if not lines or not re.fullmatch(r"NRRD000[1-5]", lines[0].strip()):
        raise header_error(name, KIND, "its first line is not a NRRD magic (NRRD0001 to NRRD0005)")
    if lines[0] != lines[0].rstrip():
        raise _blanks_at_the_end(name, lines[0].strip())
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
        field, value = line.split(": ", 1)
        key = field.strip().lower().replace(" ", "")
        blanks = len(value) - len(value.rstrip(" \t"))
        whole_line = key in WHOLE_LINE_FIELDS and (key != "datafile" or _data_file_names_a_file(value))
        if (whole_line and blanks) or (key in PER_AXIS_FIELDS and blanks > 1):
            raise _blanks_at_the_end(name, f"{field.strip()}:")
        fields[key] = value.strip()
        if key == "datafile" and value.split()[:1] == ["LIST"]:
            with open(path, "rb") as stream:  # teem reads the list to the file's end, past any empty line
                stream.seek(length)
                rest = stream.read(MAX_HEADER_BYTES).decode("utf-8", errors="replace")
            listed = _listed_names(lines[index + 1 :] + rest.splitlines(), name)
            break
    return fields, pairs, listed, length


def _data_file_names_a_file(value: str) -> bool:
    """Whether a ``data file:`` value is one file's name or a bare ``LIST``, which teem takes up to the line's end,
    rather than a pattern of numbered files (``s%03d.raw 1 6 1``, and the files' dimension) or ``LIST 2``: words and
    numbers, read with any blanks after them (measured on ITK 5.4)."""
    words = value.split()
    return not (words[:1] == ["LIST"] and len(words) == 2 or "%" in value and len(words) in (4, 5))


def _listed_names(lines: list[str], name: str) -> list[str]:
    """The file names after ``data file: LIST``, one a line: teem takes each line whole, blanks at its ends and empty
    lines too (one after the last name: "expected 6 filenames but got 7"), so one it could not open is refused here,
    naming it."""
    for entry in lines:
        if not entry or entry != entry.strip(" \t"):
            raise InputError(
                f"{name}: its data file list has the line {entry!r}, with spaces or tabs at an end or nothing else, "
                "which the image reader (ITK) reads as a file name",
                "give one file name a line, without spaces or tabs around it, or export it again",
            )
    return lines


def _blanks_at_the_end(name: str, line: str) -> InputError:
    """The error for a header line (``line``: its start) ending in spaces or tabs that ITK's NRRD reader refuses, in
    its words only after the data were checked."""
    return InputError(
        f"{name}: its header line '{line}' ends in spaces or tabs, which the image reader (ITK) cannot read",
        f"delete the spaces and tabs at the end of its '{line}' line, or export it again",
    )


def parse_nrrd(path: Path, name: str) -> ImageHeader:
    """The header of a NRRD file, attached or detached."""
    fields, pairs, listed, length = read_fields(path, name)
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
    kinds = _kinds(fields, dimension, name)
    spacing, directions, warnings = _geometry(fields, dimension, name)
    stacked, stacked_axis = _stacked(fields, pairs, kinds, sizes, name)
    if len(spacing) == 4:  # ITK's 4D image: four domain axes in a 4D space, the 4th holding the volumes (one: read
        # as the 3D volume it is)
        directions, spacing = spatial_part(directions, spacing, name)
    data_bytes = math.prod(sizes) * value_bytes
    domain_first = sorted(range(dimension), key=lambda axis: kinds[axis] not in DOMAIN_KINDS)  # as ITK orders them
    return ImageHeader(
        kind=KIND,
        sizes=tuple(sizes[axis] for axis in domain_first),
        value_type=value_type.replace(" ", "_"),
        value_bytes=value_bytes,
        memory_bytes=value_bytes,
        spacing=spacing,
        directions=directions,
        payloads=_payloads(path, name, fields, listed, length, encoding, data_bytes, value_bytes),
        warnings=warnings,
        stacked=stacked,
        stacked_axis=stacked_axis,
    )


def _space_dimension(fields: dict) -> int | None:
    """The dimension of the space the header places its axes in (``space``, ``space dimension``), None without."""
    if "space" in fields:
        return 4 if fields["space"].strip().lower() in TIME_SPACES else 3
    if "spacedimension" in fields and fields["spacedimension"].strip().isdigit():
        return int(fields["spacedimension"])
    return None


def _stacked(fields: dict, pairs: dict, kinds: list[str], sizes, name: str) -> tuple[tuple[int, ...], str]:
    """(the sizes of the axes beyond three spatial ones that hold volumes, what the header says they are when they are
    a series rather than volumes: see :class:`.header.ImageHeader`).

    Volumes lie along a ``list`` or ``vector`` axis (:data:`CHANNEL_KINDS`) or a 4th domain axis (ITK writes a 4D image
    so, in a 4D space). A Slicer segmentation's ``list`` axis holds layers of overlapping segments (refused as such
    when read); a Slicer sequence's (``DataNodeClassName``, or an axis labelled ``time``) or MultiVolume's
    (``MultiVolume.*`` keys: DCE, multi-echo, variable flip angle frames) the items of a series, a
    DWI's (``modality:=DWMRI``) gradient directions, a ``time`` axis or a space-time's 4th axis time points.

    Raises:
        InputError: four domain axes in a 3D space, or three in a 4D space, which ITK cannot read.
    """
    domain = [axis for axis, kind in enumerate(kinds) if kind in DOMAIN_KINDS]
    if len(domain) < 3:  # a 2D image is refused as such
        return (), ""
    listed = [axis for axis, kind in enumerate(kinds) if kind in CHANNEL_KINDS and sizes[axis] > 1]
    if listed and (name.lower().endswith(".seg.nrrd") or any(key.startswith("Segment0_") for key in pairs)):
        listed = []  # a Slicer segmentation's layers
    extra = domain[3:]
    space = _space_dimension(fields)
    time = [axis for axis in extra if kinds[axis] == "time"]
    series = any(sizes[axis] > 1 for axis in time)  # refused below as time, in plainer words
    if extra and not series and space is not None and space < len(domain):
        raise InputError(
            f"{name} has {len(domain)} domain axes in a {space}D space, which the image reader (ITK) cannot read",
            "give the axis of volumes the kind 'list', or save each volume as a 3D file",
        )
    if space is not None and space > len(domain):  # ITK refuses it once the data are checked
        raise InputError(
            f"{name} has {len(domain)} domain axes in a {space}D space, which the image reader (ITK) cannot read",
            "place it in a 3D space (e.g. space: left-posterior-superior), or export it again",
        )
    # as ITK reads them: domain axes (ITK's 4th of one: the 3D volume or channels it is), then each voxel's values
    volumes = [axis for axis in extra if len(domain) > 4 or sizes[axis] > 1]
    stacked = tuple(sizes[axis] for axis in volumes + listed)
    while stacked and stacked[-1] == 1:
        stacked = stacked[:-1]
    labels = re.findall(r'"([^"]*)"', fields.get("labels", ""))
    labelled = [labels[axis] for axis in listed + extra if axis < len(labels) and "time" in labels[axis].lower()]
    if not stacked:
        return (), ""
    if time:
        return stacked, "time (NRRD kind 'time')"
    if extra and space == 4 and fields.get("space", "").strip().lower() in TIME_SPACES:
        return stacked, f"time (NRRD space '{fields['space'].strip()}')"
    if "DataNodeClassName" in pairs or labelled:
        what = f"labelled '{labelled[0]}'" if labelled else f"of {pairs['DataNodeClassName'].strip()[:40]}"
        return stacked, f"the items of a Slicer sequence or series ({what})"
    if any(key.startswith("MultiVolume.") for key in pairs):  # Slicer's MultiVolume: frames of one acquisition
        tag = pairs.get("MultiVolume.FrameIdentifyingDICOMTagName", "").strip()[:40]
        what = f"MultiVolume frames by {tag}" if tag else "MultiVolume frames"
        return stacked, f"the items of a Slicer sequence or series ({what})"
    if pairs.get("modality", "").strip() == "DWMRI":
        return stacked, "diffusion gradient directions (modality:=DWMRI)"
    return stacked, ""


def _kinds(fields: dict, dimension: int, name: str) -> list[str]:
    if "kinds" not in fields:
        return ["domain"] * dimension
    kinds = fields["kinds"].split()
    if len(kinds) != dimension:
        raise header_error(name, KIND, f"kinds needs {dimension} values, got {len(kinds)}")
    return [k.lower() for k in kinds]


def _geometry(fields: dict, dimension: int, name: str) -> tuple[tuple[float, ...], np.ndarray | None, list[str]]:
    """(spacing of each spatial axis, spatial axis vectors as columns or None, warnings)."""
    spatial = [kind in DOMAIN_KINDS for kind in _kinds(fields, dimension, name)]
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
