"""The labels mapped back onto the input grid in a thread beside the postprocessing's measures
(``postprocess(with_labels=...)``, used by ``segment()``) give the result of the plain path, which maps them after the
measures: the same labels voxel for voxel, label volumes, token matches and confidence."""

import types

import numpy as np
import pytest
from helpers.packages import ball_phantom, make_package, tiny_config
from TokenUNetSegmentLib.pipeline import segmentation
from TokenUNetSegmentLib.pipeline.geometry import Grid
from TokenUNetSegmentLib.pipeline.metadata import Inference, Label
from TokenUNetSegmentLib.pipeline.package_loader import load_package
from TokenUNetSegmentLib.pipeline.postprocess import component_pieces, postprocess
from TokenUNetSegmentLib.pipeline.preprocess import Prepared


def small_case():
    """Random logits of a region padded past the model grid, a field of view, 12 labels in noisy pieces."""
    rng = np.random.default_rng(5)
    logits = (rng.normal(size=(13, 20, 18, 16)) * 3).astype(np.float32)
    table = tuple(Label(10 + c, f"l{c}", (0, 0, 0), channel=c) for c in range(1, 13))
    config = types.SimpleNamespace(inference=Inference(roi_size=(8, 8, 8)), labels=table)
    grid = Grid((17, 18, 14), np.diag([1.0, 1.0, 2.0, 1.0]))
    view = np.ones(grid.shape, bool)
    view[:, :, :2] = False
    region = grid.sub_grid((-2, 0, -1), (20, 18, 16))
    prepared = Prepared(np.zeros((1, 1, 1, 1), np.float32), grid, np.array([-2, 0, -1]), region, [], view)
    return logits, prepared, config


def test_with_labels_sees_the_finished_labels_and_changes_nothing_else():
    logits, prepared, config = small_case()
    seen = []

    def with_labels(labels):
        seen.append(labels.copy())
        return "mapped"

    kept = ["l1", "l4"]  # their largest pieces only: what with_labels gets is after that clean-up
    got = postprocess(logits, None, prepared, config, kept, False, with_labels=with_labels)
    plain = postprocess(logits.copy(), None, prepared, config, kept, False)
    assert got.from_labels == "mapped" and plain.from_labels is None
    assert len(seen) == 1 and np.array_equal(seen[0], got.labels)
    assert np.array_equal(got.labels, plain.labels)
    assert got.measures == plain.measures
    assert plain.measures[11]["pieces"] > 1 and component_pieces(seen[0], [11, 12])[11] == (1, 0.0)
    assert component_pieces(seen[0], [12])[12][0] > 1


def test_an_error_beside_the_measures_is_raised_after_them():
    logits, prepared, config = small_case()

    def failing(labels):
        raise RuntimeError("map back failed")

    with pytest.raises(RuntimeError, match="map back failed"):
        postprocess(logits, None, prepared, config, [], False, with_labels=failing)


@pytest.mark.parametrize("largest", [True, None])
def test_segment_maps_the_labels_beside_the_measures_as_after_them(tmp_path, monkeypatch, largest):
    """A flipped, anisotropic input grid (nearest-neighbour map back by index lookups), random weights (labels in
    many pieces, the largest kept or not), token maps."""
    package = load_package(make_package(tmp_path, tiny_config(labels=4, roi=(32, 32, 32))))
    affine = np.array([[-1.6, 0, 0, 40.0], [0, -1.3, 0, 30.0], [0, 0, 2.4, -20.0], [0, 0, 0, 1]])
    image = ball_phantom((44, 40, 26), (22, 20, 13), (9, 9, 6)), affine
    called = []
    real = segmentation.nearest_labels
    monkeypatch.setattr(segmentation, "nearest_labels", lambda *args: called.append(1) or real(*args))
    beside = segment_result(image, package, largest)
    monkeypatch.setattr(segmentation, "nearest_labels", lambda *args: called.append(0))  # None: mapped after
    after = segment_result(image, package, largest)
    assert called == [1, 0]
    assert np.array_equal(beside.labels, after.labels) and len(np.unique(after.labels)) >= 3
    assert beside.volumes_ml == after.volumes_ml
    assert beside.token_matches == after.token_matches
    report, expected = beside.report(), after.report()
    for report_of in (report, expected):
        report_of.pop("timings_s")
    assert report == expected


def segment_result(image, package, largest):
    return segmentation.segment(image, package, device="cpu", largest_component=largest)
