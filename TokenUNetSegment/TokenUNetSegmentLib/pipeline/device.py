"""Device choice, mixed precision, memory estimates and the CUDA out-of-memory fallbacks."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import process_settings
from .errors import OutOfMemoryError, TokenUNetError
from .memory import memory_limit
from .run_memory import host_bytes, host_shortfall

log = logging.getLogger(__name__)
DEVICES = ("auto", "cpu", "cuda", "mps")
MIN_LOAD_INTERVAL_S = 0.1  # /proc/stat counts 10 ms ticks per CPU: the load over 0.1 s is good to +-0.3 CPU


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device that is absent is refused."""
    if isinstance(name, torch.device):
        return name
    if name is not None and not isinstance(name, str):
        raise TokenUNetError(f"a device is a name such as cpu or cuda:0, got {type(name).__name__}")
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind, _, index = name.partition(":")
    if kind not in DEVICES or (index and not (kind == "cuda" and index.isdigit() and len(index) < 4)):
        raise TokenUNetError(f"unknown device '{name[:40]}'", f"use one of {', '.join(DEVICES)}, or cuda:N")
    if kind == "cuda" and not torch.cuda.is_available():
        raise TokenUNetError(
            f"device '{name}' was requested but no CUDA GPU is available",
            "use --device auto or cpu, or install a CUDA build of PyTorch",
        )
    if index and int(index) >= torch.cuda.device_count():
        raise TokenUNetError(
            f"device '{name}' was requested but this computer has {torch.cuda.device_count()} CUDA GPU(s)",
            "use cuda:0, or --device auto",
        )
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise TokenUNetError("device 'mps' was requested but Apple MPS is not available", "use --device cpu")
    return torch.device(name)


PRECISIONS = ("auto", "float32")


def cpu_has_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX tiles); elsewhere bfloat16 is emulated
    and slower than float32."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, probe, None)
        try:
            if check is not None and check():
                return True
        except RuntimeError:
            continue
    return False


def autocast(device: torch.device, network=None, precision: str = "auto"):
    """The mixed precision a run uses: float16 autocast on CUDA; on a CPU with native bfloat16, bfloat16
    autocast for networks whose CPU inference runs it (``network.bfloat16_cpu_inference``, Token-UNet: its k3
    convolutions, about 30 % faster); float32 elsewhere, and everywhere with ``precision="float32"``."""
    if precision not in PRECISIONS:
        raise TokenUNetError(f"unknown precision '{precision}'", f"use one of {', '.join(PRECISIONS)}")
    if precision == "float32":
        return contextlib.nullcontext()
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    if device.type == "cpu" and getattr(network, "bfloat16_cpu_inference", False) and cpu_has_bfloat16():
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass(frozen=True)
class CpuSample:
    """CPU time at one moment, in seconds: the whole machine's busy time (None where it is not known) and this
    process's own (all its threads)."""

    when: float
    machine_busy: float | None
    own: float


def cpu_sample() -> CpuSample:
    """The machine's busy CPU time (Linux: ``/proc/stat``) and this process's, now."""
    times = os.times()
    return CpuSample(time.monotonic(), _machine_busy_seconds(), times.user + times.system)


def _machine_busy_seconds() -> float | None:
    try:
        with open("/proc/stat", "rb") as stat:
            fields = stat.readline().split()
        ticks = [int(value) for value in fields[1:9]]  # user nice system idle iowait irq softirq steal
        return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def load_of_others(since: CpuSample, now: CpuSample | None = None) -> float | None:
    """The CPUs that other processes kept busy on average from ``since`` to ``now`` (default: now, at least
    ``MIN_LOAD_INTERVAL_S`` after ``since``: a short wait when the run got there sooner); None where the machine's
    CPU time is unknown."""
    if since.machine_busy is None:
        return None
    if now is None:
        time.sleep(max(0.0, MIN_LOAD_INTERVAL_S - (time.monotonic() - since.when)))
        now = cpu_sample()
    elapsed = now.when - since.when
    if now.machine_busy is None or elapsed <= 0:
        return None
    return max(0.0, (now.machine_busy - since.machine_busy - (now.own - since.own)) / elapsed)


def threads_for_load(
    current: int,
    cpus: int | None = None,
    load: float | None = None,
    since: CpuSample | None = None,
    beside: int = 0,
) -> int:
    """Intra-op threads for CPU inference: ``current`` at most, and no more than the CPUs that other work leaves
    free (``cpus`` minus their load and the ``beside`` threads of this process's other CPU networks, rounded; at
    least 1).

    The load of others is measured from ``since`` (a :func:`cpu_sample` taken when the run started) with this
    process's own CPU time taken out; without it (or on a system without ``/proc/stat``) it is the 1-minute load
    average, which also counts this run's own reading and preprocessing and the runs just before it: on the
    2-core development machine it chose 1 thread for every run of the command line, and the network took twice
    its time. Each parallel operation waits for its slowest thread; where other processes keep the CPUs busy, a
    thread that lost its CPU holds up every operation. Measured on that machine at load 5-6 (the 2 threads of
    torch's default against 1): 32AttnLong over 18 windows of 128^3 took 75-114 s against 27-31 s, the bundled
    model over 18 windows of 64^3 6.2-20.7 s against 1.4 s. Without any load figure (Windows), ``current`` (at most the
    CPUs less the ``beside`` threads).

    ``beside``: two runs in two processes count each other's threads in their load; runs in one process (Slicer's
    in-process run and a console ``segment()``) cannot, their own process's CPU time being left out of the load of
    others: without it both took every CPU, each parallel operation waiting for the slower of two threads per CPU.
    """
    if load is None and since is not None and current > 1:
        load = load_of_others(since)
    try:
        load = os.getloadavg()[0] if load is None else load
    except (AttributeError, OSError):
        if not beside:
            return current
        load = 0.0
    cpus = cpus or os.cpu_count() or current
    return max(1, min(current, int(cpus - load - beside + 0.5)))


@contextlib.contextmanager
def inference_threads(device: torch.device, since: CpuSample | None = None):
    """Run the block with :func:`threads_for_load` intra-op threads on the CPU, the threads of this process's other
    CPU networks counted as busy (:func:`.process_settings.network_threads`: this thread's count only, put back
    afterwards, also after an error or a stop); ``since``: the run's first :func:`cpu_sample`."""
    current = torch.get_num_threads()
    if device.type != "cpu":
        yield current
        return
    load = load_of_others(since) if since is not None and current > 1 else None  # a short wait: not under the lock
    with process_settings.network_threads(lambda busy: threads_for_load(current, load=load, beside=busy)) as wanted:
        yield wanted


def is_out_of_memory(error: BaseException) -> bool:
    oom_type = getattr(torch.cuda, "OutOfMemoryError", ())
    if oom_type and isinstance(error, oom_type):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def run_with_oom_fallback(
    run: Callable[[torch.device, int], object],
    device: torch.device,
    batch_size: int,
    warn: Callable[[str], None] = log.warning,
    empty_cache: Callable[[], None] | None = None,
):
    """Call ``run(device, batch_size)``; on CUDA out-of-memory halve the batch, then fall back to the CPU.

    On the CPU an out-of-memory error becomes :class:`OutOfMemoryError` with advice.
    """
    empty_cache = empty_cache or (torch.cuda.empty_cache if torch.cuda.is_available() else (lambda: None))
    size = batch_size
    while True:
        try:
            return run(device, size)
        except Exception as error:  # noqa: BLE001 - filtered just below
            if not is_out_of_memory(error):
                raise
            if device.type == "cpu":
                raise OutOfMemoryError(
                    "out of memory on the CPU", "close other programs, use a GPU, or crop the volume"
                ) from None
            empty_cache()
            if size > 1:
                size = max(1, size // 2)
                warn(f"{device.type} out of memory; retrying with {size} window(s) per batch")
                continue
            warn(f"{device.type} out of memory even with one window per batch; falling back to the CPU")
            device, size = torch.device("cpu"), batch_size


def available_memory(device: torch.device) -> int:
    """Free bytes on ``device``: for cpu and mps host RAM, or ``TOKENUNET_MEMORY_LIMIT`` when that is smaller."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return memory_limit()[0]


def estimate_memory(
    network,
    region_voxels: int,
    input_voxels: int,
    roi_size,
    batch_size: int,
    probabilities: bool = False,
    maps_on_input_grid: bool = False,
) -> dict[str, int]:
    """Rough peak bytes: ``host`` (volumes, stitched outputs over the ``region_voxels`` the network runs on, and the
    token maps being written on the input grid when ``maps_on_input_grid``) and ``window`` (one window batch's
    activations)."""
    in_ch = int(getattr(network, "in_channels", 1))
    out_ch = int(getattr(network, "out_channels", 2))
    tokens = int(getattr(network, "num_tokens", 0)) if getattr(network, "has_tokens", False) else 0
    convs = [m for m in network.modules() if isinstance(m, torch.nn.Conv3d)]
    first = max((int(m.out_channels) for m in convs[:3]), default=24)
    roi_voxels = int(roi_size[0]) * int(roi_size[1]) * int(roi_size[2])
    # activations alive at once per window voxel: a few full-resolution feature maps (calibrated on the
    # 512 x 512 x 300 CT benchmark: estimate 3.0 GB for a measured peak RSS of 2.4 GB)
    window = batch_size * roi_voxels * 4 * (in_ch + out_ch + 6 * first) + sum(
        p.numel() * p.element_size() for p in network.parameters()
    )
    host = host_bytes(input_voxels, region_voxels, in_ch, out_ch, tokens, probabilities, maps_on_input_grid)
    return {"host": int(host), "window": int(window)}


def check_memory(estimate: dict[str, int], device: torch.device, available: Callable[[torch.device], int] = None):
    """Refuse with :class:`OutOfMemoryError` when the estimate cannot fit."""
    available = available or available_memory
    host_free = available(torch.device("cpu"))
    need_host = estimate["host"] + (estimate["window"] if device.type != "cuda" else 0)
    if need_host > host_free:
        raise host_shortfall(need_host, host_free)
    if device.type == "cuda":
        free = available(device)
        if estimate["window"] > free:
            raise OutOfMemoryError(
                f"one window batch needs about {estimate['window'] / 2**30:.1f} GiB of GPU memory but only "
                f"{free / 2**30:.1f} GiB is free",
                "use --device cpu, or a smaller window batch",
            )
