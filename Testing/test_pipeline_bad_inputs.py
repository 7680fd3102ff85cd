"""Every bad input gets a clear, typed error (or a warning where the issue asks to run anyway)."""

import numpy as np
import pytest
import SimpleITK as sitk
from pipeline_testlib import ball_phantom, dice, threshold_package
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
    with pytest.raises(InputError, match="4 dimensions"):
        run(path)


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
