"""Runs one after another in one process (Slicer's module, a script's ``segment()`` calls, ``batch``'s cases): each
run's network gets the thread count the first got, and what a run changes of the process (torch's intra-op threads,
in the caller's thread and in threads started later; SimpleITK's default thread count; Python's switch interval) is
as before after it, also after a run that failed or was cancelled."""

import sys
import threading

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from TokenUNetSegmentLib.pipeline import cli, device, inference
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
    return torch.get_num_threads(), later, sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(), sys.getswitchinterval()


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
    ``segment()``, Slicer's next run thread) ran on N threads, also after a training refused or failed."""
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
