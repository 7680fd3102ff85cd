"""The MetaFormer encoder of MetaUNETR: patch embedding, four stages of (mixer, MLP) blocks, conv downsampling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers import DropPath
from monai.networks.nets.swin_unetr import BasicLayer
from torch import nn

from .token_mixers import build_token_mixer


class MetaFormerBlock(nn.Module):
    """``x + mixer(LayerNorm(x))`` then ``x + MLP(LayerNorm(x))`` on a channels-last (B, H, W, D, C) map.

    Args:
        dim: channels C.
        mixer: token mixer mapping (B, H, W, D, C) to the same shape.
        mlp_ratio: hidden width of the MLP as a multiple of C.
        drop_path: stochastic-depth rate of both residual branches.
    """

    def __init__(self, dim: int, mixer: nn.Module, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = mixer
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.mixer(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class MetaFormerStage(nn.Module):
    """A sequence of :class:`MetaFormerBlock` taking and returning channels-first (B, C, H, W, D) maps."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x.movedim(1, -1)).movedim(-1, 1)


class ConvDownsample(nn.Module):
    """LayerNorm over channels, then Conv3d(dim, 2 * dim, kernel 2, stride 2), on channels-first maps."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.reduction = nn.Conv3d(dim, 2 * dim, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduction(self.norm(x.movedim(1, -1)).movedim(-1, 1))


def normalize_channels(x: torch.Tensor) -> torch.Tensor:
    """Layer normalisation over the channels of a channels-first map, without affine parameters."""
    return F.layer_norm(x.movedim(1, -1), x.shape[1:2]).movedim(-1, 1)


class MetaFormerEncoder(nn.Module):
    """Hierarchical MetaFormer encoder: four stages of widths f, 2f, 4f, 8f at 1/2 to 1/16 resolution.

    Args:
        in_channels: input channels.
        feature_size: width f of the patch embedding.
        mixer: token mixer name (see :data:`.token_mixers.MIXERS`).
        depths: blocks per stage.
        mlp_ratio: MLP width as a multiple of the stage width.
        grid: input spatial size, needed by the fixed-size mixers (else None).
        recurrent_hidden: hidden size per stage of the recurrence mixer.
        recurrent_cell: ``"lstm"``, ``"gru"`` or ``"rnn"``.
        num_heads: attention heads per stage (attention mixer).
        window_size: attention window (attention mixer).
        drop_path_rate: stochastic depth, rising linearly over the blocks to this rate.
    """

    def __init__(
        self,
        in_channels: int,
        feature_size: int,
        mixer: str,
        depths: Sequence[int],
        mlp_ratio: float,
        grid: Sequence[int] | None,
        recurrent_hidden: Sequence[int],
        recurrent_cell: str,
        num_heads: Sequence[int],
        window_size: int,
        drop_path_rate: float,
    ) -> None:
        super().__init__()
        self.patch_embed = nn.Conv3d(in_channels, feature_size, kernel_size=2, stride=2)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.stages, self.downsamples = nn.ModuleList(), nn.ModuleList()
        for index, depth in enumerate(depths):
            dim = feature_size * 2**index
            stage_rates = rates[sum(depths[:index]) : sum(depths[: index + 1])]
            if mixer == "attention":
                stage = BasicLayer(
                    dim=dim,
                    depth=depth,
                    num_heads=num_heads[index],
                    window_size=(window_size,) * 3,
                    drop_path=stage_rates,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=True,
                    norm_layer=nn.LayerNorm,
                    downsample=None,
                )
            else:
                stage_grid = None if grid is None else tuple(s // 2 ** (index + 1) for s in grid)
                blocks = [
                    MetaFormerBlock(
                        dim,
                        build_token_mixer(mixer, dim, stage_grid, recurrent_hidden[index], recurrent_cell),
                        mlp_ratio,
                        rate,
                    )
                    for rate in stage_rates
                ]
                stage = MetaFormerStage(blocks)
            self.stages.append(stage)
            self.downsamples.append(ConvDownsample(dim))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five normalised hidden states: patch embedding (f, /2), then each stage after downsampling."""
        return self.hidden_states(x)[0]

    def hidden_states(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(normalised hidden states for the decoder, raw outputs of the four stages before downsampling)."""
        x = self.patch_embed(x)
        hidden, stage_outputs = [normalize_channels(x)], []
        for stage, downsample in zip(self.stages, self.downsamples, strict=True):
            x = stage(x)
            stage_outputs.append(x)
            x = downsample(x)
            hidden.append(normalize_channels(x))
        return hidden, stage_outputs
