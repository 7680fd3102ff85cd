"""Package a trained demo model into the module: measure it, write the model card, install it under
Resources/Models/<id>/ and make it the catalog's default.

    .venv/bin/python scripts/demo-model/build.py RUN/package --datalist scripts/demo-model/datalist-patients.json
        [--lopo LOPO_RUNS] [--no-install]
    .venv/bin/python scripts/demo-model/build.py TokenUNetSegment/Resources/Models/ID --card-only --lopo LOPO_RUNS \
        --version X.Y.Z --note scripts/demo-model/card-notes.md     # the installed package's card, figures kept

Measures (all recorded in the package under ``tokenunet.training.evaluation``):
- ``sample``: Dice and HD95 on the bundled sample (a training scan: fit; the regression test reproduces it);
- ``robustness``: the robustness command's table on every patient of the datalist's ``evaluation`` list, with
  whether that patient was in the training data;
- ``lopo``: the leave-one-patient-out folds' tables (``LOPO_RUNS/fold-<P>/robustness/robustness.json``, written by
  lopo.sh), each fold trained without patient P;
- ``targets``: the issue's targets, met or not, with the figures;
- ``calibration``: how well the confidence ranked the held-out folds' results (Spearman, AUC, bands), from the
  confidences the fold tables record.
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

from TokenUNetSegmentLib.pipeline.calibration import confidence_pairs, format_summary, summarise  # noqa: E402
from TokenUNetSegmentLib.pipeline.errors import TokenUNetError  # noqa: E402
from TokenUNetSegmentLib.pipeline.evaluate import evaluate_files  # noqa: E402
from TokenUNetSegmentLib.pipeline.package_loader import load_package  # noqa: E402
from TokenUNetSegmentLib.pipeline.package_writer import write_package  # noqa: E402
from TokenUNetSegmentLib.pipeline.robustness import (  # noqa: E402
    evaluate_robustness,
    evaluation_entries,
    format_table,
    read_results,
)
from TokenUNetSegmentLib.pipeline.segmentation import segment  # noqa: E402
from TokenUNetSegmentLib.pipeline.training.recipe import Recipe  # noqa: E402
from TokenUNetSegmentLib.pipeline.volumes import Volume, read_volume  # noqa: E402

SAMPLE = MODULE / "Resources" / "Samples" / "AbdomenCT.nii.gz"
SAMPLE_LABELS = MODULE / "Resources" / "Samples" / "AbdomenCT.TotalSegmentatorLabels.nii.gz"
CATALOG = MODULE / "Resources" / "Models.json"
TARGET_SAMPLE = {"liver": 0.85, "spleen": 0.80}
TARGET_AGREEMENT = 0.90
TARGET_LOPO = {"liver": 0.80, "spleen": 0.70}
NEW_VERSION = "3.0.0"  # the version newly trained weights are packaged as, unless --version says otherwise
BASELINE_NOTE = (
    "Dice of the earlier bundled weights and of these on the same variants (liver and spleen on every variant, "
    "every organ on the plain scan). 1.0.0: trained on A and B with plain crops and mild augmentation (fit to the "
    "sample); 2.0.0: the augmentation and synthesis of this recipe, its first two phases (4000 steps); 2.1.0: its "
    "first three phases (6000 steps)."
)

LICENSE = """The weights of this package are licensed under CC BY 4.0
(https://creativecommons.org/licenses/by/4.0/).

They were trained on two CT images of the TotalSegmentator dataset (CC BY 4.0; Wasserthal J., Breit H.-C.,
Meyer M.T., et al., "TotalSegmentator: Robust Segmentation of 104 Anatomic Structures in CT Images",
Radiology: Artificial Intelligence 5(5), 2023, doi:10.1148/ryai.230024), taken with reference labels (model outputs)
from the TotalSegmentator 2.18.0 source distribution (Apache License 2.0,
https://github.com/wasserth/TotalSegmentator), and on synthetic CT images generated from those two scans' label maps.
A third scan (LiTS case 117, non-commercial licence) was used only to evaluate these weights, never to train them.

Not for clinical use.
"""


def measure_sample(package) -> dict:
    started = time.perf_counter()
    result = segment([SAMPLE], package, with_token_maps=False)
    seconds = time.perf_counter() - started
    table = {label.value: label.name for label in result.label_table}
    metrics = evaluate_files((Volume(result.labels, result.affine, "prediction"), table), SAMPLE_LABELS)
    return {
        "image": SAMPLE.name,
        "reference": SAMPLE_LABELS.name,
        "segment_seconds": round(seconds, 1),
        "dice": {n: round(m["dice"], 4) for n, m in metrics["labels"].items() if m["dice"] is not None},
        "hd95_mm": {n: round(m["hd95_mm"], 1) for n, m in metrics["labels"].items() if m["hd95_mm"]},
        "mean_dice": round(metrics["mean_dice"], 4),
    }


def robustness(package, datalist: Path, trained_patients: set[str]) -> list[dict]:
    spec = json.loads(datalist.read_text(encoding="utf-8"))
    out = []
    for patient in sorted({str(e["patient"]) for e in spec.get("evaluation", [])}):
        for case in evaluation_entries(datalist, patient):
            print(f"robustness: patient {patient} ({case['name']})", file=sys.stderr)
            result = evaluate_robustness(
                package, read_volume(case["image"]), read_volume(case["label"], purpose="evaluating"), case["names"]
            )
            result.update(case=case["name"], patient=patient, trained_on=patient in trained_patients)
            out.append(result)
    return out


def lopo_results(folder: Path | None) -> list[dict]:
    if folder is None or not folder.is_dir():
        return []
    out = []
    for fold in sorted(folder.glob("fold-*")):
        path = fold / "robustness" / "robustness.json"
        package = fold / "package" / "configs" / "metadata.json"
        if not path.is_file() or not package.is_file():
            continue
        results = read_results(path)  # any version's robustness.json
        section = json.loads(package.read_text(encoding="utf-8"))["tokenunet"]
        record, trained = section["training"], section["training"]["data"]["training"]
        stats = section.get("training_statistics", {}).get("labels", {})
        labelled = {name for name, entry in stats.items() if entry.get("cases", 0) > 0}
        for result in results:
            result.update(
                patient=fold.name.removeprefix("fold-"),
                training_patients=sorted({c.get("patient", c["name"]) for c in trained}),
                labelled_in_training=sorted(labelled),
                steps=record["steps_done"],
                minutes=round(record["seconds"] / 60, 1),
            )
            out.append(result)
    return out


def _plain(result: dict) -> dict:
    return next((row for row in result["variants"] if row["variant"] == "plain"), {"dice": {}})


def baseline(folders: dict[str, Path], robust: list[dict]) -> list[dict]:
    """Dice of earlier models (``{name: folder of <patient>/robustness.json}``) and of this one on the same
    variants: liver and spleen on every variant, every organ on the plain scan."""
    rows = []
    for result in robust:
        before = {}
        for name, folder in folders.items():
            path = folder / result["patient"] / "robustness.json"
            if path.is_file():
                variants = read_results(path)[0]["variants"]  # the patient's one case
                before[name] = {row["variant"]: row["dice"] for row in variants}
        if not before:
            continue
        for row in result["variants"]:
            organs = list(row["dice"]) if row["variant"] == "plain" else ["liver", "spleen"]
            for organ in organs:
                values = {name: old.get(row["variant"], {}).get(organ) for name, old in before.items()}
                if organ in row["dice"] and any(v is not None for v in values.values()):
                    rows.append({"patient": result["patient"], "variant": row["variant"], "organ": organ,
                                 "before": values, "after": row["dice"][organ]})  # fmt: skip
    return rows


def lopo_comparison(folders: dict[str, Path], lopo: list[dict]) -> list[dict]:
    """Plain-scan Dice of earlier recipes' leave-one-patient-out folds (``{name: folder of fold-<P>/}``) and of
    this recipe's, per held-out patient and organ."""
    rows = []
    for result in lopo:
        before = {}
        for name, folder in folders.items():
            path = folder / f"fold-{result['patient']}" / "robustness" / "robustness.json"
            if path.is_file():
                before[name] = _plain(read_results(path)[0])["dice"]
        for organ, value in _plain(result)["dice"].items():
            values = {name: dice.get(organ) for name, dice in before.items()}
            rows.append({"patient": result["patient"], "organ": organ, "before": values, "after": value})
    return rows


def package_version(given: str | None, current: str, card_only: bool) -> str:
    """The version to write: the one given, else the package's own for a new card of the same weights, else
    :data:`NEW_VERSION` for newly trained weights."""
    return given or (current if card_only else NEW_VERSION)


def recorded_evaluation(cfg: dict, lopo: Path | None, previous_lopo: list[str] | None) -> dict:
    """The figures an installed package recorded (sample, robustness, comparisons), with its leave-one-patient-out
    tables read again from ``lopo`` when it holds any (e.g. re-run to record confidences); nothing is re-measured on
    the package's own weights."""
    evaluation = dict(cfg["training"]["evaluation"])
    folds = lopo_results(lopo)
    if folds:
        evaluation["lopo"] = folds
    if previous_lopo:
        evaluation["lopo_comparison"] = lopo_comparison(_named_folders(previous_lopo), evaluation["lopo"])
    return evaluation


def _named_folders(values: list[str] | None) -> dict[str, Path]:
    out = {}
    for value in values or []:
        name, _, folder = value.partition("=")
        if not folder:
            raise SystemExit(f"expected NAME=FOLDER, got {value!r}")
        out[name] = Path(folder)
    return out


def targets(robust: list[dict], lopo: list[dict]) -> list[dict]:
    rows = []
    sample = next((r for r in robust if r["patient"] == "A"), None)
    if sample is not None:
        for row in sample["variants"]:
            if not (row["variant"].startswith("slab") or row["variant"] == "oblique"):
                continue
            for organ, goal in TARGET_SAMPLE.items():
                value = row["dice"].get(organ)
                if value is not None:
                    rows.append(
                        {"target": f"sample, {row['variant']}: {organ} >= {goal}", "value": value, "met": value >= goal}
                    )
            if row["variant"] == "oblique":
                for organ in TARGET_SAMPLE:
                    value = row.get("agreement_with_plain", {}).get(organ)
                    if value is not None:
                        rows.append(
                            {
                                "target": f"sample, oblique vs plain agreement: {organ} >= {TARGET_AGREEMENT}",
                                "value": value,
                                "met": value >= TARGET_AGREEMENT,
                            }
                        )
    for result in lopo:
        plain = next((r for r in result["variants"] if r["variant"] == "plain"), None)
        if plain is None:
            continue
        for organ, goal in TARGET_LOPO.items():
            if organ in plain["dice"]:
                applies = organ in result["labelled_in_training"]
                rows.append({
                    "target": f"LOPO, patient {result['patient']} held out: {organ} >= {goal}"
                    + ("" if applies else " (not labelled in its training fold: target does not apply)"),
                    "value": plain["dice"][organ], "met": (plain["dice"][organ] >= goal) if applies else None,
                })  # fmt: skip
    return rows


def _phase_row(index: int, phase: dict) -> str:
    recipe = phase["recipe"]
    if recipe is None:
        return f"| {index} | {phase['from_step']}-{phase['to_step']} | (not recorded) | | | | | |"
    rate = Recipe(**recipe).lr() * Recipe(**recipe).rate_factor(phase["from_step"])
    return (
        f"| {index} | {phase['from_step']}-{phase['to_step']} | {rate:.2g} | {recipe['synthetic_ratio']:.0%} | "
        f"{recipe['remap_ratio']:.0%} | {recipe['background_ratio']:.0%} | {recipe['lesion_probability']:.0%} | "
        f"{recipe['augmentation']} |"
    )


def _values(before: dict, names: list[str]) -> str:
    return " | ".join("-" if before.get(name) is None else f"{before[name]:.3f}" for name in names)


def comparison_tables(evaluation: dict) -> str:
    """Markdown: earlier bundled models and earlier recipes' folds against these weights."""
    out = []
    rows = evaluation.get("baseline", [])
    if rows:
        names = list(rows[0]["before"])
        head = "| patient | variant | organ | " + " | ".join(names) + " | these |\n|" + "---|" * (len(names) + 4)
        body = "\n".join(
            f"| {r['patient']} | {r['variant']} | {r['organ']} | {_values(r['before'], names)} | {r['after']:.3f} |"
            for r in rows
        )
        out.append(
            "## Compared with the previous bundled models\n" + BASELINE_NOTE + "\n\n" + head + "\n" + body + "\n"
        )
    rows = evaluation.get("lopo_comparison", [])
    if rows and rows[0]["before"]:
        names = list(rows[0]["before"])
        head = "| held out | organ | " + " | ".join(names) + " | this recipe |\n|" + "---|" * (len(names) + 3)
        body = "\n".join(
            f"| {r['patient']} | {r['organ']} | {_values(r['before'], names)} | {r['after']:.3f} |" for r in rows
        )
        out.append("Leave-one-patient-out, plain scan of the held-out patient:\n\n" + head + "\n" + body + "\n")
    return "\n".join(out)


def model_card(metadata: dict, size_bytes: int, note: str = "") -> str:
    cfg = metadata["tokenunet"]
    record = cfg["training"]
    recipe = record["recipe"]
    evaluation = record["evaluation"]
    sample = evaluation["sample"]
    rows = "\n".join(
        f"| {name} | {dice:.3f} | {sample['hd95_mm'].get(name, '-')} |" for name, dice in sample["dice"].items()
    )
    robust = "\n\n".join(
        f"**Patient {r['patient']}** (`{r['case']}`, "
        f"{'in the training data' if r['trained_on'] else 'never seen in training'}):\n\n{format_table(r)}"
        for r in evaluation["robustness"]
    )
    lopo = (
        "\n\n".join(
            f"**Patient {r['patient']} held out** (trained on {', '.join(r['training_patients'])}; {r['steps']} steps, "
            f"{r['minutes']} min):\n\n{format_table(r)}"
            for r in evaluation.get("lopo", [])
        )
        or "(no fold results were given to the build)"
    )

    def mark(met):
        return "n/a" if met is None else ("met" if met else "**not met**")

    compared = comparison_tables(evaluation)
    trust = (
        format_summary(evaluation["calibration"])
        if evaluation.get("calibration")
        else "(the fold tables given to the build record no confidences)"
    )
    phases = record.get("phases") or [{"from_step": 0, "to_step": record["steps_done"], "recipe": recipe}]
    phase_rows = "\n".join(_phase_row(index, phase) for index, phase in enumerate(phases, start=1))
    target_rows = "\n".join(f"| {t['target']} | {t['value']:.3f} | {mark(t['met'])} |" for t in evaluation["targets"])
    arch = cfg["architecture"]
    stats = cfg.get("training_statistics", {})
    augmentation = stats.get("augmentation", {})
    return f"""# {cfg["name"]} (`{cfg["id"]}`)

A small Token-UNet ({arch["name"]}, channels {arch["parameters"]["channels"]}, {record["parameters"]:,} parameters,
{size_bytes / 1e6:.1f} MB of safetensors) that segments 12 abdominal organs with BTCV names on CT at 3 mm:
{", ".join(label["name"] for label in cfg["labels"])}.

**Intended use: demonstration and research only. Not a medical device; not for clinical use.** It exists so
the extension segments real anatomy out of the box and so its token heatmaps can be explored.

## Data and provenance
- Real scans of **two** patients, both from the TotalSegmentator dataset (CC BY 4.0, Wasserthal et al. 2023) as
  shipped in the TotalSegmentator 2.18.0 source distribution (Apache-2.0):
  - **A**, the bundled sample `AbdomenCT.nii.gz` (3 mm, lower chest to hips) with TotalSegmentator's full
    117-class label map (all twelve organs and 105 other structures);
  - **B**, the upper chest and neck of a CT angiogram (from about 2 cm above the diaphragm;
    `scripts/demo-model/fetch_second_patient.py`): the aorta labelled, the heart, pulmonary artery and aortic
    branches named, every other voxel background (none of the twelve organs lies there).
- The reference labels are **model-generated** (TotalSegmentator outputs), not drawn by hand, and carry that
  model's errors.
- **Synthetic patients**: {round(100 * augmentation.get("synthetic_ratio", 0))} % of the training patches are CT
  images synthesised from the two scans' label maps (SynthSeg-style: every tissue's HU drawn from CT-plausible
  distributions for an unenhanced, arterial or portal venous phase with per-scan shifts, random texture,
  partial-volume blur, thick slices, noise), {round(100 * recipe.get("remap_ratio", 0))} % of the others have
  their tissues re-mapped to another contrast phase, and organ lesions (hypo- and hyperdense) are added.
  Every patch is deformed (rotations up to {augmentation.get("rotation_deg", "?")} degrees, body-size scale
  {augmentation.get("scale", "?")}, per-axis anisotropy, smooth elastic displacement) and many are cut like a
  partial scan (axial slabs down to {augmentation.get("min_slab_mm", "?")} mm, in-plane crops, oblique edges),
  padded exactly as `segment()` pads; no left-right flips (lateralised labels).
- **Patient C**, LiTS case 117 (a manually labelled liver crop with metastases, non-commercial licence;
  `scripts/demo-model/fetch_liver_patient.py`), is **never used to train these weights**: it is their held-out
  test, and a training patient only in the leave-one-patient-out fold that holds A out.
- Three patients are far too few to represent anatomy, pathology, contrast phases or scanners: expect errors on
  other scans, most on the small structures (adrenal glands, pancreas, portal/splenic vein). The data survey
  (every labelled CT obtainable from PyPI, Debian and npm) found no other scan with labels for these organs.

## Recipe
`bash scripts/demo-model/train.sh` (`tokenunet train`, options in `scripts/demo-model/recipe.sh`): patches of
{recipe["patch_size"]} voxels at 3 mm, batch {recipe["batch_size"]}, organ-centred patches (each organ of a case
equally often) with the rest centred anywhere (hard background), Dice + cross-entropy (marginal over unannotated
labels), {recipe["optimizer"]}, cosine learning-rate schedule, seed {recipe["seed"]}; {record["steps_done"]} steps
in **{record["seconds"] / 60:.1f} min** on a shared 2-core CPU ({record["threads"]} thread(s) per run), in
{len(phases)} phase(s) (each a `--resume` with more steps, which continues on the longer cosine schedule: a warm
restart):

| phase | steps | first learning rate | synthetic | re-mapped (of the rest) | background | lesions | augmentation |
|---|---|---|---|---|---|---|---|
{phase_rows}

The **last** checkpoint is packaged (no checkpoint was chosen by Dice on any scan); the recipe was chosen by the
robustness tables below. The complete record (data SHA256s, every phase's recipe, history) is in
`configs/metadata.json` under `tokenunet.training`; what the training data looked like (organ volumes, HU, voxel
sizes, fields of view, augmentation envelope) under `tokenunet.training_statistics`.

## Targets of issue 10

| target | value | |
|---|---|---|
{target_rows}

{compared}
## Robustness of these weights
Dice per organ of `segment()` on changed versions of each patient's scan (`tokenunet robustness`): thin slabs
of 10, 13, 20, 30 and 40 slices around the liver's and the spleen's centres, an oblique grid (tilted 25 and 10 degrees,
with its agreement with the plain result), other voxel sizes, 5 mm slices, noise, a scan that starts halfway down
the liver; last rows: each organ's best-token soft Dice (how well the best of the 32 tokens' maps follows it).
A and B are training patients (robustness, not generalisation); C was never seen.

{robust}

## Leave-one-patient-out
Each fold trains the same recipe without one patient (nothing derived from it, synthetic patches included) and
is measured on that patient (`bash scripts/demo-model/lopo.sh`).

{lopo}

## How far to trust the confidence
Each organ a fold found on its held-out patient's variants above, with the confidence `segment()` gave it, against
its Dice (organs the reference labels but the variant does not contain count as found wrongly, Dice 0; organs the
reference does not label are left out):

{trust}

## On the bundled sample (a training scan: fit)
`segment()` then `evaluate` (`segment()` took {sample["segment_seconds"]} s on the development CPU):

| organ | Dice | HD95 (mm) |
|---|---|---|
{rows}

Mean Dice {sample["mean_dice"]:.3f}.
{note}
## Train your own
1. Write a datalist (`tokenunet datalist totalsegmentator|decathlon|folders ...` reads public layouts) and a
   configuration like `scripts/demo-model/config.json`.
2. `python -m TokenUNetSegmentLib.pipeline train DATALIST --config CONFIG --out RUN --steps N`
   (`--resume` continues, `--synthetic-ratio` mixes synthetic patches, `--hold-out P` leaves a patient out,
   `torchrun` trains on several GPUs: `scripts/models/abdomen-organs-totalseg/`).
3. `tokenunet robustness --model RUN/package --image CT --reference REF --out RUN/robustness` measures it;
   `models import RUN/package` installs it (trained from this model's configuration, it needs its own id:
   `train --id NEW_ID`).
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package", help="the trained package (RUN/package)")
    parser.add_argument(
        "--datalist", type=Path, help="datalist with the patients' 'evaluation' entries (not with --card-only)"
    )
    parser.add_argument("--lopo", type=Path, help="folder of the leave-one-patient-out folds (fold-<P>/)")
    parser.add_argument("--no-install", action="store_true", help="print the figures, install nothing")
    parser.add_argument("--note", type=Path, help="Markdown file whose text goes in the model card")
    parser.add_argument(
        "--baseline",
        action="append",
        metavar="NAME=FOLDER",
        help="an earlier model's robustness (FOLDER/<patient>/robustness.json) to compare with; repeatable",
    )
    parser.add_argument(
        "--previous-lopo",
        action="append",
        metavar="NAME=FOLDER",
        help="an earlier recipe's leave-one-patient-out folds (FOLDER/fold-<P>/robustness/) to compare; repeatable",
    )
    parser.add_argument(
        "--card-only",
        action="store_true",
        help="PACKAGE is an installed package: keep the figures it recorded, read only the folds (--lopo) again and "
        "what follows from them (targets, calibration), and rewrite its metadata and model card",
    )
    parser.add_argument(
        "--version", help=f"the package version to write (default: {NEW_VERSION}; with --card-only the package's own)"
    )
    parser.add_argument(
        "--id",
        dest="model_id",
        default="abdomen-organs-3mm-demo",
        help="install under this id (a fold's package, trained identically, has its own)",
    )
    args = parser.parse_args()
    if args.datalist is None and not args.card_only:
        parser.error("--datalist is required (the patients to measure the package on)")
    package = load_package(args.package)
    metadata = package.metadata.to_dict()  # a JSON-ready copy, completed below
    cfg = metadata["tokenunet"]
    cfg["id"] = args.model_id
    if args.card_only:
        evaluation = recorded_evaluation(cfg, args.lopo, args.previous_lopo)
    else:
        trained = {case.get("patient", case["name"]) for case in cfg["training"]["data"]["training"]}
        evaluation = {"sample": measure_sample(package)}
        evaluation["robustness"] = robustness(package, args.datalist, trained)
        evaluation["lopo"] = lopo_results(args.lopo)
        evaluation["baseline"] = baseline(_named_folders(args.baseline), evaluation["robustness"])
        evaluation["lopo_comparison"] = lopo_comparison(_named_folders(args.previous_lopo), evaluation["lopo"])
    evaluation["targets"] = targets(evaluation["robustness"], evaluation["lopo"])
    held_out = [pair for result in evaluation["lopo"] for pair in confidence_pairs(result)]
    evaluation["calibration"] = summarise(held_out) if held_out else None
    if args.no_install:
        print(json.dumps(evaluation, indent=2))
        return 0
    cfg["training"]["evaluation"] = evaluation
    cfg["training"]["parameters"] = sum(p.numel() for p in package.network.parameters())
    metadata["description"] = (
        "Demonstration Token-UNet for 12 abdominal organs on CT at 3 mm, trained on two patients' scans with "
        "model-generated labels and synthetic CTs from their label maps; research and demonstration only, not for "
        "clinical use."
    )
    metadata["version"] = package_version(args.version, metadata["version"], args.card_only)
    target = MODULE / "Resources" / "Models" / cfg["id"]
    size = (Path(args.package) / cfg["weights"]["file"]).stat().st_size
    note = args.note.read_text(encoding="utf-8") if args.note else ""
    write_package(target, package.network, metadata, license_text=LICENSE,
                  readme_text=model_card(metadata, size, note), overwrite=True)  # fmt: skip
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
    print("\n".join(f"{t['target']}: {t['value']:.3f} ({t['met']})" for t in evaluation["targets"]))
    print(f"installed {target} and made it the catalog default")
    return 0


def run() -> int:
    """:func:`main`, with a plain message and exit 2 for what it cannot read (e.g. a fold's newer robustness.json)."""
    try:
        return main()
    except TokenUNetError as error:
        print(f"build.py: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(run())
