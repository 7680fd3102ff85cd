"""Device choice, CUDA autocast, out-of-memory retries and fallback, memory estimates (CUDA faked)."""

import numpy as np
import pytest
import torch
from helpers.packages import ball_phantom, threshold_package
from TokenUNetSegmentLib.pipeline import device as dev
from TokenUNetSegmentLib.pipeline.errors import OutOfMemoryError, TokenUNetError
from TokenUNetSegmentLib.pipeline.segmentation import segment


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert dev.resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert dev.resolve_device("auto").type == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert dev.resolve_device("auto").type == "cpu"
    assert dev.resolve_device("cpu").type == "cpu"


def test_explicit_device_that_is_absent_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(TokenUNetError, match="no CUDA GPU is available"):
        dev.resolve_device("cuda")
    with pytest.raises(TokenUNetError, match="MPS is not available"):
        dev.resolve_device("mps")


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_autocast_only_on_cuda():
    context = dev.autocast(torch.device("cuda"))
    assert isinstance(context, torch.autocast) and context.fast_dtype == torch.float16
    assert not isinstance(dev.autocast(torch.device("cpu")), torch.autocast)


def test_cuda_oom_halves_the_batch_then_falls_back_to_cpu():
    calls, warnings = [], []

    def run(device, batch):
        calls.append((device.type, batch))
        if device.type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "ok"

    emptied = []
    assert dev.run_with_oom_fallback(run, torch.device("cuda"), 4, warnings.append, lambda: emptied.append(1)) == "ok"
    assert calls == [("cuda", 4), ("cuda", 2), ("cuda", 1), ("cpu", 4)]
    assert len(emptied) == 3 and "falling back to the CPU" in warnings[-1]


def test_cuda_oom_recovers_with_a_smaller_batch():
    calls = []

    def run(device, batch):
        calls.append(batch)
        if batch > 1:
            raise RuntimeError("CUDA error: out of memory")
        return batch

    assert dev.run_with_oom_fallback(run, torch.device("cuda"), 2, lambda m: None, lambda: None) == 1
    assert calls == [2, 1]


def test_cpu_oom_becomes_a_clear_error_and_other_errors_pass_through():
    def oom(device, batch):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    with pytest.raises(OutOfMemoryError, match="out of memory on the CPU"):
        dev.run_with_oom_fallback(oom, torch.device("cpu"), 1)

    def other(device, batch):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        dev.run_with_oom_fallback(other, torch.device("cuda"), 2, lambda m: None, lambda: None)


def test_segment_falls_back_to_cpu_when_the_gpu_runs_out(monkeypatch):
    """The whole segment() path with a fake CUDA device whose windows always run out of memory."""
    import TokenUNetSegmentLib.pipeline.inference as inference
    import TokenUNetSegmentLib.pipeline.segmentation as seg

    real = inference.sliding_window
    devices = []

    def fake_sliding_window(network, image, roi, overlap, blending, batch, device, progress, tokens, since=None):
        devices.append(device.type)
        if device.type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(network, image, roi, overlap, blending, batch, device, progress, tokens)

    monkeypatch.setattr(inference, "sliding_window", fake_sliding_window)
    monkeypatch.setattr(seg, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(dev.torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(seg, "check_memory", lambda estimate, device: None)
    image = ball_phantom((20, 20, 20), (10, 10, 10), (5, 5, 5))
    result = segment((image, np.eye(4)), threshold_package(), device="cuda")
    assert devices == ["cuda", "cuda", "cpu"]  # batch 2, batch 1, then the CPU
    assert result.device == "cpu" and any("falling back to the CPU" in w for w in result.warnings)
    assert result.labels.sum() > 0


def test_memory_estimate_grows_with_the_volume_and_refuses_clearly():
    network = threshold_package().network
    small = dev.estimate_memory(network, 10**6, 10**6, (96, 96, 96), 1)
    big = dev.estimate_memory(network, 10**8, 10**8, (96, 96, 96), 1)
    assert big["host"] > 50 * small["host"] and big["window"] == small["window"]
    with pytest.raises(OutOfMemoryError, match=r"needs about .* GiB of memory but only 1.0 GiB is free"):
        dev.check_memory(big, torch.device("cpu"), available=lambda d: 2**30)
    dev.check_memory(small, torch.device("cpu"), available=lambda d: 2**34)
    with pytest.raises(OutOfMemoryError, match="GPU memory"):
        dev.check_memory(small, torch.device("cuda"), available=lambda d: 2**40 if d.type == "cpu" else 1000)


def test_segment_refuses_before_running_when_memory_is_short(monkeypatch):
    monkeypatch.setattr(dev, "available_memory", lambda device: 1000)
    image = ball_phantom((20, 20, 20), (10, 10, 10), (5, 5, 5))
    with pytest.raises(OutOfMemoryError, match="memory"):
        segment((image, np.eye(4)), threshold_package(), device="cpu")


def test_available_memory_reads_the_gpu_and_the_host(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 * 2**30, 80 * 2**30))
    assert dev.available_memory(torch.device("cuda")) == 3 * 2**30
    host = dev.available_memory(torch.device("cpu"))
    assert 2**26 < host < 2**50  # a plausible amount of free RAM, read from /proc/meminfo or sysconf


def test_the_memory_limit_applies_to_the_whole_run_not_only_to_reading(monkeypatch):
    """TOKENUNET_MEMORY_LIMIT bounds the run's estimate too (before: only the readers' header check used it; the
    sample ran to a peak RSS of 635 MB under TOKENUNET_MEMORY_LIMIT=200M)."""
    image = ball_phantom((20, 20, 20), (10, 10, 10), (5, 5, 5))
    monkeypatch.setenv("TOKENUNET_MEMORY_LIMIT", "64K")
    with pytest.raises(OutOfMemoryError, match=r"TOKENUNET_MEMORY_LIMIT=64K \(64 KiB\)"):
        segment((image, np.eye(4)), threshold_package(), device="cpu")
    monkeypatch.setenv("TOKENUNET_MEMORY_LIMIT", "100T")  # above free memory: free memory is the bound
    assert segment((image, np.eye(4)), threshold_package(), device="cpu").labels.sum() > 0


def test_a_batch_larger_than_the_window_count_is_sized_by_the_windows(monkeypatch):
    """``--batch-size 1000`` on a volume of few windows runs those windows in one batch (before: refused as
    needing 1000 windows' activations, 61 GiB for the sample's 12 windows of 64^3)."""
    image = ball_phantom((20, 20, 20), (10, 10, 10), (5, 5, 5))  # one 32^3 window
    one = dev.estimate_memory(threshold_package().network, 8000, 8000, (32, 32, 32), 1)
    monkeypatch.setattr(dev, "available_memory", lambda device: 4 * (one["host"] + one["window"]))
    assert segment((image, np.eye(4)), threshold_package(), device="cpu", batch_size=4096).labels.sum() > 0
