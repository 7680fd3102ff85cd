"""Helpers shared by the pipeline tests: tiny random-weight model packages and synthetic volumes."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from TokenUNetSegmentLib.model import build_network
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing
from TokenUNetSegmentLib.pipeline.package_writer import make_metadata, package_in_memory, write_package

TINY = {"channels": [4, 8, 16, 32]}
SNOMED_ORGAN = {"category": ["SCT", "123037004", "Anatomical Structure"], "type": ["SCT", "78961009", "Spleen"]}


def tiny_config(
    model_id="tiny-ct",
    arch="8Token",
    in_channels=1,
    labels=2,
    spacing=(2.0, 2.0, 2.0),
    roi=(16, 16, 16),
    intensity=None,
    activation="softmax",
    crop=False,
    orientation="RAS",
):
    out = labels + 1 if activation == "softmax" else labels
    config = {
        "id": model_id,
        "name": "tiny test model",
        "architecture": {"name": arch, "in_channels": in_channels, "out_channels": out, "parameters": dict(TINY)},
        "inputs": [
            {"name": f"ch{i}", "modality": "CT" if in_channels == 1 else "MR", "patterns": [f"*ch{i}*"]}
            for i in range(in_channels)
        ],
        "preprocessing": {
            "orientation": orientation,
            "spacing": list(spacing) if spacing else None,
            "intensity": intensity or {"method": "ct_window", "window": [-100.0, 300.0]},
            "crop_foreground": crop,
        },
        "inference": {"roi_size": list(roi), "overlap": 0.25, "blending": "gaussian", "activation": activation},
        "labels": [
            {
                "value": v,
                "name": f"organ{v}",
                "color": [(40 * v) % 256, 200, (255 - 40 * v) % 256],
                "terminology": SNOMED_ORGAN,
            }
            for v in range(1, labels + 1)
        ],
    }
    if activation == "sigmoid":
        config["inference"]["regions"] = [{"channel": c, "label": c + 1} for c in range(labels)]
    return config


def make_package(folder: Path, config=None, network=None, as_zip=False) -> Path:
    config = copy.deepcopy(config or tiny_config())
    arch = config["architecture"]
    if network is None:
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in arch["parameters"].items()}
        with torch.random.fork_rng(devices=[]):  # the same weights whichever tests ran before (session fixtures)
            torch.manual_seed(0)
            network = build_network(arch["name"], arch["in_channels"], arch["out_channels"], **params)
    metadata = make_metadata(config, description="tiny random-weight test model", authors="tests", copyright="none")
    name = config["id"] + (".zip" if as_zip else "")
    return write_package(
        Path(folder) / name, network, metadata, license_text="Apache-2.0\n", readme_text="# tiny\n", as_zip=as_zip
    )


class ThresholdNet(torch.nn.Module):
    """A deterministic 'segmenter' for geometry tests: label 1 where the (preprocessed) image > 0.5.

    It also returns token maps (2 tokens on the 1/8 grid): token 0 = the average-pooled foreground,
    token 1 = its complement, so heatmaps have a known physical location.
    """

    has_tokens = True
    num_tokens = 2
    size_multiple = 8

    def __init__(self, in_channels=1, channel=0):
        super().__init__()
        self.in_channels, self.out_channels, self.channel = in_channels, 2, channel
        self.scale = torch.nn.Parameter(torch.tensor(20.0))

    def forward(self, x, return_attention=False):
        x = x[:, self.channel : self.channel + 1]
        fg = self.scale * (x - 0.5)
        logits = torch.cat([-fg, fg], dim=1)
        if not return_attention:
            return logits
        pooled = torch.nn.functional.avg_pool3d((x > 0.5).float(), 8)
        maps = torch.cat([pooled, 1 - pooled], dim=1)
        return logits, {"gather": maps, "broadcast": maps}


def ball_phantom(shape, center_ijk, radius_vox, value=500.0, background=-1000.0):
    """A float32 array (i, j, k) with a ball of ``value`` (radius in voxels per axis) on ``background``."""
    grid = np.indices(shape, dtype=np.float32)
    r = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center_ijk, radius_vox, strict=True))
    return np.where(r <= 1.0, value, background).astype(np.float32)


def threshold_package(
    in_channels=1, channel=0, spacing=(2.0, 2.0, 2.0), roi=(32, 32, 32), orientation="RAS", crop=False
):
    """An in-memory package around :class:`ThresholdNet` (label 1 = 'ball' where the window is > 0.5)."""
    config = tiny_config(
        "threshold", in_channels=in_channels, labels=1, spacing=spacing, roi=roi, crop=crop, orientation=orientation
    )
    config["labels"][0]["name"] = "ball"
    return package_in_memory(ThresholdNet(in_channels, channel), config, "threshold")


PHANTOM_AFFINE = affine_from_spacing((1.4, 1.2, 2.5), origin=(80, 60, -40), direction=np.diag([-1.0, -1.0, 1.0]))


def ct_phantom_file(path: Path) -> Path:
    """A CT-like NIfTI phantom (body of soft tissue in air with two 'organs') on :data:`PHANTOM_AFFINE`."""
    import SimpleITK as sitk
    from TokenUNetSegmentLib.pipeline.geometry import image_from_array

    image = ball_phantom((90, 80, 40), (45, 40, 20), (38, 30, 19), value=40, background=-1000)
    image[ball_phantom((90, 80, 40), (35, 35, 20), (10, 10, 5)) > 0] = 200
    image[ball_phantom((90, 80, 40), (60, 45, 22), (8, 8, 5)) > 0] = -60
    sitk.WriteImage(image_from_array(image.astype(np.int16), PHANTOM_AFFINE), str(path))
    return path


def rotation(axis, degrees):
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def physical_ball(shape, affine, center_ras, radius_mm, value=500.0, background=-1000.0):
    """Array (i, j, k) on the grid ``affine`` with a ball (centre/radius in RAS mm)."""
    ras = voxel_centres(shape, affine)
    inside = np.linalg.norm(ras - np.asarray(center_ras), axis=-1) <= radius_mm
    return np.where(inside, value, background).astype(np.float32)


def voxel_centres(shape, affine):
    """RAS coordinates of every voxel centre, shape (*shape, 3)."""
    idx = np.stack(np.indices(shape, dtype=np.float64), axis=-1)
    return idx @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]


def dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum())


TRAINED_HU = {
    "body_threshold_hu": -500,
    "mean": -9.3,
    "sd": 173.9,
    "p01": -408.0,
    "p05": -138.0,
    "p25": -96.0,
    "p50": -21.0,
    "p75": 36.0,
    "p95": 239.0,
    "p99": 556.0,
}  # as in the bundled model's statistics


def training_statistics(
    volumes: dict | None = None,
    intensity_hu: dict | None = TRAINED_HU,
    spacing=((1.5, 1.5, 1.5), (3.0, 3.0, 3.0)),
    extent=((300.0, 250.0, 180.0), (400.0, 320.0, 340.0)),
    min_slab_mm: float | None = 30.0,
    labelled=(0.01, 0.05),
) -> dict:
    """A ``tokenunet.training_statistics`` section in the format the training tool writes (the schema's
    ``training_statistics`` definition). ``volumes``: label name -> ((min, max) of all, (min, max) of the
    complete ones or None) in mL."""
    labels = {}
    for name, (every, complete) in (volumes or {}).items():
        labels[name] = {
            "cases": 2,
            "volume_ml": {"min": every[0], "max": every[1], "mean": sum(every) / 2},
            "volume_ml_complete": None if complete is None else {"min": complete[0], "max": complete[1]},
            "hu": {"mean": 40.0, "sd": 15.0, "p05": 15.0, "p50": 40.0, "p95": 65.0},
        }
    section = {
        "cases": 2,
        "patients": ["A", "B"],
        "labels": labels,
        "intensity_hu": intensity_hu,
        "labelled_fraction": {"min": labelled[0], "max": labelled[1], "mean": sum(labelled) / 2},
        "source_spacing_mm": {"min": list(spacing[0]), "max": list(spacing[1])},
        "source_extent_mm": {"min": list(extent[0]), "max": list(extent[1])},
        "augmentation": {
            "strength": 1.0,
            "scale": [0.75, 1.3],
            "anisotropy": 0.15,
            "rotation_deg": 30.0,
            "elastic_mm": 9.0,
            "min_slab_mm": min_slab_mm,
            "synthetic_ratio": 0.3,
            "contrast_phases": ["unenhanced"],
        },
    }
    return section


def blank_network(config: dict):
    """The network of ``config`` with an output head that puts every voxel in the background (channel 0)."""
    arch = config["architecture"]
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in arch["parameters"].items()}
    network = build_network(arch["name"], arch["in_channels"], arch["out_channels"], **params)
    with torch.no_grad():
        network.head.weight.zero_()
        network.head.bias.copy_(torch.tensor([10.0] + [0.0] * (arch["out_channels"] - 1)))
    return network


def record_network_inputs(monkeypatch) -> list[np.ndarray]:
    """A list that receives a copy of each image ``segment()`` runs its network over (the region padded to the
    window, one per pass)."""
    from TokenUNetSegmentLib.pipeline import segmentation

    images, real = [], segmentation.run_windows

    def recording(network, image, *rest, **named):
        images.append(image.copy())
        return real(network, image, *rest, **named)

    monkeypatch.setattr(segmentation, "run_windows", recording)
    return images
