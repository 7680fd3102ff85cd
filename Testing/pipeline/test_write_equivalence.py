"""The faster writers write what the previous ones wrote.

``write_nrrd`` compresses the voxels in one ``zlib`` call from a view of the array (before: a ``tobytes`` copy, then
``gzip.compress``, which wrote the current time into the gzip header and ran a separate CRC pass). The NRRD header,
the deflate stream, its CRC-32 and size are byte for byte the previous ones; only the gzip header's time (now 0, so
a file is the same on every run) and operating-system byte differ."""

import gzip
import struct

import numpy as np
import pytest
import SimpleITK as sitk
from TokenUNetSegmentLib.pipeline.nrrd import write_nrrd
from TokenUNetSegmentLib.pipeline.volumes import read_volume


def previous_payload(array: np.ndarray) -> bytes:
    """The gzip member the previous write_nrrd wrote (level 1)."""
    return gzip.compress(np.asarray(array, dtype=array.dtype.newbyteorder("<")).tobytes(order="F"), compresslevel=1)


def split(path) -> tuple[bytes, bytes]:
    data = path.read_bytes()
    end = data.index(b"\n\n") + 2
    return data[:end], data[end:]


ARRAYS = {
    "labels in SimpleITK's order": lambda rng: np.asfortranarray(rng.integers(0, 13, (40, 30, 20)).astype(np.uint8)),
    "float32 in C order": lambda rng: rng.random((17, 9, 5)).astype(np.float32),
    "big-endian strided view": lambda rng: rng.random((12, 10, 6)).astype(">f4")[:, ::2],
    "int16 with one slice": lambda rng: rng.integers(-1000, 2000, (8, 7, 1)).astype(np.int16),
    "empty": lambda rng: np.zeros((0, 4, 4), np.uint8),
}


@pytest.mark.parametrize("name", list(ARRAYS))
def test_nrrd_files_hold_the_previous_bytes_but_the_gzip_time(tmp_path, name):
    array = ARRAYS[name](np.random.default_rng(len(name)))
    affine = np.diag([0.8, 0.8, 1.5, 1.0])
    affine[:3, 3] = (10.0, -20.0, 30.0)
    first = write_nrrd(tmp_path / "a.nrrd", array, affine, {"Key": "value"})
    header, member = split(first)
    expected = previous_payload(array)
    assert member[:4] == expected[:4] == b"\x1f\x8b\x08\x00"  # gzip, deflate, no flags (no file name)
    assert member[4:8] == b"\x00\x00\x00\x00"  # the time: 0
    assert member[8] == expected[8]  # extra flags: the level
    assert member[10:] == expected[10:]  # deflate stream, CRC-32, size
    assert struct.unpack("<I", member[-4:])[0] == array.nbytes
    assert gzip.decompress(member) == gzip.decompress(expected)
    assert b"encoding: gzip" in header and b"Key:=value" in header
    second = write_nrrd(tmp_path / "b.nrrd", array, affine, {"Key": "value"})
    assert second.read_bytes() == first.read_bytes()  # the same file on every run
    if array.size:
        np.testing.assert_array_equal(read_volume(first).array, array.astype(array.dtype.newbyteorder("=")))
        image = sitk.ReadImage(str(first))  # ITK's reader too
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image).T, array)


def test_raw_nrrd_files_hold_the_voxels_in_file_order(tmp_path):
    array = np.random.default_rng(1).random((6, 5, 4)).astype(np.float32)
    header, body = split(write_nrrd(tmp_path / "raw.nrrd", array, np.eye(4), compression=0))
    assert b"encoding: raw" in header
    assert body == array.tobytes(order="F")


def read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


LAYOUTS = {
    "read-only, SimpleITK's order": lambda a: read_only(np.asfortranarray(a)),
    "big-endian, SimpleITK's order": lambda a: np.asfortranarray(a.astype(">f4")),
    "reversed axis of a Fortran array": lambda a: np.asfortranarray(a)[:, ::-1],
    "every other voxel of a Fortran array": lambda a: np.asfortranarray(a)[::2, :, 1::2],
    "transposed C array": lambda a: np.ascontiguousarray(a.T).T,
    "float64, C order": lambda a: a.astype(np.float64),
    "one voxel": lambda a: a[:1, :1, :1],
}


@pytest.mark.parametrize("compression", [0, 1])
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_any_layout_reads_back_as_the_array(tmp_path, name, compression):
    """The no-copy view of the voxels (``voxel_bytes``) is the array's voxels in file order whatever its memory
    layout, byte order or write flag: what ITK reads back is the array."""
    array = LAYOUTS[name](np.random.default_rng(5).random((9, 8, 6)).astype(np.float32))
    before = array.copy()
    path = write_nrrd(tmp_path / "a.nrrd", array, np.eye(4), compression=compression)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))).T, before)
    np.testing.assert_array_equal(array, before)  # the caller's array is left as it was


@pytest.mark.slow
def test_over_4_gib_of_voxels_make_one_whole_gzip_member(tmp_path):
    """Python's ``zlib.compress`` feeds zlib's 32-bit lengths in pieces: one call takes more than 4 GiB. The zeros are
    pages never written (no memory used) and the array is in file order (no copy); the member is read back as a
    stream (about 10 s)."""
    import zlib

    array = np.zeros((2048, 2048, 1025), np.uint8, order="F")  # 4.3e9 voxels
    array[-1, -1, -1] = 7
    _, member = split(write_nrrd(tmp_path / "big.nrrd", array, np.eye(4)))
    stream, size, nonzero, last = zlib.decompressobj(31), 0, 0, None
    for start in range(0, len(member), 1 << 20):
        out = stream.decompress(member[start : start + (1 << 20)], 1 << 26)
        while True:
            size, nonzero = size + len(out), nonzero + np.count_nonzero(np.frombuffer(out, np.uint8))
            last = out[-1] if out else last
            if not stream.unconsumed_tail:
                break
            out = stream.decompress(stream.unconsumed_tail, 1 << 26)
    assert stream.eof and size == array.size and nonzero == 1 and last == 7
    assert struct.unpack("<I", member[-4:])[0] == array.size % 2**32  # gzip's size field: modulo 2^32
