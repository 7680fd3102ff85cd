"""A run in a child process (pipeline layer, no Slicer): process-tree handling, and the typed events that carry
the child's error back."""

import os
import re
import sys
import time

import numpy as np
import pytest
from helpers.processes import alive
from TokenUNetSegmentLib.pipeline.errors import InputError
from TokenUNetSegmentLib.pipeline.run_contract import ErrorEvent, LogEvent, RunRequest, RunState, encode_event
from TokenUNetSegmentLib.pipeline.subprocess_run import SubprocessRun


@pytest.mark.skipif(sys.platform != "linux", reason="checks the process table in /proc")
def test_cancel_kills_the_whole_process_tree_even_when_it_ignores_sigterm(tmp_path):
    script = tmp_path / "stubborn.py"
    script.write_text(
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    lines = []
    run = SubprocessRun(
        RunRequest(inputs=[(np.zeros((2, 2, 2), np.float32), np.eye(4))]),
        grace=0.5,
        command=[sys.executable, str(script)],
    )
    run.add_observer(lambda e: lines.append(e.message) if isinstance(e, LogEvent) else None)
    run.start()
    limit = time.monotonic() + 30
    while not lines and time.monotonic() < limit:
        run.poll()
        time.sleep(0.05)
    grandchild = int(lines[0])
    assert alive(grandchild)
    started = time.monotonic()
    run.cancel()
    assert run.wait(timeout=30) == RunState.CANCELLED
    assert time.monotonic() - started < 10
    time.sleep(0.2)
    assert not alive(run.process.pid) and not alive(grandchild)


def fake_child(tmp_path, lines: list[str], code: int) -> SubprocessRun:
    """A subprocess run whose child prints ``lines`` (on stdout) and exits with ``code``."""
    script = tmp_path / "child.py"
    script.write_text(f"import sys\nfor line in {lines!r}: print(line)\nsys.exit({code})\n")
    return SubprocessRun(
        RunRequest(inputs=[(np.zeros((2, 2, 2), np.float32), np.eye(4))]), command=[sys.executable, str(script)]
    )


def test_the_childs_typed_error_event_becomes_the_same_error_class(tmp_path):
    error = InputError("channel 'ct' is constant", "pick another volume")
    lines = ["error: a plain line that looks like an error", encode_event(ErrorEvent.from_error(error))]
    run = fake_child(tmp_path, lines, 2)
    seen = []
    run.add_observer(seen.append)
    assert run.start().wait(timeout=60) == RunState.FAILED
    assert type(run.error) is InputError and (run.error.message, run.error.hint) == (error.message, error.hint)
    assert [e.message for e in seen if isinstance(e, LogEvent)] == [lines[0]]  # plain lines are log events


def test_a_child_that_dies_without_an_event_reports_its_exit_code_and_last_line(tmp_path):
    run = fake_child(tmp_path, ["starting", "Segmentation fault"], 139)
    assert run.start().wait(timeout=60) == RunState.FAILED
    assert "exit code 139" in str(run.error) and "Segmentation fault" in str(run.error)
    assert not run.folder.exists()


def test_a_line_that_holds_text_and_then_an_event_gives_both(tmp_path):
    """The child's stdout and stderr share one pipe: an unbuffered ``print`` writes its text and its newline apart,
    and a forwarded stderr event may land between them (``--progress json`` forwards C libraries' lines)."""
    library = LogEvent("Unsupported JPEG data precision 12", "warning")
    run = fake_child(tmp_path, ["wrote out/segmentation.seg.nrrd" + encode_event(library)], 1)
    seen = []
    run.add_observer(seen.append)
    assert run.start().wait(timeout=60) == RunState.FAILED
    assert [e for e in seen if isinstance(e, LogEvent)] == [LogEvent("wrote out/segmentation.seg.nrrd"), library]


def test_a_relative_temporary_folder_is_the_same_folder_for_the_child(tmp_path, monkeypatch):
    """(outaudit) The child runs in the run's folder: a relative ``temp_dir`` (a script's ``temp_dir="tmp"``) gave it
    paths relative to the caller's folder, so it wrote (and read) below its own folder, in ``tmp/run/tmp/run/out``."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scratch").mkdir()
    script = tmp_path / "child.py"
    script.write_text("import os, sys\nprint(os.path.abspath(sys.argv[1]))\nsys.exit(1)\n")
    run = SubprocessRun(
        RunRequest(inputs=[(np.zeros((2, 2, 2), np.float32), np.eye(4))]),
        command=[sys.executable, str(script), "{out}"],
        temp_dir="scratch",
    )
    seen = []
    run.add_observer(lambda e: seen.append(e.message) if isinstance(e, LogEvent) else None)
    assert run.start().wait(timeout=60) == RunState.FAILED
    assert run.folder.is_absolute() and run.folder.parent == tmp_path / "scratch"
    assert seen[0] == str(run.folder / "out")
    assert os.listdir(tmp_path / "scratch") == []  # its folder removed, nothing left in the user's


def test_a_run_whose_exchange_files_cannot_fit_on_the_disk_is_refused_before_writing_them(tmp_path, monkeypatch):
    """A Slicer vector volume of 4 float32 components goes to the child as one uncompressed NRRD of 4 values per voxel:
    where the temporary folder's disk has less room, the run fails at once in plain words, before any voxel is written
    or converted, and its folder is removed (before: "cannot start the segmentation process: [Errno 28] No space left
    on device", after writing until the disk was full)."""
    import shutil
    from collections import namedtuple

    from TokenUNetSegmentLib.pipeline import nrrd

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(1 << 40, 1 << 40, 100_000))
    written = []
    monkeypatch.setattr(nrrd, "write_nrrd", lambda path, *args, **kwargs: written.append(path))
    stacked = np.zeros((20, 20, 20, 4), np.float64)  # 256 KB, converted to nothing: float64 is written as it is
    run = SubprocessRun(
        RunRequest(inputs=[(stacked, np.eye(4))], channels=("FLAIR", "T1", "T1c", "T2"), names=("BRATS_001",)),
        command=[sys.executable, "-c", "raise SystemExit(3)"],
        temp_dir=tmp_path,
    )
    assert run.start().wait(timeout=60) == RunState.FAILED
    assert re.fullmatch(
        r"writing the run's inputs for the segmentation process needs about 25\d KiB but \S+ has "
        r"97.7 KiB free \(free some disk space or choose another folder\)",
        str(run.error),
    ), str(run.error)
    assert written == [] and os.listdir(tmp_path) == []
