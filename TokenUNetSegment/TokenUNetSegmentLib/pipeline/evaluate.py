"""``evaluate``: per-label Dice (MONAI), HD95 (MONAI's definition, :mod:`.surface_distance`) and volume difference of
a segmentation against a reference, labels matched by name.

Name tables come with the files: a ``.seg.nrrd`` carries its segment names; for other label maps pass a
JSON table ``{"1": "spleen", ...}`` (or put it next to the file as ``<file stem>.json``). A model package
(``--model``) run on ``--image`` can stand in for the prediction.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from pathlib import Path

import numpy as np

from .arguments import channel_names, device_name, text, user_path
from .errors import InputError
from .surface_distance import label_hd95


def _key(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


COUNT_VOXELS = 1 << 22
"""Voxels per slab of :func:`joint_counts`: its temporaries stay a few tens of MB whatever the maps' size."""
TABLE_CELLS = 1 << 16
"""Up to this many (reference, prediction) value pairs, :func:`pair_counts` counts them all in one table (fastest);
beyond, each value and each compared pair apart (thousands of labels: a table of every pair would grow as their
square)."""
LOOKUP_RANGE = 1 << 20
"""Maps whose values span at most this many are indexed through a lookup table; others by a sorted search."""


def _value_indices(chunk: np.ndarray, values: np.ndarray, lookup: tuple[int, np.ndarray] | None) -> np.ndarray:
    """The position of each voxel's value in ``values`` (sorted), or ``len(values)`` for any other value."""
    if lookup is not None:
        low, table = lookup
        return table[chunk.astype(np.intp, copy=False) - low if low else chunk]
    if not len(values):
        return np.zeros(chunk.shape, np.intp)
    position = np.minimum(np.searchsorted(values, chunk), len(values) - 1)
    return np.where(values[position] == chunk, position, len(values))


def _lookup(array: np.ndarray, values: np.ndarray) -> tuple[int, np.ndarray] | None:
    """A table from value (less its lowest) to its position in ``values``, for integer maps of a narrow range."""
    if array.size == 0 or array.dtype.kind not in "iub":
        return None
    low, high = int(array.min()), int(array.max())
    if high - low >= LOOKUP_RANGE or not -(2**62) < low <= high < 2**62:  # wide, or past what intp holds
        return None
    table = np.full(high - low + 1, len(values), np.intp)
    for position, value in enumerate(values.tolist()):
        if low <= value <= high:
            table[value - low] = position
    return low, table


def pair_counts(predicted: np.ndarray, reference: np.ndarray, pairs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel counts of each (predicted value, reference value) pair, in one pass over both maps.

    Returns:
        three int64 arrays, one entry per pair: the voxels holding both values, those holding the predicted value,
        and those holding the reference value. Memory grows with the count of distinct values, not with its square
        (a table of every value pair for 3000 labels was 145 MB; for 65535, 34 GB).
    """
    pred_values = np.asarray(sorted({int(p) for p, _ in pairs}))
    ref_values = np.asarray(sorted({int(r) for _, r in pairs}))
    pred_of = np.searchsorted(pred_values, [int(p) for p, _ in pairs]).astype(np.intp)
    ref_of = np.searchsorted(ref_values, [int(r) for _, r in pairs]).astype(np.intp)
    partners: list[np.ndarray] = []  # per round: predicted index -> reference index it is paired with, or -1
    round_of = np.empty(len(pairs), np.intp)
    for k, (p, r) in enumerate(zip(pred_of.tolist(), ref_of.tolist(), strict=True)):
        free = next((n for n, partner in enumerate(partners) if partner[p] < 0), len(partners))
        if free == len(partners):  # a predicted value paired twice: another round (never, from match_labels)
            partners.append(np.full(len(pred_values) + 1, -1, np.intp))
        partners[free][p], round_of[k] = r, free
    predicted, reference = np.atleast_1d(predicted), np.atleast_1d(reference)
    if predicted.dtype == bool:
        predicted = predicted.view(np.uint8)
    if reference.dtype == bool:
        reference = reference.view(np.uint8)
    lookups = _lookup(predicted, pred_values), _lookup(reference, ref_values)
    width, height = len(pred_values) + 1, len(ref_values) + 1
    table = np.zeros(height * width if width * height <= TABLE_CELLS else 0, np.int64)  # few labels: one bincount
    pred_total, ref_total = np.zeros(width, np.int64), np.zeros(height, np.int64)
    both = np.zeros((len(partners), width), np.int64)
    rows = max(1, COUNT_VOXELS // max(1, int(np.prod(predicted.shape[1:]))))
    for start in range(0, predicted.shape[0], rows):  # slabs: ravel copies at most a slab of either layout
        p, r = predicted[start : start + rows].ravel(), reference[start : start + rows].ravel()
        if table.size:  # one temporary of indices at a time (and reused): the fastest way
            table += np.bincount(
                _value_indices(r, ref_values, lookups[1]) * width + _value_indices(p, pred_values, lookups[0]),
                minlength=table.size,
            )
            continue
        p, r = _value_indices(p, pred_values, lookups[0]), _value_indices(r, ref_values, lookups[1])
        pred_total += np.bincount(p, minlength=width)
        ref_total += np.bincount(r, minlength=height)
        for n, partner in enumerate(partners):
            both[n] += np.bincount(p[partner[p] == r], minlength=width)
    if table.size:
        table = table.reshape(height, width)
        return table[ref_of, pred_of], table.sum(0)[pred_of], table.sum(1)[ref_of]
    return both[round_of, pred_of], pred_total[pred_of], ref_total[ref_of]


def dice_from_counts(both: int, predicted: int, reference: int) -> float | None:
    """Dice of two masks from their voxel counts, with MONAI's ``compute_dice(include_background=True,
    ignore_empty=False)`` conventions and float32 arithmetic (the same value to the last bit wherever MONAI's
    float32 sums are exact, i.e. under 2**24 voxels): 0 when the reference is empty and the prediction is not,
    None when both are empty (not scored)."""
    if predicted + reference == 0:
        return None
    if reference == 0:
        return 0.0
    return float(np.float32(2.0) * np.float32(both) / (np.float32(reference) + np.float32(predicted)))


def label_metrics(
    predicted: np.ndarray, reference: np.ndarray, pairs, spacing, hd95: bool = True
) -> dict[str, dict[str, float | None]]:
    """Metrics per label for two label maps on the same grid.

    Args:
        predicted, reference: integer label maps (X, Y, Z) on the same grid.
        pairs: (predicted value, reference value, name) per label.
        spacing: voxel size in mm (for HD95 and volumes).
        hd95: also compute the 95th-percentile Hausdorff distance (mm).

    Returns:
        {name: {"dice", "hd95_mm", "volume_ml", "reference_ml", "volume_difference_ml",
        "volume_difference_percent"}}; Dice is None when the label is absent from both maps; HD95 is None
        when either mask is empty.

    Dice and volumes come from one count of the maps' value pairs (:func:`pair_counts`), not a pass per label
    (before: MONAI's ``compute_dice`` per label, 27 of the 38 s of ``evaluate`` for 12 labels on 52 M voxels).
    """
    if predicted.shape != reference.shape:
        raise InputError(f"prediction {predicted.shape} and reference {reference.shape} are on different grids")
    both, p_sums, r_sums = pair_counts(predicted, reference, [(p, r) for p, r, _ in pairs])
    voxel_ml = float(np.prod(spacing)) / 1000.0
    measured = [k for k, (p, r) in enumerate(zip(p_sums.tolist(), r_sums.tolist(), strict=True)) if hd95 and p and r]
    distances = dict(
        zip(measured, label_hd95(predicted, reference, [pairs[k] for k in measured], spacing), strict=True)
    )
    out = {}
    for k, ((_, _, name), in_both, p_sum, r_sum) in enumerate(
        zip(pairs, both.tolist(), p_sums.tolist(), r_sums.tolist(), strict=True)
    ):
        dice = dice_from_counts(in_both, p_sum, r_sum)
        distance = distances.get(k)
        volume, ref_volume = p_sum * voxel_ml, r_sum * voxel_ml
        out[name] = {
            "dice": dice,
            "hd95_mm": distance,
            "volume_ml": round(volume, 3),
            "reference_ml": round(ref_volume, 3),
            "volume_difference_ml": round(volume - ref_volume, 3),
            "volume_difference_percent": round(100 * (volume - ref_volume) / ref_volume, 2) if ref_volume else None,
        }
    return out


def name_table(path: str | Path, table: str | Path | dict | None = None) -> dict[int, str] | None:
    """Value -> name of a label file: from ``table`` (JSON file or dict), a .seg.nrrd header, or a sidecar
    ``<stem>.json``; None when there is none."""
    path = Path(path)
    if isinstance(table, dict):
        return _checked_table(table, "the name table")
    if table:
        from .json_files import read_json_file

        what = f"the name table {Path(table).name}"  # the file's name: the one line keeps what is wrong in it
        return _checked_table(read_json_file(table, what), what)
    if path.name.lower().endswith(".nrrd"):
        from .nrrd import read_nrrd_fields

        fields = read_nrrd_fields(path)
        names = {}
        for key, value in fields.items():
            match = re.fullmatch(r"Segment(\d+)_Name", key)
            if match and f"Segment{match.group(1)}_LabelValue" in fields:
                names[int(fields[f"Segment{match.group(1)}_LabelValue"])] = value
        if names:
            return names
    sidecar = _sidecar(path)
    if sidecar.is_file():
        return name_table(path, sidecar)
    return None


def _sidecar(path: Path) -> Path:
    """The name table beside a label file: ``<file stem>.json``."""
    name = path.name
    stem = name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem
    return path.with_name(stem + ".json")


def _refuse_output_at_a_name_table_place(args: argparse.Namespace, out: Path) -> None:
    """Refuse ``--json`` at the place of a label map's name table that is not there yet (``ref.json`` beside
    ``ref.nii.gz``): written there, the metrics would be read as its name table by every later run."""
    from .output_folder import expand_home, same_place
    from .samples import PREFIX

    for side, path in (("reference", args.reference), ("prediction", args.prediction)):
        if path and not str(path).startswith(PREFIX) and same_place(out, _sidecar(expand_home(path))):
            raise InputError(
                f"--json {out.name} is where the {side}'s name table is looked for ({Path(path).name}'s)",
                "write the metrics elsewhere",
            )


def _refuse_result_folders(*paths) -> None:
    """Refuse, pointing to its label map, the folder ``segment --out`` wrote given for a label map."""
    from .output_folder import expand_home, result_held

    for path in paths:
        if path and result_held(expand_home(path)) == "a segmentation":
            shown = str(path).rstrip("/")
            raise InputError(f"{shown} is the folder of a segmentation", f"give {shown}/segmentation.seg.nrrd")


def _refuse_output_over_an_input(args: argparse.Namespace) -> None:
    """``--json`` may not name a file this evaluation reads (``--overwrite`` or not): the label maps, their name
    tables (given or beside them) and the images."""
    from .output_folder import expand_home, refuse_output_over_inputs
    from .samples import PREFIX

    out = expand_home(args.json_out)  # as it is written: a tilde the shell left is the home folder
    if not out.exists():
        _refuse_output_at_a_name_table_place(args, out)
    inputs = []
    for side, path, table in (
        ("reference", args.reference, args.reference_names),
        ("prediction", args.prediction, args.prediction_names),
    ):
        if path and not str(path).startswith(PREFIX):
            inputs.append((f"the {side}", Path(path)))
            inputs.append((f"the {side}'s name table", Path(table) if table else _sidecar(Path(path))))
        elif table:
            inputs.append((f"the {side}'s name table", Path(table)))
    inputs += [("an --image", Path(image)) for image in args.image or ()]
    refuse_output_over_inputs(args.json_out, "--json", inputs, "this evaluation reads", "write the metrics elsewhere")


def _checked_table(data, what: str) -> dict[int, str]:
    """A name table ``{"1": "spleen", ...}`` as {value: name}; :class:`InputError` naming the first bad entry."""
    hint = 'a name table maps label values to names: {"1": "spleen", "2": "liver"}'
    if not isinstance(data, dict) or not data:
        raise InputError(f"{what} is not a mapping of label values to names", hint)
    table = {}
    for key, name in data.items():
        try:
            value = int(str(key).strip())
        except ValueError:
            raise InputError(f"{what} has a key that is not a label value: {str(key)[:40]!r}", hint) from None
        if not 0 <= value < 2**31 or not isinstance(name, str) or not name.strip():
            raise InputError(f"{what} has an invalid entry {str(key)[:20]!r}: {str(name)[:40]!r}", hint)
        table[value] = name
    return table


def check_distinct_names(table: dict[int, str], whose: str) -> None:
    """Refuse a name table that names two label values alike (labels are matched by name: one of them would be
    scored against the other side's label of that name).

    Raises:
        InputError: naming both values and their names.
    """
    seen: dict[str, int] = {}
    for value, name in sorted(table.items()):
        first = seen.setdefault(_key(name), value)
        if first != value:
            raise InputError(
                f"{whose} name table names label values {first} and {value} alike ({table[first]!r}, {name!r})",
                "labels are matched by name: give each label value its own name",
            )


def match_labels(predicted: dict[int, str], reference: dict[int, str]) -> tuple[list[tuple[int, int, str]], dict]:
    """Pairs (predicted value, reference value, name) of labels with the same name (case, spaces and dashes
    ignored), and the names found on one side only."""
    ref_by_key = {_key(n): (v, n) for v, n in reference.items()}
    pairs, only_predicted = [], []
    for value, name in sorted(predicted.items()):
        if _key(name) in ref_by_key:
            pairs.append((value, ref_by_key[_key(name)][0], name))
        else:
            only_predicted.append(name)
    matched = {_key(n) for _, _, n in pairs}
    only_reference = [n for v, n in sorted(reference.items()) if _key(n) not in matched]
    return pairs, {"prediction_only": only_predicted, "reference_only": only_reference}


def evaluate_files(
    prediction,
    reference: str | Path,
    prediction_names=None,
    reference_names=None,
    hd95: bool = True,
) -> dict:
    """Compare a prediction (file path, or (Volume, names) from a model run) with a reference file.

    The prediction is resampled (nearest neighbour) onto the reference grid when the grids differ.
    """
    from .geometry import overlaps, resample
    from .label_values import check_label_values
    from .samples import PREFIX, sample
    from .volumes import Volume, read_volume

    if isinstance(reference, str) and reference.startswith(PREFIX):  # a bundled sample's reference labels
        reference_names = reference_names or sample(reference).names
        reference = sample(reference).labels

    if isinstance(prediction, tuple):
        pred_volume, pred_names = prediction
    else:
        pred_volume = read_volume(prediction, purpose="evaluating")
        pred_names = name_table(prediction, prediction_names)
    ref_volume = read_volume(reference, purpose="evaluating")
    ref_names = name_table(reference, reference_names)
    for volume in (pred_volume, ref_volume):  # before any rounding or resampling: a soft map is no label map
        check_label_values(volume.array, Path(volume.name).name)
    if pred_names is None and ref_names is None:  # labels are values: the reference's, and the prediction's own
        values = sorted(set(np.unique(ref_volume.array).astype(int)) - {0})
        ref_names = {v: f"label {v}" for v in values}
        extra = sorted(set(np.unique(pred_volume.array).astype(int)) - {0} - set(values))
        pred_names = {**ref_names, **{v: f"label {v}" for v in extra}}  # listed as found only in the prediction
    if pred_names is None or ref_names is None:
        side = "prediction" if pred_names is None else "reference"
        raise InputError(
            f"the {side} has no name table, so its labels cannot be matched by name",
            f'pass --{side}-names TABLE.json ({{"1": "spleen", ...}}) or use a .seg.nrrd',
        )
    check_distinct_names(pred_names, "the prediction's")
    check_distinct_names(ref_names, "the reference's")
    pairs, unmatched = match_labels(pred_names, ref_names)
    if not pairs:
        raise InputError("no label names in common between the prediction and the reference")
    ref_grid = ref_volume.grid
    if not (overlaps(ref_grid, pred_volume.grid) and overlaps(pred_volume.grid, ref_grid)):
        raise InputError(
            f"the prediction ({pred_volume.name}) does not overlap the reference ({ref_volume.name}) in physical space",
            "check that both belong to the same scan, with their geometry (origin, spacing, orientation) kept",
        )
    pred = np.asarray(pred_volume.array)
    ref = np.rint(np.asarray(ref_volume.array)).astype(np.int32)
    checks = []
    if isinstance(pred_volume, Volume) and (
        pred.shape != ref_grid.shape or not np.allclose(pred_volume.affine, ref_grid.affine, atol=1e-4)
    ):
        pred = resample(pred.astype(np.uint16), pred_volume.grid, ref_grid, "nearest", 0, np.uint16)
        checks += _outside_the_prediction(ref, [value for _, value, _ in pairs], pred_volume, ref_grid)
    metrics = label_metrics(np.rint(pred).astype(np.int32), ref, pairs, ref_grid.spacing, hd95)
    dices = [m["dice"] for m in metrics.values() if m["dice"] is not None]
    hds = [m["hd95_mm"] for m in metrics.values() if m["hd95_mm"] is not None]
    # a label in one map only (missed, or found where the reference has none) has no HD95 (MONAI: nan or inf): the
    # mean HD95 leaves it out, and the result says which labels the mean covers
    covered = [name for name, m in metrics.items() if m["hd95_mm"] is not None]
    uncovered = [name for name, m in metrics.items() if hd95 and m["dice"] is not None and m["hd95_mm"] is None]
    if not np.isin(ref, [value for _, value, _ in pairs]).any():  # scored (a negative case is real), but said
        shown = ", ".join(list(metrics)[:6]) + (", ..." if len(metrics) > 6 else "")
        checks.append(
            f"the reference {Path(ref_volume.name).name} holds none of the labels compared ({shown}): every label "
            "found scores Dice 0 (an empty label map, or one of another scan?)"
        )
    return {
        "reference": str(reference),
        "labels": metrics,
        "mean_dice": float(np.mean(dices)) if dices else None,
        "mean_hd95_mm": float(np.mean(hds)) if hds else None,
        "mean_hd95_labels": covered,
        "labels_without_hd95": uncovered,
        "unmatched": unmatched,
        "warnings": [*pred_volume.warnings, *ref_volume.warnings, *checks],
    }


def _outside_the_prediction(reference: np.ndarray, values: list[int], prediction, grid) -> list[str]:
    """A warning when reference labels lie outside the prediction's box (a slab's result against the whole scan):
    they count as missed, rightly, and the user should know why the Dice fell."""
    from .scan_summary import field_of_view

    labelled = np.isin(reference, values)
    outside = int(np.count_nonzero(labelled & ~field_of_view(prediction.grid, grid)))
    if not outside:
        return []
    share = 100 * outside / np.count_nonzero(labelled)
    shown = f"{share:.0f}%" if share >= 1 else "under 1%"  # some lie outside: never "0%"
    return [
        f"{shown} of the reference's labelled voxels lie outside {Path(prediction.name).name}'s box: they count "
        "as missed (a result of part of the scan?)"
    ]


EVALUATION_KEYS = ("reference", "labels", "mean_dice", "unmatched")
"""Keys every result of :func:`evaluate_files` has: an existing ``--json`` file with them is an earlier evaluation."""


def format_table(result: dict) -> str:
    """The metrics as a fixed-width text table."""
    labels = result["labels"]
    width = max([5, *(len(n) for n in labels)])
    lines = [f"{'label':<{width}}  {'Dice':>6}  {'HD95 mm':>8}  {'volume ml':>10}  {'reference ml':>12}  {'diff %':>7}"]

    def fmt(value, spec):
        return format(value, spec) if value is not None else "-"

    for name, m in labels.items():
        lines.append(
            f"{name:<{width}}  {fmt(m['dice'], '6.3f'):>6}  {fmt(m['hd95_mm'], '8.1f'):>8}  "
            f"{m['volume_ml']:>10.1f}  {m['reference_ml']:>12.1f}  {fmt(m['volume_difference_percent'], '7.1f'):>7}"
        )
    lines.append(f"{'mean':<{width}}  {fmt(result['mean_dice'], '6.3f'):>6}  {fmt(result['mean_hd95_mm'], '8.1f'):>8}")
    without = result.get("labels_without_hd95") or []
    if without:
        covered = len(result.get("mean_hd95_labels") or [])
        lines.append(
            f"mean HD95 over {covered} of {covered + len(without)} labels; no HD95 for {', '.join(without)} (in one "
            "map only: missed, or found where the reference has none)"
        )
    for side, names in result["unmatched"].items():
        if names:
            lines.append(f"unmatched ({side.replace('_', ' ')}): {', '.join(names)}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "reference", type=user_path, help="reference label map (.seg.nrrd, NIfTI, NRRD, MHA), or sample:ID"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prediction", "-p", type=user_path, help="predicted label map (e.g. segmentation.seg.nrrd)")
    source.add_argument(
        "--model", "-m", type=text("a model id or package path"), help="run this model (id or package path) on --image"
    )
    parser.add_argument("--image", nargs="+", type=user_path, help="input volume(s) for --model")
    parser.add_argument(
        "--channels",
        type=channel_names,
        help="with --model and one 4D --image (NIfTI, NRRD, MetaImage): what each of its volumes holds, in order "
        "(as segment's)",
    )
    parser.add_argument(
        "--reference-names", type=user_path, help='JSON name table of the reference {"1": "spleen", ...}'
    )
    parser.add_argument("--prediction-names", type=user_path, help="JSON name table of the prediction")
    parser.add_argument(
        "--no-hd95",
        action="store_true",
        help="skip the Hausdorff distance (faster). A label in one map only (missed, or found where the reference has "
        "none) has no HD95 ('-', null; MONAI gives nan or inf) and is left out of the mean HD95; the table and the "
        "JSON (mean_hd95_labels, labels_without_hd95) say which labels the mean covers",
    )
    parser.add_argument("--device", type=device_name, help="with --model: auto (the default), cpu, cuda, cuda:N or mps")
    parser.add_argument("--json", dest="json_out", help="write the metrics to this JSON file")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --json file that is no earlier evaluation"
    )


def run_evaluate(args: argparse.Namespace) -> int:
    import time

    from .output_folder import check_file_destination, json_with_keys, resolve_destination, write_file_atomically

    if args.json_out:  # before any computation; an earlier evaluation there is replaced, any other file only if asked
        resolve_destination(args.json_out)  # a path no file system takes: refused before it is looked at
        _refuse_output_over_an_input(args)
        check_file_destination(args.json_out, args.overwrite or json_with_keys(*EVALUATION_KEYS))
    prediction = args.prediction
    timing, segment_warnings = None, []
    if args.prediction and (args.image or args.device or args.channels):
        only_model = (("--image", args.image), ("--device", args.device), ("--channels", args.channels))
        given = " and ".join(option for option, value in only_model if value)
        verb = "apply" if " and " in given else "applies"
        raise InputError(
            f"{given} {verb} only with --model", "drop it, or segment with --model instead of --prediction"
        )
    if args.model:
        if not args.image:
            raise InputError("--model needs --image (the volume(s) to segment)")
        from .catalog import ModelStore
        from .package_source import read_metadata
        from .run_inputs import RunNeeds, channel_items, open_run_inputs

        path = ModelStore(getattr(args, "catalog", None)).resolve(args.model)
        metadata = read_metadata(path)  # the configuration, without the weights
        items, shown = channel_items(args.image, metadata.config, metadata.id, args.channels, "--channels")
        # from the headers, before the weights are loaded; segment() reads them as opened (no header read again)
        opened = open_run_inputs(items, metadata.config, metadata.id, shown, RunNeeds(with_token_maps=False)).opened
        from .package_loader import load_package
        from .segmentation import segment
        from .volumes import Volume

        package = load_package(path)
        started = time.perf_counter()
        with warnings.catch_warnings():  # segment() warns API callers; here its warnings are printed once
            warnings.simplefilter("ignore", UserWarning)
            result = segment(opened, package, device=args.device or "auto", with_token_maps=False)
        timing = time.perf_counter() - started
        names = {label.value: label.name for label in result.label_table}
        segment_warnings = list(result.warnings)
        for message in segment_warnings:
            print(f"warning: {message}", file=sys.stderr)
        prediction = (Volume(result.labels, result.affine, "prediction"), names)
    _refuse_result_folders(args.reference, args.prediction)
    result = evaluate_files(prediction, args.reference, args.prediction_names, args.reference_names, not args.no_hd95)
    result["prediction"] = args.prediction or f"model {args.model} on {', '.join(args.image)}"
    result["warnings"] = [*segment_warnings, *result["warnings"]]
    if timing is not None:
        result["segment_seconds"] = round(timing, 2)
    if args.json_out:  # before the table: a closed stdout (``| head``) then loses only text
        written = write_file_atomically(args.json_out, json.dumps(result, indent=2))
    print(format_table(result))
    for message in result["warnings"][len(segment_warnings) :]:  # segment()'s: printed when they came
        print(f"warning: {message}", file=sys.stderr)
    if args.json_out:
        print(f"wrote {written}", file=sys.stderr)  # where it is: a '~' the shell left is the home folder
    return 0
