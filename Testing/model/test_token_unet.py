"""Token-UNet family: exact parameter counts, shapes, token maps, validation, gradients, round trips."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from TokenUNetSegmentLib.model import TOKEN_UNET_VARIANTS, TokenUNet, build_network

# The spec's table (in_channels 4, out_channels 3).
EXPECTED_PARAMETERS = {
    "NoToken": 1_669_058,
    "8Token": 1_687_706,
    "8MLP": 1_826_974,
    "8Attn": 1_949_854,
    "32Token": 1_694_882,
    "32MLP": 1_858_726,
    "32Attn": 1_957_030,
    "32AttnLong": 2_743_474,
}
SMALL = {"channels": (4, 8, 16, 32)}


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_every_paper_variant_is_registered():
    assert set(TOKEN_UNET_VARIANTS) == set(EXPECTED_PARAMETERS)


@pytest.mark.parametrize("name", EXPECTED_PARAMETERS)
def test_parameter_count_matches_spec_exactly(name):
    assert count(build_network(name, 4, 3)) == EXPECTED_PARAMETERS[name]


def test_parameter_breakdown_matches_spec():
    net = build_network("8Attn", 4, 3)
    assert count(net.encoder) == 324_332
    assert count(net.decoder) == 1_344_675
    assert count(net.head) == 51
    assert count(net.token_learner) == 17_544
    assert count(net.token_fuser) == 1_104
    assert count(net.token_processor[0]) == 131_074
    assert count(build_network("8MLP", 4, 3).token_processor[0]) == 69_634
    assert count(build_network("32MLP", 4, 3).token_processor[0]) == 81_922


@pytest.mark.parametrize("name", ["NoToken", "8MLP", "32Attn"])
@pytest.mark.parametrize("shape", [(1, 4, 32, 32, 32), (2, 4, 16, 24, 40)])
def test_logits_shape_for_cubic_non_cubic_and_batched_inputs(name, shape):
    net = build_network(name, 4, 3).eval()
    with torch.no_grad():
        logits = net(torch.randn(shape))
    assert logits.shape == (shape[0], 3, *shape[2:])
    assert torch.isfinite(logits).all()


def test_single_channel_input():
    net = build_network("8Token", 1, 5).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 16, 16, 32)).shape == (1, 5, 16, 16, 32)


@pytest.mark.parametrize("name,tokens", [("8Token", 8), ("8Attn", 8), ("32MLP", 32), ("32AttnLong", 32)])
def test_attention_maps_shape_and_range(name, tokens):
    net = build_network(name, 4, 3, **SMALL).eval()
    x = torch.randn(2, 4, 32, 16, 48)
    with torch.no_grad():
        logits, maps = net(x, return_attention=True)
        plain = net(x)
    assert torch.equal(logits, plain)
    assert set(maps) == {"gather", "broadcast"}
    for tensor in maps.values():
        assert tensor.shape == (2, tokens, 4, 2, 6)
        assert tensor.min() > 0 and tensor.max() < 1


def test_gather_maps_pool_a_mask_weighted_mean_of_raw_features():
    """Tokens are the gather-map-weighted means of the unnormalised bottleneck features."""
    net = build_network("8Token", 1, 2, **SMALL).eval()
    x = torch.randn(1, 32, 64) * 5 + 3
    normalized = x / x.norm(dim=1, keepdim=True) * 32**0.5
    tokens, gather = net.token_learner(x, normalized)
    weights = gather / gather.sum(-1, keepdim=True)
    expected = net.token_learner.projection(torch.einsum("bnv,bcv->bnc", weights, x))
    torch.testing.assert_close(tokens, expected)


def test_no_token_network_refuses_attention_request():
    net = build_network("NoToken", 4, 3)
    with pytest.raises(ValueError, match="no tokens"):
        net(torch.randn(1, 4, 16, 16, 16), return_attention=True)


@pytest.mark.parametrize(
    "x,message",
    [
        (torch.randn(1, 4, 20, 16, 16), "multiple of 8"),
        (torch.randn(1, 3, 16, 16, 16), "3 channels but the network expects 4"),
        (torch.randn(4, 16, 16, 16), "must be 5D"),
        (torch.randn(1, 4, 16, 16, 0), "multiple of 8"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_problem(x, message):
    with pytest.raises(ValueError, match=message):
        build_network("8Token", 4, 3)(x)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"num_tokens": -1}, "num_tokens"),
        ({"processor": "lstm"}, "unknown token processor"),
        ({"processor_depth": 0}, "depth"),
        ({"num_heads": 5}, "divisible by the number of heads"),
        ({"channels": (16,)}, "at least two"),
        ({"blocks_per_stage": (1, 1)}, "blocks_per_stage"),
        ({"bogus": 1}, "invalid argument"),
    ],
)
def test_bad_configurations_raise_value_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_network("32Attn", 4, 3, **overrides)


def test_zero_tokens_with_a_processor_and_other_bad_values_are_refused_by_name():
    with pytest.raises(ValueError, match="num_tokens=0 leaves no tokens"):
        build_network("32Attn", 4, 3, num_tokens=0)
    with pytest.raises(ValueError, match="num_tokens"):
        TokenUNet(4, 3, num_tokens=0.5)
    with pytest.raises(ValueError, match="unknown network"):
        build_network("64Attn", 4, 3)
    with pytest.raises(ValueError, match="in_channels"):
        build_network("8Attn", 0, 3)


def test_configurable_depths_and_widths():
    net = build_network(
        "8Attn",
        2,
        4,
        channels=(8, 16, 32),
        blocks_per_stage=(1, 2, 2),
        decoder_blocks=2,
        processor_depth=3,
        full_resolution_skip=True,
    ).eval()
    assert net.size_multiple == 4
    assert len(net.token_processor) == 3
    assert [len(stage) for stage in net.encoder] == [1, 2, 2]
    with torch.no_grad():
        logits, maps = net(torch.randn(1, 2, 12, 8, 16), return_attention=True)
    assert logits.shape == (1, 4, 12, 8, 16)
    assert maps["gather"].shape == (1, 8, 3, 2, 4)


@pytest.mark.parametrize("name", ["8MLP", "32AttnLong", "NoToken"])
def test_gradients_reach_every_parameter(name):
    net = build_network(name, 4, 3, **SMALL)
    logits = net(torch.randn(2, 4, 16, 16, 16))
    logits.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing


def test_eval_mode_is_deterministic():
    net = build_network("32Attn", 4, 3, **SMALL).eval()
    x = torch.randn(1, 4, 16, 32, 16)
    with torch.no_grad():
        first, maps_a = net(x, return_attention=True)
        second, maps_b = net(x, return_attention=True)
    assert torch.equal(first, second)
    assert torch.equal(maps_a["broadcast"], maps_b["broadcast"])


def test_state_dict_round_trip_through_safetensors(tmp_path):
    net = build_network("8MLP", 4, 3, **SMALL).eval()
    path = tmp_path / "model.safetensors"
    save_file(net.state_dict(), str(path))
    torch.manual_seed(123)
    twin = build_network("8MLP", 4, 3, **SMALL).eval()
    twin.load_state_dict(load_file(str(path)), strict=True)
    x = torch.randn(1, 4, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), twin(x))


def test_alpha_gates_start_near_the_shortcut():
    net = build_network("8Attn", 4, 3)
    gates = [m.alpha for n, m in net.named_modules() if n.endswith("gate")]
    assert gates and all(abs(g.item() + 2.5) < 1e-7 for g in gates)


def reference_encoder_block(block, x):
    """The spec's EncoderBlock written plainly with the block's own modules."""
    import torch.nn.functional as F

    shortcut = F.avg_pool3d(x, 2) if block.downsample else x
    return block.gate(block.projection(shortcut), block.residual(x))


def reference_up_block(block, x):
    """The spec's UpBlock written plainly: upsample, then project; ConvTranspose3d module."""
    import torch.nn.functional as F

    shortcut = block.projection(F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False))
    return block.gate(shortcut, block.residual(x))


@pytest.mark.parametrize("in_channels,out_channels,downsample", [(4, 16, False), (16, 32, True), (8, 8, False)])
def test_fused_encoder_block_equals_the_plain_formula(in_channels, out_channels, downsample):
    from TokenUNetSegmentLib.model.blocks import EncoderBlock

    block = EncoderBlock(in_channels, out_channels, downsample=downsample)
    block.gate.alpha.data.fill_(0.3)
    x = torch.randn(2, in_channels, 8, 12, 16)
    torch.testing.assert_close(block(x), reference_encoder_block(block, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("in_channels,out_channels", [(16, 8), (8, 8)])
def test_fused_up_block_equals_the_plain_formula(in_channels, out_channels):
    from TokenUNetSegmentLib.model.blocks import UpBlock

    block = UpBlock(in_channels, out_channels)
    block.gate.alpha.data.fill_(-0.4)
    with torch.no_grad():
        block.residual[4].bias.normal_()
    x = torch.randn(2, in_channels, 4, 6, 8)
    torch.testing.assert_close(block(x), reference_up_block(block, x), atol=1e-5, rtol=1e-5)


def test_fused_blocks_have_the_plain_gradients():
    from TokenUNetSegmentLib.model.blocks import UpBlock

    block = UpBlock(8, 4)
    x = torch.randn(1, 8, 4, 4, 4)
    block(x).square().sum().backward()
    fused = {n: p.grad.clone() for n, p in block.named_parameters()}
    block.zero_grad()
    reference_up_block(block, x).square().sum().backward()
    for name, parameter in block.named_parameters():
        torch.testing.assert_close(fused[name], parameter.grad, atol=1e-4, rtol=1e-4)


def test_transposed_accumulation_in_slabs_equals_conv_transpose():
    from TokenUNetSegmentLib.model.fused_ops import accumulate_transposed_k2s2

    conv = torch.nn.ConvTranspose3d(6, 3, 2, stride=2, bias=False)
    x = torch.randn(2, 6, 5, 3, 4)
    base = torch.randn(2, 3, 10, 6, 8)
    expected = base + conv(x)
    for chunk in (1, 3 * 8 * 3 * 4 * 2, 10**9):  # one depth slice, two slices, everything at once
        torch.testing.assert_close(accumulate_transposed_k2s2(base.clone(), x, conv.weight, chunk), expected)


@pytest.mark.parametrize("shape", [(1, 3, 4, 6, 8), (2, 2, 1, 5, 3), (1, 1, 2, 1, 1)])
def test_fast_trilinear_upsampling_equals_torch(shape):
    import torch.nn.functional as F
    from TokenUNetSegmentLib.model.fused_ops import upsample2x_trilinear

    x = torch.randn(shape)
    expected = F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(upsample2x_trilinear(x), expected)
    x.requires_grad_(True)
    torch.testing.assert_close(upsample2x_trilinear(x), expected)  # the autograd path
