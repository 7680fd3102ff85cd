"""Input checks shared by every network: plain-language ``ValueError`` for a bad (B, C, H, W, D) input."""

from __future__ import annotations

import torch


def check_volume_batch(x: torch.Tensor, in_channels: int, size_multiple: int) -> None:
    """Raise ``ValueError`` naming the problem unless ``x`` is (B, in_channels, H, W, D) with sizes
    that are non-zero multiples of ``size_multiple``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"input must be a torch.Tensor, got {type(x).__name__}.")
    if x.ndim != 5:
        raise ValueError(
            f"input must be 5D (batch, channels, H, W, D), got a {x.ndim}D tensor of shape {tuple(x.shape)}."
        )
    if x.shape[1] != in_channels:
        raise ValueError(f"input has {x.shape[1]} channels but the network expects {in_channels}.")
    size = tuple(x.shape[2:])
    if any(s % size_multiple or s == 0 for s in size):
        padded = tuple(max(size_multiple, -(-s // size_multiple) * size_multiple) for s in size)
        raise ValueError(
            f"input spatial size {size} must be a non-zero multiple of {size_multiple} in every axis; "
            f"pad or crop it (e.g. to {padded})."
        )
