"""Benchmark of the whole inference pipeline on a synthetic CT-like volume, ours against SwinUNETR.

Default: a 512 x 512 x 300 volume at 0.8 x 0.8 x 1.5 mm (int16, NIfTI), model spacing 1.5 mm, 13 outputs
(12 organs + background), a Token-UNet (default 32AttnLong) and, in the same run, the same pipeline with
MONAI's SwinUNETR (feature size 24) in place of our network. Each pipeline runs in its own process, so its
peak RSS is its own. Weights are random: the figures are about time and memory, not accuracy.

    python Testing/benchmarks/bench_pipeline.py                   # full size
    python Testing/benchmarks/bench_pipeline.py --scale 0.5       # 256 x 256 x 150, same spacing (smaller field)
    python Testing/benchmarks/bench_pipeline.py --no-swin --json out.json
    python Testing/benchmarks/bench_pipeline.py --cli             # the user's path: see user_path.py

Reported per pipeline: wall time per stage (load = reading the file, preprocess, inference = the
network's sliding windows, postprocess, map back, write = the output files of the CLI), the share of
everything except the network, and the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "TokenUNetSegment"))


def synthetic_ct(shape, spacing):
    """An int16 CT-like volume: air, an elliptic body of fat/soft tissue, organ-like blobs, bone, noise."""
    import numpy as np

    x = (np.arange(shape[0]) - shape[0] / 2) * spacing[0]
    y = (np.arange(shape[1]) - shape[1] / 2) * spacing[1]
    z = (np.arange(shape[2]) - shape[2] / 2) * spacing[2]
    rng = np.random.default_rng(0)
    volume = np.full(shape, -1000, np.int16)
    body2d = (x[:, None] / 170) ** 2 + (y[None, :] / 120) ** 2 <= 1  # in mm: a small field of view
    inner2d = (x[:, None] / 155) ** 2 + (y[None, :] / 105) ** 2 <= 1  # crops the body
    spine2d = (x[:, None] / 18) ** 2 + ((y[None, :] + 70) / 18) ** 2 <= 1
    for k in range(shape[2]):
        s = volume[:, :, k]
        s[body2d] = -90  # fat
        s[inner2d] = 40  # soft tissue
        s[spine2d] = 700  # bone
    for centre, radii, value in [
        ((-60, 10, 40), (70, 55, 60), 60),
        ((80, -10, 60), (45, 40, 50), 50),
        ((-70, -40, -50), (28, 30, 45), 35),
        ((70, -40, -50), (28, 30, 45), 35),
        ((0, 30, 0), (25, 25, 60), 120),
    ]:
        sx = ((x - centre[0]) / radii[0]) ** 2
        sy = ((y - centre[1]) / radii[1]) ** 2
        for k in np.flatnonzero(np.abs(z - centre[2]) <= radii[2]):
            inside = sx[:, None] + sy[None, :] + ((z[k] - centre[2]) / radii[2]) ** 2 <= 1
            volume[:, :, k][inside] = value
    noise = rng.normal(0, 12, size=shape[:2]).astype(np.int16)
    for k in range(shape[2]):
        volume[:, :, k] += np.roll(noise, k, axis=0)
    return volume


def make_input(folder: Path, shape, spacing) -> Path:
    import numpy as np
    import SimpleITK as sitk
    from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing, image_from_array

    affine = affine_from_spacing(spacing, origin=(200.0, 180.0, -200.0), direction=np.diag([-1.0, -1.0, 1.0]))
    path = folder / "ct.nii.gz"
    sitk.WriteImage(image_from_array(synthetic_ct(shape, spacing), affine), str(path), True)
    return path


def config(network: str, model_spacing: float, roi: int) -> dict:
    organs = [
        "spleen",
        "kidney_right",
        "kidney_left",
        "gallbladder",
        "liver",
        "stomach",
        "aorta",
        "inferior_vena_cava",
        "portal_vein_and_splenic_vein",
        "pancreas",
        "adrenal_gland_right",
        "adrenal_gland_left",
    ]
    return {
        "id": f"bench-{network}",
        "architecture": {"name": network, "in_channels": 1, "out_channels": 13},
        "inputs": [{"name": "CT", "modality": "CT"}],
        "preprocessing": {
            "orientation": "RAS",
            "spacing": [model_spacing] * 3,
            "intensity": {"method": "ct_window", "window": [-200.0, 300.0]},
            "crop_foreground": True,
        },
        "inference": {"roi_size": [roi] * 3, "overlap": 0.25, "blending": "gaussian", "activation": "softmax"},
        "labels": [
            {"value": i + 1, "name": n, "color": [(37 * i) % 256, (91 * i) % 256, (53 * i) % 256]}
            for i, n in enumerate(organs)
        ],
    }


def run_one(args) -> dict:
    import torch
    from TokenUNetSegmentLib.model import build_network
    from TokenUNetSegmentLib.pipeline.outputs import write_outputs
    from TokenUNetSegmentLib.pipeline.package_writer import package_in_memory
    from TokenUNetSegmentLib.pipeline.segmentation import segment
    from TokenUNetSegmentLib.pipeline.volumes import read_volume

    torch.manual_seed(0)
    if args.run == "swin":
        from monai.networks.nets import SwinUNETR

        network = SwinUNETR(in_channels=1, out_channels=13, feature_size=24)
        network.size_multiple, network.has_tokens = 32, False
        name = "SwinUNETR-24"
    else:
        network = build_network(args.network, 1, 13)
        name = args.network
    cfg = config(args.network if args.run != "swin" else "SwinUNETR", args.model_spacing, args.roi)
    package = package_in_memory(network, cfg, "benchmark")
    parameters = sum(p.numel() for p in network.parameters())
    started = time.perf_counter()
    volume = read_volume(args.input)  # as the CLI does: read once, for segment() and the overview
    read = time.perf_counter() - started
    result = segment([volume], package, device=args.device)
    clock = time.perf_counter()
    write_outputs(result, Path(args.out), image=volume.array, window=(-200, 300), attention_grid=args.attention_grid)
    timings = dict(result.timings)
    timings["load"] += read
    timings["write"] = time.perf_counter() - clock
    timings["total"] = time.perf_counter() - started
    if result.token_maps is not None:  # the cost of one token map on the input grid, on request
        clock = time.perf_counter()
        result.token_maps.get("gather", 0)
        timings["one heatmap on the input grid"] = time.perf_counter() - clock
    network_share = timings["inference"] / timings["total"]
    return {
        "pipeline": name,
        "parameters": parameters,
        "device": result.device,
        "input_shape": list(result.labels.shape),
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "non_network_share": round(1 - network_share, 3),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if "cuda" in result.device else None,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 512, 300])
    parser.add_argument("--spacing", type=float, nargs=3, default=[0.8, 0.8, 1.5])
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="shrink the volume by this factor per axis (same spacing: a smaller field of view)",
    )
    parser.add_argument("--model-spacing", type=float, default=1.5)
    parser.add_argument("--roi", type=int, default=128)
    parser.add_argument("--network", default="32AttnLong")
    parser.add_argument("--no-swin", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--attention-grid", choices=("auto", "input", "token"), default="token")  # the CLI's default
    parser.add_argument(
        "--cli",
        action="store_true",
        help="the user's path: the command line on DICOM series it writes, with the bundled model and --network "
        "at --model-spacing (user_path.py)",
    )
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--baseline-dir",
        help="with --cli: also run every command with another checkout's TokenUNetSegment folder (interleaved)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="with --cli: run every case this many times, alternating which version runs first, and print medians",
    )
    parser.add_argument("--image", help="an existing CT file instead of the synthetic volume (e.g. the bundled sample)")
    parser.add_argument("--run", choices=("ours", "swin"), help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cli:
        import user_path

        summary = user_path.main(args, synthetic_ct, config)
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=2))
        return
    if args.run:
        print(json.dumps(run_one(args)))
        return
    if not args.no_swin and (args.roi % 32 or args.roi < 64):
        parser.error("SwinUNETR needs --roi a multiple of 32 and at least 64 (or pass --no-swin)")
    shape = [max(8, round(s * args.scale)) for s in args.shape]
    spacing = list(args.spacing)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        clock = time.perf_counter()
        if args.image:
            path = Path(args.image).resolve()
            print(f"input {path}", flush=True)
        else:
            path = make_input(folder, shape, spacing)
            print(
                f"input {shape} at {[round(s, 3) for s in spacing]} mm written in {time.perf_counter() - clock:.1f} s "
                f"({path.stat().st_size / 2**20:.0f} MiB .nii.gz)",
                flush=True,
            )
        for run in ["ours"] + ([] if args.no_swin else ["swin"]):
            command = [
                sys.executable,
                __file__,
                "--run",
                run,
                "--input",
                str(path),
                "--out",
                str(folder / run),
                "--model-spacing",
                str(args.model_spacing),
                "--roi",
                str(args.roi),
                "--network",
                args.network,
                "--device",
                args.device,
                "--attention-grid",
                args.attention_grid,
            ]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                print(done.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{run} failed")
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    summary = {
        "input_shape": shape,
        "spacing_mm": spacing,
        "model_spacing_mm": args.model_spacing,
        "roi": args.roi,
        "results": results,
    }
    if len(results) == 2:
        summary["ours_vs_swin_time"] = round(results[0]["timings_s"]["total"] / results[1]["timings_s"]["total"], 3)
        summary["ours_vs_swin_peak_rss"] = round(results[0]["peak_rss_gib"] / results[1]["peak_rss_gib"], 3)
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
