"""What ``evaluate``'s metrics cost: Dice and volumes for many labels on a large grid, and HD95 on two far-apart
small masks and on two large overlapping ones; this checkout's code against a baseline revision's, in one run.

    .venv/bin/python Testing/benchmarks/bench_evaluate.py                       # against f108163 (before evalfix)
    .venv/bin/python Testing/benchmarks/bench_evaluate.py --baseline main --size 0.25 --repeats 1

The baseline's ``TokenUNetSegment`` is unpacked with ``git archive`` into a temporary folder. Each measurement runs
in a child process of its own (``--child``): printed are its seconds (median of the repeats) and the peak resident
memory it added over what it held before the call (the masks themselves excluded), then the ratio baseline / now.
The values are compared too: Dice and volumes must be equal, HD95 equal within float32.

- ``dice``: ``label_metrics(hd95=False)``, 12 box-shaped organs on 200 x 512 x 512 (52 M voxels), the prediction
  shifted by 3 voxels (the case of diffreview23's report).
- ``evaluate``: the whole ``evaluate_files(hd95=False)`` on that case written as two NIfTI files with a name table
  (reading, checks and all).
- ``hd95 far``: two 20^3 cubes at opposite corners of 512 x 512 x 300, spacing 0.8 x 0.8 x 1.0 mm.
- ``hd95 balls``: two overlapping balls of radius 50 and 47 voxels (about 30 000 edge voxels each) on 200^3.
- ``hd95 mid``: cubes of 40^3, 80 voxels apart, on 200^3 (near the switch between all pairs and the distance map).

``--size`` scales every grid's sides (0.25 for a quick check).
"""

from __future__ import annotations

import argparse
import atexit
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def scaled(shape, size: float) -> tuple[int, ...]:
    return tuple(max(8, int(round(side * size))) for side in shape)


def dice_case(size: float):
    import numpy as np

    rng = np.random.default_rng(0)
    shape = scaled((200, 512, 512), size)
    reference = np.zeros(shape, np.int32)
    half = [max(1, int(round(side * size))) for side in (15, 40, 40)]
    for value in range(1, 13):
        centre = [int(rng.integers(h + 1, s - h - 1)) for h, s in zip(half, shape, strict=True)]
        reference[tuple(slice(c - h, c + h) for c, h in zip(centre, half, strict=True))] = value
    predicted = np.roll(reference, 3, axis=2)
    pairs = [(value, value, f"organ{value}") for value in range(1, 13)]
    return predicted, reference, pairs, (0.8, 0.8, 1.5)


def hd95_case(name: str, size: float):
    import numpy as np

    if name == "far":
        shape = scaled((512, 512, 300), size)
        a, b = np.zeros(shape, bool), np.zeros(shape, bool)
        side = max(2, int(round(20 * size)))
        a[10 : 10 + side, 10 : 10 + side, 10 : 10 + side] = True
        b[tuple(slice(s - 12 - side, s - 12) for s in shape)] = True
        return a, b, (0.8, 0.8, 1.0)
    shape = scaled((200, 200, 200), size)
    grid = np.indices(shape, dtype=np.float32)
    if name == "balls":
        centre = np.array(shape, np.float32)[:, None, None, None] / 2
        distance = np.sqrt(((grid - centre) ** 2).sum(0))
        shifted = np.sqrt(((grid - centre - 3 * size) ** 2).sum(0))
        return distance < 50 * size, shifted < 47 * size, (1.0, 1.0, 1.0)
    a, b = np.zeros(shape, bool), np.zeros(shape, bool)
    side, gap = max(2, int(round(40 * size))), int(round(80 * size))
    start = int(round(20 * size))
    a[start : start + side, start : start + side, start : start + side] = True
    b[start + gap : start + gap + side, start : start + side, start : start + side] = True
    return a, b, (1.0, 1.0, 1.0)


def resident_bytes() -> int:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * resource.getpagesize()


def child(lib: str, case: str, size: float, repeats: int) -> dict:
    """One measurement, in this process: the code under ``lib``, the case built first, then timed."""
    sys.path.insert(0, lib)
    import numpy as np
    from TokenUNetSegmentLib.pipeline import evaluate

    try:
        from TokenUNetSegmentLib.pipeline.surface_distance import hausdorff95
    except ImportError:  # a baseline from before HD95 had a module of its own
        hausdorff95 = evaluate.hausdorff95

    if case == "evaluate":
        import SimpleITK as sitk

        predicted, reference, pairs, spacing = dice_case(size)
        folder = Path(tempfile.mkdtemp(prefix="bench-evaluate-files-"))
        atexit.register(shutil.rmtree, folder, True)
        for name, array in (("pred", predicted), ("ref", reference)):
            image = sitk.GetImageFromArray(array.astype(np.uint8))
            image.SetSpacing(spacing[::-1])
            sitk.WriteImage(image, str(folder / f"{name}.nii"))
        names = folder / "names.json"
        names.write_text(json.dumps({str(value): name for value, _, name in pairs}))
        del predicted, reference
        files = str(folder / "pred.nii"), str(folder / "ref.nii")

        def call():
            result = evaluate.evaluate_files(*files, names, names, hd95=False)
            return {name: [m["dice"], m["volume_ml"], m["reference_ml"]] for name, m in result["labels"].items()}
    elif case == "dice":
        predicted, reference, pairs, spacing = dice_case(size)
        evaluate.label_metrics(predicted[:2], reference[:2], pairs, spacing, hd95=False)  # imports, not timed

        def call():
            metrics = evaluate.label_metrics(predicted, reference, pairs, spacing, hd95=False)
            return {name: [m["dice"], m["volume_ml"], m["reference_ml"]] for name, m in metrics.items()}
    else:
        a, b, spacing = hd95_case(case.split()[1], size)
        small = np.zeros((4, 4, 4), bool)
        small[1:3, 1:3, 1:3] = True
        hausdorff95(small, small, (1.0, 1.0, 1.0))  # imports, not timed
        import SimpleITK as sitk  # the distance map's library, loaded whichever way the warm-up went

        sitk.SignedMaurerDistanceMap(sitk.GetImageFromArray(small.astype(np.uint8)))

        def call():
            return hausdorff95(a, b, spacing)

    before = resident_bytes()
    times, value = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        value = call()
        times.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": statistics.median(times), "added_bytes": max(0, peak - before), "value": value}


def measure(lib: Path, case: str, size: float, repeats: int) -> dict:
    command = [sys.executable, __file__, "--child", str(lib), case, str(size), str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{case} with {lib} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def same(case: str, old, new) -> bool:
    if case in ("dice", "evaluate"):
        return old == new
    return abs(old - new) <= 1e-5 * max(abs(old), 1e-9)


def main(argv=None) -> int:
    if argv is None and sys.argv[1:2] == ["--child"]:
        lib, case, size, repeats = sys.argv[2:6]
        print(json.dumps(child(lib, case, float(size), int(repeats))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="f108163", help="git revision to measure against")
    parser.add_argument("--size", type=float, default=1.0, help="scale of every grid's sides")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=["dice", "evaluate", "hd95 far", "hd95 balls", "hd95 mid"])
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)

    figures = {}
    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as folder:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.baseline, "TokenUNetSegment"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        libs = {"baseline": Path(folder) / "TokenUNetSegment", "now": ROOT / "TokenUNetSegment"}
        print(f"baseline {args.baseline} against this checkout; sides x {args.size}, median of {args.repeats}")
        for case in args.cases:
            found = {which: measure(lib, case, args.size, args.repeats) for which, lib in libs.items()}
            old, new = found["baseline"], found["now"]
            ratio = old["seconds"] / new["seconds"]
            agree = same(case, old["value"], new["value"])
            print(
                f"{case:11s} baseline {old['seconds']:7.2f} s {old['added_bytes'] / 2**20:7.0f} MiB | "
                f"now {new['seconds']:7.2f} s {new['added_bytes'] / 2**20:7.0f} MiB | "
                f"time ratio baseline / now {ratio:6.2f} | values {'equal' if agree else 'DIFFER'}"
                + (f" ({old['value']:.4f} mm)" if case.startswith("hd95") else "")
            )
            figures[case] = {"baseline": old, "now": new, "ratio": ratio, "equal": agree}
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0 if all(f["equal"] for f in figures.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
