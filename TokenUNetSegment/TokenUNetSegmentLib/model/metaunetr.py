"""MetaUNETR: a MetaFormer encoder with a pluggable token mixer and the SwinUNETR convolutional decoder.

Reference: Lyu, Zhang, Zhang, Liu, Wang, Zhu, "MetaUNETR: Rethinking Token Mixer Encoding for Efficient
Multi-Organ Segmentation", MICCAI 2024.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrUpBlock
from torch import nn

from .metaformer import MetaFormerEncoder
from .token_mixers import FIXED_SIZE_MIXERS, MIXERS
from .tricruci import RECURRENT_CELLS
from .validation import check_volume_batch

REFERENCE_RECURRENT_HIDDEN = (12, 24, 36, 48)
"""Hidden sizes per stage of the recurrence mixer that reproduce the reference parameter counts (f = 24 and 48)."""

_SINGLE_VOXEL = (
    "input spatial size {size} leaves a single voxel at the 1/32 bottleneck, where the decoder's "
    "normalisation needs at least two; use at least 64 in one axis (e.g. (32, 32, 64) or 96^3)."
)


class MetaUNETR(nn.Module):
    """MetaUNETR for 3D segmentation: SwinUNETR's layout with any token mixer in a MetaFormer encoder.

    The encoder embeds 2^3 patches (Conv3d k2 s2), then runs four stages of widths f, 2f, 4f, 8f; each
    block is ``x + mixer(norm(x))``, ``x + MLP(norm(x))``, and each stage ends with LayerNorm and a
    Conv3d k2 s2 that doubles the width. The five hidden states (channel-normalised) feed MONAI's
    UNETR blocks exactly as in SwinUNETR (plus a residual block on the 1/16 skip).

    Args:
        in_channels: number of input channels (1 for CT).
        out_channels: number of output channels (classes).
        mixer: ``"attention"``, ``"conv"``, ``"recurrence"``, ``"permute_mlp"``, ``"global_filter"`` or
            ``"mamba"``.
        feature_size: width f of the first stage, a multiple of 12 (24 or 48 in the paper).
        img_size: input spatial size (int or 3 ints, multiples of 32). It fixes the weights of
            ``permute_mlp`` and ``global_filter``, which then accept only this size; the other mixers
            accept any multiple of 32 and only validate it.
        depths: MetaFormer blocks per stage.
        mlp_ratio: MLP width as a multiple of the stage width.
        recurrent_hidden: hidden size per stage and direction of the recurrence mixer; default
            :data:`REFERENCE_RECURRENT_HIDDEN`, (12, 24, 36, 48), for every feature size.
        recurrent_cell: ``"lstm"`` (bidirectional LSTM, the paper's), ``"gru"`` or ``"rnn"`` (tanh).
        num_heads: attention heads per stage (attention mixer).
        window_size: attention window (attention mixer).
        drop_path_rate: stochastic depth of the encoder.
        norm_name: normalisation of the decoder blocks.

    Spatial sizes of the input must be multiples of 32 (``size_multiple``), and not 32 in all three axes
    (the 1/32 bottleneck needs at least two voxels for the decoder's instance norm, as in SwinUNETR).

    Attributes:
        fixed_patch_size: the only input size (H, W, D) accepted by ``permute_mlp`` and ``global_filter``
            networks (their ``img_size``); None for the mixers that accept any valid size.

    Examples::

        net = MetaUNETR(in_channels=1, out_channels=14, mixer="recurrence", feature_size=24)
        x = torch.randn(1, 1, 96, 96, 96)
        logits = net(x)  # (1, 14, 96, 96, 96)
        features = net.stage_features(x)  # 4 maps: (1, 24, 48^3), (1, 48, 24^3), (1, 96, 12^3), (1, 192, 6^3)
    """

    size_multiple = 32
    has_tokens = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        mixer: str = "recurrence",
        feature_size: int = 24,
        img_size: int | Sequence[int] = 96,
        depths: Sequence[int] = (2, 2, 2, 2),
        mlp_ratio: float = 4.0,
        recurrent_hidden: Sequence[int] = REFERENCE_RECURRENT_HIDDEN,
        recurrent_cell: str = "lstm",
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        drop_path_rate: float = 0.0,
        norm_name: str = "instance",
    ) -> None:
        super().__init__()
        img_size = self._validate_config(in_channels, out_channels, mixer, feature_size, img_size, depths)
        if recurrent_cell not in RECURRENT_CELLS:
            raise ValueError(f"unknown recurrent_cell '{recurrent_cell}'; choose one of {', '.join(RECURRENT_CELLS)}.")
        widths = tuple(feature_size * 2**i for i in range(4))
        if len(tuple(recurrent_hidden)) != 4 or len(tuple(num_heads)) != 4:
            raise ValueError("recurrent_hidden and num_heads must give one value per stage (4 values).")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.mixer, self.feature_size = mixer, feature_size
        self.fixed_patch_size = img_size if mixer in FIXED_SIZE_MIXERS else None

        f = feature_size
        self.encoder = MetaFormerEncoder(
            in_channels,
            f,
            mixer,
            tuple(depths),
            mlp_ratio,
            self.fixed_patch_size,
            tuple(recurrent_hidden),
            recurrent_cell,
            tuple(num_heads),
            window_size,
            drop_path_rate,
        )

        def basic(channels_in: int, channels_out: int) -> nn.Module:
            return UnetrBasicBlock(3, channels_in, channels_out, 3, 1, norm_name=norm_name, res_block=True)

        def up(channels_in: int, channels_out: int) -> nn.Module:
            return UnetrUpBlock(3, channels_in, channels_out, 3, 2, norm_name=norm_name, res_block=True)

        self.encoder1 = basic(in_channels, f)
        self.encoder2, self.encoder3, self.encoder4, self.encoder5 = (basic(w, w) for w in widths)
        self.encoder10 = basic(16 * f, 16 * f)
        self.decoder5 = up(16 * f, 8 * f)
        self.decoder4 = up(8 * f, 4 * f)
        self.decoder3 = up(4 * f, 2 * f)
        self.decoder2 = up(2 * f, f)
        self.decoder1 = up(f, f)
        self.out = UnetOutBlock(3, f, out_channels)

    @staticmethod
    def _validate_config(in_channels, out_channels, mixer, feature_size, img_size, depths) -> tuple[int, int, int]:
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if mixer not in MIXERS:
            raise ValueError(f"unknown token mixer '{mixer}'; choose one of {', '.join(MIXERS)}.")
        if not isinstance(feature_size, int) or feature_size < 12 or feature_size % 12:
            raise ValueError(f"feature_size must be a positive multiple of 12 (e.g. 24 or 48), got {feature_size!r}.")
        size = (img_size,) * 3 if isinstance(img_size, int) else tuple(img_size)
        if len(size) != 3 or any(not isinstance(s, int) or s < 32 or s % 32 for s in size):
            raise ValueError(
                f"img_size must be a multiple of 32 (one int or 3 ints, e.g. 96), got {img_size!r}: "
                "the network halves the resolution five times."
            )
        if size == (32, 32, 32):
            raise ValueError(_SINGLE_VOXEL.format(size=size).replace("input spatial size", "img_size"))
        if len(tuple(depths)) != 4 or any(not isinstance(d, int) or d < 1 for d in depths):
            raise ValueError(f"depths must give 4 positive block counts, one per stage, got {depths!r}.")
        return size

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` naming the problem if ``x`` is not a valid (B, C, H, W, D) input."""
        check_volume_batch(x, self.in_channels, self.size_multiple)
        size, multiple = tuple(x.shape[2:]), self.size_multiple
        if size == (multiple,) * 3:
            raise ValueError(_SINGLE_VOXEL.format(size=size))
        if self.fixed_patch_size is not None and size != self.fixed_patch_size:
            raise ValueError(
                f"this MetaUNETR-{self.mixer} network was built for inputs of size {self.fixed_patch_size} "
                f"(its {self.mixer} weights are tied to that size), got {size}; use patches of that size "
                "(e.g. a sliding window) or build the network with a matching img_size."
            )

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> torch.Tensor:
        """Logits (B, out_channels, H, W, D). MetaUNETR has no token maps: ``return_attention`` is refused."""
        if return_attention:
            raise ValueError("MetaUNETR has no tokens, so it has no attention maps to return.")
        self.check_input(x)
        hidden = self.encoder(x)
        enc0 = self.encoder1(x)
        enc1 = self.encoder2(hidden[0])
        enc2 = self.encoder3(hidden[1])
        enc3 = self.encoder4(hidden[2])
        enc4 = self.encoder5(hidden[3])
        dec4 = self.encoder10(hidden[4])
        dec3 = self.decoder5(dec4, enc4)
        dec2 = self.decoder4(dec3, enc3)
        dec1 = self.decoder3(dec2, enc2)
        dec0 = self.decoder2(dec1, enc1)
        return self.out(self.decoder1(dec0, enc0))

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of the four encoder stages (before downsampling), channels-first, for analysis (CKA)."""
        self.check_input(x)
        return self.encoder.hidden_states(x)[1]
