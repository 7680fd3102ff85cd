"""Training patches: a case (weighted by its ``repeat``), a centre balanced over the organs it contains
(or anywhere, for hard background), one spatial warp, then real, re-mapped or synthetic intensities, lesions,
the scanner's imprint, a partial field of view, and the package's CT window.

:class:`PatchStream` runs the sampler in ``DataLoader`` worker processes so that synthesis overlaps the
network's step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from . import synthesis
from .data import UNKNOWN, Case
from .warp import FieldOfViewSettings, WarpSettings, field_of_view_mask, random_source_grid, sample


@dataclass
class SamplerSettings:
    """What one training patch looks like.

    Args:
        patch: patch size in voxels.
        strength: augmentation strength (0: plain crops of the real image, no warp, no field-of-view cuts).
        synthetic_ratio: share of patches synthesised from the tissue map (cases that allow synthesis).
        remap_ratio: share of the other patches whose tissues are re-mapped to another contrast.
        background_ratio: share of patches centred anywhere instead of on an organ voxel.
        lesion_probability: chance of organ lesions in a patch.
        large_lesion_share: share of those lesions 30-90 mm across instead of 6-30 mm.
        windows: per channel (low, high) CT window; None when the cases are already normalised.
        flip_axes: axes flipped at random (never 0, left-right, for lateralised labels).
    """

    patch: tuple[int, int, int]
    strength: float = 1.0
    synthetic_ratio: float = 0.0
    remap_ratio: float = 0.3
    background_ratio: float = 0.3
    lesion_probability: float = 0.3
    large_lesion_share: float = 0.0
    windows: list[tuple[float, float]] | None = None
    flip_axes: tuple[int, ...] = ()
    warp: WarpSettings = field(default_factory=WarpSettings)
    field_of_view: FieldOfViewSettings = field(default_factory=FieldOfViewSettings)


class PatchSampler:
    """Draws ``(image (C, *patch) float32, label (1, *patch) uint8, missing (classes,) bool)`` patches."""

    def __init__(self, cases: list[Case], num_classes: int, settings: SamplerSettings):
        if not cases:
            raise ValueError("no training cases")
        self.cases = cases
        self.num_classes = num_classes
        self.settings = settings
        self.warp = settings.warp.scaled(settings.strength)
        self.fov = settings.field_of_view.scaled(settings.strength)
        weights = np.array([case.repeat for case in cases], np.float64)
        self.case_weights = weights / weights.sum()
        self.centres = [self._organ_voxels(case) for case in cases]
        self.tensors = [self._tensors(case) for case in cases]

    @staticmethod
    def _organ_voxels(case: Case) -> dict[int, np.ndarray]:
        flat = case.label.ravel()
        present = [int(v) for v in np.unique(flat) if v not in (0, UNKNOWN)]
        return {value: np.flatnonzero(flat == value).astype(np.int64) for value in present}

    def _tensors(self, case: Case):
        image = torch.from_numpy(np.ascontiguousarray(case.hu if case.hu is not None else case.image))
        maps = [case.label] + ([case.tissues] if case.tissues is not None else [])
        labels = torch.from_numpy(np.stack(maps).astype(np.float32))
        fill = torch.as_tensor(case.pad, dtype=torch.float32).view(-1, 1, 1, 1)
        return image, labels, fill

    def _centre(self, index: int, rng: np.random.Generator) -> np.ndarray:
        case = self.cases[index]
        organs = self.centres[index]
        shape = np.asarray(case.label.shape)
        if not organs or rng.random() < self.settings.background_ratio:
            return rng.uniform(0, shape - 1)
        value = list(organs)[int(rng.integers(0, len(organs)))]
        voxels = organs[value]
        flat = int(voxels[int(rng.integers(0, len(voxels)))])
        return np.array(np.unravel_index(flat, tuple(shape)), np.float64)

    def __call__(self, rng: np.random.Generator):
        s = self.settings
        index = int(rng.choice(len(self.cases), p=self.case_weights))
        case = self.cases[index]
        image_t, labels_t, fill = self.tensors[index]
        centre = self._centre(index, rng)
        patch = tuple(int(p) for p in s.patch)
        if s.strength > 0:
            source = random_source_grid(patch, centre, case.spacing, self.warp, rng)
        else:  # a plain crop: whole-voxel positions
            half = (np.asarray(patch) - 1) / 2
            plain = WarpSettings(probability=0.0, elastic_probability=0.0)
            source = random_source_grid(patch, np.floor(centre - half) + half, case.spacing, plain, rng)
        image = self._sample_image(image_t, source, fill)
        maps = sample(labels_t, source, "nearest")
        label = maps[0:1].round().to(torch.uint8)
        tissues = maps[1].round().to(torch.uint8) if maps.shape[0] > 1 else None
        if s.strength > 0:
            image = self._intensities(image, tissues, case, rng)
            keep = field_of_view_mask(patch, case.spacing, self.fov, rng)
            if keep is not None:
                outside = torch.from_numpy(~keep)
                image = torch.where(outside[None], fill, image)
                label[0][outside] = 0
        if s.windows is not None:
            image = synthesis.window(image, s.windows)
        for axis in s.flip_axes:
            if rng.random() < 0.5:
                image, label = image.flip(1 + axis), label.flip(1 + axis)
        missing = torch.zeros(self.num_classes, dtype=torch.bool)
        missing[list(case.missing)] = True
        return image.contiguous(), label, missing

    @staticmethod
    def _sample_image(image_t: torch.Tensor, source: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        if fill.numel() == 1:
            return sample(image_t, source, "bilinear", float(fill))
        return torch.cat([sample(image_t[c : c + 1], source, "bilinear", float(fill[c])) for c in range(len(fill))])

    def _intensities(self, image, tissues, case: Case, rng: np.random.Generator):
        s = self.settings
        hu = s.windows is not None
        if not hu:  # already normalised (z-score or similar): gentle scale, shift and noise only
            image = image * rng.uniform(0.9, 1.1) + rng.normal(0, 0.05)
            return image + torch.as_tensor(rng.normal(0, 0.03, tuple(image.shape)), dtype=torch.float32)
        single = image.shape[0] == 1 and tissues is not None
        draw = rng.random()
        if single and case.synthesis and draw < s.synthetic_ratio:
            image, _ = synthesis.synthesize(tissues, rng)
        elif single and draw < s.synthetic_ratio + (1 - s.synthetic_ratio) * s.remap_ratio:
            image = synthesis.remap(image, tissues, case.tissue_means, rng)
        else:
            image = image * rng.uniform(0.95, 1.05) + rng.normal(0, 8.0)
        if single and rng.random() < s.lesion_probability:
            image = synthesis.add_lesions(image, tissues, case.spacing, rng, large_share=s.large_lesion_share)
        return synthesis.scanner_imprint(image, rng, min(s.strength, 1.5))


class PatchStream(torch.utils.data.IterableDataset):
    """An endless stream of patches for a ``DataLoader``; each worker draws with its own seed."""

    def __init__(self, sampler: PatchSampler, seed: tuple[int, ...]):
        super().__init__()
        self.sampler = sampler
        self.seed = seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        if info is not None:
            torch.set_num_threads(1)
        rng = np.random.default_rng([*self.seed, worker])
        while True:
            yield self.sampler(rng)
