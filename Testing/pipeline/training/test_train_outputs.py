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


@pytest.mark.parametrize(
    "place, resume",
    [("train.log", False), ("checkpoints", True), ("checkpoints/last.pt", True), ("package", True)],
    ids=["dangling log", "checkpoints folder", "last checkpoint", "package"],
)
def test_links_inside_the_training_folder_are_never_read_or_written_through(
    inputs, tmp_path, monkeypatch, capsys, place, resume
):
    """(outaudit) Before: ``run/train.log`` a dangling link made the log at its target (a folder the user never
    named) and the run went on as a fresh one; with --resume, ``run/checkpoints`` (or ``last.pt``) a link to another
    folder had the checkpoints read from and written there."""
    from TokenUNetSegmentLib.pipeline.training import trainer

    out, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "notes.txt").write_text("the user's")
    (out / "checkpoints").mkdir(parents=True)
    if place != "train.log":
        (out / "train.log").write_text("{}\n")
    if place == "checkpoints":
        (out / "checkpoints").rmdir()
    target = tmp_path / "gone" / "log" if place == "train.log" else elsewhere
    (out / place).symlink_to(target)
    monkeypatch.setattr(trainer, "load_case", lambda *a, **k: pytest.fail("the data was read"))
    extra = ["--resume"] if resume else []
    assert cli.main(train_arguments(inputs, out, "--steps", "1", *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and len(err) <= 201, err
    assert f"{place} is a link" in err and "only inside --out" in err, err
    assert os.listdir(elsewhere) == ["notes.txt"] and not (tmp_path / "gone").exists()
    assert (out / place).is_symlink()


def test_a_refused_run_removes_every_folder_it_made(inputs, tmp_path, monkeypatch, capsys):
    """(outaudit) Before: ``--out new/deeper/run`` refused for want of room removed ``run`` but left ``new/deeper``."""
    from TokenUNetSegmentLib.pipeline.training import trainer

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(10**9, 10**9 - 100_000, 100_000))
    monkeypatch.setattr(trainer, "load_case", lambda *a, **k: pytest.fail("the data was read"))
    (tmp_path / "kept").mkdir()
    assert cli.main(train_arguments(inputs, tmp_path / "kept" / "new" / "deeper" / "run", "--steps", "1")) == 2
    assert "needs about" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["kept"] and os.listdir(tmp_path / "kept") == []


def test_a_tilde_in_out_is_the_home_folder_for_every_file_of_the_run(inputs, tmp_path, monkeypatch, capsys):
    """(outaudit) ``--out '~/run'`` (a tilde the shell left alone). Before: the folder was checked and locked as
    HOME/run, but the log and checkpoints went to a folder named ``~`` in the current folder, and the run ended in
    "internal error: FileNotFoundError: ... '~/run/checkpoints/best.pt'", exit 1."""
    home, here = tmp_path / "home", tmp_path / "here"
    home.mkdir(), here.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(here)
    assert cli.main(train_arguments(inputs, "~/run", "--steps", "1")) == 0, capsys.readouterr().err
    assert os.listdir(here) == [] and sorted(os.listdir(home / "run")) == ["checkpoints", "package", "train.log"]
    assert f"wrote {(home / 'run' / 'package').resolve()}" in capsys.readouterr().out.splitlines()  # not '~/run/...'


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
