"""From stitched network outputs to labels, normalised token maps and token-label soft Dice, on the model grid."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import torch

from .background import BackgroundCall
from .confidence import measure_labels
from .metadata import Inference, Label, PackageConfig
from .preprocess import Prepared
from .result import MAP_KINDS
from .run_memory import COMPONENT_THREADS
from .surface_distance import surface_voxels
from .voxel_scores import softmax_labels


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
    warnings: list[str] = field(default_factory=list)


NON_FINITE_SCORES = (
    "the network's scores were infinite or not a number in {voxels} voxels (on a GPU: half precision overflowing); "
    "they were counted as the largest finite scores, which keeps their labels but makes their probabilities and "
    "confidence approximate (run on the CPU, --device cpu, for exact ones)"
)


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
    that say how far to trust each label. A softmax model's infinite or NaN float32 ``logits`` are made finite in
    place (the largest finite values, NaN 0), with a warning."""
    scores, warnings = None, []
    if config.inference.activation == "softmax" and logits.dtype == np.float32:  # labels and certainty in one pass
        check = progress.check if progress is not None else None
        region_labels, scores = softmax_labels(logits, config.labels, torch.get_num_threads(), check)
        if scores.non_finite:  # NaN probabilities: scored again from finite logits (a sigmoid of +-inf is 0 or 1)
            warnings.append(NON_FINITE_SCORES.format(voxels=scores.non_finite))
            np.nan_to_num(logits, copy=False)  # in place, as test_time_augmentation.to_probabilities counts them
            region_labels, scores = softmax_labels(logits, config.labels, torch.get_num_threads(), check)
    else:
        region_labels = labels_from_logits(logits, config.inference, config.labels)
    values = [label.value for label in config.labels]
    pieces = component_pieces(region_labels, values, [v.value for v in config.labels if v.name in largest_component])
    if progress is not None:
        progress.update("postprocess", 0.4)
    coarse, matching = None, None
    if maps is not None:  # the token matches in a thread, next to the measures (numpy and torch let go of the GIL)
        coarse = {kind: normalise_maps(maps[kind]) for kind in MAP_KINDS}
        matching = BackgroundCall(lambda: match_tokens(coarse, region_labels, config.labels), "TokenUNet matches")
    try:
        full, measures = _measure(logits, region_labels, scores, pieces, values, prepared, config.inference)
    finally:
        if matching is not None:
            matching.wait()  # nothing of this run goes on after it ends
    matches = matching.result() if matching is not None else []
    probability_maps = probabilities_of(logits, config.inference, config.labels) if with_probabilities else None
    return ModelGridOutputs(full, probability_maps, coarse, matches, measures, warnings)


def _measure(logits, region_labels, scores, pieces, values, prepared: Prepared, inference: Inference):
    """The labels on the whole model grid (zero outside the region) and their :func:`.confidence.measure_labels`."""
    full = np.zeros(prepared.grid.shape, np.uint8)
    in_grid, in_region = prepared.paste_slices()
    full[in_grid] = region_labels[in_region]
    found = full[in_grid]
    labelled = found > 0
    if scores is None:
        certainty, margin = label_certainty(logits[(slice(None), *in_region)], found, inference)
    else:
        certainty, margin = scores.take(in_region, labelled)
    inside = prepared.field_of_view if prepared.field_of_view is not None else np.ones(full.shape, bool)
    measures = measure_labels(
        found[labelled],
        certainty,
        margin,
        surface_in_box(inside, in_grid)[labelled],
        pieces,
        values,
        prepared.grid.voxel_volume_mm3 / 1000.0,
    )
    return full, measures


def surface_in_box(mask: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    """``surface_voxels(mask)[box]`` (``box``: slices with a start and a stop), from the box and the voxels next to it
    only: a voxel's edge depends on its 6 neighbours alone, and the array's border counts as outside in both."""
    outer = tuple(slice(max(0, b.start - 1), min(n, b.stop + 1)) for b, n in zip(box, mask.shape, strict=True))
    inner = tuple(slice(b.start - o.start, b.stop - o.start) for b, o in zip(box, outer, strict=True))
    return surface_voxels(mask[outer])[inner]


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


CERTAINTY_CHUNK = 1 << 20  # voxels per slab in label_certainty: the temporaries stay near 13 x 4 MB
WHOLE_SLAB_SHARE = 0.5  # labelled share above which a slab's softmax is taken over all its voxels (no C-row gather)


def label_certainty(logits: np.ndarray, labels: np.ndarray, inference: Inference) -> tuple[np.ndarray, np.ndarray]:
    """How sure the network is of each labelled voxel's label: (probability, margin), one value per voxel of
    ``labels`` > 0 in C order (``logits`` (C, *labels.shape) may be a view).

    Softmax: the top probability and its lead over the second. Sigmoid: the probability of the voxel's region
    and its distance above the threshold, scaled to [0, 1] ((p - t) / (1 - t)).

    Computed slab by slab along the first axis (about :data:`CERTAINTY_CHUNK` voxels each), without full-size
    (C, voxels) copies of the logits: every voxel's values depend on its own scores only (the same formulas as
    on the whole volume; torch's vector kernels may differ in the last float32 bit on an array's last elements).
    """
    mask = labels > 0
    probability = np.empty(int(np.count_nonzero(mask)), np.float32)
    margin = np.empty_like(probability)
    rows = max(1, CERTAINTY_CHUNK // max(1, int(np.prod(labels.shape[1:]))))
    done = 0
    for start in range(0, labels.shape[0], rows):
        inside = mask[start : start + rows]
        count = int(np.count_nonzero(inside))
        if count == 0:
            continue
        slab = torch.from_numpy(logits[:, start : start + rows])
        found = labels[start : start + rows][inside]
        if inference.activation == "softmax" and count > WHOLE_SLAB_SHARE * inside.size:
            top, lead = _softmax_top_two(slab)  # all voxels, then the labelled ones
            flat = inside.reshape(-1)
            top, lead = top[flat], lead[flat]
        else:
            top, lead = _certainty_of(slab[:, torch.from_numpy(inside)], found, inference)
        probability[done : done + count] = top
        margin[done : done + count] = lead
        done += count
    return probability, margin


def _certainty_of(scores: torch.Tensor, found: np.ndarray, inference: Inference) -> tuple[np.ndarray, np.ndarray]:
    """(probability, margin) of voxels given as (C, voxels) scores and their labels (see label_certainty)."""
    if inference.activation == "sigmoid":
        found = torch.from_numpy(found)
        probability, margin = torch.ones(found.shape), torch.ones(found.shape)
        threshold = min(inference.threshold, 1.0 - 1e-6)
        for region in inference.regions:
            where = found == region.label
            probability[where] = torch.sigmoid(scores[region.channel][where])
            margin[where] = (probability[where] - threshold) / (1.0 - threshold)
        return probability.numpy(), margin.numpy()
    return _softmax_top_two(scores)


def _softmax_top_two(scores: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per voxel of (C, ...) scores: the top softmax probability and its lead over the second (0 lead for one
    channel), flattened in C order.

    Without the softmax itself: the top two scores in a running pass over the channels, then the top probability
    is 1 / sum(exp(s - top)) and the second exp(second - top) times it. Each channel is read where it lies (no
    (C, voxels) copy of a slab of the logits) by torch's threaded kernels: 0.8 -> 0.3 s on the 12 M voxels of a
    512 x 512 x 300 CT's model grid, the values those of ``softmax`` + ``topk`` within a few float32 units.
    """
    scores = scores.float()
    top = scores[0].clone()
    second = torch.full_like(top, -torch.inf)
    work = torch.empty_like(top)
    for channel in scores[1:]:
        torch.minimum(top, channel, out=work)
        torch.maximum(second, work, out=second)
        torch.maximum(top, channel, out=top)
    total = torch.zeros_like(top)
    for channel in scores:
        torch.sub(channel, top, out=work)
        total.add_(work.exp_())
    probability = total.reciprocal_()
    lead = probability - torch.sub(second, top, out=work).exp_().mul_(probability)
    return probability.reshape(-1).numpy(), lead.reshape(-1).numpy()


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
    its bounding box only, the labels on torch's CPU threads (SimpleITK's components and numpy's comparisons let
    go of the GIL: 0.57 -> 0.30 s for 12 labels of random logits on a 512 x 512 x 300 CT's model grid on 2 cores).
    A label's pass reads the other labels' voxels only to tell them from its own, so the others' clean-up does not
    change what it finds.
    """
    if 0 in values:
        raise ValueError("component_pieces measures label values > 0")
    keep = set(keep_largest)
    workers = max(1, min(len(values), torch.get_num_threads(), COMPONENT_THREADS))  # the memory estimate's bound
    with ThreadPoolExecutor(workers) as pool:
        found = list(pool.map(lambda value: _pieces_of(labels, value, value in keep), values))
    return {value: pieces for value, pieces in zip(values, found, strict=True) if pieces is not None}


def _pieces_of(labels: np.ndarray, value: int, keep_largest: bool) -> tuple[int, float] | None:
    mask = labels == value
    box = _bounding_box(mask)
    if box is None:
        return None
    inside = mask[box]
    components = sitk.ConnectedComponent(sitk.GetImageFromArray(inside.view(np.uint8)), True)
    if keep_largest:  # ranked by size: piece 1 is the largest, the one kept
        components = sitk.RelabelComponent(components)
    numbered = sitk.GetArrayViewFromImage(components)
    sizes = np.bincount(numbered.ravel())
    total = int(sizes[1:].sum())
    if keep_largest and len(sizes) > 2:
        labels[box][inside & (numbered != 1)] = 0
    return len(sizes) - 1, 1.0 - sizes[1:].max() / total


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding ``mask``'s voxels (None when it has none); each axis is searched inside the box
    found along the axes before it."""
    box = [slice(None)] * mask.ndim
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask[tuple(box)].any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hits.size == 0:
            return None
        box[axis] = slice(int(hits[0]), int(hits[-1]) + 1)
    return tuple(box)


def normalise_maps(maps: np.ndarray) -> np.ndarray:
    """Each token's map (N, ...) min-max scaled to [0, 1] (a constant map becomes 0)."""
    out = np.empty_like(maps, dtype=np.float32)
    for token, m in enumerate(maps):
        low, high = float(m.min()), float(m.max())
        out[token] = (m - low) / (high - low) if high > low else 0.0
    return out


def label_fractions(labels: np.ndarray, values: list[int], factor: int) -> torch.Tensor:
    """(L, coarse voxels) share of each label value in each ``factor``^3 block of ``labels`` (blocks past the
    last whole one are left out, as ``avg_pool3d`` does).

    One pass over the labels, a block row at a time: each voxel's (block, label) pair is counted with
    ``bincount``; the counts are divided in float32, the number ``avg_pool3d`` of each label's 0/1 mask gives.
    """
    coarse = [n // factor for n in labels.shape]
    lookup = np.full(256, len(values), np.int64)  # values not asked for go to a spare column
    lookup[np.asarray(values, np.int64)] = np.arange(len(values))
    columns = len(values) + 1
    blocks_per_row = coarse[1] * coarse[2]
    within = (np.arange(coarse[1])[:, None] * coarse[2] + np.arange(coarse[2])[None, :]) * columns  # block ids
    counts = np.empty((coarse[0], blocks_per_row, columns), np.int64)
    for row in range(coarse[0]):
        block = labels[row * factor : (row + 1) * factor, : coarse[1] * factor, : coarse[2] * factor]
        block = block.reshape(factor, coarse[1], factor, coarse[2], factor)
        keys = lookup[block] + within[None, :, None, :, None]
        counts[row] = np.bincount(keys.ravel(), minlength=blocks_per_row * columns).reshape(blocks_per_row, columns)
    shares = counts[..., : len(values)].reshape(-1, len(values)).T.astype(np.float32) / np.float32(factor**3)
    return torch.from_numpy(np.ascontiguousarray(shares, np.float64))


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
