"""Writing model packages: MONAI-bundle metadata around a ``tokenunet`` configuration, weights as safetensors.

The layout is :mod:`.package_source`'s; a package is validated (metadata, and weights against the declared
architecture) before anything is written, then written all at once: a folder through
:class:`.output_folder.OutputFolder` (staging beside it, swapped into place under a lock), a zip as a temporary file
renamed over the destination.
"""

from __future__ import annotations

import copy
import json
import os
import zipfile
from pathlib import Path

from torch import nn

from .arguments import as_path
from .checksums import sha256_bytes
from .errors import ArgumentError, ModelPackageError
from .memory import memory_limit
from .metadata import PackageConfig, check_model_id, parse_config, parse_metadata
from .output_folder import OutputFolder, check_file_destination, write_file_atomically
from .package_loader import ModelPackage, build_package_network
from .package_source import LICENSE_FILE, METADATA_FILE, README_FILE, WEIGHTS_FILE, PackageSource, package_files
from .versions import installed_version
from .weights import load_weights_into, state_dict_from_bytes, weights_file_problem

BUNDLE_SCHEMA = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"
)


def make_metadata(
    config: dict | PackageConfig,
    *,
    description: str,
    authors: str,
    copyright: str,
    version: str = "0.1.0",
    task: str | None = None,
    intended_use: str = "Research and demonstration only; not for clinical use.",
    extra: dict | None = None,
) -> dict:
    """Complete MONAI-bundle metadata (a JSON-ready dict) around our ``config`` section.

    ``config`` is the ``tokenunet`` section as a dict or a :class:`PackageConfig`; its ``weights`` entry is
    filled when the package is written.
    """
    import monai
    import numpy as np
    import torch

    if not isinstance(config, PackageConfig):
        config = parse_config(config)  # a clear error for what is not a configuration
    section = config.to_dict()
    labels, inference = section["labels"], section["inference"]
    if inference["activation"] == "sigmoid":
        by_label = {label["value"]: label["name"] for label in labels}
        out_def = {str(r["channel"]): by_label.get(r["label"], f"region {r['channel']}") for r in inference["regions"]}
    else:
        out_def = {"0": "background"}
        out_def.update({str(label.get("channel", label["value"])): label["name"] for label in labels})
    roi = list(inference["roi_size"])

    def tensor(kind: str, channels: int, value_range: list, channel_def: dict) -> dict:
        return {
            "type": "image",
            "format": kind,
            "num_channels": channels,
            "spatial_shape": roi,
            "dtype": "float32",
            "value_range": value_range,
            "is_patch_data": True,
            "channel_def": channel_def,
        }

    image = tensor(
        "magnitude",
        section["architecture"]["in_channels"],
        [],
        {str(i): entry["name"] for i, entry in enumerate(section["inputs"])},
    )
    image["modality"] = "+".join(i["modality"] for i in section["inputs"])
    metadata = {
        "schema": BUNDLE_SCHEMA,
        "version": version,
        "changelog": {version: "package written by the TokenUNet pipeline"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {n: installed_version(n) for n in ("safetensors", "einops")},
        "task": task or f"segmentation of {', '.join(label['name'] for label in labels)}",
        "description": description,
        "authors": authors,
        "copyright": copyright,
        "intended_use": intended_use,
        "network_data_format": {
            "inputs": {"image": image},
            "outputs": {"pred": tensor("segmentation", section["architecture"]["out_channels"], [0, 1], out_def)},
        },
        "tokenunet": section,
    }
    metadata.update(extra or {})
    return metadata


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

    destination = as_path(destination, "the package destination")
    if not isinstance(network, nn.Module):
        raise ArgumentError(f"write_package needs a torch network, got {type(network).__name__}")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("tokenunet"), dict):
        raise ModelPackageError("the package metadata must be a dict with a 'tokenunet' section (see make_metadata)")
    if os.path.lexists(destination) and not overwrite:
        raise ModelPackageError(f"{destination} already exists", "choose another destination or pass overwrite")
    metadata = copy.deepcopy(metadata)
    state = {k: v.detach().to("cpu").contiguous() for k, v in network.state_dict().items()}
    data = save(state, metadata={"format": "pt"})
    metadata["tokenunet"]["weights"] = {"file": WEIGHTS_FILE, "sha256": sha256_bytes(data)}
    config = parse_metadata(metadata).config
    load_weights_into(build_package_network(config), state, config.architecture.name)
    files = {
        METADATA_FILE: json.dumps(metadata, indent=2).encode("utf-8"),
        WEIGHTS_FILE: data,
        LICENSE_FILE: license_text.encode("utf-8"),
        README_FILE: readme_text.encode("utf-8"),
    }
    if as_zip:
        check_file_destination(destination, replace=True)  # the caller named this file

        def write_zip(stream) -> None:
            with zipfile.ZipFile(stream, "w", zipfile.ZIP_DEFLATED) as archive:
                for name, content in files.items():
                    archive.writestr(name, content)

        write_file_atomically(destination, write_zip)
        return destination
    folder = OutputFolder(destination, "package", legacy_files=package_files)
    with folder:
        with folder.writing():
            for name, content in files.items():
                (folder.staging / name).parent.mkdir(parents=True, exist_ok=True)
                (folder.staging / name).write_bytes(content)
        return folder.commit()


def package_in_memory(network: nn.Module, config: dict | PackageConfig, description: str = "in memory") -> ModelPackage:
    """A :class:`ModelPackage` around a network held in memory (benchmarks, tests, notebooks); no files."""
    metadata = make_metadata(config, description=description, authors="-", copyright="-")
    return ModelPackage(network.eval(), parse_metadata(metadata, "package in memory", require_weights=False))


def package_from_weights(
    weights_path: str | Path, like: ModelPackage, new_id: str, destination: str | Path, description: str | None = None
) -> Path:
    """A new package with ``like``'s configuration and the weights of a .safetensors/.pt/.pth file.

    The weights are loaded safely (no code runs), checked against the architecture and re-saved as
    safetensors.
    """
    weights_path = as_path(weights_path, "the weights file")
    if not isinstance(like, ModelPackage):
        raise ArgumentError(f"package_from_weights needs a ModelPackage as 'like', got {type(like).__name__}")
    check_model_id(new_id)
    problem = weights_file_problem(weights_path)  # before: a folder was "not found"
    if problem is not None:
        raise ModelPackageError(problem)
    limit, described = memory_limit()
    if weights_path.stat().st_size > limit // 3:
        raise ModelPackageError(f"the weights file {weights_path.name} is too large for {described}")
    state = state_dict_from_bytes(weights_path.read_bytes(), weights_path.name)
    network = load_weights_into(build_package_network(like.config), state, like.config.architecture.name)
    metadata = like.metadata.to_dict()
    metadata["tokenunet"]["id"] = new_id
    if description:
        metadata["description"] = description
    readme = f"# {new_id}\n\nWeights imported from `{weights_path.name}` into the configuration of `{like.id}`.\n"
    license_text = (
        PackageSource(like.path).read(LICENSE_FILE).decode("utf-8") if like.path else "See the weights' provider."
    )
    return write_package(destination, network, metadata, license_text=license_text, readme_text=readme)
