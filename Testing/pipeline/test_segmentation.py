"""segment() with real (tiny, random-weight) Token-UNet packages: outputs, progress, cancel, options."""

import threading

import numpy as np
import pytest
import torch
from helpers.packages import TINY, ThresholdNet, ball_phantom, make_package, threshold_package, tiny_config
from helpers.readers import refuse_reading, sparse_nrrd
from TokenUNetSegmentLib.pipeline.errors import CancelledError, OutOfMemoryError
from TokenUNetSegmentLib.pipeline.inference import scan_plan, sliding_window
from TokenUNetSegmentLib.pipeline.metadata import parse_config
from TokenUNetSegmentLib.pipeline.package_loader import load_package
from TokenUNetSegmentLib.pipeline.postprocess import keep_largest_component, labels_from_logits, token_label_dice
from TokenUNetSegmentLib.pipeline.segmentation import segment

AFFINE = np.diag([1.6, 1.6, 2.4, 1.0])


@pytest.fixture(scope="module")
def ct_package(tmp_path_factory):
    return load_package(make_package(tmp_path_factory.mktemp("pkg"), tiny_config(roi=(32, 32, 32))))


@pytest.fixture(scope="module")
def phantom():
    return ball_phantom((44, 40, 26), (22, 20, 13), (9, 9, 6)), AFFINE


@pytest.fixture(scope="module")
def large_phantom():  # model grid 64 x 56 x 40: 2 x 2 x 2 windows of 32^3 without overlap
    return ball_phantom((80, 70, 33), (40, 35, 16), (20, 20, 8)), AFFINE


def test_result_has_everything_on_the_input_grid(ct_package, phantom):
    result = segment(phantom, ct_package, device="cpu", probabilities=True)
    shape = phantom[0].shape
    assert result.labels.shape == shape and result.labels.dtype == np.uint8
    assert set(np.unique(result.labels)) <= {0, 1, 2}
    np.testing.assert_array_equal(result.affine, AFFINE)
    assert [label.name for label in result.label_table] == ["organ1", "organ2"]
    assert result.token_maps.kinds == ["gather", "broadcast"] and result.token_maps.num_tokens == 8
    for kind in ("gather", "broadcast"):
        maps = result.token_maps.all(kind)
        assert maps.shape == (8, *shape) and maps.dtype == np.float32
        assert maps.min() >= 0 and maps.max() <= 1 and maps.max() > 0.5
    assert len(result.token_matches) == 16
    for match in result.token_matches:
        assert match["best_label"] in ("organ1", "organ2") and 0 <= match["soft_dice"] <= 1
        assert match["soft_dice"] == max(match["scores"].values())
    probs = result.probabilities
    assert set(probs) == {"organ1", "organ2"} and probs["organ1"].shape == shape
    assert np.all((probs["organ1"] + probs["organ2"]) <= 1 + 1e-5)
    voxel_ml = 1.6 * 1.6 * 2.4 / 1000
    for label in result.label_table:
        assert result.volumes_ml[label.name] == pytest.approx((result.labels == label.value).sum() * voxel_ml)
    assert set(result.timings) == {"load", "preprocess", "inference", "postprocess", "map back", "total"}
    report = result.report()
    assert report["model"] == "tiny-ct" and report["device"] == "cpu" and len(report["labels"]) == 2


def test_progress_is_monotonic_and_reaches_one(large_phantom):
    calls = []
    segment(
        large_phantom,
        threshold_package(),
        device="cpu",
        with_token_maps=False,
        overlap=0.0,
        progress=lambda stage, f: calls.append((stage, f)),
    )
    fractions = [f for _, f in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and fractions[0] < 0.1
    stages = [s for s, _ in calls]
    assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == [
        "load",
        "preprocess",
        "inference",
        "postprocess",
        "map back",
        "done",
    ]
    assert sum(s == "inference" for s in stages) == 8 + 2  # one report per window, and the stage's start and end


def test_cancel_between_windows(large_phantom):
    event = threading.Event()
    seen = []

    def progress(stage, fraction):
        seen.append(stage)
        if stage == "inference" and seen.count("inference") == 3:
            event.set()

    with pytest.raises(CancelledError):
        segment(large_phantom, threshold_package(), device="cpu", progress=progress, cancel=event, overlap=0.0)
    assert seen.count("inference") == 3  # no window ran after the cancel
    with pytest.raises(CancelledError):
        segment(large_phantom, threshold_package(), device="cpu", cancel=lambda: True)


def test_scan_plan_counts_windows_and_keeps_steps_on_the_token_grid(ct_package):
    overlaps, count = scan_plan((64, 40, 32), (32, 32, 32), 0.3, 8)
    steps = [int(32 * (1 - o)) for o in overlaps]
    assert steps == [16, 16, 16] and count == 3 * 2 * 1
    calls = []
    network = ct_package.network

    class Counting(torch.nn.Module):
        size_multiple, has_tokens, num_tokens = 8, True, 8

        def forward(self, x, return_attention=False):
            calls.append(x.shape[0])
            return network(x, return_attention=return_attention)

    logits, maps = sliding_window(Counting(), np.zeros((1, 64, 40, 32), np.float32), (32, 32, 32), 0.3)
    assert sum(calls) == count
    assert logits.shape == (3, 64, 40, 32) and maps["gather"].shape == (8, 8, 5, 4)


def test_networks_without_tokens_keep_the_requested_overlap():
    calls = []

    class Plain(torch.nn.Module):
        size_multiple, has_tokens = 32, False

        def forward(self, x):
            calls.append(x.shape[0])
            return torch.zeros(x.shape[0], 2, *x.shape[2:])

    logits, maps = sliding_window(Plain(), np.zeros((1, 96, 64, 64), np.float32), (64, 64, 64), 0.25)
    # step int(64 * 0.75) = 48, not rounded to 32: 2 windows along the first axis
    assert maps is None and logits.shape == (2, 96, 64, 64) and sum(calls) == 2


def test_small_image_is_padded_not_refused(ct_package):
    image = ball_phantom((9, 7, 5), (4, 3, 2), (3, 3, 2))
    result = segment((image, np.diag([1.0, 1.0, 1.0, 1.0])), ct_package, device="cpu")
    assert result.labels.shape == (9, 7, 5)
    assert result.token_maps.get("broadcast", 0).shape == (9, 7, 5)


def test_the_small_volume_warning_gives_sizes_below_a_millimetre():
    """A file in the wrong units (microns read as millimetres) spans a fraction of a millimetre: the warning says
    how much instead of '0 x 0 x 0 mm'."""
    from TokenUNetSegmentLib.pipeline.geometry import Grid
    from TokenUNetSegmentLib.pipeline.preprocess import small_volume_warning

    tiny = Grid((122, 101, 112), np.diag([0.003, 0.003, 0.003, 1.0]))
    model = Grid((64, 64, 64), np.diag([3.0, 3.0, 3.0, 1.0]))
    assert "(122 x 101 x 112 voxels, 0.37 x 0.3 x 0.34 mm;" in small_volume_warning(tiny, model, (64, 64, 64))
    large = Grid((9, 7, 5), np.diag([40.0, 40.0, 1.0, 1.0]))
    assert "360 x 280 x 5 mm" in small_volume_warning(large, model, (64, 64, 64))


def test_constant_image_warns_and_runs(ct_package):
    image = np.full((30, 30, 20), 40.0, np.float32)
    with pytest.warns(UserWarning, match="constant"):
        result = segment((image, AFFINE), ct_package, device="cpu")
    assert result.labels.shape == image.shape and any("constant" in w for w in result.warnings)


def test_crop_to_foreground_keeps_labels_in_place():
    image = ball_phantom((80, 80, 40), (25, 30, 20), (8, 8, 6))
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    full = segment((image, affine), threshold_package(spacing=(1.0, 1.0, 1.0)), device="cpu")
    cropped = segment((image, affine), threshold_package(spacing=(1.0, 1.0, 1.0), crop=True), device="cpu")
    np.testing.assert_array_equal(full.labels, cropped.labels)
    assert (full.labels == 1).sum() > 100


def test_sigmoid_regions_are_applied_in_order():
    cfg = tiny_config(activation="sigmoid", labels=3)
    cfg["inference"]["regions"] = [{"channel": 2, "label": 2}, {"channel": 1, "label": 1}, {"channel": 0, "label": 3}]
    logits = np.full((3, 4, 4, 4), -5.0, np.float32)
    logits[2, :3] = 5  # whole region
    logits[1, :2] = 5  # core
    logits[0, :1] = 5  # enhancing
    from TokenUNetSegmentLib.pipeline.metadata import Label

    labels = labels_from_logits(logits, parse_config(cfg).inference, [Label(v, f"l{v}", (0, 0, 0)) for v in (1, 2, 3)])
    assert labels[0].max() == labels[0].min() == 3
    assert np.all(labels[1] == 1) and np.all(labels[2] == 2) and np.all(labels[3] == 0)


def test_sigmoid_package_segments(tmp_path):
    package = load_package(
        make_package(
            tmp_path,
            tiny_config("brats", in_channels=2, activation="sigmoid", labels=3, intensity={"method": "zscore"}),
        )
    )
    image = ball_phantom((24, 24, 24), (12, 12, 12), (6, 6, 6), value=300, background=0)
    result = segment([(image, np.eye(4)), (image * 2, np.eye(4))], package, device="cpu", probabilities=True)
    assert result.labels.shape == (24, 24, 24)
    assert set(result.probabilities) == {"organ1", "organ2", "organ3"}


def test_largest_component_cleanup():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:8, 2:8, 2:8] = 1
    labels[15:17, 15:17, 15:17] = 1
    labels[12:14, 2:4, 2:4] = 2
    keep_largest_component(labels, [1])
    assert labels[16, 16, 16] == 0 and labels[4, 4, 4] == 1 and labels[13, 3, 3] == 2


def test_token_label_dice_matches_the_fine_grid_computation():
    torch.manual_seed(1)
    maps = torch.rand(3, 2, 2, 2).numpy()
    labels = (torch.rand(16, 16, 16) * 3).to(torch.uint8).numpy()
    got = token_label_dice(maps, labels, [1, 2])
    fine = torch.nn.functional.interpolate(torch.from_numpy(maps)[None], scale_factor=8, mode="nearest")[0].numpy()
    for t in range(3):
        for c, v in enumerate([1, 2]):
            y = labels == v
            expected = 2 * (fine[t] * y).sum() / (fine[t].sum() + y.sum())
            assert got[t, c] == pytest.approx(expected, rel=1e-6)


def test_networks_without_tokens_segment_without_heatmaps(tmp_path, phantom):
    package = load_package(make_package(tmp_path, tiny_config("plain", arch="NoToken", roi=(32, 32, 32))))
    assert not package.network.has_tokens
    result = segment(phantom, package, device="cpu")
    assert result.labels.shape == phantom[0].shape
    assert result.token_maps is None and result.token_matches == []
    from TokenUNetSegmentLib.pipeline.outputs import write_outputs

    written = write_outputs(result, tmp_path / "out", image=phantom[0])
    assert "attention" not in written and (tmp_path / "out" / "segmentation.seg.nrrd").is_file()
    assert (tmp_path / "out" / "overview.png").is_file()


def test_channel_argmax_equals_torch_argmax_with_ties():
    import torch
    from TokenUNetSegmentLib.pipeline.postprocess import channel_argmax

    scores = torch.randn(5, 6, 7, 8)
    scores[3, :2] = scores[1, :2]  # ties go to the first channel, as with torch.argmax
    scores[:, 4] = 0.0
    assert torch.equal(channel_argmax(scores).long(), torch.argmax(scores, dim=0))


def test_a_network_without_what_the_pipeline_needs_is_refused_clearly():
    from TokenUNetSegmentLib.model import build_network
    from TokenUNetSegmentLib.pipeline.errors import ModelPackageError
    from TokenUNetSegmentLib.pipeline.network import SegmentationNetwork
    from TokenUNetSegmentLib.pipeline.package_writer import package_in_memory

    class Bare(torch.nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ModelPackageError, match="lacks size_multiple, has_tokens"):
        package_in_memory(Bare(), tiny_config())
    networks = [build_network("8Token", 1, 3, **TINY), build_network("MetaUNETR-conv", 1, 3, feature_size=12)]
    assert all(isinstance(net, SegmentationNetwork) for net in [*networks, ThresholdNet()])


def test_a_high_overlap_says_what_it_costs_and_what_it_acts_as(ct_package, large_phantom):
    """``overlap`` is MONAI's (the share of a window its neighbour repeats: the window count grows about as
    1 / (1 - overlap)^3). Before: 0.9 silently ran many times the windows of the package's 0.25 and, with window
    steps rounded to the token cell, acted as a lower overlap than asked. Now a warning says both, before the
    network runs (also when the rounding raises it); the package's own overlap says nothing."""
    with pytest.warns(UserWarning) as caught:
        result = segment(large_phantom, ct_package, device="cpu", overlap=0.9, with_token_maps=False)
    (message,) = [str(w.message) for w in caught if "overlap 0.9" in str(w.message)]
    assert message in result.warnings
    # 32^3 windows, steps of 8 voxels (32 * 0.1 = 3 rounds up to one 8-voxel token cell)
    assert "runs 40 windows, 3.3 times the 12 of the model's overlap 0.25" in message
    assert "acts as overlap 0.75 for 32x32x32 windows" in message
    quiet = segment(large_phantom, ct_package, device="cpu", overlap=0.25, with_token_maps=False)
    assert not any("overlap" in w for w in quiet.warnings)
    with pytest.warns(UserWarning, match=r"overlap 0.3 runs 18 windows, 1.5 times .* acts as overlap 0.50"):
        segment(large_phantom, ct_package, device="cpu", overlap=0.3, with_token_maps=False)


def test_labels_do_not_depend_on_whether_token_maps_are_kept(ct_package, large_phantom):
    """Before: without token maps the window steps were not rounded to the token cell, so ``--no-heatmaps``
    changed the windows (``--overlap 0.9`` on the sample: 57 s against 29 s with maps) and the labels."""
    with_maps = segment(large_phantom, ct_package, device="cpu", overlap=0.6)
    without = segment(large_phantom, ct_package, device="cpu", overlap=0.6, with_token_maps=False)
    np.testing.assert_array_equal(with_maps.labels, without.labels)


def test_a_file_whose_run_cannot_fit_is_refused_from_its_header_before_it_is_read(cli_case, tmp_path, monkeypatch):
    """A 512 x 512 x 200 int16 header under TOKENUNET_MEMORY_LIMIT=400M: reading it fits (210 MB), the run does not
    (about 0.5 GB). Before: segment() read the voxels and refused only then (the audit's 1024 x 1024 x 400 file:
    2.07 GB peak RSS before the refusal, against 0.16 GB for the command line); the same check as the command's."""
    package = load_package(cli_case[1])  # before the limit
    big = sparse_nrrd(tmp_path / "big.nrrd", (512, 512, 200))
    refuse_reading(monkeypatch)
    monkeypatch.setenv("TOKENUNET_MEMORY_LIMIT", "400M")
    for inputs in (str(big), [big], {package.input_names[0]: big}):
        with pytest.raises(OutOfMemoryError, match=r"this run needs about .* TOKENUNET_MEMORY_LIMIT=400M"):
            segment(inputs, package, device="cpu")
    with pytest.raises(AssertionError, match="the voxels of big.nrrd were read"):
        segment(big, package, device="cpu", check_free_memory=False)  # the caller's choice: no check, read
