"""Token-UNet: a convolutional 3D UNet whose bottleneck is pooled into learned tokens.

Reference: Tshimanga, Zanola, Del Pup, Atzori, "Token-UNet: A New Case for Transformers Integration in
Efficient and Interpretable 3D UNets for Brain Imaging Segmentation", arXiv 2602.20008 (2026).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from . import channels_last as cl
from .blocks import EncoderBlock, UpBlock
from .fused_ops import pointwise
from .token_processors import PROCESSORS, build_token_processor
from .tokens import TokenFuser3D, TokenLearner3D, normalize_voxels
from .validation import check_volume_batch


def _as_tuple(value: int | Sequence[int], length: int, name: str) -> tuple[int, ...]:
    values = (value,) * length if isinstance(value, int) else tuple(value)
    if len(values) != length or any(not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"{name} must be a positive integer or {length} positive integers, got {value!r}.")
    return values


class TokenUNet(nn.Module):
    """Token-UNet for 3D segmentation, with per-token spatial maps for interpretability.

    The encoder is a residual convolutional UNet encoder; at the bottleneck a TokenLearner pools the
    map into ``num_tokens`` tokens, a token processor lets them interact, and a TokenFuser writes them
    back; the decoder upsamples with additive skips. Each token's *gather* map (where it pooled from)
    and *broadcast* map (where it wrote back) can be returned with the logits.

    Args:
        in_channels: number of input channels (e.g. 1 for CT, 4 for BraTS MRI).
        out_channels: number of output channels (classes or regions).
        channels: encoder stage widths; the last one is the bottleneck width. Default (16, 32, 64, 128).
        blocks_per_stage: encoder blocks per stage (one int or one per stage); the last block of
            every stage but the first halves the resolution.
        decoder_blocks: blocks per decoder stage (one int or one per stage); the first upsamples.
        num_tokens: number of learned tokens; 0 gives the plain UNet (``NoToken``) without maps.
        processor: ``"none"``, ``"mlp"`` (MLP mixer) or ``"transformer"`` (normalised Transformer).
        processor_depth: mixer blocks or Transformer layers.
        num_heads: attention heads of the Transformer.
        full_resolution_skip: also add the full-resolution encoder map before the head (the reference
            design does not).

    Spatial sizes of the input must be multiples of ``2 ** (len(channels) - 1)``.

    Examples::

        net = TokenUNet(in_channels=4, out_channels=3, num_tokens=32, processor="transformer")
        logits = net(torch.randn(1, 4, 128, 128, 128))
        logits, maps = net(x, return_attention=True)  # maps["gather"]: (1, 32, 16, 16, 16)
    """

    channels_last_inference: bool = True
    """Run CPU inference (no autograd, float32 input) on the channels-last path of :mod:`.channels_last`:
    the plain modules' result up to float rounding, with fewer passes over memory. Under CPU autocast to
    bfloat16 its k3 convolutions run in bfloat16. False runs the plain modules."""

    def __init__(
        self,
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
    ) -> None:
        super().__init__()
        self._validate_config(in_channels, out_channels, channels, num_tokens, processor)
        channels = tuple(channels)
        encoder_blocks = _as_tuple(blocks_per_stage, len(channels), "blocks_per_stage")
        up_blocks = _as_tuple(decoder_blocks, len(channels) - 1, "decoder_blocks")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_tokens = num_tokens
        self.size_multiple = 2 ** (len(channels) - 1)
        self.full_resolution_skip = full_resolution_skip

        self.input_norm = nn.InstanceNorm3d(in_channels)
        self.encoder = nn.ModuleList()
        width = in_channels
        for stage, (stage_width, count) in enumerate(zip(channels, encoder_blocks, strict=True)):
            blocks = []
            for index in range(count):
                downsample = stage > 0 and index == count - 1
                blocks.append(EncoderBlock(width, stage_width, downsample=downsample))
                width = stage_width
            self.encoder.append(nn.Sequential(*blocks))

        if num_tokens:
            bottleneck = channels[-1]
            self.token_learner = TokenLearner3D(bottleneck, num_tokens)
            self.token_processor = build_token_processor(processor, bottleneck, num_tokens, processor_depth, num_heads)
            self.token_fuser = TokenFuser3D(bottleneck, num_tokens)

        self.decoder = nn.ModuleList()
        for stage, count in enumerate(up_blocks):
            in_width, out_width = channels[-1 - stage], channels[-2 - stage]
            blocks = [UpBlock(in_width, out_width)]
            blocks += [EncoderBlock(out_width, out_width) for _ in range(count - 1)]
            self.decoder.append(nn.Sequential(*blocks))
        self.head = nn.Conv3d(channels[0], out_channels, 1)

    @staticmethod
    def _validate_config(in_channels, out_channels, channels, num_tokens, processor) -> None:
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if len(tuple(channels)) < 2 or any(not isinstance(c, int) or c < 1 for c in channels):
            raise ValueError(f"channels must list at least two positive stage widths, got {channels!r}.")
        if not isinstance(num_tokens, int) or num_tokens < 0:
            raise ValueError(f"num_tokens must be 0 (no tokens) or a positive integer, got {num_tokens!r}.")
        if processor not in PROCESSORS:
            raise ValueError(f"unknown token processor '{processor}'; choose one of {', '.join(PROCESSORS)}.")
        if num_tokens == 0 and processor != "none":
            raise ValueError(
                f"num_tokens=0 leaves no tokens for the '{processor}' processor; use at least 1 token, "
                "or processor='none' for the plain UNet (NoToken)."
            )

    @property
    def bfloat16_cpu_inference(self) -> bool:
        """Whether CPU autocast to bfloat16 speeds up inference (the channels-last path's k3 convolutions)."""
        return self.channels_last_inference

    @property
    def has_tokens(self) -> bool:
        """Whether this network has a TokenLearner/TokenFuser and so per-token maps."""
        return self.num_tokens > 0

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` naming the problem if ``x`` is not a valid (B, C, H, W, D) input."""
        check_volume_batch(x, self.in_channels, self.size_multiple)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """Logits (B, out_channels, H, W, D); with ``return_attention`` also the token maps.

        The maps come as ``{"gather": A, "broadcast": B}``, each (B, num_tokens, h, w, d) on the
        bottleneck grid with values in (0, 1).
        """
        self.check_input(x)
        if return_attention and not self.has_tokens:
            raise ValueError("this network has no tokens (NoToken), so it has no attention maps to return.")
        if self._runs_channels_last(x):
            conv_dtype = torch.bfloat16 if torch.is_autocast_enabled("cpu") else None
            with torch.autocast("cpu", enabled=False):  # the path chooses its own precision
                logits, maps = self._forward_channels_last(x, conv_dtype)
            return (logits, maps) if return_attention else logits
        skips = []
        x = self.input_norm(x)
        for index, stage in enumerate(self.encoder):
            x = stage(x)
            # The full-resolution map is a skip only on request: not holding it saves memory.
            skips.append(x if index or self.full_resolution_skip else None)
        x, maps = self._tokenize(x) if self.has_tokens else (x, None)
        for stage, skip in zip(self.decoder, reversed(skips[:-1]), strict=True):
            x = stage(x)
            if skip is not None:
                x = x.add_(skip)
        logits = pointwise(x, self.head.weight.flatten(1), self.head.bias)
        return (logits, maps) if return_attention else logits

    def _runs_channels_last(self, x: torch.Tensor) -> bool:
        if not self.channels_last_inference or x.device.type != "cpu" or x.dtype != torch.float32:
            return False
        if torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") != torch.bfloat16:
            return False
        return not torch.is_grad_enabled() or not (x.requires_grad or any(p.requires_grad for p in self.parameters()))

    def _forward_channels_last(self, x: torch.Tensor, conv_dtype: torch.dtype | None = None):
        """:meth:`forward` on the channels-last inference path (logits come channels-first, as usual)."""
        x = cl.instance_norm(x, self.input_norm.eps)
        skips = []
        for index, stage in enumerate(self.encoder):
            for block in stage:
                x = cl.encoder_block(block, x, conv_dtype)
            skips.append(x if index or self.full_resolution_skip else None)
        maps = None
        if self.has_tokens:
            x, maps = self._tokenize(x)
            x = cl.channels_last(x)
        for stage, skip in zip(self.decoder, reversed(skips[:-1]), strict=True):
            for block in stage:
                run = cl.up_block if isinstance(block, UpBlock) else cl.encoder_block
                x = run(block, x, conv_dtype)
            if skip is not None:
                x = x.add_(skip)
        return cl.pointwise_channels_first(x, self.head.weight.flatten(1), self.head.bias), maps

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of the encoder stages (channels-first), for analysis (CKA)."""
        self.check_input(x)
        features = []
        x = self.input_norm(x)
        for stage in self.encoder:
            x = stage(x)
            features.append(x)
        return features

    def _tokenize(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """TokenLearner -> processor -> TokenFuser on the bottleneck map; returns the map and maps."""
        grid = x.shape[2:]
        flat = x.flatten(2)
        normalized = normalize_voxels(flat)
        tokens, gather = self.token_learner(flat, normalized)
        fused, broadcast = self.token_fuser(flat, normalized, self.token_processor(tokens))
        shape = (x.shape[0], self.num_tokens, *grid)
        return fused.view_as(x), {"gather": gather.view(shape), "broadcast": broadcast.view(shape)}
