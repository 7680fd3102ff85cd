"""Layer 2, the pipeline: inference, model packages, training and the CLI (no Slicer, VTK or Qt).

Main entry points::

    from TokenUNetSegmentLib.pipeline import segment, ModelStore, load_package, write_package, make_metadata
    result = segment("ct.nii.gz", model="my-model")        # or [(array_ijk, ijk_to_ras), ...]
    result.labels, result.token_maps.get("gather", 0), result.token_matches, result.volumes_ml, result.timings

Heavy modules load on first use of a name, so ``import TokenUNetSegmentLib.pipeline`` stays cheap.
"""

from importlib import import_module

from .errors import (
    CancelledError,
    InputError,
    ModelPackageError,
    OutOfMemoryError,
    TokenUNetError,
    UnsafeWeightsError,
)

_LAZY = {
    "segment": "segmentation",
    "SegmentationResult": "result",
    "TokenMaps": "result",
    "PackageConfig": "metadata",
    "PackageMetadata": "metadata",
    "Label": "metadata",
    "parse_metadata": "metadata",
    "parse_config": "metadata",
    "validate_metadata": "metadata",
    "assign_inputs": "metadata",
    "read_metadata": "package_source",
    "ModelPackage": "package_loader",
    "load_package": "package_loader",
    "resolve_model": "package_loader",
    "write_package": "package_writer",
    "make_metadata": "package_writer",
    "package_from_weights": "package_writer",
    "ModelStore": "catalog",
    "ModelEntry": "catalog",
    "tokenunet_home": "catalog",
    "Volume": "volumes",
    "read_volume": "volumes",
    "as_volume": "volumes",
    "Grid": "geometry",
    "resolve_device": "device",
    "RunRequest": "run_contract",
    "RunState": "run_contract",
    "ExitCode": "run_contract",
    "write_outputs": "outputs",
    "read_outputs": "outputs",
    "write_segmentation": "nrrd",
    "write_nrrd": "nrrd",
    "register_command": "cli",
    "main": "cli",
}

__all__ = [
    "CancelledError",
    "InputError",
    "ModelPackageError",
    "OutOfMemoryError",
    "TokenUNetError",
    "UnsafeWeightsError",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
