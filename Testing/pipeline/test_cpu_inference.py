"""CPU inference settings of the pipeline: threads for the machine's load, mixed precision, and the command
line's memory allocation (huge pages: few page faults for new large tensors)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "TokenUNetSegment"
FAULTS = """
import resource
import torch

def faults_of_a_new_64_mb_tensor():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(1 << 24).fill_(1.0)  # created, touched and freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

# the fewest over a few tries: a kernel may reclaim idle pages (e.g. DAMON's pageout) or lack huge pages
def fewest_faults():
    return min(faults_of_a_new_64_mb_tensor() for _ in range(6))
"""


def _run(script: str) -> list[str]:
    """``script``'s printed words, run in a fresh interpreter without a huge-page setting of its own."""
    env = {key: value for key, value in os.environ.items() if key != "THP_MEM_ALLOC_ENABLE"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=MODULE_DIR, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def _transparent_huge_pages() -> bool:
    try:
        return "[never]" not in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not _transparent_huge_pages(), reason="needs Linux transparent huge pages")
def test_huge_pages_make_a_new_large_tensor_cost_few_page_faults():
    before_torch = "from TokenUNetSegmentLib.pipeline.allocator import use_huge_pages\nprint(use_huge_pages())\n"
    applied, huge = _run(before_torch + FAULTS + "print(fewest_faults())")
    assert applied == "True" and int(huge) < 4_000  # 32 pages of 2 MiB (4 KiB ones where none is free)
    after_torch = "import torch\nfrom TokenUNetSegmentLib.pipeline.allocator import use_huge_pages\n"
    assert _run(after_torch + "print(use_huge_pages())") == ["False"]  # too late once torch is imported


CALLER = """
import os
from TokenUNetSegmentLib.pipeline import cli

def run(args):
    import torch

    torch.ones(4)  # torch's CPU allocator reads the huge-page setting at its first allocation
    return 0

cli.register_command("allocate", "", lambda parser: None, run)
print(cli.main(["allocate"]), os.environ.get("THP_MEM_ALLOC_ENABLE", "unset"))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="huge pages are asked for on Linux only")
def test_a_caller_of_cli_main_gets_its_environment_back_and_keeps_the_huge_pages():
    """``cli.main`` in a caller's process (a script, Slicer's console) asks for huge pages before torch is imported;
    before, ``THP_MEM_ALLOC_ENABLE=1`` stayed in the caller's ``os.environ`` for good (inherited by every process it
    starts). It is put back as it was, set or unset; torch has read it by then, so the process's tensors keep it."""
    code, left, faults = _run(CALLER + FAULTS + "print(fewest_faults())")
    assert (code, left) == ("0", "unset")
    if _transparent_huge_pages():
        assert int(faults) < 4_000  # still huge pages after the return (4 KiB pages: 16,384 faults)
    assert _run("import os\nos.environ['THP_MEM_ALLOC_ENABLE'] = '0'\n" + CALLER) == ["0", "0"]  # the caller's own


def test_nothing_changes_off_linux(monkeypatch):
    from TokenUNetSegmentLib.pipeline import allocator

    monkeypatch.setattr(allocator.sys, "platform", "win32")
    assert allocator.use_huge_pages() is False


def test_threads_leave_the_cpus_other_work_uses():
    from TokenUNetSegmentLib.pipeline.device import threads_for_load

    assert threads_for_load(2, cpus=2, load=0.1) == 2
    assert threads_for_load(2, cpus=2, load=0.8) == 1  # 1.2 CPUs free: one thread
    assert threads_for_load(2, cpus=2, load=6.0) == 1  # never fewer than one
    assert threads_for_load(8, cpus=16, load=4.0) == 8  # never more than before
    assert threads_for_load(4, cpus=8, load=5.6) == 2


def test_the_load_of_others_leaves_out_this_process_own_cpu_time():
    from TokenUNetSegmentLib.pipeline.device import CpuSample, load_of_others, threads_for_load

    since = CpuSample(when=100.0, machine_busy=50.0, own=3.0)
    # 2 s later: the machine was busy 3 CPU-seconds, 2 of them this process's (its reading, preprocessing)
    assert load_of_others(since, CpuSample(102.0, 53.0, 5.0)) == pytest.approx(0.5)
    assert load_of_others(since, CpuSample(102.0, 53.0, 6.5)) == 0.0  # clock ticks: never below zero
    assert load_of_others(CpuSample(100.0, None, 3.0), CpuSample(102.0, 53.0, 5.0)) is None  # no /proc/stat
    assert threads_for_load(2, cpus=2, load=load_of_others(since, CpuSample(102.0, 53.0, 5.0))) == 2
    assert threads_for_load(2, cpus=2, load=load_of_others(since, CpuSample(102.0, 55.0, 5.0))) == 1


def test_a_run_that_keeps_the_cpus_busy_itself_still_gets_every_thread(monkeypatch):
    """The bug this replaced: the 1-minute load average counted the run's own work (and the runs before it), so
    the network got 1 thread of 2 on every command-line run on an otherwise idle 2-core machine."""
    import numpy as np
    from TokenUNetSegmentLib.pipeline import device

    sample = device.cpu_sample()
    if sample.machine_busy is None:
        pytest.skip("no /proc/stat on this system")
    monkeypatch.setattr(device.os, "getloadavg", lambda: (1e6, 0.0, 0.0))  # a stale, saturated load average
    real = device.cpu_sample()
    data = np.random.default_rng(0).random(2_000_000)

    def keep_busy(seconds: float) -> None:  # this process busy: its preprocessing
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            np.sort(data)

    keep_busy(0.3)
    now = device.cpu_sample()
    assert now.machine_busy - real.machine_busy >= now.own - real.own - 0.1  # the machine's count holds our own work
    # the rest of the machine idle, whatever else runs on this one: its busy time is this process's own
    monkeypatch.setattr(device, "_machine_busy_seconds", lambda: sum(os.times()[:2]))
    since = device.cpu_sample()
    keep_busy(0.6)
    now = device.cpu_sample()
    own = (now.own - since.own) / (now.when - since.when)
    others = device.load_of_others(since, now)
    assert own > 0.2 and others is not None and others < 0.05  # 0; own or more if it counted
    assert device.threads_for_load(2, cpus=2, load=0.0, since=since) == 2
    calls = []
    monkeypatch.setattr(device, "load_of_others", lambda s: calls.append(s) or 0.0)
    assert device.threads_for_load(2, cpus=2, since=since) == 2 and calls == [since]  # measured, not averaged
    assert device.threads_for_load(1, cpus=2, since=since) == 1 and calls == [since]  # one thread: nothing to ask
    assert device.threads_for_load(2, cpus=2) == 1  # without a start sample: the load average


def test_a_short_run_waits_for_enough_clock_ticks(monkeypatch):
    from TokenUNetSegmentLib.pipeline import device

    since = device.cpu_sample()
    if since.machine_busy is None:
        pytest.skip("no /proc/stat on this system")
    device.load_of_others(since)
    assert time.monotonic() - since.when >= device.MIN_LOAD_INTERVAL_S


def test_inference_threads_are_restored(monkeypatch):
    import torch
    from TokenUNetSegmentLib.pipeline import device

    monkeypatch.setattr(device.os, "getloadavg", lambda: (1e6, 0.0, 0.0))  # a saturated machine
    before = torch.get_num_threads()
    with device.inference_threads(torch.device("cpu")) as threads:
        assert threads == torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with device.inference_threads(torch.device("cuda")) as threads:  # the GPU's host threads are left alone
        assert threads == before


def test_cpu_autocast_is_bfloat16_only_for_networks_that_run_it(monkeypatch):
    import torch
    from TokenUNetSegmentLib.model import build_network
    from TokenUNetSegmentLib.pipeline import device

    cpu, token_unet = torch.device("cpu"), build_network("8Token", 1, 2, channels=(4, 8, 16, 32))
    monkeypatch.setattr(device, "cpu_has_bfloat16", lambda: True)
    with device.autocast(cpu, token_unet):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    for network, precision in ((token_unet, "float32"), (torch.nn.Conv3d(1, 1, 1), "auto")):
        with device.autocast(cpu, network, precision):
            assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setattr(device, "cpu_has_bfloat16", lambda: False)  # emulated bfloat16 is slower
    with device.autocast(cpu, token_unet):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(device.TokenUNetError, match="unknown precision"):
        device.autocast(cpu, token_unet, "float16")


def test_sliding_window_labels_agree_in_bfloat16_and_float32():
    """The precision the pipeline picks on this CPU against float32: same labels but for near-ties."""
    import numpy as np
    import torch
    from TokenUNetSegmentLib.model import build_network
    from TokenUNetSegmentLib.pipeline.inference import sliding_window

    torch.manual_seed(0)
    network = build_network("8Attn", 1, 4, channels=(8, 16, 32, 64)).eval()
    image = np.random.default_rng(0).random((1, 48, 40, 56), dtype=np.float32)
    results = {
        precision: sliding_window(network, image, (32, 32, 32), 0.25, precision=precision)
        for precision in ("auto", "float32")
    }
    (auto, auto_maps), (full, full_maps) = results["auto"], results["float32"]
    assert auto.dtype == np.float32 and auto.shape == full.shape
    scale = float(np.abs(full).max())
    assert float(np.abs(auto - full).max()) < 3e-2 * scale  # bfloat16's bound (Testing/model/test_channels_last.py)
    assert (auto.argmax(0) == full.argmax(0)).mean() > 0.99
    for kind in ("gather", "broadcast"):
        assert float(np.abs(auto_maps[kind] - full_maps[kind]).max()) < 3e-2


def test_segment_sets_its_threads_from_the_load_others_put_on_the_cpus_since_it_started(monkeypatch):
    import numpy as np
    import torch
    from helpers.packages import ball_phantom, threshold_package
    from TokenUNetSegmentLib.pipeline import device
    from TokenUNetSegmentLib.pipeline.segmentation import segment

    calls = []
    monkeypatch.setattr(device, "load_of_others", lambda since: calls.append(since) or 0.0)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        started = time.monotonic()
        segment([(ball_phantom((24, 24, 24), (12, 12, 12), (5, 5, 5)), np.eye(4))], threshold_package(), device="cpu")
    finally:
        torch.set_num_threads(before)
    assert len(calls) == 1 and started <= calls[0].when <= time.monotonic()
