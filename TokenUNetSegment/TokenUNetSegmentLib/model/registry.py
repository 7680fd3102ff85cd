"""Networks by name: ``build_network(name, in_channels, out_channels, **overrides)``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .token_unet import TokenUNet

TOKEN_UNET_VARIANTS: dict[str, dict] = {
    "NoToken": {"num_tokens": 0, "processor": "none"},
    "8Token": {"num_tokens": 8, "processor": "none"},
    "8MLP": {"num_tokens": 8, "processor": "mlp", "processor_depth": 2},
    "8Attn": {"num_tokens": 8, "processor": "transformer", "processor_depth": 2},
    "32Token": {"num_tokens": 32, "processor": "none"},
    "32MLP": {"num_tokens": 32, "processor": "mlp", "processor_depth": 2},
    "32Attn": {"num_tokens": 32, "processor": "transformer", "processor_depth": 2},
    "32AttnLong": {"num_tokens": 32, "processor": "transformer", "processor_depth": 8},
}
"""The Token-UNet variants of the paper: token count and token processor."""

_FACTORIES: dict[str, Callable[..., nn.Module]] = {}


def register_network(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make ``factory(in_channels, out_channels, **overrides)`` available as ``name``."""
    _FACTORIES[name] = factory


def network_names() -> list[str]:
    """Every name :func:`build_network` accepts."""
    return list(_FACTORIES)


def build_network(name: str, in_channels: int, out_channels: int, **overrides) -> nn.Module:
    """Build a network by name.

    Args:
        name: one of :func:`network_names`, e.g. ``"32AttnLong"``.
        in_channels: input channels (1 for CT, 4 for BraTS MRI).
        out_channels: output channels (classes or regions).
        overrides: keyword arguments of the network's constructor that replace the variant's values
            (e.g. ``channels=(8, 16, 32, 64)`` for a smaller Token-UNet).

    Raises:
        ValueError: unknown name, or an argument the network does not accept.
    """
    if name not in _FACTORIES:
        raise ValueError(f"unknown network '{name}'; choose one of {', '.join(network_names())}.")
    try:
        return _FACTORIES[name](in_channels, out_channels, **overrides)
    except TypeError as error:
        raise ValueError(f"invalid argument for network '{name}': {error}") from None


def _token_unet_factory(variant: dict) -> Callable[..., nn.Module]:
    def factory(in_channels: int, out_channels: int, **overrides) -> nn.Module:
        return TokenUNet(in_channels, out_channels, **{**variant, **overrides})

    return factory


for _name, _variant in TOKEN_UNET_VARIANTS.items():
    register_network(_name, _token_unet_factory(_variant))
