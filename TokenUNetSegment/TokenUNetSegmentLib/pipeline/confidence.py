"""How far to trust a result: a confidence in [0, 1] and flags per label, and flags about the scan as a whole.

Everything is computed after postprocessing, on the model grid, from what the run already has (no extra pass at
the input's resolution):

- per label (:func:`measure_labels`): the mean top softmax probability inside the organ, the share of its voxels
  whose top two probabilities are close, how much of what the network labelled lay outside the largest piece,
  and the share of its voxels on the edge of the scanned field of view;
- per scan (:mod:`.scan_summary`): the input's intensities, its voxel size and its extent;
- the package's ``training_statistics`` (:class:`.metadata.TrainingStatistics`), when it has them: organ
  volumes, input intensities, voxel sizes and fields of view seen in training.

The score (:func:`label_confidence`)::

    confidence = mean probability x (1 - low-margin share / 2) x product of the penalties of the flags raised

with the penalties ``fragmented``: 1 - (share outside the largest piece) / 2; ``cut_off``: 1 - min(1/4, share of
the organ on the edge); ``volume_small`` / ``volume_large``: 1/2; and per flag about the scan :data:`RUN_PENALTY`
(``not_ct`` 0.2, ``intensities_unlike_training`` 0.5, ...). Every factor lies in [0, 1], so the score does too;
it falls as the probability falls, as the low-margin share grows and with every flag raised (never rises). A label
not found has confidence 0. The weights were chosen so that the score ranks and roughly matches the Dice of the
bundled model on variants of its sample and on foreign scans (README, "How sure is the result?"): a cut-off or
fragmented organ is often right where it was found, so those flags lower the score only a little. Flags are
short codes with a plain-language message (:data:`LABEL_FLAGS`, :data:`RUN_FLAGS`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .geometry import Grid
from .metadata import TrainingStatistics
from .scan_summary import IntensitySummary

MEASURE_CHUNK = 1 << 20  # labelled voxels per pass of measure_labels
LOW_MARGIN = 0.3  # a voxel whose top two probabilities differ by less than this is "low margin"
LOW_PROBABILITY = 0.7  # mean probability below which a label is flagged
AMBIGUOUS_SHARE = 0.5  # low-margin share above which a label is flagged
FRAGMENTED_SHARE = 0.2  # share of a label outside its largest piece above which it is flagged
FRAGMENT_WEIGHT = 0.5  # fragmented penalty: 1 - FRAGMENT_WEIGHT x share outside the largest piece
VOLUME_FACTOR = 2.0  # volumes within [min / factor, max x factor] of the training range pass
MAX_EDGE_PENALTY = 0.25  # cut-off penalty: 1 - min(MAX_EDGE_PENALTY, share of the organ on the edge)
NOT_HU_MINIMUM = -50.0  # a CT in HU has air (-1000), lung or fat (-150 to -50) below this, even cropped inside the
# body (-200 missed fat: a CT cropped around the liver was "not a CT"); an MRI or an unrescaled CT has not
SPREAD_FACTOR = 4.0  # body intensities whose 5-95 % spread is this many times training's (or 1/this) are flagged
SPACING_FACTOR = 1.25  # voxels coarser than the coarsest training scan by more than this are flagged
ANATOMY_FACTOR = 4.0  # labelled share of the field of view below training's minimum / this is flagged
SURE = 0.5  # a scan where no label reaches this confidence (before the scan's own flags) is flagged

# label flag code -> the factor it puts on the label's confidence (None: depends on the measures, see _penalty)
LABEL_PENALTY = {
    "low_probability": 1.0,  # already in the mean probability
    "ambiguous": 1.0,  # already in the low-margin share
    "fragmented": None,  # see FRAGMENT_WEIGHT
    "cut_off": None,  # see MAX_EDGE_PENALTY
    "volume_small": 0.5,
    "volume_large": 0.5,
}
# scan flag code -> the factor it puts on every label's confidence
RUN_PENALTY = {
    "not_ct": 0.2,
    "intensities_unlike_training": 0.5,
    "spacing_unlike_training": 0.8,
    "field_of_view_small": 0.7,
    "no_known_anatomy": 0.5,
    "no_organ_found": 1.0,
}
LABEL_FLAGS = ("not_found", *LABEL_PENALTY)
RUN_FLAGS = tuple(RUN_PENALTY)


@dataclass(frozen=True)
class Flag:
    """A machine-readable code and what it means, in plain language."""

    code: str
    message: str

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}

    @classmethod
    def from_dict(cls, entry: Mapping) -> Flag:
        return cls(str(entry["code"]), str(entry.get("message", "")))


@dataclass(frozen=True)
class LabelAssessment:
    """One label's confidence in [0, 1], its flags and the measures they came from."""

    confidence: float
    flags: tuple[Flag, ...] = ()
    measures: Mapping[str, float] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return not any(flag.code == "not_found" for flag in self.flags)


@dataclass(frozen=True)
class Assessment:
    """A run's judgement of its own result: per label name a :class:`LabelAssessment`, flags about the whole
    scan (run-level) and a one-line summary."""

    labels: Mapping[str, LabelAssessment]
    flags: tuple[Flag, ...] = ()
    summary: str = ""
    scan: Mapping = field(default_factory=dict)  # the scan's measures (intensities, spacing, extent)

    @property
    def found(self) -> list[str]:
        return [name for name, label in self.labels.items() if label.found]

    @property
    def flagged(self) -> list[str]:
        """Names of the labels found with at least one flag."""
        return [name for name, label in self.labels.items() if label.found and label.flags]

    def label_entry(self, name: str) -> dict:
        """The report fields of one label: confidence, flags, measures."""
        label = self.labels.get(name)
        if label is None:
            return {}
        return {
            "confidence": label.confidence,
            "flags": [flag.to_dict() for flag in label.flags],
            "measures": dict(label.measures),
        }

    @classmethod
    def from_report(cls, report: Mapping) -> Assessment | None:
        """The assessment held by a ``report.json`` (None when the report has none: an older run)."""
        if "flags" not in report or not any("confidence" in entry for entry in report.get("labels", [])):
            return None
        labels = {
            entry["name"]: LabelAssessment(
                float(entry["confidence"]),
                tuple(Flag.from_dict(f) for f in entry.get("flags", [])),
                dict(entry.get("measures", {})),
            )
            for entry in report["labels"]
            if "confidence" in entry
        }
        flags = tuple(Flag.from_dict(f) for f in report.get("flags", []))
        return cls(labels, flags, str(report.get("summary", "")), dict(report.get("scan", {})))


# -- measures on the model grid ------------------------------------------------------------------------------
def measure_labels(
    labels: np.ndarray,
    certainty: np.ndarray,
    margin: np.ndarray,
    edge: np.ndarray,
    pieces: Mapping[int, tuple[int, float]],
    values: Sequence[int],
    voxel_ml: float,
) -> dict[int, dict[str, float]]:
    """Per label value, its measures on the model grid (arrays with one value per labelled voxel, same order).

    Args:
        labels: the label of each labelled voxel after postprocessing.
        certainty: the probability of its label (softmax: the top probability).
        margin: how far that probability lies above the runner-up (softmax: top minus second).
        edge: whether it lies on the edge layer of the scanned field of view.
        pieces: per label value, (number of 26-connected pieces, share outside the largest) before postprocessing
            kept only the largest.
    """
    size = max(max(values, default=0), int(labels.max()) if labels.size else 0) + 1
    counts, low, on_edge = (np.zeros(size, np.int64) for _ in range(3))
    certain = np.zeros(size)
    # in chunks: ``np.bincount`` makes 64-bit copies of its input and weights, 100 MB each for the 12 M labelled
    # voxels of a 512 x 512 x 300 CT, whose fresh pages cost more than the counting (0.74 s against 0.2 s)
    for start in range(0, labels.size, MEASURE_CHUNK):
        part = slice(start, start + MEASURE_CHUNK)
        index = labels[part].astype(np.intp)
        counts += np.bincount(index, minlength=size)
        certain += np.bincount(index, weights=certainty[part], minlength=size)
        low += np.bincount(index[margin[part] < LOW_MARGIN], minlength=size)
        on_edge += np.bincount(index[edge[part]], minlength=size)
    out = {}
    for value in values:
        count = int(counts[value])
        number, outside = pieces.get(value, (0, 0.0))
        out[value] = {
            "voxels": count,
            "volume_ml": round(count * voxel_ml, 3),
            "mean_probability": round(float(certain[value] / count), 4) if count else 0.0,
            "low_margin_share": round(float(low[value] / count), 4) if count else 0.0,
            "pieces": int(number),
            "outside_largest_share": round(float(outside), 4),
            "edge_share": round(float(on_edge[value] / count), 4) if count else 0.0,
        }
    return out


# -- flags and scores ----------------------------------------------------------------------------------------
def label_flags(name: str, measures: Mapping[str, float], statistics: TrainingStatistics | None) -> list[Flag]:
    """The flags of one label from its measures and, for volumes, the training statistics."""
    if not measures.get("voxels"):
        return [Flag("not_found", "not found in this scan")]
    flags = []
    probability, low = measures["mean_probability"], measures["low_margin_share"]
    if probability < LOW_PROBABILITY:
        flags.append(Flag("low_probability", f"the model is unsure (mean probability {probability:.2f})"))
    if low > AMBIGUOUS_SHARE:
        flags.append(Flag("ambiguous", f"{100 * low:.0f} % of its voxels are close to a tie with another label"))
    outside = measures.get("outside_largest_share", 0.0)
    if outside > FRAGMENTED_SHARE:
        flags.append(
            Flag(
                "fragmented",
                f"found in {int(measures.get('pieces', 0))} pieces, {100 * outside:.0f} % of it outside the largest",
            )
        )
    cut = measures.get("edge_share", 0.0) > 0
    if cut:
        flags.append(Flag("cut_off", "touches the edge of the scan; part of it may lie outside the image"))
    flags += _volume_flags(name, measures["volume_ml"], cut, statistics)
    return flags


def _volume_flags(name: str, volume: float, cut: bool, statistics: TrainingStatistics | None) -> list[Flag]:
    seen = statistics.labels.get(name) if statistics is not None else None
    if seen is None or seen.volume_ml is None:
        return []
    complete = seen.volume_ml_complete or seen.volume_ml
    low, high = complete.min / VOLUME_FACTOR, max(seen.volume_ml.max, complete.max) * VOLUME_FACTOR
    if volume > high:
        return [
            Flag(
                "volume_large",
                f"{volume:.0f} mL, more than training's largest ({seen.volume_ml.max:.0f} mL) x {VOLUME_FACTOR:g}",
            )
        ]
    if volume < low and not cut:  # a cut-off organ may be any size
        return [
            Flag(
                "volume_small",
                f"{volume:.1f} mL, less than training's smallest complete one ({complete.min:.1f} mL) / "
                f"{VOLUME_FACTOR:g}",
            )
        ]
    return []


def label_confidence(measures: Mapping[str, float], flags: Sequence[Flag], run_flags: Sequence[Flag]) -> float:
    """The score of the module docstring: in [0, 1], 0 for a label not found."""
    if not measures.get("voxels"):
        return 0.0
    score = measures["mean_probability"] * (1.0 - measures["low_margin_share"] / 2.0)
    for flag in flags:
        score *= _penalty(flag.code, measures)
    for flag in run_flags:
        score *= RUN_PENALTY.get(flag.code, 1.0)
    return round(float(min(1.0, max(0.0, score))), 3)


def _penalty(code: str, measures: Mapping[str, float]) -> float:
    if code == "fragmented":
        return 1.0 - FRAGMENT_WEIGHT * measures.get("outside_largest_share", 0.0)
    if code == "cut_off":
        return 1.0 - min(MAX_EDGE_PENALTY, measures.get("edge_share", 0.0))
    return LABEL_PENALTY.get(code) or 1.0


def scan_flags(
    intensity: IntensitySummary | None,
    expects_hu: bool,
    source: Grid,
    statistics: TrainingStatistics | None,
) -> list[Flag]:
    """Flags about the input itself: intensities, voxel size and field of view against what the model knows."""
    flags = []
    if expects_hu and intensity is not None and intensity.minimum > NOT_HU_MINIMUM:
        flags.append(
            Flag(
                "not_ct",
                f"the image has no value below {NOT_HU_MINIMUM:g} (lowest {intensity.minimum:g}): no air, lung or "
                "fat, so it is not a CT in Hounsfield units (an MRI, or a CT in other units?); this model expects CT",
            )
        )
    elif expects_hu and intensity is not None and statistics is not None and statistics.intensity_hu:
        unlike = _intensities_unlike(intensity, statistics.intensity_hu)
        if unlike:
            flags.append(Flag("intensities_unlike_training", unlike))
    if statistics is None:
        return flags
    spacing = np.asarray(source.spacing)
    if statistics.source_spacing_mm is not None:
        coarsest = max(statistics.source_spacing_mm[1])
        if spacing.max() > SPACING_FACTOR * coarsest:
            flags.append(
                Flag(
                    "spacing_unlike_training",
                    f"voxels of up to {spacing.max():.1f} mm; the coarsest training scan had {coarsest:.1f} mm",
                )
            )
    extent = np.asarray(source.shape) * spacing
    thinnest = _thinnest_trained(statistics)
    if thinnest is not None and extent.min() < thinnest:
        flags.append(
            Flag(
                "field_of_view_small",
                f"the scan is {extent.min():.0f} mm thin along one axis; the model was trained on at least "
                f"{thinnest:.0f} mm",
            )
        )
    return flags


def _thinnest_trained(statistics: TrainingStatistics) -> float | None:
    if statistics.min_slab_mm is not None:
        return statistics.min_slab_mm
    if statistics.source_extent_mm is not None:
        return min(statistics.source_extent_mm[0])
    return None


def _intensities_unlike(intensity: IntensitySummary, trained: Mapping[str, float]) -> str:
    """Why the body intensities differ from the training inputs' ("" when they do not): the median outside
    training's 5-95 % range, or a 5-95 % spread more than :data:`SPREAD_FACTOR` times as wide or narrow."""
    body = intensity.body
    if not body or not all(key in trained for key in ("p05", "p50", "p95")):
        return ""
    median = body["p50"]
    spread, trained_spread = body["p95"] - body["p05"], trained["p95"] - trained["p05"]
    ratio = spread / max(trained_spread, 1e-6)
    if not trained["p05"] <= median <= trained["p95"] or not 1 / SPREAD_FACTOR <= ratio <= SPREAD_FACTOR:
        return (
            f"the body's intensities (median {median:.0f}, 5-95 % {body['p05']:.0f} to {body['p95']:.0f}) are unlike "
            f"the training scans' (median {trained['p50']:.0f}, {trained['p05']:.0f} to {trained['p95']:.0f} HU)"
        )
    return ""


def assess(
    measures: Mapping[str, Mapping[str, float]],
    statistics: TrainingStatistics | None,
    intensity: IntensitySummary | None,
    expects_hu: bool,
    source: Grid,
    field_of_view_voxels: int,
) -> Assessment:
    """The :class:`Assessment` of a run from its per-label measures (by label name) and the scan."""
    run_flags = scan_flags(intensity, expects_hu, source, statistics)
    flags = {name: label_flags(name, values, statistics) for name, values in measures.items()}
    own = {name: label_confidence(values, flags[name], ()) for name, values in measures.items()}
    labelled = sum(m.get("voxels", 0) for m in measures.values()) / max(1, field_of_view_voxels)
    if expects_hu and not any(flag.code == "not_ct" for flag in run_flags):
        unknown = _no_known_anatomy(labelled, max(own.values(), default=0.0), statistics)
        if unknown:
            run_flags.append(Flag("no_known_anatomy", unknown))
    if not any(m.get("voxels") for m in measures.values()):
        run_flags.append(Flag("no_organ_found", "no organ was found"))
    labels = {
        name: LabelAssessment(label_confidence(values, flags[name], run_flags), tuple(flags[name]), dict(values))
        for name, values in measures.items()
    }
    best = max((label.confidence for label in labels.values()), default=0.0)
    run_flags = [_with_best(flag, best) for flag in run_flags]
    scan = {
        "spacing_mm": [round(float(s), 3) for s in source.spacing],
        "extent_mm": [round(float(e), 1) for e in np.asarray(source.shape) * source.spacing],
        "labelled_share": round(labelled, 5),
        "intensity": intensity.to_dict() if intensity is not None else None,
    }
    assessment = Assessment(labels, tuple(run_flags), "", scan)
    return Assessment(labels, tuple(run_flags), summarise(assessment), scan)


def _no_known_anatomy(labelled: float, best: float, statistics: TrainingStatistics | None) -> str:
    """Why the scan may not show the body region the model knows ("" when it may): nothing found, nothing found
    with confidence, or much less labelled than in any training scan."""
    hint = "the scan may not show the body region this model was trained on"
    if labelled == 0:
        return f"nothing this model segments was found: {hint}"
    if best < SURE:
        return f"nothing was found with confidence (best {BEST}): {hint}"
    trained = statistics.labelled_fraction if statistics is not None else None
    if trained is not None and labelled < trained.min / ANATOMY_FACTOR:
        return (
            f"the model labelled {100 * labelled:.2f} % of the scan (training scans: {100 * trained.min:.1f} % or "
            f"more): {hint}"
        )
    return ""


BEST = "<best>"  # in a flag's message: the best confidence the run reports, all flags applied


def _with_best(flag: Flag, best: float) -> Flag:
    """``flag`` naming the best confidence as reported (the table's), not the one before the scan's own flags."""
    return Flag(flag.code, flag.message.replace(BEST, f"{best:.2f}")) if BEST in flag.message else flag


def summarise(assessment: Assessment) -> str:
    """One line: what was found and what to check (or, when nothing was found, why that may be)."""
    run = [flag for flag in assessment.flags if flag.code != "no_organ_found"]
    if not assessment.found:
        reasons = [flag.message for flag in run] or [
            "the scan may not show the organs this model knows, or differs from its training scans in a way "
            "it cannot tell"
        ]
        return "No organ found. Possible reasons: " + "; ".join(reasons) + "."
    labels = assessment.labels
    text = f"{len(assessment.found)} of {len(labels)} labels found"
    doubtful = [name for name in assessment.flagged if {flag.code for flag in labels[name].flags} - {"cut_off"}]
    if doubtful:
        doubtful.sort(key=lambda name: labels[name].confidence)
        text += "; check (least confident first) " + ", ".join(f"{n} {labels[n].confidence:.2f}" for n in doubtful)
    cut = [name for name in assessment.flagged if any(flag.code == "cut_off" for flag in labels[name].flags)]
    if cut:
        text += f"; cut off by the scan's edge: {', '.join(cut)}"
    if run:
        text += ". " + ". ".join(flag.message[0].upper() + flag.message[1:] for flag in run)
    return text + "."
