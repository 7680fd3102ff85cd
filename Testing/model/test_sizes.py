"""Network sizes from a configuration: equal to the built network's parameter count, and computed without building
anything (so an absurd configuration costs nothing)."""

import pytest
import torch
from TokenUNetSegmentLib.model import build_network, network_names, network_size, register_network

CASES = [(name, {}) for name in network_names() if not name.startswith("MetaUNETR")] + [
    ("8Token", {"channels": (4, 8, 16, 32)}),
    ("32Attn", {"channels": (8, 16, 32, 64), "blocks_per_stage": (1, 2, 1, 2), "decoder_blocks": 2}),
    ("8MLP", {"channels": (8, 16, 32), "full_resolution_skip": True}),
    ("MetaUNETR-attention", {"feature_size": 12, "depths": (1, 2, 1, 1)}),
    ("MetaUNETR-conv", {"feature_size": 12}),
    ("MetaUNETR-recurrence", {"feature_size": 12, "recurrent_cell": "gru"}),
    ("MetaUNETR-recurrence", {"feature_size": 24, "recurrent_cell": "rnn", "mlp_ratio": 2.0}),
    ("MetaUNETR-global_filter", {"feature_size": 12, "img_size": 64}),
    ("MetaUNETR-permute_mlp", {"feature_size": 48, "img_size": 96}),
    ("MetaUNETR-mamba", {"feature_size": 12}),
]


@pytest.mark.parametrize(("name", "options"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_the_size_formula_counts_every_parameter(name, options):
    with torch.device("meta"):  # no memory: only the count is compared
        network = build_network(name, 2, 5, **options)
    assert network_size(name, 2, 5, **options).parameters == sum(p.numel() for p in network.parameters())


def test_absurd_configurations_are_sized_without_building_them(monkeypatch):
    from TokenUNetSegmentLib.model import token_unet

    monkeypatch.setattr(token_unet.TokenUNet, "__init__", lambda *a, **k: pytest.fail("the network was built"))
    size = network_size("32Attn", 1, 13, channels=(8192, 16384, 32768, 65536))
    assert size.parameters > 1e11 and size.window_bytes((128, 128, 128)) > 2**30
    with pytest.raises(ValueError, match="channels"):
        network_size("32Attn", 1, 13, channels=(8, "16", 32))
    with pytest.raises(ValueError, match="invalid argument") as raised:
        network_size("32Attn", 1, 13, no_such_option=1)
    assert "_size()" not in str(raised.value) and "'no_such_option'" in str(raised.value)  # no internal names
    with pytest.raises(ValueError, match="unknown network"):
        network_size("Nope", 1, 2)


def test_a_network_registered_without_a_formula_is_measured_on_the_meta_device():
    register_network("TestOnly-tiny", lambda i, o, **k: torch.nn.Conv3d(i, o, 3))
    try:
        assert network_size("TestOnly-tiny", 2, 4).parameters == 2 * 4 * 27 + 4
    finally:
        from TokenUNetSegmentLib.model import registry

        registry._FACTORIES.pop("TestOnly-tiny")


def test_the_token_count_declared_by_a_configuration_is_the_built_networks():
    """``declared_token_count`` (torch-free, for the run's memory check before torch is imported) agrees with the
    networks the registry builds, overrides included; a network it does not know gives None."""
    import torch
    from TokenUNetSegmentLib.model import METAUNETR_NAMES, TOKEN_UNET_VARIANTS, MetaUNETR, declared_token_count

    for name in TOKEN_UNET_VARIANTS:
        for overrides in ({}, {"num_tokens": 4}):
            with torch.device("meta"):
                network = build_network(name, 1, 3, **overrides)
            tokens = int(network.num_tokens) if network.has_tokens else 0
            assert declared_token_count(name, overrides) == tokens, (name, overrides)
    assert not MetaUNETR.has_tokens and {declared_token_count(name) for name in METAUNETR_NAMES} == {0}
    assert declared_token_count("SomeoneElsesNet") is None
