"""Token processors that let the N bottleneck tokens interact: none, an MLP mixer, a Transformer.

All take and return tokens of shape (B, N, C). Weights of the mixer and the Transformer are stored
as raw standard-normal matrices and scaled by 1/sqrt(fan-in width) where they are used, as in the
normalised Transformer of the Token-UNet reference; there are no biases and no positional
embeddings (the token set is unordered).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import AlphaGate
from .norms import rms_normalize

PROCESSORS = ("none", "mlp", "transformer")


class ScaledWeight(nn.Module):
    """A raw ``randn`` weight of shape (out, in) applied as ``x @ (W / sqrt(scale_dim))^T``."""

    def __init__(self, out_features: int, in_features: int, scale_dim: int | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.scale = (scale_dim or in_features) ** -0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale)


class ScaledMLP(nn.Module):
    """Bias-free two-layer ReLU MLP ``dim -> hidden -> dim``, both weights scaled by 1/sqrt(dim)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.up = ScaledWeight(hidden, dim, scale_dim=dim)
        self.down = ScaledWeight(dim, hidden, scale_dim=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.relu(self.up(x)))


class MixerBlock(nn.Module):
    """MLP-Mixer block: token mixing (N -> 2C -> N) then channel mixing (C -> 2C -> C), each gated."""

    def __init__(self, dim: int, num_tokens: int) -> None:
        super().__init__()
        self.token_mlp = ScaledMLP(num_tokens, 2 * dim)
        self.token_gate = AlphaGate()
        self.channel_mlp = ScaledMLP(dim, 2 * dim)
        self.channel_gate = AlphaGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.token_gate(x, self.token_mlp(x.transpose(1, 2)).transpose(1, 2))
        return self.channel_gate(x, self.channel_mlp(x))


class NormalizedAttention(nn.Module):
    """Bias-free multi-head self-attention with QK-norm and an RMS-normalised head concatenation."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"token width {dim} is not divisible by the number of heads {num_heads}.")
        self.num_heads = num_heads
        self.qkv = ScaledWeight(3 * dim, dim)
        self.out = ScaledWeight(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).view(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attended = F.scaled_dot_product_attention(rms_normalize(q), rms_normalize(k), v)
        merged = attended.transpose(1, 2).reshape(batch, tokens, dim)
        return self.out(rms_normalize(merged))


class TransformerLayer(nn.Module):
    """Normalised Transformer layer: gated attention residual, then gated MLP (width 2C) residual."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.attention = NormalizedAttention(dim, num_heads)
        self.attention_gate = AlphaGate()
        self.mlp = ScaledMLP(dim, 2 * dim)
        self.mlp_gate = AlphaGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention_gate(x, self.attention(x))
        return self.mlp_gate(x, self.mlp(x))


class TokenStack(nn.Sequential):
    """Layers applied in turn to RMS-normalised tokens."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(rms_normalize(x))


def build_token_processor(kind: str, dim: int, num_tokens: int, depth: int, num_heads: int) -> nn.Module:
    """Token processor by name: ``none`` (identity), ``mlp`` (mixer blocks), ``transformer``."""
    if kind == "none":
        return nn.Identity()
    if depth < 1:
        raise ValueError(f"processor depth must be at least 1 for '{kind}', got {depth}.")
    if kind == "mlp":
        return TokenStack(*(MixerBlock(dim, num_tokens) for _ in range(depth)))
    if kind == "transformer":
        return TokenStack(*(TransformerLayer(dim, num_heads) for _ in range(depth)))
    raise ValueError(f"unknown token processor '{kind}'; choose one of {', '.join(PROCESSORS)}.")
