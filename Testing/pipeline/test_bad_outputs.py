"""Outputs of a segmentation under faults: a full disk (a real 1 MiB tmpfs, and ENOSPC simulated), a read-only
folder, an output path that is a file, a second run on the same folder, a Ctrl-C in the final swap. Each time the
folder holds the previous complete result or the new one, the error is one line, and it comes before the work."""

import errno
import os
import shutil
import time

import numpy as np
import pytest
from helpers.disks import LINUX_MOUNT, tmpfs
from helpers.packages import ball_phantom, make_package, threshold_package, tiny_config
from helpers.processes import start_cli
from TokenUNetSegmentLib.pipeline import cli, segmentation
from TokenUNetSegmentLib.pipeline.errors import OutputError
from TokenUNetSegmentLib.pipeline.locks import lock_path
from TokenUNetSegmentLib.pipeline.outputs import write_outputs

AFFINE = np.diag([1.5, 1.5, 2.0, 1.0])


@pytest.fixture(scope="module")
def small_and_large():
    """Two results of the same scan: without maps (about 10 KB written) and with maps and probabilities on the
    input grid (about 2 MB written)."""
    image = ball_phantom((96, 96, 64), (48, 48, 32), (30, 28, 20))
    package = threshold_package()
    small = segmentation.segment([(image, AFFINE)], package, device="cpu", with_token_maps=False)
    large = segmentation.segment([(image, AFFINE)], package, device="cpu", probabilities=True)
    large.probabilities = {
        name: p + np.random.default_rng(0).random(p.shape, np.float32) for name, p in large.probabilities.items()
    }
    return small, large


def contents(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.skipif(not LINUX_MOUNT, reason="Linux tmpfs")
def test_a_disk_that_fills_while_writing_keeps_the_previous_result(small_and_large, tmp_path):
    small, large = small_and_large
    with tmpfs(tmp_path / "disk", "1m") as disk:
        out = disk / "out"
        write_outputs(small, out, overview=False)  # the previous, complete result
        before = contents(out)
        with pytest.raises(OutputError) as full:
            write_outputs(large, out, attention_grid="input", overview=False)
        message = str(full.value)
        assert "full" in message and "\n" not in message and len(message) <= 200, message
        assert contents(out) == before  # the old result, whole
        assert sorted(p.name for p in disk.iterdir()) == ["out"]  # no staging folder, no lock
        free = shutil.disk_usage(disk).free
        assert free > 900 * 1024  # the failed run's partial files are gone


def test_a_full_disk_simulated_anywhere_in_the_writers(small_and_large, tmp_path, monkeypatch):
    """ENOSPC from the token map writer (portable: no mount needed), through the command line's error path."""
    from TokenUNetSegmentLib.pipeline import outputs

    small, large = small_and_large
    out = tmp_path / "out"
    write_outputs(small, out, overview=False)
    before = contents(out)
    calls = []

    def full_disk(path, *args, **kwargs):
        calls.append(path)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, *args, **kwargs)

    real = outputs.write_nrrd
    monkeypatch.setattr(outputs, "write_nrrd", full_disk)
    with pytest.raises(OutputError, match="disk of .* is full"):
        write_outputs(large, out, attention_grid="input", overview=False)
    assert contents(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.skipif(not LINUX_MOUNT, reason="Linux tmpfs")
def test_a_read_only_folder_is_refused_before_the_segmentation_runs(cli_case, tmp_path, monkeypatch, capsys):
    root, package, path = cli_case
    monkeypatch.setattr(segmentation, "segment", _must_not_run)
    with tmpfs(tmp_path / "ro", read_only=True) as disk:
        assert cli.main(["segment", str(path), "--model", str(package), "--out", str(disk / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "read-only" in err and err.count("\n") == 1 and len(err) <= 201, err


def _must_not_run(*args, **kwargs):
    raise AssertionError("the segmentation ran before the output folder was checked")


def test_output_path_problems_are_found_before_the_segmentation_runs(cli_case, tmp_path, monkeypatch, capsys):
    root, package, path = cli_case
    monkeypatch.setattr(segmentation, "segment", _must_not_run)
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "ct.nii.gz").write_bytes(path.read_bytes())  # the input's own folder
    home = tmp_path / "home"
    monkeypatch.setenv("TOKENUNET_HOME", str(home))
    cases = [
        (tmp_path / "a-file", "is a file"),
        (tmp_path / "a-file" / "below", "is a file"),
        (tmp_path / "mine", "did not write"),
        (home / "models" / "new", "inside the model cache"),
    ]
    for out, message in cases:
        assert cli.main(["segment", str(path), "--model", str(package), "--out", str(out)]) == 2, out
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and len(err) <= 201, err
    assert (tmp_path / "a-file").read_text() == "x" and sorted(p.name for p in (tmp_path / "mine").iterdir()) == [
        "ct.nii.gz"
    ]
    assert not home.exists()


def test_not_enough_free_space_is_refused_before_the_segmentation_runs(cli_case, tmp_path, monkeypatch, capsys):
    from collections import namedtuple

    root, package, path = cli_case
    monkeypatch.setattr(segmentation, "segment", _must_not_run)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(10**6, 10**6 - 4096, 4096))
    assert cli.main(["segment", str(path), "--model", str(package), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "the output needs about" in err and "free" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_second_run_on_the_same_folder_is_refused_and_the_first_completes(tmp_path, cli_case, capsys):
    """Two processes on one destination: the second is refused by the lock, the first writes its result."""
    root, _, path = cli_case
    package = make_package(tmp_path, tiny_config(roi=(16, 16, 16), spacing=(3.0, 3.0, 3.0)))  # many windows
    out = tmp_path / "out"
    argv = ["segment", str(path), "--model", str(package), "--out", str(out), "--device", "cpu", "--overlap", "0.75"]
    first = start_cli(*argv, "--progress", "none")
    try:
        deadline = time.monotonic() + 120
        while not lock_path(out).exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock_path(out).exists(), "the first run never locked its folder"
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "in use by another TokenUNet run (segment, pid" in err and err.count("\n") == 1, err
        _, first_err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, first_err
    assert (out / "segmentation.seg.nrrd").is_file() and (out / "report.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tiny-ct"]  # lock and staging gone


def test_ctrl_c_during_the_final_swap_completes_it(small_and_large, tmp_path, monkeypatch):
    import signal

    from TokenUNetSegmentLib.pipeline import output_folder

    small, large = small_and_large
    out = tmp_path / "out"
    write_outputs(small, out, overview=False)
    real = output_folder._exchange

    def interrupted(first, second):
        os.kill(os.getpid(), signal.SIGINT)
        return real(first, second)

    monkeypatch.setattr(output_folder, "_exchange", interrupted)
    write_outputs(large, out, attention_grid="token", overview=False)  # no KeyboardInterrupt, nothing half done
    assert len(list((out / "attention").glob("*.nrrd"))) == 4 and (out / "probabilities").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_users_files_inside_the_attention_folder_are_kept_or_refuse_the_run(small_and_large, tmp_path):
    """Before: a re-run deleted ``out/attention/`` with the user's own file in it."""
    _, large = small_and_large
    out = tmp_path / "out"
    write_outputs(large, out, attention_grid="token", overview=False)
    (out / "attention" / "my-notes.txt").write_text("the user's")
    write_outputs(large, out, attention_grid="token", overview=False)
    assert (out / "attention" / "my-notes.txt").read_text() == "the user's"
    maps = sorted(p.name for p in (out / "attention").iterdir() if p.name.startswith("token"))
    assert maps and (out / "attention" / maps[0]).stat().st_size > 0
    # a map the user edited since the run wrote it is theirs now: the next run refuses instead of replacing it
    (out / "attention" / maps[0]).write_bytes(b"edited")
    before = contents(out)
    with pytest.raises(OutputError, match="attention"):
        write_outputs(large, out, attention_grid="token", overview=False)
    assert contents(out) == before
