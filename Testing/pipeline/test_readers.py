"""Image files that are not what their header claims: refused before any voxel is read, with one clear line."""

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers.paths import MODULE_DIR
from helpers.readers import (
    AFFINE,
    FORMATS,
    NIFTI_DIM,
    NIFTI_PIXDIM,
    NIFTI_SFORM_CODE,
    NIFTI_SROW,
    SHAPE,
    data_file_of,
    data_start,
    edit_nifti,
    edit_text_header,
    volume_array,
    write_volume,
)
from TokenUNetSegmentLib.pipeline import readers
from TokenUNetSegmentLib.pipeline.errors import InputError
from TokenUNetSegmentLib.pipeline.memory import parse_size
from TokenUNetSegmentLib.pipeline.volumes import read_volume


def one_line(error: InputError) -> str:
    """What the CLI prints for a user error: one line of at most about 200 characters."""
    line = f"error: {error}"
    assert "\n" not in line and len(line) <= 200, line
    return line


@pytest.mark.parametrize("kind", FORMATS)
def test_every_format_reads_back_exactly(tmp_path, kind):
    volume = read_volume(write_volume(tmp_path, kind))
    np.testing.assert_array_equal(volume.array, volume_array())
    np.testing.assert_allclose(volume.affine, AFFINE, atol=1e-6)
    assert volume.warnings == []


@pytest.mark.parametrize("kind", FORMATS)
@pytest.mark.parametrize("keep", [0.33, 0.9])
def test_a_file_shorter_than_its_header_says_is_refused(tmp_path, kind, keep):
    path = write_volume(tmp_path, kind)
    target = data_file_of(path) if kind in ("nhdr", "mhd") else path
    data = target.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InputError, match="is truncated|corrupt compressed data|not a valid") as error:
        read_volume(path)
    one_line(error.value)


def test_opening_checks_the_header_and_reading_the_voxels_in_two_steps(tmp_path):
    """``open_image`` refuses what its header shows at once and leaves the voxel data to the function it returns
    (which the command line runs in a thread); read_image is the two in one."""
    path = write_volume(tmp_path, "nrrd")
    read = readers.open_image(path)
    assert read.values == int(np.prod(SHAPE))  # known before the voxels are read: the outputs' disk space
    image, warnings = read()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), volume_array())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header intact, half the voxels
    read = readers.open_image(path)  # no voxel read yet
    with pytest.raises(InputError, match="is truncated"):
        read()
    with pytest.raises(InputError, match="input not found"):
        readers.open_image(tmp_path / "missing.nrrd")
    (tmp_path / "bad.nrrd").write_text("NRRD0004\ntype: float\ndimension: 3\nsizes: 4 4 -4\n\n")
    with pytest.raises(InputError):
        readers.open_image(tmp_path / "bad.nrrd")


def test_the_truncated_nii_gz_of_the_issue_is_refused_not_zero_filled(tmp_path):
    """Before: SimpleITK filled the missing two thirds with zeros and the run went on (exit code 0)."""
    path = write_volume(tmp_path, "nii.gz", volume_array((40, 30, 20)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match=r"scan.nii.gz is truncated: .* of the .* its header declares \(\d+%\)"):
        read_volume(path)


@pytest.mark.parametrize("kind", ["nii.gz", "gz.nrrd", "z.mha"])
def test_a_broken_compressed_stream_is_refused(tmp_path, kind):
    path = write_volume(tmp_path, kind, volume_array((30, 20, 10)))
    data = bytearray(path.read_bytes())
    start = 0 if kind == "nii.gz" else data_start(path)
    for offset in range(start + 20, len(data) - 8, 97):  # damage the deflate data in many places
        data[offset] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="corrupt compressed data|is truncated|not a valid") as error:
        read_volume(path)
    one_line(error.value)


def test_a_flipped_checksum_byte_is_caught(tmp_path):
    path = write_volume(tmp_path, "nii.gz")
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # the gzip trailer's CRC-32
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="corrupt compressed data"):
        read_volume(path)


def test_concatenated_gzip_members_are_read_whole(tmp_path):
    path = write_volume(tmp_path, "nii")
    data = path.read_bytes()
    joined = tmp_path / "joined.nii.gz"
    joined.write_bytes(gzip.compress(data[:500]) + gzip.compress(data[500:]))
    np.testing.assert_array_equal(read_volume(joined).array, volume_array())


@pytest.mark.parametrize("kind", ["nhdr", "mhd"])
def test_a_detached_header_whose_data_file_is_missing(tmp_path, kind):
    path = write_volume(tmp_path, kind)
    data_file_of(path).unlink()
    with pytest.raises(InputError, match="names a data file that is missing: scan.raw"):
        read_volume(path)


@pytest.mark.parametrize("kind", ["nhdr", "mhd"])
@pytest.mark.parametrize("entry", ["../outside.raw", "/etc/hostname", "sub/../../outside.raw"])
def test_a_detached_header_may_not_read_outside_its_folder(tmp_path, kind, entry):
    folder = tmp_path / "case"
    folder.mkdir()
    path = write_volume(folder, kind)
    (tmp_path / "outside.raw").write_bytes(data_file_of(path).read_bytes())
    edit_text_header(path, r"^(data file: |ElementDataFile = ).*$", r"\g<1>" + entry)
    with pytest.raises(InputError, match="names a data file outside its folder"):
        read_volume(path)


def compressed_nrrd_bomb(path: Path, side: int) -> Path:
    """The issue's 217-byte header: a gzip NRRD declaring side^3 int16 voxels with almost no data."""
    header = (
        f"NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: {side} {side} {side}\n"
        "space directions: (1,0,0) (0,1,0) (0,0,1)\nkinds: domain domain domain\nendian: little\n"
        "encoding: gzip\nspace origin: (0,0,0)\n\n"
    )
    path.write_bytes(header.encode() + gzip.compress(b"\0" * 64))
    return path


def test_header_size_is_checked_against_the_memory_limit_before_reading(tmp_path, monkeypatch):
    def never(*_):
        raise AssertionError("the voxels were read")

    monkeypatch.setattr(readers, "_read_file", never)
    monkeypatch.setattr(readers, "verify_payloads", never)
    path = compressed_nrrd_bomb(tmp_path / "bomb.nrrd", 400)  # 122 MiB of int16, 244 MiB to read
    with pytest.raises(InputError, match=r"declares 400 x 400 x 400 voxels of short: .* 244 MiB, over") as error:
        read_volume(path, limit=100 * 2**20)
    one_line(error.value)
    monkeypatch.setenv("TOKENUNET_MEMORY_LIMIT", "100M")
    with pytest.raises(InputError, match="over the limit TOKENUNET_MEMORY_LIMIT=100M .*raise TOKENUNET_MEMORY_LIMIT"):
        read_volume(path)
    # NIfTI and MetaImage headers too; a header beyond any machine is refused against free memory
    nifti = edit_nifti(write_volume(tmp_path, "nii"), NIFTI_DIM, "8h", 3, 30000, 30000, 30000, 1, 1, 1, 1)
    with pytest.raises(InputError, match="declares 30000 x 30000 x 30000 voxels of int16.*over"):
        read_volume(nifti)
    mha = edit_text_header(write_volume(tmp_path, "mha"), r"^DimSize = .*$", "DimSize = 100000 100000 100000")
    with pytest.raises(InputError, match="declares 100000 x 100000 x 100000 voxels of short"):
        read_volume(mha)


def test_the_compressed_nrrd_bomb_no_longer_allocates(tmp_path):
    """Before: a 217-byte header drove the process to 3.8 GB. Measured in a child process: its peak memory
    stays that of the imports (here 1 GiB declared; without the check ITK allocates it all)."""
    path = compressed_nrrd_bomb(tmp_path / "bomb.nrrd", 812)
    script = (
        "import resource, sys\n"
        "from TokenUNetSegmentLib.pipeline.volumes import read_volume\n"
        "from TokenUNetSegmentLib.pipeline.errors import InputError\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    read_volume(sys.argv[1])\nexcept InputError as error:\n    print(error)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)\n"
    )
    env = {**os.environ, "TOKENUNET_MEMORY_LIMIT": "512M"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], cwd=MODULE_DIR, capture_output=True, text=True, env=env, timeout=120
    )
    message, growth_kib = done.stdout.strip().splitlines()
    assert "declares 812 x 812 x 812 voxels" in message and int(growth_kib) < 64 * 1024, done.stdout


@pytest.mark.parametrize("value", [0.0, -2.0, float("nan"), float("inf")])
@pytest.mark.parametrize("kind", ["nii", "nii.gz"])
def test_nifti_pixdim_zero_negative_or_not_finite_is_refused(tmp_path, kind, value):
    """Before: SimpleITK read pixdim 0, NaN or inf as 1 mm, and -2 as 2 mm with the axis flipped."""
    path = edit_nifti(write_volume(tmp_path, kind), NIFTI_PIXDIM + 8, "f", value)
    with pytest.raises(InputError, match=r"zero, negative or invalid voxel spacing \(0.8, .*, 2.5\)") as error:
        read_volume(path)
    one_line(error.value)


@pytest.mark.parametrize(
    "kind, pattern, replacement",
    [
        ("nrrd", r"^space directions: .*$", "space directions: (0.8,0,0) (0,0,0) (0,0,2.5)"),
        ("nrrd", r"^space directions: .*$", "space directions: (0.8,0,0) (0,0.9,0) (0,0,nan)"),
        ("nhdr", r"^space directions: .*$", "space directions: (0.8,0,0) (0,0,0) (0,0,2.5)"),
        ("mha", r"^ElementSpacing = .*$", "ElementSpacing = 0.8 0 2.5"),
        ("mha", r"^ElementSpacing = .*$", "ElementSpacing = 0.8 -0.9 2.5"),
        ("mhd", r"^ElementSpacing = .*$", "ElementSpacing = 0.8 nan 2.5"),
    ],
)
def test_zero_negative_or_invalid_spacing_in_nrrd_and_metaimage(tmp_path, kind, pattern, replacement):
    path = edit_text_header(write_volume(tmp_path, kind), pattern, replacement)
    with pytest.raises(InputError, match="zero, negative or invalid voxel spacing"):
        read_volume(path)


def test_nrrd_spacings_field(tmp_path):
    path = write_volume(tmp_path, "nrrd")
    edit_text_header(path, r"^space directions: .*\n", "spacings: 0.8 0.9 2.5\n")
    edit_text_header(path, r"^space origin: .*\n", "")
    edit_text_header(path, r"^space: .*\n", "")
    np.testing.assert_allclose(read_volume(path).grid.spacing, (0.8, 0.9, 2.5))
    edit_text_header(path, r"^spacings: .*$", "spacings: 0.8 0 2.5")
    with pytest.raises(InputError, match="zero, negative or invalid voxel spacing"):
        read_volume(path)


@pytest.mark.parametrize(
    "kind, pattern, replacement",
    [
        ("nrrd", r"^space directions: .*$", "space directions: (1,0,0) (1,0,0) (0,0,1)"),
        ("mha", r"^TransformMatrix = .*$", "TransformMatrix = 1 0 0 1 0 0 0 0 1"),
    ],
)
def test_degenerate_directions_are_refused(tmp_path, kind, pattern, replacement):
    path = edit_text_header(write_volume(tmp_path, kind), pattern, replacement)
    with pytest.raises(InputError, match="degenerate orientation"):
        read_volume(path)


def test_a_degenerate_nifti_sform_is_refused(tmp_path):
    path = write_volume(tmp_path, "nii")
    edit_nifti(path, NIFTI_SFORM_CODE, "h", 1)
    edit_nifti(path, NIFTI_SROW, "12f", 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0)  # third axis collapsed
    with pytest.raises(InputError, match="degenerate orientation"):
        read_volume(path)


def test_a_header_without_spacing_warns_that_1_mm_is_assumed(tmp_path):
    path = write_volume(tmp_path, "mha")
    edit_text_header(path, r"^ElementSpacing = .*\n", "")
    volume = read_volume(path)
    assert volume.warnings == ["scan.mha declares no voxel spacing: 1 mm is assumed"]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "shorter than a NIfTI header"),
        (b"\x1f\x8b\x08\x00garbage" * 10, "gzip stream is broken"),
        (b"x" * 600, "not a NIfTI-1 .348. or NIfTI-2 .540. header size"),
    ],
)
def test_files_that_are_not_nifti_at_all(tmp_path, content, message):
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_volume(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("P5\n8 8\n255\n", "first line is not a NRRD magic"),
        ("NRRD0004\ntype: short\ndimension: 3\nsizes: 8 8\nencoding: raw\n\n", "sizes needs 3 values, got 2"),
        ("NRRD0004\ntype: block\ndimension: 3\nsizes: 8 8 8\nencoding: raw\n\n", "unsupported type 'block'"),
        ("NRRD0004\ntype: short\ndimension: 3\nsizes: 8 8 8\nencoding: zrl\n\n", "unsupported encoding 'zrl'"),
        ("NRRD0004\ntype: short\ndimension: 3\nsizes: 8 0 8\nencoding: raw\n\n", "sizes must be positive"),
        ("NRRD0004\ntype: short\nsizes: 8 8 8\nencoding: raw\n\n", "field 'dimension' is missing"),
        ("NRRD0004\n" + "# padding\n" * 200_000, "no end of header"),
    ],
)
def test_malformed_nrrd_headers(tmp_path, text, message):
    path = tmp_path / "scan.nrrd"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as error:
        read_volume(path)
    one_line(error.value)


def test_a_binary_file_named_like_an_image(tmp_path):
    for name in ("scan.nrrd", "scan.mha", "scan.nii"):
        path = tmp_path / name
        path.write_bytes(bytes(range(256)) * 64)
        with pytest.raises(InputError, match="not a valid (NRRD|MetaImage|NIfTI) file"):
            read_volume(path)


def test_unreadable_file_and_directory_named_like_a_file(tmp_path):
    (tmp_path / "scan.nii.gz").mkdir()
    with pytest.raises(InputError, match="without a DICOM series"):
        read_volume(tmp_path / "scan.nii.gz")
    path = write_volume(tmp_path, "nrrd")
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):  # root reads anything
            pytest.skip("running as a user who can read a file without read permission")
        with pytest.raises(InputError, match="cannot read scan.nrrd: Permission denied"):
            read_volume(path)
    finally:
        path.chmod(0o644)


def test_a_fifo_named_like_an_image_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "scan.nii")
    with pytest.raises(InputError, match=r"scan.nii is a named pipe \(FIFO\), not a file"):
        read_volume(tmp_path / "scan.nii")


def test_memory_limit_sizes():
    assert parse_size("8G") == 8 * 2**30 and parse_size("512m") == 512 * 2**20 and parse_size("2GiB") == 2 * 2**30
    assert parse_size("1000") == 1000 and parse_size("1.5k") == 1536
    with pytest.raises(Exception, match="is not a size"):
        parse_size("lots")


@pytest.mark.parametrize("encoding", ["hex", "ascii", "bzip2"])
def test_nrrd_text_encodings_read_and_short_ones_refused(tmp_path, encoding):
    values = volume_array().ravel(order="F")
    payload = {
        "hex": values.astype("<i2").tobytes().hex(),
        "ascii": " ".join(str(v) for v in values),
        "bzip2": "BZh9",
    }[encoding]
    header = (
        f"NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: {' '.join(map(str, SHAPE))}\n"
        f"space directions: (1,0,0) (0,1,0) (0,0,1)\nendian: little\nencoding: {encoding}\n\n"
    )
    path = tmp_path / "scan.nrrd"
    path.write_text(header + payload)
    if encoding == "bzip2":  # SimpleITK's NRRD reader has no bzip2
        with pytest.raises(InputError, match="unsupported encoding 'bzip2' .use raw or gzip."):
            read_volume(path)
        return
    np.testing.assert_array_equal(read_volume(path).array, volume_array())
    path.write_text(header + payload[: len(payload) // 3])
    with pytest.raises(InputError, match="is truncated|cannot read scan.nrrd: .*couldn't parse element"):
        read_volume(path)


@pytest.mark.parametrize("kind", FORMATS)
def test_the_grid_a_header_declares_is_the_grid_read(tmp_path, kind):
    """The grid known before reading (for the run's memory check) has the voxels' axes and spacing."""
    from TokenUNetSegmentLib.pipeline.volumes import open_input

    rotation = np.array([[0.0, -1.0, 0.0], [0.6, 0.0, 0.8], [-0.8, 0.0, 0.6]])
    oblique = AFFINE.copy()
    oblique[:3, :3] = rotation * (0.8, 0.9, 2.5)
    opened = open_input(write_volume(tmp_path, kind, affine=oblique))
    volume = opened()
    assert opened.grid.shape == volume.grid.shape
    np.testing.assert_allclose(np.abs(opened.grid.affine[:3, :3]), np.abs(volume.affine[:3, :3]), atol=1e-4)


def test_a_nii_gz_is_read_even_with_an_uncompressed_namesake_beside_it(tmp_path):
    """ITK's NIfTI library, asked for ``ct.nii.gz``, reads ``ct.nii`` when that file is in the same folder (as
    ``gunzip -k`` leaves it) (found by reviewhost). Before: the headers and the data of ``ct.nii.gz`` were checked,
    then the voxels of ``ct.nii`` were read (another scan of the same size, or a NaN that ITK set to 0)."""
    from TokenUNetSegmentLib.pipeline.volumes import read_volume

    compressed = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    sitk.WriteImage(sitk.GetImageFromArray(compressed), str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros_like(compressed)), str(tmp_path / "ct.nii"))
    before = sorted(p.name for p in tmp_path.iterdir())
    read = read_volume(tmp_path / "ct.nii.gz").array
    assert np.array_equal(read, compressed.transpose(2, 1, 0))
    assert not read_volume(tmp_path / "ct.nii").array.any()  # the other one is still itself
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_nii_gz_with_a_namesake_is_refused_in_plain_words_where_no_link_can_be_made(tmp_path, monkeypatch):
    """Where no symbolic link can be made (Windows without the privilege), the namesake ITK would read instead is
    named, and nothing is left in the temporary folder."""
    import tempfile

    def no_links(*args, **kwargs):
        raise OSError("symbolic links are not allowed here")

    scratch = tmp_path / "temporary"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setattr(os, "symlink", no_links)
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((4, 5, 6), np.int16)), str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16)), str(tmp_path / "ct.nii"))
    with pytest.raises(InputError) as refused:
        readers.read_image(tmp_path / "ct.nii.gz")
    assert str(refused.value).startswith("ct.nii.gz has ct.nii beside it, which the image reader (ITK) would read")
    assert refused.value.hint == "move or rename one of them"
    assert not any(scratch.iterdir())
