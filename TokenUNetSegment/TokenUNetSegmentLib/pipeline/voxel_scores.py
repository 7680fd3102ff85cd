"""A softmax model's labels and how sure it is of each, in one pass over the stitched logits.

:func:`.postprocess.labels_from_logits` and :func:`.postprocess.label_certainty` read the (C, X, Y, Z) logits
twice, each time in a few dozen full-volume (or 1 M-voxel) torch operations per channel. Here the logits are read
once, in chunks of :data:`SCORE_CHUNK` voxels whose temporaries stay in the CPU's caches, by a few threads at once
(numpy's elementwise loops and torch's ``exp`` let go of the GIL). Every voxel gets the same arithmetic in the same
order as there: a running maximum, first channel on ties; the runner-up as the running maximum of
``min(top, channel)``; the exponentials by torch's ``exp`` (numpy's differs in the last bit), summed channel by
channel; so labels, probabilities and leads are bit for bit theirs (``Testing/pipeline/test_voxel_scores.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from . import process_settings
from .metadata import Label

SCORE_CHUNK = 1 << 16  # voxels per chunk: 13 channels x 256 KB, with the temporaries, stay in the L2/L3 caches
CHUNK_CHANNELS = 13  # more channels than this shrink a chunk's voxels: its buffers stay those of 13 channels
WHOLE_CHUNK_SHARE = 0.5  # labelled share above which a chunk's certainty is computed for all its voxels (no gather)


@dataclass
class VoxelScores:
    """The top softmax probability of every labelled voxel of the scored region and its lead over the second,
    as two arrays of the region's shape; voxels that were not labelled hold unset memory (their pages are never
    touched when whole chunks are unlabelled)."""

    probability: np.ndarray | None
    lead: np.ndarray | None
    non_finite: int = 0  # voxels whose top score was infinite or NaN (their probability and lead are NaN)

    def take(self, box: tuple[slice, ...], labelled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probability, lead) of the voxels ``labelled`` marks in ``box`` of the region, in C order: what
        :func:`.postprocess.label_certainty` gives for the labels of that box (``labelled`` must be a subset of the
        voxels labelled when scoring, as the largest-piece clean-up leaves it). The region's arrays are let go
        afterwards (two float32 volumes less at the postprocessing's peak): call it once."""
        if self.probability is None:
            raise RuntimeError("VoxelScores.take was called before: the scores are gone")
        values = self.probability[box][labelled], self.lead[box][labelled]
        self.probability = self.lead = None
        return values


def softmax_labels(
    logits: np.ndarray, table: Sequence[Label], workers: int = 1, check: Callable[[], None] | None = None
) -> tuple[np.ndarray, VoxelScores]:
    """Labels (uint8, each voxel the value of its highest-scoring channel, 0 for channels without a label) and
    their :class:`VoxelScores`, from float32 ``logits`` (C <= 256, X, Y, Z), with ``workers`` threads. ``check``
    (e.g. :meth:`.progress.Progress.check`) is called in the caller's thread after each chunk: what it raises ends
    the pass, the chunks not started are dropped.

    Raises:
        ValueError: logits that are not float32 or have more than 256 channels.
    """
    if logits.dtype != np.float32 or not 1 <= logits.shape[0] <= 256 or logits.ndim < 2:
        raise ValueError(f"softmax_labels needs float32 (C <= 256, ...) logits, got {logits.dtype} {logits.shape}")
    channels = logits.shape[0]
    lookup = np.zeros(channels, np.uint8)
    for label in table:
        lookup[label.output_channel] = label.value
    shape = logits.shape[1:]
    labels = np.empty(shape, np.uint8)
    probability, lead = np.empty(shape, np.float32), np.empty(shape, np.float32)
    outputs = [array.reshape(-1) for array in (labels, probability, lead)]
    source = logits.reshape(channels, -1) if logits.flags.c_contiguous else logits  # no copy either way
    # a worker's buffers as for 13 channels (105 channels in SCORE_CHUNK voxels took 28-41 MB per worker)
    chunk = max(1, SCORE_CHUNK * CHUNK_CHANNELS // max(CHUNK_CHANNELS, channels))

    def score(part: tuple[slice, ...]) -> int:
        scores = source[(slice(None), *part)].reshape(channels, -1)  # a view, or a copy of this chunk only
        where = _flat_range(part, source.shape[1:])
        return _score_chunk(scores, lookup, *(output[where] for output in outputs))

    # torch's exp on 1 thread inside each worker: the workers are the parallelism. Set in each worker, this thread's
    # and the process's counts untouched (before, threads2: set here, it also put every thread started meanwhile,
    # another run's among them, on 1 thread)
    pool = ThreadPoolExecutor(max(1, workers), initializer=process_settings.use_threads, initargs=(1,))
    non_finite = 0
    try:
        for count in pool.map(score, _chunks(source.shape[1:], chunk)):
            non_finite += count
            if check is not None:
                check()
    finally:
        pool.shutdown(cancel_futures=True)  # on an error or a stop: the running chunks end, no other starts
    return labels, VoxelScores(probability, lead, non_finite)


def _chunks(shape: tuple[int, ...], chunk: int) -> list[tuple[slice, ...]]:
    """Boxes of about ``chunk`` voxels covering an array of voxels ``shape`` in C order, each a C-order
    run of it: runs of the voxels of one axis (C-contiguous logits, flattened); else whole rows along the last axis
    (the stitched logits of a region padded up to the window are a crop of the padded sums: read row by row, a chunk
    is copied at most, never the whole logits)."""
    if len(shape) == 1:
        return [(slice(start, min(shape[0], start + chunk)),) for start in range(0, shape[0], chunk)]
    rows = max(1, chunk // max(1, shape[-1]))
    return [
        (*(slice(i, i + 1) for i in outer), slice(start, min(shape[-2], start + rows)))
        for outer in np.ndindex(*shape[:-2])
        for start in range(0, shape[-2], rows)
    ]


def _flat_range(part: tuple[slice, ...], shape: tuple[int, ...]) -> slice:
    """The C-order run of voxels that a box of :func:`_chunks` covers, as a slice of the flattened outputs."""
    if len(part) == 1:
        return part[0]
    first = [s.start for s in part] + [0] * (len(shape) - len(part))
    start = int(np.ravel_multi_index(first, shape))
    return slice(start, start + (part[-1].stop - part[-1].start) * int(np.prod(shape[len(part) :])))


def _score_chunk(scores: np.ndarray, lookup, labels: np.ndarray, probability: np.ndarray, lead: np.ndarray) -> int:
    """One chunk of (C, voxels) scores: its labels, and the probability and lead of its labelled voxels. Returns how
    many of its voxels have an infinite or NaN top score (the running maximum keeps +inf and NaN, and a voxel's -inf
    only when all its scores are: the chunk's top scores show every voxel whose probability is NaN)."""
    top = scores[0].copy()
    second = np.full_like(top, -np.inf)
    index = np.zeros(top.shape, np.uint8)
    work = np.empty_like(top)
    greater = np.empty(top.shape, bool)
    for channel in range(1, scores.shape[0]):
        values = scores[channel]
        np.greater(values, top, out=greater)  # a strictly higher score moves the label: first channel on ties
        np.copyto(index, channel, where=greater)
        np.minimum(top, values, out=work)
        np.maximum(second, work, out=second)
        np.maximum(top, values, out=top)
    np.take(lookup, index, out=labels)
    finite = np.isfinite(top.max()) and np.isfinite(top.min())  # two reductions of a chunk in the caches
    non_finite = 0 if finite else int(np.count_nonzero(~np.isfinite(top)))
    inside = labels > 0
    count = int(np.count_nonzero(inside))
    if count == 0:
        return non_finite
    if count > WHOLE_CHUNK_SHARE * inside.size:
        _top_probability(scores, top, second, probability, lead)
    else:
        found_probability, found_lead = np.empty(count, np.float32), np.empty(count, np.float32)
        _top_probability(scores[:, inside], top[inside], second[inside], found_probability, found_lead)
        probability[inside] = found_probability
        lead[inside] = found_lead
    return non_finite


def _top_probability(scores, top, second, probability: np.ndarray, lead: np.ndarray) -> None:
    """The top softmax probability 1 / sum(exp(s - top)) and its lead p - exp(second - top) p, into the outputs
    (infinite or NaN scores give NaN silently, as torch's arithmetic does)."""
    with np.errstate(invalid="ignore"):
        _top_probability_of(scores, top, second, probability, lead)


def _top_probability_of(scores, top, second, probability: np.ndarray, lead: np.ndarray) -> None:
    terms = np.subtract(scores, top)
    torch.from_numpy(terms).exp_()
    total = terms[0]
    for channel in range(1, terms.shape[0]):
        np.add(total, terms[channel], out=total)
    np.reciprocal(total, out=probability)
    runner_up = np.subtract(second, top)
    torch.from_numpy(runner_up).exp_()
    np.multiply(runner_up, probability, out=runner_up)
    np.subtract(probability, runner_up, out=lead)
