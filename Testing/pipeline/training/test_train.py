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
from TokenUNetSegmentLib.pipeline.run_contract import LogEvent, ResultEvent, decode_event
from TokenUNetSegmentLib.pipeline.segmentation import segment
from TokenUNetSegmentLib.pipeline.training import Recipe, train
from TokenUNetSegmentLib.pipeline.training.data import UNKNOWN, is_lateralised, label_lookup, missing_labels


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


def random_states() -> tuple:
    """The caller's global random number generators, as comparable values (MONAI's seed for new transforms too)."""
    import random

    import torch
    from monai.utils import get_seed

    kind, keys, position, gauss, cached = np.random.get_state()
    return random.getstate(), (kind, keys.tolist(), position, gauss, cached), torch.get_rng_state().tolist(), get_seed()


def test_train_puts_back_the_callers_random_generators_and_the_same_seed_gives_the_same_weights(datalist, tmp_path):
    """A notebook's ``train`` (found by threads2) (before: MONAI's ``set_determinism`` left Python's, numpy's and
    torch's generators seeded with the recipe's seed, after a completed, failed or stopped training alike); the
    training itself does not depend on the caller's state: the same seed gives the same weights."""
    import random

    import torch
    from TokenUNetSegmentLib.pipeline.package_source import WEIGHTS_FILE

    def stop_at_the_first_step(stage, fraction):
        raise KeyboardInterrupt

    recipe = {"steps": 2, "batch_size": 1, "val_every": 2, "threads": 1, "workers": 0}
    weights = []
    for seed, run, options, progress in [
        (1, "first", {}, None),
        (2, "second", {}, None),
        (3, "failed", {"hold_out": ["nobody"]}, None),  # refused after the generators were seeded
        (4, "stopped", {}, stop_at_the_first_step),
    ]:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        before, ended = random_states(), None
        try:
            package = train(datalist, train_config(), tmp_path / run, Recipe(**recipe, **options), progress=progress)
            weights.append((package / WEIGHTS_FILE).read_bytes())
        except (InputError, KeyboardInterrupt) as error:
            ended = type(error).__name__
        assert ended == {"failed": "InputError", "stopped": "KeyboardInterrupt"}.get(run), (run, ended)
        assert random_states() == before, run
    assert weights[0] == weights[1]


def test_validation_windows_run_on_the_training_device(datalist, tmp_path, monkeypatch):
    """Validation once ran its windows on the CPU default, which moved a GPU-trained network off its device."""
    from TokenUNetSegmentLib.pipeline import inference

    devices, real = [], inference.sliding_window

    def spy(network, *args, device=None, **kwargs):
        devices.append(device)
        return real(network, *args, device=device, **kwargs)

    monkeypatch.setattr(inference, "sliding_window", spy)
    train(datalist, train_config(), tmp_path, Recipe(steps=4, batch_size=2, val_every=2, threads=1), device="cpu")
    assert [str(d) for d in devices] == ["cpu", "cpu"]


def test_packages_record_what_the_training_data_looked_like(datalist, tmp_path):
    """tokenunet.training_statistics: organ volumes, HU, voxel sizes, fields of view and the augmentation envelope
    (validated by the metadata schema when the package loads)."""
    package = load_package(train(datalist, train_config(), tmp_path, Recipe(steps=1, val_every=1, threads=1)))
    stats = package.config.training_statistics
    assert stats["cases"] == 2 and stats["patients"] == ["case0", "case1"]
    organ1 = stats["labels"]["organ1"]
    _, label = phantom_case()
    volume_ml = float((label == 10).sum()) * 8.0 / 1000.0  # 2 mm voxels
    assert organ1["cases"] == 2 and organ1["volume_ml"]["min"] == pytest.approx(volume_ml, rel=0.2)
    assert organ1["volume_ml_complete"] is not None  # the phantom organs lie well inside the scans
    assert 150 < organ1["hu"]["mean"] < 290 and organ1["hu"]["p05"] <= organ1["hu"]["p95"]  # 220 HU + noise
    assert stats["intensity_hu"]["body_threshold_hu"] == -500 and stats["source_spacing_mm"]["min"] == [2.0, 2.0, 2.0]
    assert stats["augmentation"]["rotation_deg"] == 30.0 and stats["augmentation"]["min_slab_mm"] == 30.0


def test_resume_continues_from_the_last_checkpoint(datalist, tmp_path):
    train(datalist, train_config(), tmp_path, Recipe(steps=2, batch_size=1, val_every=2, threads=1))
    resumed = Recipe(steps=4, batch_size=1, val_every=2, threads=1, workers=1)  # patches from a worker process
    package = train(datalist, train_config(), tmp_path, resumed, resume=True)
    events = [(r["event"], r.get("step")) for r in log_records(tmp_path)]
    assert ("resume", 2) in events and events[-1] == ("end", 4)
    record = load_package(package).config.training
    assert [h["step"] for h in record["metrics"]["history"]] == [2, 4]  # the first run's validation is kept
    assert [(p["from_step"], p["to_step"]) for p in record["phases"]] == [(0, 2), (2, 4)]  # more steps: a new phase


def test_a_resume_with_another_recipe_records_a_phase_with_its_own_learning_rate(datalist, tmp_path):
    first = Recipe(steps=2, batch_size=1, val_every=2, threads=1, optimizer="adamw", learning_rate=1e-3)
    train(datalist, train_config(), tmp_path, first)
    again = Recipe(**{**first.__dict__, "max_minutes": 60.0, "threads": 2})  # how it runs, not what it learns
    train(datalist, train_config(), tmp_path, again, resume=True)
    assert "phase" not in [r["event"] for r in log_records(tmp_path)]
    second = Recipe(
        **{**first.__dict__, "steps": 4, "synthetic_ratio": 0.1, "learning_rate": 1e-4, "schedule": "cosine"}
    )
    package = load_package(train(datalist, train_config(), tmp_path, second, resume=True))
    phases = package.config.training["phases"]
    assert [(p["from_step"], p["to_step"]) for p in phases] == [(0, 2), (2, 4)]
    assert phases[0]["recipe"]["synthetic_ratio"] == 0.0 and phases[1]["recipe"]["synthetic_ratio"] == 0.1
    assert phases[1]["recipe"]["learning_rate"] == 1e-4 and "max_minutes" not in phases[1]["recipe"]
    assert [r["step"] for r in log_records(tmp_path) if r["event"] == "phase"] == [2]
    lr = [h["lr"] for h in package.config.training["metrics"]["history"]][-1]
    assert lr == pytest.approx(0.0, abs=1e-12)  # cosine ends at 0 (the new rate, not the saved one, was scaled)
    state = __import__("torch").load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["optimizer"]["param_groups"][0]["initial_lr"] == 1e-4


def test_training_learns_the_phantom(datalist, tmp_path):
    recipe = Recipe(steps=160, batch_size=2, val_every=20, optimizer="adamw", learning_rate=1e-2, threads=1)
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
    import shutil

    shutil.copy(root / "case1.nii.gz", root / "case1_validation.nii.gz")  # the same scan in both splits is refused
    datalist["validation"] = [{**datalist["training"][1], "image": "case1_validation.nii.gz"}]
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


def test_max_minutes_limits_each_invocation_so_a_resume_goes_on(datalist, tmp_path):
    import torch

    train(datalist, train_config(), tmp_path, Recipe(steps=2, batch_size=1, val_every=2, threads=1))
    last = tmp_path / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    state["elapsed"] = 3 * 3600.0  # earlier sessions trained for three hours
    torch.save(state, last)
    again = Recipe(steps=4, batch_size=1, val_every=2, threads=1, max_minutes=60.0)
    record = load_package(train(datalist, train_config(), tmp_path, again, resume=True)).config.training
    assert not record["stopped_early"] and record["steps_done"] == 4


def test_train_command(datalist, tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(train_config()))
    out = tmp_path / "run"
    code = cli.main(
        ["train", str(datalist), "--config", str(config), "--out", str(out), "--id", "cli-model", "--steps", "2"]
        + ["--val-every", "1", "--batch-size", "1", "--optimizer", "adamw", "--schedule", "cosine", "--threads", "1"]
        + ["--progress", "json"]
    )
    assert code == 0
    events = [decode_event(line) for line in capsys.readouterr().err.splitlines()]
    assert None not in events  # before: each validation's "step N: loss ..." was a plain line among the events
    assert any(isinstance(e, LogEvent) and e.message.startswith("step 1: loss ") for e in events)
    # before: no final event when training succeeded (only errors ended the stream with one)
    assert isinstance(events[-1], ResultEvent) and events[-1].folder == str(out.resolve())
    assert events[-1].files["package"] == "package" and events[-1].seconds > 0
    assert not any(isinstance(e, ResultEvent) for e in events[:-1])
    package = load_package(out / "package")
    assert package.id == "cli-model"
    assert package.config.training["recipe"]["schedule"] == "cosine"
    assert cli.main(["train", str(datalist), "--config", str(tmp_path / "missing.json"), "--out", str(out)]) == 2


def test_more_threads_than_cpus_are_named_as_a_slowdown(tmp_path, capsys):
    """Before: ``--threads 1000`` on 2 CPUs was taken without a word (and trains slower than 2)."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps(train_config()))
    argv = ["train", str(tmp_path / "missing.json"), "--config", str(config), "--out", str(tmp_path / "run")]
    assert cli.main([*argv, "--threads", "1000", "--progress", "none"]) == 2  # the datalist is missing
    err = capsys.readouterr().err
    assert f"warning: --threads 1000 is more than this computer's {os.cpu_count()} CPUs" in err


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


def test_a_resume_with_other_labels_or_other_data_is_refused(datalist, tmp_path):
    """The checkpoint's weights belong to its labels and its cases (before: labels swapped in the configuration
    resumed silently, the organs' channels trained under each other's names; one label fewer: internal error
    RuntimeError; other cases: resumed, and the package listed only the last invocation's files)."""
    recipe = Recipe(steps=1, batch_size=1, val_every=1, threads=1, augmentation=0.0)
    train(datalist, train_config(), tmp_path, recipe)
    before = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    swapped = train_config()
    swapped["labels"][0]["name"], swapped["labels"][1]["name"] = (
        swapped["labels"][1]["name"],
        swapped["labels"][0]["name"],
    )
    fewer = train_config()
    fewer["labels"], fewer["architecture"]["out_channels"] = fewer["labels"][:1], 2
    again = Recipe(steps=2, batch_size=1, val_every=1, threads=1, augmentation=0.0)
    for config in (swapped, fewer):
        with pytest.raises(InputError, match="configuration differs from the run in .* in (architecture, )?labels"):
            train(datalist, config, tmp_path, again, resume=True)
    data = json.loads(Path(datalist).read_text())
    data["training"] = data["training"][:1]
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**data, "dataroot": str(Path(datalist).parent)}))
    with pytest.raises(InputError, match="training cases differ from the run in .*: 1 removed"):
        train(other, train_config(), tmp_path, again, resume=True)
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == before
