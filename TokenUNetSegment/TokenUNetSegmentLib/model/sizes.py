"""Network sizes from a configuration, without building the network: parameters and activations per voxel.

A package's ``architecture`` (name, channel counts, constructor parameters) is all a loader knows before it builds
the network; a configuration edited to absurd widths would allocate gigabytes in the constructor. These formulas
give the parameter count (exact for Token-UNet, within a few percent for MetaUNETR; the tests compare them with
built networks) and the float32 activations alive per input voxel of a window, so callers can refuse a network
that does not fit before a single tensor exists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class NetworkSize:
    """``parameters`` of the network and ``activations_per_voxel`` (float32 values alive per input voxel of one
    window at inference, the peak of the largest stage)."""

    parameters: float
    activations_per_voxel: float

    @property
    def parameter_bytes(self) -> float:
        return 4.0 * self.parameters

    def window_bytes(self, roi_size: Sequence[int]) -> float:
        """Bytes of activations for one window of ``roi_size`` voxels."""
        return 4.0 * self.activations_per_voxel * math.prod(int(s) for s in roi_size)


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return value


def _counts(name: str, value, length: int) -> tuple[int, ...]:
    values = (value,) * length if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(values, (list, tuple)) or len(values) != length:
        raise ValueError(f"{name} must be a positive integer or {length} positive integers, got {value!r}.")
    return tuple(_positive(name, v) for v in values)


def token_unet_size(
    in_channels: int,
    out_channels: int,
    channels: Sequence[int] = (16, 32, 64, 128),
    blocks_per_stage: int | Sequence[int] = 1,
    decoder_blocks: int | Sequence[int] = 1,
    num_tokens: int = 32,
    processor: str = "transformer",
    processor_depth: int = 2,
    num_heads: int = 4,
    full_resolution_skip: bool = False,
) -> NetworkSize:
    """The size of :class:`.token_unet.TokenUNet` with these arguments (its constructor's, same defaults)."""
    _positive("in_channels", in_channels)
    _positive("out_channels", out_channels)
    if not isinstance(channels, (list, tuple)) or len(channels) < 2:
        raise ValueError(f"channels must list at least two positive stage widths, got {channels!r}.")
    widths = tuple(_positive("channels", c) for c in channels)
    encoder = _counts("blocks_per_stage", blocks_per_stage, len(widths))
    decoder = _counts("decoder_blocks", decoder_blocks, len(widths) - 1)
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 0:
        raise ValueError(f"num_tokens must be 0 (no tokens) or a positive integer, got {num_tokens!r}.")

    def encoder_block(cin: int, cout: int) -> int:  # conv k3 cin->2cin, conv k1 2cin->cout, projection, gate
        return 27 * cin * 2 * cin + 2 * cin + 2 * cin * cout + cout + (cin * cout + cout if cin != cout else 0) + 1

    def up_block(cin: int, cout: int) -> int:  # conv k3 cin->2cin, transposed conv k2 2cin->cout, projection, gate
        return 27 * cin * 2 * cin + 2 * cin + 8 * 2 * cin * cout + cout + (cin * cout + cout if cin != cout else 0) + 1

    parameters = 0
    width = in_channels
    for stage_width, count in zip(widths, encoder, strict=True):
        for _ in range(count):
            parameters += encoder_block(width, stage_width)
            width = stage_width
    if num_tokens:
        c, n = widths[-1], num_tokens
        parameters += (c * n + n) + (c * c + c) + (n * n + n) + (c * n + n)  # learner, fuser
        depth = _positive("processor_depth", processor_depth) if processor != "none" else 0
        per_layer = {"none": 0, "mlp": 4 * c * n + 4 * c * c + 2, "transformer": 8 * c * c + 2}
        if processor not in per_layer:
            raise ValueError(f"unknown token processor {processor!r}; choose one of {', '.join(per_layer)}.")
        parameters += depth * per_layer[processor]
    for stage, count in enumerate(decoder):
        cin, cout = widths[-1 - stage], widths[-2 - stage]
        parameters += up_block(cin, cout) + (count - 1) * encoder_block(cout, cout)
    parameters += widths[0] * out_channels + out_channels
    # full resolution: input, logits and a few maps of the first stage's width (hidden = 2x); deeper stages
    # keep their skips and hidden maps at 1/8 of the voxels per level
    activations = in_channels + out_channels + 6 * max(widths[0], 2 * in_channels)
    activations += sum(4 * w / 8**level for level, w in enumerate(widths) if level) + 2 * num_tokens / 8 ** (
        len(widths) - 1
    )
    return NetworkSize(float(parameters), float(activations))


def metaunetr_size(
    in_channels: int,
    out_channels: int,
    mixer: str = "recurrence",
    feature_size: int = 24,
    img_size: int | Sequence[int] = 96,
    depths: Sequence[int] = (2, 2, 2, 2),
    mlp_ratio: float = 4.0,
    recurrent_hidden: Sequence[int] = (12, 24, 36, 48),
    recurrent_cell: str = "lstm",
    num_heads: Sequence[int] = (3, 6, 12, 24),
    window_size: int = 7,
    drop_path_rate: float = 0.0,
    norm_name: str = "instance",
) -> NetworkSize:
    """The size of :class:`.metaunetr.MetaUNETR` with these arguments (its constructor's, same defaults)."""
    _positive("in_channels", in_channels)
    _positive("out_channels", out_channels)
    f = _positive("feature_size", feature_size)
    stages = _counts("depths", depths, 4)
    hidden = _counts("recurrent_hidden", recurrent_hidden, 4)
    heads = _counts("num_heads", num_heads, 4)
    grid = _counts("img_size", img_size, 3)
    window = _positive("window_size", window_size)
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or not 0 < mlp_ratio < 1e6:
        raise ValueError(f"mlp_ratio must be a positive number, got {mlp_ratio!r}.")

    def res_block(cin: int, cout: int) -> int:  # MONAI's UnetResBlock: two k3 convs and a k1 projection, no biases
        return 27 * cin * cout + 27 * cout * cout + (cin * cout if cin != cout else 0)

    def up(cin: int, cout: int) -> int:  # MONAI's UnetrUpBlock: transposed k2 conv, then a res block on the concat
        return 8 * cin * cout + res_block(2 * cout, cout)

    gates = {"lstm": 4, "gru": 3, "rnn": 1}.get(recurrent_cell)
    if gates is None:
        raise ValueError(f"unknown recurrent_cell {recurrent_cell!r}; choose one of lstm, gru, rnn.")
    parameters = 8 * in_channels * f + f  # patch embedding
    for index, depth in enumerate(stages):
        w = f * 2**index
        ratio_hidden = int(w * mlp_ratio)
        block = 4 * w + (w * ratio_hidden + ratio_hidden + ratio_hidden * w + w)  # two norms and the MLP
        side = [s // 2 ** (index + 1) for s in grid]
        if mixer == "attention":
            block += 4 * w * w + 4 * w + (2 * window - 1) ** 3 * heads[index]
        elif mixer == "conv":
            block += 343 * w + w
        elif mixer == "recurrence":
            h = hidden[index]
            block += 3 * 2 * gates * (h * w + h * h + 2 * h) + (6 * h * w + w)
        elif mixer == "permute_mlp":
            block += 4 * w * w + (w * (w // 4) + w // 4 + (w // 4) * 4 * w + 4 * w) + w * w + w
        elif mixer == "global_filter":
            block += side[0] * side[1] * (side[2] // 2 + 1) * w * 2
        elif mixer == "mamba":
            inner, rank = 2 * w, math.ceil(w / 16)
            one = w * 2 * inner + inner * 4 + inner + inner * (rank + 32) + rank * inner + inner + inner * 16
            block += 3 * (one + inner + inner * w) + 3 * w * w + w
        else:
            raise ValueError(f"unknown token mixer {mixer!r}.")
        parameters += depth * block + 2 * w + 8 * w * 2 * w + 2 * w  # stage blocks, downsampling norm and conv
    widths = [f * 2**i for i in range(4)]
    parameters += res_block(in_channels, f) + sum(res_block(w, w) for w in widths) + res_block(16 * f, 16 * f)
    parameters += up(16 * f, 8 * f) + up(8 * f, 4 * f) + up(4 * f, 2 * f) + up(2 * f, f) + up(f, f)
    parameters += f * out_channels + out_channels
    activations = in_channels + out_channels + 8 * f + sum(6 * f * 2**i / 8 ** (i + 1) for i in range(5))
    return NetworkSize(float(parameters), float(activations))
