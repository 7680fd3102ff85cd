"""What the training data looked like, recorded in the package (``tokenunet.training_statistics``) so that
inference can tell how far a new scan and its result lie from it: per-label volumes (mL) and HU, the HU of
the training inputs, the source scans' voxel sizes and fields of view, and the augmentation envelope the
model was trained to cover. Computed from the real training cases only (never from synthetic patches).
"""

from __future__ import annotations

import numpy as np

from .data import UNKNOWN, Case

PERCENTILES = (1, 5, 25, 50, 75, 95, 99)


def _range(values) -> dict:
    values = np.asarray(values, np.float64)
    return {
        "min": round(float(values.min()), 3),
        "max": round(float(values.max()), 3),
        "mean": round(float(values.mean()), 3),
    }


def _touches_edge(mask: np.ndarray, inside: np.ndarray) -> bool:
    """Whether a structure reaches the scan's edge (a voxel next to outside the scan or the region)."""
    padded = np.pad(inside, 1, constant_values=False)
    outside_next = np.zeros_like(mask)
    for axis in range(3):
        for shift in (0, 2):
            index = [slice(1, -1)] * 3
            index[axis] = slice(shift, shift + mask.shape[axis])
            outside_next |= ~padded[tuple(index)]
    return bool((mask & outside_next).any())


def training_statistics(cases: list[Case], config: dict, settings) -> dict:
    """The ``tokenunet.training_statistics`` section of a package (see the metadata schema for the keys)."""
    spacing = np.asarray(config["preprocessing"]["spacing"], np.float64)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    labels = {}
    for label in config["labels"]:
        value, name = label["value"], label["name"]
        volumes, complete, hu = [], [], []
        for case in cases:
            if value in case.missing:
                continue
            mask = case.label == value
            count = int(mask.sum())
            if count == 0:
                continue
            volumes.append(count * voxel_ml)
            if not _touches_edge(mask, case.inside if case.inside is not None else np.ones_like(mask)):
                complete.append(count * voxel_ml)
            if case.hu is not None:
                hu.append(case.hu[0][mask])
        entry: dict = {"cases": len(volumes)}
        if volumes:
            entry["volume_ml"] = _range(volumes)
            entry["volume_ml_complete"] = _range(complete) if complete else None
        if hu:
            values = np.concatenate(hu)
            entry["hu"] = {"mean": round(float(values.mean()), 1), "sd": round(float(values.std()), 1)}
            entry["hu"].update(
                {
                    f"p{p:02d}": round(float(v), 1)
                    for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES), strict=True)
                }
            )
        labels[name] = entry
    body = [
        case.hu[0][(case.inside if case.inside is not None else True) & (case.hu[0] > -500)]
        for case in cases
        if case.hu is not None
    ]
    intensity = None
    if body:
        values = np.concatenate([b.ravel() for b in body])
        intensity = {
            "body_threshold_hu": -500,
            "mean": round(float(values.mean()), 1),
            "sd": round(float(values.std()), 1),
            **{
                f"p{p:02d}": round(float(v), 1)
                for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES), strict=True)
            },
        }
    source_spacing = np.array([case.source["spacing_mm"] for case in cases if case.source])
    source_extent = np.array([case.source["extent_mm"] for case in cases if case.source])
    labelled_fraction = [
        float(np.isin(case.label, [label["value"] for label in config["labels"]]).sum())
        / max(
            1,
            int(
                (
                    (case.inside if case.inside is not None else np.ones_like(case.label, bool))
                    & (case.label != UNKNOWN)
                ).sum()
            ),
        )
        for case in cases
    ]
    warp, fov = settings.warp.scaled(settings.strength), settings.field_of_view.scaled(settings.strength)
    return {
        "cases": len(cases),
        "patients": sorted({case.patient for case in cases}),
        "labels": labels,
        "intensity_hu": intensity,
        "labelled_fraction": _range(labelled_fraction) if labelled_fraction else None,
        "source_spacing_mm": {"min": source_spacing.min(0).tolist(), "max": source_spacing.max(0).tolist()}
        if len(source_spacing)
        else None,
        "source_extent_mm": {"min": source_extent.min(0).tolist(), "max": source_extent.max(0).tolist()}
        if len(source_extent)
        else None,
        "augmentation": {
            "strength": settings.strength,
            "scale": [round(v, 3) for v in warp.scale],
            "anisotropy": round(warp.anisotropy, 3),
            "rotation_deg": round(warp.rotation_deg, 1),
            "elastic_mm": round(warp.elastic_mm, 1),
            "min_slab_mm": fov.min_slab_mm if fov.slab > 0 else None,
            "synthetic_ratio": settings.synthetic_ratio,
            "contrast_phases": ["unenhanced", "arterial", "portal venous"]
            if settings.synthetic_ratio or settings.remap_ratio
            else [],
        },
    }
