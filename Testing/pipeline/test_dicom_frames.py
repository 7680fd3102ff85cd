"""Enhanced (multi-frame) DICOM files as Siemens, Philips and GE scanners and PACS exports write them: every value
checked against an independent computation from what the test wrote: HU = stored x slope + intercept of each frame,
voxel positions from each frame's PlanePositionSequence, spacing from its PixelMeasuresSequence."""

import numpy as np
import pytest
from helpers.readers import dicom_array, write_dicom_series, write_enhanced_ct
from TokenUNetSegmentLib.pipeline.errors import InputError
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing
from TokenUNetSegmentLib.pipeline.volumes import read_volume

STORED = dicom_array() * 7 % 3000  # (k, j, i): 12 frames of 16 x 20 stored values 0 to 2999, distinct per frame
AFFINE = affine_from_spacing((0.8, 0.8, 2.5), direction=np.diag([-1.0, -1.0, 1.0]))  # LPS axes in RAS, z from 0


def hounsfield(stored: np.ndarray, rescales) -> np.ndarray:
    """stored x slope + intercept of each frame k, (k, j, i), in float64."""
    return np.stack([stored[k] * slope + intercept for k, (slope, intercept) in enumerate(rescales)])


def outside_the_circle() -> np.ndarray:
    """The (j, i) pixels of a frame outside the scanner's circular field of view."""
    rows, columns = STORED.shape[1:]
    jj, ii = np.mgrid[:rows, :columns]
    return (jj - rows / 2 + 0.5) ** 2 + (ii - columns / 2 + 0.5) ** 2 > (rows / 2) ** 2


def short_line(error: InputError) -> None:
    line = f"error: {error}"
    assert "\n" not in line and len(line) <= 200, line


def refused_by_segment(path, tmp_path, capsys) -> str:
    """The command line's stderr on ``path``: exit 2, no traceback, no output folder."""
    from TokenUNetSegmentLib.pipeline import cli

    out = tmp_path / "out"
    assert cli.main(["segment", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and not out.exists()
    return err


SIEMENS = [(1, -1024)] * 12  # unsigned stored values, intercept -1024
HALVES = [(1, -1024)] * 6 + [(0.5, -1000)] * 6  # two rescales in one file (a merged export)
EVERY_FRAME = [(1 + (k % 3) * 0.25, -1024 + 10 * k) for k in range(12)]  # each frame rescaled to its own range


@pytest.mark.parametrize(
    ("shared", "rescales", "order"),
    [
        (True, SIEMENS, None),
        (True, [(0.5, -1024)] * 12, None),
        (False, SIEMENS, None),
        (False, HALVES, None),
        (False, EVERY_FRAME, None),
        (False, EVERY_FRAME, [5, 0, 11, 3, 7, 1, 9, 2, 10, 4, 8, 6]),
    ],
    ids=["shared", "shared-slope", "per-frame-same", "per-frame-halves", "per-frame-each", "per-frame-each-shuffled"],
)
def test_an_enhanced_ct_reads_each_frames_hounsfield_units(tmp_path, shared, rescales, order):
    """Before: GDCM applies the shared rescale, or else the first frame's, to every frame: with two rescales in one
    file the second half read up to 1293 HU off (stored x 1 - 1024 where stored x 0.5 - 1000 was declared)."""
    path = write_enhanced_ct(
        tmp_path / "ct" / "ENH.dcm",
        STORED,
        unsigned=True,
        rescale=rescales[0] if shared else (1, 0),
        frame_rescales=None if shared else rescales,
        order=order,
    )
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.array, hounsfield(STORED, rescales).transpose(2, 1, 0))
    np.testing.assert_allclose(volume.affine, AFFINE, atol=1e-6)
    assert volume.warnings == []


def test_a_frame_with_rescale_slope_zero_is_refused(tmp_path):
    """GDCM reads a slope of 0 as 1; pydicom's modality LUT makes every value the intercept: no HU to read."""
    rescales = SIEMENS[:4] + [(0, -1024)] + SIEMENS[5:]
    path = write_enhanced_ct(tmp_path / "ct" / "ENH.dcm", STORED, unsigned=True, frame_rescales=rescales)
    with pytest.raises(InputError, match=r"frame 5 of ENH.dcm in ct has RescaleSlope 0") as error:
        read_volume(path)
    short_line(error.value)


@pytest.mark.parametrize(
    ("padding", "unsigned", "rescales"),
    [
        (63536, True, SIEMENS),  # GE: unsigned, padding 63536, intercept -1024
        ((4000, 4095), True, SIEMENS),  # PixelPaddingRangeLimit: a range of stored values
        (63536, True, HALVES),  # a rescale of its own per frame: padding is a stored value, each frame's HU
        (-2000, False, [(1, 0)] * 12),  # already the lowest value: kept
    ],
    ids=["ge", "range", "per-frame-rescale", "lowest"],
)
def test_pixel_padding_in_an_enhanced_ct_reads_as_the_lowest_value(tmp_path, padding, unsigned, rescales):
    """Before: PixelPaddingValue was compared with the values GDCM read without the frames' rescale: a GE-style
    63536 (62512 HU) stayed a bright ring around the body."""
    outside = outside_the_circle()
    stored = STORED.astype(np.int64) + 100  # body 100 to 3099: clear of the 4000-4095 padding range
    low, high = padding if isinstance(padding, tuple) else (padding, padding)
    stored[:, outside] = low + np.arange(np.count_nonzero(outside)) % (high - low + 1)  # every value of the range
    path = write_enhanced_ct(
        tmp_path / "ct" / "ENH.dcm", stored, unsigned=unsigned, frame_rescales=rescales, padding=padding
    )
    array = read_volume(path).array.transpose(2, 1, 0)  # (k, j, i)
    body = hounsfield(stored, rescales)
    np.testing.assert_array_equal(array[:, ~outside], body[:, ~outside])
    lowest = body[:, ~outside].min()
    assert np.all(array[:, outside] == (lowest if unsigned else -2000))


def test_frames_stored_in_any_order_are_placed_by_their_positions(tmp_path):
    """Before: frames in an order other than along their normal (both ways) were refused ("placed the frames ...
    elsewhere than their headers say")."""
    order = [5, 0, 11, 3, 7, 1, 9, 2, 10, 4, 8, 6]
    volume = read_volume(write_enhanced_ct(tmp_path / "ct" / "ENH.dcm", STORED, order=order))
    np.testing.assert_array_equal(volume.array, STORED.transpose(2, 1, 0))
    np.testing.assert_allclose(volume.affine, AFFINE, atol=1e-6)


def test_a_legacy_converted_enhanced_ct_reads_each_frames_hounsfield_units(tmp_path):
    """The legacy converted class (a PACS's conversion of a classic series) is read as an enhanced CT."""
    path = write_enhanced_ct(
        tmp_path / "ct" / "ENH.dcm",
        STORED,
        unsigned=True,
        frame_rescales=HALVES,
        sop_class="1.2.840.10008.5.1.4.1.1.2.2",
    )
    np.testing.assert_array_equal(read_volume(path).array, hounsfield(STORED, HALVES).transpose(2, 1, 0))


PHASES = np.concatenate([STORED, STORED + 500])  # two phases of 12 frames at the same 12 positions
AT_TWICE = [2.5 * (k % 12) for k in range(24)]


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        (
            [{"FrameContentSequence": {"TemporalPositionIndex": 1 + k // 12}} for k in range(24)],
            r"ENH.dcm holds 2 temporal positions \(TemporalPositionIndex 1, 2\) of 12 frames each",
        ),
        (
            [{"FrameContentSequence": {"StackID": str(1 + k // 12)}} for k in range(24)],
            r"ENH.dcm holds 2 stacks \(StackID 1, 2\) of 12 frames each",
        ),
        (
            [{"MREchoSequence": {"EffectiveEchoTime": 10.0 if k < 12 else 80.0}} for k in range(24)],
            r"ENH.dcm holds 2 echoes \(EffectiveEchoTime 10, 80\) of 12 frames each",
        ),
    ],
    ids=["multi-phase-ct", "stacks", "echoes"],
)
def test_a_file_holding_several_volumes_is_refused_naming_them(tmp_path, capsys, groups, message):
    """A multi-phase CT (arterial and venous phases at the same positions), an MR with two stacks or two echoes
    in one file. Before: refused as "has 12 slice(s) at the same position as another", not saying why."""
    path = write_enhanced_ct(tmp_path / "ct" / "ENH.dcm", PHASES, positions=AT_TWICE, frame_groups=groups)
    with pytest.raises(InputError, match=message + ": several volumes in one file") as error:
        read_volume(path)
    short_line(error.value)
    assert "save the one to segment on its own" in str(error.value)
    refused_by_segment(path, tmp_path, capsys)


def test_frames_at_the_same_position_without_what_tells_them_apart_are_refused(tmp_path):
    path = write_enhanced_ct(tmp_path / "ct" / "ENH.dcm", PHASES, positions=AT_TWICE)
    with pytest.raises(InputError, match=r"has 12 slice\(s\) at the same position as another") as error:
        read_volume(path)
    short_line(error.value)


def test_frames_that_differ_in_orientation_or_pixel_spacing_are_refused_naming_them(tmp_path):
    orientations = [(1, 0, 0, 0, 1, 0)] * 6 + [(1, 0, 0, 0, 0, -1)] + [(1, 0, 0, 0, 1, 0)] * 5
    path = write_enhanced_ct(tmp_path / "o" / "ENH.dcm", STORED, frame_orientations=orientations)
    with pytest.raises(InputError, match=r"mixes slice orientations \(ENH.dcm frame 1, ENH.dcm frame 7\)"):
        read_volume(path)
    spacings = [(0.8, 0.8)] * 6 + [(0.5, 0.5)] * 6
    path = write_enhanced_ct(tmp_path / "s" / "ENH.dcm", STORED, frame_spacings=spacings)
    with pytest.raises(
        InputError, match=r"mixes pixel spacings \(0.8 x 0.8 mm in ENH.dcm frame 1, 0.5 x 0.5 mm in ENH.dcm frame 7\)"
    ) as error:
        read_volume(path)
    short_line(error.value)


def test_the_frames_own_pixel_spacing_and_positions_give_the_grid(tmp_path):
    """Pixel spacing in each frame's PixelMeasuresSequence (no shared one); the slice step from the positions,
    3 mm, whatever SliceThickness (2.5) says."""
    path = write_enhanced_ct(
        tmp_path / "ct" / "ENH.dcm", STORED, frame_spacings=[(0.7, 0.6)] * 12, positions=[3.0 * k for k in range(12)]
    )
    volume = read_volume(path)
    np.testing.assert_allclose(np.linalg.norm(volume.affine[:3, :3], axis=0), (0.7, 0.6, 3.0), atol=1e-6)
    np.testing.assert_array_equal(volume.array, STORED.transpose(2, 1, 0))


@pytest.mark.parametrize(
    ("sop_class", "legacy", "modality", "message"),
    [
        ("1.2.840.10008.5.1.4.1.1.7.3", False, "CT", r"MF.dcm is a secondary capture: a picture made from images"),
        ("1.2.840.10008.5.1.4.1.1.7.3", True, "OT", r"MF.dcm is a secondary capture"),
        ("1.2.840.10008.5.1.4.1.1.481.2", True, "RTDOSE", r"MF.dcm is an RT dose grid: the radiation dose"),
        ("1.2.840.10008.5.1.4.1.1.3.1", True, "US", r"MF.dcm is a multi-frame Ultrasound Multi-frame Image file"),
        ("1.2.840.10008.5.1.4.1.1.66.4", False, "SEG", r"MF.dcm is a segmentation: labels drawn on a scan"),
    ],
    ids=["secondary-capture-with-frames", "secondary-capture", "rt-dose", "ultrasound-cine", "segmentation"],
)
def test_a_multi_frame_file_that_is_no_scan_volume_is_refused_plainly(
    tmp_path, capsys, sop_class, legacy, modality, message
):
    """A screenshot stack, an RT dose grid, a cine loop or a segmentation given to a CT model. Before: a secondary
    capture with frame positions was read as a CT (GDCM placed it by them); an RT dose was refused as "does not say how
    far apart its frames are", and an ultrasound cine read as a volume. A DICOM SEG with its frames' positions (as
    pydicom-data's real liver.dcm, 3 frames) was refused as "a multi-frame Segmentation file: its frames are not known
    to be one volume's slices (e.g. a cine loop)"."""
    path = write_enhanced_ct(
        tmp_path / "x" / "MF.dcm", STORED, sop_class=sop_class, legacy=sop_class if legacy else None, modality=modality
    )
    with pytest.raises(InputError, match=message) as error:
        read_volume(path)
    short_line(error.value)
    assert "MF.dcm is a" in refused_by_segment(path, tmp_path, capsys)


def test_an_enhanced_mr_without_functional_groups_is_refused_saying_so(tmp_path, capsys):
    """pydicom-data's real emri_small.dcm (and its RLE, JPEG 2000, JPEG-LS, big endian copies): an enhanced MR of 10
    frames whose shared and per-frame functional groups were stripped, so no frame has a position. Rebuilt here as an
    enhanced MR without them. Before: "has frames without a position or orientation (this is not a volume (e.g. a cine
    loop or a screenshot) ...)": it is an MR volume, whose headers lack what places its slices."""
    import pydicom

    path = write_enhanced_ct(tmp_path / "x" / "MR.dcm", STORED, sop_class="1.2.840.10008.5.1.4.1.1.4.1", modality="MR")
    ds = pydicom.dcmread(path)
    del ds.SharedFunctionalGroupsSequence, ds.PerFrameFunctionalGroupsSequence
    ds.save_as(path)
    message = r"^MR.dcm is an enhanced MR without functional groups: no frame has a position or orientation"
    with pytest.raises(InputError, match=message) as error:
        read_volume(path)
    short_line(error.value)
    assert "MR.dcm is an enhanced MR without functional groups" in refused_by_segment(path, tmp_path, capsys)


@pytest.mark.parametrize("unsigned", [True, False])
def test_a_rescale_gdcm_applies_otherwise_than_expected_is_caught_not_read_as_wrong_units(
    tmp_path, monkeypatch, unsigned
):
    """Which rescale GDCM applies to a multi-frame file (the shared group's, else the first frame's) comes from its
    source: a SimpleITK whose GDCM applied another would give wrong HU without a word. Checked at run time on the
    first frame of an uncompressed file, its stored values read from the file (1-2 ms on 512 x 512 x 200 frames).
    Here the expected rule is made wrong (as if GDCM applied none): refused, not 1024 HU off. With the right rule the
    same file reads its HU (the real Philips MR and enhanced CT of pydicom-data pass the check)."""
    from TokenUNetSegmentLib.pipeline.readers import dicom_frames

    rescales = [(1, -1024)] * 6 + [(0.5, -1000)] * 6
    path = write_enhanced_ct(tmp_path / "x" / "ENH.dcm", STORED, unsigned=unsigned, frame_rescales=rescales)
    np.testing.assert_allclose(read_volume(path).array, hounsfield(STORED, rescales).transpose(2, 1, 0), atol=1e-3)
    monkeypatch.setattr(dicom_frames, "gdcm_rescale", lambda shared, groups: (1.0, 0.0))
    with pytest.raises(InputError, match=r"^the DICOM reader rescaled ENH.dcm otherwise than expected") as error:
        read_volume(path)
    short_line(error.value)


def test_an_enhanced_ct_whose_values_are_not_hounsfield_units_says_so(tmp_path):
    """pydicom-data's real eCT_Supplemental.dcm: an enhanced CT of 2 frames that is a perfusion map (ImageType
    DERIVED\\PRIMARY\\PERFUSION\\RCBF, RescaleType US, a real-world value mapping to ml/100ml/s). Its stored values
    with intercept -1024 look like HU, and `segment` ran on it with exit 0, no flag on its intensities. Rebuilt: read
    as it is, with a warning that its values are not Hounsfield units; a RescaleType HU gives none."""
    import pydicom

    path = write_enhanced_ct(tmp_path / "x" / "ENH.dcm", STORED, unsigned=True, rescale=(1, -1024))
    assert read_volume(path).warnings == []
    ds = pydicom.dcmread(path)
    ds.ImageType = ["DERIVED", "PRIMARY", "PERFUSION", "RCBF"]
    ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0].RescaleType = "US"
    ds.save_as(path)
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.array, (STORED.astype(np.int32) - 1024).transpose(2, 1, 0))
    assert volume.warnings == [
        "the values of ENH.dcm are not Hounsfield units (RescaleType US; ImageType DERIVED\\PRIMARY\\PERFUSION\\RCBF): "
        "a CT model reads them as if they were"
    ]


def test_a_gantry_tilted_enhanced_ct_is_resampled_as_a_tilted_series_is(tmp_path):
    """Frames shifted in plane by a steady step (a tilted gantry), each with its own rescale. Before: refused,
    "shifted in plane from slice to slice". Read as the same frames written as a classic series with the stored
    values' HU: equal voxel for voxel, on the same grid."""
    shift = [(0.0, 0.6 * k) for k in range(12)]  # 0.6 mm per 2.5 mm slice: 13.5 degrees
    rescales = [(1 + k % 2, -1024 + 10 * k) for k in range(12)]  # whole HU: a classic series' int16 holds them
    path = write_enhanced_ct(
        tmp_path / "enh" / "ENH.dcm",
        STORED,
        unsigned=True,
        frame_rescales=rescales,
        origins=shift,
        order=range(11, -1, -1),
    )
    classic = read_volume(
        write_dicom_series(tmp_path / "classic", hounsfield(STORED, rescales), origin=shift)[0].parent
    )
    volume = read_volume(path)
    np.testing.assert_allclose(volume.affine, classic.affine, atol=1e-6)
    np.testing.assert_allclose(volume.array, classic.array, atol=1e-3)
    assert any("ENH.dcm are tilted by 13.5 degrees (a gantry tilt)" in w for w in volume.warnings)


def test_the_grid_a_tilted_enhanced_ct_declares_is_the_grid_read(tmp_path):
    from TokenUNetSegmentLib.pipeline.volumes import open_input

    shift = [(0.5 * k, 0.0) for k in range(12)]
    opened = open_input(write_enhanced_ct(tmp_path / "ct" / "ENH.dcm", STORED, origins=shift))
    volume = opened()
    assert opened.grid.shape == volume.grid.shape == (20 + 7, 16, 12)
    assert opened.values == volume.array.size


def test_a_series_of_one_frame_enhanced_files_is_read_as_a_series(tmp_path):
    """Siemens XA-style exports: a series of enhanced CT/MR files of one frame each, their position and rescale in
    functional groups (here two rescales, and GE-style padding). Before: refused, "has no position or orientation
    (this is not a volume series (e.g. a screenshot ...": the top-level tags a classic slice has are not there."""
    outside = outside_the_circle()
    stored = STORED.astype(np.int64)
    stored[:, outside] = 63536
    for k in range(12):
        write_enhanced_ct(
            tmp_path / "ct" / f"E{k:03d}.dcm",
            stored[k : k + 1],
            unsigned=True,
            frame_rescales=HALVES[k : k + 1],
            positions=[2.5 * k],
            instance=k + 1,
            padding=63536,
        )
    volume = read_volume(tmp_path / "ct")
    array, body = volume.array.transpose(2, 1, 0), hounsfield(stored, HALVES)
    np.testing.assert_array_equal(array[:, ~outside], body[:, ~outside])
    assert np.all(array[:, outside] == body[:, ~outside].min())
    np.testing.assert_allclose(volume.affine, AFFINE, atol=1e-6)
    assert volume.warnings == []


def test_two_phases_whose_frames_interleave_into_a_regular_grid_are_refused(tmp_path):
    """Phase 1 at 0, 5, 10 ... mm and phase 2 at 2.5, 7.5 ... mm make one regular 2.5 mm grid: before, read as one
    volume that alternates between the phases' contrast from slice to slice."""
    groups = [{"FrameContentSequence": {"TemporalPositionIndex": 1 + k % 2}} for k in range(12)]
    path = write_enhanced_ct(tmp_path / "ct" / "ENH.dcm", STORED, frame_groups=groups)
    with pytest.raises(InputError, match=r"ENH.dcm holds 2 temporal positions \(TemporalPositionIndex 1, 2\) of 6"):
        read_volume(path)


def test_a_compressed_enhanced_ct_with_its_rescale_in_the_file_itself_reads_in_hounsfield_units(tmp_path):
    """RLE-compressed frames (GDCM decodes them), each frame's own rescale, frames out of order; and a file whose
    only rescale is its top-level RescaleSlope / RescaleIntercept (no functional group gives one)."""
    import pydicom
    from pydicom.uid import RLELossless

    order = [3, 1, 2, 0, 4, 5, 6, 7, 8, 9, 11, 10]
    path = write_enhanced_ct(
        tmp_path / "rle" / "ENH.dcm", STORED, unsigned=True, frame_rescales=EVERY_FRAME, order=order
    )
    ds = pydicom.dcmread(path)
    ds.compress(RLELossless)
    ds.save_as(path)
    np.testing.assert_array_equal(read_volume(path).array, hounsfield(STORED, EVERY_FRAME).transpose(2, 1, 0))
    path = write_enhanced_ct(tmp_path / "top" / "ENH.dcm", STORED, unsigned=True)
    ds = pydicom.dcmread(path)
    del ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.save_as(path)
    np.testing.assert_array_equal(read_volume(path).array, hounsfield(STORED, SIEMENS).transpose(2, 1, 0))


def test_a_damaged_functional_group_is_refused_plainly(tmp_path, capsys):
    """A byte flip in a frame's PlanePositionSequence (its VR SQ read as NQ), found by flipping bytes at random:
    before, pydicom's NotImplementedError reached the user as an internal error with a traceback."""
    path = write_enhanced_ct(tmp_path / "ct" / "ENH.dcm", STORED)
    data = path.read_bytes()
    at = data.index(b"\x20\x00\x13\x91SQ")  # (0020,9113) PlanePositionSequence, explicit VR
    path.write_bytes(data[: at + 4] + b"NQ" + data[at + 6 :])
    with pytest.raises(InputError, match=r"the DICOM file ENH.dcm in ct cannot be read") as error:
        read_volume(path)
    short_line(error.value)
    refused_by_segment(path, tmp_path, capsys)


def dimension_indices(path, pointers, values):
    """Give the file a DimensionIndexSequence of ``pointers`` (tags) and frame k the DimensionIndexValues
    ``values[k]`` (frames in file order)."""
    import pydicom
    from pydicom.dataset import Dataset

    ds = pydicom.dcmread(path)
    ds.DimensionIndexSequence = [Dataset() for _ in pointers]
    for item, pointer in zip(ds.DimensionIndexSequence, pointers, strict=True):
        item.DimensionIndexPointer = pointer
    for frame, value in zip(ds.PerFrameFunctionalGroupsSequence, values, strict=True):
        frame.FrameContentSequence = [Dataset()]
        frame.FrameContentSequence[0].DimensionIndexValues = list(value)
    ds.save_as(path)
    return path


def test_a_time_dimension_index_that_splits_the_frames_into_volumes_is_refused(tmp_path):
    """A dimension that is time (TriggerTime, 0018,1060) indexing two volumes at the same positions, with no
    TemporalPositionIndex; a per-frame acquisition counter (one value per frame) and a stack with its in-stack
    positions (the usual single volume) are read."""
    trigger, in_stack, stack, counter = 0x00181060, 0x00209057, 0x00209056, 0x00209156
    path = write_enhanced_ct(tmp_path / "ct" / "ENH.dcm", PHASES, positions=AT_TWICE)
    dimension_indices(path, [trigger, in_stack], [(1 + k // 12, 1 + k % 12) for k in range(24)])
    with pytest.raises(InputError, match=r"holds 2 volumes \(dimension index TriggerTime 1, 2\) of 12 frames each"):
        read_volume(path)
    path = dimension_indices(
        write_enhanced_ct(tmp_path / "one" / "ENH.dcm", STORED),
        [stack, in_stack, counter],
        [(1, 1 + k, 1 + k) for k in range(12)],
    )
    np.testing.assert_array_equal(read_volume(path).array, STORED.transpose(2, 1, 0))
