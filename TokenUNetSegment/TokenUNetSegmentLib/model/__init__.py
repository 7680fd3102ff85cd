"""Layer 1, the networks: torch, einops and monai.networks only (no transforms, I/O, Slicer or Qt)."""

from .registry import (
    METAUNETR_NAMES,
    TOKEN_UNET_VARIANTS,
    build_network,
    network_names,
    network_size,
    register_network,
)
from .sizes import NetworkSize
from .token_unet import TokenUNet

__all__ = [
    "METAUNETR_NAMES",
    "TOKEN_UNET_VARIANTS",
    "MetaUNETR",
    "NetworkSize",
    "TokenUNet",
    "build_network",
    "network_names",
    "network_size",
    "register_network",
]


def __getattr__(name: str):
    """``MetaUNETR`` on first access: it imports MONAI's blocks, which Token-UNet alone never needs."""
    if name == "MetaUNETR":
        from .metaunetr import MetaUNETR

        return MetaUNETR
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
