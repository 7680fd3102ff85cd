"""Model packages, MONAI-bundle shaped: write one from a network, load one back (folder or .zip).

Layout::

    <package>/configs/metadata.json     MONAI bundle keys + our "tokenunet" section (schema-validated)
    <package>/models/model.safetensors  the weights (SHA256 recorded in the metadata)
    <package>/LICENSE
    <package>/docs/README.md            the model card
"""

from __future__ import annotations

import copy
import json
import platform
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..model import build_network
from .errors import ModelPackageError
from .metadata import (  # noqa: F401 - re-exported: the package API keeps its names
    _AXIS_OF,
    METADATA_FILE,
    SCHEMA_DIR,
    WEIGHTS_FILE,
    _semantic_problems,
    _Source,
    assign_inputs,
    load_schema,
    read_metadata,
    validate_metadata,
)
from .weights import load_weights_into, sha256_bytes, state_dict_from_bytes, verify_sha256


@dataclass
class Label:
    """One output label: its value in the label map, name, RGB color (0-255) and SNOMED CT codes."""

    value: int
    name: str
    color: tuple[int, int, int]
    channel: int | None = None
    terminology: dict | None = None

    def to_dict(self) -> dict:
        out = {"value": self.value, "name": self.name, "color": list(self.color)}
        if self.terminology:
            out["terminology"] = copy.deepcopy(self.terminology)
        return out


@dataclass
class ModelPackage:
    """A loaded package: the network (eval mode, on CPU) and its parsed metadata."""

    network: nn.Module
    metadata: dict
    path: Path | None = None
    labels: list[Label] = field(init=False)

    def __post_init__(self) -> None:
        self.labels = [
            Label(e["value"], e["name"], tuple(e["color"]), e.get("channel"), e.get("terminology"))
            for e in self.config["labels"]
        ]

    @property
    def config(self) -> dict:
        """Our section of the metadata (architecture, inputs, preprocessing, inference, labels)."""
        return self.metadata["tokenunet"]

    @property
    def id(self) -> str:
        return self.config["id"]

    @property
    def input_names(self) -> list[str]:
        return [entry["name"] for entry in self.config["inputs"]]


def make_metadata(
    config: dict,
    *,
    description: str,
    authors: str,
    copyright: str,
    version: str = "0.1.0",
    task: str | None = None,
    intended_use: str = "Research and demonstration only; not for clinical use.",
    extra: dict | None = None,
) -> dict:
    """Complete MONAI-bundle metadata around our ``config`` section (``weights`` is filled on writing)."""
    import monai

    labels = config["labels"]
    inference = config["inference"]
    if inference["activation"] == "sigmoid":
        by_label = {label["value"]: label["name"] for label in labels}
        out_def = {str(r["channel"]): by_label.get(r["label"], f"region {r['channel']}") for r in inference["regions"]}
    else:
        out_def = {"0": "background"}
        out_def.update({str(label.get("channel", label["value"])): label["name"] for label in labels})
    roi = list(inference["roi_size"])
    metadata = {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
        "version": version,
        "changelog": {version: "package written by the TokenUNet pipeline"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {"safetensors": _version_of("safetensors"), "einops": _version_of("einops")},
        "task": task or f"segmentation of {', '.join(label['name'] for label in labels)}",
        "description": description,
        "authors": authors,
        "copyright": copyright,
        "intended_use": intended_use,
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "+".join(i["modality"] for i in config["inputs"]),
                    "num_channels": config["architecture"]["in_channels"],
                    "spatial_shape": roi,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": {str(i): entry["name"] for i, entry in enumerate(config["inputs"])},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": config["architecture"]["out_channels"],
                    "spatial_shape": roi,
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": True,
                    "channel_def": out_def,
                }
            },
        },
        "tokenunet": copy.deepcopy(config),
    }
    metadata.update(extra or {})
    return metadata


def _version_of(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def build_package_network(config: dict) -> nn.Module:
    """The network a package declares (random weights), built through the model registry."""
    arch = config["architecture"]
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in (arch.get("parameters") or {}).items()}
    try:
        return build_network(arch["name"], arch["in_channels"], arch["out_channels"], **params)
    except ValueError as error:
        raise ModelPackageError(f"cannot build the package's network: {error}") from None


def write_package(
    destination: str | Path,
    network: nn.Module,
    metadata: dict,
    *,
    license_text: str,
    readme_text: str,
    as_zip: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write a package folder (or ``.zip`` when ``as_zip``) with the network's weights; returns its path.

    ``metadata`` is typically built by :func:`make_metadata`; its ``tokenunet.weights`` entry is (re)written
    with the SHA256 of the weights. The package is validated and the weights checked against the declared
    architecture before anything is written.
    """
    from safetensors.torch import save

    destination = Path(destination)
    if destination.exists() and not overwrite:
        raise ModelPackageError(f"{destination} already exists", "choose another destination or pass overwrite")
    metadata = copy.deepcopy(metadata)
    state = {k: v.detach().to("cpu").contiguous() for k, v in network.state_dict().items()}
    data = save(state, metadata={"format": "pt"})
    metadata["tokenunet"]["weights"] = {"file": WEIGHTS_FILE, "sha256": sha256_bytes(data)}
    validate_metadata(metadata)
    config = metadata["tokenunet"]
    load_weights_into(build_package_network(config), state, config["architecture"]["name"])
    files = {
        METADATA_FILE: json.dumps(metadata, indent=2).encode("utf-8"),
        WEIGHTS_FILE: data,
        "LICENSE": license_text.encode("utf-8"),
        "docs/README.md": readme_text.encode("utf-8"),
    }
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent) as scratch:
        staging = Path(scratch) / "package"
        for name, content in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(content)
        if destination.exists():
            shutil.rmtree(destination) if destination.is_dir() else destination.unlink()
        if as_zip:
            with zipfile.ZipFile(destination, "w", zipfile.ZIP_DEFLATED) as archive:
                for name in files:
                    archive.write(staging / name, name)
        else:
            staging.rename(destination)
    return destination


def load_package(path: str | Path, expected_sha256: str | None = None) -> ModelPackage:
    """Load a package folder or ``.zip``: validate, verify the SHA256, build the network, load weights.

    Args:
        path: package folder or zip file.
        expected_sha256: optional SHA256 the weights must also match (e.g. from a catalog).

    Returns:
        ModelPackage with the network in eval mode on the CPU.

    Raises:
        ModelPackageError: invalid metadata, checksum mismatch, weights that do not fit the architecture.
    """
    path = Path(path)
    metadata = read_metadata(path)
    cfg = metadata["tokenunet"]
    source = _Source(path)
    data = source.read(cfg["weights"]["file"])
    verify_sha256(data, cfg["weights"]["sha256"], f"{path}/{cfg['weights']['file']}")
    if expected_sha256:
        verify_sha256(data, expected_sha256, f"{path}/{cfg['weights']['file']} (catalog checksum)")
    state = state_dict_from_bytes(data, cfg["weights"]["file"])
    network = load_weights_into(build_package_network(cfg), state, cfg["architecture"]["name"])
    return ModelPackage(network.eval(), metadata, path)


def package_from_weights(
    weights_path: str | Path, like: ModelPackage, new_id: str, destination: str | Path, description: str | None = None
) -> Path:
    """A new package with ``like``'s configuration and the weights of a .safetensors/.pt/.pth file.

    The weights are loaded safely (no code runs), checked against the architecture and re-saved as
    safetensors.
    """
    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise ModelPackageError(f"weights file not found: {weights_path}")
    state = state_dict_from_bytes(weights_path.read_bytes(), weights_path.name)
    network = load_weights_into(build_package_network(like.config), state, like.config["architecture"]["name"])
    metadata = copy.deepcopy(like.metadata)
    metadata["tokenunet"]["id"] = new_id
    if description:
        metadata["description"] = description
    readme = f"# {new_id}\n\nWeights imported from `{weights_path.name}` into the configuration of `{like.id}`.\n"
    license_text = _Source(like.path).read("LICENSE").decode("utf-8") if like.path else "See the weights' provider."
    return write_package(destination, network, metadata, license_text=license_text, readme_text=readme)


def describe_environment() -> dict[str, Any]:
    """Versions recorded in reports."""
    import monai

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": np.__version__,
    }
