"""TriCruci: token mixing along each spatial axis separately with any 1D sequence mixer (MetaUNETR)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

RECURRENT_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
"""Recurrent cells of the recurrence mixer (``rnn`` is the tanh Elman cell)."""


class TriCruci(nn.Module):
    """Mix tokens along every line of the H, W and D axes, concatenate, fuse back to ``dim`` channels.

    For each axis, every line of voxels along that axis (one per position on the orthogonal plane) is
    one sequence for the axis's own 1D mixer; the weights are shared by all lines of an axis, and each
    line's output is written back to the voxels it came from, so positions on the orthogonal plane
    stay exact. The three outputs are concatenated on channels and fused by ``Linear(3 * out, dim)``.

    Args:
        dim: channels C of the (B, H, W, D, C) input and of the output.
        make_mixer: ``make_mixer(dim)`` builds one sequence mixer mapping (N, L, dim) to (N, L, out);
            it is called once per axis. ``out`` is the mixer's ``out_features`` attribute when it has
            one, else ``dim``.

    Examples::

        layer = TriCruci(48, lambda c: RecurrentLine(c, 24))  # bidirectional LSTM per axis
        y = layer(torch.randn(1, 12, 12, 12, 48))  # (1, 12, 12, 12, 48)
    """

    def __init__(self, dim: int, make_mixer: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.mixers = nn.ModuleList(make_mixer(dim) for _ in range(3))
        out_features = getattr(self.mixers[0], "out_features", dim)
        self.fuse = nn.Linear(3 * out_features, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = [along_axis(mixer, x, axis) for axis, mixer in zip((1, 2, 3), self.mixers, strict=True)]
        return self.fuse(torch.cat(mixed, dim=-1))


def along_axis(mixer: nn.Module, x: torch.Tensor, axis: int) -> torch.Tensor:
    """Apply a sequence mixer to every line of channels-last ``x`` (B, H, W, D, C) along ``axis`` (1-3)."""
    moved = x.movedim(axis, 3)
    lead, length = moved.shape[:3], moved.shape[3]
    out = mixer(moved.reshape(-1, length, moved.shape[4]))
    return out.reshape(*lead, length, out.shape[-1]).movedim(3, axis)


class RecurrentLine(nn.Module):
    """A one-layer bidirectional recurrent network over (N, L, C) sequences; output (N, L, 2 * hidden).

    Args:
        dim: input channels C.
        hidden: hidden size per direction.
        cell: ``"lstm"``, ``"gru"`` or ``"rnn"`` (tanh).
    """

    def __init__(self, dim: int, hidden: int, cell: str = "lstm") -> None:
        super().__init__()
        if cell not in RECURRENT_CELLS:
            raise ValueError(f"unknown recurrent cell '{cell}'; choose one of {', '.join(RECURRENT_CELLS)}.")
        self.rnn = RECURRENT_CELLS[cell](dim, hidden, num_layers=1, batch_first=True, bidirectional=True)
        self.out_features = 2 * hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]
