"""Layer 1, the networks: torch, einops and monai.networks only (no transforms, I/O, Slicer or Qt)."""

from .registry import TOKEN_UNET_VARIANTS, build_network, network_names, register_network
from .token_unet import TokenUNet

__all__ = ["TOKEN_UNET_VARIANTS", "TokenUNet", "build_network", "network_names", "register_network"]
