"""Child processes: options per platform, a cancel that ends the whole tree (with and without psutil)."""

import subprocess
import sys
import time

import pytest
from TokenUNetSegmentLib.pipeline import process_tree
from TokenUNetSegmentLib.pipeline.device_probe import DeviceProbe, resolved
from TokenUNetSegmentLib.pipeline.process_tree import (
    CREATE_NEW_PROCESS_GROUP,
    CREATE_NO_WINDOW,
    popen_options,
    signal_tree,
    stop_tree,
)

GRANDCHILD = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(120)\n"
)


def test_windows_children_get_no_console_window_and_their_own_group():
    assert popen_options("nt") == {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}
    assert CREATE_NO_WINDOW == 0x08000000 and CREATE_NEW_PROCESS_GROUP == 0x200  # the Win32 values
    assert popen_options("posix") == {"start_new_session": True}


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
@pytest.mark.parametrize("with_psutil", [True, False])
def test_stop_tree_ends_the_child_and_its_grandchild_without_raising(monkeypatch, with_psutil):
    if not with_psutil:
        monkeypatch.setattr(process_tree, "_psutil", lambda: None)  # Slicer does not bundle psutil
    elif process_tree._psutil() is None:
        pytest.skip("psutil is not installed here")
    process = subprocess.Popen([sys.executable, "-c", GRANDCHILD], stdout=subprocess.PIPE, text=True, **popen_options())
    grandchild = int(process.stdout.readline())
    assert alive(grandchild)
    stop_tree(process, grace=1.0)
    deadline = time.monotonic() + 10
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is not None and not alive(grandchild)
    process.stdout.close()
    stop_tree(process, grace=0)  # again, on a finished process: nothing raises
    signal_tree(process, kill=True)
    signal_tree(None)


def test_device_probe_answers_in_a_child_without_importing_torch_here():
    probe = DeviceProbe()
    deadline = time.monotonic() + 600  # the child imports torch: over 120 s on a 2-core machine at load 8
    while probe.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert probe.devices[:2] == ["auto", "cpu"]
    assert resolved(["auto", "cpu", "cuda", "cuda:0"], "auto") == "cuda"
    assert resolved(["auto", "cpu", "mps"], "auto") == "mps"
    assert resolved(["auto", "cpu"], "auto") == "cpu" and resolved(["auto", "cpu"], "cuda:1") == "cuda:1"
    broken = DeviceProbe(python="/no/such/python")
    assert broken.poll() == ["auto", "cpu"]


def test_stopping_a_finished_process_is_harmless():
    process = subprocess.Popen([sys.executable, "-c", "pass"], **popen_options())
    process.wait()
    stop_tree(process, 0.1)
    signal_tree(process, kill=True)
    assert process.returncode == 0
