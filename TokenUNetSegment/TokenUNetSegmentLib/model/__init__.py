"""Layer 1, the networks: torch, einops and monai.networks only (no transforms, I/O, Slicer or Qt).

Names are imported on first access, so that the torch-free parts (:mod:`.variants`, :mod:`.sizes`) can be used
before torch is imported; ``MetaUNETR`` imports MONAI's blocks, which Token-UNet alone never needs.
"""

from importlib import import_module

_WHERE = {
    "METAUNETR_NAMES": "registry",
    "TOKEN_UNET_VARIANTS": "variants",
    "MetaUNETR": "metaunetr",
    "NetworkSize": "sizes",
    "TokenUNet": "token_unet",
    "build_network": "registry",
    "declared_token_count": "variants",
    "network_names": "registry",
    "network_size": "registry",
    "register_network": "registry",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
