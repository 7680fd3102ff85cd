"""Bundled sample data, available by id: ``sample:AbdomenCT`` wherever the pipeline takes an input path.

from TokenUNetSegmentLib.pipeline.samples import sample
sample("AbdomenCT").image   # Path of the CT; .labels and .names for its reference labels and name table
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "Resources" / "Samples"
PREFIX = "sample:"


@dataclass(frozen=True)
class Sample:
    id: str
    description: str
    image: Path
    labels: Path | None = None
    names: Path | None = None


SAMPLES = {
    "AbdomenCT": Sample(
        "AbdomenCT",
        "abdominal CT, 3 mm, lower chest to hips (TotalSegmentator dataset, CC BY 4.0), with TotalSegmentator's labels",
        SAMPLES_DIR / "AbdomenCT.nii.gz",
        SAMPLES_DIR / "AbdomenCT.TotalSegmentatorLabels.nii.gz",
        SAMPLES_DIR / "AbdomenCT.TotalSegmentatorLabels.json",
    )
}


def sample(sample_id: str) -> Sample:
    """The bundled sample ``sample_id`` (with or without the ``sample:`` prefix)."""
    key = sample_id[len(PREFIX) :] if sample_id.startswith(PREFIX) else sample_id
    if key not in SAMPLES:
        raise InputError(f"unknown sample '{key}'", f"bundled samples: {', '.join(SAMPLES)}")
    return SAMPLES[key]


def resolve_input(item):
    """``sample:ID`` strings become the sample's image path; anything else is returned unchanged."""
    if isinstance(item, str) and item.startswith(PREFIX):
        return sample(item).image
    return item
