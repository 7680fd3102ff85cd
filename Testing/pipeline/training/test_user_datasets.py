"""A researcher's own data in the public layouts: what real files do (label maps on other grids, float or negative
values, masks in other orientations, region-based nnU-Net labels, a BOM in meta.csv, two files for one case,
symlinks) is read right or refused in one line, never trained silently wrong."""

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from TokenUNetSegmentLib.pipeline import cli
from TokenUNetSegmentLib.pipeline.errors import InputError
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing, image_from_array
from TokenUNetSegmentLib.pipeline.training import datasets
from TokenUNetSegmentLib.pipeline.training.data import load_case, read_datalist

from .test_dataset_readers import model_config, phantom, totalsegmentator_dataset

SPACING = (3.0, 3.0, 3.0)
LAS = np.diag([-1.0, 1.0, 1.0])  # the same voxels, stored right-to-left (as a flipped export stores them)


def _image(array, spacing=SPACING, origin=(0.0, 0.0, 0.0)):
    return image_from_array(array, affine_from_spacing(spacing, origin))


def _case(tmp_path: Path, label, table=None):
    """Write a CT (the phantom) and ``label`` (an image or {name: mask image}); returns the datalist entry read."""
    image, _ = phantom(0)
    sitk.WriteImage(_image(image), str(tmp_path / "ct.nii.gz"))
    if isinstance(label, dict):
        (tmp_path / "seg").mkdir()
        for name, mask in label.items():
            sitk.WriteImage(mask, str(tmp_path / "seg" / f"{name}.nii.gz"))
        entry = {"image": "ct.nii.gz", "label": {n: f"seg/{n}.nii.gz" for n in label}}
    else:
        sitk.WriteImage(label, str(tmp_path / "label.nii.gz"))
        entry = {"image": "ct.nii.gz", "label": "label.nii.gz", "labels": table or {"1": "liver", "2": "spleen"}}
    (tmp_path / "list.json").write_text(json.dumps({"training": [entry]}))
    return read_datalist(tmp_path / "list.json")["training"][0]


def _label_map():
    _, masks = phantom(0)
    values = np.zeros(masks["liver"].shape, np.uint8)
    values[masks["liver"]], values[masks["spleen"]] = 1, 2
    return values, masks


def _counts(case):
    return int((case.label == 1).sum()), int((case.label == 2).sum())


def test_structure_masks_stored_in_another_orientation_land_on_their_organs(tmp_path):
    """A mask of the image's shape whose header flips an axis (the same voxels in physical space) was pasted
    index by index: the spleen ended up mirrored (before: 50 of its voxels left on the sample)."""
    _, masks = phantom(0)
    spleen = masks["spleen"].astype(np.uint8)
    flipped_origin = ((spleen.shape[0] - 1) * SPACING[0], 0.0, 0.0)
    flipped = image_from_array(spleen[::-1].copy(), affine_from_spacing(SPACING, flipped_origin, LAS))
    entry = _case(tmp_path, {"liver": _image(masks["liver"].astype(np.uint8)), "spleen": flipped})
    case = load_case(entry, model_config(), 8, (16, 16, 16))
    assert _counts(case) == (int(masks["liver"].sum()), int(masks["spleen"].sum()))
    (tmp_path / "plain").mkdir()
    plain = _case(tmp_path / "plain", {"liver": _image(masks["liver"].astype(np.uint8)), "spleen": _image(spleen)})
    reference = load_case(plain, model_config(), 8, (16, 16, 16))
    assert np.array_equal(case.label, reference.label)


@pytest.mark.parametrize("masks_or_map", ["map", "masks"])
def test_a_label_of_the_images_shape_but_elsewhere_is_refused(tmp_path, masks_or_map):
    """Same voxel counts, origin 30 mm off: a header written wrong (before: trained on the overlap, the liver
    shifted by 10 voxels, the spleen gone)."""
    values, masks = _label_map()
    shifted = (30.0, 0.0, 0.0)
    if masks_or_map == "map":
        label = _image(values, origin=shifted)
    else:
        label = {
            "liver": _image(masks["liver"].astype(np.uint8)),
            "spleen": _image(masks["spleen"].astype(np.uint8), origin=shifted),
        }
    entry = _case(tmp_path, label)
    with pytest.raises(InputError, match="same 24 x 22 x 20 voxels as its image but lies 30 mm from it"):
        load_case(entry, model_config(), 8, (16, 16, 16))


def test_a_label_map_on_another_grid_that_covers_the_image_is_resampled(tmp_path):
    """Other spacing and one voxel more: the same organs (resampled in physical space)."""
    values, masks = _label_map()
    fine = np.repeat(np.repeat(np.repeat(values, 3, 0), 3, 1), 3, 2)
    fine = np.pad(fine, ((0, 1), (0, 1), (0, 1)))
    entry = _case(tmp_path, _image(fine, spacing=(1.0, 1.0, 1.0), origin=(-1.0, -1.0, -1.0)))
    case = load_case(entry, model_config(), 8, (16, 16, 16))
    assert _counts(case) == (int(masks["liver"].sum()), int(masks["spleen"].sum()))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda v: v * 0.49, "values that are not whole numbers"),  # a soft mask scaled below 0.5: all background
        (lambda v: v + 0.5 * (v > 0), "values that are not whole numbers"),  # linearly interpolated
        (lambda v: v.astype(np.float32) - 1, "negative values"),  # background stored as -1
    ],
)
def test_label_maps_with_values_that_are_no_labels_are_refused(tmp_path, change, message):
    """Before: rounded or clipped silently (interpolated labels on the sample: 3039 liver voxels instead of 1809;
    0.49 masks: no organ at all; -1 background: organs shifted by one value)."""
    values, _ = _label_map()
    entry = _case(tmp_path, _image(change(values.astype(np.float32)).astype(np.float32)))
    with pytest.raises(InputError, match=message):
        load_case(entry, model_config(), 8, (16, 16, 16))


def test_float_label_maps_with_whole_values_are_read(tmp_path):
    values, masks = _label_map()
    entry = _case(tmp_path, _image(values.astype(np.float32)))
    case = load_case(entry, model_config(), 8, (16, 16, 16))
    assert _counts(case) == (int(masks["liver"].sum()), int(masks["spleen"].sum()))


def test_a_meta_csv_with_a_byte_order_mark_and_windows_line_ends_keeps_its_splits(tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM (before: no column read as image_id, the validation case trained)."""
    root = totalsegmentator_dataset(tmp_path / "ts")
    text = (root / "meta.csv").read_text()
    (root / "meta.csv").write_bytes(("\ufeff" + text.replace("\n", "\r\n")).encode("utf-8"))
    datalist, _ = datasets.totalsegmentator(root, ["liver", "spleen"])
    assert [e["name"] for e in datalist["training"]] == ["s0000", "s0001"]
    assert [e["name"] for e in datalist["validation"]] == ["s0002"]


def _nnunet(root: Path, labels, **spec) -> Path:
    image, masks = phantom(0)
    values = np.zeros(image.shape, np.uint8)
    values[masks["liver"]], values[masks["spleen"]] = 1, 2
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    sitk.WriteImage(_image(image), str(root / "imagesTr" / "case_000_0000.nii.gz"))
    sitk.WriteImage(_image(values), str(root / "labelsTr" / "case_000.nii.gz"))
    (root / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "CT"}, "labels": labels, "file_ending": ".nii.gz", **spec})
    )
    return root


def test_region_based_nnunet_labels_are_refused_not_dropped(tmp_path):
    """nnU-Net v2 regions ({"liver": [1, 2]}) overlap and are no label map (before: dropped without a word, the
    liver missing and every case marked partial)."""
    root = _nnunet(tmp_path / "ds", {"background": 0, "liver": [1, 2], "spleen": 2}, regions_class_order=[1, 2])
    with pytest.raises(InputError, match="region-based"):
        datasets.decathlon(root, ["liver", "spleen"])
    single = _nnunet(tmp_path / "single", {"background": 0, "liver": [1], "spleen": 2})
    datalist, report = datasets.decathlon(single, ["liver", "spleen"])
    assert report["matched"] == ["liver", "spleen"] and datalist["training"][0]["labels"] == {
        "1": "liver",
        "2": "spleen",
    }


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"labels": ["background", "liver"]}, "'labels' must map"),
        ({"channel_names": {"CT": "0"}}, "channel_names"),
        ({"training": [{"label": "labelsTr/case_000.nii.gz"}]}, r"training\[0\] needs 'image' and 'label'"),
        ({"training": "all"}, "'training' must be a list"),
    ],
)
def test_malformed_dataset_json_exits_2_in_one_line(tmp_path, capsys, spec, message):
    root = _nnunet(tmp_path / "ds", {"background": 0, "liver": 1, "spleen": 2})
    data = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**data, **spec}))
    assert cli.main(["datalist", "decathlon", str(root), "--out", str(tmp_path / "list.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and re.search(message, err), err
    assert not (tmp_path / "list.json").exists()


@pytest.mark.parametrize(
    "raw, message",
    [
        (b'{"labels": {"0": "background", "1": "liv\xe9r"}}', "not valid JSON"),  # Latin-1, not UTF-8
        (b'{"labels": {"0": "background"}, "labels": {"1": "liver"}}', "labels"),  # a key given twice
        (None, "too large"),  # 17 MB (sparse): refused before reading
    ],
)
def test_a_dataset_json_that_is_not_plain_json_exits_2_in_one_line(tmp_path, capsys, raw, message):
    """Before: read without the JSON limits (a Latin-1 file was a UnicodeDecodeError traceback, a duplicated key
    kept its last value silently, any size was read whole)."""
    root = _nnunet(tmp_path / "ds", {"background": 0, "liver": 1, "spleen": 2})
    if raw is None:
        with open(root / "dataset.json", "r+b") as stream:
            stream.truncate(17 * 2**20)
    else:
        (root / "dataset.json").write_bytes(raw)
    assert cli.main(["datalist", "decathlon", str(root), "--out", str(tmp_path / "list.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and message in err and "dataset.json" in err, err
    assert not (tmp_path / "list.json").exists()


def _btcv(root: Path) -> Path:
    image, _ = phantom(0)
    values, _ = _label_map()
    for folder in ("img", "label"):
        (root / folder).mkdir(parents=True)
    for number in (1, 2):
        sitk.WriteImage(_image(image), str(root / "img" / f"img{number:04d}.nii.gz"))
        sitk.WriteImage(_image(values * number), str(root / "label" / f"label{number:04d}.nii.gz"))
    return root


@pytest.mark.parametrize("table", [b"[1, 2]", b'{"liver": 1}', b'{"1": "liver"'])
def test_a_name_table_file_that_is_not_one_exits_2_in_one_line(tmp_path, capsys, table):
    """Before: a list or name -> value table was a traceback (AttributeError, ValueError)."""
    root = _btcv(tmp_path / "btcv")
    (tmp_path / "names.json").write_bytes(table)
    args = ["datalist", "folders", "--images", str(root / "img"), "--labels", str(root / "label")]
    assert cli.main([*args, "--table", str(tmp_path / "names.json"), "--out", str(tmp_path / "list.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "names.json" in err, err


def test_two_label_files_with_one_case_number_are_refused(tmp_path):
    """``label1`` beside ``label0001`` (before: one of them taken silently, here the wrong one)."""
    root = _btcv(tmp_path / "btcv")
    shutil.copy(root / "label" / "label0002.nii.gz", root / "label" / "label1.nii.gz")
    with pytest.raises(InputError, match="label0001.nii.gz and label1.nii.gz.*case number 1"):
        datasets.folders(root / "img", root / "label", "btcv")


def test_symlinked_files_in_the_folders_layout(tmp_path):
    """Image and label folders of links into another place (before: internal error ValueError)."""
    source = _btcv(tmp_path / "source")
    links = tmp_path / "links"
    for folder in ("img", "label"):
        (links / folder).mkdir(parents=True)
        for file in (source / folder).iterdir():
            os.symlink(file, links / folder / file.name)
    datalist, _ = datasets.folders(links / "img", links / "label", "btcv")
    assert [e["name"] for e in datalist["training"]] == ["img0001", "img0002"]
    root = Path(datalist["dataroot"])
    assert all((root / e["label"]).exists() for e in datalist["training"])
    assert (root / datalist["training"][1]["label"]).resolve() == (source / "label" / "label0002.nii.gz").resolve()


def test_one_folder_given_as_both_images_and_labels_is_refused(tmp_path, capsys):
    """``datalist folders --images img --labels img`` (also through a link or another spelling) (before: each image
    paired with itself as its own label map, a datalist of 2 cases written, exit 0: an MRI's intensities 1..13 would
    train as the 13 organs of the table)."""
    root = _btcv(tmp_path / "btcv")
    os.symlink(root / "img", tmp_path / "img-link")
    for labels in (root / "img", tmp_path / "img-link", root / "label" / ".." / "img"):
        out = tmp_path / "list.json"
        assert (
            cli.main(["datalist", "folders", "--images", str(root / "img"), "--labels", str(labels), "--out", str(out)])
            == 2
        )
        err = capsys.readouterr().err
        assert "--images and --labels name one folder" in err and err.count("\n") == 1, err
        assert not out.exists()
    datalist, _ = datasets.folders(root / "img", root / "label", "btcv")  # two folders: as before
    assert len(datalist["training"]) == 2


def test_a_validation_fraction_that_leaves_no_training_case_says_so(tmp_path):
    """``--validation-fraction 0.9`` of 2 cases (before: "no training cases found in btcv", though both were found)."""
    root = _btcv(tmp_path / "btcv")
    with pytest.raises(InputError, match=r"all 2 cases .* went to validation, none to training") as caught:
        datasets.folders(root / "img", root / "label", "btcv", validation_fraction=0.9)
    assert "--validation-fraction" in caught.value.hint


def _train_list(tmp_path: Path, cases: dict[str, np.ndarray], validation=()) -> Path:
    image, _ = phantom(0)
    entries = []
    for name, values in cases.items():
        sitk.WriteImage(_image(image), str(tmp_path / f"{name}.nii.gz"))
        sitk.WriteImage(_image(values), str(tmp_path / f"{name}_seg.nii.gz"))
        entries.append({"name": name, "image": f"{name}.nii.gz", "label": f"{name}_seg.nii.gz"})
    data = {"labels": {"1": "liver", "2": "spleen"}, "training": entries}
    data["validation"] = [e for e in entries if e["name"] in validation]
    (tmp_path / "list.json").write_text(json.dumps(data))
    return tmp_path / "list.json"


def test_training_where_no_case_holds_a_model_label_is_refused(tmp_path):
    """Empty label maps (a failed export) trained a background-only model and packaged it (before: exit 0)."""
    from TokenUNetSegmentLib.pipeline.training import Recipe, train

    values, _ = _label_map()
    datalist = _train_list(tmp_path, {"a": values * 0, "b": values * 0})
    recipe = Recipe(steps=1, batch_size=1, val_every=1, threads=1, augmentation=0.0)
    with pytest.raises(InputError, match="no training case holds a voxel of the model's labels"):
        train(datalist, model_config(), tmp_path / "run", recipe)
    assert not (tmp_path / "run" / "package").exists()


def test_a_scan_in_both_training_and_validation_is_refused(tmp_path):
    """Validation on a training scan measures fit, not generalisation (before: accepted without a word)."""
    values, _ = _label_map()
    datalist = _train_list(tmp_path, {"a": values, "b": values}, validation=("b",))
    with pytest.raises(InputError, match=r"validation\[0\] uses b.nii.gz, also in training\[1\]"):
        read_datalist(datalist)


def test_a_case_whose_label_is_one_of_its_images_is_refused(tmp_path):
    """A datalist entry naming its image as its label (or as a structure's mask), also through a link (found by
    hostile) (before: read; a CT was refused only for its negative values, an MRI's whole intensities trained as
    label values)."""
    values, _ = _label_map()
    datalist = _train_list(tmp_path, {"a": values})
    data = json.loads(datalist.read_text())
    (tmp_path / "a-link.nii.gz").symlink_to(tmp_path / "a.nii.gz")
    for label in ("a.nii.gz", "a-link.nii.gz", {"liver": "a.nii.gz"}):
        data["training"][0]["label"] = label
        datalist.write_text(json.dumps(data))
        with pytest.raises(InputError, match=r"training\[0\]: its label .* is its image a.nii.gz"):
            read_datalist(datalist)


def test_half_cases_are_named_when_left_out(tmp_path, capsys):
    """A case folder without its CT, an image without its label (before: left out without a word)."""
    root = totalsegmentator_dataset(tmp_path / "ts")
    (root / "s0002" / "ct.nii.gz").unlink()
    assert cli.main(["datalist", "totalsegmentator", str(root), "--out", str(tmp_path / "a.json")]) == 0
    assert "warning: 1 left out: s0002 (no ct.nii.gz)" in capsys.readouterr().err
    btcv = _btcv(tmp_path / "btcv")
    shutil.copy(btcv / "img" / "img0001.nii.gz", btcv / "img" / "img0003.nii.gz")
    args = ["--images", str(btcv / "img"), "--labels", str(btcv / "label")]
    assert cli.main(["datalist", "folders", *args, "--out", str(tmp_path / "b.json")]) == 0
    assert "warning: 1 left out: img0003.nii.gz (no label)" in capsys.readouterr().err


def test_importing_a_training_runs_folder_points_to_its_package(tmp_path, tiny_package, capsys, monkeypatch):
    """`models import run/` instead of `run/package` (before: "lacks configs/metadata.json" and nothing more)."""
    monkeypatch.setenv("TOKENUNET_HOME", str(tmp_path / "home"))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copytree(tiny_package, run / "package")
    assert cli.main(["models", "import", str(run)]) == 2
    err = capsys.readouterr().err
    assert "lacks configs/metadata.json (a training run keeps its package inside: import run/package)" in err


def test_label_values_the_table_does_not_name_are_warned_about(tmp_path, caplog):
    """A BTCV-numbered map read with a two-name table: values 3 and 4 train as background (before: silently)."""
    values, masks = _label_map()
    values[0, 0, :2], values[1, 0, :2] = 3, 4
    entry = _case(tmp_path, _image(values))
    with caplog.at_level("WARNING"):
        case = load_case(entry, model_config(), 8, (16, 16, 16))
    assert "case ct: label.nii.gz holds values 3, 4 that its 'labels' table does not name: trained as background" in (
        caplog.text
    )
    assert _counts(case) == (int(masks["liver"].sum()), int(masks["spleen"].sum()))


def test_an_nnunet_case_without_its_second_channel_names_the_file(tmp_path):
    root = _nnunet(tmp_path / "ds", {"background": 0, "liver": 1, "spleen": 2})
    spec = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**spec, "channel_names": {"0": "CT", "1": "PET"}}))
    with pytest.raises(InputError, match=r"labelsTr/case_000.nii.gz has no image imagesTr/case_000_0001.nii.gz"):
        datasets.decathlon(root)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["decathlon", "ds", "--splits", "test"], "--splits applies only to the totalsegmentator layout"),
        (["decathlon", "ds", "--images", "img"], "--images applies only to the folders layout"),
        (
            ["totalsegmentator", "ds", "--validation-fraction", "0.2"],
            "--validation-fraction applies only to the decathlon and folders layouts",
        ),  # fmt: skip
        (["folders", "ds", "--images", "img", "--labels", "lab"], "the folders layout takes no dataset folder"),
        (["folders", "--images", "img", "--labels", "lab", "--structures", "model"], "--structures applies only"),
        # given with its default value: still an option of another layout (before: ignored, exit 0 on a dataset)
        (["decathlon", "ds", "--table", "btcv"], "--table applies only to the folders layout"),
        (["decathlon", "ds", "--splits", "train"], "--splits applies only to the totalsegmentator layout"),
        (["totalsegmentator", "ds", "--validation-fraction", "0"], "--validation-fraction applies only"),
    ],
)
def test_options_of_another_layout_are_refused_not_ignored(tmp_path, capsys, argv, message):
    """Before: each was ignored (exit 0 where the dataset was there): ``decathlon ... --splits test`` listed every
    case for training."""
    assert cli.main(["datalist", *argv, "--out", str(tmp_path / "list.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "list.json").exists()


def test_a_nan_in_a_label_map_to_train_on_is_refused_in_trainings_words(tmp_path):
    """A float label map holding NaN, as NIfTI (its reader counts them) and as NRRD (read as it is) (found by review2;
    before: the NIfTI "... before segmenting", segment's hint; the NRRD "values that are not whole numbers (e.g. nan;
    a probability map, or linear interpolation?)"). Now both: "... NaN or infinite voxels (... before training)"."""
    values, _ = _label_map()
    values = values.astype(np.float32)
    values[3, 4, 5] = np.nan
    entry = _case(tmp_path, _image(values))
    with pytest.raises(InputError, match=r"label.nii.gz has 1 NaN or infinite voxels") as raised:
        load_case(entry, model_config(), 8, (16, 16, 16))
    assert raised.value.hint.endswith("before training"), raised.value.hint
    sitk.WriteImage(_image(values), str(tmp_path / "label.nrrd"))
    with pytest.raises(InputError, match=r"label.nrrd has 1 NaN or infinite voxels") as raised:
        load_case({**entry, "label": str(tmp_path / "label.nrrd")}, model_config(), 8, (16, 16, 16))
    assert raised.value.hint.endswith("before training"), raised.value.hint
