"""The pipeline's own window stitching against MONAI's ``sliding_window_inference`` with the settings the
pipeline used to pass it: the same windows, weights, padding and crop, for full-grid and coarse outputs."""

import monai.data.utils
import pytest
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from TokenUNetSegmentLib.pipeline.inference import scan_plan
from TokenUNetSegmentLib.pipeline.stitching import importance_map, stitch_windows, window_starts


@pytest.mark.parametrize("roi", [(32, 32, 32), (64, 48, 16), (7, 9, 5)])
@pytest.mark.parametrize("blending", ["gaussian", "constant"])
def test_importance_maps_are_monais(roi, blending):
    ours = importance_map(roi, blending)
    theirs = monai.data.utils.compute_importance_map(roi, mode=blending, sigma_scale=0.125)
    assert ours.shape == (1, 1, *roi)
    torch.testing.assert_close(ours[0, 0], theirs.float(), rtol=1e-6, atol=1e-7)


def _predictor(roi, multiple, calls):
    """A window's outputs that depend on where a voxel sits in the window, so the blending weights matter:
    logits (3 channels) on the window's grid, and 2 'token' channels on a grid ``multiple`` times coarser."""
    ramp = torch.stack(torch.meshgrid(*(torch.linspace(-1, 1, r) for r in roi), indexing="ij"))[None]

    def predict(window):
        calls.append(window.shape[0])
        logits = torch.cat([window * 2.0, window.square(), window + ramp.sum(1, keepdim=True)], dim=1)[:, :3]
        coarse = F.avg_pool3d(torch.cat([window, (window + ramp[:, :1]).sin()], dim=1)[:, :2], multiple)
        return logits + ramp[:, :1], coarse

    return predict


@pytest.mark.parametrize(
    "shape, roi, overlap, batch",
    [
        ((48, 40, 64), (32, 32, 32), 0.25, 1),
        ((80, 56, 24), (32, 32, 32), 0.5, 3),  # z shorter than the window: padded on both sides
        ((16, 64, 40), (32, 16, 32), 0.25, 2),  # x padded by 16: an odd number of coarse voxels each side
        ((32, 32, 32), (32, 32, 32), 0.25, 1),  # one window
    ],
)
@pytest.mark.parametrize("blending", ["gaussian", "constant"])
def test_stitching_matches_monais_sliding_window_inference(shape, roi, overlap, batch, blending):
    multiple = 8
    image = torch.randn(1, 1, *shape)
    overlaps, count = scan_plan(shape, roi, overlap, multiple)
    ours_calls, theirs_calls = [], []
    ours = stitch_windows(image, roi, overlaps, batch, _predictor(roi, multiple, ours_calls), blending)
    theirs = sliding_window_inference(
        image,
        roi,
        batch,
        _predictor(roi, multiple, theirs_calls),
        overlap=overlaps,
        mode=blending,
        sigma_scale=0.125,
        padding_mode="constant",
        cval=0.0,
    )
    assert ours_calls == theirs_calls and sum(ours_calls) == count
    assert len(ours) == 2
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine.shape == reference.shape and mine.dtype == torch.float32
        torch.testing.assert_close(mine, reference.as_tensor() if hasattr(reference, "as_tensor") else reference)


def test_a_single_output_comes_back_as_one_volume():
    image = torch.randn(1, 2, 20, 20, 20)
    (out,) = stitch_windows(image, (16, 16, 16), [0.25] * 3, 2, lambda w: w[:, :1] * 3.0)
    torch.testing.assert_close(out, image[:, :1] * 3.0)  # the same value from every window blends to itself


def test_window_starts_cover_the_axis_and_end_at_its_edge():
    assert window_starts(32, 32, 0.5) == [0]
    assert window_starts(100, 32, 0.25) == [0, 24, 48, 68]
    for size in range(16, 90):
        starts = window_starts(size, 16, 0.3)
        assert starts[0] == 0 and starts[-1] == size - 16
        assert all(b - a <= 16 for a, b in zip(starts[:-1], starts[1:], strict=True))  # no voxel left out
