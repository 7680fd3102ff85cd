"""Layer 1, the networks: torch, einops and monai.networks only (no transforms, I/O, Slicer or Qt)."""

from .metaunetr import METAUNETR_NAMES, MetaUNETR
from .registry import TOKEN_UNET_VARIANTS, build_network, network_names, network_size, register_network
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
