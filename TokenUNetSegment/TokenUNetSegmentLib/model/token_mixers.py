"""Token mixers of MetaUNETR on channels-last (B, H, W, D, C) maps, selected by name.

The attention mixer is MONAI's shifted-window Swin stage and is built by the encoder itself
(see :mod:`.metaformer`); every other mixer is built by :func:`build_token_mixer`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .mamba import Mamba
from .tricruci import RecurrentLine, TriCruci

MIXERS = ("attention", "conv", "recurrence", "permute_mlp", "global_filter", "mamba")
"""Every token mixer name of MetaUNETR."""

FIXED_SIZE_MIXERS = ("permute_mlp", "global_filter")
"""Mixers whose weights are tied to the spatial size of each stage: the model only runs at its ``img_size``."""


class ConvMixer(nn.Module):
    """Depthwise 3D convolution (UX-Net style), kernel 7, on a channels-last map."""

    def __init__(self, dim: int, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv3d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.movedim(-1, 1)).movedim(1, -1)


class GlobalFilter(nn.Module):
    """Global filter (GFNet style): a learnable complex filter per channel in the 3D Fourier domain.

    Args:
        dim: channels.
        grid: spatial size (H, W, D) of the stage; the filter has shape (H, W, D // 2 + 1, dim).
    """

    def __init__(self, dim: int, grid: Sequence[int]) -> None:
        super().__init__()
        self.grid = tuple(grid)
        h, w, d = self.grid
        self.complex_weight = nn.Parameter(0.02 * torch.randn(h, w, d // 2 + 1, dim, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        spectrum = torch.fft.rfftn(x.float(), dim=(1, 2, 3), norm="ortho")
        spectrum = spectrum * torch.view_as_complex(self.complex_weight.float())
        return torch.fft.irfftn(spectrum, s=self.grid, dim=(1, 2, 3), norm="ortho").to(dtype)


class PermuteMLP(nn.Module):
    """Permute-MLP (Vision Permutator style) in 3D: one Linear per axis, a channel Linear, and reweighting.

    The channels are split into ``segment_dim`` groups of S = C / segment_dim; along each axis a
    Linear(C, C) mixes the (axis length x S) values of a group, which needs the axis length to equal
    ``segment_dim``. A fourth branch mixes channels. The four branches are averaged with weights from
    a softmax over 4, computed per channel from the spatial mean of their sum by an MLP C -> C/4 -> 4C.

    Args:
        dim: channels C (a multiple of ``segment_dim``).
        segment_dim: number of channel groups, equal to the side of the stage's cubic grid.
        qkv_bias: biases in the three axis Linears and the channel Linear.
    """

    def __init__(self, dim: int, segment_dim: int, qkv_bias: bool = False) -> None:
        super().__init__()
        if dim % segment_dim:
            raise ValueError(
                f"permute_mlp needs the stage width ({dim}) to be divisible by its grid side ({segment_dim}); "
                "choose feature_size and img_size so that every stage width is (e.g. feature_size=48, img_size=96)."
            )
        self.segment_dim = segment_dim
        self.mlp_h = nn.Linear(dim, dim, bias=qkv_bias)
        self.mlp_w = nn.Linear(dim, dim, bias=qkv_bias)
        self.mlp_d = nn.Linear(dim, dim, bias=qkv_bias)
        self.mlp_c = nn.Linear(dim, dim, bias=qkv_bias)
        self.reweight = nn.Sequential(nn.Linear(dim, dim // 4), nn.GELU(), nn.Linear(dim // 4, 4 * dim))
        self.proj = nn.Linear(dim, dim)

    def _along(self, linear: nn.Linear, x: torch.Tensor, axis: int) -> torch.Tensor:
        b, h, w, d, c = x.shape
        groups = x.reshape(b, h, w, d, self.segment_dim, c // self.segment_dim).movedim(axis, 4)
        mixed = linear(groups.flatten(4)).view_as(groups)
        return mixed.movedim(4, axis).reshape(b, h, w, d, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(s != self.segment_dim for s in x.shape[1:4]):
            raise ValueError(
                f"permute_mlp was built for a {self.segment_dim}^3 grid at this stage, got {tuple(x.shape[1:4])}."
            )
        branches = [self._along(self.mlp_h, x, 1), self._along(self.mlp_w, x, 2), self._along(self.mlp_d, x, 3)]
        branches.append(self.mlp_c(x))
        weights = self.reweight(sum(branches).mean(dim=(1, 2, 3)))
        weights = weights.reshape(x.shape[0], x.shape[-1], 4).permute(2, 0, 1).softmax(dim=0)
        mixed = sum(branch * weight[:, None, None, None, :] for branch, weight in zip(branches, weights, strict=True))
        return self.proj(mixed)


def build_token_mixer(
    name: str,
    dim: int,
    grid: Sequence[int] | None = None,
    hidden: int | None = None,
    cell: str = "lstm",
) -> nn.Module:
    """Build one token mixer on channels-last (B, H, W, D, dim) maps.

    Args:
        name: ``"conv"``, ``"recurrence"``, ``"permute_mlp"``, ``"global_filter"`` or ``"mamba"``.
        dim: channels of the stage.
        grid: spatial size of the stage (needed by ``permute_mlp`` and ``global_filter``).
        hidden: hidden size per direction of the recurrence mixer (default ``dim``).
        cell: recurrent cell of the recurrence mixer (``"lstm"``, ``"gru"``, ``"rnn"``).
    """
    if name == "conv":
        return ConvMixer(dim)
    if name == "recurrence":
        return TriCruci(dim, lambda c: RecurrentLine(c, hidden or c, cell))
    if name == "mamba":
        return TriCruci(dim, lambda c: Mamba(c))
    if name in FIXED_SIZE_MIXERS:
        if grid is None:
            raise ValueError(f"the {name} mixer needs the stage's grid size.")
        if name == "global_filter":
            return GlobalFilter(dim, grid)
        if len(set(grid)) != 1:
            raise ValueError(f"permute_mlp needs a cubic input (equal sides), got a stage grid of {tuple(grid)}.")
        return PermuteMLP(dim, grid[0])
    raise ValueError(f"unknown token mixer '{name}'; choose one of {', '.join(MIXERS)}.")
