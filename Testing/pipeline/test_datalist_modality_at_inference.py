"""``batch --datalist`` and ``robustness --datalist`` match what a datalist says its images are (its ``"modality"``,
its channel table) to the model, as ``train`` does, before a case is read or the weights are loaded."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from helpers.packages import make_package, tiny_config
from TokenUNetSegmentLib.pipeline import cli, package_loader, segment_command
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing, image_from_array

FAST = ["--device", "cpu", "--no-overview", "--progress", "none", "--no-heatmaps"]
REFUSED = [  # what the datalist says, and the line that refuses it for a CT model
    ({"modality": {"0": "MRI"}}, "names MR images (MRI); model 'tiny-ct' takes CT"),
    ({"modality": "MRI"}, "names MR images (MRI); model 'tiny-ct' takes CT"),  # one text (Auto3DSeg's task file)
    ({"channel_names": {"0": "T2"}}, "names MR images (T2); model 'tiny-ct' takes CT"),  # nnU-Net v2, a sequence
    ({"modality": {"0": "FLAIR", "1": "T1w"}}, "names 2 channels (FLAIR, T1w); model 'tiny-ct' takes 1 (ch0)"),
]


@pytest.fixture
def no_weights_loaded(monkeypatch):
    """Loading a package's weights fails the test: the refusals come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("the weights were loaded")

    monkeypatch.setattr(segment_command, "load_package_at", refuse)
    monkeypatch.setattr(package_loader, "load_package", refuse)


def write_ct(path):
    image = np.full((16, 16, 16), -1000, np.int16)
    image[4:12, 4:12, 4:12] = 200
    sitk.WriteImage(image_from_array(image, affine_from_spacing((2.0, 2.0, 2.0))), str(path))


def test_batch_refuses_a_datalist_of_mr_images_for_a_ct_model(tmp_path, capsys, no_weights_loaded):
    """``batch --datalist`` of an MRI dataset with a CT model (before: each MR image ran through the CT model, with
    at most a per-case note that it holds no air)."""
    package = make_package(tmp_path, tiny_config())
    (tmp_path / "mr.nii.gz").write_bytes(b"not read: the datalist is refused first")
    for said, refused in REFUSED:
        datalist = tmp_path / "list.json"
        datalist.write_text(json.dumps({**said, "testing": [{"image": "mr.nii.gz"}]}))
        out = tmp_path / "out"
        assert cli.main(["batch", "--datalist", str(datalist), "--model", str(package), "--out", str(out), *FAST]) == 2
        err = capsys.readouterr().err
        assert f"{datalist} {refused} (choose a model for this datalist's images (--model))" in err, err
        assert err.count("\n") == 1, err
        assert not out.exists()


def test_batch_runs_a_datalist_that_says_ct_or_nothing_for_a_ct_model(tmp_path, capsys):
    package = make_package(tmp_path, tiny_config())
    write_ct(tmp_path / "ct.nii.gz")
    for index, said in enumerate([{"modality": {"0": "CT"}}, {"modality": "ct"}, {"channel_names": {"0": "noNorm"}},
                                  {}]):  # fmt: skip
        datalist = tmp_path / "list.json"
        datalist.write_text(json.dumps({**said, "testing": [{"image": "ct.nii.gz"}]}))
        out = tmp_path / f"out{index}"
        argv = ["batch", "--datalist", str(datalist), "--model", str(package), "--out", str(out), *FAST]
        assert cli.main(argv) == 0, capsys.readouterr()
        assert (out / "ct" / "report.json").exists()


def robustness_datalist(tmp_path, said: dict):
    datalist = tmp_path / "list.json"
    entry = {"patient": "P", "image": "ct.nii.gz", "label": "ref.nii.gz", "labels": {"1": "organ1"}}
    datalist.write_text(json.dumps({**said, "training": [], "evaluation": [entry]}))
    return datalist


def test_robustness_refuses_a_datalist_of_mr_images_for_a_ct_model(tmp_path, capsys, no_weights_loaded):
    """``robustness --datalist`` of MR images with a CT model (before: CT noise, in HU, added to MR images)."""
    package = make_package(tmp_path, tiny_config(labels=1))
    (tmp_path / "ct.nii.gz").write_bytes(b"not read: the datalist is refused first")
    (tmp_path / "ref.nii.gz").write_bytes(b"not read either")
    for said, refused in REFUSED:
        datalist = robustness_datalist(tmp_path, said)
        out = tmp_path / "out"
        argv = ["robustness", "--model", str(package), "--datalist", str(datalist), "--patient", "P", "--out", str(out)]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert f"{datalist} {refused} (choose a model for this datalist's images (--model))" in err, err
        assert err.count("\n") == 1, err
        assert not out.exists()


def test_robustness_runs_a_datalist_that_says_ct_for_a_ct_model(tmp_path, capsys):
    package = make_package(tmp_path, tiny_config(labels=1))
    write_ct(tmp_path / "ct.nii.gz")
    reference = np.zeros((16, 16, 16), np.uint8)
    reference[4:12, 4:12, 4:12] = 1
    sitk.WriteImage(image_from_array(reference, affine_from_spacing((2.0, 2.0, 2.0))), str(tmp_path / "ref.nii.gz"))
    datalist = robustness_datalist(tmp_path, {"modality": {"0": "CT"}})
    out = tmp_path / "out"
    argv = ["robustness", "--model", str(package), "--datalist", str(datalist), "--patient", "P", "--out", str(out),
            "--variants", "plain", "--no-tokens", "--device", "cpu"]  # fmt: skip
    assert cli.main(argv) == 0, capsys.readouterr()
    (result,) = json.loads((out / "robustness.json").read_text())["results"]
    assert [row["variant"] for row in result["variants"]] == ["plain"] and result["image"].endswith("ct.nii.gz")
