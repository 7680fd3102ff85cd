"""The postprocessing measures computed slab by slab and in one pass give the numbers of the plain whole-volume
formulas they replace (softmax + topk on all labelled voxels, one avg_pool3d per label, ranked connected
components), on cropped views, several slabs, both slab paths and shapes that do not divide.

Label fractions and pieces are exact. Probabilities agree to a few float32 units in the last place: torch's
elementwise kernels (exp in softmax, sigmoid) compute the last few elements of an array outside the vector loop,
so even the whole-volume formula's bits depend on how many voxels are labelled; the reported measures are rounded
to 4 decimals."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from TokenUNetSegmentLib.pipeline import postprocess
from TokenUNetSegmentLib.pipeline.metadata import Inference, Region
from TokenUNetSegmentLib.pipeline.postprocess import component_pieces, label_certainty, label_fractions

SOFTMAX = Inference(roi_size=(8, 8, 8))


def whole_volume_certainty(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference: every labelled voxel's (C,) scores gathered at once, softmax, top two."""
    scores = torch.from_numpy(logits)[:, torch.from_numpy(labels > 0)]
    top = torch.softmax(scores, dim=0).topk(min(2, scores.shape[0]), dim=0).values
    second = top[1] if top.shape[0] > 1 else torch.zeros_like(top[0])
    return top[0].numpy(), (top[0] - second).numpy()


@pytest.mark.parametrize("labelled_share", [0.05, 0.6, 1.0])  # the gather path, both paths, the whole-slab path
@pytest.mark.parametrize("channels", [1, 2, 5, 13])
def test_certainty_slab_by_slab_is_the_whole_volume_computation(monkeypatch, labelled_share, channels):
    monkeypatch.setattr(postprocess, "CERTAINTY_CHUNK", 150)  # about 3 rows of 7 x 7 per slab
    rng = np.random.default_rng(channels)
    logits = (rng.normal(size=(channels, 12, 9, 8)) * 3).astype(np.float32)
    logits[:, 2, 3, 4] = 1.5  # an exact tie between all channels
    labelled = rng.random((12, 9, 8)) < labelled_share
    labels = (labelled * rng.integers(1, 4, (12, 9, 8))).astype(np.uint8)
    labels[5] = 0  # a slab row with nothing labelled
    crop = (slice(1, 11), slice(1, 8), slice(0, 7))  # a view, as postprocess passes it
    expected = whole_volume_certainty(np.ascontiguousarray(logits[(slice(None), *crop)]), labels[crop])
    probability, margin = label_certainty(logits[(slice(None), *crop)], labels[crop], SOFTMAX)
    assert probability.dtype == margin.dtype == np.float32
    assert probability.shape == margin.shape == expected[0].shape
    np.testing.assert_array_max_ulp(probability, expected[0], maxulp=4)
    np.testing.assert_allclose(margin, expected[1], rtol=0, atol=5e-7)


def test_sigmoid_certainty_slab_by_slab_is_the_whole_volume_computation(monkeypatch):
    monkeypatch.setattr(postprocess, "CERTAINTY_CHUNK", 100)
    logits = np.random.default_rng(3).normal(size=(2, 10, 8, 6)).astype(np.float32)
    labels = np.where(logits[1] > 0, 2, np.where(logits[0] > 0, 1, 0)).astype(np.uint8)
    sigmoid = Inference(roi_size=(8, 8, 8), activation="sigmoid", threshold=0.4, regions=(Region(0, 1), Region(1, 2)))
    probability, margin = label_certainty(logits, labels, sigmoid)
    mask = labels > 0
    expected = torch.sigmoid(torch.from_numpy(np.where(labels == 2, logits[1], logits[0])[mask])).numpy()
    np.testing.assert_array_max_ulp(probability, expected, maxulp=4)
    np.testing.assert_allclose(margin, (expected - 0.4) / 0.6, atol=1e-6)


def pooled_fractions(labels: np.ndarray, values: list[int], factor: int) -> torch.Tensor:
    fine = torch.from_numpy(labels)[None, None]
    return torch.stack([F.avg_pool3d((fine == v).float(), factor)[0, 0].double().reshape(-1) for v in values])


@pytest.mark.parametrize(
    ("shape", "factor", "values"),
    [
        ((16, 16, 16), 2, [1, 2, 3]),
        ((18, 21, 13), 3, [2, 5]),  # blocks past the last whole one left out
        ((20, 15, 10), 5, [0, 1, 7, 255]),
        ((32, 16, 48), 16, [9]),  # a value not present
    ],
)
def test_label_fractions_in_one_pass_are_the_pooled_masks(shape, factor, values):
    labels = np.random.default_rng(factor).integers(0, 9, shape).astype(np.uint8)
    labels[labels == 8] = 255
    got = label_fractions(labels, values, factor)
    expected = pooled_fractions(labels, values, factor)
    assert got.dtype == torch.float64 and got.shape == expected.shape
    assert torch.equal(got, expected)


def ranked_pieces(labels: np.ndarray, value: int) -> tuple[int, float]:
    """The reference: the whole mask's 26-connected pieces, ranked by size."""
    image = sitk.GetImageFromArray((labels == value).astype(np.uint8))
    sizes = np.bincount(sitk.GetArrayFromImage(sitk.RelabelComponent(sitk.ConnectedComponent(image, True))).ravel())
    return len(sizes) - 1, 1.0 - sizes[1] / sizes[1:].sum()


def test_pieces_of_labels_not_kept_match_the_ranked_count_and_leave_them_alone():
    labels = np.random.default_rng(5).integers(0, 4, (14, 12, 10)).astype(np.uint8)
    labels[labels == 3] = 0  # sparse enough to fall apart into many pieces
    before = labels.copy()
    pieces = component_pieces(labels, [1, 2, 7])
    assert set(pieces) == {1, 2} and np.array_equal(labels, before)
    for value in (1, 2):
        assert pieces[value][0] > 1
        assert pieces[value] == ranked_pieces(before, value)


def largest_kept(labels: np.ndarray, value: int) -> np.ndarray:
    """The reference: the whole mask's largest 26-connected piece (ranked by size; of equals the first in raster
    order)."""
    ranked = sitk.GetArrayFromImage(
        sitk.RelabelComponent(sitk.ConnectedComponent(sitk.GetImageFromArray((labels == value).astype(np.uint8)), True))
    )
    return ranked == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_keeping_the_largest_piece_in_one_pass_is_the_per_label_computation(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, (16, 13, 11)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.4] = 0  # many pieces, equal sizes among them
    labels[:2] = 0  # the labelled box starts inside the volume
    crop = (slice(1, 15), slice(0, 12), slice(2, 11))  # a view, as postprocess passes it
    before = labels.copy()
    view = labels[crop]
    pieces = component_pieces(view, [1, 2, 3, 4], keep_largest=[1, 3])
    for value in (1, 2, 3, 4):
        assert pieces[value] == ranked_pieces(before[crop], value)
    for value in (1, 3):
        assert np.array_equal(view == value, largest_kept(before[crop], value))
    for value in (2, 4):
        assert np.array_equal(view == value, before[crop] == value)
    outside = np.ones(labels.shape, bool)
    outside[crop] = False
    assert np.array_equal(labels[outside], before[outside])  # nothing outside the view changes


def test_labels_examined_side_by_side_give_what_one_at_a_time_gives():
    """component_pieces works on several labels at once (torch's CPU threads), each cleaning its own voxels in
    place: the pieces and the cleaned map are those of one label after the other."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 13, (40, 36, 30)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.3] = 0
    values, keep = list(range(1, 13)), [1, 4, 5, 9, 12]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = labels.copy()
        expected = component_pieces(alone, values, keep)
        torch.set_num_threads(4)
        together = labels.copy()
        assert component_pieces(together, values, keep) == expected
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(together, alone)
    assert not np.array_equal(alone, labels)  # pieces were removed
    with pytest.raises(ValueError, match="> 0"):
        component_pieces(labels, [0, 1])


@pytest.mark.parametrize(
    "box",
    [
        (slice(0, 12), slice(0, 9), slice(0, 8)),  # the whole array
        (slice(3, 9), slice(2, 7), slice(1, 6)),  # inside, a voxel of margin on every side
        (slice(0, 5), slice(4, 9), slice(7, 8)),  # touching the array's border, one voxel thick
        (slice(11, 12), slice(8, 9), slice(0, 1)),  # one corner voxel
    ],
)
def test_surface_in_a_box_is_the_box_of_the_whole_surface(box):
    from TokenUNetSegmentLib.pipeline.surface_distance import surface_voxels

    rng = np.random.default_rng(7)
    for mask in (rng.random((12, 9, 8)) < 0.7, np.ones((12, 9, 8), bool), np.zeros((12, 9, 8), bool)):
        got = postprocess.surface_in_box(mask, box)
        assert got.dtype == bool
        assert np.array_equal(got, surface_voxels(mask)[box])
