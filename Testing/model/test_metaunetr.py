"""MetaUNETR family: reference parameter counts, TriCruci geometry, mixers, Mamba paths, shapes, validation."""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from TokenUNetSegmentLib.model import METAUNETR_NAMES, MetaUNETR, build_network, network_names
from TokenUNetSegmentLib.model.mamba import Mamba, cuda_selective_scan, selective_scan
from TokenUNetSegmentLib.model.token_mixers import MIXERS, GlobalFilter, PermuteMLP, build_token_mixer
from TokenUNetSegmentLib.model.tricruci import RecurrentLine, TriCruci, along_axis

# The spec's table (in 1, out 14, 96^3, depths 2-2-2-2, mlp_ratio 4), in millions of parameters.
REFERENCE_MILLIONS = {
    ("attention", 24): 17.69,
    ("attention", 48): 70.14,
    ("conv", 24): 17.35,
    ("conv", 48): 68.87,
    ("recurrence", 24): 18.16,
    ("recurrence", 48): 70.29,
    ("permute_mlp", 48): 70.83,
    ("global_filter", 24): 24.56,
    ("global_filter", 48): 83.30,
}
REFERENCE_DECODER_MILLIONS = {24: 15.52, 48: 62.09}
SMALL = {"feature_size": 12, "img_size": (32, 32, 64)}
SMALL_INPUT = (1, 1, 32, 32, 64)


def count(module):
    return sum(p.numel() for p in module.parameters())


def build_on_meta(name, **overrides):
    """Build without allocating or initialising weights (for counting the big configurations)."""
    with torch.device("meta"):
        return build_network(name, 1, 14, **overrides)


def test_every_mixer_is_registered_by_name():
    assert METAUNETR_NAMES == tuple(f"MetaUNETR-{m}" for m in MIXERS)
    assert set(METAUNETR_NAMES) <= set(network_names())
    assert set(MIXERS) == {"attention", "conv", "recurrence", "permute_mlp", "global_filter", "mamba"}


@pytest.mark.parametrize(("mixer", "feature_size"), list(REFERENCE_MILLIONS))
def test_parameter_count_within_one_percent_of_reference(mixer, feature_size):
    net = build_on_meta(f"MetaUNETR-{mixer}", feature_size=feature_size, img_size=96)
    millions = count(net) / 1e6
    assert millions == pytest.approx(REFERENCE_MILLIONS[mixer, feature_size], rel=0.01)
    decoder = (count(net) - count(net.encoder)) / 1e6
    assert decoder == pytest.approx(REFERENCE_DECODER_MILLIONS[feature_size], rel=0.001)


def test_mamba_parameter_count_follows_the_mamba_block_formula():
    d, n, rank = 24, 16, 2  # Mamba(24): inner 48, state 16, dt rank ceil(24 / 16)
    inner = 2 * d
    expected = d * 2 * inner + inner * 4 + inner + inner * (rank + 2 * n) + rank * inner + inner
    expected += inner * n + inner + inner * d
    assert count(Mamba(d)) == expected
    mixer = build_token_mixer("mamba", d)
    assert count(mixer) == 3 * expected + 3 * d * d + d


def test_permute_mlp_at_feature_size_24_and_96_cubed_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="divisible by its grid side"):
        build_on_meta("MetaUNETR-permute_mlp", feature_size=24, img_size=96)


def test_recurrent_cells_have_the_textbook_parameter_counts():
    c, h = 8, 5
    for cell, gates in (("lstm", 4), ("gru", 3), ("rnn", 1)):
        line = RecurrentLine(c, h, cell)
        assert line.out_features == 2 * h
        assert count(line) == 2 * (gates * h * (c + h) + 2 * gates * h)
        assert line(torch.randn(3, 7, c)).shape == (3, 7, 2 * h)
    with pytest.raises(ValueError, match="unknown recurrent cell 'lstn'"):
        RecurrentLine(c, h, "lstn")


def test_tricruci_reads_and_writes_back_every_line_of_each_axis():
    """A cumulative sum as the 1D mixer must equal torch.cumsum along that axis, voxel for voxel."""

    class CumSum(torch.nn.Module):
        def forward(self, lines):
            return lines.cumsum(dim=1)

    x = torch.randn(2, 3, 4, 5, 6)
    for axis in (1, 2, 3):
        torch.testing.assert_close(along_axis(CumSum(), x, axis), x.cumsum(dim=axis))


def test_tricruci_mixes_only_along_the_three_lines_through_a_voxel():
    layer = TriCruci(4, lambda c: RecurrentLine(c, 3)).eval()
    x = torch.randn(1, 4, 5, 6, 4)
    bumped = x.clone()
    bumped[0, 1, 2, 3] += 1.0
    with torch.no_grad():
        changed = (layer(bumped) - layer(x)).abs().amax(dim=-1)[0] > 1e-7
    h, w, d = torch.meshgrid(torch.arange(4), torch.arange(5), torch.arange(6), indexing="ij")
    on_cross = ((h == 1).int() + (w == 2).int() + (d == 3).int()) >= 2
    assert torch.equal(changed, on_cross)
    assert layer.fuse.in_features == 3 * 6 and layer.fuse.out_features == 4


@pytest.mark.parametrize("mixer", [m for m in MIXERS if m != "attention"])
def test_every_token_mixer_keeps_the_shape_and_passes_gradients(mixer):
    dim, grid = 8, (4, 4, 4)
    module = build_token_mixer(mixer, dim, grid=grid, hidden=3)
    x = torch.randn(2, *grid, dim, requires_grad=True)
    y = module(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_global_filter_with_a_unit_filter_is_the_identity():
    layer = GlobalFilter(3, (4, 6, 8))
    with torch.no_grad():
        layer.complex_weight.zero_()
        layer.complex_weight[..., 0] = 1.0
    x = torch.randn(2, 4, 6, 8, 3)
    torch.testing.assert_close(layer(x), x, atol=1e-5, rtol=1e-5)
    assert layer.complex_weight.shape == (4, 6, 5, 3, 2)


def test_permute_mlp_mixes_each_axis_with_one_linear_and_checks_its_grid():
    layer = PermuteMLP(8, segment_dim=4)
    assert count(layer.mlp_h) == 8 * 8 and layer.reweight[-1].out_features == 32
    assert layer(torch.randn(1, 4, 4, 4, 8)).shape == (1, 4, 4, 4, 8)
    with pytest.raises(ValueError, match="built for a 4\\^3 grid"):
        layer(torch.randn(1, 4, 4, 2, 8))
    with pytest.raises(ValueError, match="cubic"):
        build_token_mixer("permute_mlp", 8, grid=(4, 4, 8))


def naive_scan(u, delta, A, B, C, D, z, delta_bias):
    delta = F.softplus(delta + delta_bias[:, None])
    state, outputs = torch.zeros(u.shape[0], u.shape[1], A.shape[1]), []
    for t in range(u.shape[-1]):
        state = torch.exp(delta[:, :, t, None] * A) * state + delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]
        outputs.append((state * C[:, None, :, t]).sum(-1))
    return (torch.stack(outputs, -1) + u * D[:, None]) * F.silu(z)


def test_selective_scan_matches_the_recurrence_written_step_by_step():
    n, d, s, length = 3, 5, 4, 37  # longer than one time chunk
    u, delta, z = torch.randn(n, d, length), torch.randn(n, d, length), torch.randn(n, d, length)
    A, B, C = -torch.rand(d, s) - 0.1, torch.randn(n, s, length), torch.randn(n, s, length)
    D, bias = torch.randn(d), torch.randn(d)
    expected = naive_scan(u, delta, A, B, C, D, z, bias)
    actual = selective_scan(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True)
    torch.testing.assert_close(actual, expected)
    with torch.no_grad():  # the in-place inference path
        actual = selective_scan(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=True)
    torch.testing.assert_close(actual, expected)


def test_mamba_on_cpu_is_deterministic_and_causal():
    mamba = Mamba(16).eval()
    x = torch.randn(4, 20, 16)
    with torch.no_grad():
        first, second = mamba(x), mamba(x.clone())
        later = x.clone()
        later[:, 12:] += torch.randn(4, 8, 16)
        changed = mamba(later)
    assert torch.equal(first, second)
    torch.testing.assert_close(changed[:, :12], first[:, :12])
    assert not torch.allclose(changed[:, 12:], first[:, 12:])


def test_mamba_cuda_kernel_agrees_with_the_cpu_scan():
    if not torch.cuda.is_available() or cuda_selective_scan() is None:
        pytest.skip("needs CUDA and mamba_ssm")
    mamba = Mamba(32).cuda().eval()
    x = torch.randn(8, 24, 32, device="cuda")
    with torch.no_grad():
        fused = mamba(x)
        mamba.use_cuda_kernel = False
        reference = mamba(x)
    torch.testing.assert_close(fused, reference, atol=1e-4, rtol=1e-3)


def test_network_follows_the_product_conventions():
    net = build_network("MetaUNETR-conv", 2, 3, **SMALL)
    assert isinstance(net, MetaUNETR)
    assert (net.in_channels, net.out_channels, net.size_multiple, net.has_tokens) == (2, 3, 32, False)
    assert net.fixed_patch_size is None
    assert build_network("MetaUNETR-global_filter", 1, 2, **SMALL).fixed_patch_size == (32, 32, 64)


@pytest.mark.parametrize("mixer", [m for m in MIXERS if m != "permute_mlp"])
def test_logits_shape_for_every_mixer(mixer):
    net = build_network(f"MetaUNETR-{mixer}", 1, 3, **SMALL).eval()
    with torch.no_grad():
        logits = net(torch.randn(SMALL_INPUT))
    assert logits.shape == (1, 3, 32, 32, 64)
    assert torch.isfinite(logits).all()


def test_stage_features_have_the_stage_widths_and_resolutions():
    net = build_network("MetaUNETR-conv", 1, 3, **SMALL).eval()
    with torch.no_grad():
        features = net.stage_features(torch.randn(SMALL_INPUT))
    assert [tuple(f.shape) for f in features] == [
        (1, 12, 16, 16, 32),
        (1, 24, 8, 8, 16),
        (1, 48, 4, 4, 8),
        (1, 96, 2, 2, 4),
    ]


def test_gradients_reach_every_parameter():
    net = build_network("MetaUNETR-global_filter", 1, 2, **SMALL)
    net(torch.randn(SMALL_INPUT)).square().mean().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_gru_and_rnn_cells_build_and_change_the_count():
    cells = ("lstm", "gru", "rnn")
    counts = {cell: count(build_on_meta("MetaUNETR-recurrence", recurrent_cell=cell)) for cell in cells}
    assert counts["lstm"] > counts["gru"] > counts["rnn"]


def test_state_dict_round_trip_through_safetensors(tmp_path):
    net = build_network("MetaUNETR-global_filter", 1, 2, **SMALL).eval()
    save_file(net.state_dict(), tmp_path / "w.safetensors")
    other = build_network("MetaUNETR-global_filter", 1, 2, **SMALL).eval()
    other.load_state_dict(load_file(tmp_path / "w.safetensors"))
    x = torch.randn(SMALL_INPUT)
    with torch.no_grad():
        torch.testing.assert_close(net(x), other(x))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"feature_size": 20}, "feature_size must be a positive multiple of 12"),
        ({"feature_size": 0}, "feature_size must be a positive multiple of 12"),
        ({"img_size": 100}, "img_size must be a multiple of 32"),
        ({"img_size": (96, 96)}, "img_size must be a multiple of 32"),
        ({"img_size": 32}, "single voxel at the 1/32 bottleneck"),
        ({"depths": (2, 2, 2)}, "depths must give 4"),
        ({"recurrent_cell": "lstn"}, "unknown recurrent_cell 'lstn'"),
        ({"recurrent_hidden": (12, 24)}, "one value per stage"),
        ({"window": 7}, "invalid argument for network 'MetaUNETR-conv'"),
        ({"mixer": "attention"}, "invalid argument"),
    ],
)
def test_bad_configurations_raise_value_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_on_meta("MetaUNETR-conv", **overrides)


def test_bad_channel_counts_and_unknown_mixer_are_refused():
    with pytest.raises(ValueError, match="in_channels must be a positive integer"):
        MetaUNETR(0, 2)
    with pytest.raises(ValueError, match="unknown token mixer 'mlp'; choose one of attention"):
        MetaUNETR(1, 2, mixer="mlp")


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 32, 32, 64), "must be 5D"),
        ((1, 2, 32, 32, 64), "has 2 channels but the network expects 1"),
        ((1, 1, 32, 48, 64), "multiple of 32 in every axis; pad or crop it \\(e.g. to \\(32, 64, 64\\)\\)"),
        ((1, 1, 32, 32, 32), "single voxel at the 1/32 bottleneck"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_problem(shape, message):
    net = build_network("MetaUNETR-conv", 1, 2, **SMALL)
    with pytest.raises(ValueError, match=message):
        net(torch.zeros(shape))


@pytest.mark.parametrize("mixer", ["global_filter", "permute_mlp"])
def test_fixed_size_mixers_refuse_another_input_size_and_say_which(mixer):
    net = build_on_meta(f"MetaUNETR-{mixer}", feature_size=48, img_size=96)
    with pytest.raises(ValueError, match="built for inputs of size \\(96, 96, 96\\)"):
        net.check_input(torch.zeros(1, 1, 64, 64, 64))
    net.check_input(torch.zeros(1, 1, 96, 96, 96))  # the size it was built for


def test_size_agnostic_mixers_accept_any_multiple_of_32_whatever_img_size():
    build_on_meta("MetaUNETR-recurrence", img_size=96).check_input(torch.zeros(1, 1, 64, 32, 128))


def test_attention_maps_are_refused_with_a_reason():
    net = build_network("MetaUNETR-conv", 1, 2, **SMALL)
    with pytest.raises(ValueError, match="no attention maps"):
        net(torch.zeros(SMALL_INPUT), return_attention=True)


@pytest.mark.slow
def test_permute_mlp_network_runs_at_its_patch_size():
    net = build_network("MetaUNETR-permute_mlp", 1, 2, feature_size=48, img_size=96).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 96, 96, 96)).shape == (1, 2, 96, 96, 96)


@pytest.mark.slow
@pytest.mark.parametrize("mixer", [m for m in MIXERS if m != "permute_mlp"])
def test_gradients_reach_every_parameter_for_every_mixer(mixer):
    net = build_network(f"MetaUNETR-{mixer}", 1, 2, **SMALL)
    net(torch.randn(SMALL_INPUT)).square().mean().backward()
    assert [name for name, p in net.named_parameters() if p.grad is None] == []
