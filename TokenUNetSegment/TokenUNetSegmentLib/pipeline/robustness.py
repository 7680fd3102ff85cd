"""``robustness``: how a model holds up when a labelled CT is changed the way real scans differ: thin slabs,
an oblique grid, other voxel sizes, noise, a scan that starts mid-liver (a one-channel model of another modality:
every variant but the noise, which is in HU). Each variant is segmented with
``segment()`` and scored against the reference (Dice per label, labels matched by name); the oblique variant
is also compared with the plain result (agreement). On the plain scan, each label's best-token soft Dice says
whether some learned token follows that organ.

    tokenunet robustness --model MODEL --image CT --reference REF [--reference-names NAMES.json] --out DIR
    tokenunet robustness --model MODEL --datalist DATALIST.json --patient P --out DIR

writes ``DIR/robustness.json`` and ``DIR/robustness.md`` (a table) and prints the table. ``robustness.json`` is one
object whatever the number of cases, ``{"format": "tokenunet-robustness", "version": 2, "results": [...]}`` with one
result of :func:`evaluate_robustness` per case (:func:`robustness_document`); :func:`read_results` reads it and the
files of earlier versions (one case's result object, or a list of them).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .arguments import device_name, text, user_path
from .calibration import confidence_pairs, format_summary, summarise
from .errors import InputError

SLAB_SLICES = (10, 13, 20, 30, 40)  # 13 and 30: the cuts of the sample quoted in issue 10
SLAB_ORGANS = ("liver", "spleen")
SPACINGS_MM = (1.0, 1.5, 3.0)
THICK_SLICE_MM = 5.0
OBLIQUE_DEG = (25.0, 10.0)
NOISE_HU = 40.0
ALL_VARIANTS = ("plain", "slabs", "oblique", "spacing", "thick", "noise", "mid-liver")


@dataclass
class Variant:
    """A changed scan: its image, and where its result is scored (a sub-grid of the reference's grid, or the
    reference's grid itself when the image was resampled)."""

    name: str
    image: object  # Volume
    reference: np.ndarray  # reference label values on the scoring grid
    grid: object  # scoring Grid
    note: str = ""


def _axis_along_z(grid) -> int:
    return int(np.argmax(np.abs(grid.direction[2])))


def _centroid_index(reference: np.ndarray, values: list[int]) -> np.ndarray | None:
    mask = np.isin(reference, values)
    if not mask.any():
        return None
    return np.argwhere(mask).mean(0)


def _crop(image, reference: np.ndarray, axis: int, lo: int, hi: int, name: str, note: str) -> Variant:
    from .volumes import Volume

    lo, hi = max(0, lo), min(image.array.shape[axis], hi)
    index = [slice(None)] * 3
    index[axis] = slice(lo, hi)
    start = [0, 0, 0]
    start[axis] = lo
    shape = list(image.array.shape)
    shape[axis] = hi - lo
    grid = image.grid.sub_grid(start, shape)
    cropped = Volume(np.ascontiguousarray(image.array[tuple(index)]), grid.affine, name)
    return Variant(name, cropped, np.ascontiguousarray(reference[tuple(index)]), grid, note)


def _resampled(image, reference, target, name: str, note: str, blur_mm=None) -> Variant:
    import SimpleITK as sitk

    from .geometry import image_from_array, resample_image
    from .volumes import Volume

    source = image_from_array(np.asarray(image.array, np.float32), image.affine)
    if blur_mm is not None:
        sigma = [float(s) for s in blur_mm]
        source = sitk.DiscreteGaussian(source, [s * s for s in sigma], 32)
    low = float(np.min(image.array))
    array = resample_image(source, target, "linear", low, np.float32)
    return Variant(name, Volume(array, target.affine, name), reference, image.grid, note)


def _iso_grid(grid, spacing):
    """A grid covering ``grid``'s box with the same axes and a new voxel size per axis."""
    from .geometry import Grid

    spacing = np.broadcast_to(np.asarray(spacing, float), (3,))
    old = grid.spacing
    extent = np.asarray(grid.shape) * old
    shape = np.maximum(1, np.round(extent / spacing)).astype(int)
    affine = grid.affine.copy()
    affine[:3, :3] = grid.direction * spacing
    first = (spacing / old - 1) / 2  # centre of the first new voxel, in old index units
    affine[:3, 3] = grid.affine[:3, :3] @ first + grid.affine[:3, 3]
    return Grid(tuple(int(s) for s in shape), affine)


def _oblique_grid(grid, degrees):
    """The grid rotated about its centre by ``degrees`` (about the first, then the second axis) and enlarged
    to hold the whole original box (so the anatomy is the same, on tilted axes)."""
    from .geometry import Grid
    from .training.warp import rotation_matrix

    a, b = (math.radians(d) for d in degrees)
    rotation = rotation_matrix((a, b, 0.0))
    direction = grid.direction @ rotation
    corners = grid.corners_ras()
    centre = corners.mean(0)
    local = (corners - centre) @ direction  # corners in the new axes (mm)
    spacing = grid.spacing
    shape = np.ceil((local.max(0) - local.min(0)) / spacing).astype(int)
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing
    affine[:3, 3] = centre - direction @ ((shape - 1) / 2 * spacing)
    return Grid(tuple(int(s) for s in shape), affine)


@dataclass
class PlannedVariant:
    """A variant not made yet: its name, the grid of the image the model will get (for the memory check), and how
    to make it (variants are made one at a time: the 1 mm variant of a 3 mm scan holds 27 times its voxels)."""

    name: str
    grid: object  # Grid
    make: Callable[[], Variant]


def _crop_grid(grid, axis: int, lo: int, hi: int):
    lo, hi = max(0, lo), min(grid.shape[axis], hi)
    start, shape = [0, 0, 0], list(grid.shape)
    start[axis], shape[axis] = lo, hi - lo
    return grid.sub_grid(start, shape)


def plan_variants(image, reference: np.ndarray, names: dict[int, str], wanted=ALL_VARIANTS, seed: int = 0):
    """The changed scans of ``image`` (a Volume) whose reference labels ``reference`` lie on its grid, as
    :class:`PlannedVariant` (made when called)."""
    from .training.label_tables import name_key
    from .volumes import Volume

    planned = []

    def crop(lo, hi, name, note):
        grid = _crop_grid(image.grid, axis, lo, hi)
        planned.append(PlannedVariant(name, grid, lambda: _crop(image, reference, axis, lo, hi, name, note)))

    def resampled(target, name, note, blur=None):
        planned.append(PlannedVariant(name, target, lambda: _resampled(image, reference, target, name, note, blur)))

    if "plain" in wanted:
        planned.append(PlannedVariant("plain", image.grid, lambda: Variant("plain", image, reference, image.grid)))
    axis = _axis_along_z(image.grid)
    by_key = {name_key(n): v for v, n in names.items()}
    if "slabs" in wanted:
        for organ in SLAB_ORGANS:
            centre = _centroid_index(reference, [by_key[name_key(organ)]]) if name_key(organ) in by_key else None
            if centre is None:
                continue
            for slices in SLAB_SLICES:
                lo = int(round(centre[axis] - slices / 2))
                lo = max(0, min(lo, image.array.shape[axis] - slices))  # whole slabs, inside the scan
                crop(lo, lo + slices, f"slab {slices} @ {organ}", f"{slices} slices around the {organ}'s centre")
    if "oblique" in wanted:
        note = f"resampled onto a grid tilted {OBLIQUE_DEG[0]:g} and {OBLIQUE_DEG[1]:g} degrees"
        resampled(_oblique_grid(image.grid, OBLIQUE_DEG), "oblique", note)
    if "spacing" in wanted:
        for spacing in SPACINGS_MM:
            blur = np.maximum(0.0, (spacing - image.grid.spacing) / 2.355)
            resampled(_iso_grid(image.grid, spacing), f"{spacing:g} mm", f"resampled to {spacing:g} mm", blur)
    if "thick" in wanted:
        spacing = image.grid.spacing.copy()
        spacing[axis] = THICK_SLICE_MM
        blur = np.zeros(3)
        blur[axis] = max(0.0, (THICK_SLICE_MM - image.grid.spacing[axis]) / 2.355)
        name = f"{THICK_SLICE_MM:g} mm slices"
        resampled(_iso_grid(image.grid, spacing), name, f"{THICK_SLICE_MM:g} mm thick slices", blur)
    if "noise" in wanted:

        def noisy() -> Variant:
            rng = np.random.default_rng(seed)
            array = np.asarray(image.array, np.float32) + rng.normal(0, NOISE_HU, image.array.shape).astype(np.float32)
            note = f"Gaussian noise SD {NOISE_HU:g} HU"
            return Variant(f"noise {NOISE_HU:g} HU", Volume(array, image.affine, "noise"), reference, image.grid, note)

        planned.append(PlannedVariant(f"noise {NOISE_HU:g} HU", image.grid, noisy))
    if "mid-liver" in wanted and name_key("liver") in by_key:
        centre = _centroid_index(reference, [by_key[name_key("liver")]])
        if centre is not None:
            up = image.grid.direction[2, axis] > 0  # index grows towards the head
            middle = int(round(centre[axis]))
            lo, hi = (0, middle) if up else (middle, image.array.shape[axis])
            crop(lo, hi, "mid-liver start", "the scan starts halfway down the liver")
    return planned


def make_variants(image, reference: np.ndarray, names: dict[int, str], wanted=ALL_VARIANTS, seed: int = 0):
    """The changed scans of ``image`` (a Volume) whose reference labels ``reference`` lie on its grid, all made."""
    return [planned.make() for planned in plan_variants(image, reference, names, wanted, seed)]


PLACED_ON_ORGANS = {
    "slabs": ("slab ", "the slabs are cut around the liver's and the spleen's centres", "neither"),
    "mid-liver": ("mid-liver start", "the mid-liver start cuts the scan at the liver's centre", "no liver"),
}
"""Variants placed by reference organs: the names their runs start with, where they lie, what a reference lacks."""


def _unplaced_variants(wanted, planned: list[PlannedVariant], by_name: bool, reference: str) -> list[str]:
    """A note on each variant of ``wanted`` that found no organ to be placed on (a kidney model's reference);
    asked for ``by_name``, it is refused instead.

    Raises:
        InputError: such a variant asked for by name.
    """
    notes = []
    for name, (prefix, where, lacking) in PLACED_ON_ORGANS.items():
        if name not in wanted or any(plan.name.startswith(prefix) for plan in planned):
            continue
        message = f"{where}, and the reference ({reference}) labels {lacking} inside the image"
        if by_name:
            raise InputError(message, f"leave {name} out of --variants, or name those organs in the reference's table")
        notes.append(f"{message}: left out")
    return notes


def check_variants_fit(planned: list[PlannedVariant], package, image_name: str, tokens: bool) -> None:
    """Refuse, before any variant runs, one whose run cannot fit in free memory or ``TOKENUNET_MEMORY_LIMIT``,
    estimated from its grid as ``segment`` estimates a header's (:func:`.run_memory.check_header_fits`).

    Raises:
        OutOfMemoryError: naming the variant.
    """
    from ..model.variants import declared_token_count
    from .errors import OutOfMemoryError
    from .run_memory import check_header_fits

    architecture = package.config.architecture
    learned = declared_token_count(architecture.name, architecture.build_arguments()) or 0
    for variant in planned:
        voxels = int(np.prod(variant.grid.shape, dtype=np.int64))
        try:
            maps = learned if tokens and variant.name == "plain" else 0  # token maps: on the plain scan only
            check_header_fits(voxels, variant.grid, package.config, maps, image_name)
        except OutOfMemoryError as error:
            raise OutOfMemoryError(
                error.message.replace("this run", f"the {variant.name} variant of {image_name}", 1),
                "leave it out with --variants",
            ) from None


def _pairs(model_labels, names: dict[int, str]):
    from .training.label_tables import name_key

    by_key = {name_key(n): v for v, n in names.items()}
    return [
        (label.value, by_key[name_key(label.name)], label.name)
        for label in model_labels
        if name_key(label.name) in by_key
    ]


def _best_token_dice(result, reference: np.ndarray, pairs) -> dict:
    """Each label's best soft Dice of a token map (gather or broadcast, on the input grid) against the
    reference mask, and which token it was."""
    if result.token_maps is None:
        return {}
    maps = {kind: result.token_maps.all(kind) for kind in result.token_maps.kinds}
    out = {}
    for _, ref_value, name in pairs:
        mask = reference == ref_value
        if not mask.any():
            continue
        best = (0.0, None, None)
        for kind, stack in maps.items():
            flat = stack.reshape(stack.shape[0], -1).astype(np.float64)
            overlap = flat[:, mask.ravel()].sum(1)
            dice = 2 * overlap / (flat.sum(1) + mask.sum())
            token = int(np.argmax(dice))
            if dice[token] > best[0]:
                best = (float(dice[token]), kind, token)
        out[name] = {"soft_dice": round(best[0], 4), "kind": best[1], "token": best[2]}
    return out


def evaluate_robustness(
    package,
    image,
    reference,
    names: dict[int, str],
    wanted=None,
    device="auto",
    tokens=True,
    progress=None,
    test_time_augmentation: bool = False,
) -> dict:
    """Segment every variant of ``image`` (a Volume) with ``package`` and score it against ``reference`` (a
    label Volume named by ``names``).

    ``wanted``: the variants (names of :data:`ALL_VARIANTS`); None for every one that suits the model's modality,
    as the command chooses them (:func:`variants_for`): those in HU are left out for a model that takes no CT, and
    the result's ``"left_out"`` says so. Asking for one of those by name is refused (InputError).
    ``test_time_augmentation``: every variant segmented with it (:func:`.segmentation.segment`'s); the result
    records it."""
    from .evaluate import check_distinct_names, label_metrics
    from .geometry import resample
    from .label_values import check_label_values
    from .segmentation import segment

    check_one_channel(package.config.inputs, package.id, "")  # before any work: the variants change one scan
    asked = wanted
    wanted, left_out = variants_for(wanted, package.config.inputs[0].modality, package.id)
    check_distinct_names(names, "the reference's")
    check_label_values(reference.array, Path(reference.name).name)  # before rounding: a probability map is refused
    ref = np.asarray(reference.array)
    if ref.shape != image.array.shape or not np.allclose(reference.affine, image.affine, atol=1e-4):
        ref = resample(np.rint(ref).astype(np.uint16), reference.grid, image.grid, "nearest", 0, np.uint16)
    ref = np.rint(ref).astype(np.int32)
    pairs = _pairs(package.labels, names)
    if not pairs:
        raise InputError("the reference names none of the model's labels", "pass the reference's name table")
    if not any((ref == value).any() for _, value, _ in pairs):  # e.g. a label map of another scan
        raise InputError(
            f"the reference ({reference.name}) has none of the model's labels inside the image ({image.name})",
            "check that both belong to the same scan, with their geometry (origin, spacing, orientation) kept",
        )
    rows, plain_labels, tokens_out = [], None, {}
    planned = plan_variants(image, ref, names, wanted)
    left_out += _unplaced_variants(wanted, planned, asked is not None, Path(reference.name).name)
    check_variants_fit(planned, package, Path(image.name).name, tokens)  # before any runs
    for index, plan in enumerate(planned):
        if progress:
            progress(plan.name, index / len(planned))
        variant = plan.make()  # one at a time
        want_tokens = tokens and variant.name == "plain"
        result = segment(
            [variant.image],
            package,
            device=device,
            with_token_maps=want_tokens,
            test_time_augmentation=test_time_augmentation,
        )
        predicted = result.labels
        if predicted.shape != variant.reference.shape or not np.allclose(result.affine, variant.grid.affine, atol=1e-4):
            predicted = resample(predicted, result.grid, variant.grid, "nearest", 0, np.uint8)
        # as evaluate scores: an organ the reference names but this variant's reference lacks, found anyway, is a
        # false find (Dice 0); one absent from both is not scored
        metrics = label_metrics(predicted.astype(np.int32), variant.reference, pairs, variant.grid.spacing, hd95=False)
        dice = {name: round(m["dice"], 4) for name, m in metrics.items() if m["dice"] is not None}
        row = {
            "variant": variant.name,
            "note": variant.note,
            "shape": list(variant.image.array.shape),
            "spacing_mm": [round(float(s), 3) for s in variant.image.grid.spacing],
            "dice": dice,
            "mean_dice": round(float(np.mean(list(dice.values()))), 4) if dice else None,
            "volume_ml": {n: round(m["volume_ml"], 1) for n, m in metrics.items() if m["dice"] is not None},
            "seconds": round(result.timings["total"], 2),
            **_judgement(result.assessment),
        }
        if variant.name == "plain":
            plain_labels = predicted
            if want_tokens:
                tokens_out = {
                    "reference": _best_token_dice(result, ref, pairs),
                    "prediction": _best_prediction_tokens(result.token_matches),
                }
        elif (
            plain_labels is not None
            and predicted.shape == plain_labels.shape
            and np.allclose(variant.grid.affine, image.affine, atol=1e-4)
        ):
            agreement = label_metrics(
                predicted.astype(np.int32),
                plain_labels.astype(np.int32),
                [(p, p, n) for p, _, n in pairs],
                variant.grid.spacing,
                hd95=False,
            )
            row["agreement_with_plain"] = {
                n: round(m["dice"], 4) for n, m in agreement.items() if m["dice"] is not None
            }
        rows.append(row)
    if progress:
        progress("done", 1.0)
    out = {"model": package.id, "labels": [n for _, _, n in pairs], "variants": rows, "best_token": tokens_out}
    if test_time_augmentation:
        out["test_time_augmentation"] = True
    return {**out, "calibration": summarise(confidence_pairs(out)), **({"left_out": left_out} if left_out else {})}


def _judgement(assessment) -> dict:
    """Each found label's confidence and flag codes (empty without an assessment)."""
    if assessment is None:
        return {"confidence": {}, "flags": {}}
    found = {name: label for name, label in assessment.labels.items() if label.found}
    return {
        "confidence": {name: round(label.confidence, 3) for name, label in found.items()},
        "flags": {name: [flag.code for flag in label.flags] for name, label in found.items()},
    }


def _best_prediction_tokens(matches: list[dict]) -> dict:
    out: dict[str, float] = {}
    for match in matches:
        for name, value in match["scores"].items():
            out[name] = max(out.get(name, 0.0), float(value))
    return {name: round(v, 4) for name, v in out.items()}


def format_table(result: dict) -> str:
    """Markdown table: one row per variant, one column per label (Dice), the mean, and agreement."""
    labels = [n for n in result["labels"] if any(n in row["dice"] for row in result["variants"])]
    head = "| variant | " + " | ".join(labels) + " | mean |"
    lines = [head, "|" + "---|" * (len(labels) + 2)]

    def cell(value):
        return "-" if value is None else f"{value:.3f}"

    for row in result["variants"]:
        lines.append(
            f"| {row['variant']} | "
            + " | ".join(cell(row["dice"].get(n)) for n in labels)
            + f" | {cell(row['mean_dice'])} |"
        )
        if "agreement_with_plain" in row and row["variant"] == "oblique":  # all variants' agreement: in the JSON
            agree = row["agreement_with_plain"]
            lines.append(
                f"| {row['variant']}: agreement with plain | " + " | ".join(cell(agree.get(n)) for n in labels) + " | |"
            )
    tokens = result.get("best_token") or {}
    if tokens.get("reference"):
        lines.append(
            "| best-token soft Dice (vs reference) | "
            + " | ".join(cell(tokens["reference"].get(n, {}).get("soft_dice")) for n in labels)
            + " | |"
        )
    if tokens.get("prediction"):
        lines.append(
            "| best-token soft Dice (vs prediction) | "
            + " | ".join(cell(tokens["prediction"].get(n)) for n in labels)
            + " | |"
        )
    return "\n".join(lines)


def evaluation_entries(datalist: str | Path, patient: str) -> list[dict]:
    """The ``evaluation`` entries of a datalist for one patient (paths made absolute, name tables read).

    Raises:
        InputError: a file that is not a datalist, or an entry without its image, label or a valid name table.
    """
    from .json_files import read_json_file
    from .training.label_tables import named_table

    path = Path(datalist)
    hint = 'entries like {"patient": "A", "image": "ct.nii.gz", "label": "ref.nii.gz", "labels": {"1": "liver"}}'
    data = read_json_file(path, f"the datalist {path}")
    if not isinstance(data, dict):
        raise InputError(f"the datalist {path} is not a JSON object", hint)
    if not isinstance(data.get("evaluation", []), list):
        raise InputError(f"the datalist {path}: 'evaluation' must be a list", hint)
    if not isinstance(data.get("dataroot", "."), str):
        raise InputError(f"the datalist {path}: 'dataroot' is not a path", hint)
    root = (path.parent / data.get("dataroot", ".")).resolve()
    entries = [
        (index, e)
        for index, e in enumerate(data.get("evaluation") or [])
        if isinstance(e, dict) and str(e.get("patient")) == str(patient)
    ]
    if not entries:
        raise InputError(f"the datalist {path} has no 'evaluation' entry for patient {patient}")
    out = []
    for index, entry in entries:
        where = f"{path.name}: evaluation[{index}]"
        if isinstance(entry.get("image"), list) and len(entry["image"]) != 1:
            raise InputError(
                f"{where}: 'image' lists {len(entry['image'])} files; robustness changes one scan",
                "give each entry one image path (a one-channel CT model's input)",
            )
        if isinstance(entry.get("image"), list):
            entry = {**entry, "image": entry["image"][0]}
        if not all(isinstance(entry.get(key), str) and entry[key] for key in ("image", "label")):
            raise InputError(f"{where} needs 'image' and 'label' paths", hint)
        try:
            names = named_table(entry.get("labels", data.get("labels")))
        except (KeyError, ValueError, AttributeError, TypeError):
            raise InputError(
                f"{where}: 'labels' must be a {{value: name}} table or a known table's name", hint
            ) from None
        out.append(
            {
                "name": entry.get("name", patient),
                "image": str((root / entry["image"]).resolve()),
                "label": str((root / entry["label"]).resolve()),
                "names": names,
            }
        )
    return out


def _announce(name: str):
    def progress(stage: str, fraction: float) -> None:
        if stage != "done":
            print(f"{name}: {stage}", file=sys.stderr)

    return progress


CT_ONLY_VARIANTS = {"noise": f"the noise variant adds Gaussian noise of {NOISE_HU:g} HU, a CT's unit"}
"""Variants whose change is stated in a CT's Hounsfield units: meaningless for an MR model's arbitrary intensities.
The others (slabs, grids, slice thickness, a scan starting mid-liver) change geometry or anatomy, for any modality."""


def variants_for(asked, modality: str, model: str) -> tuple[list[str], list[str]]:
    """The variants to run for a model of ``modality`` (``asked``: the user's ``--variants``, None for all) and a note
    on each left out (those in HU, for a model that does not take CT).

    Raises:
        InputError: a name that is no variant, or a variant asked for by name that the model's modality cannot take.
    """
    if isinstance(asked, str):  # one name, not its letters
        asked = [asked]
    for name in asked or ():
        if name not in ALL_VARIANTS:
            raise InputError(f"{str(name)[:40]!r} is no robustness variant", f"choose from {', '.join(ALL_VARIANTS)}")
    wanted = list(ALL_VARIANTS) if asked is None else list(asked)
    if not modality or modality.upper() == "CT":
        return wanted, []
    kept, notes = [], []
    for name in wanted:
        if name not in CT_ONLY_VARIANTS:
            kept.append(name)
        elif asked is not None:
            raise InputError(
                f"{CT_ONLY_VARIANTS[name]}; model '{model}' takes {modality}", f"leave {name} out of --variants"
            )
        else:
            notes.append(f"{CT_ONLY_VARIANTS[name]}; model '{model}' takes {modality}: left out")
    return kept, notes


def check_one_channel(inputs, model: str, given: str) -> None:
    """Refuse a model of several input channels (four MRI sequences): the variants change one scan.

    Raises:
        InputError: naming the model's channels.
    """
    if len(inputs) != 1:
        raise InputError(
            f"robustness changes one scan{given}; model '{model}' takes {len(inputs)} input "
            f"channels ({', '.join(channel.name for channel in inputs)})",
            "measure a one-channel model",
        )


RESULTS_FORMAT = "tokenunet-robustness"
RESULTS_VERSION = 2
"""Version 2: ``{"format", "version", "results": [one result per case]}``. Version 1 (unmarked) wrote one case's
result object for one case and a bare list of them for several."""


def robustness_document(results: list[dict]) -> dict:
    """The content of ``robustness.json``: one versioned object holding one result per case."""
    return {"format": RESULTS_FORMAT, "version": RESULTS_VERSION, "results": list(results)}


RESULT_SCHEMA = {
    "type": "object",
    "required": ["variants"],
    "properties": {
        "case": {"type": "string"},
        "labels": {"type": "array", "items": {"type": "string"}},
        "variants": {"type": "array", "minItems": 1, "items": {"$ref": "#/definitions/variant"}},
    },
    "definitions": {
        "variant": {
            "type": "object",
            "required": ["variant", "dice"],
            "properties": {
                "variant": {"type": "string"},
                "dice": {"type": "object", "additionalProperties": {"type": "number"}},
                "confidence": {"type": ["object", "null"], "additionalProperties": {"type": "number"}},
                "flags": {
                    "type": ["object", "null"],
                    "additionalProperties": {"type": "array", "items": {"type": "string"}},
                },
            },
        }
    },
}
"""What a case's result holds that its readers use (the calibration, the model card's tables), in every version."""


def read_results(path: str | Path) -> list[dict]:
    """The per-case results of a ``robustness.json`` of any version: the versioned object, or (files written before
    it) one case's result object or a list of them.

    Raises:
        InputError: a file that is none of these, one of no case, one whose variants are malformed (checked against
            :data:`RESULT_SCHEMA`), or one written by a newer version.
    """
    from .json_files import read_json_file

    path = Path(path)
    data = read_json_file(path, f"the robustness result {path}")
    hint = "give a robustness.json written by tokenunet robustness"

    def is_result(item) -> bool:
        return isinstance(item, dict) and isinstance(item.get("variants"), list)

    if isinstance(data, dict) and "format" in data:
        if data["format"] != RESULTS_FORMAT:
            raise InputError(f"{path} is no robustness result (format {str(data['format'])[:40]!r})", hint)
        version = data.get("version")
        if isinstance(version, int) and version > RESULTS_VERSION:
            raise InputError(
                f"{path} was written by a newer TokenUNet (robustness.json version {version}; this one reads up "
                f"to {RESULTS_VERSION})",
                "update the extension",
            )
        results = data.get("results")
        if version == RESULTS_VERSION and isinstance(results, list) and all(is_result(r) for r in results):
            if not results:
                raise InputError(f"{path} holds no case (its results are empty)", hint)
            return _checked_results(results, path, hint, "$.results")
    elif is_result(data):
        return _checked_results([data], path, hint, None)
    elif data == []:
        raise InputError(f"{path} holds no case (an empty list)", hint)
    elif isinstance(data, list) and all(is_result(r) for r in data):
        return _checked_results(data, path, hint, "$")
    raise InputError(f"{path} is no robustness result", hint)


def _checked_results(results: list[dict], path: Path, hint: str, where: str | None) -> list[dict]:
    """``results`` of the file ``path``, refused in one line when one is malformed; ``where``: the JSON path of the
    list that holds them in the file (None: the file is one case's result)."""
    from .jsonschema_lite import validation_errors

    for index, result in enumerate(results):
        problems = validation_errors(result, RESULT_SCHEMA, path="$" if where is None else f"{where}[{index}]")
        if problems:  # the first: the one line has room for one JSON path
            raise InputError(f"{path} is malformed at {problems[0]}", hint)
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", "-m", type=text("a model id or package path"), required=True, help="model id or package path"
    )
    parser.add_argument("--image", type=user_path, help="the scan (a CT for a CT model) to change and segment")
    parser.add_argument("--reference", type=user_path, help="its reference label map")
    parser.add_argument(
        "--reference-names", type=user_path, help='JSON name table of the reference {"1": "liver", ...}'
    )
    parser.add_argument(
        "--datalist", type=user_path, help="a datalist with 'evaluation' entries (instead of --image/--reference)"
    )
    parser.add_argument("--patient", help="with --datalist: the patient to measure")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=ALL_VARIANTS,
        help="the changes to measure (default: all; noise, in HU, only for a CT model)",
    )
    parser.add_argument("--no-tokens", action="store_true", help="skip the best-token soft Dice")
    parser.add_argument(
        "--tta", action="store_true", help="segment every variant with test-time augmentation (segment's --tta)"
    )
    parser.add_argument(
        "--device", type=device_name, default="auto", help="auto (the default), cpu, cuda, cuda:N or mps"
    )
    parser.add_argument("--out", "-o", required=True, help="folder for robustness.json and robustness.md")


def run_robustness(args: argparse.Namespace) -> int:
    from .output_folder import OutputFolder, earlier_result

    others = [option for option, value in (("--image", args.image), ("--reference", args.reference)) if value]
    if args.datalist and others:
        raise InputError(f"--datalist and {' and '.join(others)} contradict", "give --datalist or --image/--reference")
    if args.patient and not args.datalist:
        raise InputError("--patient applies only with --datalist", "drop --patient, or add --datalist")
    written_before_manifests = earlier_result(OUTPUT_FILES)
    folder = OutputFolder(args.out, "robustness", reserved=OUTPUT_FILES, legacy_files=written_before_manifests)
    folder.open()  # checked and locked before anything is computed
    with folder:
        folder.check_space(OUTPUT_BYTES)
        return _run(args, folder, _cases(args))


OUTPUT_FILES = ("robustness.json", "robustness.md")
OUTPUT_BYTES = 1 << 20
"""Room checked for the result before any variant runs (a case's JSON and table take 10-30 KB)."""


def _cases(args: argparse.Namespace) -> list[dict]:
    from .evaluate import name_table

    if args.datalist:
        if not args.patient:
            raise InputError("--datalist needs --patient")
        cases = evaluation_entries(args.datalist, args.patient)
    elif args.image and args.reference:
        names = name_table(args.reference, args.reference_names)
        if names is None:
            raise InputError(
                "the reference has no name table", 'pass --reference-names TABLE.json ({"1": "liver", ...})'
            )
        cases = [
            {"name": Path(args.image).name.split(".")[0], "image": args.image, "label": args.reference, "names": names}
        ]
    else:
        raise InputError("give --image and --reference, or --datalist and --patient")
    return cases


def _run(args: argparse.Namespace, folder, cases: list[dict]) -> int:
    from .catalog import ModelStore
    from .channel_stack import refuse_stacked
    from .package_loader import load_package
    from .package_source import read_metadata
    from .training.datasets import check_datalist_file_modality
    from .volumes import open_volume, read_volume

    path = ModelStore(getattr(args, "catalog", None)).resolve(args.model)
    metadata = read_metadata(path)  # the configuration, before the weights are loaded
    inputs = metadata.config.inputs
    check_one_channel(inputs, metadata.id, " (--image)")
    if args.datalist:  # what it says its images are, against the model, before the weights or a case are read
        check_datalist_file_modality(Path(args.datalist), metadata.config)
    for case in cases:  # a 4D image holds no one scan: refused from its header, in segment's words
        refuse_stacked(open_volume(case["image"]), Path(case["image"]).name, inputs, metadata.id)
    _, left_out = variants_for(args.variants, inputs[0].modality, metadata.id)  # before the weights load
    for note in left_out:
        print(f"note: {note}", file=sys.stderr)
    package = load_package(path)
    out = folder.staging
    results = []
    for case in cases:
        result = evaluate_robustness(
            package,
            read_volume(case["image"]),
            read_volume(case["label"], purpose="evaluating"),
            case["names"],
            args.variants,  # chosen for the model as above; the result says which were left out
            args.device,
            not args.no_tokens,
            progress=_announce(case["name"]),
            test_time_augmentation=args.tta,
        )
        for note in result.get("left_out", []):  # those of this case's reference (the model's were said above)
            if note not in left_out:
                print(f"note: {case['name']}: {note}", file=sys.stderr)
        result["case"] = case["name"]
        result["image"] = case["image"]
        results.append(result)
    tables = "\n\n".join(
        f"### {r['case']} ({r['model']}{', test-time augmentation' if r.get('test_time_augmentation') else ''})"
        f"\n\n{format_table(r)}\n\nConfidence against Dice: " + format_summary(r["calibration"])
        for r in results
    )
    with folder.writing():
        (out / "robustness.json").write_text(json.dumps(robustness_document(results), indent=2), encoding="utf-8")
        (out / "robustness.md").write_text(tables + "\n", encoding="utf-8")
    destination = folder.commit()
    print(tables)
    print(f"wrote {destination / 'robustness.json'} and {destination / 'robustness.md'}", file=sys.stderr)
    return 0
