"""Layer 2, the pipeline: inference, model packages, training and the CLI (no Slicer, VTK or Qt).

Main entry points::

    from TokenUNetSegmentLib.pipeline import segment, ModelStore, load_package, write_package, make_metadata
    result = segment("ct.nii.gz", model="my-model")        # or [(array_ijk, ijk_to_ras), ...]
    result.labels, result.heatmaps.get("gather", 0), result.token_matches, result.volumes_ml, result.timings

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
    "SegmentationResult": "segmentation",
    "Heatmaps": "segmentation",
    "ModelPackage": "package",
    "Label": "package",
    "load_package": "package",
    "write_package": "package",
    "make_metadata": "package",
    "read_metadata": "package",
    "validate_metadata": "package",
    "package_from_weights": "package",
    "assign_inputs": "package",
    "ModelStore": "catalog",
    "ModelEntry": "catalog",
    "resolve_model": "catalog",
    "tokenunet_home": "catalog",
    "Volume": "volumes",
    "read_volume": "volumes",
    "as_volume": "volumes",
    "Grid": "geometry",
    "resolve_device": "device",
    "write_outputs": "outputs",
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
