"""A tiny synthetic training set: CT-like phantoms with two labelled 'organs' and a datalist."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing, image_from_array

from .packages import ball_phantom, tiny_config


def phantom_case(shape=(40, 36, 30), shift=(0, 0, 0), seed=0):
    """(image HU, labels with 10 = 'organ1' bright ball, 20 = 'organ2' dark ball) as int16 arrays."""
    rng = np.random.default_rng(seed)
    centre = np.array(shape) / 2 + np.array(shift)
    image = ball_phantom(shape, centre, np.array(shape) * 0.45, value=40, background=-1000)
    label = np.zeros(shape, np.int16)
    a = ball_phantom(shape, centre + (-7, 0, 0), (5, 5, 5)) > 0
    b = ball_phantom(shape, centre + (7, 2, 0), (4, 6, 4)) > 0
    image[a], image[b] = 220, -80
    label[a], label[b] = 10, 20
    image += rng.normal(0, 10, shape).astype(np.float32)
    return image.astype(np.int16), label


def write_dataset(root: Path, cases=2, validation=1, names=True) -> Path:
    """NIfTI cases (2 mm) and a datalist.json whose name table maps 10 -> organ1, 20 -> organ2."""
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for index in range(cases + validation):
        image, label = phantom_case(shift=(index - 1, index % 2, 0), seed=index)
        affine = affine_from_spacing((2.0, 2.0, 2.0), origin=(10.0 * index, 0, 0))
        sitk.WriteImage(image_from_array(image, affine), str(root / f"case{index}.nii.gz"))
        sitk.WriteImage(image_from_array(label, affine), str(root / f"case{index}_seg.nii.gz"))
        entries.append({"image": f"case{index}.nii.gz", "label": f"case{index}_seg.nii.gz"})
    datalist = {"training": entries[:cases], "validation": entries[cases:]}
    if names:
        datalist["labels"] = {"10": "organ1", "20": "organ2"}
    path = root / "datalist.json"
    path.write_text(json.dumps(datalist), encoding="utf-8")
    return path


def train_config(model_id="tiny-trained"):
    config = tiny_config(model_id, arch="8Token", labels=2, spacing=(2.0, 2.0, 2.0), roi=(16, 16, 16))
    config["preprocessing"]["intensity"] = {"method": "ct_window", "window": [-200.0, 300.0]}
    return config
