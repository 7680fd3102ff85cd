"""Property-based tests of the readers (hypothesis): truncations, byte flips and random header fields of
small valid NIfTI, NRRD and MetaImage files. Each read ends in a clear InputError or in a correct volume (the
original array when the voxel data is intact), never in another exception, and writes no file."""

import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers.readers import (
    FORMATS,
    NIFTI_DIM,
    NIFTI_PIXDIM,
    NIFTI_SFORM_CODE,
    NIFTI_SROW,
    NIFTI_VOX_OFFSET,
    data_start,
    edit_nifti,
    edit_text_header,
    volume_array,
    write_volume,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from TokenUNetSegmentLib.pipeline.errors import InputError
from TokenUNetSegmentLib.pipeline.volumes import as_volume

BOUNDED = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same examples on every run, so that CI is reproducible
    database=None,  # and nothing written into the repository
    suppress_health_check=[HealthCheck.too_slow],
)
COMPRESSED = ("nii.gz", "gz.nrrd", "z.mha")
ORIGINAL = volume_array()


SCRATCH = []  # the module's temporary folder: every example's files go below it


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """Every format written once: (kind -> {file name: bytes}), copied fresh for each example."""
    root = tmp_path_factory.mktemp("originals")
    SCRATCH[:] = [root]
    out = {}
    for kind in FORMATS:
        folder = root / kind.replace(".", "_")
        folder.mkdir()
        write_volume(folder, kind)
        out[kind] = {p.name: p.read_bytes() for p in folder.iterdir()}
    return out


def fresh_copy(files: dict[str, bytes]) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="example-", dir=SCRATCH[0]))
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def image_path(folder: Path) -> Path:
    return next(p for p in folder.iterdir() if p.suffix != ".raw")


def read_checked(folder: Path):
    """``as_volume(path)``: a Volume or an InputError, nothing else; no file appears or changes anywhere near."""
    path = image_path(folder)
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    cwd_before = sorted(os.listdir(os.getcwd()))
    try:
        return as_volume(path)
    except InputError as error:
        line = f"error: {error}"
        assert "\n" not in line and len(line) <= 240, line
        return error
    finally:
        assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
        assert sorted(os.listdir(os.getcwd())) == cwd_before
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()


def is_valid(volume) -> bool:
    spacing = np.linalg.norm(volume.affine[:3, :3], axis=0)
    return volume.array.ndim == 3 and np.all(np.isfinite(volume.affine)) and np.all(spacing > 0)


@BOUNDED
@given(kind=st.sampled_from(FORMATS), keep=st.floats(0.0, 1.0, exclude_max=True))
def test_any_truncation_is_refused(originals, kind, keep):
    files = dict(originals[kind])
    target = "scan.raw" if kind in ("nhdr", "mhd") else next(iter(files))
    files[target] = files[target][: int(len(files[target]) * keep)]
    assert isinstance(read_checked(fresh_copy(files)), InputError)  # down to a compressed stream's last byte


@BOUNDED
@given(
    kind=st.sampled_from(FORMATS),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4),
)
def test_byte_flips_anywhere_give_an_input_error_or_a_valid_volume(originals, kind, flips):
    files = dict(originals[kind])
    name = next(n for n in files if not n.endswith(".raw"))
    data = bytearray(files[name])
    for where, value in flips:
        data[int(where * len(data))] ^= value
    files[name] = bytes(data)
    result = read_checked(fresh_copy(files))
    assert isinstance(result, InputError) or is_valid(result)


@BOUNDED
@given(
    kind=st.sampled_from(COMPRESSED),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4),
)
def test_damage_inside_a_compressed_stream_is_caught_or_changes_nothing(originals, kind, flips):
    """Deflate data and its checksum: any change is an error, or lands in bytes no reader uses."""
    folder = fresh_copy(originals[kind])
    path = image_path(folder)
    start = 10 if kind == "nii.gz" else data_start(path) + 2  # after the gzip/zlib stream header
    data = bytearray(path.read_bytes())
    for where, value in flips:
        data[start + int(where * (len(data) - start))] ^= value
    path.write_bytes(bytes(data))
    result = read_checked(folder)
    assert isinstance(result, InputError) or np.array_equal(result.array, ORIGINAL)


FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([0.0, -1.0, 1e-30, 1e30]))


@BOUNDED
@given(
    field=st.sampled_from(["dim", "pixdim", "vox_offset", "sform"]),
    ints=st.lists(st.integers(-(2**15), 2**15 - 1), min_size=8, max_size=8),
    floats=st.lists(FLOATS, min_size=12, max_size=12),
    small=st.booleans(),
)
def test_random_nifti_header_fields(originals, field, ints, floats, small):
    folder = fresh_copy(originals["nii"])
    path = image_path(folder)
    if field == "dim":
        values = [min(abs(v), 12) if small else v for v in ints]
        edit_nifti(path, NIFTI_DIM, "8h", *values)
    elif field == "pixdim":
        edit_nifti(path, NIFTI_PIXDIM, "8f", *floats[:8])
    elif field == "vox_offset":
        edit_nifti(path, NIFTI_VOX_OFFSET, "f", floats[0])
    else:
        edit_nifti(path, NIFTI_SFORM_CODE, "h", 1)
        edit_nifti(path, NIFTI_SROW, "12f", *floats)
    header = path.read_bytes()[:348]
    declared = struct.unpack_from("<8h", header, NIFTI_DIM)
    result = read_checked(folder)
    if not isinstance(result, InputError):
        assert is_valid(result)
        assert result.array.shape == tuple(declared[1:4])  # what the header claims, not something else


NRRD_FIELDS = {
    "sizes": st.lists(st.integers(-3, 12), min_size=1, max_size=4).map(lambda v: " ".join(map(str, v))),
    "type": st.sampled_from(["short", "uchar", "float", "double", "int64", "block", "bogus"]),
    "encoding": st.sampled_from(["raw", "gzip", "bzip2", "hex", "ascii", "zrl"]),
    "space directions": st.lists(st.tuples(FLOATS, FLOATS, FLOATS), min_size=3, max_size=3).map(
        lambda vs: " ".join("(" + ",".join(repr(float(c)) for c in v) + ")" for v in vs)
    ),
    "byte skip": st.integers(-5, 2000).map(str),
    "line skip": st.integers(-1, 5).map(str),
    "dimension": st.integers(-1, 5).map(str),
}


@BOUNDED
@given(kind=st.sampled_from(["nrrd", "nhdr", "gz.nrrd"]), field=st.sampled_from(sorted(NRRD_FIELDS)), data=st.data())
def test_random_nrrd_header_fields(originals, kind, field, data):
    value = data.draw(NRRD_FIELDS[field])
    folder = fresh_copy(originals[kind])
    path = image_path(folder)
    pattern = rf"^{field}: .*$" if field not in ("byte skip", "line skip") else r"^encoding: .*$"
    replacement = f"{field}: {value}" if field not in ("byte skip", "line skip") else rf"\g<0>\n{field}: {value}"
    edit_text_header(path, pattern, replacement)
    result = read_checked(folder)
    assert isinstance(result, InputError) or is_valid(result)


MHA_FIELDS = {
    "DimSize": st.lists(st.integers(-3, 12), min_size=1, max_size=4).map(lambda v: " ".join(map(str, v))),
    "ElementType": st.sampled_from(["MET_SHORT", "MET_UCHAR", "MET_FLOAT", "MET_DOUBLE", "MET_STRING", "junk"]),
    "ElementSpacing": st.lists(FLOATS, min_size=3, max_size=3).map(lambda v: " ".join(repr(float(c)) for c in v)),
    "TransformMatrix": st.lists(FLOATS, min_size=9, max_size=9).map(lambda v: " ".join(repr(float(c)) for c in v)),
    "NDims": st.integers(-1, 5).map(str),
    "CompressedData": st.sampled_from(["True", "False", "maybe"]),
}


@BOUNDED
@given(kind=st.sampled_from(["mha", "mhd", "z.mha"]), field=st.sampled_from(sorted(MHA_FIELDS)), data=st.data())
def test_random_metaimage_header_fields(originals, kind, field, data):
    value = data.draw(MHA_FIELDS[field])
    folder = fresh_copy(originals[kind])
    path = image_path(folder)
    edit_text_header(path, rf"^{field} = .*$", f"{field} = {value}")
    result = read_checked(folder)
    assert isinstance(result, InputError) or is_valid(result)
