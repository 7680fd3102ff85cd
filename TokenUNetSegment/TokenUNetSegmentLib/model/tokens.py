"""TokenLearner3D and TokenFuser3D: pool a 3D map into N learned tokens and broadcast them back.

Both work on the flattened bottleneck map ``x`` of shape (B, C, V) (V voxels), kept channels-first so
that no (B, N, C, V) tensor and no transposed copy of the map is ever materialised.
"""

from __future__ import annotations

import torch
from torch import nn

from .norms import rms_normalize

_MASS_EPS = 1e-8


class SpatialMaskMaker(nn.Module):
    """Per-voxel token maps in (0, 1): sigmoid(Linear(C -> N)) of the RMS-normalised voxel features.

    Input (B, C, V) with each voxel RMS-normalised over C; output (B, N, V).
    """

    def __init__(self, channels: int, num_tokens: int) -> None:
        super().__init__()
        self.linear = nn.Linear(channels, num_tokens)

    def forward(self, normalized: torch.Tensor) -> torch.Tensor:
        logits = torch.matmul(self.linear.weight, normalized) + self.linear.bias[:, None]
        return torch.sigmoid(logits)


class TokenLearner3D(nn.Module):
    """Pool a 3D feature map into ``num_tokens`` tokens by learned soft spatial masks.

    Each token is the mask-weighted mean of the *raw* voxel features (its mask normalised by its own
    mass), followed by a Linear(C -> C) projection.

    Args:
        channels: channels C of the map, which is also the token width.
        num_tokens: number N of tokens.

    Returns from ``forward(x, normalized)``: tokens (B, N, C) and gather maps (B, N, V).
    """

    def __init__(self, channels: int, num_tokens: int) -> None:
        super().__init__()
        self.mask_maker = SpatialMaskMaker(channels, num_tokens)
        self.projection = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, normalized: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gather = self.mask_maker(normalized)
        weights = gather / (gather.sum(dim=-1, keepdim=True) + _MASS_EPS)
        tokens = torch.bmm(weights, x.transpose(1, 2))
        return self.projection(tokens), gather


class TokenFuser3D(nn.Module):
    """Mix tokens with each other and broadcast them back onto the 3D map through learned masks.

    ``out = x + mixed^T @ B`` where ``mixed`` is a Linear(N -> N) across tokens and ``B`` (B, N, V) are
    broadcast maps from a mask maker independent of the TokenLearner's.

    Args:
        channels: channels C of the map and of the tokens.
        num_tokens: number N of tokens.

    Returns from ``forward(x, normalized, tokens)``: the fused map (B, C, V) and broadcast maps (B, N, V).
    """

    def __init__(self, channels: int, num_tokens: int) -> None:
        super().__init__()
        self.token_mixer = nn.Linear(num_tokens, num_tokens)
        self.mask_maker = SpatialMaskMaker(channels, num_tokens)

    def forward(
        self, x: torch.Tensor, normalized: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mixed = self.token_mixer(tokens.transpose(1, 2))
        broadcast = self.mask_maker(normalized)
        return torch.baddbmm(x, mixed, broadcast), broadcast


def normalize_voxels(x: torch.Tensor) -> torch.Tensor:
    """RMS-normalise each voxel of a flattened (B, C, V) map over its C channels."""
    return rms_normalize(x, dim=1)
