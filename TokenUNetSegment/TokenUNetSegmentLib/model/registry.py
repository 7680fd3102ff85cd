"""Networks by name: ``build_network(name, in_channels, out_channels, **overrides)``."""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import nn

from .sizes import NetworkSize, metaunetr_size, token_unet_size
from .token_mixers import MIXERS
from .token_unet import TokenUNet
from .variants import METAUNETR_PREFIX, TOKEN_UNET_VARIANTS

_FACTORIES: dict[str, Callable[..., nn.Module]] = {}
_SIZES: dict[str, Callable[..., NetworkSize]] = {}


def register_network(
    name: str, factory: Callable[..., nn.Module], size: Callable[..., NetworkSize] | None = None
) -> None:
    """Make ``factory(in_channels, out_channels, **overrides)`` available as ``name``; ``size`` (same arguments)
    gives its :class:`.sizes.NetworkSize` without building it (else it is measured on PyTorch's meta device)."""
    _FACTORIES[name] = factory
    if size is not None:
        _SIZES[name] = size


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
        raise ValueError(f"invalid argument for network '{name}': {_without_function(error)}") from None


def network_size(name: str, in_channels: int, out_channels: int, **overrides) -> NetworkSize:
    """The size of ``build_network(name, in_channels, out_channels, **overrides)``, without allocating it.

    Raises:
        ValueError: unknown name, or an argument the network does not accept or that is out of range.
    """
    if name not in _FACTORIES:
        raise ValueError(f"unknown network '{name}'; choose one of {', '.join(network_names())}.")
    try:
        if name in _SIZES:
            return _SIZES[name](in_channels, out_channels, **overrides)
        return _measured_size(name, in_channels, out_channels, **overrides)
    except TypeError as error:
        raise ValueError(f"invalid argument for network '{name}': {_without_function(error)}") from None


def _without_function(error: TypeError) -> str:
    """Python's "f() got an unexpected keyword argument 'x'" without the internal function's name."""
    return re.sub(r"^[\w.<>]+\(\) ", "", str(error))


def _measured_size(name: str, in_channels: int, out_channels: int, **overrides) -> NetworkSize:
    """A network registered without a size formula, built on the meta device (no memory) and counted."""
    import torch

    with torch.device("meta"):
        network = _FACTORIES[name](in_channels, out_channels, **overrides)
    widest = max((m.out_channels for m in network.modules() if isinstance(m, nn.Conv3d)), default=32)
    return NetworkSize(
        float(sum(p.numel() for p in network.parameters())), float(in_channels + out_channels + 6 * widest)
    )


def _token_unet_factory(variant: dict) -> Callable[..., nn.Module]:
    def factory(in_channels: int, out_channels: int, **overrides) -> nn.Module:
        return TokenUNet(in_channels, out_channels, **{**variant, **overrides})

    return factory


def _token_unet_sizer(variant: dict) -> Callable[..., NetworkSize]:
    def size(in_channels: int, out_channels: int, **overrides) -> NetworkSize:
        return token_unet_size(in_channels, out_channels, **{**variant, **overrides})

    return size


for _name, _variant in TOKEN_UNET_VARIANTS.items():
    register_network(_name, _token_unet_factory(_variant), _token_unet_sizer(_variant))


def _metaunetr_factory(mixer: str) -> Callable[..., nn.Module]:
    def factory(in_channels: int, out_channels: int, **overrides) -> nn.Module:
        from .metaunetr import MetaUNETR  # on first use: it builds on MONAI's blocks, whose import is slow

        return MetaUNETR(in_channels, out_channels, mixer=mixer, **overrides)

    return factory


def _metaunetr_sizer(mixer: str) -> Callable[..., NetworkSize]:
    def size(in_channels: int, out_channels: int, **overrides) -> NetworkSize:
        return metaunetr_size(in_channels, out_channels, mixer=mixer, **overrides)

    return size


METAUNETR_NAMES = tuple(f"{METAUNETR_PREFIX}{mixer}" for mixer in MIXERS)
"""Registered names of MetaUNETR, one per token mixer."""

for _mixer in MIXERS:
    register_network(f"{METAUNETR_PREFIX}{_mixer}", _metaunetr_factory(_mixer), _metaunetr_sizer(_mixer))
