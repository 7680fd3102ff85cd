"""What a segmentation run gives back: labels, token maps and a report, all on the input's own grid.

No torch here: the same objects come from an in-process run (:func:`.segmentation.segment`) and from a
subprocess run's files (:func:`.outputs.read_outputs`).
"""

from __future__ import annotations

import warnings as pywarnings
from dataclasses import dataclass, field

import numpy as np

from .confidence import Assessment
from .geometry import Grid, resample
from .metadata import Label

MAP_KINDS = ("gather", "broadcast")


@dataclass
class TokenMaps:
    """Per-token maps in [0, 1]: kept on the coarse token grid, mapped onto the input grid on request.

    ``get(kind, token)`` returns a float32 (i, j, k) array with exactly the input's geometry.
    """

    coarse: dict[str, np.ndarray]  # kind -> (N, h, w, d), normalised to [0, 1]
    coarse_grid: Grid
    target: Grid

    @property
    def kinds(self) -> list[str]:
        return list(self.coarse)

    @property
    def num_tokens(self) -> int:
        return int(next(iter(self.coarse.values())).shape[0])

    def get(self, kind: str, token: int) -> np.ndarray:
        if kind not in self.coarse:
            raise KeyError(f"unknown map kind '{kind}'; choose one of {self.kinds}")
        out = resample(self.coarse[kind][token], self.coarse_grid, self.target, "linear", default=0.0)
        return np.clip(out, 0.0, 1.0, out=out)

    def all(self, kind: str) -> np.ndarray:
        """Every token's map of ``kind`` on the input grid, shape (N, i, j, k)."""
        return np.stack([self.get(kind, t) for t in range(self.num_tokens)])


@dataclass
class SegmentationResult:
    """What :func:`segment` returns. Arrays are (i, j, k) on the input grid (``affine`` is its IJK->RAS).

    ``token_maps`` is None for networks without tokens or when the maps were not asked for.
    """

    labels: np.ndarray
    affine: np.ndarray
    label_table: list[Label]
    token_maps: TokenMaps | None
    token_matches: list[dict]
    volumes_ml: dict[str, float]
    timings: dict[str, float]
    device: str
    model_id: str
    probabilities: dict[str, np.ndarray] | None = None
    warnings: list[str] = field(default_factory=list)
    assessment: Assessment | None = None  # confidence and flags per label, flags about the scan
    test_time_augmentation: bool = False  # labels from the probabilities averaged over its passes

    @property
    def grid(self) -> Grid:
        return Grid(tuple(self.labels.shape), self.affine)

    @property
    def heatmaps(self) -> TokenMaps | None:
        """The former name of :attr:`token_maps` (kept for scripts written against it)."""
        pywarnings.warn("SegmentationResult.heatmaps is now token_maps", DeprecationWarning, stacklevel=2)
        return self.token_maps

    def report(self) -> dict:
        """A JSON-ready summary (timings, device, label volumes with their confidence and flags, token-label
        matches, warnings, and the run's flags and summary)."""
        assessment = self.assessment
        report = {
            "model": self.model_id,
            "device": self.device,
            "shape": list(self.labels.shape),
            "ijk_to_ras": np.asarray(self.affine).round(6).tolist(),
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
            "labels": [
                {
                    **label.to_dict(),
                    "volume_ml": round(self.volumes_ml.get(label.name, 0.0), 3),
                    **(assessment.label_entry(label.name) if assessment is not None else {}),
                }
                for label in self.label_table
            ],
            "token_matches": self.token_matches,
            "warnings": list(self.warnings),
        }
        if self.test_time_augmentation:  # said only when used: the reports of other runs are as they were
            report["test_time_augmentation"] = True
        if assessment is not None:
            report["flags"] = [flag.to_dict() for flag in assessment.flags]
            report["summary"] = assessment.summary
            report["scan"] = dict(assessment.scan)
        return report
