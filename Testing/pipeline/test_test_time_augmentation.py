"""Test-time augmentation: passes moved back to the right place, the axial axis left alone, its cost counted."""

import numpy as np
import pytest
import torch
from helpers.packages import ThresholdNet, ball_phantom, dice, threshold_package
from TokenUNetSegmentLib.pipeline import segmentation
from TokenUNetSegmentLib.pipeline.errors import CancelledError
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing
from TokenUNetSegmentLib.pipeline.run_contract import RunRequest
from TokenUNetSegmentLib.pipeline.run_memory import augmentation_bytes
from TokenUNetSegmentLib.pipeline.segmentation import segment
from TokenUNetSegmentLib.pipeline.test_time_augmentation import (
    AUGMENTATIONS,
    averaged_scores,
    axial_axis,
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


def test_a_slicer_run_asks_for_it_in_process_and_on_the_command_line():
    from TokenUNetSegmentLib.pipeline.cli import parse_arguments

    request = RunRequest(inputs=[], test_time_augmentation=True)
    assert request.segment_options()["test_time_augmentation"] is True
    assert parse_arguments(request.command_arguments([], "out") + ["x"]).tta
    assert not parse_arguments(RunRequest(inputs=[]).command_arguments([], "out") + ["x"]).tta


def test_a_run_with_augmentation_that_cannot_fit_is_refused_from_the_header(tmp_path, monkeypatch, capsys):
    """A limit between the plain run's header estimate and the augmented one's: --tta is refused before any voxel is
    read (before: the header check left the averaging out; the voxels were read, then the exact check refused)."""
    from helpers.packages import make_package, tiny_config
    from helpers.readers import refuse_reading, sparse_nrrd
    from TokenUNetSegmentLib.pipeline import cli
    from TokenUNetSegmentLib.pipeline.errors import OutOfMemoryError
    from TokenUNetSegmentLib.pipeline.package_loader import load_package
    from TokenUNetSegmentLib.pipeline.run_memory import check_header_fits
    from TokenUNetSegmentLib.pipeline.volumes import open_input

    config = tiny_config(labels=4, spacing=(1.0, 1.0, 1.0))
    path = make_package(tmp_path, config)
    package = load_package(path)
    scan = sparse_nrrd(tmp_path / "scan.nrrd", (160, 160, 100))
    opened = open_input(scan)
    plain = check_header_fits(opened.values, opened.grid, package.config, 0, "scan.nrrd")
    monkeypatch.setenv("TOKENUNET_MEMORY_LIMIT", str(plain + augmentation_bytes(5, 1, opened.values) // 2))
    refuse_reading(monkeypatch)
    options = ["--no-overview", "--no-heatmaps", "--progress", "none", "--device", "cpu", "--tta"]
    assert cli.main(["segment", str(scan), "--model", str(path), "--out", str(tmp_path / "out"), *options]) == 2
    assert capsys.readouterr().err.startswith("error: this run needs about ")
    with pytest.raises(OutOfMemoryError, match="this run needs about"):
        segment(str(scan), package, device="cpu", with_token_maps=False, test_time_augmentation=True)
    with pytest.raises(AssertionError, match="were read"):  # control: the plain run passes the header check
        segment(str(scan), package, device="cpu", with_token_maps=False)


def test_later_passes_start_from_the_batch_the_first_pass_fell_back_to(monkeypatch):
    """A fake GPU that runs out of memory with 2 windows per batch: the first pass halves its batch once, the later
    passes start from 1 (before: each started again from 2, ran out again and repeated the warning: 5 times)."""
    from TokenUNetSegmentLib.pipeline import device as dev
    from TokenUNetSegmentLib.pipeline import inference

    real = inference.sliding_window
    tried = []

    def fake_sliding_window(network, image, roi, overlap, blending, batch, device, progress, tokens, since=None):
        tried.append((device.type, batch))
        if device.type == "cuda" and batch > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(network, image, roi, overlap, blending, batch, torch.device("cpu"), progress, tokens)

    monkeypatch.setattr(inference, "sliding_window", fake_sliding_window)
    monkeypatch.setattr(segmentation, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(dev.torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(segmentation, "check_memory", lambda estimate, device: None)
    result = segment(off_centre_phantom(), threshold_package(), device="cuda", test_time_augmentation=True)
    assert tried == [("cuda", 2)] + [("cuda", 1)] * len(AUGMENTATIONS)
    assert sum("out of memory" in warning for warning in result.warnings) == 1


class NeighbourhoodNet(ThresholdNet):
    """Label 1 where the mean of a voxel's 9^3 neighbourhood is above -800 (raw HU, a package without
    normalisation): what lies beyond the scan's edge, as the network sees it, changes the labels inside."""

    has_tokens = False

    def forward(self, x, return_attention=False):
        mean = torch.nn.functional.avg_pool3d(x[:, :1], 9, stride=1, padding=4, count_include_pad=False)
        fg = (mean + 800.0) / 10.0
        return torch.cat([-fg, fg], dim=1)


def test_the_changed_copies_are_filled_beyond_the_scan_as_the_scan_is_padded():
    """A package without intensity normalisation (raw HU) on a scan of air with a ball: the turned and shrunk copies
    are filled with the scan's lowest value, as preprocessing pads it (before: with 0, water in HU, so the
    network found the ball's label along the scan's edges)."""
    from helpers.packages import tiny_config
    from TokenUNetSegmentLib.pipeline.package_writer import package_in_memory

    config = tiny_config("raw-hu", labels=1, roi=(32, 32, 32), intensity={"method": "none"})
    package = package_in_memory(NeighbourhoodNet(), config, "raw-hu")
    phantom = off_centre_phantom()
    plain = segment(phantom, package, device="cpu", with_token_maps=False)
    averaged = segment(phantom, package, device="cpu", with_token_maps=False, test_time_augmentation=True)
    assert plain.labels.any()
    assert dice(plain.labels == 1, averaged.labels == 1) > 0.95
    assert int((averaged.labels == 1).sum()) <= 1.1 * int((plain.labels == 1).sum())


@pytest.mark.parametrize(
    "intensity, low",
    [
        ({"method": "ct_window", "window": [-100.0, 300.0]}, -1000.0),
        ({"method": "ct_window", "window": [-100.0, 300.0]}, 20.0),  # a crop without air: above the window's low
        ({"method": "zscore"}, 0.0),
        ({"method": "zscore"}, -30.0),
        ({"method": "none"}, -1024.0),
    ],
)
def test_the_padding_value_is_what_preprocessing_pads_the_region_with(intensity, low):
    from helpers.packages import tiny_config
    from TokenUNetSegmentLib.pipeline.metadata import parse_config
    from TokenUNetSegmentLib.pipeline.preprocess import prepare
    from TokenUNetSegmentLib.pipeline.volumes import Volume

    config = parse_config(tiny_config(roi=(32, 32, 32), intensity=intensity))
    array = np.random.default_rng(0).uniform(low, low + 400.0, (12, 12, 12)).astype(np.float32)
    array[0, 0, 0] = low
    prepared = prepare([Volume(array, affine_from_spacing((2.0, 2.0, 2.0)))], config, 8, (32, 32, 32))
    assert prepared.image.shape[1:] == (32, 32, 32)  # padded around the 12^3 volume
    assert prepared.padding == pytest.approx((float(prepared.image[0, 0, 0, 0]),), abs=1e-6)


def test_a_stop_after_a_pass_ends_the_run_before_its_probabilities_are_moved_back(monkeypatch):
    """A stop that comes as a pass's last window ends: nothing more is warped (before: that pass was moved back
    and the next copy made, whole-volume resamplings of every channel, seconds each on a CT, before the stop was
    seen)."""
    from TokenUNetSegmentLib.pipeline import test_time_augmentation

    real_warp, stopped, warped_after = test_time_augmentation._warp, [], []

    def warp(volume, grid):
        if stopped:
            warped_after.append(volume.shape[1])
        return real_warp(volume, grid)

    def run(changed, index):
        if index == 2:
            stopped.append(True)
        return pointwise_scores(changed)

    def check():
        if stopped:
            raise CancelledError()

    monkeypatch.setattr(test_time_augmentation, "_warp", warp)
    image = ball_phantom((40, 44, 20), (12, 30, 10), (6, 5, 4), value=1.0, background=0.0)[None]
    with pytest.raises(CancelledError):
        averaged_scores(image, pointwise_scores(image), run, np.eye(3), 2.0, check=check)
    assert stopped and warped_after == []


class InfiniteNet(ThresholdNet):
    """Scores past float16's range where the image is bright (+inf, as a CUDA run's half precision can give)."""

    has_tokens = False

    def forward(self, x, return_attention=False):
        bright = torch.where(x[:, :1] > 0.5, torch.tensor(float("inf")), torch.tensor(-5.0))
        return torch.cat([torch.zeros_like(bright), bright], dim=1)


def test_infinite_scores_keep_their_labels_when_averaged():
    """+inf scores label their voxels without augmentation; averaged they keep them (before: the softmax of +inf
    was NaN, and every such voxel lost its label: 0 voxels labelled instead of the ball)."""
    package = threshold_package()
    package.network = InfiniteNet()
    phantom = off_centre_phantom()
    plain = segment(phantom, package, device="cpu")
    averaged = segment(phantom, package, device="cpu", test_time_augmentation=True, probabilities=True)
    assert plain.labels.any()
    assert dice(plain.labels == 1, averaged.labels == 1) > 0.97
    assert np.isfinite(averaged.probabilities["ball"]).all()


THIN_SLAB = (ball_phantom((80, 70, 3), (40, 35, 1), (20, 15, 3)), affine_from_spacing((2.0, 2.0, 2.0)))


@pytest.mark.parametrize("case", ["scan", "thin slab"])
def test_the_memory_check_counts_the_averaging_over_the_region_the_passes_run_on(case, monkeypatch):
    """The exact check adds what the averaging holds over the network's input region, the windows alone unchanged.
    A 3-slice slab's region is padded to the window (32 slices): before, the averaging was counted over the model
    grid's 3, a tenth of what it holds."""
    package, estimates, regions = threshold_package(), [], []
    real = segmentation.averaged_scores
    monkeypatch.setattr(segmentation, "check_memory", lambda estimate, device: estimates.append(dict(estimate)))
    monkeypatch.setattr(
        segmentation, "averaged_scores", lambda image, *rest: regions.append(image.shape[1:]) or real(image, *rest)
    )
    inputs = off_centre_phantom() if case == "scan" else THIN_SLAB
    segment(inputs, package, device="cpu")
    segment(inputs, package, device="cpu", test_time_augmentation=True)
    plain, averaged = estimates
    assert averaged["host"] - plain["host"] == augmentation_bytes(2, 1, int(np.prod(regions[0])))
    assert averaged["window"] == plain["window"]
    assert case == "scan" or regions[0][2] == 32


class SigmoidThresholdNet(ThresholdNet):
    """One sigmoid region: logit 4 where the image is bright (probability 0.982), -4 elsewhere."""

    has_tokens = False

    def __init__(self):
        super().__init__()
        self.out_channels = 1

    def forward(self, x, return_attention=False):
        return 8.0 * (x[:, :1] - 0.5)


def test_a_sigmoid_region_at_the_scans_edge_keeps_its_probability():
    """A body that fills the field of view in-plane, a sigmoid package: each pass moved back keeps its values up to
    the scan's edge (before: the half voxel inside the edge was blended with zeros: 0.887 for 0.982 along the edges,
    0.761 in the corners, enough to drop a region whose probability is below 0.8 there)."""
    from helpers.packages import tiny_config
    from TokenUNetSegmentLib.pipeline.package_writer import package_in_memory

    config = tiny_config("sigmoid", labels=1, activation="sigmoid", roi=(32, 32, 32))
    package = package_in_memory(SigmoidThresholdNet(), config, "sigmoid")
    image = np.full((64, 64, 40), 500.0, np.float32)
    image[:, :, :5] = -1000.0
    body = (image, affine_from_spacing((2.0, 2.0, 2.0)))
    plain = segment(body, package, device="cpu", probabilities=True)
    averaged = segment(body, package, device="cpu", probabilities=True, test_time_augmentation=True)
    inside = plain.probabilities["organ1"][:, :, 8:]
    np.testing.assert_allclose(averaged.probabilities["organ1"][:, :, 8:], inside, atol=0.01)
