"""What an image file's header declares, and the checks made on it before any voxel is read.

Each format module (``nifti``, ``nrrd``, ``metaimage``) parses its header into an :class:`ImageHeader`:
sizes, value type, spacing, axis directions and where the voxel data lies (:class:`Payload`). The checks
here refuse a header whose data would not fit in memory, whose spacing is zero, negative or not finite, or
whose axes are degenerate, with a message that names the file and says what to do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..geometry import Grid
from ..memory import LIMIT_VARIABLE, format_size, memory_limit

READ_COPIES = 2
"""Copies of the voxels alive while a file is read: the reader's buffer and the array made from it."""
MAX_HEADER_BYTES = 1 << 20
"""Text headers (NRRD, MetaImage) longer than this are refused: real ones are a few kilobytes."""


@dataclass(frozen=True)
class Payload:
    """Where voxel data lies: ``path`` from byte ``offset`` (-1: the last bytes of the file).

    ``size`` is the number of decoded bytes the header needs there; ``encoding`` is ``raw``, ``gzip`` (a gzip
    or zlib stream), ``hex`` (two characters per byte) or ``text`` (numbers separated by spaces,
    ``value_bytes`` each once decoded). ``floats`` (a numpy type such as ``<f4``) asks for the data to be checked
    for NaN and infinite values, from decoded byte ``floats_from`` on (for a reader that would hide them).
    """

    path: Path
    offset: int
    size: int
    encoding: str = "raw"
    value_bytes: int = 1
    floats: str | None = None
    floats_from: int = 0


@dataclass
class ImageHeader:
    """A file's header as declared (nothing checked yet).

    Args:
        kind: the format, for messages (``NIfTI``, ``NRRD``, ``MetaImage``).
        sizes: the size of every axis, spatial or not (e.g. a vector axis), the spatial ones first.
        value_type: the stored value type, for messages (``int16``).
        value_bytes: bytes per stored value.
        memory_bytes: bytes per value once read (more than stored when the reader rescales to float).
        spacing: the declared voxel spacing of each spatial axis, in mm.
        directions: the spatial axis vectors as columns (any length), or None when the header has none.
        payloads: where the voxel data lies.
        warnings: what the header leaves to defaults (e.g. no spacing at all).
        stacked: the sizes of the axes beyond the three spatial ones that hold volumes (a 4D NIfTI's 4th axis, a NRRD
            axis of kind ``list`` or ``vector``, a MetaImage's 4th axis or channels), trailing ones dropped.
        stacked_axis: what the header says a 4th axis is when it is time (or another series) rather than a list of
            volumes, else "".
        finite_checked: the image read holds no NaN or infinite value: the payloads' floats are counted and refused
            (:mod:`.payload`), and read as stored (ITK's NIfTI reader sets them to 0; no rescaling makes new ones).
    """

    kind: str
    sizes: tuple[int, ...]
    value_type: str
    value_bytes: int
    memory_bytes: int
    spacing: tuple[float, ...]
    directions: np.ndarray | None
    payloads: list[Payload]
    warnings: list[str] = field(default_factory=list)
    stacked: tuple[int, ...] = ()
    stacked_axis: str = ""
    finite_checked: bool = False

    @property
    def values(self) -> int:
        return math.prod(self.sizes)


@dataclass(frozen=True)
class OpenedImage:
    """An image file or DICOM series whose header has been read and checked: the ``values`` (voxels times
    components) it declares, and ``read()`` for its voxels (the SimpleITK image and the reader's warnings);
    ``modality``: a DICOM series' Modality (CT, MR, ...), "" for other files; ``grid``: the voxel grid the header
    declares (its origin left at 0), None when it declares none, for the run's memory check before reading;
    ``series`` a DICOM series' SeriesInstanceUID and ``description`` its SeriesDescription, "" for other files;
    ``stacked``, ``stacked_axis`` and ``finite_checked``: as :class:`ImageHeader`'s (a 4D image's volumes; whether
    NaN and infinite values were counted as the voxels were checked, so the volume need not be counted again)."""

    values: int
    read: Callable[[], tuple]
    modality: str = ""
    grid: Grid | None = None
    series: str = ""
    description: str = ""
    stacked: tuple[int, ...] = ()
    stacked_axis: str = ""
    finite_checked: bool = False

    def __call__(self) -> tuple:
        return self.read()


def header_grid(header: ImageHeader) -> Grid | None:
    """The 3D grid ``header`` declares (axis directions scaled by the spacing, origin 0), None unless it declares
    three spatial axes with finite spacing; without directions, the axes are taken as they are stored."""
    spacing = np.asarray(header.spacing, dtype=np.float64)
    if len(header.sizes) < 3 or spacing.shape != (3,) or not np.all(np.isfinite(spacing) & (spacing > 0)):
        return None
    axes = np.eye(3)
    if header.directions is not None and np.shape(header.directions) == (3, 3):
        lengths = np.linalg.norm(header.directions, axis=0)
        if np.all(np.isfinite(header.directions)) and np.all(lengths > 0):
            axes = np.asarray(header.directions, dtype=np.float64) / lengths
    affine = np.eye(4)
    affine[:3, :3] = axes * spacing
    return Grid(tuple(int(s) for s in header.sizes[:3]), affine)


def spatial_part(directions, spacing, name: str) -> tuple[np.ndarray | None, tuple[float, ...]]:
    """The three spatial axes of a 4D grid whose 4th axis holds volumes (ITK's 4D NRRD and MetaImage): (their 3 x 3
    axis directions, or None without directions; their spacing).

    Raises:
        InputError: the 4th axis moves in space, or a spatial axis along the 4th dimension (a 4 x 4 direction matrix
            that is not block-diagonal): its volumes lie on no one 3D grid; or the 4th axis has a spacing of zero or
            infinity or a direction of zero or not numbers, which ITK refuses once the data are checked (a NaN spacing
            says "unknown" in NRRD, which ITK reads as 1).
    """
    step = float(spacing[3]) if len(spacing) > 3 else 1.0
    matrix = None if directions is None else np.asarray(directions, dtype=np.float64)
    axis = matrix[:, 3] if matrix is not None and matrix.shape == (4, 4) else np.ones(1)
    if step == 0 or math.isinf(step) or not (np.all(np.isfinite(axis)) and np.any(axis)):
        raise InputError(
            f"{name} is a 4D image whose 4th axis has a zero or invalid step (its 4th spacing or axis direction is 0 "
            "or not a number)",
            "set its 4th spacing to 1, or save each volume as a 3D file",
        )
    spacing = tuple(spacing[:3])
    if matrix is None:
        return None, spacing
    if matrix.shape != (4, 4):
        return matrix, spacing  # refused by check_directions, or a 3 x 3 already
    lengths = np.linalg.norm(matrix, axis=0)
    unit = matrix / np.where(lengths > 0, lengths, 1)
    if np.any(np.abs(unit[3, :3]) > 1e-6) or np.any(np.abs(unit[:3, 3]) > 1e-6):
        raise InputError(
            f"{name} is a 4D image whose 4th axis is not apart from its spatial axes (its 4 x 4 axis directions mix "
            "them), so its volumes lie on no one 3D grid",
            "save each volume as a 3D file",
        )
    return matrix[:3, :3], spacing


def header_error(name: str, kind: str, problem: str) -> InputError:
    """The error for a header that cannot be parsed."""
    return InputError(f"{name} is not a valid {kind} file: {problem}", "check the file or export it again")


def check_header(header: ImageHeader, name: str, limit: int | None = None) -> None:
    """Refuse a header over the memory limit, with bad spacing or with degenerate axes."""
    check_size(header.sizes, header.value_type, header.memory_bytes, name, limit)
    check_spacing(header.spacing, name)
    if header.directions is not None:
        check_directions(header.directions, name)


def check_size(sizes, value_type: str, memory_bytes: int, name: str, limit: int | None = None) -> None:
    """Refuse a volume whose voxels (``READ_COPIES`` copies while reading) exceed the memory limit."""
    need = math.prod(sizes) * memory_bytes * READ_COPIES
    what = "the given limit"
    if limit is None:
        limit, what = memory_limit()
    if need > limit:
        shape = " x ".join(str(s) for s in sizes)
        raise InputError(
            f"{name} declares {shape} voxels of {value_type}: reading it needs about {format_size(need)}, "
            f"over {what} ({format_size(limit)})",
            f"crop or downsample the volume, free memory, or raise {LIMIT_VARIABLE}"
            if LIMIT_VARIABLE in what
            else "crop or downsample the volume, or free memory",
        )


def check_spacing(spacing, name: str) -> None:
    values = [float(s) for s in spacing]
    if not all(math.isfinite(s) and s > 0 for s in values):
        shown = ", ".join(f"{s:g}" for s in values)
        raise InputError(
            f"{name} has zero, negative or invalid voxel spacing ({shown})",
            "fix the spacing in the image header or export the image again",
        )


def check_directions(directions, name: str) -> None:
    """Refuse axis vectors that are not finite, zero, or not independent (a flat or collapsed grid)."""
    matrix = np.asarray(directions, dtype=np.float64)
    lengths = np.linalg.norm(matrix, axis=0) if matrix.size else np.zeros(0)
    degenerate = not np.all(np.isfinite(matrix)) or np.any(lengths == 0)
    if not degenerate and matrix.shape[0] == matrix.shape[1]:
        degenerate = abs(np.linalg.det(matrix / lengths)) < 1e-6
    if degenerate:
        raise InputError(
            f"{name} has a degenerate orientation: its axis directions are zero, parallel or not numbers",
            "fix the orientation in the image header or export the image again",
        )


def parse_numbers(text: str, count: int, name: str, kind: str, what: str, kind_of=float) -> list:
    """``count`` numbers from a whitespace-separated header value."""
    parts = text.split()
    if len(parts) != count:
        raise header_error(name, kind, f"{what} needs {count} values, got {len(parts)}")
    try:
        return [kind_of(p) for p in parts]
    except ValueError:
        raise header_error(name, kind, f"{what} is not a list of numbers: {text.strip()[:40]!r}") from None


def positive_sizes(sizes, name: str, kind: str) -> tuple[int, ...]:
    if any(s < 1 for s in sizes):
        raise header_error(name, kind, f"sizes must be positive, got {' x '.join(str(s) for s in sizes)}")
    return tuple(int(s) for s in sizes)


def data_file(header_path: Path, entry: str, name: str) -> Path:
    """A detached data file named in a header: a plain name resolved next to the header, never elsewhere.

    Refusing paths that leave the header's folder keeps a hostile header from reading a private file
    (e.g. ``/home/user/.ssh/id_rsa``) as voxels.
    """
    entry = entry.strip()
    folder = header_path.resolve().parent
    target = (folder / entry).resolve()
    if Path(entry).is_absolute() or not target.is_relative_to(folder):
        raise InputError(
            f"{name} names a data file outside its folder ({entry[:60]})",
            "put the data file next to the header and name it without a folder",
        )
    return target


def read_text_header(path: Path, name: str, kind: str, until) -> tuple[str, int]:
    """The text header at the start of ``path`` (at most ``MAX_HEADER_BYTES``) and its length in bytes.

    ``until(line)`` says whether a line is the header's last; the end of the file also ends it.
    """
    lines, length = [], 0
    with open(path, "rb") as stream:
        while True:
            raw = stream.readline(MAX_HEADER_BYTES + 1 - length)
            length += len(raw)
            if length > MAX_HEADER_BYTES:
                raise header_error(name, kind, f"no end of header in its first {format_size(MAX_HEADER_BYTES)}")
            line = raw.decode("utf-8", errors="replace")
            lines.append(line)
            if not raw or until(line):
                break
    return "".join(lines), length


MAX_FILES = 100_000


def listed_files(entry: str, name: str, kind: str) -> list[str]:
    """The data files of a header entry: one name, or ``FORMAT MIN MAX STEP [...]`` (``s%03d.raw 1 40 1``)."""
    parts = entry.split()
    if len(parts) >= 4 and re.fullmatch(r"[^%]*%0?\d*d[^%]*", parts[0]):
        try:
            first, last, step = (int(p) for p in parts[1:4])
        except ValueError:
            raise header_error(name, kind, f"the data file list '{entry[:40]}' has bad numbers") from None
        if step == 0 or (last - first) * step < 0 or abs(last - first) // abs(step) >= MAX_FILES:
            raise header_error(name, kind, f"the data file list '{entry[:40]}' has a bad range")
        return [parts[0] % number for number in range(first, last + (1 if step > 0 else -1), step)]
    return [entry]
