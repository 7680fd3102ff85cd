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
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from torch import nn

from ..model import build_network
from .errors import ModelPackageError
from .jsonschema_lite import validation_errors
from .weights import load_weights_into, sha256_bytes, state_dict_from_bytes, verify_sha256

METADATA_FILE = "configs/metadata.json"
WEIGHTS_FILE = "models/model.safetensors"
SCHEMA_DIR = Path(__file__).with_name("schemas")


@cache
def load_schema(name: str) -> dict:
    """A JSON schema shipped with the pipeline: ``"metadata"`` or ``"catalog"``."""
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))


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


def assign_inputs(candidates: list[str], config: dict) -> dict[str, str | None]:
    """Match file or volume names to the package's input channels by their filename patterns.

    Each channel (in order) takes the first not yet taken candidate whose base name matches one of its
    patterns (case-insensitive shell patterns such as ``*t1c*``); unmatched channels get None. With one
    channel and one candidate, the candidate is taken whatever its name.
    """
    import fnmatch

    inputs = config["inputs"]
    if len(inputs) == 1 and len(candidates) == 1:
        return {inputs[0]["name"]: candidates[0]}
    taken: set[int] = set()
    chosen: dict[str, str | None] = {}
    for entry in inputs:
        chosen[entry["name"]] = None
        for index, candidate in enumerate(candidates):
            base = PurePosixPath(str(candidate).replace("\\", "/")).name.lower()
            if index not in taken and any(fnmatch.fnmatch(base, p.lower()) for p in entry.get("patterns", [])):
                chosen[entry["name"]] = candidate
                taken.add(index)
                break
    return chosen


def validate_metadata(metadata: dict, what: str = "metadata.json") -> None:
    """Check ``metadata`` against the schema and the rules a schema cannot express.

    Raises:
        ModelPackageError: listing the first problems found.
    """
    problems = validation_errors(metadata, load_schema("metadata"))
    if not problems:
        problems = _semantic_problems(metadata["tokenunet"])
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise ModelPackageError(f"invalid model package {what}: {shown}")


def _semantic_problems(cfg: dict) -> list[str]:
    problems = []
    arch = cfg["architecture"]
    if len(cfg["inputs"]) != arch["in_channels"]:
        problems.append(f"{len(cfg['inputs'])} inputs declared for a network with {arch['in_channels']} channels")
    intensity = cfg["preprocessing"]["intensity"]
    if isinstance(intensity, list) and len(intensity) != arch["in_channels"]:
        problems.append("preprocessing.intensity must have one entry per input channel")
    for entry in intensity if isinstance(intensity, list) else [intensity]:
        if entry["method"] == "ct_window" and ("window" not in entry or entry["window"][0] >= entry["window"][1]):
            problems.append("a ct_window intensity needs window [low, high] with low < high")
    orientation = cfg["preprocessing"]["orientation"]
    if sorted(_AXIS_OF[c] for c in orientation) != [0, 1, 2]:
        problems.append(f"orientation '{orientation}' must name each of the three axes once (e.g. RAS)")
    values = [label["value"] for label in cfg["labels"]]
    if len(set(values)) != len(values):
        problems.append("label values must be unique")
    names = [label["name"] for label in cfg["labels"]]
    if len(set(names)) != len(names):
        problems.append("label names must be unique")
    inference = cfg["inference"]
    out = arch["out_channels"]
    if inference["activation"] == "sigmoid":
        regions = inference.get("regions")
        if not regions:
            problems.append("a sigmoid model needs inference.regions (output channel -> label value)")
        for region in regions or []:
            if region["channel"] >= out:
                problems.append(f"region channel {region['channel']} >= out_channels {out}")
            if region["label"] not in values:
                problems.append(f"region label {region['label']} is not in labels")
    else:
        for label in cfg["labels"]:
            channel = label.get("channel", label["value"])
            if channel >= out:
                problems.append(f"label '{label['name']}' uses output channel {channel} >= out_channels {out}")
    return problems


_AXIS_OF = {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}


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


class _Source:
    """Read files of a package that is a folder or a zip (optionally with one top-level folder)."""

    def __init__(self, path: Path):
        self.path = path
        if path.is_dir():
            self.zip = None
            return
        if not path.is_file():
            raise ModelPackageError(f"model package not found: {path}")
        if not zipfile.is_zipfile(path):
            raise ModelPackageError(f"{path} is neither a package folder nor a .zip package")
        self.zip = zipfile.ZipFile(path)
        names = self.zip.namelist()
        for name in names:
            pure = PurePosixPath(name)
            if pure.is_absolute() or ".." in pure.parts or "\\" in name:
                raise ModelPackageError(f"{path} contains an unsafe path '{name}'", "the archive is not a package")
        hits = [n for n in names if n == METADATA_FILE or n.endswith("/" + METADATA_FILE)]
        self.prefix = min(hits, key=len)[: -len(METADATA_FILE)] if hits else ""

    def read(self, name: str) -> bytes:
        try:
            if self.zip is None:
                return (self.path / name).read_bytes()
            return self.zip.read(self.prefix + name)
        except (FileNotFoundError, KeyError):
            raise ModelPackageError(f"model package {self.path} lacks {name}") from None

    def extract_to(self, target: Path) -> None:
        for name in (METADATA_FILE, "LICENSE", "docs/README.md"):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(self.read(name))


def read_metadata(path: str | Path) -> dict:
    """The validated metadata of a package folder or zip, without loading weights."""
    source = _Source(Path(path))
    try:
        metadata = json.loads(source.read(METADATA_FILE))
    except json.JSONDecodeError as error:
        raise ModelPackageError(f"{path}: {METADATA_FILE} is not valid JSON ({error})") from None
    validate_metadata(metadata, f"{path}/{METADATA_FILE}")
    return metadata


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
