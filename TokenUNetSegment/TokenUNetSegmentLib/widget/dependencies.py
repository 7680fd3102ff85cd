"""Python dependencies on first use, inside Slicer.

torch comes only from the PyTorch extension (``PyTorchUtils``, after asking); the other packages come from
``Resources/requirements.txt`` through ``slicer.packaging.pip_ensure`` (Slicer >= 5.12) or
``slicer.util.pip_install``. Slicer's own SimpleITK, torch, numpy and requests are never replaced.

The functions that decide what is missing are plain Python (tested in CI); only ``ensure_dependencies``
talks to the application.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parents[2] / "Resources" / "requirements.txt"
PROTECTED = {"simpleitk", "torch", "numpy", "requests", "vtk"}  # Slicer's (or the PyTorch extension's) own


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_requirements(path: str | Path = REQUIREMENTS) -> list[tuple[str, str]]:
    """``(name, version)`` pins of a requirements file, without comments and protected packages.

    Raises:
        ValueError: a line is not an exact ``name==version`` pin.
    """
    pins = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9.+!-]+)", line)
        if not match:
            raise ValueError(f"{Path(path).name}: '{line}' is not an exact name==version pin")
        if _canonical(match.group(1)) not in PROTECTED:
            pins.append((match.group(1), match.group(2)))
    return pins


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def missing_requirements(pins: list[tuple[str, str]], version_of=installed_version) -> list[str]:
    """``name==version`` of each pin that is absent; an installed other version counts as present.

    Slicer may ship a newer build of a package, and replacing a loaded package needs a restart, so only
    absent packages are installed.
    """
    return [f"{name}=={version}" for name, version in pins if version_of(name) is None]


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def ensure_dependencies(ask: bool = True) -> bool:
    """Make torch, MONAI, einops and safetensors importable in Slicer; False if the user declined.

    Raises:
        TokenUNetError: an installation failed, or a restart is needed (``restart_required``).
    """
    import slicer

    from ..pipeline.errors import TokenUNetError

    if not torch_available():
        try:
            import PyTorchUtils
        except ImportError:
            raise TokenUNetError(
                "PyTorch is not installed",
                "install the PyTorch extension from the Extensions Manager, restart Slicer and try again",
                restart_required=True,
            ) from None
        logic = PyTorchUtils.PyTorchUtilsLogic()
        if not logic.torchInstalled():
            if ask and not slicer.util.confirmOkCancelDisplay(
                "TokenUNet needs PyTorch. Install it now (this can take several minutes)?", windowTitle="TokenUNet"
            ):
                return False
            if logic.installTorch(askConfirmation=False) is None:
                raise TokenUNetError("PyTorch could not be installed", "see the PyTorch module for details")
    missing = missing_requirements(read_requirements())
    if not missing:
        return True
    packaging = getattr(slicer, "packaging", None)
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        packaging.pip_ensure(missing, requester="TokenUNet")
    else:
        if ask and not slicer.util.confirmOkCancelDisplay(
            f"TokenUNet needs these Python packages: {', '.join(missing)}. Install them now?", windowTitle="TokenUNet"
        ):
            return False
        slicer.util.pip_install(missing)
    still = missing_requirements(read_requirements())
    if still:
        raise TokenUNetError(
            f"could not install {', '.join(still)}", "restart Slicer and try again", restart_required=True
        )
    return True
