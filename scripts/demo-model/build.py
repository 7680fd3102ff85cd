"""Package a trained demo model into the module: measure it on the bundled sample (and optionally on other
patients' scans), write the model card, install it under Resources/Models/<id>/ and make it the catalog's
default.

    .venv/bin/python scripts/demo-model/build.py RUN/package [--second-patient CT REF NAMES.json]
        [--held-out CT REF NAMES.json] [--no-install]

``--second-patient`` measures a patient the model was trained on (partially labelled), ``--held-out`` one it
never saw; ``--no-install`` only prints the figures (for recipe checks such as a model trained on the
sample alone).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "TokenUNetSegment"
sys.path.insert(0, str(MODULE))

from TokenUNetSegmentLib.pipeline.evaluate import evaluate_files  # noqa: E402
from TokenUNetSegmentLib.pipeline.package_loader import load_package  # noqa: E402
from TokenUNetSegmentLib.pipeline.package_writer import write_package  # noqa: E402
from TokenUNetSegmentLib.pipeline.segmentation import segment  # noqa: E402
from TokenUNetSegmentLib.pipeline.volumes import Volume  # noqa: E402

SAMPLE = MODULE / "Resources" / "Samples" / "AbdomenCT.nii.gz"
SAMPLE_LABELS = MODULE / "Resources" / "Samples" / "AbdomenCT.TotalSegmentatorLabels.nii.gz"
CATALOG = MODULE / "Resources" / "Models.json"

LICENSE = """The weights of this package are licensed under CC BY 4.0
(https://creativecommons.org/licenses/by/4.0/).

They were trained on two CT images of the TotalSegmentator dataset (CC BY 4.0; Wasserthal J., Breit H.-C.,
Meyer M.T., et al., "TotalSegmentator: Robust Segmentation of 104 Anatomic Structures in CT Images",
Radiology: Artificial Intelligence 5(5), 2023, doi:10.1148/ryai.230024), taken with reference labels (model outputs)
from the TotalSegmentator 2.18.0 source distribution (Apache License 2.0,
https://github.com/wasserth/TotalSegmentator).

Not for clinical use.
"""


def measure(package, image, reference, names=None) -> dict:
    started = time.perf_counter()
    result = segment([image], package, with_token_maps=False)
    seconds = time.perf_counter() - started
    table = {label.value: label.name for label in result.label_table}
    prediction = Volume(result.labels, result.affine, "prediction")
    metrics = evaluate_files((prediction, table), reference, None, names)
    return {
        "image": Path(image).name,
        "reference": Path(reference).name,
        "segment_seconds": round(seconds, 1),
        "dice": {name: round(m["dice"], 4) for name, m in metrics["labels"].items() if m["dice"] is not None},
        "hd95_mm": {name: round(m["hd95_mm"], 1) for name, m in metrics["labels"].items() if m["hd95_mm"]},
        "mean_dice": round(metrics["mean_dice"], 4),
        "organ_ml_inside_non_organs": organ_volume_inside_non_organs(prediction, table, reference, names),
    }


RESOLUTIONS = [(1.5, 1.5, 1.5), (0.8, 0.8, 5.0)]


def at_other_resolutions(package) -> list[dict]:
    """The sample re-sampled to other voxel sizes (thin slices; thick 5 mm slices, blurred along z as a
    thick-slice reconstruction is) and measured against the reference on its own grid: robustness to
    resolution on the training patient, not generalisation to other patients."""
    import tempfile

    import SimpleITK as sitk

    image = sitk.Cast(sitk.ReadImage(str(SAMPLE)), sitk.sitkFloat32)
    out = []
    with tempfile.TemporaryDirectory() as folder:
        for spacing in RESOLUTIONS:
            old = image.GetSpacing()
            sigma = [max(0.0, (t - s) / 2.355) for t, s in zip(spacing, old, strict=True)]
            smooth = sitk.DiscreteGaussian(image, [v * v for v in sigma], 32) if any(sigma) else image
            size = [round(n * s / t) for n, s, t in zip(image.GetSize(), old, spacing, strict=True)]
            centre_of_first = [(t / s - 1) / 2 for t, s in zip(spacing, old, strict=True)]
            origin = image.TransformContinuousIndexToPhysicalPoint(centre_of_first)
            resampled = sitk.Resample(
                smooth, size, sitk.Transform(), sitk.sitkLinear, origin, spacing, image.GetDirection(), -1024.0
            )
            path = Path(folder) / f"sample_{'x'.join(f'{v:g}' for v in spacing)}.nii.gz"
            sitk.WriteImage(sitk.Cast(sitk.Round(resampled), sitk.sitkInt16), str(path))
            result = measure(package, path, SAMPLE_LABELS)
            out.append({"spacing_mm": list(spacing), "dice": result["dice"], "mean_dice": result["mean_dice"]})
    return out


def organ_volume_inside_non_organs(prediction, table, reference, names) -> dict:
    """mL of predicted organ voxels inside each reference structure that is none of the model's labels
    (e.g. the heart): false positives that Dice on the model's own labels cannot show."""
    import numpy as np
    from TokenUNetSegmentLib.pipeline.evaluate import match_labels, name_table
    from TokenUNetSegmentLib.pipeline.geometry import resample
    from TokenUNetSegmentLib.pipeline.volumes import read_volume

    ref = read_volume(reference)
    ref_names = name_table(reference, names) or {}
    _, unmatched = match_labels(table, ref_names)
    others = {v: n for v, n in ref_names.items() if n in unmatched["reference_only"]}
    if not others:
        return {}
    predicted = resample(prediction.array.astype(np.uint16), prediction.grid, ref.grid, "nearest", 0, np.uint16)
    voxel_ml = float(np.prod(ref.grid.spacing)) / 1000
    values = np.asarray(ref.array)
    return {n: round(float(((values == v) & (predicted > 0)).sum()) * voxel_ml, 1) for v, n in others.items()}


def model_card(metadata: dict, size_bytes: int, note: str = "") -> str:
    cfg = metadata["tokenunet"]
    record = cfg["training"]
    recipe = record["recipe"]
    sample = record["evaluation"]["sample"]
    held_out = record["evaluation"].get("held_out", [])
    second = record["evaluation"].get("second_patient", [])
    rows = "\n".join(
        f"| {name} | {dice:.3f} | {sample['hd95_mm'][name] if name in sample['hd95_mm'] else '-'} |"
        for name, dice in sample["dice"].items()
    )

    def listed(items, what):
        return "".join(
            f"- `{h['image']}` ({what}, vs `{h['reference']}`): Dice "
            + ", ".join(f"{n} {d:.3f}" for n, d in h["dice"].items())
            + "".join(
                f"; organ voxels predicted inside the {n}: {ml} mL"
                for n, ml in h.get("organ_ml_inside_non_organs", {}).items()
                if ml
            )
            + "\n"
            for h in items
        )

    held = listed(second, "the whole scan of the second patient, whose upper chest was trained on") + (
        listed(held_out, "held out") or "- no held-out patient with labels for these organs is available offline\n"
    )
    resampled = "; ".join(
        f"{' x '.join(f'{v:g}' for v in r['spacing_mm'])} mm mean Dice {r['mean_dice']:.3f}"
        for r in record["evaluation"].get("sample_resampled", [])
    )
    arch = cfg["architecture"]
    return f"""# {cfg["name"]} (`{cfg["id"]}`)

A small Token-UNet ({arch["name"]}, channels {arch["parameters"]["channels"]}, {record["parameters"]:,} parameters,
{size_bytes / 1e6:.1f} MB of safetensors) that segments 12 abdominal organs with BTCV names on CT at 3 mm:
{", ".join(label["name"] for label in cfg["labels"])}.

**Intended use: demonstration and research only. Not a medical device; not for clinical use.** It exists so
the extension segments real anatomy out of the box and so its token heatmaps can be explored.

## Data and provenance
- Trained on **two** patients' CT scans, both from the TotalSegmentator dataset (CC BY 4.0, Wasserthal
  et al. 2023) as shipped in the TotalSegmentator 2.18.0 source distribution (Apache-2.0):
  1. the bundled sample `AbdomenCT.nii.gz` (122 x 101 x 112 voxels, 3 mm, lower chest to hips) with all
     twelve organs labelled;
  2. the upper chest and neck of another patient (from about 2 cm above the diaphragm; cut from
     `aorta_report/example_ct.nii.gz`, 1.5 mm, a CT angiogram with an aortic dissection) where the aorta is
     the only one of the twelve organs: the aorta labelled, every other voxel background
     (`scripts/demo-model/fetch_second_patient.py`). It teaches the thoracic aorta and that the heart, lungs
     and neck hold none of the organs. Training on the whole scan as a *partial* case (unlabelled liver
     dome, spleen and stomach) was tried and dropped: it pulled those organs towards background on the
     sample (mean Dice 0.55).
- The reference labels are **model-generated** (TotalSegmentator model outputs), not drawn by hand, and
  carry that model's errors.
- Two patients cannot represent anatomy, pathology, contrast phases or scanners: expect errors on other
  scans, most on the small structures (adrenal glands, pancreas, portal/splenic vein). Strong augmentation
  stands in for other patients: scaling 0.75-1.25, rotation up to 12 degrees, elastic deformation,
  intensity scale/shift/gamma, noise, blur, z-only blur and simulated low resolution (thick slices); no
  left-right flips (lateralised labels).

## Recipe
`tokenunet train` (MONAI): patches {recipe["patch_size"]} at 3 mm, batch {recipe["batch_size"]}, class-balanced
patch sampling (the sample twice as often as the chest), Dice + cross-entropy loss,
{recipe["optimizer"]} lr {recipe["learning_rate"]} with {recipe["schedule"]} schedule
({recipe["warmup_steps"]} warm-up steps), augmentation strength {recipe["augmentation"]}, seed {recipe["seed"]};
{record["steps_done"]} steps in **{record["seconds"] / 60:.1f} min** on a shared 2-core CPU
({record["threads"]} threads). Best checkpoint at step {record["metrics"]["best"]["step"]}. The complete
record (data hashes, recipe, validation history) is in `configs/metadata.json` under `tokenunet.training`.

## Measured
On the training scan itself (so this measures fit, not generalisation), full pipeline `segment()` then
`evaluate` against the reference labels (`segment()` took {sample["segment_seconds"]} s on the development CPU):

| organ | Dice | HD95 (mm) |
|---|---|---|
{rows}

Mean Dice {sample["mean_dice"]:.3f}. The same scan re-sampled to other voxel sizes (robustness to
resolution, still the training patient): {resampled}.

Other patients:
{held}
{note}

## Train your own
1. Write a datalist JSON (`{{"labels": {{"1": "spleen", ...}}, "training": [{{"image": "ct.nii.gz",
   "label": "seg.nii.gz"}}], "validation": [...]}}`) and a configuration like
   `scripts/demo-model/config.json` (architecture, preprocessing, labels with colors and SNOMED CT codes).
2. `python -m TokenUNetSegmentLib.pipeline train DATALIST --config CONFIG --out RUN --steps N`
   (`--resume` continues, `torchrun --nproc_per_node G -m TokenUNetSegmentLib.pipeline train ...` trains on
   G GPUs). The package is written to `RUN/package`.
3. `python -m TokenUNetSegmentLib.pipeline evaluate REF --model RUN/package --image CT` measures it, and
   `models import RUN/package` installs it.

This model was made with `bash scripts/demo-model/train.sh`.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", help="the trained package (RUN/package)")
    parser.add_argument("--held-out", nargs=3, action="append", default=[], metavar=("CT", "REFERENCE", "NAMES"))
    parser.add_argument("--second-patient", nargs=3, action="append", default=[], metavar=("CT", "REFERENCE", "NAMES"))
    parser.add_argument("--no-install", action="store_true", help="print the figures, install nothing")
    parser.add_argument(
        "--note", type=Path, help="Markdown file whose text goes in the model card after the other-patient figures"
    )
    args = parser.parse_args()
    package = load_package(args.package)
    metadata = package.metadata.to_dict()  # a JSON-ready copy, completed below
    cfg = metadata["tokenunet"]
    evaluation = {"sample": measure(package, SAMPLE, SAMPLE_LABELS)}
    evaluation["held_out"] = [measure(package, ct, ref, names) for ct, ref, names in args.held_out]
    evaluation["second_patient"] = [measure(package, ct, ref, names) for ct, ref, names in args.second_patient]
    evaluation["sample_resampled"] = at_other_resolutions(package)
    if args.no_install:
        print(json.dumps(evaluation, indent=2))
        return 0
    cfg["training"]["evaluation"] = evaluation
    cfg["training"]["parameters"] = sum(p.numel() for p in package.network.parameters())
    metadata["description"] = (
        "Demonstration Token-UNet for 12 abdominal organs on CT at 3 mm, trained on two patients' scans with "
        "model-generated labels; research and demonstration only, not for clinical use."
    )
    target = MODULE / "Resources" / "Models" / cfg["id"]
    size = (Path(args.package) / cfg["weights"]["file"]).stat().st_size
    write_package(
        target,
        package.network,
        metadata,
        license_text=LICENSE,
        readme_text=model_card(metadata, size, args.note.read_text(encoding="utf-8") if args.note else ""),
        overwrite=True,
    )
    catalog = json.loads(CATALOG.read_text(encoding="utf-8"))
    seconds = max(5, round(evaluation["sample"]["segment_seconds"]))
    entry = {
        "id": cfg["id"],
        "name": cfg["name"],
        "description": metadata["description"],
        "license": "CC-BY-4.0",
        "expected_time": f"about {seconds} s for the sample on a 2-core CPU",
        "path": f"Models/{cfg['id']}",
    }
    catalog["models"] = [m for m in catalog["models"] if m["id"] != cfg["id"]] + [entry]
    catalog["default"] = cfg["id"]
    CATALOG.write_text(json.dumps(catalog, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(evaluation, indent=2))
    print(f"installed {target} and made it the catalog default")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
