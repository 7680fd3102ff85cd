"""Benchmark of the ``batch`` command against a loop of ``segment`` commands, in one run, on the same cases.

It writes N synthetic CT cases (default 5 DICOM series of 512 x 512 x 40 at 0.8 x 0.8 x 1.5 mm, each a different
stretch of bench_pipeline's synthetic CT; ``--nifti`` writes .nii.gz files instead) and segments them with the
bundled (default) model on the CPU, as a user would from a terminal, each in a fresh process:

- loop: ``python -m TokenUNetSegmentLib.pipeline segment CASE --out loop/CASE`` once per case (Python start-up,
  torch's import and the model's load every time);
- batch: ``python -m TokenUNetSegmentLib.pipeline batch CASES_FOLDER --out batch/`` once.

Both use the commands' defaults (token maps, overview, report) with ``--device cpu --progress none``. Printed: each
way's wall time (start to exit, interpreter start-up included), its time per case, the ratio loop / batch, and from
batch.json each case's own time in the batch (the first includes torch's import and the model's load). The labels
of every case are checked equal between the two ways. ``--repeats N`` alternates which way runs first and prints
medians (this machine's runs vary, and a run just after another is slower or faster for it).

    .venv/bin/python Testing/benchmarks/bench_batch.py                      # 5 DICOM cases 512x512x40
    .venv/bin/python Testing/benchmarks/bench_batch.py --cases 3 --shape 256 256 40 --nifti --repeats 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_pipeline import synthetic_ct  # noqa: E402
from user_path import CLI, MODULE_DIR, SPACING, environment, write_dicom_series  # noqa: E402

sys.path.insert(0, str(MODULE_DIR))


def write_cases(folder: Path, count: int, shape, nifti: bool) -> list[Path]:
    """``count`` cases: consecutive ``shape[2]``-slice stretches of one synthetic CT, as DICOM series or NIfTI."""
    import numpy as np
    import SimpleITK as sitk
    from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing, image_from_array

    full = synthetic_ct((shape[0], shape[1], shape[2] * count), SPACING)
    affine = affine_from_spacing(SPACING, origin=(200.0, 180.0, -200.0), direction=np.diag([-1.0, -1.0, 1.0]))
    folder.mkdir(parents=True)
    cases = []
    for index in range(count):
        volume = full[:, :, index * shape[2] : (index + 1) * shape[2]]
        if nifti:
            path = folder / f"case{index}.nii.gz"
            sitk.WriteImage(image_from_array(volume, affine), str(path), True)
        else:
            path = write_dicom_series(folder / f"case{index}", volume, affine, f"1.2.826.0.1.3680043.2.1125.8.{index}")
        cases.append(path)
    return cases


def timed(arguments: list[str]) -> float:
    """Wall seconds of one command line in a fresh process; fails with its error output."""
    started = time.perf_counter()
    done = subprocess.run([*CLI, *arguments], cwd=MODULE_DIR, env=environment(), capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(arguments[:2])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def run_loop(cases: list[Path], out: Path, options: list[str]) -> float:
    return sum(timed(["segment", str(case), "--out", str(out / case.name.split(".")[0]), *options]) for case in cases)


def run_batch(folder: Path, out: Path, options: list[str]) -> tuple[float, list[float]]:
    seconds = timed(["batch", str(folder), "--out", str(out), *options])
    document = json.loads((out / "batch.json").read_text())
    assert all(case["status"] == "done" for case in document["cases"]), document
    return seconds, [case["seconds"] for case in document["cases"]]


def same_labels(first: Path, second: Path, names: list[str]) -> bool:
    import numpy as np
    import SimpleITK as sitk

    def labels(folder: Path):
        return sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "segmentation.seg.nrrd")))

    return all(np.array_equal(labels(first / name), labels(second / name)) for name in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 512, 40])
    parser.add_argument("--nifti", action="store_true", help="NIfTI files instead of DICOM series")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--keep", help="write the cases and outputs here (kept) instead of a temporary folder")
    args = parser.parse_args()
    scratch = Path(args.keep or tempfile.mkdtemp(prefix="bench-batch-"))
    options = ["--device", args.device, "--progress", "none"]
    try:
        cases = write_cases(scratch / "cases", args.cases, args.shape, args.nifti)
        names = [case.name.split(".")[0] for case in cases]
        loops, batches, inside = [], [], []
        for repeat in range(args.repeats):
            order = ("loop", "batch") if repeat % 2 == 0 else ("batch", "loop")
            for way in order:
                out = scratch / f"{way}{repeat}"
                if way == "loop":
                    loops.append(run_loop(cases, out, options))
                else:
                    seconds, per_case = run_batch(scratch / "cases", out, options)
                    batches.append(seconds)
                    inside.append(per_case)
            assert same_labels(scratch / f"loop{repeat}", scratch / f"batch{repeat}", names), "labels differ"
        loop, batch = statistics.median(loops), statistics.median(batches)
        per_case = [statistics.median(times) for times in zip(*inside, strict=True)]
        kind = "NIfTI" if args.nifti else "DICOM"
        shape = "x".join(map(str, args.shape))
        print(f"{args.cases} {kind} cases {shape}, bundled model, {args.device}, median of {args.repeats}")
        print(f"{'way':<7} {'wall s':>8} {'per case s':>11}")
        print(f"{'loop':<7} {loop:>8.1f} {loop / args.cases:>11.2f}")
        print(f"{'batch':<7} {batch:>8.1f} {batch / args.cases:>11.2f}")
        pairs = [first / second for first, second in zip(loops, batches, strict=True)]
        print(f"ratio loop / batch: {loop / batch:.2f} of the medians  (labels identical: yes)")
        print(
            "each repeat (loop s / batch s = ratio): "
            + ", ".join(
                f"{first:.1f} / {second:.1f} = {ratio:.2f}"
                for first, second, ratio in zip(loops, batches, pairs, strict=True)
            )
        )
        print("batch, each case's own seconds: " + ", ".join(f"{s:.2f}" for s in per_case))
        if args.json:
            figures = {
                "cases": args.cases,
                "kind": kind,
                "shape": args.shape,
                "loop_s": loops,
                "batch_s": batches,
                "ratio": round(loop / batch, 3),
                "ratio_per_repeat": [round(ratio, 3) for ratio in pairs],
                "batch_case_s": per_case,
            }
            Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
