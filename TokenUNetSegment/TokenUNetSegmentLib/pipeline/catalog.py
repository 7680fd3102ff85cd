"""The model catalog (``Resources/Models.json``) and the per-user package cache.

The cache lives outside the extension folder: ``$TOKENUNET_HOME/models/<id>/`` (default
``~/.tokenunet``), so every Slicer version and the command line share downloaded and imported packages.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ModelPackageError
from .jsonschema_lite import validation_errors
from .metadata import METADATA_FILE, _Source, load_schema, read_metadata

if TYPE_CHECKING:  # listing models needs no torch: loading them imports .package on use
    from .package import ModelPackage

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
                    found[folder.name] = ModelEntry(folder.name, metadata["description"], "cached", folder)
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

    def resolve(self, model: str | Path | None) -> Path:
        """Path of the package for an id or a path; downloads a catalog model on first use."""
        if model is None:
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
            return self.download(entry)
        if not entry.available:
            raise ModelPackageError(
                f"the bundled package of '{entry.id}' is missing at {entry.path}", "reinstall the extension"
            )
        return entry.path

    def load(self, model: str | Path | None) -> ModelPackage:
        """Resolve and load a package (see :func:`load_package`)."""
        from .package import load_package

        return load_package(self.resolve(model))

    def download(self, entry: ModelEntry) -> Path:
        """Fetch a downloadable package, check its SHA256 and install it into the cache."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache_dir) as scratch:
            target = Path(scratch) / f"{entry.id}.zip"
            try:
                with urllib.request.urlopen(entry.url, timeout=60) as response, open(target, "wb") as out:
                    shutil.copyfileobj(response, out)
            except OSError as error:
                raise ModelPackageError(
                    f"cannot download model '{entry.id}' from {entry.url}: {error}",
                    "check the network, or import the package from a local file",
                ) from None
            from .weights import sha256_file

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
        from .package import load_package

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
            source = _Source(path)
            source.extract_to(staging)
            weights = package.config["weights"]["file"]
            (staging / weights).parent.mkdir(parents=True, exist_ok=True)
            (staging / weights).write_bytes(source.read(weights))
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


def resolve_model(model: str | Path | ModelPackage | None, store: ModelStore | None = None) -> ModelPackage:
    """A :class:`ModelPackage` from a package object, an id, a path or None (the catalog default)."""
    from .package import ModelPackage

    if isinstance(model, ModelPackage):
        return model
    return (store or ModelStore()).load(model)
