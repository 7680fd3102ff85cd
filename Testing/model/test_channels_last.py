"""Token-UNet's channels-last CPU inference path against the plain modules and a float64 reference.

Tolerances: a float32 forward of these networks differs from the float64 one by about 1e-6 of the outputs'
scale (measured, relative to the largest magnitude: plain modules 4e-7 to 1.2e-6, channels-last path 6e-7 to
1.9e-6), more where an instance norm has only two voxels to normalise (plain 3.5e-6, channels-last 1.0e-5).
Both paths must stay within 5e-5 of the scale (float32 rounding, 2^-24, amplified by ~10^2-10^3 accumulations
and normalisations), and the channels-last path (folded instance norms, statistics merged in float64, products
in another order) within 4 times the plain path's own error plus 1e-6 of the scale (measured at most 2.9 times).
The bfloat16 path rounds the k3 convolutions' inputs, weights and outputs to 8-bit mantissas (2^-9 relative
each): over the 7 convolutions the logits move by about 0.7 % of their scale (measured 0.65 %), so 3 % bounds it.
"""

import pytest
import torch
import torch.nn.functional as F
from TokenUNetSegmentLib.model import TokenUNet, build_network
from TokenUNetSegmentLib.model import channels_last as cl

FLOAT32_TOLERANCE = 5e-5  # of the outputs' largest magnitude
RELATIVE_ERROR_BOUND = 4  # the channels-last path's error over the plain path's
BFLOAT16_TOLERANCE = 3e-2


def _randomise_gates(net: torch.nn.Module) -> torch.nn.Module:
    """Gates away from their initial 0.076, so every residual path weighs in the comparison."""
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if name.endswith("alpha"):
                parameter.uniform_(-1.5, 1.5)
    return net.eval()


def _outputs(net: TokenUNet, x: torch.Tensor, channels_last: bool) -> list[torch.Tensor]:
    net.channels_last_inference = channels_last
    try:
        with torch.inference_mode():
            out = net(x, return_attention=True) if net.has_tokens else net(x)
    finally:
        del net.channels_last_inference  # back to the class default
    return [out[0], out[1]["gather"], out[1]["broadcast"]] if net.has_tokens else [out]


def _float64_reference(net: TokenUNet, x: torch.Tensor) -> list[torch.Tensor]:
    exact = _outputs(net.double(), x.double(), channels_last=False)
    net.float()
    return exact


CONFIGS = {
    "32AttnLong": ("32AttnLong", {}, (1, 2, 32, 32, 32)),
    "8MLP, batch of 2": ("8MLP", {}, (2, 2, 16, 24, 32)),
    "NoToken, 1 channel": ("NoToken", {}, (1, 1, 16, 16, 16)),
    "deeper stages, skip": (
        "32Token",
        {"blocks_per_stage": 2, "decoder_blocks": 2, "full_resolution_skip": True, "channels": (8, 16, 32, 64)},
        (1, 3, 24, 16, 16),
    ),
    "two-voxel bottleneck": ("8Attn", {"channels": (4, 8, 16, 32)}, (1, 2, 16, 8, 8)),
}


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_channels_last_path_is_as_precise_as_the_plain_modules(config):
    name, overrides, shape = config
    net = _randomise_gates(build_network(name, shape[1], 3, **overrides))
    x = torch.randn(shape) * 3 + 1  # not already normalised: the input norm matters
    exact = _float64_reference(net, x)
    plain = _outputs(net, x, channels_last=False)
    fast = _outputs(net, x, channels_last=True)
    for reference, p, f in zip(exact, plain, fast, strict=True):
        scale = float(reference.abs().max())
        plain_error = float((p.double() - reference).abs().max())
        fast_error = float((f.double() - reference).abs().max())
        assert f.dtype == torch.float32 and f.shape == p.shape
        assert plain_error < FLOAT32_TOLERANCE * scale and fast_error < FLOAT32_TOLERANCE * scale
        assert fast_error < RELATIVE_ERROR_BOUND * plain_error + 1e-6 * scale
    assert fast[0].is_contiguous()  # logits channels-first, as the plain modules return them


def test_bfloat16_autocast_runs_the_convolutions_in_bfloat16_within_its_tolerance():
    net = _randomise_gates(build_network("32Attn", 2, 3))
    x = torch.randn(1, 2, 32, 32, 32)
    full = _outputs(net, x, channels_last=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = _outputs(net, x, channels_last=True)
    for f, h in zip(full, half, strict=True):
        assert h.dtype == torch.float32
        difference = float((h - f).abs().max()) / float(f.abs().max())
        assert 0 < difference < BFLOAT16_TOLERANCE  # rounded (so bfloat16 really ran), but close


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_the_plain_modules_run_under_autocast_as_on_cuda(dtype):
    """CUDA runs the plain modules under float16 autocast, where a convolution's half-precision output meets the
    float32 gate-folded weights in the fused pointwise sums (once a type error on every GPU run)."""
    net = _randomise_gates(build_network("32Attn", 2, 3))
    x = torch.randn(1, 2, 32, 32, 32)
    full = _outputs(net, x, channels_last=False)
    with torch.autocast("cpu", dtype=dtype):
        half = _outputs(net, x, channels_last=False)
    for f, h in zip(full, half, strict=True):
        difference = float((h.float() - f).abs().max()) / float(f.abs().max())
        assert 0 < difference < BFLOAT16_TOLERANCE  # rounded (so the lower precision really ran), but close


def test_gates_sum_a_float16_and_a_float32_path_in_float32():
    """Under CUDA autocast a token layer's residual comes out in float16 while its shortcut stays float32."""
    from TokenUNetSegmentLib.model.blocks import AlphaGate

    shortcut, residual = torch.randn(2, 8, 16), torch.randn(2, 8, 16)
    gate = AlphaGate(0.3)
    with torch.no_grad():
        expected = gate(shortcut, residual)
        for a, b in ((shortcut, residual.half()), (shortcut.half(), residual)):
            mixed = gate(a, b)
            assert mixed.dtype == torch.float32
            assert torch.allclose(mixed, expected, atol=2e-3)


def test_both_paths_refuse_a_single_voxel_bottleneck():
    net = build_network("8Token", 1, 2, channels=(4, 8, 16, 32))
    for channels_last in (False, True):
        with pytest.raises(ValueError, match="more than 1 spatial element"):
            _outputs(net, torch.randn(1, 1, 8, 8, 8), channels_last)


def test_the_plain_modules_run_when_gradients_are_needed():
    net = build_network("8Attn", 1, 2, channels=(4, 8, 16, 32))
    x = torch.randn(1, 1, 16, 16, 16)
    assert not net._runs_channels_last(x)  # parameters require grad, grad mode on
    net(x).sum().backward()
    assert net.head.weight.grad is not None
    with torch.no_grad():
        assert net._runs_channels_last(x)
    assert not net._runs_channels_last(x.double()) and not net._runs_channels_last(x.to(torch.bfloat16))


def test_instance_statistics_match_float64_for_large_offsets_and_few_channels():
    # a mean 200 deviations away, 3 channels: one float32 pass over the 262,144 voxels errs by ~1e-3 of a
    # deviation in the mean (measured with torch.batch_norm_update_stats on the whole map)
    x = (torch.randn(2, 3, 64, 64, 64, dtype=torch.float64) * 0.5 + 100).float()
    mean, inverse_std = cl.instance_statistics(cl.channels_last(x), 1e-5)
    variance, expected_mean = torch.var_mean(x.double(), dim=(2, 3, 4), correction=0)
    assert float((mean.double() - expected_mean).abs().max()) < 1e-4 * 0.5  # of a deviation
    torch.testing.assert_close(inverse_std.double(), torch.rsqrt(variance + 1e-5), rtol=1e-4, atol=0)
    normalised = cl.instance_norm(x, 1e-5)
    torch.testing.assert_close(normalised, F.instance_norm(x), rtol=0, atol=2e-4)


@pytest.mark.parametrize("slab_planes", [None, 1, 2])
def test_pooling_upsampling_and_transposed_convolution_match_torch(slab_planes):
    x = cl.channels_last(torch.randn(2, 5, 6, 8, 4))
    torch.testing.assert_close(cl.average_pool2x(x), F.avg_pool3d(x, 2))
    low = cl.channels_last(torch.randn(2, 3, 5, 4, 6))
    hidden = cl.channels_last(torch.randn(2, 7, 5, 4, 6))
    weight, offsets = torch.randn(7, 3, 2, 2, 2), torch.randn(2, 8 * 3)
    matrix = weight.permute(0, 2, 3, 4, 1).reshape(7, 24)[None].expand(2, 7, 24)
    slab = slab_planes and slab_planes * 8 * 3 * 4 * 6  # output values of that many input planes
    out = cl.upsample_and_add_transposed_k2s2(low, hidden, matrix, offsets, slab)
    # the offsets are one constant per output channel and position in the 2x2x2 block
    pattern = offsets.view(2, 2, 2, 2, 3).permute(0, 4, 1, 2, 3).repeat(1, 1, 5, 4, 6)
    expected = (
        F.interpolate(low, scale_factor=2, mode="trilinear", align_corners=False)
        + F.conv_transpose3d(hidden, weight, stride=2)
        + pattern
    )
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
