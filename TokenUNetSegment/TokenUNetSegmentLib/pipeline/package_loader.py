"""Loading a model package: its network built through the model registry and its weights checked and loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..model import build_network
from .checksums import verify_sha256
from .errors import ModelPackageError
from .metadata import Architecture, Label, PackageConfig, PackageMetadata
from .network import SegmentationNetwork, check_network
from .package_source import PackageSource
from .weights import load_weights_into, state_dict_from_bytes


@dataclass
class ModelPackage:
    """A loaded package: the network (eval mode, on CPU), its typed metadata and where it came from."""

    network: SegmentationNetwork
    metadata: PackageMetadata
    path: Path | None = None

    def __post_init__(self) -> None:
        check_network(self.network, f"the network of model '{self.metadata.id}'")

    @property
    def config(self) -> PackageConfig:
        """The ``tokenunet`` section: architecture, inputs, preprocessing, inference, labels."""
        return self.metadata.config

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def labels(self) -> tuple[Label, ...]:
        return self.config.labels

    @property
    def input_names(self) -> list[str]:
        return self.config.input_names


def build_package_network(architecture: Architecture | PackageConfig) -> nn.Module:
    """The network a package declares (random weights), built through the model registry."""
    if isinstance(architecture, PackageConfig):
        architecture = architecture.architecture
    try:
        return build_network(
            architecture.name, architecture.in_channels, architecture.out_channels, **architecture.build_arguments()
        )
    except ValueError as error:
        raise ModelPackageError(f"cannot build the package's network: {error}") from None


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
    source = PackageSource(path)
    metadata = source.read_metadata()
    config = metadata.config
    if config.weights is None:  # the schema requires weights in a package; kept for type checkers
        raise ModelPackageError(f"{path}: the metadata names no weights file")
    data = source.read(config.weights.file)
    verify_sha256(data, config.weights.sha256, f"{path}/{config.weights.file}")
    if expected_sha256:
        verify_sha256(data, expected_sha256, f"{path}/{config.weights.file} (catalog checksum)")
    state = state_dict_from_bytes(data, config.weights.file)
    network = load_weights_into(build_package_network(config), state, config.architecture.name)
    return ModelPackage(network.eval(), metadata, path)


def resolve_model(model, store=None, progress=None, cancel=None) -> ModelPackage:
    """A :class:`ModelPackage` from a package object, an id, a path or None (the catalog default).

    Ids of downloadable models are fetched on first use, reporting ``progress(fraction)`` and stopping when
    ``cancel`` is set (see :meth:`ModelStore.resolve`).
    """
    if isinstance(model, ModelPackage):
        return model
    from .catalog import ModelStore

    store = store or ModelStore()
    return load_package(store.resolve(model, progress=progress, cancel=cancel))
