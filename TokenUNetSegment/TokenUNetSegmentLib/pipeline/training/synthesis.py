"""Intensities of training patches, in HU: synthetic CT drawn from a tissue map (SynthSeg-style, constrained
to CT), real CT with each tissue re-mapped to another scan's contrast, organ lesions, and the scanner's
imprint (partial-volume blur, thick slices, lower resolution, noise). All on torch tensors (C, X, Y, Z).

Modes of one patch:
- ``synthetic``: every voxel drawn from its tissue's HU distribution for a random contrast phase, with a
  smooth random texture field (no trace of the source scan's own intensities);
- ``remapped``: the real image with each tissue shifted from its own mean to a drawn one (keeps the real
  texture, vessels and bone structure; changes the contrast phase and organ-to-organ contrast);
- ``real``: the real image with a small calibration shift and scale.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .tissues import TEXTURE_SD, TISSUE_ID, TISSUES, draw_scan_means

LESION_HOSTS = ("liver", "spleen", "kidney", "pancreas")


def smooth_field(shape, rng: np.random.Generator, points: int = 6) -> torch.Tensor:
    """A smooth random field with unit SD over ``shape`` (a coarse normal grid upsampled trilinearly)."""
    coarse = torch.as_tensor(rng.normal(0, 1, (1, 1, points, points, points)), dtype=torch.float32)
    return F.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=True)[0, 0]


def synthesize(tissues: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
    """A synthetic CT (1, X, Y, Z) in HU from a tissue map (X, Y, Z); returns (image, phase index)."""
    means, phase = draw_scan_means(rng)
    index = tissues.long()
    image = torch.as_tensor(means, dtype=torch.float32)[index]
    texture = torch.as_tensor(TEXTURE_SD * rng.uniform(0.6, 1.4, len(TISSUES)), dtype=torch.float32)[index]
    field = 0.6 * smooth_field(tissues.shape, rng, 8) + 0.8 * torch.as_tensor(
        rng.normal(0, 1, tuple(tissues.shape)), dtype=torch.float32
    )
    image += texture * field
    return image[None], phase


def remap(image: torch.Tensor, tissues: torch.Tensor, own_means: np.ndarray, rng: np.random.Generator):
    """The real image (1, X, Y, Z) with each tissue moved from its own mean HU to a newly drawn one."""
    means, _ = draw_scan_means(rng)
    shift = np.where(np.isfinite(own_means), means - own_means, 0.0)
    shift[TISSUE_ID["air"]] = 0.0
    shift[TISSUE_ID["bone"]] *= 0.3  # bone density does not follow contrast; keep most of it
    gain = rng.uniform(0.85, 1.15)
    index = tissues.long()
    mean_of = torch.as_tensor(np.nan_to_num(own_means), dtype=torch.float32)[index]
    return mean_of + gain * (image - mean_of) + torch.as_tensor(shift, dtype=torch.float32)[index]


def add_lesions(
    image: torch.Tensor,
    tissues: torch.Tensor,
    spacing,
    rng: np.random.Generator,
    count: int | None = None,
    large_share: float = 0.0,
):
    """Hypo- or hyperdense round lesions inside solid organs, 6-30 mm across or, for a ``large_share`` of them,
    30-90 mm (large metastases); their labels stay the organ's, so tumours and cysts do not turn an organ into a
    hole. ``image`` (1, X, Y, Z) HU, modified in place. With ``large_share`` 0 the random draws are those of
    earlier versions (recipes trained before the option reproduce)."""
    hosts = torch.zeros_like(tissues, dtype=torch.bool)
    for name in LESION_HOSTS:
        hosts |= tissues == TISSUE_ID[name]
    candidates = torch.nonzero(hosts)
    if len(candidates) == 0:
        return image
    count = int(rng.integers(1, 6)) if count is None else count
    spacing = torch.as_tensor(np.asarray(spacing, np.float32))
    axes = [torch.arange(n, dtype=torch.float32) for n in tissues.shape]
    for _ in range(count):
        centre = candidates[int(rng.integers(0, len(candidates)))].float()
        low, high = (15.0, 45.0) if large_share > 0 and rng.random() < large_share else (3.0, 15.0)
        radius_mm = torch.as_tensor(rng.uniform(low, high) * rng.uniform(0.7, 1.3, 3), dtype=torch.float32)
        reach = torch.ceil(radius_mm / spacing).long() + 1
        lo = torch.clamp(centre.long() - reach, min=0)
        hi = torch.minimum(centre.long() + reach + 1, torch.as_tensor(tissues.shape))
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        grids = torch.meshgrid(*[axes[i][box[i]] for i in range(3)], indexing="ij")
        distance = sum(((g - centre[i]) * spacing[i] / radius_mm[i]) ** 2 for i, g in enumerate(grids))
        inside = (distance <= 1.0) & hosts[box]
        contrast = rng.uniform(-80, -20) if rng.random() < 0.75 else rng.uniform(20, 60)
        edge = torch.clamp((1.0 - distance) * 3.0, 0.0, 1.0)  # soft border
        image[0][box] += torch.where(inside, contrast * edge, torch.zeros_like(edge))
    return image


def gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(np.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / max(sigma, 1e-6)) ** 2)
    return kernel / kernel.sum()


def blur(image: torch.Tensor, sigmas) -> torch.Tensor:
    """Separable Gaussian blur of (C, X, Y, Z) with per-axis SD in voxels (0 skips an axis); edges
    replicated."""
    out = image[:, None]  # (C, 1, X, Y, Z)
    for axis, sigma in enumerate(sigmas):
        if sigma <= 0.05:
            continue
        kernel = gaussian_kernel(float(sigma))
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = len(kernel)
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = len(kernel) // 2
        out = F.conv3d(F.pad(out, pad, mode="replicate"), kernel.view(shape))
    return out[:, 0]


def scanner_imprint(image: torch.Tensor, rng: np.random.Generator, strength: float = 1.0) -> torch.Tensor:
    """Partial-volume blur, thick slices (z blur, or z down- and up-sampling), in-plane resolution loss and
    noise on (C, X, Y, Z) HU."""
    s = float(strength)
    if rng.random() < 0.5 * s:
        sigma = rng.uniform(0.2, 0.9)
        image = blur(image, (sigma, sigma, sigma * rng.uniform(0.8, 1.5)))
    if rng.random() < 0.25 * s:
        image = blur(image, (0.0, 0.0, rng.uniform(0.5, 1.5)))
    if rng.random() < 0.2 * s:
        factor = rng.uniform(1.3, 2.2)
        shape = image.shape[1:]
        small = F.interpolate(
            image[None], size=(shape[0], shape[1], max(2, int(shape[2] / factor))), mode="trilinear", align_corners=True
        )
        image = F.interpolate(small, size=tuple(shape), mode="trilinear", align_corners=True)[0]
    if rng.random() < 0.7 * s:
        image = image + torch.as_tensor(rng.normal(0, rng.uniform(2, 25), tuple(image.shape)), dtype=torch.float32)
    return image


def window(image: torch.Tensor, windows) -> torch.Tensor:
    """Each channel clipped to its CT window and scaled to [0, 1], as the package's preprocessing does."""
    out = torch.empty_like(image)
    for channel, (low, high) in enumerate(windows):
        out[channel] = (image[channel].clamp(low, high) - low) / (high - low)
    return out
