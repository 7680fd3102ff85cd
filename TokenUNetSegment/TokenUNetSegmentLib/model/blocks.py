"""Convolutional blocks of the Token-UNet encoder and decoder, joined by alpha-gated residuals."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fused_ops import accumulate_pointwise, accumulate_transposed_k2s2, pointwise, upsample2x_trilinear

ALPHA_INIT = -2.5
"""Initial logit of every alpha gate: sigmoid(-2.5) ~ 0.076, so a new block starts near its shortcut."""


class AlphaGate(nn.Module):
    """Learnable gated sum ``(1 - g) * shortcut + g * residual`` with ``g = sigmoid(alpha)``."""

    def __init__(self, init: float = ALPHA_INIT) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(float(init)))

    def weight(self) -> torch.Tensor:
        """The residual's share ``g`` in (0, 1)."""
        return torch.sigmoid(self.alpha)

    def forward(self, shortcut: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        # under CUDA autocast one path may come out in float16 and the other in float32: sum in the wider type
        dtype = torch.promote_types(shortcut.dtype, residual.dtype)
        return torch.lerp(shortcut.to(dtype), residual.to(dtype), self.weight().to(dtype))


def _gated_shortcut(x: torch.Tensor, projection: nn.Module, keep: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``keep * projection(x) + bias`` as a fresh tensor (one pass; ``bias`` is per channel)."""
    if isinstance(projection, nn.Identity):
        return torch.addcmul(bias.view(1, -1, *([1] * (x.ndim - 2))), x, keep)
    return pointwise(x, keep * projection.weight.flatten(1), keep * projection.bias + bias)


def _pointwise(in_channels: int, out_channels: int) -> nn.Module:
    """1x1x1 projection, or the identity when the channel count does not change."""
    return nn.Identity() if in_channels == out_channels else nn.Conv3d(in_channels, out_channels, 1)


class EncoderBlock(nn.Module):
    """Pre-norm residual block, optionally halving the resolution.

    Residual path: InstanceNorm -> Conv3d(k3, stride 1 or 2) doubling the channels -> LeakyReLU(0.1)
    -> InstanceNorm -> Conv3d(k1) to ``out_channels``. Shortcut: AvgPool(2) when downsampling, then a
    1x1x1 projection when the channel count changes. The two paths are mixed by an :class:`AlphaGate`.

    Args:
        in_channels: channels of the input map.
        out_channels: channels of the output map.
        downsample: halve every spatial size (stride-2 convolution, average-pooled shortcut).
    """

    def __init__(self, in_channels: int, out_channels: int, downsample: bool = False) -> None:
        super().__init__()
        hidden = 2 * in_channels
        self.downsample = downsample
        self.residual = nn.Sequential(
            nn.InstanceNorm3d(in_channels),
            nn.Conv3d(in_channels, hidden, 3, stride=2 if downsample else 1, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.InstanceNorm3d(hidden),
            nn.Conv3d(hidden, out_channels, 1),
        )
        self.projection = _pointwise(in_channels, out_channels)
        self.gate = AlphaGate()
        for conv in (self.residual[1], self.residual[4]):
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # gate(projection(shortcut), conv(hidden)) with the gate folded into both linear maps.
        hidden = self.residual[:4](x)
        conv = self.residual[4]
        shortcut = F.avg_pool3d(x, 2) if self.downsample else x
        g = self.gate.weight().to(x.dtype)
        out = _gated_shortcut(shortcut, self.projection, 1 - g, g * conv.bias)
        return accumulate_pointwise(out, hidden, g * conv.weight.flatten(1))


class UpBlock(nn.Module):
    """Residual block that doubles the resolution.

    Residual path: InstanceNorm -> Conv3d(k3) doubling the channels -> LeakyReLU(0.1) ->
    InstanceNorm -> ConvTranspose3d(k2, s2) to ``out_channels``. Shortcut: trilinear x2 upsampling and
    a 1x1x1 projection. The projection runs *before* the upsampling: both are linear, per-channel
    interpolation commutes with per-voxel channel mixing (interpolation weights sum to 1, so the bias
    commutes too), and projecting first works on 8x fewer voxels.

    Args:
        in_channels: channels of the input map.
        out_channels: channels of the output map, at twice the resolution.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        hidden = 2 * in_channels
        self.residual = nn.Sequential(
            nn.InstanceNorm3d(in_channels),
            nn.Conv3d(in_channels, hidden, 3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.InstanceNorm3d(hidden),
            nn.ConvTranspose3d(hidden, out_channels, 2, stride=2),
        )
        self.projection = _pointwise(in_channels, out_channels)
        self.gate = AlphaGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # gate(upsample(projection(x)), convT(hidden)) with the gate folded into both linear maps; the
        # convT bias joins the shortcut before upsampling (interpolation preserves constants).
        hidden = self.residual[:4](x)
        conv = self.residual[4]
        g = self.gate.weight().to(x.dtype)
        low = _gated_shortcut(x, self.projection, 1 - g, g * conv.bias)
        out = upsample2x_trilinear(low)
        return accumulate_transposed_k2s2(out, hidden, g * conv.weight)
