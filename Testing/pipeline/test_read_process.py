"""The input's voxels read in a forked child process while torch is imported (:mod:`.pipeline.read_process`)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers.paths import MODULE_DIR
from helpers.processes import alive, run_cli
from helpers.readers import dicom_array, write_dicom_series
from TokenUNetSegmentLib.pipeline import read_process
from TokenUNetSegmentLib.pipeline.cli import ProgressPrinter
from TokenUNetSegmentLib.pipeline.errors import CancelledError, InputError, TokenUNetError
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing, image_from_array
from TokenUNetSegmentLib.pipeline.outputs import output_folder
from TokenUNetSegmentLib.pipeline.package_source import read_metadata
from TokenUNetSegmentLib.pipeline.read_process import ReadingProcess
from TokenUNetSegmentLib.pipeline.segment_command import load_while_reading, open_case

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the forked read is Linux-only")

OBLIQUE = (0.96, 0.28, 0.0, -0.28, 0.96, 0.0)  # rows and columns turned about the slice normal
LPS_FLIPPED = np.array([[-0.96, 0.28, 0.0], [-0.28, -0.96, 0.0], [0.0, 0.0, -1.0]])  # negative determinant


def uneven_oblique_series(folder: Path) -> Path:
    """An oblique DICOM series with slightly uneven slices, beside a smaller second series: two reader warnings."""
    positions = [2.5 * k + (0.2 if k == 5 else 0.0) for k in range(12)]
    write_dicom_series(folder, dicom_array(12, 40, 48) - 1000, positions=positions, orientation=OBLIQUE)
    write_dicom_series(folder, dicom_array(3, 40, 48), series="1.2.826.0.1.3680043.2.1125.1.2", prefix="OT")
    return folder


def flipped_nifti(path: Path) -> Path:
    array = (np.arange(50 * 44 * 30).reshape(50, 44, 30) % 700 - 1000).astype(np.int16)
    affine = affine_from_spacing((1.4, 1.1, 2.0), origin=(30.0, -20.0, 15.0), direction=LPS_FLIPPED)
    sitk.WriteImage(image_from_array(array, affine), str(path))
    return path


def opened_case(path, package, tmp_path):
    """``open_case`` as ``segment`` calls it: the headers checked, ``read()`` still to come."""
    metadata = read_metadata(package)
    args = Namespace(no_heatmaps=False, probabilities=False, attention_grid="token")
    folder = output_folder(tmp_path / "out")
    return open_case([str(path)], None, metadata.config, metadata.id, folder, args, ProgressPrinter("none"))


def assert_same_volumes(forked, inline):
    assert len(forked) == len(inline)
    for a, b in zip(forked, inline, strict=True):
        assert (a.name, a.modality, a.warnings) == (b.name, b.modality, b.warnings)
        assert a.array.dtype == b.array.dtype and a.array.strides == b.array.strides
        np.testing.assert_array_equal(a.array, b.array)
        np.testing.assert_array_equal(a.affine, b.affine)  # the same place in physical space, exactly
        assert (a.on_model_grid is None) == (b.on_model_grid is None)
        if b.on_model_grid is not None:
            assert a.on_model_grid[0].shape == b.on_model_grid[0].shape
            np.testing.assert_array_equal(a.on_model_grid[0].affine, b.on_model_grid[0].affine)
            np.testing.assert_array_equal(a.on_model_grid[1], b.on_model_grid[1])
            assert a.on_model_grid[1].strides == b.on_model_grid[1].strides


@pytest.mark.parametrize("kind", ["dicom", "nifti"])
def test_volumes_read_in_the_child_are_those_read_inline(cli_case, tmp_path, kind):
    """Voxel for voxel, type and memory order, geometry, the model-grid copy and the readers' warnings in order, for an
    oblique DICOM series and an LPS-flipped NIfTI image; the arrays are views of the memory the child wrote."""
    _, package, _ = cli_case
    path = uneven_oblique_series(tmp_path / "series") if kind == "dicom" else flipped_nifti(tmp_path / "flip.nii.gz")
    case = opened_case(path, package, tmp_path)
    inline = case.read()
    reading = ReadingProcess(case.read, case.values)
    try:
        forked = reading.result()
    finally:
        reading.stop()
    assert_same_volumes(forked, inline)
    if kind == "dicom":
        assert len(inline[0].warnings) >= 2  # the second series and the uneven slices, in the reader's order
    assert inline[0].on_model_grid is not None  # 3 mm model grid: the copy made ahead travels too
    assert not forked[0].array.flags.owndata and not forked[0].on_model_grid[1].flags.owndata
    # in physical space: voxel (i, j, k) of the result lies where SimpleITK places it (LPS turned to RAS)
    image = sitk.ReadImage(str(path)) if kind == "nifti" else None
    if image is not None:
        ijk = (7, 11, 5)
        lps = np.asarray(image.TransformIndexToPhysicalPoint(ijk))
        ras = forked[0].affine @ np.array([*ijk, 1.0])
        np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-9)
        assert forked[0].array[ijk] == image[ijk]


def test_an_error_in_the_child_is_raised_in_the_parent_with_its_message_and_hint():
    def fail():
        raise InputError("ct.nii.gz is truncated: 1 MB of the 2 MB of data its header declares (50%)", "copy it again")

    reading = ReadingProcess(fail, [10])
    with pytest.raises(InputError) as raised:
        reading.result()
    assert (raised.value.message, raised.value.hint) == (
        "ct.nii.gz is truncated: 1 MB of the 2 MB of data its header declares (50%)",
        "copy it again",
    )
    assert reading.pid == 0  # reaped

    class Unpicklable(Exception):
        def __reduce__(self):
            raise TypeError("no")

    def fail_oddly():
        raise Unpicklable("odd")

    reading = ReadingProcess(fail_oddly, [10])
    with pytest.raises(TokenUNetError, match="reading the input failed: Unpicklable: odd"):
        reading.result()


def test_python_warnings_of_the_read_are_shown_by_the_parent_in_their_order(recwarn):
    import warnings

    def read():
        warnings.warn("first", UserWarning, stacklevel=1)
        warnings.warn("second", RuntimeWarning, stacklevel=1)
        return []

    reading = ReadingProcess(read, [])
    assert reading.result() == []
    assert [(str(w.message), w.category) for w in recwarn] == [("first", UserWarning), ("second", RuntimeWarning)]


def test_an_array_larger_than_its_region_comes_through_the_pipe():
    from TokenUNetSegmentLib.pipeline.volumes import Volume

    big = np.arange(1000, dtype=np.float64).reshape(10, 10, 10)
    reading = ReadingProcess(lambda: [Volume(big, np.eye(4), "big")], [1])  # sized for 1 value
    (volume,) = reading.result()
    np.testing.assert_array_equal(volume.array, big)


def test_a_cancel_while_waiting_stops_the_child():
    import threading

    cancel = threading.Event()
    reading = ReadingProcess(lambda: time.sleep(60), [1])
    pid = reading.pid
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(CancelledError):
        reading.result(cancel)
    assert time.monotonic() - started < 10
    with pytest.raises(ChildProcessError):  # reaped: no zombie left
        os.waitpid(pid, os.WNOHANG)


def test_the_child_dies_with_its_parent(tmp_path):
    """A parent killed outright (SIGKILL, no clean-up) takes the child with it: no orphan reads on."""
    script = textwrap.dedent(
        """
        import time
        from TokenUNetSegmentLib.pipeline.read_process import ReadingProcess
        reading = ReadingProcess(lambda: time.sleep(60), [1])
        print(reading.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=MODULE_DIR, stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert alive(child)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


def test_fork_is_used_only_where_it_is_safe(monkeypatch):
    assert "torch" in sys.modules and not read_process.fork_safe()  # this process imported torch
    code = (
        "import json, threading, os\n"
        "from TokenUNetSegmentLib.pipeline.read_process import fork_safe\n"
        "first = fork_safe()\n"
        "os.environ['TOKENUNET_READ_PROCESS'] = '0'; off = fork_safe(); del os.environ['TOKENUNET_READ_PROCESS']\n"
        "stop = threading.Event(); t = threading.Thread(target=stop.wait); t.start()\n"
        "threaded = fork_safe(); stop.set(); t.join()\n"
        "import torch\n"
        "print(json.dumps([first, off, threaded, fork_safe()]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=MODULE_DIR, capture_output=True, text=True, timeout=120)
    assert json.loads(done.stdout.splitlines()[-1]) == [True, False, False, False], done.stderr


def test_load_while_reading_in_a_child_kills_and_reaps_it_when_loading_fails(cli_case, tmp_path, monkeypatch):
    _, package, ct = cli_case
    case = opened_case(ct, package, tmp_path)
    monkeypatch.setattr(read_process, "fork_safe", lambda: True)
    pids = []
    real = ReadingProcess.__init__

    def spy(self, *args):
        real(self, *args)
        pids.append(self.pid)

    monkeypatch.setattr(ReadingProcess, "__init__", spy)

    def load():
        raise ValueError("damaged package")

    with pytest.raises(ValueError, match="damaged package"):
        load_while_reading(load, case)
    with pytest.raises(ChildProcessError):
        os.waitpid(pids[0], os.WNOHANG)
    loaded, volumes = load_while_reading(lambda: "package", case)
    assert loaded == "package" and len(pids) == 2
    assert_same_volumes(volumes, case.read())


# The command line, run as a user runs it: errors, signals and --progress json with the read in its child

SLOW_READ = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from TokenUNetSegmentLib.pipeline import cli, segment_command

    real = segment_command.open_case

    def open_case(*args, **kwargs):
        case = real(*args, **kwargs)
        read = case.read
        if os.environ.get("TRUNCATE"):  # a file cut short after its header was checked (a copy still under way)
            damaged = Path(os.environ["TRUNCATE"])
            damaged.write_bytes(damaged.read_bytes()[:-900])

        def slow_read():
            if os.environ.get("READ_SECONDS"):
                print("reading in", os.getpid(), flush=True)
                os.write(2, b"a C library's line from the reading process\\n")
                time.sleep(float(os.environ["READ_SECONDS"]))
            return read()

        case.read = slow_read
        return case

    segment_command.open_case = open_case
    code = cli.main(sys.argv[1:])
    try:
        os.waitpid(-1, os.WNOHANG)
        print("a child was left", flush=True)
    except ChildProcessError:
        print("no child left", flush=True)
    sys.exit(code)
    """
)


def segment_command_line(package, path, out, *options):
    return [sys.executable, "-c", SLOW_READ, "segment", str(path), "--model", str(package), "--device", "cpu",
            "--out", str(out), *options]  # fmt: skip


def start_slow_segment(cli_case, tmp_path, seconds, *options):
    _, package, ct = cli_case
    process = subprocess.Popen(
        segment_command_line(package, ct, tmp_path / "out", *options),
        cwd=MODULE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "READ_SECONDS": str(seconds)},
        start_new_session=True,  # its own process group: a terminal's Ctrl-C reaches the group
    )
    line = process.stdout.readline()
    assert line.startswith("reading in "), line + process.stderr.read()
    child = int(line.split()[-1])
    assert child != process.pid
    return process, child


@pytest.mark.parametrize(
    "how, message",
    [
        ("ctrl-c to the group", "interrupted; no output was written"),
        ("sigterm to the group", "cancelled; no output was written"),
        ("sigterm to the command", "cancelled; no output was written"),
    ],
)
def test_ctrl_c_or_sigterm_while_reading_stops_the_child_and_leaves_no_zombie(cli_case, tmp_path, how, message):
    process, child = start_slow_segment(cli_case, tmp_path, 60)
    if how == "ctrl-c to the group":
        os.killpg(process.pid, signal.SIGINT)
    elif how == "sigterm to the group":
        os.killpg(process.pid, signal.SIGTERM)
    else:
        os.kill(process.pid, signal.SIGTERM)
    started = time.monotonic()
    out, err = process.communicate(timeout=60)
    assert time.monotonic() - started < 30  # not the 60 s read
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == message
    assert out.splitlines()[-1] == "no child left"
    assert not alive(child) and not (tmp_path / "out").exists()


def test_progress_json_forwards_the_childs_stderr_and_keeps_the_result_last(cli_case, tmp_path):
    process, _ = start_slow_segment(cli_case, tmp_path, 0, "--progress", "json", "--no-overview")
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    events = [json.loads(line) for line in err.splitlines()]  # every line an event
    logs = [e for e in events if e["event"] == "log"]
    assert any(e["message"] == "a C library's line from the reading process" for e in logs)
    assert events[-1]["event"] == "result" and out.splitlines()[-1] == "no child left"


def corrupt_nifti(path: Path, ct: Path) -> Path:
    data = bytearray(Path(ct).read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # the gzip stream damaged past its header
    path.write_bytes(bytes(data))
    return path


def run_with_read(mode: str, command, env=None):
    """(exit code, stdout, stderr) of ``command``, the voxels read inline (``mode`` "0") or in a child ("1")."""
    env = {**os.environ, **(env or {}), "TOKENUNET_READ_PROCESS": mode}
    done = subprocess.run(command, cwd=MODULE_DIR, capture_output=True, text=True, timeout=300, env=env)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("progress", ["none", "json"])
@pytest.mark.parametrize("kind", ["DICOM series cut short after its headers", "corrupt NIfTI"])
def test_a_read_error_in_the_child_reaches_the_user_as_inline(cli_case, tmp_path, kind, progress):
    """The same message, exit code and output (none) as when the voxels are read in the command's own process."""
    _, package, ct = cli_case
    runs = []
    for mode in ("0", "1"):
        env = None
        if kind.startswith("DICOM"):  # whole again, then cut short once its headers are read
            path = tmp_path / "series"
            env = {"TRUNCATE": str(write_dicom_series(path, dicom_array(12, 40, 48))[6])}
        else:
            path = corrupt_nifti(tmp_path / "c.nii.gz", ct)
        command = segment_command_line(package, path, tmp_path / "out", "--progress", progress)
        runs.append(run_with_read(mode, command, env))
    inline, forked = runs
    assert inline == forked
    code, out, err = forked
    assert code == 2 and out.splitlines()[-1] == "no child left" and not (tmp_path / "out").exists()
    if progress == "none":
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert ("Cannot read requested file" if kind.startswith("DICOM") else "corrupt compressed data") in err
    else:
        assert json.loads(err.splitlines()[-1])["event"] == "error"


def test_the_readers_warnings_reach_the_user_as_inline(cli_case, tmp_path):
    """A DICOM series whose last slice is damaged (left out), with uneven slices beside a second series: the same
    warnings, in the same order, and the same labels."""
    _, package, _ = cli_case
    files = [*uneven_oblique_series(tmp_path / "series").glob("IM*.dcm")]
    last = max(files)
    last.write_bytes(last.read_bytes()[:-900])
    outputs = []
    for mode in ("0", "1"):
        out = tmp_path / f"out{mode}"
        outputs.append(out)
        done = run_cli(
            "segment", tmp_path / "series", "--model", package, "--out", out, "--device", "cpu", "--no-overview",
            env={"TOKENUNET_READ_PROCESS": mode},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        outputs.append(done.stderr)
    inline_out, inline_err, forked_out, forked_err = outputs
    assert inline_err == forked_err and inline_err.count("warning") >= 3, inline_err
    labels = [sitk.GetArrayFromImage(sitk.ReadImage(str(o / "segmentation.seg.nrrd"))) for o in (inline_out, forked_out)]
    np.testing.assert_array_equal(*labels)
