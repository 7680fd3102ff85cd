"""Runs one after another in one process (Slicer's module, a script's ``segment()`` calls, ``batch``'s cases): each
run's network gets the thread count the first got, and what a run changes of the process (torch's intra-op threads,
in the caller's thread and in threads started later; SimpleITK's default thread count; Python's switch interval;
cudnn's flags) is as before after it, also after a run that failed or was cancelled."""

import contextlib
import sys
import threading

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from TokenUNetSegmentLib.pipeline import cli, device, inference, voxel_scores
from TokenUNetSegmentLib.pipeline.background import BackgroundCall, switch_interval
from TokenUNetSegmentLib.pipeline.errors import CancelledError
from TokenUNetSegmentLib.pipeline.package_loader import load_package
from TokenUNetSegmentLib.pipeline.run_contract import RunRequest, RunState
from TokenUNetSegmentLib.pipeline.runs import InProcessRun
from TokenUNetSegmentLib.pipeline.segmentation import segment

IMAGE = (np.linspace(-100, 300, 30 * 30 * 24, dtype=np.float32).reshape(30, 30, 24), np.diag([3.0, 3.0, 3.0, 1.0]))


@pytest.fixture
def network_threads(monkeypatch) -> list:
    """The torch threads of the thread that runs each run's network; the machine's load left out (other processes
    on a shared machine would change the count from run to run)."""
    monkeypatch.setattr(device, "load_of_others", lambda since: 0.0)
    seen, real = [], inference.stitch_windows

    def stitch(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(inference, "stitch_windows", stitch)
    return seen


def process_settings() -> tuple:
    later = []
    thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    return (
        torch.get_num_threads(),
        later,
        sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(),
        sys.getswitchinterval(),
        cudnn,
    )


def test_in_process_runs_leave_the_process_as_it_was(tiny_package, network_threads):
    package = load_package(tiny_package)
    before = process_settings()
    segment(IMAGE, package, device="cpu")
    assert process_settings() == before
    run = InProcessRun(RunRequest(inputs=[IMAGE], model=str(tiny_package), device="cpu")).start()  # Slicer's
    assert run.wait(120) == RunState.COMPLETED
    assert process_settings() == before
    with pytest.raises(CancelledError):  # cancelled once its network has started
        segment(IMAGE, package, device="cpu", cancel=lambda: len(network_threads) == 3)
    assert process_settings() == before
    failing = package.network.register_forward_hook(lambda *_: 1 / 0)
    try:
        with pytest.raises(ZeroDivisionError):
            segment(IMAGE, package, device="cpu")
    finally:
        failing.remove()
    assert process_settings() == before
    segment(IMAGE, package, device="cpu")
    assert process_settings() == before
    assert len(network_threads) == 5 and set(network_threads) == {before[0]}


def test_the_cases_of_a_batch_run_on_the_threads_of_the_first(tiny_package, network_threads, tmp_path):
    cases = []
    for index in range(3):
        image = sitk.GetImageFromArray(IMAGE[0].T.copy() + index)
        image.SetSpacing((3.0, 3.0, 3.0))
        cases.append(str(tmp_path / f"case{index}.nii.gz"))
        sitk.WriteImage(image, cases[-1])
    before = process_settings()
    options = ["--device", "cpu", "--progress", "none"]
    assert cli.main(["batch", *cases, "--model", str(tiny_package), "--out", str(tmp_path / "out"), *options]) == 0
    assert process_settings() == before
    assert len(network_threads) == 3 and set(network_threads) == {before[0]}


def test_a_training_run_leaves_the_process_as_it_was(tmp_path):
    """``train --threads N`` through ``cli.main`` (a script's, a notebook's) or ``trainer.train``. Before (sigreview):
    torch's thread count was set to N for good: the caller's thread and every thread started later (its next
    ``segment()``, Slicer's next run thread) ran on N threads, also after a training refused or failed. Before
    (threads2): MONAI's ``set_determinism`` left cudnn deterministic and without its benchmark for good (the process's
    next CUDA runs on cudnn's deterministic algorithms)."""
    import json

    from helpers.training_data import train_config, write_dataset

    config = tmp_path / "config.json"
    config.write_text(json.dumps(train_config()))
    datalist = write_dataset(tmp_path / "data", cases=1, validation=0)
    before = process_settings()
    threads = str(before[0] % 3 + 1)  # not the process's own
    argv = ["train", str(datalist), "--config", str(config), "--progress", "none", "--threads", threads]
    argv += ["--steps", "2", "--val-every", "2", "--workers", "0"]
    assert cli.main([*argv, "--out", str(tmp_path / "run")]) == 0
    assert process_settings() == before
    assert cli.main([*argv, "--out", str(tmp_path / "refused"), "--hold-out", "nobody"]) == 2  # after the count is set
    assert process_settings() == before


class Overlap:
    """Two in-process runs of ``package`` made to overlap at chosen points, without sleeps: the first (Slicer's run
    thread) pauses in its scoring pass (the first chunk) or in its network until released; the second's network
    pauses until released. ``seen``: each network's torch thread count, in the order they started."""

    def __init__(self, monkeypatch, package, first_pauses_in: str, first_fails: bool = False):
        self.package, self.seen = package, []
        self.paused = {"first": threading.Event(), "second": threading.Event()}
        self.go = {"first": threading.Event(), "second": threading.Event()}
        monkeypatch.setattr(device, "load_of_others", lambda since: 0.0)  # other processes' load left out
        real_stitch, real_chunk = inference.stitch_windows, voxel_scores._score_chunk

        def stitch(*args, **kwargs):
            self.seen.append(torch.get_num_threads())
            if len(self.seen) == 2 or (len(self.seen) == 1 and first_pauses_in == "network"):
                self.pause("first" if len(self.seen) == 1 else "second")
            return real_stitch(*args, **kwargs)

        def chunk(*args):
            if first_pauses_in == "scoring" and not self.paused["first"].is_set():
                self.pause("first")
                if first_fails:
                    raise RuntimeError("the first run's scoring failed")
            return real_chunk(*args)

        monkeypatch.setattr(inference, "stitch_windows", stitch)
        monkeypatch.setattr(voxel_scores, "_score_chunk", chunk)

    def pause(self, which: str) -> None:
        self.paused[which].set()
        assert self.go[which].wait(60), f"the {which} run was never released"

    def start(self, which: str) -> InProcessRun:
        run = InProcessRun(RunRequest(inputs=[IMAGE], model=str(self.package), device="cpu")).start()
        assert self.paused[which].wait(60), f"the {which} run never reached its pause"
        return run

    def end(self, which: str, run: InProcessRun) -> RunState:
        self.go[which].set()
        return run.wait(120)


@pytest.mark.parametrize("first_ends_first", [True, False], ids=["first-ends-first", "second-ends-first"])
@pytest.mark.parametrize("ending", ["completed", "second-cancelled", "first-failed"])
def test_overlapping_runs_each_get_their_threads_and_leave_the_process_as_it_was(
    tiny_package, monkeypatch, first_ends_first, ending
):
    """Slicer's in-process run and a second one (a second run, a ``segment()`` from the console) in one process, the
    second started while the first is in its scoring pass (which puts its own thread and its workers on 1 torch
    thread). Before (threads2): the second read that 1 as its caller's count and ran its whole network on 1 thread, and
    whichever ended last put back what it had saved: threads started after both had ended got 1 torch thread."""
    overlap = Overlap(monkeypatch, tiny_package, "scoring", first_fails=ending == "first-failed")
    before = process_settings()
    first = overlap.start("first")
    second = overlap.start("second")
    if ending == "second-cancelled":
        second.cancel()
    order = [("first", first), ("second", second)]
    states = {which: overlap.end(which, run) for which, run in (order if first_ends_first else order[::-1])}
    assert states == {
        "first": RunState.FAILED if ending == "first-failed" else RunState.COMPLETED,
        "second": RunState.CANCELLED if ending == "second-cancelled" else RunState.COMPLETED,
    }
    assert overlap.seen == [before[0], before[0]]  # what each would have used alone
    assert process_settings() == before


def test_a_run_started_while_another_runs_its_network_on_the_cpu_gets_the_cpus_left(tiny_package, monkeypatch):
    """Two CPU networks of one process at once share the CPUs, as two runs in two processes do (a subprocess run
    counts the other's threads as the load of others; an in-process run could not: its own process's CPU time is left
    out of that load). Before (threads2): both took every thread, 4 threads on 3 CPUs here; each parallel operation
    waits for its slowest thread (``device.threads_for_load``). A run alone afterwards gets every thread again."""
    overlap = Overlap(monkeypatch, tiny_package, "network")
    monkeypatch.setattr(device.os, "cpu_count", lambda: 3)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        before = process_settings()
        first = overlap.start("first")
        second = overlap.start("second")
        assert [overlap.end("first", first), overlap.end("second", second)] == [RunState.COMPLETED] * 2
        segment(IMAGE, load_package(tiny_package), device="cpu")
        after = process_settings()
    finally:
        torch.set_num_threads(threads)
    assert overlap.seen == [2, 1, 2]
    assert after == before


def test_a_run_beside_a_training_gets_the_threads_of_the_process(tiny_package, network_threads, monkeypatch, tmp_path):
    """``train --threads N`` through ``cli.main`` in a script's thread while Slicer's in-process run starts. Before
    (threads2): ``--threads`` set the count of every thread started while the training ran: the run's network got N."""
    import json

    from helpers.training_data import train_config, write_dataset
    from TokenUNetSegmentLib.pipeline.training import trainer

    config = tmp_path / "config.json"
    config.write_text(json.dumps(train_config()))
    datalist = write_dataset(tmp_path / "data", cases=1, validation=0)
    monkeypatch.setattr(device.os, "cpu_count", lambda: 4)  # a run alone: 2 threads whatever the machine
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    training_threads, paused, go, real = [], threading.Event(), threading.Event(), trainer.build_package_network

    def build(*args):
        training_threads.append(torch.get_num_threads())
        paused.set()
        assert go.wait(60)
        return real(*args)

    monkeypatch.setattr(trainer, "build_package_network", build)
    argv = ["train", str(datalist), "--config", str(config), "--progress", "none", "--threads", "1"]
    argv += ["--steps", "2", "--val-every", "2", "--workers", "0", "--out", str(tmp_path / "run")]
    try:
        before = process_settings()
        training = BackgroundCall(lambda: cli.main(argv), "a script's training")
        try:
            assert paused.wait(120)
            run = InProcessRun(RunRequest(inputs=[IMAGE], model=str(tiny_package), device="cpu")).start()
            assert run.wait(120) == RunState.COMPLETED
        finally:
            go.set()
            exit_code = training.result()
        after = process_settings()
    finally:
        torch.set_num_threads(threads)
    assert exit_code == 0 and training_threads == [1]
    assert network_threads == [2, 1]  # the run's, then the training's statistics pass on its own --threads
    assert after == before
    assert process_settings() == before


def test_overlapping_switch_interval_blocks_leave_the_interval_of_before():
    """``segment`` commands run through ``cli.main`` from two threads of one process, ending in the order they began
    (before, threads2: the second saved the first's interval and put it back last: it stayed 1 ms)."""
    before = sys.getswitchinterval()
    first, second = switch_interval(0.001), switch_interval(0.002)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert sys.getswitchinterval() == pytest.approx(0.002)
    second.__exit__(None, None, None)
    assert sys.getswitchinterval() == before


class StopAfterRelease:
    """``process_settings``' lock, with a stop (``KeyboardInterrupt``, as the command line's handler raises it in the
    main thread) as its ``at``-th locked section ends: where a signal that came during the section (a thread's join,
    torch's or ITK's calls) is handled, at the first check of Python's evaluation loop once the lock is let go."""

    def __init__(self, lock, at: int):
        self.lock, self.at, self.released = lock, at, 0

    def __enter__(self):
        return self.lock.__enter__()

    def __exit__(self, *error):
        self.lock.__exit__(*error)
        self.released += 1
        if self.released == self.at and error[0] is None:
            raise KeyboardInterrupt
        return False


def later_holds_put_back() -> tuple:
    """What the process gets back from blocks started after: a caller's new torch count (its console's
    ``set_num_threads``) after a run, cudnn's flags after a training's, and whether a CPU network alone on 2 CPUs
    gets both (none of an earlier run counted as running)."""
    from TokenUNetSegmentLib.pipeline import process_settings as settings

    threads, flags = torch.get_num_threads(), process_settings()[4]
    torch.set_num_threads(threads % 3 + 1)
    try:
        with settings.held_by_a_run():
            torch.backends.cudnn.deterministic = not flags[0]
        kept = process_settings()[:2]
    finally:
        torch.set_num_threads(threads)
    with settings.network_threads(lambda busy: device.threads_for_load(2, cpus=2, load=0.0, beside=busy)) as alone:
        pass
    return kept == (threads % 3 + 1, [threads % 3 + 1]), process_settings()[4] == flags, alone


def test_a_stop_as_any_locked_section_ends_leaves_nothing_held(monkeypatch):
    """A Ctrl-C or SIGTERM handled as any of the locked sections of a run's holds ends (``segment()``'s and
    ``train``'s, the network's, the reading's switch interval, ITK's quiet reading), one place after another. Before
    (reviewthreads): a stop handled after a hold was counted and before its block began left it counted for good: the
    switch interval stayed 1 ms or ITK's warnings off, every later CPU network of the process counted the threads of
    one that no longer ran (1 thread of 2), the process's torch count and cudnn's flags of before the first run were
    put back over the caller's later ones."""
    from TokenUNetSegmentLib.pipeline import process_settings as settings
    from TokenUNetSegmentLib.pipeline.readers.itk import quiet_itk

    def run_holds():
        with settings.held_by_a_run(), switch_interval(0.001), quiet_itk():
            with settings.network_threads(lambda busy: 1):
                pass

    def state():
        return process_settings(), sitk.ProcessObject.GetGlobalWarningDisplay()

    real, before, stops = settings._lock, state(), []
    for at in range(1, 40):
        monkeypatch.setattr(settings, "_lock", StopAfterRelease(real, at))
        try:
            run_holds()
        except KeyboardInterrupt:
            stops.append(at)
        finally:
            monkeypatch.setattr(settings, "_lock", real)
        assert (at, state()) == (at, before)
        assert (at, later_holds_put_back()) == (at, (True, True, 2))
        if stops[-1:] != [at]:
            break
    assert len(stops) >= 8  # each enter and exit of the five holds


def abandoned_hold() -> None:
    """A run's hold whose block never began nor ended, left in a reference cycle: a stop handled in ``contextlib``'s
    ``__enter__`` just after the hold was taken, its traceback kept in a cycle (an error kept by the error that
    replaced it). Python closes the hold when its cyclic collection frees it: at any allocation, in any thread."""
    from TokenUNetSegmentLib.pipeline import process_settings as settings

    block = settings.threads_here(1)
    block.__enter__()
    cycle = [block]
    cycle.append(cycle)


def test_a_hold_freed_by_the_collector_inside_a_locked_section_does_not_hang(monkeypatch):
    """Before (reviewthreads): the abandoned hold's end waited for the lock that its own thread held when the collector
    ran inside a locked section (here the next run's start): that thread hung for good (a run thread of Slicer's,
    which no Ctrl-C reaches)."""
    import gc

    from TokenUNetSegmentLib.pipeline import process_settings as settings

    real, collected = torch.get_num_threads, []

    def collecting():  # the collector runs at this allocation, within the section
        if not collected:
            collected.append(gc.collect())
        return real()

    def next_run():
        abandoned_hold()
        gc.disable()  # freed at the chosen point only
        try:
            monkeypatch.setattr(torch, "get_num_threads", collecting)
            with settings.held_by_a_run():
                monkeypatch.setattr(torch, "get_num_threads", real)
        finally:
            gc.enable()

    before = process_settings()
    thread = threading.Thread(target=next_run, daemon=True)
    thread.start()
    thread.join(60)
    if thread.is_alive():
        with contextlib.suppress(RuntimeError):
            settings._lock.release()  # a plain lock (the old one): the hung thread let go, for the tests after
        pytest.fail("the thread waits for the lock it holds")
    assert collected and process_settings() == before


def test_a_hold_freed_in_another_thread_leaves_that_threads_count():
    """Before (reviewthreads): the abandoned hold's end set the count of its thread of before on whichever thread
    freed it (the caller of the next run, its network's thread)."""
    import gc

    threads = torch.get_num_threads()
    ended = threading.Thread(target=abandoned_hold)  # its thread ends, its hold is left
    ended.start()
    ended.join()
    torch.set_num_threads(threads % 3 + 1)  # this thread's own count, chosen after
    try:
        gc.collect()
        assert torch.get_num_threads() == threads % 3 + 1
    finally:
        torch.set_num_threads(threads)
    assert process_settings()[1] == [threads]
