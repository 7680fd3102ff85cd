"""Package a trained demo model into the module: measure it on the bundled sample (and optionally on other
patients' scans), write the model card, install it under Resources/Models/<id>/ and make it the catalog's
default.

    .venv/bin/python scripts/demo-model/build.py RUN/package [--held-out CT.nii.gz REF.nii.gz NAMES.json]
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
from TokenUNetSegmentLib.pipeline.package import load_package, write_package  # noqa: E402
from TokenUNetSegmentLib.pipeline.segmentation import segment  # noqa: E402
from TokenUNetSegmentLib.pipeline.volumes import Volume  # noqa: E402

SAMPLE = MODULE / "Resources" / "Samples" / "AbdomenCT.nii.gz"
SAMPLE_LABELS = MODULE / "Resources" / "Samples" / "AbdomenCT.TotalSegmentatorLabels.nii.gz"
CATALOG = MODULE / "Resources" / "Models.json"

LICENSE = """The weights of this package are licensed under CC BY 4.0
(https://creativecommons.org/licenses/by/4.0/).

They were trained on one CT image of the TotalSegmentator dataset (CC BY 4.0; Wasserthal J., Breit H.-C.,
Meyer M.T., et al., "TotalSegmentator: Robust Segmentation of 104 Anatomic Structures in CT Images",
Radiology: Artificial Intelligence 5(5), 2023, doi:10.1148/ryai.230024), taken with its reference labels
from the TotalSegmentator 2.18.0 source distribution (Apache License 2.0,
https://github.com/wasserth/TotalSegmentator).

Not for clinical use.
"""


def measure(package, image, reference, names=None) -> dict:
    started = time.perf_counter()
    result = segment([image], package, heatmaps=False)
    seconds = time.perf_counter() - started
    table = {label.value: label.name for label in result.label_table}
    metrics = evaluate_files((Volume(result.labels, result.affine, "prediction"), table), reference, None, names)
    return {
        "image": Path(image).name,
        "reference": Path(reference).name,
        "segment_seconds": round(seconds, 1),
        "dice": {name: round(m["dice"], 4) for name, m in metrics["labels"].items() if m["dice"] is not None},
        "hd95_mm": {name: round(m["hd95_mm"], 1) for name, m in metrics["labels"].items() if m["hd95_mm"]},
        "mean_dice": round(metrics["mean_dice"], 4),
    }


def model_card(metadata: dict, size_bytes: int, note: str = "") -> str:
    cfg = metadata["tokenunet"]
    record = cfg["training"]
    recipe = record["recipe"]
    sample = record["evaluation"]["sample"]
    held_out = record["evaluation"].get("held_out", [])
    rows = "\n".join(
        f"| {name} | {dice:.3f} | {sample['hd95_mm'][name] if name in sample['hd95_mm'] else '-'} |"
        for name, dice in sample["dice"].items()
    )
    held = (
        "".join(
            f"- `{h['image']}` (another patient, vs `{h['reference']}`): Dice "
            + ", ".join(f"{n} {d:.3f}" for n, d in h["dice"].items())
            + "\n"
            for h in held_out
        )
        or "- none available offline with labels for these organs\n"
    )
    arch = cfg["architecture"]
    return f"""# {cfg["name"]} (`{cfg["id"]}`)

A small Token-UNet ({arch["name"]}, channels {arch["parameters"]["channels"]}, {record["parameters"]:,} parameters,
{size_bytes / 1e6:.1f} MB of safetensors) that segments 12 abdominal organs with BTCV names on CT at 3 mm:
{", ".join(label["name"] for label in cfg["labels"])}.

**Intended use: demonstration and research only. Not a medical device; not for clinical use.** It exists so
the extension segments real anatomy out of the box and so its token heatmaps can be explored.

## Data and provenance
- Trained on **one** CT scan (the bundled sample `AbdomenCT.nii.gz`: 122 x 101 x 112 voxels, 3 mm, lower
  chest to hips; TotalSegmentator dataset, CC BY 4.0, Wasserthal et al. 2023).
- The reference labels are **model-generated** (TotalSegmentator's "fast" model, from the TotalSegmentator
  2.18.0 source distribution), not drawn by hand, and carry that model's errors.
- One patient cannot represent anatomy, pathology, contrast phases or scanners: expect errors on other
  scans. Strong augmentation (scaling, rotation, elastic deformation, intensity, noise, blur, simulated low
  resolution; no left-right flips) was used to reduce memorisation.

## Recipe
`tokenunet train` (MONAI): patches {recipe["patch_size"]} at 3 mm, batch {recipe["batch_size"]}, class-balanced
patch sampling, DiceCE loss, {recipe["optimizer"]} lr {recipe["learning_rate"]} with {recipe["schedule"]} schedule
({recipe["warmup_steps"]} warm-up steps), augmentation strength {recipe["augmentation"]}, seed {recipe["seed"]};
{record["steps_done"]} steps in **{record["seconds"] / 60:.1f} min** on a shared 2-core CPU
({record["threads"]} threads). Best checkpoint at step {record["metrics"]["best"]["step"]}. The complete
record (data hashes, recipe, validation history) is in `configs/metadata.json` under `tokenunet.training`.

## Measured
On the training scan itself (so this measures fit, not generalisation), full pipeline `segment()` then
`evaluate` against the reference labels (the network's inference {sample["segment_seconds"]} s on the development CPU):

| organ | Dice | HD95 (mm) |
|---|---|---|
{rows}

Mean Dice {sample["mean_dice"]:.3f}.

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
    parser.add_argument("--note", default="", help="text for the model card after the other-patient figures")
    args = parser.parse_args()
    package = load_package(args.package)
    metadata = package.metadata
    cfg = metadata["tokenunet"]
    evaluation = {"sample": measure(package, SAMPLE, SAMPLE_LABELS)}
    evaluation["held_out"] = [measure(package, ct, ref, names) for ct, ref, names in args.held_out]
    cfg["training"]["evaluation"] = evaluation
    cfg["training"]["parameters"] = sum(p.numel() for p in package.network.parameters())
    metadata["description"] = (
        "Demonstration Token-UNet for 12 abdominal organs on CT at 3 mm, trained on one scan with "
        "model-generated labels; research and demonstration only, not for clinical use."
    )
    target = MODULE / "Resources" / "Models" / cfg["id"]
    size = (Path(args.package) / cfg["weights"]["file"]).stat().st_size
    write_package(
        target,
        package.network,
        metadata,
        license_text=LICENSE,
        readme_text=model_card(metadata, size, args.note),
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
