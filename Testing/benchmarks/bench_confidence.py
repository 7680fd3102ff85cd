"""What judging a result costs: the confidence and flags of a run against the rest of the run, on the bundled
sample with the bundled model (or any CT and package).

    python Testing/benchmarks/bench_confidence.py [--image CT] [--model PACKAGE] [--repeats 5]

The sample is segmented once (the network's stitched logits and the preprocessed case are kept); then each step
is timed on them (median of the repeats): what postprocessing needs anyway (labels from the logits, connected
pieces with the largest kept) and what judging adds (the field of view and its edge, the intensity summary, the
top-two probabilities of the labelled voxels, the per-label measures, the flags and scores). Printed: seconds per
step, the added work against the postprocessing and against the whole run of the same process. The row "one pass"
is what postprocess runs for a softmax model in place of "labels from logits" and "top-two probabilities"
(:func:`~TokenUNetSegmentLib.pipeline.voxel_scores.softmax_labels`); it is in neither sum.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "TokenUNetSegment"))


def timed(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default=str(ROOT / "TokenUNetSegment/Resources/Samples/AbdomenCT.nii.gz"))
    parser.add_argument("--model", default=None, help="package path or id (default: the catalog's)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from TokenUNetSegmentLib.pipeline import confidence, postprocess, scan_summary, segmentation, voxel_scores
    from TokenUNetSegmentLib.pipeline.package_loader import resolve_model
    from TokenUNetSegmentLib.pipeline.surface_distance import surface_voxels
    from TokenUNetSegmentLib.pipeline.volumes import read_volume

    package = resolve_model(args.model, None, None, None)
    volume = read_volume(args.image)
    kept = {}
    original = segmentation.postprocess

    def keep(logits, maps, prepared, *rest, **options):
        kept.update(logits=logits.copy(), prepared=prepared)
        return original(logits, maps, prepared, *rest, **options)

    segmentation.postprocess = keep
    try:
        result = segmentation.segment([volume], package, device="cpu", with_token_maps=False)
    finally:
        segmentation.postprocess = original
    logits, prepared, config = kept["logits"], kept["prepared"], package.config
    values = [label.value for label in config.labels]
    keep_largest = [label.value for label in config.labels if label.name in config.largest_component_labels()]
    labels = postprocess.labels_from_logits(logits, config.inference, config.labels)
    pieces = postprocess.component_pieces(labels.copy(), values, keep_largest)
    in_grid, in_region = prepared.paste_slices()
    found = labels[in_region]
    inside = scan_summary.field_of_view(volume.grid, prepared.grid)
    certainty, margin = postprocess.label_certainty(logits[(slice(None), *in_region)], found, config.inference)
    edge = surface_voxels(inside)[in_grid][found > 0]
    voxel_ml = prepared.grid.voxel_volume_mm3 / 1000
    measures = confidence.measure_labels(found[found > 0], certainty, margin, edge, pieces, values, voxel_ml)
    by_name = {label.name: measures[label.value] for label in config.labels}
    window = config.display_window or (0.0, 1.0)  # the network input mapped back to HU (clipped to the window)
    hounsfield = prepared.image[0][in_region] * np.float32(window[1] - window[0]) + np.float32(window[0])
    inside_region = inside[in_grid]
    steps = {
        "labels from logits": (True, lambda: postprocess.labels_from_logits(logits, config.inference, config.labels)),
        "pieces, largest kept": (True, lambda: postprocess.component_pieces(labels.copy(), values, keep_largest)),
        "field of view": (False, lambda: scan_summary.field_of_view(volume.grid, prepared.grid)),
        "its edge": (False, lambda: surface_voxels(inside)),
        "intensity summary": (False, lambda: scan_summary.summarise_intensities(hounsfield, inside_region)),
        "top-two probabilities": (
            False,
            lambda: postprocess.label_certainty(logits[(slice(None), *in_region)], found, config.inference),
        ),
        "labels and top two at once": (  # what postprocess runs for softmax models in place of those two rows
            None,
            lambda: voxel_scores.softmax_labels(logits, config.labels, workers=torch.get_num_threads()),
        ),
        "measures": (
            False,
            lambda: confidence.measure_labels(found[found > 0], certainty, margin, edge, pieces, values, voxel_ml),
        ),
        "flags and scores": (
            False,
            lambda: confidence.assess(
                by_name, config.statistics, prepared.intensity, True, volume.grid, int(inside.sum())
            ),
        ),
    }
    seconds = {name: timed(function, args.repeats) for name, (_, function) in steps.items()}
    needed = sum(seconds[name] for name, (base, _) in steps.items() if base)
    added = sum(seconds[name] for name, (base, _) in steps.items() if base is False)
    print(f"{package.id} on {Path(args.image).name}: model grid {prepared.grid.shape}, logits {logits.shape}")
    for name, (base, _) in steps.items():
        kind = {True: "postprocess", False: "judging", None: "one pass"}[base]
        print(f"  {kind:11s}  {name:28s} {seconds[name]:8.4f} s")
    print(f"judging adds {added:.3f} s: {added / needed:.2f} x the postprocessing it follows ({needed:.3f} s), ")
    print(f"{100 * added / result.timings['total']:.1f} % of this run ({result.timings['total']:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
