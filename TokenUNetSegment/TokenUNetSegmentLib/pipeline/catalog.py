"""The model catalog (``Resources/Models.json``) and the per-user package cache.

The cache lives outside the extension folder: ``$TOKENUNET_HOME/models/<id>/`` (default
``~/.tokenunet``), so every Slicer version and the command line share downloaded and imported packages.
Listing and resolving read metadata only (no torch); loading a network is :mod:`.package_loader`'s job.

The cache is only ever touched inside its own folder: ids are matched in full against the schema's pattern
wherever they come in (so an id is never a path), a package is written into a staging folder in the cache and
swapped into place under a lock (:mod:`.output_folder`), and removing deletes only the files the tool wrote. The
catalog's ids belong to the catalog: a package with a bundled model's id is never imported, and a cached folder
named like a bundled model is ignored (with a warning), so the bundled models can be neither removed nor shadowed.
"""

from __future__ import annotations

import logging
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .checksums import sha256_file
from .errors import CancelledError, ModelPackageError, OutputError
from .json_files import read_json_file
from .jsonschema_lite import validation_errors
from .metadata import check_model_id, load_schema, model_id_problem
from .output_folder import OutputFolder, remove_listed_files
from .package_source import METADATA_FILE, TEXT_FILES, PackageSource, package_files, read_metadata
from .progress import cancel_requested

log = logging.getLogger(__name__)

HOME_VARIABLE = "TOKENUNET_HOME"
DEFAULT_CATALOG = Path(__file__).resolve().parents[2] / "Resources" / "Models.json"


def tokenunet_home() -> Path:
    """The per-user folder: ``$TOKENUNET_HOME`` if set, else ``~/.tokenunet`` (an absolute path)."""
    value = os.environ.get(HOME_VARIABLE, "").strip()
    try:
        return Path(value).expanduser().absolute() if value else Path.home() / ".tokenunet"
    except (RuntimeError, KeyError, OSError):  # no home folder can be found (HOME unset, no user entry)
        raise ModelPackageError(
            "cannot find a home folder for the model cache", f"set {HOME_VARIABLE} to a folder you can write to"
        ) from None


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
        from .arguments import as_path

        self.catalog_path = as_path(catalog, "the catalog") if catalog is not None else DEFAULT_CATALOG
        self.home = as_path(home, "the TokenUNet home folder").absolute() if home is not None else tokenunet_home()

    @property
    def cache_dir(self) -> Path:
        return self.home / "models"

    def catalog(self) -> dict:
        """The validated catalog (an empty one when the file does not exist)."""
        try:
            if not self.catalog_path.exists():
                return {"models": []}
        except OSError as error:
            raise ModelPackageError(f"cannot read the model catalog {self.catalog_path}: {error.strerror}") from None
        data = read_json_file(self.catalog_path, f"model catalog {self.catalog_path}", ModelPackageError)
        problems = validation_errors(data, load_schema("catalog"))
        if problems:
            raise ModelPackageError(f"invalid model catalog {self.catalog_path}: {'; '.join(problems[:3])}")
        return data

    def default_id(self) -> str | None:
        """The catalog's default model id, if any."""
        return self.catalog().get("default")

    def entries(self) -> list[ModelEntry]:
        """Every cached package, then every catalog entry not replaced by a cached copy (a downloaded model).

        Cached folders that are not plain folders named by a valid id, whose metadata names another id, or that are
        named like a bundled model (case ignored) are left out with a warning.
        """
        catalog = self.catalog()["models"]
        bundled = {item["id"].lower(): item["id"] for item in catalog if "path" in item}
        found: dict[str, ModelEntry] = {}
        for folder in self._cached_folders():
            if folder.name.lower() in bundled:
                name = bundled[folder.name.lower()]
                log.warning(f"ignored the cached folder {folder}: it is named like the bundled model '{name}'")
                continue
            try:
                metadata = read_metadata(folder)
            except ModelPackageError as error:
                log.warning(f"ignored the cached folder {folder}: {error.message}")
                continue
            if metadata.id != folder.name:
                log.warning(f"ignored the cached folder {folder}: its metadata names the model '{metadata.id}'")
                continue
            found[folder.name] = ModelEntry(folder.name, metadata.description, "cached", folder)
        for item in catalog:
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

    def protected_folders(self) -> list[tuple[Path, str]]:
        """The folders no output may be written into: the cache and the bundled packages (``(path, what)``)."""
        folders = [(self.cache_dir, "the model cache")]
        for item in self.catalog()["models"]:
            if "path" in item:
                folders.append((self.catalog_path.parent / item["path"], f"the bundled model '{item['id']}'"))
        return folders

    def _cached_folders(self) -> list[Path]:
        """The cache's package folders: plain folders named by a valid id and holding metadata (sorted)."""
        try:
            names = sorted(os.listdir(self.cache_dir)) if self.cache_dir.is_dir() else []
        except OSError as error:
            log.warning(f"cannot list the model cache {self.cache_dir}: {error.strerror or error}")
            return []
        folders = []
        for name in names:
            folder = self.cache_dir / name
            if name.startswith(".") or model_id_problem(name) or not (folder / METADATA_FILE).is_file():
                continue
            if folder.is_symlink():
                log.warning(f"ignored the cached folder {folder}: it is a link")
                continue
            folders.append(folder)
        return folders

    def entry(self, model_id: str) -> ModelEntry:
        check_model_id(model_id)
        for entry in self.entries():
            if entry.id == model_id:
                return entry
        known = ", ".join(e.id for e in self.entries()) or "none"
        raise ModelPackageError(
            f"unknown model id '{model_id}'",
            f"known models: {known[:80]}; or pass the path of a package folder or .zip",
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
        """A local package path, or the catalog entry of a model that must be downloaded first.

        A valid model id that the store knows is that model, even when a file or folder of the same name exists
        in the working folder (a local package can never stand in for a bundled model); anything else must be an
        existing package path.
        """
        if model is None or str(model) == "":
            model = self.default_id()
            if model is None:
                raise ModelPackageError("no model given and the catalog names no default", "pass --model ID|PATH")
        text = os.fspath(model) if isinstance(model, (str, os.PathLike)) else model
        if not isinstance(text, str):
            raise ModelPackageError(f"a model is an id or a package path, got {type(model).__name__}")
        if model_id_problem(text) is None:
            known = {entry.id: entry for entry in self.entries()}
            if text in known:
                return self._local(known[text])
            if _existing(text) is None:
                self.entry(text)  # raises: unknown id, naming the known ones
        path = _existing(text)
        if path is not None:
            return path
        if (
            model_id_problem(text) is not None
            and not any(sep in text for sep in ("/", "\\"))
            and not text.endswith(".zip")
        ):
            raise ModelPackageError(model_id_problem(text), "pass a model id (tokenunet models list) or a package path")
        raise ModelPackageError(f"model package not found: {text[:150]}")

    @staticmethod
    def _local(entry: ModelEntry) -> Path | ModelEntry:
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
        self._make_cache()
        with tempfile.TemporaryDirectory(prefix=".download-", dir=self.cache_dir) as scratch:
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
        """Copy a package folder or zip into the cache after checking it fully; returns the cached folder.

        Refused: a package whose id belongs to the catalog (unless it is the catalog's download of that id,
        ``expected_id``), or that is already cached (case ignored) unless ``overwrite``. Only the package's own
        files are copied, into a staging folder in the cache that replaces the cached one all at once.
        """
        from .package_loader import load_package

        package = load_package(path)  # validates metadata, checksum and weights
        path = package.path
        model_id = check_model_id(package.id)
        if expected_id and model_id != expected_id:
            raise ModelPackageError(f"the package's id is '{model_id}', expected '{expected_id}'")
        catalog = {item["id"].lower(): item for item in self.catalog()["models"]}
        owner = catalog.get(model_id.lower())
        if owner is not None and not (expected_id and "path" not in owner and owner["id"] == model_id):
            kind = "bundled" if "path" in owner else "downloadable"
            raise ModelPackageError(
                f"the id '{model_id}' belongs to the {kind} model '{owner['id']}' and cannot be replaced",
                "give the package another id: tokenunet.id in its configs/metadata.json",
            )
        taken = [folder.name for folder in self._cached_folders() if folder.name.lower() == model_id.lower()]
        if taken and taken[0] != model_id:
            raise ModelPackageError(
                f"the cache holds '{taken[0]}', which differs from '{model_id}' only in case",
                f"remove {taken[0]} first",
            )
        target = self.cache_dir / model_id
        if (taken or os.path.lexists(target)) and not overwrite:
            raise ModelPackageError(
                f"model '{model_id}' is already in the cache", "remove it first, or import with --overwrite"
            )
        self._make_cache()
        if target.is_symlink():
            target.unlink()  # a link in the cache is replaced by the package, never written through
        folder = OutputFolder(target, "models import", legacy_files=package_files)
        names = (*TEXT_FILES, package.config.weights.file)
        try:
            with folder, PackageSource(path) as source:
                folder.check_space(sum(source.size(name) for name in names) + 2**20)
                with folder.writing():
                    source.extract_to(folder.staging, names)
                folder.commit()
        except OutputError as error:
            raise ModelPackageError(
                f"cannot install '{model_id}' in the model cache: {error.message}", error.hint
            ) from None
        for message in folder.warnings:
            log.warning(message)
        return target

    def remove(self, model_id: str) -> Path:
        """Delete a cached package: only the files the tool wrote, only inside the cache (never a bundled model)."""
        check_model_id(model_id)
        target = self.cache_dir / model_id
        if not (target.is_symlink() or (target / METADATA_FILE).is_file()):
            entry = self.entry(model_id)  # raises for unknown ids
            raise ModelPackageError(f"model '{model_id}' is {entry.source}, not in the cache; nothing to remove")
        if target.is_symlink():
            target.unlink()  # a link someone put into the cache: the link goes, never what it points to
            return target
        try:
            kept = remove_listed_files(target, "models remove", package_files, first=(METADATA_FILE,))
        except OutputError as error:
            raise ModelPackageError(f"cannot remove '{model_id}': {error.message}", error.hint) from None
        if kept:
            log.warning(f"kept {target}: it also holds files TokenUNet did not write ({kept[0]})")
        return target

    def _make_cache(self) -> None:
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            writable = os.access(self.cache_dir, os.W_OK | os.X_OK)
        except OSError as error:
            raise ModelPackageError(
                f"cannot create the model cache {self.cache_dir}: {error.strerror or error}",
                f"set {HOME_VARIABLE} to a folder you can write to",
            ) from None
        if not writable:
            raise ModelPackageError(
                f"cannot write to the model cache {self.cache_dir}", f"set {HOME_VARIABLE} to a folder you can write to"
            )


def _existing(text: str) -> Path | None:
    """``text`` as an existing path, or None (also for names no file system accepts)."""
    try:
        path = Path(text).expanduser()
        return path if path.exists() else None
    except (OSError, ValueError, RuntimeError):
        return None


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
