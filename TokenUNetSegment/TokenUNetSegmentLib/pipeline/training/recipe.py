"""The training recipe: everything that decides a run besides the data and the package configuration
(a plain dataclass, so that the command line can declare its options without importing torch)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

OPTION_NAMES = {"learning_rate": "lr"}
"""The ``train`` command's option for a field, where the names differ."""


@dataclass
class Recipe:
    """Everything that decides a training run besides the data and the package configuration."""

    steps: int = 1000
    batch_size: int = 2
    patch_size: list[int] | None = None  # default: the package's inference roi_size
    optimizer: str = "sgd"  # sgd (Nesterov, momentum 0.99) or adamw
    learning_rate: float | None = None  # default 0.01 (sgd) or 3e-4 (adamw)
    weight_decay: float = 3e-5
    schedule: str = "poly"  # poly or cosine
    warmup_steps: int = 0
    augmentation: float = 1.0  # strength; 0 turns it off
    flip_axes: list[int] = field(default_factory=list)
    synthetic_ratio: float = 0.0  # share of patches synthesised from tissue maps
    remap_ratio: float = 0.3  # share of the other patches with re-mapped tissue contrast
    background_ratio: float = 0.3  # share of patches centred anywhere (hard background)
    lesion_probability: float = 0.3
    large_lesion_share: float = 0.0  # share of lesions 30-90 mm across instead of 6-30 mm
    hold_out: list[str] = field(default_factory=list)  # patients left out (leave-one-patient-out)
    select: str = "best"  # package the best validated checkpoint, or the last one
    workers: int = 0  # DataLoader processes that draw patches
    val_every: int = 100
    val_overlap: float = 0.25
    seed: int = 0
    threads: int | None = None
    max_minutes: float | None = None

    @classmethod
    def from_arguments(cls, args) -> Recipe:
        """The recipe the ``train`` command's parsed options describe (fields without an option keep their
        default; lists are copied)."""
        values = {}
        for item in fields(cls):
            option = OPTION_NAMES.get(item.name, item.name)
            if hasattr(args, option):
                value = getattr(args, option)
                values[item.name] = list(value) if isinstance(value, list | tuple) else value
        return cls(**values)

    def lr(self) -> float:
        return self.learning_rate or (0.01 if self.optimizer == "sgd" else 3e-4)

    def rate_factor(self, step: int) -> float:
        """The learning rate at ``step`` as a share of :meth:`lr`: linear warm-up, then cosine or poly decay to 0
        at ``steps`` (a resume with more steps continues on the longer schedule: a warm restart)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps))
        if self.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return (1 - progress) ** 0.9
