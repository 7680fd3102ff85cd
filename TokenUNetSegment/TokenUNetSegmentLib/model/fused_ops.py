"""Fused forms of the blocks' pointwise convolutions, gated sums and k2/s2 transposed convolutions.

They compute exactly what the plain modules compute (up to float rounding) with fewer passes over
full-resolution maps, which dominate Token-UNet's time and memory on a CPU:

- a 1x1x1 convolution is one matrix product over the flattened map (no oneDNN layout reorders);
- the gated sum ``(1 - g) * shortcut + g * residual`` is folded into the weights of the last linear
  layer on each path, and the residual product is accumulated into the shortcut in place;
- a ConvTranspose3d with kernel 2 and stride 2 writes each input voxel to its own 2x2x2 block, so it is
  a matrix product followed by a depth-to-space rearrangement, added in place into its destination.
"""

from __future__ import annotations

import torch

_CHUNK_ELEMENTS = 1 << 22  # 16 MB of float32 per temporary slab


def pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``Conv3d(k=1)`` of ``x`` (B, C, *S) with ``weight`` (O, C) and ``bias`` (O,) as a matrix product."""
    batch, channels, *spatial = x.shape
    flat = x.reshape(batch, channels, -1)
    # One (O, C) @ (C, V) product per item: BLAS's fast layout, no transposed copies.
    items = [torch.mm(weight, item) if bias is None else torch.addmm(bias[:, None], weight, item) for item in flat]
    out = items[0].unsqueeze(0) if batch == 1 else torch.stack(items)
    return out.view(batch, weight.shape[0], *spatial)


def accumulate_pointwise(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``out += Conv3d(k=1, no bias)(x)`` in place; ``out`` must be a fresh contiguous tensor.

    With one type throughout the product is accumulated in place; otherwise (under autocast, where ``x`` comes
    from a float16 or bfloat16 convolution and ``out`` or ``weight`` stay float32) it is computed on its own
    (in autocast's type) and added, since an in-place product cannot mix types.
    """
    batch, channels = x.shape[:2]
    flat_out = out.view(batch, weight.shape[0], -1)
    flat_x = x.reshape(batch, channels, -1)
    same_type = out.dtype == x.dtype == weight.dtype
    for index in range(batch):
        if same_type:
            flat_out[index].addmm_(weight, flat_x[index])
        else:
            flat_out[index].add_(torch.mm(weight.to(x.dtype), flat_x[index]))
    return out


def accumulate_transposed_k2s2(
    out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, chunk_elements: int = _CHUNK_ELEMENTS
) -> torch.Tensor:
    """``out += ConvTranspose3d(k=2, s=2, no bias)(x)`` in place, a slab of input depth at a time.

    Working in slabs bounds the temporary block tensor to about ``chunk_elements`` values instead
    of a second full-resolution map.

    Args:
        out: (B, O, 2D, 2H, 2W) fresh contiguous tensor.
        x: (B, C, D, H, W).
        weight: (C, O, 2, 2, 2), the ConvTranspose3d weight layout.
        chunk_elements: largest temporary, in values.
    """
    batch, channels, depth, height, width = x.shape
    out_channels = weight.shape[1]
    matrix = weight.reshape(channels, out_channels * 8).t()
    slab = max(1, min(depth, chunk_elements // max(1, out_channels * 8 * height * width)))
    target = out.view(batch, out_channels, depth, 2, height, 2, width, 2)
    for index in range(batch):
        for start in range(0, depth, slab):
            stop = min(depth, start + slab)
            blocks = torch.mm(matrix, x[index, :, start:stop].reshape(channels, -1))
            blocks = blocks.view(out_channels, 2, 2, 2, stop - start, height, width).permute(0, 4, 1, 5, 2, 6, 3)
            target[index, :, start:stop].add_(blocks)
    return out


def upsample2x_trilinear(x: torch.Tensor) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False)`` for (B, C, D, H, W).

    Without autograd it runs as three separable passes (each output voxel is 3/4 of its nearest input
    voxel plus 1/4 of the next nearest, clamped at the borders), several times faster on a CPU than
    the generic kernel; with autograd it calls ``F.interpolate``.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False)
    for dim in (2, 3, 4):
        x = upsample2x_axis(x, dim)
    return x


def upsample2x_axis(x: torch.Tensor, dim: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Linear x2 upsampling (``align_corners=False``) along one axis ``dim`` of ``x``.

    Writes into ``out`` of shape (*x.shape[:dim], length, 2, *x.shape[dim + 1:]) (default a new contiguous
    tensor; any strides that let the (length, 2) axes merge into one) and returns it with those axes merged.
    """
    length = x.shape[dim]
    if out is None:
        out = x.new_empty((*x.shape[:dim], length, 2, *x.shape[dim + 1 :]))
    even, odd = out.select(dim + 1, 0), out.select(dim + 1, 1)
    if length == 1:
        even.copy_(x)
        odd.copy_(x)
    else:
        head, tail = x.narrow(dim, 0, length - 1), x.narrow(dim, 1, length - 1)
        torch.lerp(tail, head, 0.25, out=even.narrow(dim, 1, length - 1))
        torch.lerp(head, tail, 0.25, out=odd.narrow(dim, 0, length - 1))
        even.narrow(dim, 0, 1).copy_(x.narrow(dim, 0, 1))
        odd.narrow(dim, length - 1, 1).copy_(x.narrow(dim, length - 1, 1))
    return out.view(*out.shape[:dim], 2 * length, *out.shape[dim + 2 :])
