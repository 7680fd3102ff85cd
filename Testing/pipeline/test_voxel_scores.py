"""The one-pass labels and certainty of a softmax model (``voxel_scores.softmax_labels``) are bit for bit those of
the two passes they replace (``postprocess.labels_from_logits`` then ``postprocess.label_certainty``): chunk
boundaries anywhere, both chunk paths, several workers, ties, unlabelled channels, NaN scores, a cropped box and
labels removed by the largest-piece clean-up afterwards."""

import numpy as np
import pytest
from TokenUNetSegmentLib.pipeline import voxel_scores
from TokenUNetSegmentLib.pipeline.metadata import Inference, Label
from TokenUNetSegmentLib.pipeline.postprocess import label_certainty, labels_from_logits
from TokenUNetSegmentLib.pipeline.voxel_scores import softmax_labels

SOFTMAX = Inference(roi_size=(8, 8, 8))


def label_table(channels: int) -> list[Label]:
    """Labels on every channel but 0 (background) and 2 (no label), values not equal to their channels."""
    return [Label(10 + c, f"l{c}", (0, 0, 0), channel=c) for c in range(1, channels) if c != 2]


def random_logits(channels: int, labelled_share: float, seed: int, shape=(11, 9, 7)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(channels, *shape)) * 3).astype(np.float32)
    background = rng.random(shape) >= labelled_share
    logits[0][background] = logits.max() + 1  # channel 0 wins there
    logits[:, 2, 3, 4] = 1.5  # a tie between all channels: the first wins
    if channels > 3:
        logits[1, 0, 0, 0] = logits[3, 0, 0, 0] = logits[:, 0, 0, 0].max() + 1  # two channels tie for the top
        logits[3, 0, 0, 1] = logits[1, 0, 0, 1] = logits[:, 0, 0, 1].max() + 2
    return logits


def two_passes(logits: np.ndarray, table: list[Label], box, cleaned=None):
    labels = labels_from_logits(logits, SOFTMAX, table)
    found = (labels if cleaned is None else cleaned)[box]
    return labels, label_certainty(logits[(slice(None), *box)], found, SOFTMAX)


def assert_bitwise_equal(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("labelled_share", [0.0, 0.05, 0.6, 1.0])  # none, the gather path, both paths, whole chunks
@pytest.mark.parametrize("channels", [1, 2, 5, 13])
def test_one_pass_gives_the_labels_and_certainty_of_the_two_passes(monkeypatch, channels, labelled_share, workers):
    monkeypatch.setattr(voxel_scores, "SCORE_CHUNK", 37)  # chunks that end anywhere in a row, a short last one
    logits = random_logits(channels, labelled_share, seed=channels)
    table = label_table(channels) if channels > 1 else [Label(1, "only", (0, 0, 0), channel=0)]
    box = (slice(None),) * 3
    expected_labels, (probability, lead) = two_passes(logits, table, box)
    labels, scores = softmax_labels(logits, table, workers=workers)
    assert labels.dtype == np.uint8 and np.array_equal(labels, expected_labels)
    got = scores.take(box, labels > 0)
    assert_bitwise_equal(got[0], probability)
    assert_bitwise_equal(got[1], lead)


def test_a_box_of_the_region_after_the_clean_up_gets_the_certainty_of_its_remaining_labels(monkeypatch):
    """As postprocess uses it: the model grid's part of a padded region, with pieces removed after scoring."""
    monkeypatch.setattr(voxel_scores, "SCORE_CHUNK", 50)
    logits = random_logits(13, 0.7, seed=4, shape=(14, 12, 10))
    table = label_table(13)
    labels, scores = softmax_labels(logits, table, workers=2)
    cleaned = labels.copy()
    cleaned[3:6, :, 2:] = 0  # what the clean-up removes is a subset of the labelled voxels
    box = (slice(1, 13), slice(0, 11), slice(2, 10))
    _, (probability, lead) = two_passes(logits, table, box, cleaned)
    got = scores.take(box, cleaned[box] > 0)
    assert_bitwise_equal(got[0], probability)
    assert_bitwise_equal(got[1], lead)


def test_nan_scores_give_what_the_two_passes_give():
    logits = random_logits(5, 1.0, seed=9)
    logits[2, 1, 1, 1] = np.nan  # a NaN after the top: the running maximum becomes NaN, the label stays
    logits[0, 4, 4, 4] = np.nan  # a NaN in the first channel
    logits[:, 6, 6, 6] = np.inf  # inf - inf in the exponentials
    table = label_table(5)
    box = (slice(None),) * 3
    expected_labels, (probability, lead) = two_passes(logits, table, box)
    labels, scores = softmax_labels(logits, table, workers=2)
    assert np.array_equal(labels, expected_labels)
    got = scores.take(box, labels > 0)
    np.testing.assert_array_equal(got[0], probability)  # NaN where the two passes have NaN
    np.testing.assert_array_equal(got[1], lead)


def test_non_contiguous_logits_and_the_torch_threads_are_left_as_they_were():
    import torch

    logits = np.asfortranarray(random_logits(4, 0.5, seed=2))
    table = label_table(4)
    threads = torch.get_num_threads()
    labels, _ = softmax_labels(logits, table, workers=2)
    assert torch.get_num_threads() == threads
    assert np.array_equal(labels, labels_from_logits(np.ascontiguousarray(logits), SOFTMAX, table))


@pytest.mark.parametrize(
    "logits",
    [np.zeros((3, 4, 4, 4), np.float64), np.zeros((257, 2, 2, 2), np.float32), np.zeros((0, 2, 2, 2), np.float32)],
)
def test_logits_it_cannot_score_are_refused(logits):
    with pytest.raises(ValueError, match="float32"):
        softmax_labels(logits, [])


def test_the_scores_are_taken_once_and_let_go():
    logits = random_logits(3, 0.5, seed=1)
    _, scores = softmax_labels(logits, label_table(3))
    box = (slice(None),) * 3
    labelled = labels_from_logits(logits, SOFTMAX, label_table(3)) > 0
    scores.take(box, labelled)
    assert scores.probability is None and scores.lead is None
    with pytest.raises(RuntimeError, match="before"):
        scores.take(box, labelled)
