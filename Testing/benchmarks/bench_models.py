"""Parameters, FLOPs, peak memory and median forward latency of every network against MONAI's SwinUNETR.

Each model runs in its own process (so memory figures don't mix) on a (1, 4, S, S, S) input:
parameters; FLOPs of one forward (counted from its layers by torch.utils.flop_counter on the plain modules:
convolutions and matrix products, 2 per multiply-add); peak memory (CPU: growth of the process's peak RSS from
just before the model is built, libraries already imported; CUDA: torch.cuda.max_memory_allocated); median
latency of at least 5 forward passes under inference mode after warm-up, as wall time and as the process's CPU
time (all threads; less sensitive to other load on the machine). Ratios are to SwinUNETR (in 4, out 3,
feature_size 24) measured in the same run.

The machine's limit: each process also times a square matrix product (best of 5; 2048 on a CPU with the same
threads, 8192 on CUDA) in the type the variant computes in (float32, or float16 / bfloat16 under autocast);
"x limit" is a forward's median time over the time its FLOPs would take at that rate, "(cpu)" the same in CPU
time (less sensitive to other load on the machine).

A Token-UNet name runs its default inference path (on a CPU channels-last, float32); ``NAME:bf16`` runs any model
under autocast to bfloat16 (the pipeline's default on CPUs with native bfloat16), ``NAME:fp16`` under autocast to
float16 (the pipeline's default on CUDA), ``NAME:plain`` a Token-UNet's plain modules.
Processes allocate memory as the command line does (``pipeline/allocator.py``; ``--allocator default`` not).

    python Testing/benchmarks/bench_models.py [--device cpu|cuda] [--size 128] [--json FILE]
                                              [--models NAME[:bf16|:fp16|:plain] ...] [--runs 5] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parents[2] / "TokenUNetSegment"
BASELINE = "SwinUNETR"
IN_CHANNELS, OUT_CHANNELS = 4, 3
FIXED_PATCH_SIZE = 96  # MetaUNETR mixers whose weights depend on the patch size are measured at 96^3
META_FEATURE_SIZE = 24
PERMUTE_MLP_FEATURE_SIZE = 48  # permute_mlp needs stage widths divisible by its grid sides: none exist at f=24
AUTOCAST_TYPES = {"bf16": "bfloat16", "fp16": "float16"}  # variant -> the torch type its autocast computes in


def default_models() -> list[str]:
    sys.path.insert(0, str(MODULE_DIR))
    from TokenUNetSegmentLib.model import network_names

    return [*network_names(), "32AttnLong:bf16", "32AttnLong:plain", BASELINE, "UNet"]


def build(name: str, size: int):
    """The network ``name`` (without its ``:variant``) and the cubic input size it is measured at."""
    if name == BASELINE:
        from monai.networks.nets import SwinUNETR

        return SwinUNETR(in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS, feature_size=24), size
    if name == "UNet":
        from monai.networks.nets import UNet

        return UNet(
            3, IN_CHANNELS, OUT_CHANNELS, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2
        ), size
    from TokenUNetSegmentLib.model import build_network

    if name.startswith("MetaUNETR-"):
        from TokenUNetSegmentLib.model.token_mixers import FIXED_SIZE_MIXERS

        mixer = name.split("-", 1)[1]
        size = FIXED_PATCH_SIZE if mixer in FIXED_SIZE_MIXERS else size
        feature_size = PERMUTE_MLP_FEATURE_SIZE if mixer == "permute_mlp" else META_FEATURE_SIZE
        return build_network(name, IN_CHANNELS, OUT_CHANNELS, feature_size=feature_size, img_size=size), size
    return build_network(name, IN_CHANNELS, OUT_CHANNELS), size


def _reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process (Linux)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not found in /proc/self/status")


def matmul_gflops(device: str, dtype=None, repeats: int = 5) -> tuple[float, float]:
    """The best rate of a square ``dtype`` matrix product on ``device`` (2048 on a CPU, 8192 on CUDA, where a
    smaller one is mostly launch overhead), in GFLOP/s of wall time and of the process's CPU time (the latter
    hardly moves with other load on the machine)."""
    import torch

    n = 8192 if device == "cuda" else 2048
    dtype = dtype or torch.float32
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu_start)
    flop = 2 * n**3 / 1e9
    return flop / best, flop / max(best_cpu, 1e-9)


def count_flops(net, x) -> int:
    """FLOPs of one forward, counted from the layers (convolutions, matrix products) on the plain modules."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    previous = getattr(net, "channels_last_inference", None)
    if previous is not None:
        net.channels_last_inference = False  # the fused path's oneDNN calls are not counted by the counter
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net(x)
    if previous is not None:
        del net.channels_last_inference
    return int(counter.get_total_flops())


def variant_context(net, variant: str, device: str):
    """The context a forward runs in for ``variant`` ("", "bf16" or "plain")."""
    import contextlib

    import torch

    if variant == "plain":
        net.channels_last_inference = False
    elif variant in AUTOCAST_TYPES:
        return torch.autocast(device_type=device, dtype=getattr(torch, AUTOCAST_TYPES[variant]))
    elif variant:
        raise SystemExit(f"unknown variant ':{variant}' (use :bf16, :fp16 or :plain)")
    return contextlib.nullcontext()


def measure(name: str, device: str, size: int, runs: int, warmup: int) -> dict:
    """Measure one model in this process; returns the JSON row."""
    import torch

    sys.path.insert(0, str(MODULE_DIR))
    import monai.networks.nets  # noqa: F401  (imports are not the model's memory)
    import TokenUNetSegmentLib.model  # noqa: F401

    torch.manual_seed(0)
    network_name, _, variant = name.partition(":")
    limit, limit_cpu = matmul_gflops(device, getattr(torch, AUTOCAST_TYPES.get(variant, "float32")))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        _reset_peak_rss()
        baseline_mb = _rss_mb("VmRSS")
    net, size = build(network_name, size)
    net = net.to(device).eval()
    x = torch.randn(1, IN_CHANNELS, size, size, size, device=device)
    timings, cpu_timings = [], []
    with torch.inference_mode(), variant_context(net, variant, device):
        for index in range(warmup + runs):
            if device == "cuda":
                torch.cuda.synchronize()
            start, cpu_start = time.perf_counter(), time.process_time()
            net(x)
            if device == "cuda":
                torch.cuda.synchronize()
            if index >= warmup:
                timings.append((time.perf_counter() - start) * 1000)
                cpu_timings.append((time.process_time() - cpu_start) * 1000)
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = _rss_mb("VmHWM") - baseline_mb
    flops = count_flops(net, x)
    median_s, median_cpu_s = statistics.median(timings) / 1000, statistics.median(cpu_timings) / 1000
    return {
        "name": name,
        "params": sum(p.numel() for p in net.parameters()),
        "gflop": round(flops / 1e9, 2),
        "gflops": round(flops / 1e9 / median_s, 1),
        "matmul_gflops": round(limit, 1),
        "x_limit": round(median_s / (flops / 1e9 / limit), 2),
        "x_limit_cpu": round(median_cpu_s / (flops / 1e9 / limit_cpu), 2),
        "peak_mb": round(peak_mb, 1),
        "median_ms": round(statistics.median(timings), 2),
        "median_cpu_ms": round(statistics.median(cpu_timings), 2),
        "input_size": size,
        "feature_size": getattr(net, "feature_size", None),
        "threads": torch.get_num_threads(),
    }


def run_in_child(name: str, args: argparse.Namespace, size: int | None = None) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        name,
        "--device",
        args.device,
        "--size",
        str(size or args.size),
        "--allocator",
        args.allocator,
        "--runs",
        str(args.runs),
        "--warmup",
        str(args.warmup),
    ]
    if args.threads:
        command += ["--threads", str(args.threads)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"measuring {name} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(rows: list[dict], device: str) -> str:
    """Rows with their ratios to the baseline measured at the same input size."""
    bases = {r["input_size"]: r for r in rows if r["name"] == BASELINE}
    base_size = max(bases) if bases else rows[0]["input_size"]
    lines = [
        f"device: {device}; matmul limit (per process, in the variant's type): "
        + ", ".join(f"{row['matmul_gflops']:.0f}" for row in rows if "matmul_gflops" in row)
        + " GFLOP/s",
        f"{'model':<34}{'input':>7}{'params':>13}{'GFLOP':>8}{'peak MB':>10}{'median ms':>12}{'cpu ms':>10}"
        f"{'GFLOP/s':>9}{'x limit':>9}{'(cpu)':>7}{'params %':>10}{'memory %':>10}{'time %':>9}{'cpu %':>8}",
    ]
    for row in rows:
        ratios = ("", "", "", "")
        base = bases.get(row["input_size"])
        if base:
            ratios = tuple(f"{100 * row[k] / base[k]:.1f}" for k in ("params", "peak_mb", "median_ms", "median_cpu_ms"))
        note = "" if row["input_size"] == base_size else " *"
        note += " (f48)" if row.get("feature_size") == PERMUTE_MLP_FEATURE_SIZE else ""
        lines.append(
            f"{row['name'] + note:<34}{row['input_size']:>6}^3{row['params']:>13,}{row.get('gflop', 0):>8.1f}"
            f"{row['peak_mb']:>10.1f}{row['median_ms']:>12.1f}{row.get('median_cpu_ms', 0):>10.0f}"
            f"{row.get('gflops', 0):>9.1f}{row.get('x_limit', 0):>9.2f}{row.get('x_limit_cpu', 0):>7.2f}"
            f"{ratios[0]:>10}{ratios[1]:>10}{ratios[2]:>9}{ratios[3]:>8}"
        )
    if any(row["input_size"] != base_size for row in rows):
        lines.append(
            f"* measured at {FIXED_PATCH_SIZE}^3 (the mixer's weights are tied to that patch size); "
            f"ratios to {BASELINE} at {FIXED_PATCH_SIZE}^3"
        )
    if any(row.get("feature_size") == PERMUTE_MLP_FEATURE_SIZE for row in rows):
        lines.append("(f48): permute_mlp exists only at feature size 48 (stage widths must divide by grid sides)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--size", type=int, default=128, help="cubic input size (default 128)")
    parser.add_argument("--json", type=Path, help="write the results as JSON to this file")
    parser.add_argument("--models", nargs="+", help="models to measure (default: every network + baselines)")
    parser.add_argument("--runs", type=int, default=5, help="timed forward passes per model (at least 5)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument(
        "--allocator",
        choices=("huge-pages", "default"),
        default="huge-pages",
        help="huge-pages: PyTorch's transparent huge pages, as the command line uses (default); default: 4 KiB pages",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.child:
        if args.allocator == "huge-pages":
            sys.path.insert(0, str(MODULE_DIR))
            from TokenUNetSegmentLib.pipeline.allocator import use_huge_pages

            use_huge_pages()
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.child, args.device, args.size, args.runs, args.warmup)))
        return 0
    if args.runs < 5:
        parser.error("--runs must be at least 5 for a meaningful median")
    if args.size % 32:
        parser.error("--size must be a multiple of 32 (MetaUNETR and SwinUNETR need it)")
    names = args.models or default_models()
    if BASELINE not in names:
        names.append(BASELINE)
    rows = []
    for name in names:
        rows.append(run_in_child(name, args))
        print(f"measured {name}: {rows[-1]['median_ms']:.1f} ms, {rows[-1]['peak_mb']:.0f} MB", file=sys.stderr)
    for size in sorted({row["input_size"] for row in rows} - {args.size}):  # a baseline for every size used
        rows.append(run_in_child(BASELINE, args, size))
        print(f"measured {BASELINE} at {size}^3: {rows[-1]['median_ms']:.1f} ms", file=sys.stderr)
    print(table(rows, args.device))
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "size": args.size, "models": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
