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
