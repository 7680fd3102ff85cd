"""From stitched network outputs to labels, normalised token maps and token-label soft Dice, on the model grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from .confidence import measure_labels
from .evaluate import surface_voxels
from .metadata import Inference, Label, PackageConfig
from .preprocess import Prepared
from .result import MAP_KINDS


@dataclass
class ModelGridOutputs:
    """What the network's outputs become on the model grid, before they are mapped back onto the input grid.

    ``labels`` covers the whole model grid (zero outside the processed region); ``probability_maps`` (label
    value -> map over the processed region) only when asked for; ``coarse_maps`` (kind -> (N, h, w, d) in
    [0, 1] on the token grid of the region) only for networks with tokens; ``measures`` (label value -> what
    :func:`.confidence.measure_labels` measured) for judging the result.
    """

    labels: np.ndarray
    probability_maps: dict[int, np.ndarray] | None
    coarse_maps: dict[str, np.ndarray] | None
    token_matches: list[dict]
    measures: dict[int, dict[str, float]] = field(default_factory=dict)


def postprocess(
    logits: np.ndarray,
    maps: dict[str, np.ndarray] | None,
    prepared: Prepared,
    config: PackageConfig,
    largest_component: Sequence[str],
    with_probabilities: bool,
    progress=None,
) -> ModelGridOutputs:
    """Labels (largest components kept for the named labels), token maps, their label matches, and the measures
    that say how far to trust each label."""
    region_labels = labels_from_logits(logits, config.inference, config.labels)
    values = [label.value for label in config.labels]
    pieces = component_pieces(region_labels, values, [v.value for v in config.labels if v.name in largest_component])
    if progress is not None:
        progress.update("postprocess", 0.4)
    coarse, matches = None, []
    if maps is not None:
        coarse = {kind: normalise_maps(maps[kind]) for kind in MAP_KINDS}
        matches = match_tokens(coarse, region_labels, config.labels)
    full = np.zeros(prepared.grid.shape, np.uint8)
    in_grid, in_region = prepared.paste_slices()
    full[in_grid] = region_labels[in_region]
    found = full[in_grid]
    certainty, margin = label_certainty(logits[(slice(None), *in_region)], found, config.inference)
    inside = prepared.field_of_view if prepared.field_of_view is not None else np.ones(full.shape, bool)
    labelled = found > 0
    measures = measure_labels(
        found[labelled],
        certainty,
        margin,
        surface_voxels(inside)[in_grid][labelled],
        pieces,
        values,
        prepared.grid.voxel_volume_mm3 / 1000.0,
    )
    probability_maps = probabilities_of(logits, config.inference, config.labels) if with_probabilities else None
    return ModelGridOutputs(full, probability_maps, coarse, matches, measures)


def match_tokens(coarse: dict[str, np.ndarray], labels: np.ndarray, table: Sequence[Label]) -> list[dict]:
    """Per token and kind of map, its soft Dice with every label and the best-matching label."""
    values = [label.value for label in table]
    factor = labels.shape[0] // next(iter(coarse.values())).shape[1]
    fractions = label_fractions(labels, values, factor)  # once for every kind of map
    matches = []
    for kind, maps in coarse.items():
        dice = soft_dice(maps, fractions)
        for token in range(dice.shape[0]):
            best = int(np.argmax(dice[token]))
            matches.append(
                {
                    "token": token,
                    "kind": kind,
                    "best_label": table[best].name,
                    "soft_dice": round(float(dice[token, best]), 4),
                    "scores": {label.name: round(float(d), 4) for label, d in zip(table, dice[token], strict=True)},
                }
            )
    return matches


def labels_from_logits(logits: np.ndarray, inference: Inference, labels: Sequence[Label]) -> np.ndarray:
    """uint8 label map from stitched logits: argmax (softmax models) or ordered region thresholds (sigmoid)."""
    tensor = torch.from_numpy(logits)
    if inference.activation == "sigmoid":
        threshold = inference.threshold
        if 0 < threshold < 1:
            cut = float(np.log(threshold / (1.0 - threshold)))  # sigmoid(x) > t  <=>  x > logit(t)
        else:
            cut = np.inf if threshold >= 1 else -np.inf
        out = torch.zeros(logits.shape[1:], dtype=torch.uint8)
        for region in inference.regions:  # later regions overwrite earlier ones (nested regions)
            out[tensor[region.channel] > cut] = region.label
        return out.numpy()
    lookup = torch.zeros(logits.shape[0], dtype=torch.uint8)
    for label in labels:
        lookup[label.output_channel] = label.value
    return lookup[channel_argmax(tensor).long()].numpy()


def channel_argmax(scores: torch.Tensor) -> torch.Tensor:
    """``argmax(scores, dim=0)`` as uint8 for (C <= 256, ...) scores, first channel on ties.

    A running maximum over the channels reads each channel once in memory order; on a CPU this is
    several times faster than a reduction across the outermost axis of a large volume.
    """
    best = scores[0].clone()
    index = torch.zeros(scores.shape[1:], dtype=torch.uint8)
    for channel in range(1, scores.shape[0]):
        index.masked_fill_(scores[channel] > best, channel)
        torch.maximum(best, scores[channel], out=best)
    return index


def label_certainty(logits: np.ndarray, labels: np.ndarray, inference: Inference) -> tuple[np.ndarray, np.ndarray]:
    """How sure the network is of each labelled voxel's label: (probability, margin), one value per voxel of
    ``labels`` > 0 in C order (``logits`` (C, *labels.shape) may be a view).

    Softmax: the top probability and its lead over the second. Sigmoid: the probability of the voxel's region
    and its distance above the threshold, scaled to [0, 1] ((p - t) / (1 - t)).
    """
    mask = torch.from_numpy(np.ascontiguousarray(labels > 0))
    scores = torch.from_numpy(logits)[:, mask]  # (C, labelled voxels): only these are computed
    if inference.activation == "sigmoid":
        found = torch.from_numpy(labels)[mask]
        probability, margin = torch.ones(found.shape), torch.ones(found.shape)
        threshold = min(inference.threshold, 1.0 - 1e-6)
        for region in inference.regions:
            where = found == region.label
            probability[where] = torch.sigmoid(scores[region.channel][where])
            margin[where] = (probability[where] - threshold) / (1.0 - threshold)
        return probability.numpy(), margin.numpy()
    top = torch.softmax(scores.float(), dim=0).topk(min(2, scores.shape[0]), dim=0).values
    second = top[1] if top.shape[0] > 1 else torch.zeros_like(top[0])
    return top[0].numpy(), (top[0] - second).numpy()


def probabilities_of(logits: np.ndarray, inference: Inference, labels: Sequence[Label]) -> dict[int, np.ndarray]:
    """Per label value, its probability map (softmax channel, or the sigmoid of its region channel)."""
    tensor = torch.from_numpy(logits)
    if inference.activation == "sigmoid":
        return {r.label: torch.sigmoid(tensor[r.channel]).numpy() for r in inference.regions}
    soft = torch.softmax(tensor, dim=0)
    return {label.value: soft[label.output_channel].numpy() for label in labels}


def keep_largest_component(labels: np.ndarray, values: list[int]) -> np.ndarray:
    """For each label value in ``values``, keep only its largest 26-connected component (in place)."""
    component_pieces(labels, values, values)
    return labels


def component_pieces(labels: np.ndarray, values: list[int], keep_largest=()) -> dict[int, tuple[int, float]]:
    """Per label value present: (its number of 26-connected pieces, the share of its voxels outside the largest).

    The labels in ``keep_largest`` are reduced to their largest piece (in place). Each label is examined inside
    its bounding box only.
    """
    pieces = {}
    for value in values:
        mask = labels == value
        box = _bounding_box(mask)
        if box is None:
            continue
        inside = mask[box]
        components = sitk.ConnectedComponent(sitk.GetImageFromArray(inside.view(np.uint8)), True)
        ranked = sitk.GetArrayFromImage(sitk.RelabelComponent(components))
        sizes = np.bincount(ranked.ravel())
        total = int(sizes[1:].sum())
        pieces[value] = (len(sizes) - 1, 1.0 - sizes[1] / total)
        if value in keep_largest and len(sizes) > 2:
            labels[box][inside & (ranked != 1)] = 0
    return pieces


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def normalise_maps(maps: np.ndarray) -> np.ndarray:
    """Each token's map (N, ...) min-max scaled to [0, 1] (a constant map becomes 0)."""
    out = np.empty_like(maps, dtype=np.float32)
    for token, m in enumerate(maps):
        low, high = float(m.min()), float(m.max())
        out[token] = (m - low) / (high - low) if high > low else 0.0
    return out


def label_fractions(labels: np.ndarray, values: list[int], factor: int) -> torch.Tensor:
    """(L, coarse voxels) share of each label value in each ``factor``^3 block of ``labels``."""
    fine = torch.from_numpy(labels)[None, None]
    return torch.stack([F.avg_pool3d((fine == value).float(), factor)[0, 0].double().reshape(-1) for value in values])


def soft_dice(maps: np.ndarray, fractions: torch.Tensor) -> np.ndarray:
    """Soft Dice (N tokens x L labels) of normalised coarse maps against coarse label fractions."""
    m = torch.from_numpy(maps).double().reshape(maps.shape[0], -1)
    if fractions.shape[1] != m.shape[1]:
        raise ValueError("token maps and labels are not on nested grids")
    overlap = m @ fractions.T
    totals = m.sum(dim=1, keepdim=True) + fractions.sum(dim=1)[None]
    return (2 * overlap / totals.clamp_min(1e-12)).numpy()


def token_label_dice(maps: np.ndarray, labels: np.ndarray, values: list[int]) -> np.ndarray:
    """Soft Dice (N tokens x L labels) of normalised maps on a coarse grid against fine labels.

    The labels are average-pooled onto the maps' grid (a label's fraction in each coarse voxel), so
    sums match those of the upsampled maps against the labels on the fine grid.
    """
    return soft_dice(maps, label_fractions(labels, values, labels.shape[0] // maps.shape[1]))
