"""Reading a model package's files, whether it is a folder or a ``.zip`` (optionally with one top folder).

Layout (MONAI-bundle shaped)::

    <package>/configs/metadata.json     MONAI bundle keys + our "tokenunet" section (schema-validated)
    <package>/models/model.safetensors  the weights (SHA256 recorded in the metadata)
    <package>/LICENSE
    <package>/docs/README.md            the model card
"""

from __future__ import annotations

import os
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from .errors import ModelPackageError
from .json_files import parse_json_bytes
from .metadata import PackageMetadata, parse_metadata
from .special_files import mode_kind, not_a_file, special_kind

METADATA_FILE = "configs/metadata.json"
WEIGHTS_FILE = "models/model.safetensors"
LICENSE_FILE = "LICENSE"
README_FILE = "docs/README.md"
TEXT_FILES = (METADATA_FILE, LICENSE_FILE, README_FILE)
MAX_FILE_BYTES = 16 * 2**20  # any file but the weights (metadata, licence, model card, pictures)
MAX_WEIGHTS_BYTES = 8 * 2**30  # a weights file (also checked against the declared network's size)
MAX_TOTAL_BYTES = MAX_WEIGHTS_BYTES + 64 * 2**20  # everything a package holds, unpacked
MAX_ENTRIES = 256  # files and folders of a package (it needs four files)


def size_limit(name: str) -> int:
    """The largest size accepted for the package file ``name``."""
    return MAX_WEIGHTS_BYTES if name.startswith("models/") and name.endswith(".safetensors") else MAX_FILE_BYTES


class PackageSource:
    """Read the files of a package that is a folder or a zip, refusing what could read or write elsewhere.

    Refused, when the package is opened: symbolic links, hard-linked files and special files (devices, FIFOs,
    sockets) anywhere in a folder; zip members with absolute or parent paths, link or device mode bits,
    encryption or duplicate names; more than :data:`MAX_ENTRIES` entries; a declared size over
    :func:`size_limit` for any file or over :data:`MAX_TOTAL_BYTES` in all. When a file is read, its real size
    is checked again and reading stops past the limit (a zip member that inflates beyond its declared size, a
    file that grew).
    """

    def __init__(self, path: str | Path):
        from .arguments import as_path

        self.path = path = as_path(path, "a model package")
        self.zip = None
        self.prefix = ""
        self.sizes: dict[str, int] = {}
        try:
            if path.is_dir():
                self._scan_folder()
                return
            if not path.is_file():
                kind = special_kind(path)  # a FIFO: never opened (reading it would wait for a writer)
                if kind is not None:
                    raise ModelPackageError(
                        f"the model package {path.name} {not_a_file(kind)}", "pass a package folder or .zip file"
                    )
                raise ModelPackageError(f"model package not found: {path}")
            if not zipfile.is_zipfile(path):
                raise ModelPackageError(f"{path} is neither a package folder nor a .zip package")
            self._open_zip()
        except OSError as error:
            raise ModelPackageError(f"cannot read the model package {path}: {error.strerror or error}") from None

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()
            self.zip = None

    def __enter__(self) -> PackageSource:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def _refuse(self, problem: str) -> ModelPackageError:
        # the package's name, not its full path: the line keeps what is wrong (the user knows where it is)
        return ModelPackageError(f"the model package '{self.path.name}' {problem}", "the package is not safe to use")

    def _scan_folder(self) -> None:
        try:
            if not stat.S_ISREG(os.lstat(self.path / METADATA_FILE).st_mode):
                raise self._refuse(f"has {METADATA_FILE} as a link or special file")
        except (FileNotFoundError, NotADirectoryError):
            run = (self.path / "package" / METADATA_FILE).is_file()  # a training run's folder: its package is inside
            hint = f"a training run keeps its package inside: import {self.path.name}/package" if run else None
            raise ModelPackageError(f"model package {self.path} lacks {METADATA_FILE}", hint) from None
        total, seen, pending = 0, 0, [(self.path, "")]
        while pending:
            folder, prefix = pending.pop()
            with os.scandir(folder) as entries:
                for entry in entries:
                    name = prefix + entry.name
                    seen += 1
                    if seen > MAX_ENTRIES:
                        raise self._refuse(f"holds more than {MAX_ENTRIES} files and folders")
                    info = entry.stat(follow_symlinks=False)
                    if stat.S_ISLNK(info.st_mode):
                        raise self._refuse(f"contains a symbolic link ({name})")
                    if stat.S_ISDIR(info.st_mode):
                        pending.append((Path(entry.path), name + "/"))
                        continue
                    if not stat.S_ISREG(info.st_mode):
                        raise self._refuse(f"contains {name}, which {not_a_file(mode_kind(info.st_mode))}")
                    if info.st_nlink > 1:
                        raise self._refuse(f"contains a hard-linked file ({name}); copy the package with plain files")
                    self._check_size(name, info.st_size)
                    total += info.st_size
                    self.sizes[name] = info.st_size
        self._check_total(total)

    def _open_zip(self) -> None:
        if self.path.stat().st_size > MAX_TOTAL_BYTES:
            raise self._refuse(f"is larger than {MAX_TOTAL_BYTES} bytes")
        try:
            self.zip = zipfile.ZipFile(self.path)
            members = self.zip.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, ValueError) as error:
            raise ModelPackageError(f"{self.path} is not a readable zip archive ({error})") from None
        if len(members) > MAX_ENTRIES:
            raise self._refuse(f"holds more than {MAX_ENTRIES} files")
        total = 0
        for member in members:
            name = member.filename
            pure = PurePosixPath(name)
            if pure.is_absolute() or ".." in pure.parts or "\\" in name or ":" in name or "\x00" in name:
                raise ModelPackageError(
                    f"{self.path} contains an unsafe path '{name[:80]}'", "the archive is not a package"
                )
            if name in self.sizes:
                raise self._refuse(f"lists '{name[:80]}' twice")
            kind = stat.S_IFMT(member.external_attr >> 16)
            if member.is_dir():
                if kind not in (0, stat.S_IFDIR):
                    raise self._refuse(f"contains a special entry ({name[:80]})")
                continue
            if kind == stat.S_IFLNK:
                raise self._refuse(f"contains a symbolic link ({name[:80]})")
            if kind not in (0, stat.S_IFREG):
                raise self._refuse(f"contains {name[:80]}, which {not_a_file(mode_kind(kind))}")
            if member.flag_bits & 0x1:
                raise self._refuse(f"contains an encrypted file ({name[:80]})")
            self.sizes[name] = member.file_size
            total += member.file_size
        hits = [n for n in self.sizes if n == METADATA_FILE or n.endswith("/" + METADATA_FILE)]
        self.prefix = min(hits, key=len)[: -len(METADATA_FILE)] if hits else ""
        for name, size in self.sizes.items():
            self._check_size(name[len(self.prefix) :] if name.startswith(self.prefix) else name, size)
        self._check_total(total)

    def _check_size(self, name: str, size: int) -> None:
        if size > size_limit(name):
            raise self._refuse(
                f"has a file too large for a package: {name[:80]} ({size} bytes; at most {size_limit(name)})"
            )

    def _check_total(self, total: int) -> None:
        if total > MAX_TOTAL_BYTES:
            raise self._refuse(f"unpacks to {total} bytes (at most {MAX_TOTAL_BYTES})")

    def size(self, name: str) -> int:
        """The declared size of the package file ``name`` (what a folder's file system or a zip says)."""
        key = name if self.zip is None else self.prefix + name
        if key not in self.sizes:
            raise ModelPackageError(f"model package {self.path} lacks {name}")
        return self.sizes[key]

    def read(self, name: str) -> bytes:
        """The bytes of the package file ``name``, read no further than its limit."""
        limit = min(size_limit(name), self.size(name))
        try:
            data = self._read_zip(name, limit) if self.zip is not None else self._read_file(name, limit)
        except ModelPackageError:
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as error:
            raise ModelPackageError(f"{self.path}: {name} is damaged ({error})", "get the package again") from None
        except OSError as error:
            raise ModelPackageError(f"cannot read {name} of {self.path}: {error.strerror or error}") from None
        if len(data) > limit:
            raise self._refuse(f"has a file larger than it declared: {name}")
        return data

    def _read_zip(self, name: str, limit: int) -> bytes:
        with self.zip.open(self.prefix + name) as stream:
            return stream.read(limit + 1)

    def _read_file(self, name: str, limit: int) -> bytes:
        path = self.path
        for part in PurePosixPath(name).parts[:-1]:  # no links on the way (the folder may have changed)
            path = path / part
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise self._refuse(f"has {name} behind a link or file")
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
        descriptor = os.open(self.path / name, flags)
        with os.fdopen(descriptor, "rb") as stream:
            info = os.fstat(stream.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
                raise self._refuse(f"has {name} as a link or special file")
            return stream.read(limit + 1)

    def read_metadata(self) -> PackageMetadata:
        """The package's typed, validated metadata."""
        what = f"{self.path}/{METADATA_FILE}"
        document = parse_json_bytes(self.read(METADATA_FILE), what, ModelPackageError, MAX_FILE_BYTES)
        return parse_metadata(document, what)

    def extract_to(self, target: Path, names=TEXT_FILES) -> None:
        """Copy the named files into the new folder ``target`` (same relative paths; never over a file)."""
        for name in names:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            with open(target / name, "xb") as stream:
                stream.write(self.read(name))


def package_files(folder: Path) -> set[str] | None:
    """The files of a package folder written before manifests existed (None when it is no package)."""
    if not (folder / METADATA_FILE).is_file():
        return None
    models = folder / "models"
    weights = {f"models/{p.name}" for p in models.glob("*.safetensors")} if models.is_dir() else set()
    return {METADATA_FILE, LICENSE_FILE, README_FILE, *weights}


def read_metadata(path: str | Path) -> PackageMetadata:
    """The typed, validated metadata of a package folder or zip, without loading weights (no torch)."""
    with PackageSource(path) as source:
        return source.read_metadata()
