"""The model catalog (``Resources/Models.json``) and the per-user package cache.

The cache lives outside the extension folder: ``$TOKENUNET_HOME/models/<id>/`` (default
``~/.tokenunet``), so every Slicer version and the command line share downloaded and imported packages.
Listing and resolving read metadata only (no torch); loading a network is :mod:`.package_loader`'s job.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .checksums import sha256_file
from .errors import CancelledError, ModelPackageError
from .jsonschema_lite import validation_errors
from .metadata import load_schema
from .package_source import METADATA_FILE, TEXT_FILES, PackageSource, read_metadata
from .progress import cancel_requested

HOME_VARIABLE = "TOKENUNET_HOME"
DEFAULT_CATALOG = Path(__file__).resolve().parents[2] / "Resources" / "Models.json"


def tokenunet_home() -> Path:
    """The per-user folder: ``$TOKENUNET_HOME`` if set, else ``~/.tokenunet``."""
    value = os.environ.get(HOME_VARIABLE)
    return Path(value).expanduser() if value else Path.home() / ".tokenunet"


@dataclass
class ModelEntry:
    """One model the store knows: where it is and whether it can be used offline now."""

    id: str
    description: str
    source: str  # "bundled", "cached" or "downloadable"
    path: Path | None = None
    url: str | None = None
    sha256: str | None = None
    license: str | None = None
    expected_time: str | None = None
    input_names: list[str] | None = None  # for downloadable models, from the catalog (else from the metadata)

    @property
    def available(self) -> bool:
        return self.path is not None and self.path.exists()


class ModelStore:
    """Catalog + cache: list, resolve, load, download, import and remove model packages.

    Args:
        catalog: the catalog JSON (default: the module's ``Resources/Models.json``).
        home: the per-user folder (default: :func:`tokenunet_home`).
    """

    def __init__(self, catalog: str | Path | None = None, home: str | Path | None = None):
        self.catalog_path = Path(catalog) if catalog else DEFAULT_CATALOG
        self.home = Path(home) if home else tokenunet_home()

    @property
    def cache_dir(self) -> Path:
        return self.home / "models"

    def catalog(self) -> dict:
        """The validated catalog (an empty one when the file does not exist)."""
        if not self.catalog_path.exists():
            return {"models": []}
        try:
            data = json.loads(self.catalog_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ModelPackageError(f"model catalog {self.catalog_path} is not valid JSON ({error})") from None
        problems = validation_errors(data, load_schema("catalog"))
        if problems:
            raise ModelPackageError(f"invalid model catalog {self.catalog_path}: {'; '.join(problems[:3])}")
        return data

    def default_id(self) -> str | None:
        """The catalog's default model id, if any."""
        return self.catalog().get("default")

    def entries(self) -> list[ModelEntry]:
        """Every cached package, then every catalog entry not shadowed by a cached copy."""
        found: dict[str, ModelEntry] = {}
        if self.cache_dir.is_dir():
            for folder in sorted(self.cache_dir.iterdir()):
                if (folder / METADATA_FILE).is_file():
                    try:
                        metadata = read_metadata(folder)
                    except ModelPackageError:
                        continue
                    found[folder.name] = ModelEntry(folder.name, metadata.description, "cached", folder)
        for item in self.catalog()["models"]:
            if item["id"] in found:
                continue
            if "path" in item:
                path = (self.catalog_path.parent / item["path"]).resolve()
                entry = ModelEntry(item["id"], item["description"], "bundled", path)
            else:
                entry = ModelEntry(
                    item["id"], item["description"], "downloadable", url=item["url"], sha256=item["sha256"]
                )
            entry.license, entry.expected_time = item.get("license"), item.get("expected_time")
            entry.input_names = item.get("inputs")
            found[item["id"]] = entry
        return list(found.values())

    def entry(self, model_id: str) -> ModelEntry:
        for entry in self.entries():
            if entry.id == model_id:
                return entry
        known = ", ".join(e.id for e in self.entries()) or "none"
        raise ModelPackageError(
            f"unknown model id '{model_id}'",
            f"known models: {known}; or pass the path of a package folder or .zip",
        )

    def resolve(self, model: str | Path | None, progress=None, cancel=None) -> Path:
        """Path of the package for an id or a path (None or ``""``: the catalog's default).

        A downloadable catalog model is fetched on first use (see :meth:`download`).
        """
        entry_or_path = self._locate(model)
        if isinstance(entry_or_path, Path):
            return entry_or_path
        return self.download(entry_or_path, progress=progress, cancel=cancel)

    def local_path(self, model: str | Path | None) -> Path | None:
        """The package's path when it is on this computer now (no download), else None."""
        entry_or_path = self._locate(model)
        return entry_or_path if isinstance(entry_or_path, Path) else None

    def input_names(self, model: str | Path | None) -> list[str] | None:
        """The model's input channel names, read from its metadata (no torch) or, for a downloadable model,
        from the catalog; None when they cannot be known before the model is downloaded."""
        entry_or_path = self._locate(model)
        if isinstance(entry_or_path, Path):
            return read_metadata(entry_or_path).config.input_names
        return entry_or_path.input_names

    def _locate(self, model: str | Path | None) -> Path | ModelEntry:
        """A local package path, or the catalog entry of a model that must be downloaded first."""
        if model is None or str(model) == "":
            model = self.default_id()
            if model is None:
                raise ModelPackageError("no model given and the catalog names no default", "pass --model ID|PATH")
        path = Path(model).expanduser()
        if path.exists():
            return path
        if any(sep in str(model) for sep in ("/", "\\")) or str(model).endswith(".zip"):
            raise ModelPackageError(f"model package not found: {model}")
        entry = self.entry(str(model))
        if entry.source == "downloadable":
            return entry
        if not entry.available:
            raise ModelPackageError(
                f"the bundled package of '{entry.id}' is missing at {entry.path}", "reinstall the extension"
            )
        return entry.path

    def load(self, model: str | Path | None):
        """Resolve and load a package (see :func:`.package_loader.load_package`)."""
        from .package_loader import load_package

        return load_package(self.resolve(model))

    def download(self, entry: ModelEntry, progress=None, cancel=None) -> Path:
        """Fetch a downloadable package, check its SHA256 and install it into the cache.

        ``progress(fraction)`` is called as bytes arrive (when the size is known); ``cancel`` (an object with
        ``is_set()``, or a callable) stops the download between chunks with :class:`CancelledError`.
        """
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache_dir) as scratch:
            target = Path(scratch) / f"{entry.id}.zip"
            try:
                with urllib.request.urlopen(entry.url, timeout=60) as response, open(target, "wb") as out:
                    _copy_with_progress(response, out, progress, cancel)
            except OSError as error:
                raise ModelPackageError(
                    f"cannot download model '{entry.id}' from {entry.url}: {error}",
                    "check the network, or import the package from a local file",
                ) from None
            actual = sha256_file(target)
            if actual != entry.sha256:
                raise ModelPackageError(
                    f"checksum mismatch for the download of '{entry.id}': expected {entry.sha256[:12]}..., "
                    f"got {actual[:12]}...",
                    "the download is corrupted or was tampered with; try again",
                )
            return self.import_package(target, expected_id=entry.id)

    def import_package(self, path: str | Path, overwrite: bool = False, expected_id: str | None = None) -> Path:
        """Copy a package folder or zip into the cache after checking it fully; returns the cached folder."""
        from .package_loader import load_package

        path = Path(path)
        package = load_package(path)  # validates metadata, checksum and weights
        model_id = package.id
        if expected_id and model_id != expected_id:
            raise ModelPackageError(f"the package's id is '{model_id}', expected '{expected_id}'")
        target = self.cache_dir / model_id
        if target.exists() and not overwrite:
            raise ModelPackageError(
                f"model '{model_id}' is already in the cache at {target}", "remove it first, or import with overwrite"
            )
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache_dir) as scratch:
            staging = Path(scratch) / model_id
            PackageSource(path).extract_to(staging, (*TEXT_FILES, package.config.weights.file))
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        return target

    def remove(self, model_id: str) -> Path:
        """Delete a cached package (bundled packages cannot be removed)."""
        target = self.cache_dir / model_id
        if not (target / METADATA_FILE).is_file():
            entry = self.entry(model_id)  # raises for unknown ids
            raise ModelPackageError(f"model '{model_id}' is {entry.source}, not in the cache; nothing to remove")
        shutil.rmtree(target)
        return target


def _copy_with_progress(response, out, progress=None, cancel=None, chunk: int = 1 << 20) -> None:
    total = int(response.headers.get("Content-Length") or 0) if getattr(response, "headers", None) else 0
    done = 0
    while True:
        if cancel_requested(cancel):
            raise CancelledError("download cancelled")
        block = response.read(chunk)
        if not block:
            return
        out.write(block)
        done += len(block)
        if progress is not None and total:
            progress(min(1.0, done / total))
