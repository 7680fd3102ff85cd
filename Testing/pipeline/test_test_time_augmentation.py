"""Test-time augmentation: passes moved back to the right place, the axial axis left alone, its cost counted."""

import numpy as np
import pytest
from helpers.packages import ThresholdNet, ball_phantom, dice, threshold_package
from TokenUNetSegmentLib.pipeline import segmentation
from TokenUNetSegmentLib.pipeline.errors import CancelledError
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing
from TokenUNetSegmentLib.pipeline.run_contract import RunRequest
from TokenUNetSegmentLib.pipeline.segmentation import segment
from TokenUNetSegmentLib.pipeline.test_time_augmentation import (
    AUGMENTATIONS,
    averaged_scores,
    axial_axis,
    extra_bytes,
    in_plane_matrix,
    to_probabilities,
    to_scores,
)

# an input grid flipped in-plane, with unequal spacings: the model grid (RAS, 2 mm) differs from it
AFFINE = affine_from_spacing((1.5, 1.2, 2.5), origin=(40, 30, -20), direction=np.diag([-1.0, -1.0, 1.0]))


def off_centre_phantom():
    """An ellipsoid far from the grid's centre, so a pass moved back the wrong way lands elsewhere."""
    return ball_phantom((96, 100, 36), (28, 66, 18), (12, 8, 7)), AFFINE


def pointwise_scores(image: np.ndarray) -> np.ndarray:
    """Scores that depend on each voxel alone: any pass moved back to where it belongs gives the same."""
    return np.concatenate([-(image[:1] - 0.5) * 8, (image[:1] - 0.5) * 8]).astype(np.float32)


def test_a_rotation_turns_millimetres_about_the_axial_axis_whatever_the_spacing():
    matrix = in_plane_matrix(90.0, 1.0, 2, (1.0, 2.0, 3.0))
    np.testing.assert_allclose(matrix @ [2.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)  # 2 mm along x -> 2 mm along y
    np.testing.assert_allclose(matrix @ [0.0, 0.0, 5.0], [0.0, 0.0, 5.0])  # the axial axis is left alone
    zoom = in_plane_matrix(0.0, 0.5, 0, (3.0, 1.0, 1.0))
    np.testing.assert_allclose(zoom @ [1.0, 1.0, 1.0], [1.0, 2.0, 2.0])  # axis 0 axial here
    assert axial_axis(np.eye(3)) == 2 and axial_axis(np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]])) == 1


def test_each_pass_is_moved_back_onto_the_voxels_it_came_from():
    image = ball_phantom((40, 44, 20), (12, 30, 10), (6, 5, 4), value=1.0, background=0.0)[None]
    direction, spacing = np.eye(3), (2.0, 2.0, 3.0)
    first = pointwise_scores(image)
    passes = []
    averaged = averaged_scores(
        image, first, lambda changed, i: passes.append(i) or pointwise_scores(changed), direction, spacing
    )
    assert passes == list(range(1, len(AUGMENTATIONS)))
    alone, mean = to_probabilities(first, "softmax")[0, 1], to_probabilities(averaged, "softmax")[0, 1]
    assert dice(alone.numpy() > 0.5, mean.numpy() > 0.5) > 0.95
    assert float((alone - mean).abs().mean()) < 0.02
    # control: passes that answer for the unchanged image are moved away from the off-centre ball
    stuck = averaged_scores(image, first, lambda changed, i: pointwise_scores(image), direction, spacing)
    wrong = to_probabilities(stuck, "softmax")[0, 1]
    assert float((alone - wrong).abs().mean()) > 2 * float((alone - mean).abs().mean())


def test_a_thin_slab_is_never_resampled_along_its_axial_axis():
    """Slices that differ only along the axial axis stay what they are in every pass (no slices made up above or
    below a 10-slice slab)."""
    image = np.broadcast_to(np.linspace(0, 1, 10, dtype=np.float32), (1, 30, 30, 10)).copy()
    seen = []
    averaged_scores(image, pointwise_scores(image), lambda c, i: seen.append(c) or pointwise_scores(c), np.eye(3), 2.0)
    for changed in seen:
        centre = changed[0, 10:20, 10:20]  # inside every pass's field
        np.testing.assert_allclose(centre, image[0, 10:20, 10:20], atol=1e-5)


def test_sigmoid_scores_round_trip():
    scores = np.linspace(-6, 6, 24, dtype=np.float32).reshape(2, 3, 2, 2)
    np.testing.assert_allclose(to_scores(to_probabilities(scores, "sigmoid"), "sigmoid"), scores, atol=1e-4)


class CountingThresholdNet(ThresholdNet):
    calls = 0

    def forward(self, x, return_attention=False):
        CountingThresholdNet.calls += x.shape[0]
        return super().forward(x, return_attention)


def counting_package():
    package = threshold_package()
    package.network = CountingThresholdNet()
    return package


def test_a_run_with_augmentation_keeps_the_labels_of_a_pointwise_network_and_the_unchanged_token_maps():
    package, phantom = counting_package(), off_centre_phantom()
    CountingThresholdNet.calls = 0
    plain = segment(phantom, package, device="cpu")
    windows = CountingThresholdNet.calls
    fractions = []
    averaged = segment(
        phantom, package, device="cpu", test_time_augmentation=True, progress=lambda s, f: fractions.append((s, f))
    )
    assert CountingThresholdNet.calls - windows == len(AUGMENTATIONS) * windows
    assert dice(plain.labels == 1, averaged.labels == 1) > 0.97
    for kind in ("gather", "broadcast"):
        np.testing.assert_array_equal(plain.token_maps.all(kind), averaged.token_maps.all(kind))
    values = [f for _, f in fractions]
    assert values == sorted(values)
    inference = [f for s, f in fractions if s == "inference"]
    assert len(inference) >= len(AUGMENTATIONS) and inference[-1] == pytest.approx(0.12 + 0.76)


def test_a_stop_during_a_later_pass_stops_the_run():
    package, phantom = counting_package(), off_centre_phantom()
    CountingThresholdNet.calls = 0
    segment(phantom, package, device="cpu", with_token_maps=False)
    windows = CountingThresholdNet.calls
    CountingThresholdNet.calls = 0
    with pytest.raises(CancelledError):
        segment(
            phantom,
            package,
            device="cpu",
            test_time_augmentation=True,
            cancel=lambda: CountingThresholdNet.calls > windows,
        )
    assert CountingThresholdNet.calls <= 2 * windows


def test_the_memory_check_counts_the_averaging(monkeypatch):
    package, phantom = threshold_package(), off_centre_phantom()
    estimates = []
    monkeypatch.setattr(segmentation, "check_memory", lambda estimate, device: estimates.append(dict(estimate)))
    segment(phantom, package, device="cpu")
    segment(phantom, package, device="cpu", test_time_augmentation=True)
    plain, averaged = estimates
    model_voxels = int(
        np.prod(segmentation.model_grid(segmentation.Grid(phantom[0].shape, AFFINE), "RAS", (2.0,) * 3).shape)
    )
    assert averaged["host"] - plain["host"] == extra_bytes(2, 1, model_voxels)
    assert averaged["window"] == plain["window"]


def test_a_slicer_run_asks_for_it_in_process_and_on_the_command_line():
    from TokenUNetSegmentLib.pipeline.cli import parse_arguments

    request = RunRequest(inputs=[], test_time_augmentation=True)
    assert request.segment_options()["test_time_augmentation"] is True
    assert parse_arguments(request.command_arguments([], "out") + ["x"]).tta
    assert not parse_arguments(RunRequest(inputs=[]).command_arguments([], "out") + ["x"]).tta
