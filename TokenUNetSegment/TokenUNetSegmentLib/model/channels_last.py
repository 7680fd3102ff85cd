"""Token-UNet's inference path on the CPU: channels-last maps, instance norms folded into linear maps.

It computes what the blocks' plain ``forward`` computes (up to float rounding) with fewer passes over the
full-resolution maps, which bound Token-UNet's speed on a CPU once the convolutions run near the GEMM rate:

- every map is stored channels-last (N, D, H, W, C in memory): oneDNN's 3D convolutions run on it without
  layout reorders, and a 1x1x1 convolution is one (voxels x C) @ (C x O) product on it;
- the convolution that follows a norm takes the normalised map written in one pass (no separate
  mean-subtraction and scaling passes); its LeakyReLU runs in place;
- the second instance norm of a block is folded into the linear map after it: for per-channel statistics
  (mean m, inverse deviation r) of the hidden map h, ``W @ ((h - m) * r) = (W * r) @ h - W @ (m * r)``; the
  k1 convolution and the k2/s2 transposed convolution have no padding, so this is exact everywhere;
- the statistics come from ``torch.batch_norm_update_stats``, whose CPU kernel reads the map once;
- a trilinear upsampling and the transposed convolution added to it write the full-resolution map once;
- optionally (CPU autocast to bfloat16) the k3 convolutions run in bfloat16, twice as fast where the CPU
  has bfloat16 dot products (AVX512-BF16, AMX); statistics and all other products stay float32.

Used by :class:`~.token_unet.TokenUNet` for CPU inference (no autograd); training and other devices run the
plain modules. Weights and their layout are those of the modules: nothing here owns parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fused_ops import upsample2x_axis

CHANNELS_LAST = torch.channels_last_3d
_STATISTICS_ROWS = 32768  # rows per float32 partial sum of the instance statistics
_STATISTICS_COLUMNS = 64  # columns the statistics kernel reads at once (fast from about 64)
_CONVERSION_ELEMENTS = 1 << 21  # values per slab of a bfloat16 map converted to float32 for a product (8 MB)
_SLAB_ELEMENTS = 1 << 21  # output values per slab of the upsampling and transposed convolution (8 MB)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, D, H, W) stored channels-last (a no-op when it already is)."""
    return x.contiguous(memory_format=CHANNELS_LAST)


def voxels(x: torch.Tensor) -> torch.Tensor:
    """The (B, V, C) voxel-by-channel view of a channels-last (B, C, D, H, W) map (a view: writes go through)."""
    return x.permute(0, 2, 3, 4, 1).view(x.shape[0], -1, x.shape[1])


def instance_statistics(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per item and channel of a channels-last map: the mean and ``1 / sqrt(biased variance + eps)``, each
    (B, C) float32, as ``nn.InstanceNorm3d`` (no affine, no running statistics) computes them.

    ``torch.batch_norm_update_stats`` reads a (rows, columns) matrix in one pass, fast when it has some 64
    columns, but accumulates in float32 down the rows. So the (voxels, C) matrix of a map with few channels
    is read as (voxels / k, k C) (column j holds channel j mod C), in slabs of :data:`_STATISTICS_ROWS`
    rows, and the partial results are merged in float64 (Chan's parallel formula): the statistics of a
    128^3 map stay within ~1e-6 of exact, as precise as the InstanceNorm kernel's.
    """
    if x[0, 0].numel() == 1:  # as F.instance_norm refuses it
        raise ValueError(f"Expected more than 1 spatial element when training, got input size {x.size()}")
    means, variances = [], []
    for item in voxels(x):
        count, channels = item.shape
        k = 1
        while k * channels < _STATISTICS_COLUMNS and count % (2 * k) == 0:
            k *= 2
        slabs = item.reshape(count // k, k * channels).split(_STATISTICS_ROWS)
        parts = [torch.batch_norm_update_stats(slab.float(), None, None, 0.0) for slab in slabs]
        part_means = torch.stack([m for m, _ in parts]).double().view(-1, channels)
        part_variances = torch.stack([v for _, v in parts]).double().view(-1, channels)
        counts = torch.tensor([len(slab) for slab in slabs], dtype=torch.float64).repeat_interleave(k)[:, None]
        mean = (counts * part_means).sum(0) / count
        means.append(mean)
        variances.append((counts * (part_variances + (part_means - mean) ** 2)).sum(0) / count)
    mean, variance = torch.stack(means), torch.stack(variances)
    return mean.float(), torch.rsqrt(variance + eps).float()


def normalized(x: torch.Tensor, mean: torch.Tensor, inverse_std: torch.Tensor, out=None) -> torch.Tensor:
    """``(x - mean) * inverse_std`` per item and channel, written once into ``out`` (default: a new
    channels-last map; ``out`` may be ``x`` itself)."""
    out = new_map(x, x.shape[1]) if out is None else out
    flat_out = voxels(out)
    for index, item in enumerate(voxels(x)):
        # on the (voxels, C) view: a 5D channels-last addcmul that casts to bfloat16 takes a slow path
        torch.addcmul(-mean[index] * inverse_std[index], item, inverse_std[index], out=flat_out[index])
    return out


def instance_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``InstanceNorm3d`` (no affine) of any-layout ``x`` as a new channels-last map."""
    out = channels_last(x)
    out = out.clone() if out is x else out
    return normalized(out, *instance_statistics(out, eps), out=out)


def conv_leaky_relu(x: torch.Tensor, conv: nn.Conv3d, slope: float) -> torch.Tensor:
    """``leaky_relu(conv(x), slope)`` for a channels-last ``x`` (oneDNN keeps the output channels-last).

    oneDNN's fused convolution + LeakyReLU (``torch.ops.mkldnn._convolution_pointwise``, a private operator)
    measured no faster than this in-place activation (both 258-261 ms for 32 -> 64 channels at 64^3, one thread).
    """
    weight = conv.weight.to(dtype=x.dtype, memory_format=CHANNELS_LAST)
    bias = None if conv.bias is None else conv.bias.to(x.dtype)
    out = F.conv3d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return F.leaky_relu_(out, slope)


def pointwise_into(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """``out = Conv3d(k=1)(x)`` (``bias``) or ``out += Conv3d(k=1, no bias)(x)`` (``bias`` None), per item.

    ``out`` and ``x`` are channels-last; ``weight`` is (O, C) or per item (B, O, C); ``bias`` (O,) or (B, O).
    A bfloat16 ``x`` is converted slab by slab (cache-sized) and multiplied in ``out``'s float32.
    """
    flat_out, flat_x = voxels(out), voxels(x)
    step = flat_x.shape[1] if x.dtype == out.dtype else max(1, _CONVERSION_ELEMENTS // x.shape[1])
    for index in range(x.shape[0]):
        matrix = (weight[index] if weight.ndim == 3 else weight).t()
        for start in range(0, flat_x.shape[1], step):
            source, target = flat_x[index, start : start + step].to(out.dtype), flat_out[index, start : start + step]
            if bias is None:
                target.addmm_(source, matrix)
            else:
                torch.addmm(bias[index] if bias.ndim == 2 else bias, source, matrix, out=target)


def pointwise_channels_first(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``Conv3d(k=1)(x)`` of a channels-last ``x`` as a contiguous (channels-first) map: ``W @ x^T`` per item.

    The network's last layer: consumers (window stitching, argmax over channels) read channels-first maps, and
    transposing a channels-last one costs more than the product (71 ms for 13 x 128^3 on one thread).
    """
    out = torch.empty((x.shape[0], weight.shape[0], *x.shape[2:]), dtype=x.dtype, device=x.device)
    flat_out = out.view(x.shape[0], weight.shape[0], -1)
    for index, item in enumerate(voxels(x)):
        torch.addmm(bias[:, None], weight, item.t(), out=flat_out[index])
    return out


def new_map(like: torch.Tensor, channels: int, dtype=None) -> torch.Tensor:
    """An empty channels-last map with the batch and spatial size of ``like`` and ``channels`` channels."""
    shape = (like.shape[0], channels, *like.shape[2:])
    return torch.empty(shape, dtype=dtype or like.dtype, device=like.device, memory_format=CHANNELS_LAST)


def gated_shortcut(x: torch.Tensor, projection: nn.Module, keep: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``keep * projection(x) + bias`` as a new channels-last map; ``bias`` is (B, O)."""
    if isinstance(projection, nn.Identity):
        out = new_map(x, x.shape[1])
        return torch.addcmul(bias.view(*bias.shape, 1, 1, 1), x, keep, out=out)
    out = new_map(x, projection.weight.shape[0])
    pointwise_into(out, x, keep * projection.weight.flatten(1), keep * projection.bias + bias)
    return out


def _residual_hidden(residual: nn.Sequential, x: torch.Tensor, conv_dtype) -> tuple[torch.Tensor, ...]:
    """The hidden map ``leaky_relu(conv(norm(x)))`` (in ``conv_dtype``) and its statistics (mean, inverse std)."""
    norm_in, conv, activation, norm_hidden = residual[0], residual[1], residual[2], residual[3]
    normal = normalized(x, *instance_statistics(x, norm_in.eps), out=new_map(x, x.shape[1], conv_dtype))
    hidden = conv_leaky_relu(normal, conv, activation.negative_slope)
    return (hidden, *instance_statistics(hidden, norm_hidden.eps))


def encoder_block(block, x: torch.Tensor, conv_dtype: torch.dtype | None = None) -> torch.Tensor:
    """:class:`~.blocks.EncoderBlock` on a channels-last float32 ``x``; returns a channels-last map.

    ``conv_dtype`` torch.bfloat16 runs the k3 convolution in bfloat16 (its normalised input written in
    bfloat16, its output kept in bfloat16); statistics and every other product stay float32.
    """
    hidden, mean, inverse_std = _residual_hidden(block.residual, x, conv_dtype)
    conv = block.residual[4]
    g = block.gate.weight().to(x.dtype)
    weight = g * conv.weight.flatten(1)  # (O, hidden): the gated k1 convolution
    # W @ ((h - m) * r) + b = (W * r) @ h + (b - W @ (m * r)), per item
    bias = g * conv.bias - (mean * inverse_std) @ weight.t()
    shortcut = average_pool2x(x) if block.downsample else x
    out = gated_shortcut(shortcut, block.projection, 1 - g, bias)
    pointwise_into(out, hidden, weight[None] * inverse_std[:, None, :].to(x.dtype), None)
    return out


def up_block(block, x: torch.Tensor, conv_dtype: torch.dtype | None = None) -> torch.Tensor:
    """:class:`~.blocks.UpBlock` on a channels-last float32 ``x``; returns a channels-last map at twice the size
    (``conv_dtype`` as for :func:`encoder_block`)."""
    hidden, mean, inverse_std = _residual_hidden(block.residual, x, conv_dtype)
    conv = block.residual[4]
    g = block.gate.weight().to(x.dtype)
    out_channels = conv.weight.shape[1]
    # (hidden, a, b, c, O): column ((a * 2 + b) * 2 + c) * O + o writes output channel o at offset (a, b, c)
    matrix = (g * conv.weight).permute(0, 2, 3, 4, 1).reshape(conv.weight.shape[0], 8 * out_channels)
    offsets = -(mean * inverse_std) @ matrix  # (B, 8 O): the folded mean, one value per channel and offset
    bias = (g * conv.bias).expand(x.shape[0], out_channels)
    low = gated_shortcut(x, block.projection, 1 - g, bias)
    return upsample_and_add_transposed_k2s2(low, hidden, matrix[None] * inverse_std[:, :, None], offsets)


def average_pool2x(x: torch.Tensor) -> torch.Tensor:
    """``F.avg_pool3d(x, 2)`` of a channels-last map (even sizes), kept channels-last.

    PyTorch's CPU kernel reorders a channels-last 3D map to channels-first and back; summing the eight
    strided sub-grids reads the map once.
    """
    out = None
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                corner = x[:, :, a::2, b::2, c::2]
                out = corner.clone(memory_format=CHANNELS_LAST) if out is None else out.add_(corner)
    return out.mul_(0.125)


def upsample_and_add_transposed_k2s2(
    low: torch.Tensor, x: torch.Tensor, matrix: torch.Tensor, offsets: torch.Tensor, slab_elements=None
) -> torch.Tensor:
    """``upsample2x(low) + ConvTranspose3d(k=2, s=2)(x)`` for channels-last maps, in slabs of input depth planes.

    Output planes 2d and 2d + 1 depend on planes d - 1 to d + 1 of ``low`` and on plane d of ``x`` only. Each
    slab's planes are upsampled by three separable linear passes through reused slab-sized buffers, so the
    full-resolution map is written once, without full-size intermediate maps; then each slab receives its
    transposed-convolution blocks (a GEMM per slab, its result still in the cache). Slabs of about
    :data:`_SLAB_ELEMENTS` output values keep the number of operations (and thread synchronisations) small.

    Args:
        low: (B, O, D, H, W) channels-last, the map to upsample trilinearly (``align_corners=False``).
        x: (B, C, D, H, W) channels-last, the transposed convolution's input.
        matrix: (B, C, 8 O), column ``((a * 2 + b) * 2 + c) * O + o`` for output channel o at offset (a, b, c).
        offsets: (B, 8 O) added to every voxel's block (the folded bias and mean terms).

    Returns:
        (B, O, 2D, 2H, 2W) channels-last.
    """
    batch, out_channels, depth, height, width = low.shape
    channels = x.shape[1]
    step = max(1, min(depth, (slab_elements or _SLAB_ELEMENTS) // (8 * height * width * out_channels)))
    out = torch.empty(
        (batch, out_channels, 2 * depth, 2 * height, 2 * width), dtype=low.dtype, device=low.device,
        memory_format=CHANNELS_LAST,
    )  # fmt: skip
    planes = out.permute(0, 2, 3, 4, 1)  # (B, 2D, 2H, 2W, O)
    blocks_target = planes.view(batch, depth, 2, height, 2, width, 2, out_channels)
    deep = low.new_empty((step + 2, 2, height, width, out_channels))  # the slab and its two neighbours, x2 in depth
    tall = low.new_empty((2 * step, height, 2, width, out_channels))
    low_flat, x_flat = low.permute(0, 2, 3, 4, 1), x.permute(0, 2, 3, 4, 1)
    for index in range(batch):
        for start in range(0, depth, step):
            stop = min(depth, start + step)
            first, last = max(start - 1, 0), min(stop + 1, depth)  # with the neighbouring planes
            count = 2 * (stop - start)
            doubled = upsample2x_axis(low_flat[index, first:last], 0, out=deep[: last - first])
            doubled = doubled[2 * (start - first) : 2 * (start - first) + count]
            upsample2x_axis(doubled, 1, out=tall[:count])
            upsample2x_axis(
                tall[:count].view(count, 2 * height, width, out_channels),
                2,
                out=planes[index, 2 * start : 2 * stop].view(count, 2 * height, width, 2, out_channels),
            )
            rows = x_flat[index, start:stop].reshape(-1, channels).to(out.dtype)  # bfloat16 hidden maps: a slab
            blocks = torch.addmm(offsets[index], rows, matrix[index])
            blocks = blocks.view(stop - start, height, width, 2, 2, 2, out_channels).permute(0, 3, 1, 4, 2, 5, 6)
            blocks_target[index, start:stop].add_(blocks)
    return out
