"""How well a model's confidence ranks its own results: pairs of (confidence, Dice) from robustness runs, their
Spearman correlation, the AUC with which the confidence tells a good result (Dice >= a threshold) from a poor
one, and a table by confidence band. Used to check the README's account of the confidence on held-out scans."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

BANDS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def confidence_pairs(result: Mapping) -> list[dict]:
    """(confidence, Dice) of every organ found in every variant of one ``robustness`` result whose truth is
    known: organs present in the variant's reference, and organs the reference labels that the variant's crop
    does not contain (found anyway: Dice 0). Organs the reference does not label are left out."""
    labelled = set(result.get("labels", ()))
    pairs = []
    for row in result["variants"]:
        for name, confidence in (row.get("confidence") or {}).items():
            if name not in labelled:
                continue
            dice = row["dice"].get(name, 0.0)  # labelled but absent from this crop: a false find
            pairs.append(
                {
                    "case": result.get("case", ""),
                    "variant": row["variant"],
                    "label": name,
                    "confidence": float(confidence),
                    "dice": float(dice),
                    "flags": list((row.get("flags") or {}).get(name, [])),
                }
            )
    return pairs


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (None when either side is constant or fewer than 3 pairs)."""
    a, b = _ranks(np.asarray(x, np.float64)), _ranks(np.asarray(y, np.float64))
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def auc(scores: Sequence[float], positive: Sequence[bool]) -> float | None:
    """Area under the ROC curve: the chance that a random positive scores above a random negative (ties half);
    None without both classes."""
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    if positive.all() or not positive.any():
        return None
    ranks = _ranks(scores)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def summarise(pairs: Iterable[Mapping], good_dice: float = 0.7) -> dict:
    """Spearman, AUC for Dice >= ``good_dice``, and per confidence band the count, mean Dice and share good;
    also the mean Dice of organs flagged with anything but ``cut_off`` and of the rest."""
    pairs = list(pairs)
    confidence = [p["confidence"] for p in pairs]
    dice = [p["dice"] for p in pairs]
    bands = []
    for lo, hi in zip(BANDS[:-1], BANDS[1:], strict=True):
        inside = [p["dice"] for p in pairs if lo <= p["confidence"] < hi or (hi == 1.0 and p["confidence"] == 1.0)]
        bands.append(
            {
                "band": f"{lo:.1f}-{hi:.1f}",
                "organs": len(inside),
                "mean_dice": round(float(np.mean(inside)), 3) if inside else None,
                "good_share": round(float(np.mean([d >= good_dice for d in inside])), 3) if inside else None,
            }
        )
    flagged = [p["dice"] for p in pairs if set(p["flags"]) - {"cut_off"}]
    unflagged = [p["dice"] for p in pairs if not set(p["flags"]) - {"cut_off"}]
    rho, area = spearman(confidence, dice), auc(confidence, [d >= good_dice for d in dice])
    return {
        "organs": len(pairs),
        "good_dice": good_dice,
        "spearman": None if rho is None else round(rho, 3),
        "auc": None if area is None else round(area, 3),
        "bands": bands,
        "mean_dice_flagged": round(float(np.mean(flagged)), 3) if flagged else None,
        "mean_dice_unflagged": round(float(np.mean(unflagged)), 3) if unflagged else None,
    }


def format_summary(summary: Mapping) -> str:
    """Markdown: one line of figures, then the band table."""

    def figure(value):
        return "-" if value is None else f"{value:.2f}"

    good = summary["good_dice"]
    lines = [
        f"{summary['organs']} organs found with a known truth; Spearman correlation of confidence and Dice "
        f"{figure(summary['spearman'])}; AUC for Dice >= {good} {figure(summary['auc'])}; mean Dice of organs "
        f"flagged (besides cut_off) {figure(summary['mean_dice_flagged'])}, of the rest "
        f"{figure(summary['mean_dice_unflagged'])}.",
        "",
        f"| confidence | organs | mean Dice | Dice >= {good} |",
        "|---|---:|---:|---:|",
    ]
    for band in summary["bands"]:
        share = "-" if band["good_share"] is None else f"{100 * band['good_share']:.0f} %"
        lines.append(f"| {band['band']} | {band['organs']} | {figure(band['mean_dice'])} | {share} |")
    return "\n".join(lines)
