"""Training outputs under faults (issue 11, part 3): free space checked before training, checkpoints written all
at once (a full disk keeps the previous checkpoint, leaves no partial file and exits 2 in one line), a refused run
leaves no folder behind."""

import json
import os
import shutil
from collections import namedtuple

import pytest
import torch
from helpers.training_data import train_config, write_dataset
from TokenUNetSegmentLib.pipeline import cli, output_folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-outputs")
    config = root / "config.json"
    config.write_text(json.dumps(train_config()))
    return write_dataset(root / "data", cases=1, validation=0), config


def train_arguments(inputs, out, *extra):
    datalist, config = inputs
    return ["train", str(datalist), "--config", str(config), "--out", str(out), "--progress", "none", *extra]


def test_not_enough_free_space_is_refused_before_training(inputs, tmp_path, monkeypatch, capsys):
    from TokenUNetSegmentLib.pipeline.training import trainer

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(10**9, 10**9 - 100_000, 100_000))
    monkeypatch.setattr(trainer, "load_case", lambda *a, **k: pytest.fail("the data was read"))
    assert cli.main(train_arguments(inputs, tmp_path / "run", "--steps", "1")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the training run needs about") and "free" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # not even the empty folder the refused run created


def test_the_estimate_covers_what_a_run_writes(inputs, tmp_path):
    from TokenUNetSegmentLib.pipeline.package_loader import load_package
    from TokenUNetSegmentLib.pipeline.training.trainer import training_output_bytes

    out = tmp_path / "run"
    assert cli.main(train_arguments(inputs, out, "--steps", "2", "--val-every", "1", "--optimizer", "adamw")) == 0
    written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    network = load_package(out / "package").network
    assert written <= training_output_bytes(network) <= 20 * written + 4 * 2**20


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(inputs, tmp_path, monkeypatch, capsys):
    """torch reports a full disk as a RuntimeError ("unexpected pos"); the second save of ``last`` fails half way."""
    real_save, calls = torch.save, []

    def failing_save(state, stream, *args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # the fourth checkpoint (best and last at step 1, then one at step 2)
            stream.write(b"\0" * 1000)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 541184 vs 541104")
        return real_save(state, stream, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    monkeypatch.setattr(output_folder, "_disk_nearly_full", lambda folder: True)
    out = tmp_path / "run"
    assert cli.main(train_arguments(inputs, out, "--steps", "4", "--val-every", "1", "--optimizer", "adamw")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: the disk of") and " full (" in err[-1] and len(err[-1]) <= 200
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "last.pt"]  # no partial file
    assert 1 <= torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] <= 2  # a complete one
    assert not (out / "package").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no lock or staging file beside it


def test_an_unwritable_log_is_one_line(inputs, tmp_path, monkeypatch, capsys):
    from TokenUNetSegmentLib.pipeline.training import trainer

    out = tmp_path / "run"
    real_open = open

    def full_open(path, mode="r", *args, **kwargs):
        if str(path).endswith("train.log") and "a" in mode:
            raise OSError(28, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(trainer, "open", full_open, raising=False)
    assert cli.main(train_arguments(inputs, out, "--steps", "1")) == 2
    err = capsys.readouterr().err
    assert "error: cannot write the training log" in err and "No space left" in err and err.count("\n") == 1


def test_an_earlier_run_is_never_replaced_without_resume(inputs, tmp_path, monkeypatch, capsys):
    from TokenUNetSegmentLib.pipeline.training import trainer

    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "train.log").write_text("the earlier run's log\n")
    monkeypatch.setattr(trainer, "load_case", lambda *a, **k: pytest.fail("the data was read"))
    assert cli.main(train_arguments(inputs, out, "--steps", "1")) == 2
    err = capsys.readouterr().err
    assert "already holds a training run (train.log, checkpoints)" in err and "--resume" in err
    assert (out / "train.log").read_text() == "the earlier run's log\n" and sorted(os.listdir(out)) == [
        "checkpoints",
        "train.log",
    ]


@pytest.mark.parametrize("stop", [KeyboardInterrupt, "cancelled"])
def test_a_stopped_torchrun_process_other_than_rank_0_says_rank_0_reports_what_was_kept(
    tmp_path, capsys, monkeypatch, stop
):
    """Under ``torchrun`` every process gets Ctrl-C; rank 0 says what it kept (checkpoints, log, ``--resume``).
    Before: every other rank printed "interrupted; no output was written", which reads as if the run left nothing.
    Now they say which process they are and that process 0 writes and reports the run's files."""
    from TokenUNetSegmentLib.pipeline.errors import CancelledError
    from TokenUNetSegmentLib.pipeline.training import command

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt if stop is KeyboardInterrupt else CancelledError("cancelled")

    monkeypatch.setattr(command, "_train", stopped)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    code = cli.main(["train", str(tmp_path / "list.json"), "--config", "c.json", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 130 and "no output was written" not in err, err
    assert "process 1 of 2" in err and "process 0 writes the run's files and says what it kept" in err, err
    assert err.strip().count("\n") == 0 and not (tmp_path / "run").exists()
