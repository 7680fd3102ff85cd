"""Training data: a decathlon-style datalist, cases preprocessed like the package does, and the patch
sampler with its augmentations (MONAI transforms)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..checksums import sha256_file
from ..errors import InputError
from ..geometry import overlaps, resample
from ..metadata import parse_config
from ..preprocess import prepare
from ..volumes import read_volume

log = logging.getLogger(__name__)


@dataclass
class Case:
    """One preprocessed case: image (C, X, Y, Z) float32 and label (X, Y, Z) uint8 in package label values."""

    name: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    files: dict[str, str]
    missing: tuple[int, ...] = ()  # package label values not annotated in a partially labelled case
    repeat: int = 1  # how many times the case enters each pass over the training data


UNKNOWN = 255
"""Label value of voxels in a partially labelled case that are background or one of its unannotated labels."""


def read_datalist(path: str | Path) -> dict:
    """A decathlon-style datalist with paths made absolute.

    Format::

        {"labels": {"1": "spleen", "2": "kidney_right"},          # optional: label file value -> name
         "training":   [{"image": "ct1.nii.gz" | ["t1.nii.gz", "t2.nii.gz"], "label": "seg1.nii.gz",
                         "labels": {...},                           # optional per-case name table
                         "partial": true,                           # optional: see below
                         "repeat": 2}],                             # optional: sample it twice as often
         "validation": [{"image": ..., "label": ...}]}              # optional

    Relative paths are relative to the datalist's folder (or to ``"dataroot"`` when given).
    A ``"partial": true`` case annotates only the model labels its name table names; its unnamed voxels
    count as "background or an unannotated label", and values named after other structures as background.
    ``"partial": false`` says the case is complete: model labels its table does not name are absent from
    the scan (without the key, a name table that lacks model labels is refused as a likely mistake).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read the datalist {path}: {error}") from None
    if not isinstance(data, dict) or not data.get("training"):
        raise InputError(f"the datalist {path} has no 'training' list", "see the README for the datalist format")
    root = (path.parent / data.get("dataroot", ".")).resolve()

    def absolute(value):
        return str((root / value).resolve())

    out = {"labels": data.get("labels"), "training": [], "validation": []}
    for split in ("training", "validation"):
        for index, entry in enumerate(data.get(split) or []):
            if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                raise InputError(f"datalist {split}[{index}] needs 'image' and 'label'")
            images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
            case = {"image": [absolute(i) for i in images], "label": absolute(entry["label"])}
            for file in [*case["image"], case["label"]]:
                if not Path(file).exists():
                    raise InputError(f"datalist {split}[{index}]: file not found: {file}")
            names = entry.get("labels", data.get("labels"))
            case["labels"] = {int(k): str(v) for k, v in names.items()} if names else None
            case["name"] = entry.get("name") or Path(case["image"][0]).name.split(".")[0]
            case["partial"] = entry.get("partial")
            if case["partial"] and not names:
                raise InputError(f"datalist {split}[{index}] is partial but has no 'labels' name table")
            case["repeat"] = entry.get("repeat", 1)
            if not isinstance(case["repeat"], int) or case["repeat"] < 1:
                raise InputError(f"datalist {split}[{index}]: 'repeat' must be a whole number >= 1")
            out[split].append(case)
    return out


def label_lookup(file_names: dict[int, str] | None, labels: list[dict], partial: bool | None = None) -> np.ndarray:
    """A table mapping label-file values (0..65535) to package label values; names decide when known.

    Without a name table the file's values are the package's values. Values the table does not name become
    background, or ``UNKNOWN`` in a ``partial`` case (where only named structures are known); values named
    after structures that are not model labels are background either way.
    """
    lut = np.zeros(65536, np.uint8)
    if file_names is None:
        for label in labels:
            lut[label["value"]] = label["value"]
        return lut
    by_name = {_key(name): value for value, name in file_names.items()}
    missing = [label["name"] for label in labels if _key(label["name"]) not in by_name]
    if missing and partial is None:
        raise InputError(
            f"the label file's name table lacks {', '.join(missing)}",
            "name every model label in the datalist's 'labels' table (file value -> name), "
            'or mark the case "partial": true (those labels are not annotated in it) or "partial": false '
            "(they are absent from the scan)",
        )
    if partial:
        lut[:] = UNKNOWN
        lut[[value for value in file_names if 0 <= value < 65536]] = 0
    for label in labels:
        if _key(label["name"]) in by_name:
            lut[by_name[_key(label["name"])]] = label["value"]
    return lut


def missing_labels(file_names: dict[int, str] | None, labels: list[dict]) -> tuple[int, ...]:
    """Package label values that a name table does not name (not annotated in a partial case)."""
    if file_names is None:
        return ()
    named = {_key(name) for name in file_names.values()}
    return tuple(label["value"] for label in labels if _key(label["name"]) not in named)


def _key(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def load_case(entry: dict, cfg: dict, size_multiple: int, roi_size) -> Case:
    """Read and preprocess one datalist entry with the package configuration ``cfg``."""
    volumes = [read_volume(p) for p in entry["image"]]
    if len(volumes) != len(cfg["inputs"]):
        raise InputError(
            f"case {entry['name']} has {len(volumes)} image channels; the model takes {len(cfg['inputs'])}"
        )
    label_volume = read_volume(entry["label"])
    if not (overlaps(volumes[0].grid, label_volume.grid) and overlaps(label_volume.grid, volumes[0].grid)):
        raise InputError(
            f"case {entry['name']}: the label map {label_volume.name} does not overlap its image in physical space",
            "check that the label map belongs to this image (same patient, same scan)",
        )
    prepared = prepare(volumes, parse_config(cfg, "training configuration"), size_multiple, roi_size)
    for message in prepared.warnings:
        log.warning("case %s: %s", entry["name"], message)
    values = np.asarray(label_volume.array)
    if not np.issubdtype(values.dtype, np.integer):
        values = np.rint(values)
    values = np.clip(values, 0, 65535).astype(np.uint16)
    on_grid = resample(values, label_volume.grid, prepared.region, "nearest", 0, np.uint16)
    partial = entry.get("partial")
    label = label_lookup(entry["labels"], cfg["labels"], partial)[on_grid]
    files = {Path(p).name: sha256_file(p) for p in [*entry["image"], entry["label"]]}
    missing = missing_labels(entry["labels"], cfg["labels"]) if partial else ()
    spacing = tuple(float(s) for s in prepared.grid.spacing)
    return Case(entry["name"], prepared.image, label, spacing, files, missing, entry.get("repeat", 1))


def is_lateralised(labels: list[dict]) -> bool:
    """Whether any label names a side (left/right), so that left-right flips would corrupt labels."""
    names = [label["name"].lower() for label in labels]
    return any("left" in n or "right" in n or n.endswith(("_l", "_r", " l", " r")) for n in names)


def crop_size(patch, strength: float) -> list[int]:
    """The region cropped before the spatial augmentation: larger than the patch, so that rotating or
    shrinking it fills the patch with real anatomy rather than padding."""
    margin = 1.0 + 0.25 * min(max(float(strength), 0.0), 2.0)
    return [int(np.ceil(p * margin / 8) * 8) for p in patch]


def pad_for_crop(image: np.ndarray, label: np.ndarray, patch, region) -> tuple[np.ndarray, np.ndarray]:
    """Pad a case by half the difference between the crop ``region`` and the ``patch`` on every side, so
    that the larger crop can still be centred wherever a patch could: without it, patches would never
    reach the outer ``(region - patch) / 2`` voxels of the case. Image padding: its minimum (air after the
    CT window); label padding: background."""
    margins = [((r - p) // 2, (r - p) - (r - p) // 2) for r, p in zip(region, patch, strict=True)]
    image = np.pad(image, [(0, 0), *margins], constant_values=float(image.min()))
    label = np.pad(label, [(0, 0), *margins], constant_values=0)
    return image, label


def training_transforms(patch, num_classes: int, samples: int, strength: float = 1.0, flip_axes=()):
    """MONAI transforms: balanced patches over the classes present, spatial and intensity augmentation.

    The augmentations stand in for other patients and scanners: body size (scaling), posture (rotation,
    elastic deformation), contrast timing and calibration (intensity shift, scale, gamma), dose (noise),
    reconstruction kernel and slice thickness (blur, z-only blur, simulated low resolution).
    ``strength`` scales the probabilities and ranges (0 turns augmentation off).
    """
    from monai import transforms as T

    s = float(strength)
    p = min(1.0, 0.3 * s)
    region = crop_size(patch, s) if s > 0 else list(patch)
    steps = [
        T.ClassesToIndicesd(keys="label", num_classes=num_classes, indices_postfix="_cls_indices"),
        T.RandCropByLabelClassesd(
            keys=["image", "label"],
            label_key="label",
            spatial_size=region,
            num_classes=num_classes,
            ratios=[1.0] * num_classes,
            num_samples=samples,
            indices_key="label_cls_indices",
            allow_smaller=False,
            warn=False,  # partially labelled cases lack some classes
        ),
    ]
    if s > 0:
        steps += [
            T.RandAffined(
                keys=["image", "label"],
                spatial_size=list(patch),
                prob=min(1.0, 0.7 * s),
                rotate_range=[0.21 * s] * 3,  # about 15 degrees at strength 1.25
                scale_range=[0.25 * s] * 3,
                mode=("bilinear", "nearest"),
                padding_mode="border",
            ),
            T.CenterSpatialCropd(keys=["image", "label"], roi_size=list(patch)),
            T.Rand3DElasticd(
                keys=["image", "label"],
                prob=min(1.0, 0.2 * s),
                sigma_range=(5.0, 8.0),
                magnitude_range=(0.0, 4.0 * s),
                mode=("bilinear", "nearest"),
                padding_mode="border",
            ),
            T.RandScaleIntensityd(keys="image", factors=0.15 * s, prob=p),
            T.RandShiftIntensityd(keys="image", offsets=0.1 * s, prob=p),
            T.RandAdjustContrastd(keys="image", gamma=(1 - 0.3 * min(s, 2) / 2, 1 + 0.5 * s), prob=p),
            T.RandGaussianNoised(keys="image", std=0.03 * s, prob=p),
            T.RandGaussianSmoothd(keys="image", sigma_x=(0.5, 1.2), sigma_y=(0.5, 1.2), sigma_z=(0.5, 1.2), prob=p / 2),
            T.RandGaussianSmoothd(keys="image", sigma_x=(0.0, 0.1), sigma_y=(0.0, 0.1), sigma_z=(0.8, 2.0), prob=p / 2),
            T.RandSimulateLowResolutiond(keys="image", zoom_range=(max(0.3, 1 - 0.5 * s), 1.0), prob=p / 2),
        ]
    steps += [T.RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=axis) for axis in flip_axes]
    steps += [T.EnsureTyped(keys=["image", "label"], track_meta=False)]
    return T.Compose(steps)
