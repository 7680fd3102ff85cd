"""Parameter-free normalisations shared by the Token-UNet blocks."""

from __future__ import annotations

import torch

_EPS = 1e-6


def rms_normalize(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Scale ``x`` to unit L2 norm along ``dim``, then by sqrt(size of ``dim``).

    This is the parameter-free RMS normalisation of the Token-UNet paper: every vector along
    ``dim`` ends up with root-mean-square 1, whatever its magnitude before.
    """
    size = x.shape[dim]
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True).clamp_min(_EPS)
    return x * (size**0.5 / norm)
