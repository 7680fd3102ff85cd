"""``--progress json``: every line on stderr is an event, also what C libraries write to file descriptor 2 themselves
(GDCM's JPEG decoders, torch's C++ warnings, ITK, OpenMP): such text becomes a ``log`` event (level warning), and
the run's one final event (result or error) stays the last line."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from helpers.paths import MODULE_DIR
from helpers.processes import run_cli
from TokenUNetSegmentLib.pipeline.run_contract import (
    ErrorEvent,
    ExitCode,
    LogEvent,
    ProgressEvent,
    ResultEvent,
    RunRequest,
    RunState,
    decode_event,
)
from TokenUNetSegmentLib.pipeline.subprocess_run import SubprocessRun

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="file descriptor 2 is forwarded on POSIX systems")

NOISY_COMMAND = """
import ctypes, os, sys, threading, time
from TokenUNetSegmentLib.pipeline import cli
from TokenUNetSegmentLib.pipeline.errors import InputError
from TokenUNetSegmentLib.pipeline.run_contract import ResultEvent

libc = ctypes.CDLL(None)

def say(text):  # a C library's write, bypassing Python
    libc.write(2, text, len(text))

def arguments(parser):
    parser.add_argument('--progress', default='auto')
    parser.add_argument('--end', default='result')

def run(args):
    printer = cli.ProgressPrinter(args.progress)
    printer('start', 0.0)
    say(b'Unsupported JPEG data precision 12\\n')
    say(b'Marker handler function ')  # a line in two writes, a progress event between them
    printer('read', 0.2)
    say(b'failed to read the marker segment\\n')

    def other():  # another thread's progress, interleaved with C text
        for step in range(50):
            printer('inference', 0.3 + step / 100)
            os.write(2, b'[W thread] TORCH_WARN from another thread\\n')

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    print('a line on stdout stays on stdout')
    if args.end == 'sigterm':
        print('waiting', flush=True)
        time.sleep(60)
    if args.end == 'error':
        raise InputError('the volume is damaged', 'pick another series')
    printer.emit(ResultEvent('/tmp/out', {'segmentation': 'segmentation.nii.gz'}))
    say(b'OMP: Info #276: omp_set_nested routine deprecated\\n')  # after the final event
    return 0

cli.register_command('noisy', 'writes to file descriptor 2 from C', arguments, run)
sys.argv = ['tokenunet', 'noisy', *sys.argv[1:]]
cli.run_as_process()
"""

C_LINES = [
    "Unsupported JPEG data precision 12",
    "Marker handler function failed to read the marker segment",
    "[W thread] TORCH_WARN from another thread",
]


def noisy(*options: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", NOISY_COMMAND, *options],
        cwd=MODULE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def events_of(stderr: str) -> list:
    """The events of every stderr line; fails on a line that is not one."""
    lines = stderr.splitlines()
    assert lines, "nothing on stderr"
    undecoded = [line for line in lines if decode_event(line) is None]
    assert not undecoded, f"lines on stderr that are not events: {undecoded[:5]}"
    return [decode_event(line) for line in lines]


def assert_one_final_event_last(events: list, kind: type) -> None:
    finals = [event for event in events if isinstance(event, (ResultEvent, ErrorEvent))]
    assert len(finals) == 1 and isinstance(events[-1], kind), events[-3:]


def logged(events: list) -> list[str]:
    return [event.message for event in events if isinstance(event, LogEvent) and event.level == "warning"]


@pytest.mark.parametrize("end", ["result", "error"])
def test_what_c_libraries_write_to_fd_2_becomes_log_events_and_the_final_event_stays_last(end):
    child = noisy("--progress", "json", "--end", end)
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == (ExitCode.OK if end == "result" else ExitCode.USER_ERROR), stderr
    events = events_of(stderr)
    assert_one_final_event_last(events, ResultEvent if end == "result" else ErrorEvent)
    messages = logged(events)
    for line in C_LINES[:2]:
        assert messages.count(line) == 1, messages
    assert messages.count(C_LINES[2]) == 50
    if end == "result":  # written after the result event: still told, before it
        assert "OMP: Info #276: omp_set_nested routine deprecated" in messages
    fractions = [event.fraction for event in events if isinstance(event, ProgressEvent)]
    assert len(fractions) == 52 and fractions == sorted(fractions)  # no progress event lost or garbled
    assert stdout.splitlines() == ["a line on stdout stays on stdout"]


def test_sigterm_while_c_text_is_pending_ends_with_the_cancelled_event_last():
    child = noisy("--progress", "json", "--end", "sigterm")
    try:
        assert child.stdout.readline().strip() == "a line on stdout stays on stdout"
        assert child.stdout.readline().strip() == "waiting"
        child.send_signal(signal.SIGTERM)
        stdout, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == ExitCode.CANCELLED
    events = events_of(stderr)
    assert_one_final_event_last(events, ErrorEvent)
    assert events[-1].category == "cancelled"
    assert logged(events).count(C_LINES[2]) == 50


def test_other_progress_modes_leave_file_descriptor_2_alone():
    child = noisy("--progress", "none")
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == ExitCode.OK
    assert stderr.splitlines()[:2] == C_LINES[:2]  # the library's own lines, as it wrote them


def test_gdcm_messages_on_a_jpeg_dicom_it_cannot_decode_are_log_events(tmp_path):
    """A real trigger: GDCM's JPEG decoder prints ``Unsupported JPEG data precision 12`` on pydicom's 12-bit
    extended JPEG test file (before: four raw lines between the events)."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    source = get_testdata_file("JPGExtended.dcm")
    if source is None:
        pytest.skip("pydicom's test file JPGExtended.dcm is not installed")
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "slice.dcm").write_bytes(open(source, "rb").read())
    done = run_cli("segment", folder, "--out", tmp_path / "out", "--progress", "json")
    assert done.returncode == ExitCode.USER_ERROR, done.stderr
    events = events_of(done.stderr)
    assert_one_final_event_last(events, ErrorEvent)
    assert "Unsupported JPEG data precision 12" in logged(events), pydicom.__version__
    assert not (tmp_path / "out").exists()


def test_slicer_reads_a_childs_forwarded_library_text_as_warnings(tmp_path):
    """The Slicer side (:class:`.SubprocessRun`) reads the forwarded lines as log events with their level."""
    script = tmp_path / "child.py"
    script.write_text(NOISY_COMMAND)
    run = SubprocessRun(
        RunRequest(inputs=[(np.zeros((2, 2, 2), np.float32), np.eye(4))]),
        command=[sys.executable, str(script), "--progress", "json", "--end", "error"],
        env={**os.environ, "PYTHONPATH": str(MODULE_DIR)},
    )
    seen = []
    run.add_observer(seen.append)
    assert run.start().wait(timeout=120) == RunState.FAILED
    warnings = [e.message for e in seen if isinstance(e, LogEvent) and e.level == "warning"]
    assert C_LINES[0] in warnings and warnings.count(C_LINES[2]) == 50
    assert run.error.message == "the volume is damaged"


def run_command(body: str) -> subprocess.CompletedProcess:
    """A command whose run is ``body`` (indented code; ``ctypes``, ``os`` imported) run with ``--progress json`` in a
    process of its own."""
    code = (
        "import ctypes, os, sys\n"
        "from TokenUNetSegmentLib.pipeline import cli\n"
        "def arguments(parser):\n"
        "    parser.add_argument('--progress')\n"
        f"def run(args):\n{body}"
        "cli.register_command('c-library', 'writes to file descriptor 2', arguments, run)\n"
        "sys.exit(cli.main(['c-library', '--progress', 'json']))\n"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=MODULE_DIR, capture_output=True, text=True, timeout=120)


def test_a_c_call_that_holds_the_gil_and_writes_two_megabytes_does_not_block_the_run():
    """The forwarding process reads whatever this process does: a C call that holds the GIL (ctypes.PyDLL, as code
    run at torch's import does) may write more than the pipe holds (a forwarding thread, which needs the GIL to
    read, waits forever once the pipe is full: seen with Linux's default 64 KiB pipe)."""
    done = run_command(
        "    text = b''.join((b'library line %05d ' % i).ljust(63, b'.') + b'\\n' for i in range(32768))\n"
        "    assert len(text) == 2 * 1024 * 1024\n"
        "    ctypes.PyDLL(None).write(2, text, len(text))\n"
        "    ctypes.PyDLL(None).write(2, b'and a line without its end', 26)\n"
        "    return 0\n"
    )
    assert done.returncode == 0, done.stderr[-500:]
    messages = logged(events_of(done.stderr))
    assert len(messages) == 32769 and messages[-2].startswith("library line 32767")
    assert messages[-1] == "and a line without its end"


def test_what_a_library_writes_just_before_it_aborts_the_process_still_arrives():
    """The forwarding is a process of its own: a library's last words before ``abort()`` (C++'s ``terminate called
    after throwing ...``) are what Slicer shows for a run that died without an error event."""
    done = run_command(
        "    text = b'terminate called after throwing an instance of c10::Error\\n'\n"
        "    ctypes.PyDLL(None).write(2, text, len(text))\n"
        "    os.abort()\n"
    )
    assert done.returncode == -signal.SIGABRT
    assert logged(events_of(done.stderr)) == ["terminate called after throwing an instance of c10::Error"]


def test_a_fork_that_fails_leaves_stderr_as_it_was_and_no_descriptor_open():
    """Before: an OSError of ``os.fork`` (EAGAIN: the user's process limit) escaped as an internal error of the run,
    with its two pipes left open; now forwarding is skipped and stderr stays as it was."""
    script = (
        "import errno, os\n"
        "from TokenUNetSegmentLib.pipeline.stderr_events import StderrEvents\n"
        "def fork():\n"
        "    raise OSError(errno.EAGAIN, 'Resource temporarily unavailable')\n"
        "os.fork = fork\n"
        "before = sorted(os.listdir('/proc/self/fd'))\n"
        "forwarding = StderrEvents()\n"
        "assert forwarding.start() is False and not forwarding.active\n"
        "forwarding.close()\n"
        "after = sorted(os.listdir('/proc/self/fd'))\n"
        "assert len(after) == len(before), (before, after)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=MODULE_DIR, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
