"""nnU-Net-style channel files for the batch tests: ``<case>_0000.nii.gz`` ... one 3D file per channel, each sequence
told apart by its own ball, and a tiny 4-channel brain-tumour MRI package whose channels are T1, T1c, T2, FLAIR."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing, image_from_array

from .packages import ball_phantom, tiny_config

NNUNET_ORDER = ("FLAIR", "T1w", "t1gd", "T2w")  # the usual BraTS conversion's channel_names
SHAPE = (16, 16, 16)
AFFINE = affine_from_spacing((2.0, 2.0, 2.0))


def brain_config(model_id="brats-files"):
    config = tiny_config(model_id, in_channels=4, labels=2, roi=SHAPE, intensity={"method": "zscore"})
    for entry, name in zip(config["inputs"], ("T1", "T1c", "T2", "FLAIR"), strict=True):
        entry.update(name=name, modality="MR", patterns=[f"*_{name.lower()}.*"])
    config["labels"][0]["name"], config["labels"][1]["name"] = "edema", "enhancing"
    return config


def sequence(index: int, case: int) -> np.ndarray:
    """Channel ``index`` of ``case``: a ball whose radius and brightness are the channel's own."""
    return ball_phantom(SHAPE, (8 - case, 8, 8), (2 + index, 3, 4), 100.0 + 150 * index, 5.0 * index)


def write_volume(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image_from_array(array, AFFINE), str(path))
    return path


def channel_files(folder: Path, cases=("BRATS_001", "BRATS_002"), channels=4) -> list[Path]:
    """``folder/<case>_<XXXX>.nii.gz`` for each case and channel; the files, case by case."""
    return [
        write_volume(sequence(index, number), folder / f"{case}_{index:04d}.nii.gz")
        for number, case in enumerate(cases)
        for index in range(channels)
    ]


def write_dataset_json(folder: Path, names=NNUNET_ORDER, key="channel_names") -> Path:
    """An nnU-Net v2 dataset.json in ``folder`` naming the channels ``names`` (``key``: MSD's ``modality`` too)."""
    path = folder / "dataset.json"
    spec = {key: {str(i): name for i, name in enumerate(names)}, "labels": {"background": 0, "edema": 1}}
    path.write_text(json.dumps(spec))
    return path
