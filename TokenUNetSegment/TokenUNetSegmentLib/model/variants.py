"""The Token-UNet variants of the paper by name, and a network's token count from its configuration alone.

Torch-free (imported without the networks), so that a command can size a run's token maps from a package's
``architecture`` before torch is imported.
"""

from __future__ import annotations

from collections.abc import Mapping

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

METAUNETR_PREFIX = "MetaUNETR-"  # MetaUNETR-<mixer>: no learned tokens


def declared_token_count(name: str, overrides: Mapping | None = None) -> int | None:
    """The learned tokens of the network ``name`` built with ``overrides``: a Token-UNet variant's (or its
    ``num_tokens`` override), 0 for MetaUNETR; None for a network this module does not know (registered by others)."""
    overrides = overrides or {}
    if name in TOKEN_UNET_VARIANTS:
        count = overrides.get("num_tokens", TOKEN_UNET_VARIANTS[name]["num_tokens"])
        return count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else None
    if name.startswith(METAUNETR_PREFIX):
        return 0
    return None
