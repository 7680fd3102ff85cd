"""Versions of the software a run or a package was made with (recorded in reports and package metadata)."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version


def installed_version(package: str) -> str:
    """The installed distribution's version, or ``"unknown"``."""
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def describe_environment() -> dict[str, str]:
    """Python, torch, MONAI and numpy versions (torch as it reports itself, e.g. ``2.13.0+cpu``; MONAI from its
    installed metadata: importing it costs seconds that a segmentation run does not otherwise spend)."""
    import numpy as np
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": installed_version("monai"),
        "numpy": np.__version__,
    }
