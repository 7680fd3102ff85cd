"""The training tool: a few steps on a tiny synthetic dataset give a package that loads and segments;
checkpoints, resume, the log, the CLI, and data-parallel training under torchrun (gloo, CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.packages import dice
from helpers.paths import MODULE_DIR
from helpers.training_data import phantom_case, train_config, write_dataset
from TokenUNetSegmentLib.pipeline import cli
from TokenUNetSegmentLib.pipeline.errors import InputError
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing
from TokenUNetSegmentLib.pipeline.package_loader import load_package
from TokenUNetSegmentLib.pipeline.segmentation import segment
from TokenUNetSegmentLib.pipeline.training import Recipe, train
from TokenUNetSegmentLib.pipeline.training.data import (
    UNKNOWN,
    crop_size,
    is_lateralised,
    label_lookup,
    missing_labels,
    pad_for_crop,
    training_transforms,
)


@pytest.fixture(scope="module")
def datalist(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("train") / "data")


def log_records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "train.log").read_text().splitlines()]


def test_few_steps_give_a_package_that_loads_and_segments(datalist, tmp_path):
    package_path = train(datalist, train_config(), tmp_path, Recipe(steps=4, batch_size=2, val_every=2, threads=1))
    assert package_path == tmp_path / "package"
    package = load_package(package_path)  # validates metadata and SHA256
    assert package.id == "tiny-trained"
    record = package.config.training
    assert record["steps_done"] == 4 and record["world_size"] == 1
    assert [h["step"] for h in record["metrics"]["history"]] == [2, 4]
    assert set(record["metrics"]["best"]["dice"]) == {"organ1", "organ2"}
    assert record["data"]["validated_on"] == "validation"
    assert set(record["data"]["training"][0]["files"]) == {"case0.nii.gz", "case0_seg.nii.gz"}
    assert record["recipe"]["optimizer"] == "sgd" and record["recipe"]["loss"].startswith("Dice + cross-entropy")
    assert (tmp_path / "checkpoints" / "best.pt").exists() and (tmp_path / "checkpoints" / "last.pt").exists()
    events = [r["event"] for r in log_records(tmp_path)]
    assert events == ["start", "validation", "validation", "end"]
    image, _ = phantom_case()
    result = segment([(image.astype(np.float32), affine_from_spacing((2.0, 2.0, 2.0)))], package, with_token_maps=False)
    assert result.labels.shape == image.shape
    assert [label.name for label in result.label_table] == ["organ1", "organ2"]
    assert "# tiny-trained" in (package_path / "docs" / "README.md").read_text()


def test_resume_continues_from_the_last_checkpoint(datalist, tmp_path):
    train(datalist, train_config(), tmp_path, Recipe(steps=2, batch_size=1, val_every=2, threads=1))
    package = train(
        datalist, train_config(), tmp_path, Recipe(steps=4, batch_size=1, val_every=2, threads=1), resume=True
    )
    events = [(r["event"], r.get("step")) for r in log_records(tmp_path)]
    assert ("resume", 2) in events and events[-1] == ("end", 4)
    history = load_package(package).config.training["metrics"]["history"]
    assert [h["step"] for h in history] == [2, 4]  # the first run's validation is kept


def test_training_learns_the_phantom(datalist, tmp_path):
    recipe = Recipe(steps=120, batch_size=2, val_every=20, optimizer="adamw", learning_rate=1e-2, threads=1)
    recipe.augmentation = 0.5
    config = train_config()
    config["architecture"]["parameters"]["channels"] = [8, 16, 32, 64]
    package = load_package(train(datalist, config, tmp_path, recipe))
    best = package.config.training["metrics"]["best"]
    assert best["dice"]["organ1"] > 0.6 and best["dice"]["organ2"] > 0.6, best
    image, label = phantom_case(shift=(1, -1, 0), seed=7)  # an unseen case
    result = segment([(image.astype(np.float32), affine_from_spacing((2.0, 2.0, 2.0)))], package, with_token_maps=False)
    assert dice(result.labels == 1, label == 10) > 0.5
    assert dice(result.labels == 2, label == 20) > 0.5


def test_labels_are_matched_by_name():
    labels = train_config()["labels"]
    lut = label_lookup({20: "Organ2", 10: "organ1", 5: "other"}, labels)
    assert lut[10] == 1 and lut[20] == 2 and lut[5] == 0
    assert label_lookup(None, labels)[2] == 2
    with pytest.raises(InputError, match="organ2.*partial"):
        label_lookup({10: "organ1"}, labels)


def test_partial_name_tables_mark_unnamed_voxels_unknown():
    labels = train_config()["labels"]
    lut = label_lookup({10: "organ1", 7: "heart"}, labels, partial=True)
    assert lut[10] == 1  # annotated model label
    assert lut[7] == 0  # a named structure that is no model label: background
    assert lut[0] == UNKNOWN and lut[20] == UNKNOWN  # background or the unannotated organ2
    assert missing_labels({10: "organ1", 7: "heart"}, labels) == (2,)
    complete = label_lookup({10: "organ1", 7: "heart"}, labels, partial=False)  # organ2 absent from the scan
    assert complete[10] == 1 and complete[7] == 0 and complete[0] == 0 and complete[20] == 0
    assert missing_labels(None, labels) == ()


@pytest.mark.parametrize("strength", [0.0, 1.25])
def test_augmented_patches_have_the_patch_size(strength):
    patch = (16, 16, 16)
    region = crop_size(patch, strength)
    assert region == list(patch) if strength == 0 else all(r > p for r, p in zip(region, patch, strict=True))
    rng = np.random.default_rng(0)
    label = np.zeros((1, 40, 40, 40), np.uint8)
    label[0, 10:20, 10:20, 10:20], label[0, 25:30, 20:30, 5:35] = 1, 2
    transform = training_transforms(patch, 3, 1, strength)
    transform.set_random_state(0)
    for _ in range(3):
        out = transform({"image": rng.random((1, 40, 40, 40), dtype=np.float32), "label": label})
        item = out[0] if isinstance(out, list) else out
        assert tuple(item["image"].shape) == (1, *patch) and tuple(item["label"].shape) == (1, *patch)
        assert set(np.unique(np.asarray(item["label"]))) <= {0, 1, 2}  # nearest-neighbour labels


def test_patches_reach_the_edges_of_a_case_despite_the_larger_crop():
    patch, strength = (16, 16, 16), 1.25
    region = crop_size(patch, strength)
    image = np.zeros((1, 32, 32, 32), np.float32)
    label = np.zeros((1, 32, 32, 32), np.uint8)
    label[0, :3, :3, :3] = 1  # an organ in the corner of the case
    padded_image, padded_label = pad_for_crop(image, label, patch, region)
    assert padded_image.shape == (1, 40, 40, 40) and padded_label[0, 4:7, 4:7, 4:7].all()
    transform = training_transforms(patch, 2, 1, strength)

    def organ_seen(image, label, seed):
        transform.set_random_state(seed)
        return bool((np.asarray(transform({"image": image, "label": label})[0]["label"]) == 1).any())

    assert sum(organ_seen(padded_image, padded_label, seed) for seed in range(8)) >= 2
    assert not any(organ_seen(image, label, seed) for seed in range(8))  # unpadded: the corner is out of reach


def test_a_partially_labelled_case_trains_and_is_scored_on_its_labels(tmp_path):
    import SimpleITK as sitk

    root = tmp_path / "data"
    datalist = json.loads(write_dataset(root).read_text())
    seg = sitk.ReadImage(str(root / "case1_seg.nii.gz"))
    array = sitk.GetArrayFromImage(seg)
    array[array == 20] = 0  # organ2 not annotated in this case
    array[:2] = 99  # a named non-organ structure
    partial = sitk.GetImageFromArray(array)
    partial.CopyInformation(seg)
    sitk.WriteImage(partial, str(root / "case1_partial.nii.gz"))
    datalist["training"][1].update(label="case1_partial.nii.gz", partial=True, labels={"10": "organ1", "99": "table"})
    datalist["training"][0]["repeat"] = 2
    datalist["validation"] = [dict(datalist["training"][1])]
    (root / "datalist.json").write_text(json.dumps(datalist))
    recipe = Recipe(steps=2, val_every=2)
    package = load_package(train(root / "datalist.json", train_config(), tmp_path / "run", recipe))
    record = package.config.training
    assert record["data"]["training"][1]["unannotated_labels"] == ["organ2"]
    assert "unannotated_labels" not in record["data"]["training"][0]
    assert [case["repeat"] for case in record["data"]["training"]] == [2, 1]
    assert set(record["metrics"]["best"]["dice"]) == {"organ1"}  # organ2 is not scored where unannotated


def test_left_right_flips_refused_for_lateralised_labels(datalist, tmp_path):
    config = train_config()
    config["labels"][0]["name"] = "kidney_left"
    assert is_lateralised(config["labels"]) and not is_lateralised(train_config()["labels"])
    with pytest.raises(InputError, match="left-right"):
        train(datalist, config, tmp_path, Recipe(steps=1, flip_axes=[0]))


def test_max_minutes_stops_early_and_still_packages(datalist, tmp_path):
    package = train(datalist, train_config(), tmp_path, Recipe(steps=1000, val_every=500, max_minutes=1e-6))
    record = load_package(package).config.training
    assert record["stopped_early"] and record["steps_done"] < 1000


def test_train_command(datalist, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(train_config()))
    out = tmp_path / "run"
    code = cli.main(
        ["train", str(datalist), "--config", str(config), "--out", str(out), "--id", "cli-model", "--steps", "2"]
        + ["--val-every", "1", "--batch-size", "1", "--optimizer", "adamw", "--schedule", "cosine", "--threads", "1"]
    )
    assert code == 0
    package = load_package(out / "package")
    assert package.id == "cli-model"
    assert package.config.training["recipe"]["schedule"] == "cosine"
    assert cli.main(["train", str(datalist), "--config", str(tmp_path / "missing.json"), "--out", str(out)]) == 2


@pytest.mark.slow  # two processes each importing torch; the in-process training tests above run by default
def test_torchrun_two_processes_gloo(datalist, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(train_config("ddp-model")))
    env = {**os.environ, "PYTHONPATH": str(MODULE_DIR), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "TokenUNetSegmentLib.pipeline", "train", str(datalist), "--config", str(config)]
    command += ["--out", str(tmp_path / "run"), "--steps", "4", "--val-every", "2", "--batch-size", "1"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    package = load_package(tmp_path / "run" / "package")
    record = package.config.training
    assert record["world_size"] == 2 and record["steps_done"] == 4
    assert log_records(tmp_path / "run")[0]["world_size"] == 2
