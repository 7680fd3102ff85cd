"""Every bad input gets a clear, typed error (or a warning where the issue asks to run anyway)."""

import itertools
import re
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
from helpers.packages import ball_phantom, dice, threshold_package
from TokenUNetSegmentLib.pipeline.errors import InputError, ModelPackageError, TokenUNetError
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing, image_from_array
from TokenUNetSegmentLib.pipeline.segmentation import segment
from TokenUNetSegmentLib.pipeline.volumes import read_volume

GOOD = ball_phantom((20, 20, 20), (10, 10, 10), (5, 5, 5))


def run(inputs, package=None):
    return segment(inputs, package or threshold_package(), device="cpu")


def test_errors_are_typed_and_carry_hints():
    error = InputError("what failed", "what to do")
    assert isinstance(error, TokenUNetError) and str(error) == "what failed (what to do)" and error.hint == "what to do"


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="input not found: .*nothere.nii.gz"):
        run(tmp_path / "nothere.nii.gz")


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match="unsupported file type '.png'"):
        run(path)


def test_unreadable_file(tmp_path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"not an image")
    with pytest.raises(InputError, match="broken.nii.gz is not a valid NIfTI file"):
        run(path)


def test_folder_without_dicom(tmp_path):
    with pytest.raises(InputError, match="without a DICOM series"):
        run(tmp_path)


def test_2d_image_array_and_file(tmp_path):
    with pytest.raises(InputError, match="2D image"):
        run((np.zeros((20, 20), np.float32), np.eye(4)))
    with pytest.raises(InputError, match="2D image"):
        run((np.zeros((20, 20, 1), np.float32), np.eye(4)))
    path = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.Image(20, 20, sitk.sitkInt16), str(path))
    with pytest.raises(InputError, match="2D image"):
        read_volume(path)


def test_4d_image_array_and_file(tmp_path):
    with pytest.raises(InputError, match="4 dimensions"):
        run((np.zeros((10, 10, 10, 3), np.float32), np.eye(4)))
    path = tmp_path / "series.nii.gz"
    sitk.WriteImage(sitk.Image([6, 6, 6, 2], sitk.sitkFloat32), str(path))
    with pytest.raises(InputError, match=r"holds 2 volumes \(a 4D image\); model .* takes one 3D volume"):
        run(path)  # from its header (test_four_d_inputs.py)


def test_wrong_number_of_channels():
    with pytest.raises(InputError, match="needs 1 input channel.*got 2"):
        run([(GOOD, np.eye(4)), (GOOD, np.eye(4))])
    with pytest.raises(InputError, match="needs 2 input channel.*got 1"):
        run([(GOOD, np.eye(4))], threshold_package(in_channels=2))


def test_channels_that_do_not_overlap_in_physical_space():
    far = affine_from_spacing((1, 1, 1), origin=(500, 0, 0))
    with pytest.raises(InputError, match="does not overlap"):
        run([(GOOD, np.eye(4)), (GOOD, far)], threshold_package(in_channels=2))


def test_image_smaller_than_the_window_is_padded():
    with pytest.warns(UserWarning, match="small for this model"):
        result = run((ball_phantom((6, 5, 4), (3, 2, 2), (2, 2, 2)), np.eye(4)))
    assert result.labels.shape == (6, 5, 4) and result.labels.sum() > 0


def test_constant_image_warns_and_runs():
    with pytest.warns(UserWarning, match="constant"):
        result = run((np.zeros((20, 20, 20), np.float32), np.eye(4)))
    assert result.labels.shape == (20, 20, 20) and not result.labels.any()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_voxels(bad):
    image = GOOD.copy()
    image[3, 4, 5] = bad
    with pytest.raises(InputError, match="1 NaN or infinite voxels"):
        run((image, np.eye(4)))


def test_zero_or_negative_spacing(tmp_path):
    with pytest.raises(InputError, match="zero voxel spacing"):
        run((GOOD, np.diag([1.0, 0.0, 1.0, 1.0])))
    with pytest.raises(InputError, match="zero or negative spacing"):
        affine_from_spacing((1.0, -1.0, 1.0))
    with pytest.raises(InputError, match="not orthogonal"):
        run((GOOD, np.array([[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float)))
    # a header with a zero spacing (written by hand: writers refuse it)
    path = tmp_path / "zero.nhdr"
    (tmp_path / "zero.raw").write_bytes(np.zeros(8 * 8 * 8, np.int16).tobytes())
    path.write_text(
        "NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 8 8 8\n"
        "space directions: (1,0,0) (0,0,0) (0,0,1)\nkinds: domain domain domain\nendian: little\n"
        "encoding: raw\nspace origin: (0,0,0)\ndata file: zero.raw\n"
    )
    with pytest.raises(InputError, match="spacing|cannot read"):
        run(path)


def test_unsupported_input_object():
    with pytest.raises(InputError, match="unsupported input"):
        run([{"array": GOOD}])


def test_unknown_model_id(tmp_path):
    from TokenUNetSegmentLib.pipeline.catalog import ModelStore

    with pytest.raises(ModelPackageError, match="unknown model id 'no-such-model'"):
        segment((GOOD, np.eye(4)), "no-such-model", store=ModelStore(tmp_path / "c.json", tmp_path / "home"))


def test_bad_overlap_and_device():
    with pytest.raises(InputError, match="overlap"):
        segment((GOOD, np.eye(4)), threshold_package(), device="cpu", overlap=1.5)
    with pytest.raises(InputError, match="label_interpolation"):
        segment((GOOD, np.eye(4)), threshold_package(), device="cpu", label_interpolation="cubic")
    with pytest.raises(TokenUNetError, match="unknown device .tpu."):
        segment((GOOD, np.eye(4)), threshold_package(), device="tpu")


def test_sitk_writes_int_images_we_read_back(tmp_path):
    path = tmp_path / "ok.nrrd"
    sitk.WriteImage(image_from_array(GOOD.astype(np.int16), np.eye(4)), str(path))
    assert read_volume(path).array.shape == (20, 20, 20)


@pytest.mark.parametrize("dtype", [bool, np.float16, np.int64, np.uint8, np.float64])
def test_any_real_voxel_type_is_accepted(dtype):
    image = (GOOD > 0).astype(dtype) if dtype is bool else ((GOOD > 0) * 200).astype(dtype)
    result = run((image, np.eye(4)))
    assert result.labels.shape == GOOD.shape
    if dtype is not bool:  # 200 is inside the CT window: the threshold model finds the ball
        assert result.labels.sum() > 0


def test_inputs_by_channel_name():
    package = threshold_package(in_channels=2, channel=1)
    result = segment({"ch1": (GOOD, np.eye(4)), "ch0": (-GOOD, np.eye(4))}, package, device="cpu")
    assert dice(result.labels == 1, GOOD > 0) > 0.8  # the ball of ch1 (the channel the network reads)
    with pytest.raises(InputError, match="missing: ch1"):
        segment({"ch0": (GOOD, np.eye(4))}, package, device="cpu")
    with pytest.raises(InputError, match="unknown: t2"):
        segment({"ch0": (GOOD, np.eye(4)), "ch1": (GOOD, np.eye(4)), "t2": (GOOD, np.eye(4))}, package, device="cpu")


# --- the checked readers behind segment, evaluate and train (issue 11, part 2) ---------------------------


def test_a_small_volume_warns_that_anatomy_may_be_missing():
    """4 slices of 1 mm where the test model looks at 64 mm windows (32 voxels of 2 mm)."""
    with pytest.warns(UserWarning, match=r"small for this model \(20 x 20 x 4 voxels, 20 x 20 x 4 mm; .* 64 mm"):
        result = run((GOOD[:, :, 8:12], np.eye(4)))
    assert any("small for this model" in w for w in result.warnings)
    assert not [w for w in run((GOOD, np.eye(4))).warnings if "small" in w]  # 20 mm cube: a quarter window or more


def test_reader_warnings_reach_the_result_and_report_json(tmp_path, capsys):
    import json

    from helpers.packages import make_package, tiny_config
    from helpers.readers import write_dicom_series
    from TokenUNetSegmentLib.pipeline import cli

    folder = tmp_path / "ct"
    pixels = np.full((40, 40, 40), -1000, np.int16)
    pixels[10:30, 10:30, 10:30] = 200
    write_dicom_series(folder, pixels, spacing=(1.0, 1.0, 1.0))
    write_dicom_series(folder, pixels[:3], series="1.2.826.0.1.3680043.2.1125.1.9", description="scout", prefix="S")
    expected = "ct holds 2 DICOM series; read the largest, 'test series' (40 files)"
    with pytest.warns(UserWarning, match=r"ct holds 2 DICOM series"):
        result = run(folder)
    assert result.warnings[0].startswith(expected)
    package = make_package(tmp_path, tiny_config(roi=(16, 16, 16)))
    out = tmp_path / "out"
    with warnings.catch_warnings(record=True) as shown:  # before: also shown as a Python UserWarning on stderr,
        warnings.simplefilter("always")  # with a source line, even with --progress json (not a JSON event)
        assert cli.main(["segment", str(folder), "--model", str(package), "--out", str(out), "--no-overview"]) == 0
    assert [str(w.message) for w in shown if expected in str(w.message)] == []
    assert json.loads((out / "report.json").read_text())["warnings"][0].startswith(expected)
    assert capsys.readouterr().err.count(expected) == 1


def _label_file(path, labels, affine, names):
    import json

    sitk.WriteImage(image_from_array(labels, affine), str(path))
    path.with_name(path.name[: -len(".nii.gz")] + ".json").write_text(json.dumps(names))
    return path


def test_evaluate_refuses_a_prediction_that_does_not_overlap_the_reference(tmp_path, capsys):
    """Before: Dice 0 for every label, exit code 0."""
    from TokenUNetSegmentLib.pipeline import cli
    from TokenUNetSegmentLib.pipeline.evaluate import evaluate_files

    labels = (GOOD > 0).astype(np.uint8)
    reference = _label_file(tmp_path / "ref.nii.gz", labels, np.eye(4), {"1": "ball"})
    far = affine_from_spacing((1, 1, 1), origin=(0, 0, 400))
    prediction = _label_file(tmp_path / "pred.nii.gz", labels, far, {"1": "ball"})
    with pytest.raises(InputError, match=r"the prediction \(pred.nii.gz\) does not overlap the reference"):
        evaluate_files(prediction, reference)
    assert cli.main(["evaluate", str(reference), "--prediction", str(prediction)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the prediction") and err.count("\n") == 1 and len(err) <= 201
    # shifted but overlapping: still evaluated
    near = affine_from_spacing((1, 1, 1), origin=(0, 0, 5))
    _label_file(tmp_path / "pred.nii.gz", labels, near, {"1": "ball"})
    assert 0 < evaluate_files(prediction, reference)["labels"]["ball"]["dice"] < 1


def test_evaluate_reports_reader_warnings(tmp_path):
    from helpers.readers import write_dicom_series
    from TokenUNetSegmentLib.pipeline.evaluate import evaluate_files

    labels = (GOOD > 0).astype(np.int16)
    positions = [float(k) + (0.05 if k == 3 else 0.0) for k in range(20)]
    write_dicom_series(tmp_path / "ref", labels.transpose(2, 1, 0), spacing=(1.0, 1.0, 1.0), positions=positions)
    (tmp_path / "names.json").write_text('{"1": "ball"}')
    result = evaluate_files(tmp_path / "ref", tmp_path / "ref", tmp_path / "names.json", tmp_path / "names.json")
    assert result["labels"]["ball"]["dice"] == 1.0
    assert len(result["warnings"]) == 2 and "unevenly spaced" in result["warnings"][0]


def test_train_refuses_a_label_map_that_does_not_overlap_its_image(tmp_path, capsys):
    """Before: trained on background and wrote a package."""
    import json

    from helpers.training_data import train_config, write_dataset
    from TokenUNetSegmentLib.pipeline import cli

    datalist = write_dataset(tmp_path / "data", cases=1, validation=0)
    label = tmp_path / "data" / "case0_seg.nii.gz"
    moved = sitk.ReadImage(str(label))
    moved.SetOrigin((0.0, 0.0, 500.0))
    sitk.WriteImage(moved, str(label))
    config = tmp_path / "config.json"
    config.write_text(json.dumps(train_config()))
    out = tmp_path / "run"
    assert cli.main(["train", str(datalist), "--config", str(config), "--out", str(out), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "case case0: the label map case0_seg.nii.gz does not overlap its image" in err and err.count("\n") == 1
    assert not (out / "package").exists()


@pytest.mark.parametrize("damage", ["truncate", "zero pixdim", "dicom gap", "huge header"])
def test_reader_errors_exit_2_with_one_short_line_from_every_command(tmp_path, capsys, damage):
    import gzip
    import json

    from helpers.packages import make_package, tiny_config
    from helpers.readers import NIFTI_PIXDIM, dicom_array, edit_nifti, write_dicom_series, write_volume
    from helpers.training_data import train_config
    from TokenUNetSegmentLib.pipeline import cli

    if damage == "dicom gap":
        path = tmp_path / "ct"
        write_dicom_series(path, dicom_array())
        (path / "IM0005.dcm").unlink()
    elif damage == "huge header":
        path = tmp_path / "scan.nrrd"
        path.write_bytes(
            b"NRRD0004\ntype: short\ndimension: 3\nsizes: 9000 9000 9000\nencoding: gzip\n\n" + gzip.compress(b"0")
        )
    else:
        path = write_volume(tmp_path, "nii.gz")
        if damage == "truncate":
            path.write_bytes(path.read_bytes()[:300])
        else:
            edit_nifti(path, NIFTI_PIXDIM + 4, "f", 0.0)
    good = write_volume(tmp_path, "nrrd", stem="good")
    names = tmp_path / "names.json"
    names.write_text('{"1": "ball"}')
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"image": str(good), "label": str(path)}]}))
    config = tmp_path / "config.json"
    config.write_text(json.dumps(train_config()))
    package = make_package(tmp_path, tiny_config(roi=(16, 16, 16)))
    commands = [
        ["segment", str(path), "--model", str(package), "--out", str(tmp_path / "o")],
        ["evaluate", str(path), "--prediction", str(good), "--reference-names", str(names)],
        ["evaluate", str(good), "--prediction", str(path), "--reference-names", str(names)],
        ["train", str(datalist), "--config", str(config), "--out", str(tmp_path / "run"), "--steps", "1"],
    ]
    for argv in commands:
        capsys.readouterr()
        code = cli.main(argv)
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and len(err) <= 201, err
        assert "Traceback" not in err and "internal error" not in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "run" / "package").exists()


def test_warnings_reach_the_slicer_module_runner(tmp_path):
    """The module's subprocess run reads report.json back: its result carries the warnings (showing them in
    the panel is the widget's part)."""
    from helpers.packages import make_package, tiny_config
    from TokenUNetSegmentLib.pipeline.run_contract import RunRequest, RunState
    from TokenUNetSegmentLib.pipeline.subprocess_run import SubprocessRun

    package = make_package(tmp_path, tiny_config(roi=(16, 16, 16), spacing=(3.0, 3.0, 3.0)))
    thin = (GOOD[:, :, 8:12], np.eye(4))  # 4 slices of 1 mm
    run = SubprocessRun(RunRequest(inputs=[thin], model=package, device="cpu", with_token_maps=False)).start()
    assert run.wait(timeout=240) == RunState.COMPLETED, run.error
    assert any("small for this model" in message for message in run.result.warnings)
    judged = run.result.assessment  # and the confidence and flags of report.json (the module's warning line)
    assert judged is not None and set(judged.labels) == {"organ1", "organ2"}
    assert all(0.0 <= label.confidence <= 1.0 for label in judged.labels.values()) and judged.summary


def test_non_finite_voxels_are_counted_across_chunks_and_transposed_views():
    """``refuse_non_finite`` counts in chunks (no volume-sized temporary): every NaN and infinity, whichever chunk holds
    it, in an array read as a transposed view (as SimpleITK's arrays are), in the words of what it is read for."""
    from TokenUNetSegmentLib.pipeline.volumes import refuse_non_finite

    array = np.zeros((5, 6, 7), np.float32)
    array[0, 0, 0], array[4, 5, 6], array[2, 3, 4] = np.nan, np.inf, -np.inf
    view = array.transpose(2, 1, 0)
    for chunk in (1, 7, 10, 1 << 22):
        with pytest.raises(InputError, match=r"^v has 3 NaN or infinite voxels \(") as raised:
            refuse_non_finite(view, "v", "training", chunk=chunk)
        assert raised.value.hint.endswith("before training")
    refuse_non_finite(np.zeros((3, 3, 3), np.float64), "v")
    refuse_non_finite(np.full((3, 3, 3), 7, np.int16), "v")


def test_non_finite_voxels_of_one_component_of_a_vector_volume_are_counted_without_copying_it():
    """One component of a Slicer vector volume is a strided view ((k, j, i, n) memory seen as (i, j, k), every n-th
    value): counted in chunks as a whole volume is, all its NaN and infinities and no other component's (before:
    ``np.ravel`` copied the component whole, a temporary of its size at each check; numpy's arrays are traced by
    tracemalloc)."""
    import tracemalloc

    from TokenUNetSegmentLib.pipeline.volumes import refuse_non_finite

    stacked = np.zeros((64, 48, 40, 4), np.float32)  # (k, j, i, n) as arrayFromVolume gives it
    stacked[0, 0, 0, 2], stacked[63, 47, 39, 2], stacked[5, 6, 7, 1] = np.nan, np.inf, np.nan
    component = stacked.transpose(2, 1, 0, 3)[..., 2]
    for chunk in (1, 1000, 1 << 22):
        with pytest.raises(InputError, match=r"^v has 2 NaN or infinite voxels \("):
            refuse_non_finite(component, "v", chunk=chunk)
    clean = stacked.transpose(2, 1, 0, 3)[..., 3]
    tracemalloc.start()
    try:
        refuse_non_finite(clean, "v", chunk=1 << 12)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < clean.size * clean.itemsize / 8, peak


def test_each_value_of_a_volume_is_counted_once_for_nan_and_infinity(tmp_path, monkeypatch):
    """``read_volume`` and ``segment``'s reading (:func:`.volumes.as_volume`) count every float value once, wherever
    that is: a float NIfTI's as it is read (ITK's reader would set them to 0), an NRRD's once read, and a NIfTI whose
    scl_slope makes values infinite once read too; and refuse what they find. Before: a float NIfTI's values were
    counted twice, as read and again (the second count could find nothing: 0.04 s on a 512 x 512 x 300 CT)."""
    import struct

    from TokenUNetSegmentLib.pipeline import volumes
    from TokenUNetSegmentLib.pipeline.readers import payload

    counted = []

    class CountingCounter(payload.NonFiniteCounter):
        def feed(self, data: bytes) -> None:
            begin = self.position
            super().feed(data)
            counted.append(max(0, min(self.stop, self.position) - max(self.start, begin)) / self.dtype.itemsize)

    def counting_refusal(array, *args, **kwargs):
        counted.append(array.size if np.issubdtype(array.dtype, np.floating) else 0)
        return refuse_non_finite(array, *args, **kwargs)

    refuse_non_finite = volumes.refuse_non_finite
    monkeypatch.setattr(payload, "NonFiniteCounter", CountingCounter)
    monkeypatch.setattr(volumes, "refuse_non_finite", counting_refusal)
    values = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    for name in ("v.nii", "v.nii.gz", "v.nrrd"):
        sitk.WriteImage(image_from_array(values, np.eye(4)), str(tmp_path / name))
        for read in (read_volume, volumes.as_volume):
            counted.clear()
            assert read(str(tmp_path / name)).array.shape == values.shape
            assert sum(counted) == values.size, (name, read.__name__, counted)
        values[1, 2, 3] = np.nan
        sitk.WriteImage(image_from_array(values, np.eye(4)), str(tmp_path / name))
        for read in (read_volume, volumes.as_volume):
            with pytest.raises(InputError, match=f"^{re.escape(name)} has 1 NaN or infinite voxels"):
                read(str(tmp_path / name))
        values[1, 2, 3] = 0.0
    sitk.WriteImage(image_from_array(values, np.eye(4)), str(tmp_path / "v.nii"))
    raw = bytearray((tmp_path / "v.nii").read_bytes())
    struct.pack_into("<ff", raw, 112, 1e37, 0.0)  # 35 to 119 (45 is 0 now) x 1e37: past float32's 3.4e38
    (tmp_path / "v.nii").write_bytes(bytes(raw))
    for read in (read_volume, volumes.as_volume):
        with pytest.raises(InputError, match=r"^v\.nii has 84 NaN or infinite voxels"):
            read(str(tmp_path / "v.nii"))


def _float_nifti(path, array, order: str, slope: float, inter: float) -> None:
    """A single-file NIfTI-1 of ``array`` (float32 or float64) in byte ``order`` ("<" or ">") with scl_slope/inter."""
    import gzip
    import struct

    header = bytearray(352)
    struct.pack_into(order + "i", header, 0, 348)
    struct.pack_into(order + "8h", header, 40, 3, *array.shape, 1, 1, 1, 1)
    struct.pack_into(order + "2h", header, 70, 16 if array.dtype == np.float32 else 64, array.dtype.itemsize * 8)
    struct.pack_into(order + "8f", header, 76, *[1.0] * 8)
    struct.pack_into(order + "3f", header, 108, 352.0, slope, inter)
    struct.pack_into(order + "2h", header, 252, 0, 1)
    struct.pack_into(order + "12f", header, 280, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0)
    header[344:348] = b"n+1\0"
    data = bytes(header) + array.astype(array.dtype.newbyteorder(order)).tobytes(order="F")
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


def test_nan_and_infinity_are_refused_in_every_float_nifti_whatever_its_byte_order_compression_and_scaling(tmp_path):
    """A guard of the single count of a float NIfTI's values (checked by reviewhost): float32 and float64, little and
    big endian, ``.nii`` and ``.nii.gz``, with no scaling, an identity one, a slope ITK ignores (NaN, 0 with an
    offset) or a real one: a NaN, +inf or -inf is refused by ``read_volume`` (``evaluate``, ``train``) and by
    ``segment``'s reading, and the same file without it is read whole."""
    from TokenUNetSegmentLib.pipeline.volumes import as_volume

    for dtype, order, suffix, (slope, inter), bad in itertools.product(
        (np.float32, np.float64),
        "<>",
        (".nii", ".nii.gz"),
        ((0.0, 0.0), (1.0, 0.0), (float("nan"), 0.0), (0.0, 5.0), (2.0, 0.0)),
        (np.nan, np.inf, -np.inf),
    ):
        values = np.arange(4 * 5 * 6, dtype=dtype).reshape(4, 5, 6)
        path = tmp_path / f"v{suffix}"
        _float_nifti(path, values, order, slope, inter)
        scaled = (slope if np.isfinite(slope) and slope != 0 else 1.0) * values + inter  # ITK: slope 0 or NaN is 1
        assert np.array_equal(read_volume(path).array, scaled), (dtype, order, suffix, slope, inter)
        values[1, 2, 3] = bad
        _float_nifti(path, values, order, slope, inter)
        case = (dtype.__name__, order, suffix, slope, inter, bad)
        with pytest.raises(InputError, match=rf"^v{re.escape(suffix)} has 1 NaN or infinite voxels") as refused:
            read_volume(path, purpose="training")
        assert refused.value.hint.endswith("before training"), case
        with pytest.raises(InputError, match="has 1 NaN or infinite voxels"):
            as_volume(str(path))


def test_values_an_intercept_makes_infinite_under_a_slope_read_as_1_are_refused(tmp_path):
    """ITK reads a float NIfTI's scl_slope of 0, NaN or infinity as 1 and still adds scl_inter (found by reviewhost):
    stored 3e38 plus an intercept of 1e38 is infinite once read. Before: the header called such a file unscaled, so
    its values were counted only as stored (all finite) and the infinite ones were read and segmented."""
    from TokenUNetSegmentLib.pipeline.volumes import as_volume

    values = np.zeros((4, 5, 6), dtype=np.float32)
    values[0, :2, :3] = 3e38
    for slope in (0.0, float("nan"), float("inf")):
        _float_nifti(tmp_path / "v.nii", values, "<", slope, 1e38)
        for read in (read_volume, as_volume):
            with pytest.raises(InputError, match=r"^v\.nii has 6 NaN or infinite voxels"):
                read(str(tmp_path / "v.nii"))
