"""Spatial augmentation in one resampling: a random affine map (rotation, anisotropic scaling) plus a smooth
random displacement field, evaluated with ``torch.nn.functional.grid_sample`` straight from the whole case
(no intermediate crops, so patches near the case's edges see what ``segment()`` would put there: padding).

And field-of-view augmentation: a patch cut by random planes (thin axial slabs, partial in-plane crops,
oblique edges), everything beyond them set to the padding value that ``segment()``'s preprocessing uses for
voxels outside the scan (the image minimum, which the CT window maps to its low end), labels there set to
background (``segment()`` never outputs labels outside the scan).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class WarpSettings:
    """Ranges of the spatial augmentation (strength 1; :meth:`scaled` multiplies them).

    ``rotation_deg``: maximum rotation about each axis; ``scale``: (min, max) body-size factor (> 1 enlarges
    the anatomy); ``anisotropy``: extra independent per-axis factor range; ``elastic_mm``: SD of the smooth
    displacement at its control points; ``elastic_points``: control points per axis over the patch.
    """

    probability: float = 0.85
    rotation_deg: float = 30.0
    scale: tuple[float, float] = (0.75, 1.3)
    anisotropy: float = 0.15
    elastic_probability: float = 0.6
    elastic_mm: float = 9.0
    elastic_points: int = 5

    def scaled(self, strength: float) -> WarpSettings:
        s = max(0.0, float(strength))
        lo, hi = self.scale
        return WarpSettings(
            probability=min(1.0, self.probability * min(s, 1.0)),
            rotation_deg=self.rotation_deg * s,
            scale=(1 - (1 - lo) * s, 1 + (hi - 1) * s),
            anisotropy=self.anisotropy * s,
            elastic_probability=min(1.0, self.elastic_probability * min(s, 1.0)),
            elastic_mm=self.elastic_mm * s,
            elastic_points=self.elastic_points,
        )


def rotation_matrix(angles_rad) -> np.ndarray:
    """Rotation about axes 0, 1, 2 (in that order) by the given angles."""
    a, b, c = angles_rad
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def random_source_grid(patch, centre, spacing, settings: WarpSettings, rng: np.random.Generator) -> torch.Tensor:
    """Source voxel coordinates (3, *patch) for every patch voxel: ``centre + M @ offset + displacement``.

    ``M`` rotates and scales (a scale factor f > 1 samples a smaller source region, so the anatomy appears
    larger); the displacement is a random field on a coarse control grid, upsampled trilinearly.
    """
    patch = [int(p) for p in patch]
    offsets = [torch.arange(p, dtype=torch.float32) - (p - 1) / 2 for p in patch]
    grid = torch.stack(torch.meshgrid(*offsets, indexing="ij"))  # (3, *patch)
    matrix = np.eye(3)
    if rng.random() < settings.probability:
        angles = np.radians(rng.uniform(-settings.rotation_deg, settings.rotation_deg, 3))
        size = rng.uniform(*settings.scale)
        per_axis = size * rng.uniform(1 - settings.anisotropy, 1 + settings.anisotropy, 3)
        matrix = rotation_matrix(angles) @ np.diag(1.0 / per_axis)
    source = torch.einsum("ij,j...->i...", torch.as_tensor(matrix, dtype=torch.float32), grid)
    if settings.elastic_mm > 0 and rng.random() < settings.elastic_probability:
        sd_voxels = settings.elastic_mm * rng.uniform(0.3, 1.0) / np.asarray(spacing, np.float64)
        coarse = rng.normal(0.0, 1.0, (3, *([settings.elastic_points] * 3))) * sd_voxels[:, None, None, None]
        field = F.interpolate(
            torch.as_tensor(coarse, dtype=torch.float32)[None], size=patch, mode="trilinear", align_corners=True
        )[0]
        source = source + field
    return source + torch.as_tensor(np.asarray(centre, np.float32)).view(3, 1, 1, 1)


def sample(volume: torch.Tensor, source: torch.Tensor, mode: str, fill: float = 0.0) -> torch.Tensor:
    """``volume`` (C, X, Y, Z) evaluated at the voxel coordinates ``source`` (3, *patch); ``fill`` outside."""
    shape = volume.shape[1:]
    normalised = [2 * source[axis] / max(shape[axis] - 1, 1) - 1 for axis in range(3)]
    grid = torch.stack(normalised[::-1], dim=-1)[None]  # grid_sample wants (x=last axis, y, z=first axis)
    shifted = volume[None] - fill if fill else volume[None]
    out = F.grid_sample(shifted, grid, mode=mode, padding_mode="zeros", align_corners=True)[0]
    return out + fill if fill else out


@dataclass
class FieldOfViewSettings:
    """How often and how far a patch is cut like a partial scan (strength 1).

    ``slab``: probability of an axial slab (two planes across z) ``min_slab_mm`` thick or more;
    ``side``: probability of each of up to two in-plane cuts (a reconstruction circle or a crop through the
    body); ``oblique_deg``: maximum tilt of a cut plane (an oblique scan's edges in the RAS model grid).
    """

    slab: float = 0.35
    min_slab_mm: float = 30.0
    side: float = 0.2
    oblique_deg: float = 30.0
    circle: float = 0.1

    def scaled(self, strength: float) -> FieldOfViewSettings:
        s = min(max(0.0, float(strength)), 1.5)
        return FieldOfViewSettings(
            min(1.0, self.slab * s), self.min_slab_mm, min(1.0, self.side * s), self.oblique_deg, self.circle * s
        )


def field_of_view_mask(patch, spacing, settings: FieldOfViewSettings, rng: np.random.Generator) -> np.ndarray | None:
    """A boolean (X, Y, Z) mask of the voxels a random partial scan keeps, or None for the whole patch.

    The patch centre (where the sampler put an organ voxel) stays inside in most draws, so the organ is cut,
    not removed; sometimes the cut passes anywhere.
    """
    patch = np.asarray(patch, int)
    spacing = np.asarray(spacing, np.float64)
    coords = np.stack(np.meshgrid(*[np.arange(p) - (p - 1) / 2 for p in patch], indexing="ij")) * spacing.reshape(
        3, 1, 1, 1
    )  # mm from the centre
    half = patch * spacing / 2
    keep = np.ones(tuple(patch), bool)
    cut = False

    def tilted(axis: int) -> np.ndarray:
        normal = np.zeros(3)
        normal[axis] = 1.0
        tilt = np.radians(rng.uniform(0, settings.oblique_deg)) if rng.random() < 0.4 else 0.0
        other = rng.choice([a for a in range(3) if a != axis])
        normal[other] = math.tan(tilt) * rng.choice([-1, 1])
        return normal / np.linalg.norm(normal)

    def inside(margin: float, extent: float) -> float:
        # offset of a cut from the centre: usually beyond `margin` (the centre kept), sometimes anywhere
        if rng.random() < 0.85:
            return rng.uniform(min(margin, extent), extent)
        return rng.uniform(-extent, extent)

    if rng.random() < settings.slab:
        thickness = rng.uniform(settings.min_slab_mm, max(settings.min_slab_mm, 2 * half[2]))
        low = rng.uniform(-thickness, 0.0) if rng.random() < 0.85 else rng.uniform(-half[2], half[2] - thickness)
        normal = tilted(2)
        distance = np.tensordot(normal, coords, axes=1)
        keep &= (distance >= low) & (distance <= low + thickness)
        cut = True
    for _ in range(2):
        if rng.random() < settings.side:
            axis = int(rng.integers(0, 3))
            normal = tilted(axis) * rng.choice([-1, 1])
            keep &= np.tensordot(normal, coords, axes=1) <= inside(5.0, half[axis])
            cut = True
    if rng.random() < settings.circle:
        radius = rng.uniform(0.35, 0.7) * 2 * half[:2].min()
        centre = rng.uniform(-0.3, 0.3, 2) * half[:2]
        keep &= (coords[0] - centre[0]) ** 2 + (coords[1] - centre[1]) ** 2 <= radius**2
        cut = True
    return keep if cut and keep.any() else None
