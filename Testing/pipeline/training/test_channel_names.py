"""Channel files placed in a multi-channel model's channels by what they hold, never by their position: nnU-Net v2's
per-channel files (``case_0000.nii.gz`` ... ``case_0003.nii.gz``, named by its dataset.json's ``channel_names``)
through ``datalist``, ``train`` and ``batch --datalist``, hand-edited datalists, and the dataset.json checks that
``datalist decathlon`` makes before it writes."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import channel_files
from helpers.packages import ball_phantom, make_package, tiny_config
from TokenUNetSegmentLib.pipeline import cli
from TokenUNetSegmentLib.pipeline.errors import InputError
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing, image_from_array
from TokenUNetSegmentLib.pipeline.training import datasets, trainer
from TokenUNetSegmentLib.pipeline.training.data import load_case, read_datalist

NNUNET_ORDER = ("FLAIR", "T1w", "t1gd", "T2w")  # the usual BraTS conversion's channel_names
OWN = {"T1w": "t1", "t1gd": "t1c", "T2w": "t2", "FLAIR": "flair"}  # the model's channels: T1, T1c, T2, FLAIR
SHAPE = (16, 16, 16)
AFFINE = affine_from_spacing((2.0, 2.0, 2.0))
ROI = (16, 16, 16)


def brain_config(model_id="brats-names"):
    return channel_files.brain_config(model_id)


def sequence(name: str, case: int) -> np.ndarray:
    """A volume that tells its sequence apart: a ball whose radius and brightness are the sequence's own."""
    index = NNUNET_ORDER.index(name)
    return ball_phantom(SHAPE, (8 - case, 8, 8), (2 + index, 3, 4), 100.0 + 150 * index, 5.0 * index)


def write(array, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image_from_array(array, AFFINE), str(path))


def nnunet_dataset(root: Path, cases=2, channel_names=NNUNET_ORDER, sequences=True) -> Path:
    """nnU-Net v2 raw: imagesTr/BRATS_00N_000C.nii.gz, labelsTr/BRATS_00N.nii.gz, dataset.json; and a copy of each
    case's files named for the model's channels (BRATS_00N_t1.nii.gz ...) beside the dataset."""
    for case in range(cases):
        for index, name in enumerate(NNUNET_ORDER):
            volume = sequence(name, case)
            write(volume, root / "imagesTr" / f"BRATS_00{case}_{index:04d}.nii.gz")
            if sequences:
                write(volume, root.parent / "own" / f"BRATS_00{case}_{OWN[name]}.nii.gz")
        label = (ball_phantom(SHAPE, (8 - case, 8, 8), (3, 4, 5)) > 0).astype(np.uint8)
        label += (ball_phantom(SHAPE, (8 - case, 8, 8), (1, 1, 1)) > 0).astype(np.uint8)
        write(label, root / "labelsTr" / f"BRATS_00{case}.nii.gz")
    spec = {
        "channel_names": dict(enumerate(channel_names)),
        "labels": {"background": 0, "edema": 1, "enhancing": 2},
        "numTraining": cases,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


def by_sequence_files(root: Path, case: int) -> list[str]:
    """The case's files named for the model's channels, in its order (T1, T1c, T2, FLAIR)."""
    return [str(root.parent / "own" / f"BRATS_00{case}_{n}.nii.gz") for n in ("t1", "t1c", "t2", "flair")]


def test_nnunet_channel_files_train_and_segment_in_the_channels_their_names_say(tmp_path, monkeypatch, capsys):
    """``datalist decathlon`` without ``--config`` on nnU-Net v2 files whose channel_names are FLAIR, T1w, t1gd, T2w;
    then ``train`` and ``batch --datalist`` with a model whose channels are T1, T1c, T2, FLAIR. Before: the files were
    listed in file order and taken in that order, so every sequence trained (and segmented) in another's channel
    (FLAIR as T1, T1w as T1c, ...) without a word. Now the datalist says what each file holds and each goes to the
    channel its name says: each channel of every training case equals that sequence's own file's."""
    root = nnunet_dataset(tmp_path / "Dataset001_BrainTumour")
    out = tmp_path / "list.json"
    monkeypatch.setenv("TOKENUNET_MEMORY_LIMIT", "1K")  # datalist reads headers only: no memory check of its own
    assert cli.main(["datalist", "decathlon", str(root), "--out", str(out)]) == 0
    monkeypatch.delenv("TOKENUNET_MEMORY_LIMIT")
    written = json.loads(out.read_text())["training"]
    assert written[0]["channels"] == list(NNUNET_ORDER)  # what each listed file holds
    config = tmp_path / "config.json"
    config.write_text(json.dumps(brain_config()))
    loaded = {}

    def spy(entry, *args, **kwargs):
        case = load_case(entry, *args, **kwargs)
        loaded[entry["name"]] = case.image
        return case

    monkeypatch.setattr(trainer, "load_case", spy)
    steps = ["--steps", "1", "--val-every", "1", "--patch-size", *map(str, ROI), "--select", "last", "--threads", "1"]
    run = tmp_path / "run"
    assert cli.main(["train", str(out), "--config", str(config), "--out", str(run), *steps]) == 0
    assert sorted(loaded) == ["BRATS_000", "BRATS_001"]
    for case in range(2):  # each channel holds the sequence the model names it for
        entry = {**read_datalist(out)["training"][case], "image": by_sequence_files(root, case)}
        del entry["channels"]
        expected = load_case(entry, brain_config(), 8, ROI).image
        for channel in range(4):
            assert np.array_equal(loaded[f"BRATS_00{case}"][channel], expected[channel]), (case, channel)
    # batch --datalist: each case's report says which file went to which channel
    package = make_package(tmp_path / "pkg", brain_config())
    fast = ["--no-overview", "--no-heatmaps", "--progress", "none"]
    batch = ["batch", "--datalist", str(out), "--model", str(package), "--out", str(tmp_path / "b"), *fast]
    assert cli.main(batch) == 0
    report = json.loads((tmp_path / "b" / "BRATS_000" / "report.json").read_text())
    files = {name: Path(path).name for name, path in report["inputs"].items()}
    assert files == {
        "T1": "BRATS_000_0001.nii.gz",
        "T1c": "BRATS_000_0002.nii.gz",
        "T2": "BRATS_000_0003.nii.gz",
        "FLAIR": "BRATS_000_0000.nii.gz",
    }


def test_nnunet_channel_files_given_to_segment_in_file_order_go_where_their_dataset_json_says(tmp_path):
    """``segment imagesTr/X_0000 ... X_0003``: nnU-Net's numbers say no sequence, its dataset.json beside imagesTr
    does (before: taken in the given order, FLAIR as T1); the same for an old datalist that lists them without
    ``channels`` (as ``datalist decathlon`` wrote it)."""
    root = nnunet_dataset(tmp_path / "Dataset001_BrainTumour", cases=1)
    package = make_package(tmp_path / "pkg", brain_config())
    files = [str(root / "imagesTr" / f"BRATS_000_{c:04d}.nii.gz") for c in range(4)]
    fast = ["--no-overview", "--no-heatmaps", "--progress", "none"]
    assert cli.main(["segment", *files, "--model", str(package), "--out", str(tmp_path / "s"), *fast]) == 0
    report = json.loads((tmp_path / "s" / "report.json").read_text())
    assert [Path(p).name[-11:-7] for p in report["inputs"].values()] == ["0001", "0002", "0003", "0000"]
    from TokenUNetSegmentLib.pipeline.metadata import parse_config
    from TokenUNetSegmentLib.pipeline.run_inputs import channel_items

    items, _ = channel_items(files, parse_config(brain_config(), "test"), "brats-names")  # segment()'s list: the same
    assert [Path(p).name[-11:-7] for p in items] == ["0001", "0002", "0003", "0000"]
    entry = {"name": "BRATS_000", "image": files, "label": str(root / "labelsTr" / "BRATS_000.nii.gz")}
    (tmp_path / "old.json").write_text(json.dumps({"labels": {"1": "edema", "2": "enhancing"}, "training": [entry]}))
    case = load_case(read_datalist(tmp_path / "old.json")["training"][0], brain_config(), 8, ROI)
    expected = load_case({**read_datalist(tmp_path / "old.json")["training"][0], "image": by_sequence_files(root, 0)},
                         brain_config(), 8, ROI)  # fmt: skip
    assert np.array_equal(case.image, expected.image)


def test_hand_edited_or_unnamed_channel_files_are_refused_in_one_line(tmp_path, capsys):
    """A datalist whose ``channels`` a user edited by hand (a name the model lacks, one sequence twice, a count other
    than the files'), and nnU-Net-numbered files copied out of their dataset (nothing says what each holds): ``train``
    refuses each before any training, exit 2, one line (before: the files trained in the listed order)."""
    root = nnunet_dataset(tmp_path / "Dataset001_BrainTumour", cases=1)
    out = tmp_path / "list.json"
    assert cli.main(["datalist", "decathlon", str(root), "--out", str(out)]) == 0
    config = tmp_path / "config.json"
    config.write_text(json.dumps(brain_config()))
    loose = tmp_path / "loose"
    shutil.copytree(root / "imagesTr", loose / "imagesTr")  # no dataset.json beside
    shutil.copytree(root / "labelsTr", loose / "labelsTr")
    original = json.loads(out.read_text())
    cases = [
        (["FLAIR", "T1w", "t1gd", "DWI"], None, "'DWI' (datalist training[0]'s 'channels' for BRATS_000_0003.nii.gz) "
         "names no channel of model 'brats-names'"),
        (["FLAIR", "T1w", "T1", "T2w"], None, "both name channel T1"),
        (["FLAIR", "T1w", "t1gd"], None, "datalist training[0]: 'channels' names 3 channels; 'image' lists 4 files"),
        (None, str(loose), "nothing says what BRATS_000_0000.nii.gz and its other nnU-Net channel files hold"),
    ]  # fmt: skip
    for index, (names, dataroot, says) in enumerate(cases):
        data = json.loads(json.dumps(original))
        if names is None:
            del data["training"][0]["channels"]
        else:
            data["training"][0]["channels"] = names
        if dataroot:
            data["dataroot"] = dataroot
        edited = tmp_path / f"edited{index}.json"
        edited.write_text(json.dumps(data))
        run = tmp_path / f"run{index}"
        code = cli.main(["train", str(edited), "--config", str(config), "--out", str(run), "--steps", "1"])
        err = capsys.readouterr().err
        assert code == 2 and says in err and err.count("\n") == 1, err
        assert not (run / "checkpoints").exists()


def test_datalist_refuses_datasets_whose_channels_cannot_be_told_apart_or_whose_images_differ(tmp_path, capsys):
    """Refused by ``datalist decathlon`` before it writes, naming the odd case: a dataset.json naming one channel twice
    (before: a datalist whose files no name could place); an MSD dataset whose images are 4D but for one 3D case
    (before: found by ``train`` only when it reached that case, after reading the others); a case listing fewer
    channel files than the dataset.json names."""
    twice = nnunet_dataset(tmp_path / "Dataset002_Twice", cases=1, channel_names=("T1", "T1w", "t1gd", "T2w"),
                           sequences=False)  # fmt: skip
    msd = tmp_path / "Task01_BrainTumour"
    training = []
    for case in range(3):
        name = f"BRATS_00{case}.nii.gz"
        volumes = [image_from_array(sequence(n, case), AFFINE) for n in NNUNET_ORDER]
        (msd / "imagesTr").mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(sitk.JoinSeries(volumes) if case != 1 else volumes[0], str(msd / "imagesTr" / name))
        write((sequence("FLAIR", case) > 50).astype(np.uint8), msd / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    spec = {"modality": dict(enumerate(NNUNET_ORDER)), "labels": {"0": "background", "1": "edema"}}
    (msd / "dataset.json").write_text(json.dumps({**spec, "training": training}))
    lists = tmp_path / "Task09_Lists"
    for case in range(2):
        for index in range(4):
            write(sequence(NNUNET_ORDER[index], case), lists / "imagesTr" / f"c{case}_{index:04d}.nii.gz")
        write(np.zeros(SHAPE, np.uint8), lists / "labelsTr" / f"c{case}.nii.gz")
    files = [[f"imagesTr/c{case}_{index:04d}.nii.gz" for index in range(4 - case)] for case in range(2)]
    listed = [{"image": f, "label": f"labelsTr/c{case}.nii.gz"} for case, f in enumerate(files)]
    (lists / "dataset.json").write_text(json.dumps({**spec, "training": listed}))
    for root, says in [
        (twice, "names channels 0 and 1 alike ('T1', 'T1w'): nothing tells their images apart"),
        (msd, "imagesTr/BRATS_001.nii.gz is one 3D volume, but"),
        (lists, "lists 3 images for the case of imagesTr/c1_0000.nii.gz, but names 4 channels"),
    ]:
        with pytest.raises(InputError) as refused:
            datasets.decathlon(root)
        assert says in refused.value.message
        out = tmp_path / f"{root.name}.json"
        assert cli.main(["datalist", "decathlon", str(root), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert not out.exists()


def test_datalist_config_takes_a_catalog_model_id(tmp_path, capsys):
    """``datalist decathlon ROOT --config abdomen-organs-3mm-demo`` (as ``segment --model`` takes it; before: "the
    training configuration abdomen-organs-3mm-demo not found"), and ``train --config`` reads the same id."""
    from TokenUNetSegmentLib.pipeline.training.command import load_config

    root = tmp_path / "Task03_Liver"
    write(np.zeros(SHAPE, np.int16), root / "imagesTr" / "liver_0.nii.gz")
    write(np.zeros(SHAPE, np.uint8), root / "labelsTr" / "liver_0.nii.gz")
    spec = {"modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver"},
            "training": [{"image": "./imagesTr/liver_0.nii.gz", "label": "./labelsTr/liver_0.nii.gz"}]}  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(spec))
    out = tmp_path / "list.json"
    command = ["datalist", "decathlon", str(root), "--config", "abdomen-organs-3mm-demo", "--out", str(out)]
    assert cli.main(command) == 0, capsys.readouterr().err
    assert "model labels found: liver" in capsys.readouterr().out
    assert load_config("abdomen-organs-3mm-demo")["id"] == "abdomen-organs-3mm-demo"
    with pytest.raises(Exception, match="not found"):
        load_config("no-such-model")


def test_nnunet_channel_files_in_the_folders_layout_point_to_the_decathlon_layout(tmp_path, capsys):
    """``datalist folders --images imagesTr --labels labelsTr`` on nnU-Net's channel files: the case number is the last
    number of a name, which is the channel's (before: "... both have case number 0 (keep one file per case in the
    folder)", which no nnU-Net dataset can do)."""
    root = nnunet_dataset(tmp_path / "Dataset001_BrainTumour", sequences=False)
    out = tmp_path / "list.json"
    given = ["--images", str(root / "imagesTr"), "--labels", str(root / "labelsTr"), "--table", "btcv"]
    assert cli.main(["datalist", "folders", *given, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "use the decathlon layout with its dataset.json" in err and err.count("\n") == 1, err
    assert not out.exists()


def test_a_resume_whose_files_went_to_other_channels_is_refused(tmp_path, capsys):
    """``train --resume`` after the datalist's ``channels`` were edited (or the datalist written again, as this change
    does for datalists that listed nnU-Net files in file order): the same files, so before the checkpoint's record
    matched and the run resumed with its sequences fed to other channels than its weights learned."""
    root = nnunet_dataset(tmp_path / "Dataset001_BrainTumour", cases=1, sequences=False)
    out = tmp_path / "list.json"
    assert cli.main(["datalist", "decathlon", str(root), "--out", str(out)]) == 0
    config = tmp_path / "config.json"
    config.write_text(json.dumps(brain_config()))
    run = tmp_path / "run"
    steps = ["--val-every", "1", "--patch-size", *map(str, ROI), "--select", "last", "--threads", "1"]
    assert cli.main(["train", str(out), "--config", str(config), "--out", str(run), "--steps", "1", *steps]) == 0
    data = json.loads(out.read_text())
    data["training"][0]["channels"] = ["T2w", "T1w", "t1gd", "FLAIR"]  # FLAIR and T2 swapped
    out.write_text(json.dumps(data))
    capsys.readouterr()
    resume = ["train", str(out), "--config", str(config), "--out", str(run), "--steps", "2", "--resume", *steps]
    assert cli.main(resume) == 2
    err = capsys.readouterr().err
    assert "training cases differ from the run in" in err and "1 fed to other channels" in err, err


def test_numbered_files_a_dataset_json_does_not_list_are_not_named_by_it(tmp_path):
    """An MSD dataset.json that lists its 4D images names none of the numbered files a user split one into (imagesTs/
    X_0000 ...): they are not named by it (it may be another dataset's order) and run as given, as before; nnU-Net v1's
    dataset.json, which lists ``case.nii.gz`` for the files ``case_000N.nii.gz``, names them."""
    from TokenUNetSegmentLib.pipeline.channel_stack import nnunet_file_names

    root = tmp_path / "Task01_BrainTumour"
    files = [root / "imagesTs" / f"X_{c:04d}.nii.gz" for c in range(4)]
    for index, file in enumerate(files):
        write(sequence(NNUNET_ORDER[index], 0), file)
    spec = {"modality": dict(enumerate(NNUNET_ORDER)), "labels": {"0": "background", "1": "edema"}}
    (root / "dataset.json").write_text(json.dumps({**spec, "test": ["./imagesTs/Y.nii.gz"]}))
    assert nnunet_file_names(files, "--channels") is None
    (root / "dataset.json").write_text(json.dumps({**spec, "test": ["./imagesTs/X.nii.gz"]}))  # nnU-Net v1
    assert nnunet_file_names(files, "--channels")[0] == list(NNUNET_ORDER)


def test_batch_resume_runs_numbered_files_again_when_their_dataset_json_names_them_otherwise(tmp_path):
    """``batch --resume`` on nnU-Net-numbered files that its datalist does not name (an old datalist): their channels
    come from the dataset.json beside ``imagesTr``, so a result stays valid only while that file is unchanged. Before:
    the stamp held the files alone, so a dataset.json corrected afterwards (or a result made before the files were
    placed by it, in file order) was skipped as done, its channels still the old ones."""
    root = nnunet_dataset(tmp_path / "Dataset001_BrainTumour", cases=1, sequences=False)
    files = [str(root / "imagesTr" / f"BRATS_000_{c:04d}.nii.gz") for c in range(4)]
    entry = {"name": "BRATS_000", "image": files, "label": str(root / "labelsTr" / "BRATS_000.nii.gz")}
    datalist = tmp_path / "old.json"
    datalist.write_text(json.dumps({"labels": {"1": "edema", "2": "enhancing"}, "training": [entry]}))
    package = make_package(tmp_path / "pkg", brain_config())
    fast = ["--no-overview", "--no-heatmaps", "--progress", "none"]
    batch = ["batch", "--datalist", str(datalist), "--model", str(package), "--out", str(tmp_path / "b"), *fast]
    batch += ["--section", "training"]

    def run() -> tuple[str, dict]:
        assert cli.main([*batch, "--resume"]) == 0
        status = json.loads((tmp_path / "b" / "batch.json").read_text())["cases"][0]["status"]
        report = json.loads((tmp_path / "b" / "BRATS_000" / "report.json").read_text())
        return status, {name: Path(path).name[-11:-7] for name, path in report["inputs"].items()}

    assert run() == ("done", {"T1": "0001", "T1c": "0002", "T2": "0003", "FLAIR": "0000"})
    assert run()[0] == "skipped"  # nothing changed
    spec = json.loads((root / "dataset.json").read_text())
    spec["channel_names"] = dict(enumerate(("T2w", "T1w", "t1gd", "FLAIR")))  # corrected: _0000 is T2, _0003 FLAIR
    (root / "dataset.json").write_text(json.dumps(spec))
    assert run() == ("done", {"T1": "0001", "T1c": "0002", "T2": "0000", "FLAIR": "0003"})


def test_batch_refuses_channels_that_are_no_list_of_names_saying_they_may_name_files(tmp_path):
    """``batch --datalist`` with ``"channels"`` that is no list of names: the refusal says what ``"channels"`` is now
    (what each file, or each volume of one 4D image, holds) with an example, as ``train``'s does (before: "names the
    volumes of one 4D image", false beside a list of files, and no hint)."""
    from TokenUNetSegmentLib.pipeline.batch_cases import cases_from_datalist

    root = nnunet_dataset(tmp_path / "Dataset001_BrainTumour", cases=1, sequences=False)
    files = [str(root / "imagesTr" / f"BRATS_000_{c:04d}.nii.gz") for c in range(4)]
    for bad in ("FLAIR", ["FLAIR", 1, "t1gd", "T2w"], ["FLAIR", " ", "t1gd", "T2w"]):
        datalist = tmp_path / "list.json"
        datalist.write_text(json.dumps({"training": [{"name": "BRATS_000", "image": files, "channels": bad}]}))
        with pytest.raises(InputError) as refused:
            cases_from_datalist(datalist)
        assert "what each file of 'image' (or each volume of one 4D image) holds" in refused.value.message, bad
        assert '"channels": ["FLAIR", "T1w", "t1gd", "T2w"]' in refused.value.hint


def test_a_case_with_another_count_of_channels_than_the_model_is_refused_saying_what_to_do(tmp_path, capsys):
    """Four sequence files per case for a three-channel configuration: named in the datalist's ``"channels"``
    (``channels.order_named_files``) or not (``load_case``), ``train`` refuses in one line that says what to do
    (before: "... has 4 image channels; the model takes 3" and no hint)."""
    root = nnunet_dataset(tmp_path / "Dataset001_BrainTumour", cases=1)
    out = tmp_path / "list.json"
    assert cli.main(["datalist", "decathlon", str(root), "--out", str(out)]) == 0
    config = tiny_config("brats-three", in_channels=3, labels=2, roi=ROI, intensity={"method": "zscore"})
    for entry, name in zip(config["inputs"], ("T1", "T1c", "T2"), strict=True):
        entry.update(name=name, modality="MR")
    config["labels"][0]["name"], config["labels"][1]["name"] = "edema", "enhancing"
    (tmp_path / "config.json").write_text(json.dumps(config))
    unnamed = json.loads(out.read_text())
    del unnamed["modality"]  # the datalist's own channel names: checked first (below)
    (tmp_path / "cases.json").write_text(json.dumps(unnamed))
    del unnamed["training"][0]["channels"]
    (tmp_path / "unnamed.json").write_text(json.dumps(unnamed))
    for datalist, says, hint in [
        (out, "list.json names 4 channels (FLAIR, T1w, t1gd, T2w); model 'brats-three' takes 3 (T1, T1c, T2)",
         "(choose the configuration of a model for this dataset's images)"),
        (tmp_path / "cases.json", "has 4 image channels (FLAIR, T1w, t1gd, T2w); the model takes 3 (T1, T1c, T2)",
         "(give one file per model channel, or choose a model that takes 4)"),
        (tmp_path / "unnamed.json", "has 4 image channels; the model takes 3 (T1, T1c, T2)",
         "(list one image per model channel in 'image', or train a configuration whose 'inputs' name 4)"),
    ]:  # fmt: skip
        run = ["train", str(datalist), "--config", str(tmp_path / "config.json"), "--out", str(tmp_path / "run")]
        assert cli.main([*run, "--steps", "1"]) == 2
        err = capsys.readouterr().err
        assert says in err and hint in err and err.count("\n") == 1, err
