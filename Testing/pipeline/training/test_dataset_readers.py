"""Dataset readers (TotalSegmentator, Decathlon / nnU-Net raw, BTCV-style folders) and the TotalSegmentator
recipe (scripts/models/abdomen-organs-totalseg) end to end on a miniature dataset in that layout."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers.packages import ball_phantom, tiny_config
from helpers.paths import ROOT
from TokenUNetSegmentLib.pipeline import cli
from TokenUNetSegmentLib.pipeline.errors import InputError
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing, image_from_array
from TokenUNetSegmentLib.pipeline.metadata import parse_config
from TokenUNetSegmentLib.pipeline.package_loader import load_package
from TokenUNetSegmentLib.pipeline.training import datasets
from TokenUNetSegmentLib.pipeline.training.data import load_case, read_datalist

RECIPE = ROOT / "scripts" / "models" / "abdomen-organs-totalseg"
SHAPE = (24, 22, 20)


def phantom(index: int):
    """A CT (HU) and structure masks: liver (bright), spleen (dark), kidney_right (not a model label)."""
    centre = np.array(SHAPE) / 2 + (index % 2, 0, 0)
    image = ball_phantom(SHAPE, centre, np.array(SHAPE) * 0.45, value=40, background=-1000)
    masks = {
        "liver": ball_phantom(SHAPE, centre + (-5, 0, 0), (4, 4, 4)) > 0,
        "spleen": ball_phantom(SHAPE, centre + (5, 1, 0), (3, 4, 3)) > 0,
        "kidney_right": ball_phantom(SHAPE, centre + (0, 6, 0), (2, 2, 3)) > 0,
    }
    for name, value in (("liver", 220), ("spleen", -80), ("kidney_right", 150)):
        image[masks[name]] = value
    return image.astype(np.int16), masks


def write(array, path: Path, spacing=(3.0, 3.0, 3.0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image_from_array(array, affine_from_spacing(spacing)), str(path))


def totalsegmentator_dataset(root: Path, cases=3) -> Path:
    rows = ["image_id;age;gender;institute;study_type;split"]
    for index in range(cases):
        case = f"s{index:04d}"
        image, masks = phantom(index)
        write(image, root / case / "ct.nii.gz")
        for name, mask in masks.items():
            write(mask.astype(np.uint8), root / case / "segmentations" / f"{name}.nii.gz")
        rows.append(f"{case};60;m;A;ct abdomen;{'val' if index == cases - 1 else 'train'}")
    (root / "meta.csv").write_text("\n".join(rows) + "\n")
    return root


def model_config(model_id="tiny-totalseg"):
    config = tiny_config(model_id, labels=2, spacing=(3.0, 3.0, 3.0), roi=(16, 16, 16))
    config["preprocessing"]["intensity"] = {"method": "ct_window", "window": [-200.0, 300.0]}
    config["labels"][0]["name"], config["labels"][1]["name"] = "liver", "spleen"
    return config


def test_totalsegmentator_layout_becomes_a_datalist_with_names_matched(tmp_path):
    root = totalsegmentator_dataset(tmp_path / "ts")
    datalist, report = datasets.totalsegmentator(root, ["liver", "spleen", "left kidney"])
    assert [e["name"] for e in datalist["training"]] == ["s0000", "s0001"]
    assert [e["name"] for e in datalist["validation"]] == ["s0002"]
    assert report["matched"] == ["liver", "spleen"] and report["missing"] == ["left kidney"]
    entry = datalist["training"][0]
    assert set(entry["label"]) == {"liver", "spleen", "kidney_right"} and entry["partial"] is True
    path = tmp_path / "list.json"
    path.write_text(json.dumps(datalist))
    case = load_case(read_datalist(path)["training"][0], model_config(), 8, (16, 16, 16))
    _, masks = phantom(0)
    assert int((case.label == 1).sum()) == int(masks["liver"].sum())
    assert int((case.label == 2).sum()) == int(masks["spleen"].sum())
    only_model, _ = datasets.totalsegmentator(root, ["liver", "spleen"], structures="model")
    assert set(only_model["training"][0]["label"]) == {"liver", "spleen"}


def test_decathlon_and_nnunet_layouts(tmp_path):
    msd = tmp_path / "Task03_Liver"
    nnunet = tmp_path / "Dataset003_Liver"
    for index in range(2):
        image, masks = phantom(index)
        label = masks["liver"].astype(np.uint8) + 2 * masks["spleen"].astype(np.uint8)
        write(image, msd / "imagesTr" / f"liver_{index}.nii.gz")
        write(label, msd / "labelsTr" / f"liver_{index}.nii.gz")
        write(image, nnunet / "imagesTr" / f"liver_{index:03d}_0000.nii.gz")
        write(label, nnunet / "labelsTr" / f"liver_{index:03d}.nii.gz")
    training = [{"image": f"./imagesTr/liver_{i}.nii.gz", "label": f"./labelsTr/liver_{i}.nii.gz"} for i in range(2)]
    (msd / "dataset.json").write_text(
        json.dumps({"labels": {"0": "background", "1": "liver", "2": "spleen"}, "training": training})
    )
    spec = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "liver": 1, "spleen": 2},
        "file_ending": ".nii.gz",
    }
    (nnunet / "dataset.json").write_text(json.dumps(spec))
    for root in (msd, nnunet):
        datalist, report = datasets.decathlon(root, ["liver", "spleen"], validation_fraction=0.5)
        assert len(datalist["training"]) == 1 and len(datalist["validation"]) == 1
        assert report["matched"] == ["liver", "spleen"] and "partial" not in datalist["training"][0]
        assert datalist["training"][0]["labels"] == {"1": "liver", "2": "spleen"}
        assert (Path(datalist["dataroot"]) / datalist["training"][0]["image"]).is_file()
    with pytest.raises(Exception, match="none of the model's labels"):
        datasets.decathlon(msd, ["heart"])


def test_btcv_folders_and_the_datalist_command(tmp_path):
    for index in (1, 2):
        image, masks = phantom(index)
        write(image, tmp_path / "img" / f"img{index:04d}.nii.gz")
        label = 6 * masks["liver"].astype(np.uint8) + masks["spleen"].astype(np.uint8)  # BTCV: 1 spleen, 6 liver
        write(label, tmp_path / "label" / f"label{index:04d}.nii.gz")
    datalist, report = datasets.folders(tmp_path / "img", tmp_path / "label", "btcv", ["liver", "spleen"])
    assert [e["image"] for e in datalist["training"]] == ["img/img0001.nii.gz", "img/img0002.nii.gz"]
    assert datalist["training"][0]["label"] == "label/label0001.nii.gz" and report["missing"] == []
    config = tmp_path / "config.json"
    config.write_text(json.dumps(model_config()))
    out = tmp_path / "btcv.json"
    args = ["datalist", "folders", "--images", str(tmp_path / "img"), "--labels", str(tmp_path / "label")]
    assert cli.main([*args, "--table", "btcv", "--config", str(config), "--out", str(out)]) == 0
    case = load_case(read_datalist(out)["training"][0], model_config(), 8, (16, 16, 16))
    assert set(np.unique(case.label)) == {0, 1, 2}
    assert cli.main([*args, "--table", "nonsense", "--out", str(out)]) == 2
    assert cli.main(["datalist", "totalsegmentator", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert cli.main([*args, "--table", "btcv", "--out", str(out)]) == 0  # its own earlier datalist: replaced
    by_hand = tmp_path / "mine.json"
    by_hand.write_text(json.dumps({"description": "my cases", "training": []}))
    assert cli.main([*args, "--table", "btcv", "--out", str(by_hand)]) == 2  # a datalist written by hand: kept
    assert json.loads(by_hand.read_text())["description"] == "my cases"
    assert cli.main([*args, "--table", "btcv", "--out", str(by_hand), "--overwrite"]) == 0
    assert read_datalist(by_hand)["training"][0]["label"].endswith("label/label0001.nii.gz")


def run_recipe(tmp_path, nproc: int):
    data = totalsegmentator_dataset(tmp_path / "Totalsegmentator_dataset")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(model_config()))
    env = {**os.environ, "NPROC": str(nproc), "STEPS": "2", "CONFIG": str(config), "OMP_NUM_THREADS": "1"}
    env["PYTHON"] = sys.executable  # the interpreter running the tests
    run = tmp_path / "run"
    command = ["bash", str(RECIPE / "train.sh"), str(data), str(run), "--patch-size", "16", "16", "16"]
    command += ["--batch-size", "1", "--val-every", "1", "--threads", "1", "--workers", "0"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    package = load_package(run / "package")
    record = package.config.training
    assert record["steps_done"] == 2 and record["data"]["validated_on"] == "validation"
    assert [c["name"] for c in record["data"]["training"]] == ["s0000", "s0001"]
    assert "s0000/ct.nii.gz" in record["data"]["training"][0]["files"]
    assert package.config.training_statistics["labels"]["liver"]["cases"] == 2
    return record


def test_totalsegmentator_recipe_end_to_end_in_one_process(tmp_path):
    assert run_recipe(tmp_path, 1)["world_size"] == 1


@pytest.mark.slow
def test_totalsegmentator_recipe_end_to_end_with_torchrun(tmp_path):
    assert run_recipe(tmp_path, 2)["world_size"] == 2


def test_recipe_config_is_a_valid_training_configuration():
    from TokenUNetSegmentLib.pipeline.training.trainer import _check_config

    config = json.loads((RECIPE / "config.json").read_text())
    _check_config(config)
    assert [label["name"] for label in config["labels"]][:2] == ["spleen", "right kidney"]


def brain_config():
    """A 4-channel MR configuration (T1, T1c, T2, FLAIR) whose labels are the tumour's ('edema', 'enhancing')."""
    config = tiny_config("brats-train", in_channels=4, labels=2, roi=(16, 16, 16), intensity={"method": "zscore"})
    for entry, name in zip(config["inputs"], ("T1", "T1c", "T2", "FLAIR"), strict=True):
        entry.update(name=name, modality="MR", patterns=[f"*_{name.lower()}.*"])
    config["labels"][0]["name"], config["labels"][1]["name"] = "edema", "enhancing"
    return config


def test_a_decathlon_task01_of_4d_images_trains_with_its_channels_in_the_models_order(tmp_path):
    """MSD Task01_BrainTumour: imagesTr/BRATS_00N.nii.gz of 16^3 x 4 volumes ordered FLAIR, T1w, t1gd, T2w (its
    dataset.json's "modality"). The datalist names each volume; the training loader puts each in the package's
    channel (T1, T1c, T2, FLAIR): the same case as from four 3D files in that order (before: refused only once read,
    "has 4 dimensions")."""
    root = tmp_path / "Task01_BrainTumour"
    msd_order = ("FLAIR", "T1w", "t1gd", "T2w")
    own = {"T1w": "t1", "t1gd": "t1c", "T2w": "t2", "FLAIR": "flair"}
    affine = affine_from_spacing((2.0, 2.0, 2.0), origin=(-10.0, 4.0, 0.0))
    training = []
    for case in range(2):
        volumes = {
            name: image_from_array(
                ball_phantom((16, 16, 16), (8 + index - case, 8, 8), (3 + index, 4, 5), 200.0 + 100 * index, 0.0),
                affine,
            )
            for index, name in enumerate(msd_order)
        }
        image = root / "imagesTr" / f"BRATS_00{case}.nii.gz"
        image.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(sitk.JoinSeries([volumes[name] for name in msd_order]), str(image))
        for name, volume in volumes.items():
            sitk.WriteImage(volume, str(tmp_path / f"BRATS_00{case}_{own[name]}.nii.gz"))
        label = (ball_phantom((16, 16, 16), (8, 8, 8), (3, 4, 5)) > 0).astype(np.uint8)
        write_label = image_from_array(label + (ball_phantom((16, 16, 16), (8, 8, 8), (1, 1, 1)) > 0), affine)
        (root / "labelsTr").mkdir(exist_ok=True)
        sitk.WriteImage(write_label, str(root / "labelsTr" / image.name))
        training.append({"image": f"./imagesTr/{image.name}", "label": f"./labelsTr/{image.name}"})
    spec = {
        "modality": dict(enumerate(msd_order)),
        "labels": {"0": "background", "1": "edema", "2": "enhancing"},
        "training": training,
    }
    (root / "dataset.json").write_text(json.dumps(spec))
    out = tmp_path / "task01.json"
    assert cli.main(["datalist", "decathlon", str(root), "--out", str(out)]) == 0
    written = json.loads(out.read_text())["training"][0]
    assert written["channels"] == list(msd_order) and written["image"] == "imagesTr/BRATS_000.nii.gz"
    entries = read_datalist(out)["training"]
    case = load_case(entries[0], brain_config(), 8, (16, 16, 16))
    files = dict(entries[0], image=[str(tmp_path / f"BRATS_000_{n}.nii.gz") for n in ("t1", "t1c", "t2", "flair")])
    del files["channels"]
    from_files = load_case(files, brain_config(), 8, (16, 16, 16))
    assert case.image.shape[0] == 4 and np.array_equal(case.image, from_files.image)
    assert np.array_equal(case.label, from_files.label)
    # a 4D image the datalist does not name, outside a dataset layout: refused in plain words
    loose = dict(entries[0], image=[str(tmp_path / "BRATS_000.nii.gz")])
    del loose["channels"]
    Path(loose["image"][0]).write_bytes((root / "imagesTr" / "BRATS_000.nii.gz").read_bytes())
    with pytest.raises(Exception, match="nothing says which channel each one is"):
        load_case(loose, brain_config(), 8, (16, 16, 16))
    # and train runs on the datalist (two steps)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(brain_config()))
    run = tmp_path / "run"
    steps = ["--steps", "2", "--val-every", "2", "--patch-size", "16", "16", "16", "--select", "last", "--threads", "1"]
    assert cli.main(["train", str(out), "--config", str(config), "--out", str(run), *steps]) == 0
    assert (run / "package" / "configs" / "metadata.json").is_file()


def test_datalist_decathlon_reads_the_channel_order_as_segment_does(tmp_path):
    """A dataset.json whose 'modality' and 'channel_names' differ is refused by both `datalist decathlon` and
    `segment` (before: the datalist took channel_names, segment took modality: two orders for one image); numbers
    past 9 are read in numeric order."""
    from TokenUNetSegmentLib.pipeline.channel_stack import dataset_names
    from TokenUNetSegmentLib.pipeline.errors import InputError

    root = tmp_path / "Task01_BrainTumour"
    image = root / "imagesTr" / "BRATS_000.nii.gz"
    write(np.zeros((8, 8, 8, 2), np.int16)[..., 0], image)
    write(np.zeros((8, 8, 8), np.uint8), root / "labelsTr" / image.name)
    order = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
    spec = {
        "modality": order,
        "channel_names": dict(zip(order, reversed(order.values()), strict=True)),
        "labels": {"0": "background", "1": "edema"},
        "training": [{"image": "./imagesTr/BRATS_000.nii.gz", "label": "./labelsTr/BRATS_000.nii.gz"}],
    }
    (root / "dataset.json").write_text(json.dumps(spec))
    differently = "names its channels twice, differently, in 'modality' and 'channel_names'"
    with pytest.raises(InputError, match=differently):
        datasets.decathlon(root)
    with pytest.raises(InputError, match=differently):
        dataset_names(image)
    spec["modality"] = spec["channel_names"] = {str(i): f"s{i}" for i in range(11)}
    (root / "dataset.json").write_text(json.dumps(spec))
    volume = image_from_array(np.zeros((8, 8, 8), np.int16), affine_from_spacing((3.0, 3.0, 3.0)))
    sitk.WriteImage(sitk.JoinSeries([volume] * 11), str(image))  # its 11 volumes, as the dataset.json names them
    datalist, _ = datasets.decathlon(root)
    assert datalist["training"][0]["channels"] == [f"s{i}" for i in range(11)]


def test_datalist_decathlon_checks_the_datasets_channels_against_the_configs(tmp_path, capsys):
    """``datalist decathlon --config`` matches the dataset.json's channel names to the configuration's channels (before:
    only the labels were matched: a 4D BraTS dataset for a one-channel CT model, a CT dataset for a four-channel MR
    model, or a sequence the model lacks gave a datalist, refused by ``train`` only once it read the first case; and
    nnU-Net v2's per-channel files, listed in file order (FLAIR first), were trained in that order as T1, T1c, T2,
    FLAIR: every sequence in another's channel, without a word)."""
    brain = tmp_path / "brain.json"
    brain.write_text(json.dumps(brain_config()))
    one = tiny_config("tiny-ct", labels=2)
    one["inputs"][0]["name"] = "CT"
    one["labels"][0]["name"], one["labels"][1]["name"] = "edema", "enhancing"
    ct = tmp_path / "ct.json"
    ct.write_text(json.dumps(one))
    label = (ball_phantom((8, 8, 8), (4, 4, 4), (2, 2, 2)) > 0).astype(np.uint8)
    labels = {"0": "background", "1": "edema", "2": "enhancing"}

    def dataset(name, channels, four_d=True):
        root = tmp_path / name
        count = len(channels)
        if four_d:  # MSD: one image per case, its volumes along the 4th axis
            image = root / "imagesTr" / "case_000.nii.gz"
            image.parent.mkdir(parents=True)
            affine = affine_from_spacing((3, 3, 3))
            volumes = [image_from_array(np.full((8, 8, 8), c, np.int16), affine) for c in range(count)]
            sitk.WriteImage(sitk.JoinSeries(volumes) if count > 1 else volumes[0], str(image))
            spec = {"modality": dict(enumerate(channels)), "training": [
                {"image": "./imagesTr/case_000.nii.gz", "label": "./labelsTr/case_000.nii.gz"}]}  # fmt: skip
        else:  # nnU-Net v2: one file per channel, case_000_000N
            for c in range(count):
                write(np.full((8, 8, 8), c, np.int16), root / "imagesTr" / f"case_000_{c:04d}.nii.gz")
            spec = {"channel_names": dict(enumerate(channels)), "file_ending": ".nii.gz"}
        write(label, root / "labelsTr" / "case_000.nii.gz")
        (root / "dataset.json").write_text(json.dumps({**spec, "labels": labels}))
        return root

    def datalist(root, config):
        out = tmp_path / f"{root.name}-{config.stem}.json"
        code = cli.main(["datalist", "decathlon", str(root), "--config", str(config), "--out", str(out)])
        return code, out, capsys.readouterr()

    brats = dataset("Task01_BrainTumour", ["FLAIR", "T1w", "t1gd", "T2w"])
    for root, config, says in [
        (brats, ct, "names 4 channels (FLAIR, T1w, t1gd, T2w); model 'tiny-ct' takes 1 (CT)"),
        (dataset("Task03_Liver", ["CT"]), brain, "names 1 channel (CT); model 'brats-train' takes 4 (T1, T1c, T2,"),
        (dataset("Task09_Dwi", ["FLAIR", "T1w", "t1gd", "DWI"]), brain,
         "'DWI' (channel 3 in dataset.json) names no channel of model 'brats-train'"),
        (dataset("Dataset002_Twice", ["T1", "T1w", "t1gd", "T2w"], four_d=False), brain, "both name channel T1"),
        (dataset("Task02_Heart", ["MRI"]), ct, "names MR images (MRI); model 'tiny-ct' takes CT"),
    ]:  # fmt: skip
        code, out, printed = datalist(root, config)
        assert code == 2 and says in printed.err and printed.err.count("\n") == 1, printed.err
        assert not out.exists()
    code, out, printed = datalist(brats, brain)  # the MSD 4D image: its names kept, each one a channel of the model
    assert code == 0, printed.err
    assert json.loads(out.read_text())["training"][0]["channels"] == ["FLAIR", "T1w", "t1gd", "T2w"]
    nnunet = dataset("Dataset001_BrainTumour", ["FLAIR", "T1w", "t1gd", "T2w"], four_d=False)
    code, out, printed = datalist(nnunet, brain)  # nnU-Net v2's files put in the model's channel order
    assert code == 0, printed.err
    images = json.loads(out.read_text())["training"][0]["image"]
    assert images == [f"imagesTr/case_000_000{c}.nii.gz" for c in (1, 2, 3, 0)]
    assert "T1 = imagesTr/case_000_0001.nii.gz (T1w)" in printed.out
    assert load_case(read_datalist(out)["training"][0], brain_config(), 8, (16, 16, 16)).image.shape[0] == 4


def test_datalist_totalsegmentator_refuses_a_configuration_that_takes_no_ct(tmp_path, capsys):
    """TotalSegmentator's cases are one CT each: a four-channel MR configuration (before: the datalist was written,
    and ``train`` refused at its first case, after reading it)."""
    root = totalsegmentator_dataset(tmp_path / "ts", cases=2)
    brain = brain_config()
    brain["labels"][0]["name"], brain["labels"][1]["name"] = (
        "liver",
        "spleen",
    )  # the dataset's organs: only channels differ
    config = tmp_path / "brain.json"
    config.write_text(json.dumps(brain))
    out = tmp_path / "list.json"
    assert cli.main(["datalist", "totalsegmentator", str(root), "--config", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    says = "TotalSegmentator's cases are one CT each; model 'brats-train' takes 4 channels (T1, T1c, T2, FLAIR)"
    assert says in err and err.count("\n") == 1, err
    assert not out.exists()


def one_case_liver_msd(root: Path):
    """A one-case MSD liver dataset at ``root`` (``imagesTr``, ``labelsTr``, ``dataset.json``); the phantom written."""
    image, masks = phantom(0)
    write(image, root / "imagesTr" / "liver_0.nii.gz")
    write(masks["liver"].astype(np.uint8), root / "labelsTr" / "liver_0.nii.gz")
    spec = {"labels": {"0": "background", "1": "liver"}, "modality": {"0": "CT"},
            "training": [{"image": "./imagesTr/liver_0.nii.gz", "label": "./labelsTr/liver_0.nii.gz"}]}  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(spec))
    return image, masks


def test_datalist_out_naming_the_datasets_own_dataset_json_is_refused_even_with_overwrite(tmp_path, capsys):
    """``datalist decathlon ROOT --out ROOT/dataset.json --overwrite`` (before: the dataset's own dataset.json, which
    the command had just read, replaced by the datalist: the dataset's labels and channel names lost)."""
    root = tmp_path / "Task03_Liver"
    image, masks = one_case_liver_msd(root)
    before = (root / "dataset.json").read_bytes()
    argv = ["datalist", "decathlon", str(root), "--out", str(root / "dataset.json"), "--overwrite"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "--out dataset.json is the dataset's own dataset.json, which this command reads" in err, err
    assert (root / "dataset.json").read_bytes() == before


def test_a_one_channel_datasets_modality_is_matched_to_any_models_modality():
    """``datalist decathlon --config`` on a one-channel dataset: its modality against the model's, whatever that is
    (before: any model modality but CT counted as MR, so an MRI dataset passed for a PET model, and a model whose
    modality said "MRI" was told apart from an "MR" dataset only by luck)."""
    from TokenUNetSegmentLib.pipeline.metadata import InputChannel

    where = Path("dataset.json")
    for dataset, modality, refused in [
        ("MRI", "PT", "names MR images (MRI); model 'm' takes PT"),
        ("CT", "PT", "names CT images (CT); model 'm' takes PT"),
        ("CT", "MRI", "names CT images (CT); model 'm' takes MRI"),
        ("MR", "CT", "names MR images (MR); model 'm' takes CT"),
        ("MRI", "MR", None),
        ("mr", "MRI", None),
        ("CT", "ct", None),
        ("T1", "PT", "names MR images (T1); model 'm' takes PT"),  # an MRI sequence says MR
        ("noNorm", "PT", None),  # a name that says no modality (nnU-Net's normalisation): not checked
        ("MRI", "", None),  # a model that says none: not checked
    ]:
        inputs = [InputChannel("image", modality)]
        if refused is None:
            assert datasets.model_channel_order([dataset], inputs, "m", where) == [0]
        else:
            with pytest.raises(InputError, match=re.escape(refused)):
                datasets.model_channel_order([dataset], inputs, "m", where)


def test_datalist_out_naming_one_of_the_datasets_own_images_or_labels_is_refused_even_with_overwrite(tmp_path, capsys):
    """``datalist ... --out imagesTr/case.nii.gz --overwrite``, or a link to a label map or a TotalSegmentator mask
    (before: only dataset.json, meta.csv, --table and --config were refused; the user's scan or label map was replaced
    by a JSON datalist)."""
    msd = tmp_path / "Task03_Liver"
    image, masks = one_case_liver_msd(msd)
    ts = totalsegmentator_dataset(tmp_path / "ts", cases=2)
    for index in (1, 2):
        write(image, tmp_path / "img" / f"img{index:04d}.nii.gz")
        write(masks["liver"].astype(np.uint8), tmp_path / "label" / f"label{index:04d}.nii.gz")
    (tmp_path / "link.nii.gz").symlink_to(msd / "labelsTr" / "liver_0.nii.gz")
    os.link(tmp_path / "label" / "label0002.nii.gz", tmp_path / "hard.nii.gz")
    folders = ["folders", "--images", str(tmp_path / "img"), "--labels", str(tmp_path / "label"), "--table", "btcv"]
    for layout, out, said in [
        (["decathlon", str(msd)], msd / "imagesTr" / "liver_0.nii.gz", "the image of case liver_0"),
        (["decathlon", str(msd)], tmp_path / "link.nii.gz", "the label map of case liver_0"),
        (["totalsegmentator", str(ts)], ts / "s0001/segmentations/spleen.nii.gz", "the spleen mask of case s0001"),
        (["totalsegmentator", str(ts)], ts / "s0000/ct.nii.gz", "the image of case s0000"),
        (folders, tmp_path / "hard.nii.gz", "the label map of case img0002"),
    ]:
        before = out.read_bytes()
        assert cli.main(["datalist", *layout, "--out", str(out), "--overwrite"]) == 2, out
        err = capsys.readouterr().err
        assert f"--out {out.name} is {said}, which the datalist lists" in err, err
        assert "write the datalist elsewhere" in err and out.read_bytes() == before
    out = tmp_path / "datalist.json"  # beside the dataset's folders: written
    assert cli.main(["datalist", *folders, "--out", str(out), "--overwrite"]) == 0
    assert read_datalist(out)["training"][0]["label"].endswith("label0001.nii.gz")


def test_datalist_out_inside_the_datasets_own_folders_is_refused_even_with_overwrite(tmp_path, capsys):
    """``--out`` naming a file in the dataset's image or label folders that the datalist does not list (an unlisted
    scan, the user's notes, a new file there) (before: written with ``--overwrite``, the unlisted scan replaced by a
    JSON datalist; a new JSON among the images) is refused, ``--overwrite`` or not; the dataset's root, beside
    ``dataset.json``, stays a place for the datalist."""
    msd = tmp_path / "Task03_Liver"
    image, masks = one_case_liver_msd(msd)
    write(image, msd / "imagesTr" / "unlisted_9.nii.gz")
    ts = totalsegmentator_dataset(tmp_path / "ts", cases=2)
    for index in (1, 2):
        write(image, tmp_path / "img" / f"img{index:04d}.nii.gz")
        write(masks["liver"].astype(np.uint8), tmp_path / "label" / f"label{index:04d}.nii.gz")
    (tmp_path / "img" / "notes.json").write_text("{}")
    folders = ["folders", "--images", str(tmp_path / "img"), "--labels", str(tmp_path / "label"), "--table", "btcv"]
    for layout, out, folder in [
        (["decathlon", str(msd)], msd / "imagesTr" / "unlisted_9.nii.gz", "imagesTr"),
        (["decathlon", str(msd)], msd / "labelsTr" / "new.json", "labelsTr"),
        (["totalsegmentator", str(ts)], ts / "s0001" / "datalist.json", "s0001"),
        (["totalsegmentator", str(ts)], ts / "s0000" / "segmentations" / "new.json", "segmentations"),
        (folders, tmp_path / "img" / "notes.json", "img"),
        (folders, tmp_path / "label" / "sub" / "new.json", "label"),
    ]:
        before = out.read_bytes() if out.exists() else None
        assert cli.main(["datalist", *layout, "--out", str(out), "--overwrite"]) == 2, out
        err = capsys.readouterr().err
        assert f"--out {out.name} is inside the dataset's folder {folder}" in err, err
        assert "write the datalist elsewhere" in err and err.count("\n") == 1, err
        assert (out.read_bytes() if out.exists() else None) == before
    assert cli.main(["datalist", "decathlon", str(msd), "--out", str(msd / "datalist.json")]) == 0
    assert cli.main(["datalist", "totalsegmentator", str(ts), "--out", str(ts / "datalist.json")]) == 0


def one_case_liver_mr(root: Path):
    """``one_case_liver_msd`` as an MRI dataset (intensities 0-400, ``"modality": {"0": "MRI"}``)."""
    image, masks = one_case_liver_msd(root)
    write((image.astype(np.int32) + 1000) // 5, root / "imagesTr" / "liver_0.nii.gz")
    spec = json.loads((root / "dataset.json").read_text())
    spec["modality"] = {"0": "MRI"}
    (root / "dataset.json").write_text(json.dumps(spec))


def test_train_refuses_a_datalist_of_mr_images_for_a_ct_configuration(tmp_path, capsys, monkeypatch):
    """An MRI dataset listed without ``--config`` (before: the datalist kept no word of the modality, and ``train``
    with a CT configuration windowed the MR intensities as HU without a word; the same for the MSD dataset.json used
    as the datalist) is refused before any case is read: the datalist keeps the dataset's channel names as MSD's
    ``"modality"``, and ``train`` matches them to the configuration's inputs as ``datalist --config`` does."""
    from TokenUNetSegmentLib.pipeline.training import trainer

    root = tmp_path / "Task03_LiverMR"
    one_case_liver_mr(root)
    out = tmp_path / "list.json"
    assert cli.main(["datalist", "decathlon", str(root), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["modality"] == {"0": "MRI"}
    (tmp_path / "ct.json").write_text(json.dumps(model_config("tiny-ct")))
    monkeypatch.setattr(trainer, "load_case", lambda *a, **k: pytest.fail("a case was read"))
    for datalist in (out, root / "dataset.json"):
        run = tmp_path / "run"
        argv = ["train", str(datalist), "--config", str(tmp_path / "ct.json"), "--out", str(run), "--steps", "1"]
        assert cli.main(argv) == 2, datalist
        err = capsys.readouterr().err
        assert "names MR images (MRI); model 'tiny-ct' takes CT" in err and err.count("\n") == 1, err
        assert not run.exists()
    ts = totalsegmentator_dataset(tmp_path / "ts", cases=2)  # TotalSegmentator's cases are CT
    assert cli.main(["datalist", "totalsegmentator", str(ts), "--out", str(tmp_path / "ts.json")]) == 0
    assert json.loads((tmp_path / "ts.json").read_text())["modality"] == {"0": "CT"}
    assert datasets.model_channel_order(["CT"], parse_config(model_config()).inputs, "m", out) == [0]


def test_a_case_without_air_or_fat_for_a_ct_configuration_is_warned_about(tmp_path, caplog):
    """A datalist that says nothing of its modality (written by hand, or by the folders layout) listing an MRI for a
    CT configuration (before: trained as HU without a word): a warning names the case and what it lacks."""
    root = tmp_path / "mr"
    one_case_liver_mr(root)
    entry = {"image": "imagesTr/liver_0.nii.gz", "label": "labelsTr/liver_0.nii.gz", "labels": {"1": "liver"},
             "partial": False}  # fmt: skip
    (root / "list.json").write_text(json.dumps({"training": [entry]}))
    with caplog.at_level("WARNING"):
        load_case(read_datalist(root / "list.json")["training"][0], model_config(), 8, (16, 16, 16))
    says = "case liver_0: its image has no value below -50 (lowest 0: no air, lung or fat): not a CT in Hounsfield"
    assert says in caplog.text and "windows CT values (-200 to 300 HU)" in caplog.text, caplog.text
    caplog.clear()
    one_case_liver_msd(tmp_path / "ct")
    (tmp_path / "ct" / "list.json").write_text(json.dumps({"training": [entry]}))
    with caplog.at_level("WARNING"):
        load_case(read_datalist(tmp_path / "ct" / "list.json")["training"][0], model_config(), 8, (16, 16, 16))
    assert "Hounsfield" not in caplog.text


@pytest.mark.parametrize(
    ("modality", "refused"),
    [
        ({"0": "T2"}, "MR images (T2)"),  # nnU-Net v2 / MSD name one MRI channel by its sequence
        ({"0": "T1w"}, "MR images (T1w)"),
        ({"0": "FLAIR"}, "MR images (FLAIR)"),
        ({"0": "ADC"}, "MR images (ADC)"),
        ({"0": "mr t2"}, "MR images (mr t2)"),
        ("MRI", "MR images (MRI)"),  # a plain string, as Auto3DSeg's task file writes it
        ({"0": "ct"}, None),
        ("CT", None),
        ({"0": "noNorm"}, None),  # nnU-Net's normalisation names say no modality: the case check warns instead
        ("", None),  # says nothing
    ],
)
def test_train_matches_the_modality_a_datalist_names_in_other_spellings(
    tmp_path, capsys, monkeypatch, modality, refused
):
    """A one-channel MRI named by its sequence (nnU-Net v2's ``"channel_names": {"0": "T2"}``, MSD's ``"ADC"``)
    passed as CT (before: only "MR"/"MRI" were understood, so a T2 datalist trained as HU), and a datalist whose
    ``"modality"`` is one string (before: refused as "without numbering them 0, 1, ...", where it trained before
    the datalist's modality was read): both say what the images are, and train refuses an MRI for a CT model."""
    from TokenUNetSegmentLib.pipeline.training import trainer

    root = tmp_path / "Task03_Liver"
    one_case_liver_msd(root)
    listed = read_datalist(root / "dataset.json")["training"][0]
    entry = {"image": listed["image"][0] if isinstance(listed["image"], list) else listed["image"],
             "label": listed["label"], "labels": {"1": "liver"}}  # fmt: skip
    (root / "list.json").write_text(json.dumps({"modality": modality, "training": [entry]}))
    (tmp_path / "ct.json").write_text(json.dumps(model_config("tiny-ct")))
    monkeypatch.setattr(trainer, "load_case", lambda *a, **k: pytest.fail("a case was read"))
    argv = ["train", str(root / "list.json"), "--config", str(tmp_path / "ct.json"), "--out", str(tmp_path / "run"),
            "--steps", "1"]  # fmt: skip
    if refused:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert f"names {refused}; model 'tiny-ct' takes CT" in err and err.count("\n") == 1, err
    else:
        with pytest.raises(pytest.fail.Exception, match="a case was read"):
            cli.main(argv)


def test_a_ct_cropped_inside_the_body_is_not_warned_about_but_an_mri_with_ringing_is(tmp_path, caplog):
    """The warning for a CT configuration's case without air: a CT cropped inside the body (a liver region: fat at
    -150 HU is its lowest value) (before: "not a CT in Hounsfield units (an MRI?)", its threshold -200 below fat) is
    not warned about; an MRI resampled with overshoot (lowest -30) still is."""
    root = tmp_path / "ct"
    image, _ = one_case_liver_msd(root)
    entry = {"image": "imagesTr/liver_0.nii.gz", "label": "labelsTr/liver_0.nii.gz", "labels": {"1": "liver"},
             "partial": False}  # fmt: skip
    (root / "list.json").write_text(json.dumps({"training": [entry]}))
    for lowest, warned in [(-150, False), (-30, True)]:
        values = np.maximum(image, -150) if lowest == -150 else (image.astype(np.int32) + 1000) // 5 - 30
        write(values.astype(np.int16), root / "imagesTr" / "liver_0.nii.gz")
        caplog.clear()
        with caplog.at_level("WARNING"):
            load_case(read_datalist(root / "list.json")["training"][0], model_config(), 8, (16, 16, 16))
        assert ("Hounsfield" in caplog.text) == warned, (lowest, caplog.text)


def test_datalist_out_naming_an_image_file_is_refused_even_outside_the_listed_folders(tmp_path, capsys):
    """``--out Task/imagesTs/liver_99.nii.gz --overwrite``: a test scan, in a folder the datalist lists nothing from
    (before: replaced by the JSON datalist, exit 0). A datalist is JSON: an --out named as an image or label map
    (.nii.gz, .nii, .nrrd, .mha, .mhd, any case) is refused before anything is written, the file kept."""
    root = tmp_path / "Task03_Liver"
    image, _ = one_case_liver_msd(root)
    write(image, root / "imagesTs" / "liver_99.nii.gz")
    for out in (root / "imagesTs" / "liver_99.nii.gz", tmp_path / "new.NRRD"):
        before = out.read_bytes() if out.exists() else None
        assert cli.main(["datalist", "decathlon", str(root), "--out", str(out), "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert f"--out {out.name} names an image file; a datalist is JSON" in err and err.count("\n") == 1, err
        assert (out.read_bytes() if out.exists() else None) == before


def test_datalist_out_in_a_dataset_folder_spelled_another_way_is_refused(tmp_path, capsys, monkeypatch):
    """Two spellings of one folder that ``realpath`` does not unify (macOS and Windows: ``imagestr`` for
    ``imagesTr`` on a case-insensitive disk) are compared as the same folder on disk (before: by their resolved
    text, so ``--out Task/imagestr/list.json`` was written among the images). Simulated on Linux by a link to the
    folder with ``realpath`` that resolves no link."""
    import os

    root = tmp_path / "Task03_Liver"
    one_case_liver_msd(root)
    (tmp_path / "imagestr").symlink_to(root / "imagesTr")
    monkeypatch.setattr(os.path, "realpath", lambda path, strict=False: os.path.abspath(path))
    out = tmp_path / "imagestr" / "list.json"
    assert cli.main(["datalist", "decathlon", str(root), "--out", str(out)]) == 2
    assert "--out list.json is inside the dataset's folder imagesTr" in capsys.readouterr().err
    assert not out.exists()
