"""A small NRRD writer/reader for scalar 3D volumes, and Slicer's segmentation (.seg.nrrd) fields."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from .geometry import LPS_FROM_RAS
from .metadata import Label
from .readers.nrrd import read_fields

_TYPES = {
    np.uint8: "uint8",
    np.int8: "int8",
    np.uint16: "uint16",
    np.int16: "int16",
    np.int32: "int32",
    np.uint32: "uint32",
    np.float32: "float",
    np.float64: "double",
}
PLAIN_TYPES = tuple(_TYPES)  # voxel types written as they are; anything else becomes float32 (plain_array)
TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
ANATOMY_CONTEXT = "Anatomic codes - DICOM master list"
GZIP_WBITS = 31  # zlib's gzip wrapper: header (no file name, time 0), deflate stream, CRC-32 and size


def _vector(values) -> str:
    return "(" + ",".join(f"{float(v):.10g}" for v in values) + ")"


def write_nrrd(
    path: str | Path, array: np.ndarray, affine: np.ndarray, fields: dict[str, str] | None = None, compression: int = 1
) -> Path:
    """Write an (i, j, k) array with its IJK->RAS affine as NRRD (LPS space; gzip unless compression is 0); an
    (i, j, k, n) array becomes n values per voxel on a leading ``list`` axis (as Slicer writes a vector volume whose
    components are independent values: the readers split it into n volumes).

    ``fields`` become ``key:=value`` lines (NRRD key/value pairs), e.g. Slicer's ``Segment0_Name``.
    """
    from .arguments import as_path
    from .errors import ArgumentError

    path = as_path(path, "the NRRD file")
    try:
        array = np.asarray(array)
    except (TypeError, ValueError):
        raise ArgumentError("write_nrrd needs a 3D array") from None
    kind = _TYPES.get(array.dtype.type)
    if kind is None or array.ndim not in (3, 4):
        raise ArgumentError(f"write_nrrd needs a 3D array of a numeric NRRD type, got {array.dtype} {array.shape}")
    try:
        affine = np.asarray(affine, float)
    except (TypeError, ValueError):
        affine = None
    if affine is None or affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise ArgumentError("write_nrrd needs a finite 4 x 4 IJK->RAS matrix")
    lps = LPS_FROM_RAS @ affine
    listed = array.ndim == 4  # each voxel's values first in the file, on a list axis without a direction
    sizes = (array.shape[3], *array.shape[:3]) if listed else array.shape
    lines = [
        "NRRD0004",
        "# Complete NRRD file format specification at: http://teem.sourceforge.net/nrrd/format.html",
        f"type: {kind}",
        f"dimension: {array.ndim}",
        "space: left-posterior-superior",
        "sizes: " + " ".join(str(s) for s in sizes),
        "space directions: " + "none " * listed + " ".join(_vector(lps[:3, axis]) for axis in range(3)),
        "kinds: " + "list " * listed + "domain domain domain",
        "endian: little",
        f"encoding: {'gzip' if compression else 'raw'}",
        "space origin: " + _vector(lps[:3, 3]),
    ]
    for key, value in (fields or {}).items():
        if "\n" in key + str(value) or ":=" in key:
            raise ArgumentError(f"invalid NRRD field {key[:40]!r}")
        lines.append(f"{key}:={value}")
    data = voxel_bytes(array)
    if compression:  # one gzip member as gzip.compress(mtime=0) writes it: no CRC pass of its own, same bytes each run
        data = zlib.compress(data, compression, wbits=GZIP_WBITS)
    with open(path, "wb") as stream:
        stream.write(("\n".join(lines) + "\n\n").encode("utf-8"))
        stream.write(data)
    return path


def voxel_bytes(array: np.ndarray) -> memoryview:
    """The voxels of an (i, j, k) array as little-endian bytes in NRRD's order (i fastest; an (i, j, k, n) array's n
    values of a voxel before the next voxel), without a copy when the array is already stored so (SimpleITK's order,
    as every map the pipeline writes)."""
    array = np.asarray(array, dtype=array.dtype.newbyteorder("<"))
    ordered = np.moveaxis(array, 3, 0).T if array.ndim == 4 else array.T  # (k, j, i[, n]): C order is the file's
    return memoryview(np.ascontiguousarray(ordered).reshape(-1).view(np.uint8))


def plain_array(array: np.ndarray) -> np.ndarray:
    """The array itself when NRRD (and the pipeline's readers) take its voxel type, else a float32 copy."""
    return array if array.dtype.type in PLAIN_TYPES else array.astype(np.float32)


def read_nrrd_fields(path: str | Path) -> dict[str, str]:
    """The header of a NRRD file as one dict: ``key:=value`` pairs under their keys, and ``field: value``
    lines under their lower-cased names without spaces (``spacedirections``). Bounded; raises InputError."""
    path = Path(path)
    fields, pairs, _, _ = read_fields(path, path.name)
    return {**fields, **pairs}


def _code(code) -> str:
    return "^".join(code) if code else "^^"


def terminology_entry(label: Label) -> str:
    """Slicer's ``TerminologyEntry`` tag value for a label (7 fields separated by ``~``)."""
    term = label.terminology or {"category": ["SCT", "85756007", "Tissue"], "type": ["SCT", "85756007", "Tissue"]}
    return "~".join(
        [
            TERMINOLOGY_CONTEXT,
            _code(term["category"]),
            _code(term["type"]),
            _code(term.get("modifier")),
            ANATOMY_CONTEXT,
            "^^",
            "^^",
        ]
    )


def label_extents(labels: np.ndarray, values: list[int], chunk_voxels: int = 1 << 23) -> dict[int, str]:
    """Per label value, its index bounds "i0 i1 j0 j1 k0 k1" in ``labels`` ("0 -1 0 -1 0 -1" when absent).

    Values below 64 are found together, slab by slab along k: each voxel becomes one bit of a word, and OR-ing
    the words over the other two axes tells which values occur at each index (a comparison and three reductions
    per label took 0.3-0.6 s for 12 labels on a 512 x 512 x 300 map).
    """
    out = {v: "0 -1 0 -1 0 -1" for v in values}
    small = [v for v in values if 0 <= v < 64]
    if small and labels.size:
        word = next(t for t in (np.uint16, np.uint32, np.uint64) if max(small) < 8 * np.dtype(t).itemsize)
        along = [np.zeros(labels.shape[0], word), np.zeros(labels.shape[1], word), np.zeros(labels.shape[2], word)]
        step = max(1, chunk_voxels // max(1, labels.shape[0] * labels.shape[1]))
        for k in range(0, labels.shape[2], step):
            # values at or above the word's width shift to 0: they are not among ``small``
            bits = np.left_shift(word(1), labels[:, :, k : k + step].astype(word), dtype=word)
            along[0] |= np.bitwise_or.reduce(bits, axis=(1, 2))
            along[1] |= np.bitwise_or.reduce(bits, axis=(0, 2))
            along[2][k : k + step] = np.bitwise_or.reduce(bits, axis=(0, 1))
        for value in small:
            hits = [np.flatnonzero(present & word(1 << value)) for present in along]
            if all(h.size for h in hits):
                out[value] = " ".join(f"{h[0]} {h[-1]}" for h in hits)
    for value in (v for v in values if not 0 <= v < 64):
        mask = labels == value
        if mask.any():
            hits = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
            out[value] = " ".join(f"{h[0]} {h[-1]}" for h in hits)
    return out


def segmentation_fields(labels: np.ndarray, table: list[Label]) -> dict[str, str]:
    """The ``Segment{i}_*`` and ``Segmentation_*`` fields Slicer reads from a .seg.nrrd."""
    fields = {
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ConversionParameters": "",
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
    }
    extents = label_extents(labels, [label.value for label in table])
    for index, label in enumerate(table):
        extent = extents[label.value]
        prefix = f"Segment{index}_"
        fields.update(
            {
                prefix + "Color": " ".join(f"{c / 255:.6g}" for c in label.color),
                prefix + "ColorAutoGenerated": "0",
                prefix + "Extent": extent,
                prefix + "ID": label.name,
                prefix + "LabelValue": str(label.value),
                prefix + "Layer": "0",
                prefix + "Name": label.name,
                prefix + "NameAutoGenerated": "0",
                prefix + "Tags": f"Segmentation.Status:inprocess|TerminologyEntry:{terminology_entry(label)}|",
            }
        )
    return fields


def write_segmentation(path: str | Path, labels: np.ndarray, affine: np.ndarray, table: list[Label]) -> Path:
    """A .seg.nrrd Slicer opens as a segmentation with names, colors and terminology."""
    from .errors import ArgumentError

    if not isinstance(table, (list, tuple)) or not all(isinstance(label, Label) for label in table):
        raise ArgumentError("write_segmentation needs a list of Label entries (the label table)")
    if not isinstance(labels, np.ndarray) or labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise ArgumentError("write_segmentation needs a 3D integer label array")
    dtype = np.uint8 if max((label.value for label in table), default=0) < 256 else np.uint16
    return write_nrrd(path, labels.astype(dtype, copy=False), affine, segmentation_fields(labels, table))
