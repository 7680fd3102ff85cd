"""Python dependencies on first use, inside Slicer, without ever breaking the user's Slicer.

- torch comes only from the PyTorch extension (``PyTorchUtils.installTorch``, after asking), with the version
  requirement that MONAI itself declares (:data:`TORCH_REQUIREMENT`), so pip never has to replace it later.
- The other packages come from ``Resources/requirements.txt`` through ``slicer.packaging.pip_ensure``
  (Slicer >= 5.12, imported explicitly) or ``slicer.util.pip_install`` (5.10), always with a constraints file
  written at install time that pins the torch, numpy and SimpleITK already in Slicer: no requirement, direct or
  through a dependency, can replace them.
- Whether torch is installed is read from package metadata: nothing here imports torch (opening the module
  must stay fast, and a broken torch must not empty the panel).

The functions that decide are plain Python (tested in CI); only :func:`ensure_dependencies` talks to the
application, and a declined installation returns False instead of raising.
"""

from __future__ import annotations

import re
import tempfile
from importlib import metadata
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parents[2] / "Resources" / "requirements.txt"
PROTECTED = {"simpleitk", "torch", "numpy", "requests", "vtk"}  # Slicer's (or the PyTorch extension's) own
PINNED_AT_INSTALL = ("torch", "numpy", "SimpleITK")  # written into the constraints file when installed
TORCH_REQUIREMENT = ">=2.8.0"  # MONAI 1.6.1's own requirement (a test checks it against MONAI's metadata)
DECLINED = "TokenUNet needs PyTorch, MONAI, einops and safetensors; nothing was installed."


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


def torch_available(version_of=installed_version) -> bool:
    """Whether torch is installed, from its package metadata (torch is not imported)."""
    return version_of("torch") is not None


def dependencies_ready(version_of=installed_version) -> bool:
    return torch_available(version_of) and not missing_requirements(read_requirements(), version_of)


def constraints_text(version_of=installed_version) -> str:
    """A pip constraints file pinning the installed torch, numpy and SimpleITK (absent ones are left out)."""
    lines = ["# Written by TokenUNet at install time: Slicer's own packages are never replaced."]
    for name in PINNED_AT_INSTALL:
        version = version_of(name)
        if version is not None:
            lines.append(f"{name}=={version}")
    return "\n".join(lines) + "\n"


def write_constraints(folder: str | Path | None = None, version_of=installed_version) -> Path:
    """Write :func:`constraints_text` to a new file in ``folder`` (Slicer's temporary folder in the app)."""
    handle, path = tempfile.mkstemp(prefix="tokenunet-constraints-", suffix=".txt", dir=folder)
    with open(handle, "w", encoding="utf-8") as stream:
        stream.write(constraints_text(version_of))
    return Path(path)


def ensure_dependencies(ask: bool = True, temp_dir: str | Path | None = None) -> bool:
    """Make torch, MONAI, einops and safetensors importable in Slicer.

    Returns:
        True when everything is installed; False when the user declined (nothing changed, the module stays
        usable and says what is missing) or when Slicer runs its tests (installation is skipped there).

    Raises:
        TokenUNetError: an installation failed, or a restart is needed (``restart_required``).
    """
    import slicer

    from ..pipeline.errors import TokenUNetError

    if slicer.app.testingEnabled() and not dependencies_ready():
        return False  # never modify the user's Python from a test run
    if not torch_available() and not _install_torch(ask):
        return False
    missing = missing_requirements(read_requirements())
    if not missing:
        return True
    constraints = write_constraints(temp_dir)
    try:
        if not _pip_ensure(missing, constraints, ask):
            return False
    except TokenUNetError:
        raise
    except Exception as error:  # noqa: BLE001 - pip's failures reach the user as one message
        raise TokenUNetError(
            f"could not install {', '.join(missing)}: {error}", "see the Python console for pip's output"
        ) from error
    finally:
        constraints.unlink(missing_ok=True)
    still = missing_requirements(read_requirements())
    if still:
        raise TokenUNetError(
            f"could not install {', '.join(still)}", "restart Slicer and try again", restart_required=True
        )
    return True


def _install_torch(ask: bool) -> bool:
    """torch through the PyTorch extension, with MONAI's version requirement; False if declined."""
    import slicer

    from ..pipeline.errors import TokenUNetError

    try:
        import PyTorchUtils
    except ImportError:
        raise TokenUNetError(
            "PyTorch is not installed",
            "install the PyTorch extension from the Extensions Manager, restart Slicer and try again",
            restart_required=True,
        ) from None
    if ask and not slicer.util.confirmOkCancelDisplay(
        f"TokenUNet needs PyTorch (torch{TORCH_REQUIREMENT}). Install it now through the PyTorch extension "
        "(this can take several minutes)?",
        windowTitle="TokenUNet",
    ):
        return False
    logic = PyTorchUtils.PyTorchUtilsLogic()
    try:
        torch = logic.installTorch(askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT)
    except Exception as error:  # noqa: BLE001 - light-the-torch/pip failures
        raise TokenUNetError(f"PyTorch could not be installed: {error}", "see the PyTorch module") from error
    if torch is None:
        raise TokenUNetError("PyTorch could not be installed", "see the PyTorch module for details")
    return True


def _pip_ensure(missing: list[str], constraints: Path, ask: bool) -> bool:
    """Install ``missing`` with ``constraints``; False if the user declined."""
    import slicer

    try:
        import slicer.packaging as packaging  # Slicer >= 5.12; slicer/__init__ does not import it
    except ImportError:
        packaging = None
    if packaging is not None:
        try:
            packaging.pip_ensure(
                missing, constraints=str(constraints), prompt_install=ask, requester="TokenUNet", skip_in_testing=True
            )
        except RuntimeError as error:  # raised when the user declines (CalledProcessError is not one)
            if "declined" in str(error).lower():
                return False
            raise
        return True
    if ask and not slicer.util.confirmOkCancelDisplay(
        f"TokenUNet needs these Python packages: {', '.join(missing)}. Install them now?", windowTitle="TokenUNet"
    ):
        return False
    slicer.util.pip_install([*missing, "-c", str(constraints)])
    return True
