"""Single-file volumes as other tools write them: NIfTI headers whose qform, sform and pixdim disagree, RGB
voxels, NaN voxels (which ITK's NIfTI reader turns into zeros without a word)."""

import gzip
import struct

import numpy as np
import pytest
import SimpleITK as sitk
from helpers.packages import threshold_package
from helpers.readers import (
    AFFINE,
    NIFTI_DIM,
    NIFTI_PIXDIM,
    NIFTI_SFORM_CODE,
    NIFTI_SROW,
    edit_nifti,
    volume_array,
    write_volume,
)
from TokenUNetSegmentLib.pipeline.errors import InputError
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing, image_from_array
from TokenUNetSegmentLib.pipeline.readers import nifti, open_image, payload
from TokenUNetSegmentLib.pipeline.segmentation import segment
from TokenUNetSegmentLib.pipeline.volumes import read_volume

NIFTI_DATATYPE, NIFTI_BITPIX, NIFTI_QFORM_CODE = 70, 72, 252


def srow(path):
    data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    return np.asarray(struct.unpack_from("<12f", data, NIFTI_SROW), float).reshape(3, 4)


def nii_with_moved_sform(folder, row, column, delta):
    """A NIfTI written by SimpleITK (qform and sform code 1, equal) whose sform entry (row, column) is moved."""
    path = write_volume(folder, "nii")
    rows = srow(path)
    rows[row, column] += delta
    return edit_nifti(path, NIFTI_SROW, "12f", *rows.ravel())


@pytest.mark.parametrize("kind", ["nii", "nii.gz"])
def test_an_sform_whose_voxel_size_disagrees_with_pixdim_is_refused(tmp_path, kind):
    """ITK (and so Slicer) takes the spacing from pixdim and only the axes from the sform; nibabel, MONAI and
    TotalSegmentator take the sform whole: a volume off by a factor of 8 in one of them (before: read silently)."""
    path = write_volume(tmp_path, kind)
    edit_nifti(path, NIFTI_PIXDIM + 4, "3f", 0.4, 0.45, 1.25)  # half the sform's voxel size
    with pytest.raises(InputError, match="two geometries") as error:
        read_volume(path)
    assert "pixdim" in str(error.value) and len(str(error.value)) < 200


def test_a_pixdim_rounded_off_the_sform_by_under_a_voxel_is_read_as_slicer_reads_it_with_a_warning(tmp_path):
    """pixdim 0.78 against an sform of 0.8 mm: 0.16 mm over 9 voxels (over a tenth of a voxel, under one)."""
    path = write_volume(tmp_path, "nii")
    edit_nifti(path, NIFTI_PIXDIM + 4, "f", 0.78)
    volume = read_volume(path)
    assert np.isclose(volume.grid.spacing[0], 0.78, atol=1e-6)  # ITK's (and Slicer's) spacing: pixdim's
    assert any("Slicer/ITK read the sform's axes with pixdim's spacing" in w for w in volume.warnings)


def test_an_aligned_sform_that_disagrees_with_the_qform_is_refused(tmp_path):
    """sform code 2 (aligned) with qform code 1: ITK reads the qform, nibabel the sform (before: read silently
    with the qform, 50 mm from where nibabel-based tools put the scan)."""
    path = nii_with_moved_sform(tmp_path, 0, 3, 50.0)  # 50 mm along x
    edit_nifti(path, NIFTI_SFORM_CODE, "h", 2)
    with pytest.raises(InputError, match="up to 50.0 mm apart: Slicer/ITK read the qform, nibabel/MONAI the sform"):
        read_volume(path)


def test_a_scanner_sform_that_disagrees_with_the_qform_is_read_with_a_warning(tmp_path):
    """sform code 1 wins in ITK, Slicer and nibabel alike: read with the sform, and the user is told."""
    path = nii_with_moved_sform(tmp_path, 0, 3, 50.0)  # 50 mm along x
    volume = read_volume(path)
    assert np.allclose(volume.affine[:3, 3], [60.0, -20.0, 30.0], atol=1e-3)
    assert any("qform and sform disagree" in w and "50.0 mm" in w for w in volume.warnings)


def test_a_sheared_sform_without_a_qform_is_refused_in_plain_words(tmp_path):
    """ITK reads no sheared sform (before: "ITK only supports orthonormal direction cosines.  No orthonormal
    definition found!", when the voxels were read)."""
    path = nii_with_moved_sform(tmp_path, 0, 1, 0.4)  # the j axis leans towards x
    edit_nifti(path, NIFTI_QFORM_CODE, "h", 0)
    with pytest.raises(InputError, match="has a sheared sform .* and no qform"):
        read_volume(path)


def test_agreeing_or_single_forms_give_no_warning(tmp_path):
    path = write_volume(tmp_path, "nii.gz")
    assert read_volume(path).warnings == []
    edit_nifti(path, NIFTI_QFORM_CODE, "h", 0)
    assert read_volume(path).warnings == []
    edit_nifti(path, NIFTI_QFORM_CODE, "h", 1)
    edit_nifti(path, NIFTI_SFORM_CODE, "h", 0)
    assert read_volume(path).warnings == []


def test_a_nifti_without_orientation_warns(tmp_path):
    """qform and sform codes 0: ITK puts the axes along LPS at origin 0, nibabel along LAS elsewhere."""
    path = write_volume(tmp_path, "nii")
    edit_nifti(path, NIFTI_QFORM_CODE, "2h", 0, 0)
    volume = read_volume(path)
    assert any("no orientation" in w for w in volume.warnings)


def test_a_nrrd_without_orientation_warns(tmp_path):
    path = tmp_path / "scan.nrrd"
    array = volume_array()
    header = f"NRRD0004\ntype: short\ndimension: 3\nsizes: {' '.join(map(str, array.shape))}\nspacings: 1 1 2\n"
    path.write_bytes((header + "endian: little\nencoding: raw\n\n").encode() + array.tobytes(order="F"))
    volume = read_volume(path)
    assert any("no orientation" in w for w in volume.warnings)


@pytest.mark.parametrize("kind", ["nii", "nii.gz"])
def test_an_rgb_nifti_is_refused_as_colour_not_as_damaged(tmp_path, kind):
    """RGB24 voxels (before: "read 3 x N values where its header declares N (export it again)")."""
    path = write_volume(tmp_path, "nii", volume_array(dtype=np.uint8))
    data = bytearray(path.read_bytes())
    offset = int(struct.unpack_from("<f", data, 108)[0])
    struct.pack_into("<2h", data, NIFTI_DATATYPE, 128, 24)
    data = bytes(data[:offset]) + bytes(np.repeat(np.frombuffer(bytes(data[offset:]), np.uint8), 3))
    if kind == "nii.gz":
        path.unlink()
        path = path.with_name("scan.nii.gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    with pytest.raises(InputError, match="3 components per voxel"):
        read_volume(path)


@pytest.mark.parametrize("kind", ["nii", "nii.gz"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("chunk", [None, 7])
def test_nan_voxels_in_a_nifti_are_refused_not_read_as_zeros(tmp_path, monkeypatch, kind, dtype, chunk):
    """ITK's NIfTI reader sets NaN and infinite voxels to 0 (water, in a CT) silently; NRRD and MetaImage keep
    them and are refused: a NIfTI is refused the same way (before: read, 0 in place of NaN). ``chunk`` 7: values
    split across the pieces the data is read in."""
    if chunk:
        monkeypatch.setattr(payload, "CHUNK", chunk)
    array = volume_array(dtype=dtype)
    array[2, 3, 4], array[0, 0, 0], array[-1, -1, -1] = np.nan, -np.inf, np.nan
    path = tmp_path / f"scan.{kind}"
    sitk.WriteImage(image_from_array(array, affine_from_spacing((1, 1, 2))), str(path), useCompression=True)
    with pytest.raises(InputError, match="has 3 NaN or infinite voxels"):
        read_volume(path)
    array[2, 3, 4] = array[0, 0, 0] = array[-1, -1, -1] = 0
    sitk.WriteImage(image_from_array(array, affine_from_spacing((1, 1, 2))), str(path), useCompression=True)
    assert np.array_equal(read_volume(path).array, array)


def test_a_scan_measured_in_metres_is_refused_naming_its_size_not_only_memory(tmp_path):
    """A NIfTI whose xyzt_units say metres while pixdim holds millimetres: ITK (and Slicer) scale it to 3 m voxels
    (before: "this run needs about 83543509.3 GiB of memory ... (use a coarser model spacing, crop the volume...)")."""
    path = write_volume(tmp_path, "nii.gz")
    edit_nifti(path, 123, "B", 1)  # xyzt_units: NIFTI_UNITS_METER
    volume = read_volume(path)
    assert volume.grid.spacing.min() > 700
    with pytest.raises(InputError, match=r"spans 7\.2 x 7\.2 x 17\.5 m.*spacing or units are wrong"):
        segment([volume], threshold_package(), device="cpu")


def write_nifti2(path, array):
    """A minimal single-file NIfTI-2 (nifti2.h offsets), int16, 1 x 1 x 2 mm, sform code 1 at the identity."""
    header = bytearray(540)
    struct.pack_into("<i8s", header, 0, 540, b"n+2\0\r\n\x1a\n")
    struct.pack_into("<2h", header, 12, 4, 16)  # datatype int16, bitpix
    struct.pack_into("<8q", header, 16, 3, *array.shape, 1, 1, 1, 1)
    struct.pack_into("<8d", header, 104, 1, 1, 1, 2, 1, 1, 1, 1)
    struct.pack_into("<q", header, 168, 544)  # vox_offset
    struct.pack_into("<2i", header, 344, 0, 1)  # qform, sform codes
    struct.pack_into("<12d", header, 400, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 2, 0)
    data = bytes(header) + b"\0" * 4 + array.astype("<i2").tobytes(order="F")
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


@pytest.mark.parametrize("kind", ["nii", "nii.gz"])
def test_a_nifti2_file_is_read_or_refused_in_plain_words(tmp_path, kind):
    """Refused at the header while SimpleITK cannot read NIfTI-2 (before: "cannot read scan.nii.gz:
    NiftiImageIO(0x55d...): /full/path is not recognized as a NIFTI file", after the output folder was opened)."""
    array = volume_array()
    path = write_nifti2(tmp_path / f"scan.{kind}", array)
    try:
        sitk.ReadImage(str(path))
        itk_reads = True
    except RuntimeError:
        itk_reads = False
    assert itk_reads == nifti.ITK_READS_NIFTI2, "SimpleITK now reads NIfTI-2: set ITK_READS_NIFTI2"
    if itk_reads:
        assert np.array_equal(read_volume(path).array, array)
        return
    with pytest.raises(InputError) as error:
        open_image(path)  # the header alone
    assert str(error.value).startswith(f"scan.{kind} is a NIfTI-2 file") and "NIfTI-1" in str(error.value)
    assert "0x" not in str(error.value) and str(tmp_path) not in str(error.value)


def test_itk_messages_lose_object_addresses():
    from TokenUNetSegmentLib.pipeline.readers.itk import itk_error_text

    error = RuntimeError("a.cxx:10:\nITK ERROR: NiftiImageIO(0x7fcc2800ae90): scan.nii is not recognized")
    assert itk_error_text(error) == "scan.nii is not recognized"


def flipped(array, affine, axis):
    """The same volume in physical space stored with ``axis`` reversed (the direction's determinant changes sign)."""
    moved = affine.copy()
    moved[:3, 3] = affine[:3, :3] @ np.eye(3)[axis] * (array.shape[axis] - 1) + affine[:3, 3]
    moved[:3, axis] *= -1
    return np.ascontiguousarray(np.flip(array, axis)), moved


def nrrd_text(array, space, directions, origin, extra="", kinds="domain domain domain", sizes=None):
    vectors = " ".join(d if isinstance(d, str) else "(" + ",".join(f"{v:.9g}" for v in d) + ")" for d in directions)
    sizes = sizes or " ".join(map(str, array.shape))
    return (
        f"NRRD0004\ntype: short\ndimension: {len(sizes.split())}\n{space}sizes: {sizes}\nspace directions: {vectors}\n"
        f"kinds: {kinds}\nendian: little\nspace origin: ({','.join(f'{v:.9g}' for v in origin)})\n{extra}"
    )


def write_variant(folder, variant):
    """The volume of :func:`volume_array` on ``AFFINE`` written as a user's tool might write it."""
    array = volume_array()
    lps = np.diag([-1.0, -1.0, 1.0]) @ AFFINE[:3, :3]
    lps_origin = AFFINE[:3, 3] * [-1, -1, 1]
    if variant == "nii uint16 with scl_inter -1024":
        path = write_volume(folder, "nii", (array.astype(np.int32) + 1024).astype(np.uint16))
        return edit_nifti(path, 112, "2f", 1.0, -1024.0)
    if variant == "nii 4D with one time point":
        return edit_nifti(write_volume(folder, "nii", array), NIFTI_DIM, "5h", 4, *array.shape, 1)
    if variant == "nii qform only":
        return edit_nifti(write_volume(folder, "nii", array), NIFTI_SFORM_CODE, "h", 0)
    if variant == "nii sform only":
        return edit_nifti(write_volume(folder, "nii", array), NIFTI_QFORM_CODE, "h", 0)
    if variant == "nii.gz stored uncompressed":
        return write_volume(folder, "nii", array).rename(folder / "scan.nii.gz")
    if variant == "NII.GZ in capitals":
        return write_volume(folder, "nii.gz", array).rename(folder / "SCAN.NII.GZ")
    if variant == "a link to a nii.gz":
        (folder / "link.nii.gz").symlink_to(write_volume(folder, "nii.gz", array))
        return folder / "link.nii.gz"
    if variant.startswith("nii.gz flipped along "):
        axis = "ijk".index(variant[-1])
        return write_volume(folder, "nii.gz", *flipped(array, AFFINE, axis))
    if variant == "nrrd space RAS":
        text = nrrd_text(array, "space: right-anterior-superior\n", AFFINE[:3, :3].T, AFFINE[:3, 3])
    elif variant == "nrrd space scanner-xyz":
        text = nrrd_text(array, "space: scanner-xyz\n", lps.T, lps_origin)
    elif variant == "nrrd with a measurement frame":
        extra = "measurement frame: (-1,0,0) (0,-1,0) (0,0,1)\n"
        text = nrrd_text(array, "space: left-posterior-superior\n", lps.T, lps_origin, extra)
    elif variant == "nrrd with a list axis of 1 first":
        directions = ["none", *lps.T]
        sizes = "1 " + " ".join(map(str, array.shape))
        text = nrrd_text(array, "space: LPS\n", directions, lps_origin, kinds="list domain domain domain", sizes=sizes)
    elif variant == "nhdr with a gzip data file":
        text = nrrd_text(array, "space: LPS\n", lps.T, lps_origin, "encoding: gzip\ndata file: scan.raw.gz\n")
        (folder / "scan.raw.gz").write_bytes(gzip.compress(array.astype("<i2").tobytes(order="F")))
        (folder / "scan.nhdr").write_text(text)
        return folder / "scan.nhdr"
    else:
        raise AssertionError(variant)
    path = folder / "scan.nrrd"
    path.write_bytes((text + "encoding: raw\n\n").encode() + array.astype("<i2").tobytes(order="F"))
    return path


VARIANTS = [
    "nii uint16 with scl_inter -1024",
    "nii 4D with one time point",
    "nii qform only",
    "nii sform only",
    "nii.gz stored uncompressed",
    "NII.GZ in capitals",
    "a link to a nii.gz",
    "nii.gz flipped along i",
    "nii.gz flipped along k",
    "nrrd space RAS",
    "nrrd space scanner-xyz",
    "nrrd with a measurement frame",
    "nrrd with a list axis of 1 first",
    "nhdr with a gzip data file",
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_real_world_variants_read_as_the_same_volume_in_physical_space(tmp_path, variant):
    """Every voxel value at the same RAS position as the volume written plainly, and no warning."""
    from TokenUNetSegmentLib.pipeline.geometry import Grid, resample_nearest

    array = volume_array()
    volume = read_volume(write_variant(tmp_path, variant))
    assert volume.warnings == []
    assert np.isclose(abs(np.linalg.det(volume.affine)), abs(np.linalg.det(AFFINE)), rtol=1e-5)
    source = Grid(volume.array.shape, volume.affine)
    back = resample_nearest(volume.array.astype(np.int32) + 5000, source, Grid(array.shape, AFFINE), np.int32)
    assert np.array_equal(back - 5000, array)


def test_a_slicer_segmentation_with_overlapping_layers_is_refused_naming_layers(tmp_path):
    """Slicer writes overlapping segments as a 4D .seg.nrrd with a list axis of layers (before, as an evaluate
    reference: "has 2 components per voxel (use one scalar volume per channel)")."""
    layers = np.stack([volume_array(dtype=np.uint8) % 3, volume_array(dtype=np.uint8) % 2])
    directions = ["none", (-0.8, 0, 0), (0, -0.9, 0), (0, 0, 2.5)]
    sizes = " ".join(map(str, layers.shape))  # the layer axis first, fastest
    text = nrrd_text(layers[0], "space: LPS\n", directions, (0, 0, 0), kinds="list domain domain domain", sizes=sizes)
    text = text.replace("type: short", "type: uchar")
    path = tmp_path / "reference.seg.nrrd"
    path.write_bytes((text + "encoding: raw\n\n").encode() + layers.tobytes(order="F"))
    with pytest.raises(InputError, match="has 2 layers .*overlapping segments.*labelmap volume"):
        read_volume(path)


@pytest.mark.parametrize("channels", [1, 4])
def test_a_compressed_metaimage_without_its_compressed_size_is_refused_not_read_as_garbage(
    tmp_path, monkeypatch, channels
):
    """A .mha of zlib-compressed data after its header and no CompressedDataSize (a hand-written or other tool's
    header; the field is optional in MetaIO's description). ITK's MetaIO cannot find the stream's end: it prints
    "Uncompress failed" and returns other values (found by review4d; before: read without a word, a 3D scan or the
    four channels of a 4D one wrong voxel by voxel). Refused from its header, before any voxel is read, saying which
    line to add; the same data with the field, or in a separate file, read as written."""
    import re

    from helpers.readers import refuse_reading

    arrays = [volume_array() + 100 * index for index in range(channels)]
    images = [image_from_array(array, AFFINE) for array in arrays]
    written = tmp_path / "written.mha"
    sitk.WriteImage(images[0] if channels == 1 else sitk.Compose(images), str(written), useCompression=True)
    data = written.read_bytes()
    size = re.search(rb"CompressedDataSize = (\d+)\n", data)
    bare = tmp_path / "bare.mha"
    bare.write_bytes(data.replace(size.group(0), b""))
    image, _ = open_image(written)()  # with the field: the values as written
    assert np.array_equal(sitk.GetArrayFromImage(image), np.stack([array.T for array in arrays], axis=-1).squeeze())
    with monkeypatch.context() as patched:
        refuse_reading(patched)
        with pytest.raises(InputError) as refused:
            open_image(bare)
    assert str(refused.value) == (
        "bare.mha holds compressed data after its header without CompressedDataSize, which the image reader (ITK) "
        f"cannot read (add the line 'CompressedDataSize = {size.group(1).decode()}' before ElementDataFile, or export "
        "it again)"
    )
    detached = tmp_path / "detached.mhd"
    sitk.WriteImage(images[0], str(detached), useCompression=True)
    detached.write_text(re.sub(r"CompressedDataSize = \d+\n", "", detached.read_text()))
    assert np.array_equal(read_volume(detached).array, arrays[0])


TRAILING_BLANKS = {  # (header field, what its line ends in): ITK 5.4's NRRD reader (teem), measured on each (smallfix4)
    "kinds, two spaces": ("kinds", "  "),
    "kinds, a space and a tab": ("kinds", " \t"),
    "sizes, two tabs": ("sizes", "\t\t"),
    "type, a space": ("type", " "),
    "endian, a tab": ("endian", "\t"),
    "encoding, a space": ("encoding", " "),
    "space, a space": ("space", " "),
}


def nrrd_with_line_ending(folder, field: str, ending: str):
    """The plain volume as a NRRD whose header line ``field: ...`` ends in ``ending`` (spaces or tabs)."""
    import re

    array = volume_array()
    lps = np.diag([-1.0, -1.0, 1.0]) @ AFFINE[:3, :3]
    text = nrrd_text(array, "space: LPS\n", lps.T, AFFINE[:3, 3] * [-1, -1, 1]) + "encoding: raw\n"
    text, count = re.subn(rf"^({field}: .*)$", lambda line: line.group(1) + ending, text, flags=re.MULTILINE)
    assert count == 1, field
    path = folder / "scan.nrrd"
    path.write_bytes(text.encode() + b"\n" + array.astype("<i2").tobytes("F"))
    return path


def assert_refused_from_the_header_where_itk_fails(path, monkeypatch, start: str, hint: str) -> None:
    """ITK cannot read ``path``; we refuse it from its header (its voxels never read) with a message starting ``start``
    and the hint ``hint``."""
    from helpers.readers import refuse_reading

    with pytest.raises(RuntimeError):
        sitk.ReadImage(str(path))  # what ITK does with it
    refuse_reading(monkeypatch)
    with pytest.raises(InputError) as refused:
        open_image(path)
    assert str(refused.value).startswith(start), refused.value
    assert refused.value.hint == hint


@pytest.mark.parametrize("case", TRAILING_BLANKS)
def test_nrrd_header_lines_ending_in_blanks_that_itk_cannot_read_are_refused_from_the_header(
    tmp_path, monkeypatch, case
):
    """Spaces or tabs after a header line's value (a hand-edited header): ITK's NRRD reader refuses ``type``,
    ``endian``, ``encoding``, ``space`` and ``data file`` with any, ``sizes``, ``kinds`` and ``centers`` with more than
    one ("seem to have more than expected 3 kinds"). Before: our header parse stripped them, the data were checked,
    then ITK's words ("cannot read scan.nrrd: [nrrd] _nrrdReadNrrdParse_kinds: seem to have more than expected 3
    kinds"). Now refused from the header, before any voxel is read, naming the line and what to do."""
    field, ending = TRAILING_BLANKS[case]
    assert_refused_from_the_header_where_itk_fails(
        nrrd_with_line_ending(tmp_path, field, ending),
        monkeypatch,
        f"scan.nrrd: its header line '{field}:' ends in spaces or tabs, which the image reader (ITK) cannot read",
        f"delete the spaces and tabs at the end of its '{field}:' line, or export it again",
    )


@pytest.mark.parametrize("field", ["kinds", "sizes", "space origin", "space directions"])
@pytest.mark.parametrize("ending", [" ", "\t"])
def test_nrrd_header_lines_ending_in_blanks_that_itk_reads_are_read_as_the_plain_volume(tmp_path, field, ending):
    """One space or tab after ``kinds`` or ``sizes`` (any after ``space origin`` or ``space directions``), which ITK
    reads: read as the volume without them."""
    path = nrrd_with_line_ending(tmp_path, field, ending)
    volume = read_volume(path)
    assert np.array_equal(volume.array, volume_array()) and np.allclose(volume.affine, AFFINE, atol=1e-6)


def test_a_nrrd_magic_or_data_file_line_ending_in_blanks_is_refused_from_the_header(tmp_path, monkeypatch):
    """``NRRD0004 `` (ITK: "couldn't parse "NRRD0004 " as magic") and ``data file: scan.raw `` beside scan.raw (ITK:
    "couldn't open "./scan.raw "") as the other fields: refused from the header, naming the line."""
    from helpers.readers import refuse_reading

    attached = nrrd_with_line_ending(tmp_path, "type", "")
    attached.write_bytes(attached.read_bytes().replace(b"NRRD0004\n", b"NRRD0004 \n", 1))
    detached = tmp_path / "scan.nhdr"
    text, data = attached.read_bytes().split(b"\n\n", 1)
    (tmp_path / "scan.raw").write_bytes(data)
    detached.write_bytes(text.replace(b"NRRD0004 \n", b"NRRD0004\n") + b"\ndata file: scan.raw \n")
    cases = ((attached, "NRRD0004"), (detached, "data file:"))
    for path, _ in cases:
        with pytest.raises(RuntimeError):
            sitk.ReadImage(str(path))
    refuse_reading(monkeypatch)
    for path, line in cases:
        with pytest.raises(InputError, match=f"^{path.name}: its header line '{line}' ends in spaces or tabs"):
            open_image(path)


@pytest.mark.parametrize("kind", ["nrrd", "gz.nrrd", "nhdr", "mha", "z.mha", "mhd"])
def test_a_4d_nrrd_or_metaimage_of_one_volume_is_read_and_segmented_as_its_3d_file(tmp_path, kind):
    """A NRRD or MetaImage whose 4th axis has size 1 (SimpleITK's ``JoinSeries`` of one volume; tools that always
    write 4D), as a NIfTI with a 4th axis of 1 already was: its header gives the 3D grid, and it is read and
    segmented by a one-channel model as the 3D file of that volume, on an oblique grid: the same voxels, spacing,
    origin and axis directions (before: read, then refused: "scan.nrrd has 4 dimensions; a 3D volume is needed")."""
    from helpers.packages import rotation
    from TokenUNetSegmentLib.pipeline.volumes import open_volume

    oblique = affine_from_spacing(
        (0.8, 0.9, 2.5), origin=(10.0, -20.0, 30.0), direction=rotation(2, 25) @ rotation(0, 10)
    )
    image = image_from_array(volume_array(), oblique)
    compressed = kind in ("gz.nrrd", "z.mha")
    suffix = {"gz.nrrd": "nrrd", "z.mha": "mha"}.get(kind, kind)
    (tmp_path / "3d").mkdir()
    (tmp_path / "4d").mkdir()
    plain, joined = tmp_path / "3d" / f"scan.{suffix}", tmp_path / "4d" / f"scan.{suffix}"
    sitk.WriteImage(image, str(plain), useCompression=compressed)
    sitk.WriteImage(sitk.JoinSeries([image]), str(joined), useCompression=compressed)
    assert sitk.ReadImage(str(joined)).GetSize() == (*volume_array().shape, 1)  # ITK reads it as 4D
    header, plain_header = open_volume(joined), open_volume(plain)
    assert header.stacked == () and header.grid is not None
    assert header.grid.shape == plain_header.grid.shape and np.allclose(header.grid.affine, plain_header.grid.affine)
    volume, expected = read_volume(joined), read_volume(plain)
    assert volume.array.dtype == expected.array.dtype and np.array_equal(volume.array, expected.array)
    assert np.allclose(volume.affine, expected.affine, atol=1e-9) and np.allclose(volume.affine, oblique, atol=1e-6)
    assert np.allclose(volume.grid.spacing, (0.8, 0.9, 2.5)) and np.allclose(
        volume.grid.direction, expected.grid.direction
    )
    assert volume.warnings == expected.warnings
    with pytest.warns(UserWarning, match="the volume is small for this model"):
        result, plain_result = (segment([path], threshold_package(), device="cpu") for path in (joined, plain))
    assert np.array_equal(result.labels, plain_result.labels) and np.allclose(result.affine, plain_result.affine)


def nhdr_of_slices(folder, data_file: str, entries=()):
    """The plain volume as a detached ``scan.nhdr`` whose data lie in one raw file per slice (s001.raw, s002.raw, ...),
    its header line ``data file: DATA_FILE`` followed by the lines ``entries`` (a ``LIST``'s file names)."""
    attached = nrrd_with_line_ending(folder, "type", "")
    text, data = attached.read_bytes().split(b"\n\n", 1)
    attached.unlink()
    count = volume_array().shape[2]  # the slowest axis: one 2D slice per file
    share = len(data) // count
    for index in range(count):
        (folder / f"s{index + 1:03d}.raw").write_bytes(data[index * share : (index + 1) * share])
    path = folder / "scan.nhdr"
    path.write_bytes(text + "\n".join([f"\ndata file: {data_file}", *entries, ""]).encode())
    return path


SLICES = [f"s{index + 1:03d}.raw" for index in range(volume_array().shape[2])]


@pytest.mark.parametrize(
    "data_file", ["s%03d.raw 1 {count} 1 ", "s%03d.raw 1 {count} 1\t", "s%03d.raw 1 {count} 1 2  ", "LIST 2 "]
)
def test_a_data_file_pattern_or_list_dimension_ending_in_blanks_is_read_as_itk_reads_it(tmp_path, data_file):
    """``data file: s%03d.raw 1 N 1 `` (a pattern of numbered files, with or without the files' dimension) or ``data
    file: LIST 2 `` ending in spaces or tabs: ITK's NRRD reader (teem) reads its numbers with any blanks after them
    (measured on ITK 5.4). Before (reviewsmall4): refused as if the line were a file name ("its header line 'data
    file:' ends in spaces or tabs, which the image reader (ITK) cannot read"). Now read, as ITK and Slicer read it."""
    path = nhdr_of_slices(tmp_path, data_file.format(count=len(SLICES)), SLICES if "LIST" in data_file else ())
    assert sitk.ReadImage(str(path)).GetSize() == volume_array().shape  # ITK reads it
    volume = read_volume(path)
    assert np.array_equal(volume.array, volume_array()) and np.allclose(volume.affine, AFFINE, atol=1e-6)


@pytest.mark.parametrize(
    "entries, shown",
    [
        ([*SLICES[:-1], SLICES[-1] + " "], SLICES[-1] + " "),
        ([SLICES[0] + "\t", *SLICES[1:]], "s001.raw\t"),
        ([" " + SLICES[0], *SLICES[1:]], " s001.raw"),
        ([*SLICES[:3], "", *SLICES[3:]], ""),
    ],
)
def test_a_data_file_list_entry_with_blanks_or_an_empty_line_is_refused_from_the_header(
    tmp_path, monkeypatch, entries, shown
):
    """A ``data file: LIST`` entry with a space or tab at either end, or an empty line among them (a hand-edited
    header): ITK's NRRD reader takes each line whole as a file name ("couldn't open "./s007.raw "", "expected 7
    filenames but got 8"). Before (reviewsmall4): our header parse stripped them and dropped empty lines, checked the
    files so named, then gave ITK's words. Now refused from the header, naming the line, before any voxel is read."""
    assert_refused_from_the_header_where_itk_fails(
        nhdr_of_slices(tmp_path, "LIST", entries),
        monkeypatch,
        f"scan.nhdr: its data file list has the line {shown!r}, with spaces or tabs at an end or nothing else, which "
        "the image reader (ITK) reads as a file name",
        "give one file name a line, without spaces or tabs around it, or export it again",
    )


def test_a_size_one_time_axis_in_a_3d_space_is_refused_from_the_header_as_itk_cannot_read_it(tmp_path, monkeypatch):
    """A NRRD of three space axes and a 4th of kind ``time`` and size 1 in a 3D space (``space: LPS``, its direction
    ``none``): ITK's NRRD reader refuses four domain axes in a 3D space ("number of domain axes in the NRRD file (4)
    doesn't match dimension of space"). Before (reviewsmall4): a time axis was let through for its own refusal as a
    time series, which a size of 1 escapes: the data were checked, then ITK's words. Now refused from the header, as
    four domain axes of any other kind are."""
    from helpers.readers import refuse_reading

    array = volume_array()
    lps = np.diag([-1.0, -1.0, 1.0]) @ AFFINE[:3, :3]
    sizes = " ".join(map(str, (*array.shape, 1)))
    kinds = "space space space time"
    text = nrrd_text(array, "space: LPS\n", [*lps.T, "none"], AFFINE[:3, 3], kinds=kinds, sizes=sizes)
    path = tmp_path / "scan.nrrd"
    path.write_bytes(text.encode() + b"encoding: raw\n\n" + array.astype("<i2").tobytes("F"))
    with pytest.raises(RuntimeError, match="number of domain axes"):
        sitk.ReadImage(str(path))
    refuse_reading(monkeypatch)
    with pytest.raises(InputError, match="^scan.nrrd has 4 domain axes in a 3D space, which the image reader"):
        open_image(path)


def mhd_of_slices(folder, entries):
    """The plain volume as ``scan.mhd`` with ``ElementDataFile = LIST`` and the lines ``entries`` (its slices' files,
    m001.raw, m002.raw, ..., written here)."""
    array = volume_array()
    data = array.astype("<i2").tobytes("F")
    share = len(data) // array.shape[2]
    for index in range(array.shape[2]):
        (folder / f"m{index + 1:03d}.raw").write_bytes(data[index * share : (index + 1) * share])
    fields = ["ObjectType = Image", "NDims = 3", "BinaryData = True", "BinaryDataByteOrderMSB = False"]
    fields += [f"DimSize = {' '.join(map(str, array.shape))}", "ElementType = MET_SHORT", "ElementDataFile = LIST"]
    path = folder / "scan.mhd"
    path.write_text("\n".join([*fields, *entries, ""]))
    return path


MHD_SLICES = [f"m{index + 1:03d}.raw" for index in range(volume_array().shape[2])]


@pytest.mark.parametrize(
    "entries, shown",
    [([" " + MHD_SLICES[0], *MHD_SLICES[1:]], " m001.raw"), ([*MHD_SLICES[:3], "", *MHD_SLICES[3:]], "")],
)
def test_a_metaimage_list_entry_that_starts_with_a_blank_or_is_empty_is_refused_from_the_header(
    tmp_path, monkeypatch, entries, shown
):
    """``ElementDataFile = LIST`` names of which one starts with a space, or an empty line among them: ITK's MetaIO
    trims a name's end but not its start, and takes an empty line for the folder ("Reason: No such file or directory",
    "Reason: Is a directory", with MetaIO's lines on stderr). Before (reviewsmall4): our parse stripped each name and
    dropped empty lines, checked the files so named, then gave ITK's words. Now refused from the header, naming the
    line; blanks after a name and empty lines after the last are read, as MetaIO reads them."""
    volume = read_volume(mhd_of_slices(tmp_path, [MHD_SLICES[0] + " \t", *MHD_SLICES[1:], "", ""]))
    assert np.array_equal(volume.array, volume_array())  # blanks after a name, empty lines after the last: read
    assert_refused_from_the_header_where_itk_fails(
        mhd_of_slices(tmp_path, entries),
        monkeypatch,
        f"scan.mhd: its data file list has the line {shown!r}, which the image reader (ITK) cannot open as a file",
        "give one file name a line, without spaces or tabs before it, or export it again",
    )
