"""Reading a model package's files, whether it is a folder or a ``.zip`` (optionally with one top folder).

Layout (MONAI-bundle shaped)::

    <package>/configs/metadata.json     MONAI bundle keys + our "tokenunet" section (schema-validated)
    <package>/models/model.safetensors  the weights (SHA256 recorded in the metadata)
    <package>/LICENSE
    <package>/docs/README.md            the model card
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path, PurePosixPath

from .errors import ModelPackageError
from .metadata import PackageMetadata, parse_metadata

METADATA_FILE = "configs/metadata.json"
WEIGHTS_FILE = "models/model.safetensors"
LICENSE_FILE = "LICENSE"
README_FILE = "docs/README.md"
TEXT_FILES = (METADATA_FILE, LICENSE_FILE, README_FILE)


class PackageSource:
    """Read files of a package that is a folder or a zip; refuses zips with absolute or parent paths."""

    def __init__(self, path: str | Path):
        self.path = path = Path(path)
        self.zip = None
        self.prefix = ""
        if path.is_dir():
            return
        if not path.is_file():
            raise ModelPackageError(f"model package not found: {path}")
        if not zipfile.is_zipfile(path):
            raise ModelPackageError(f"{path} is neither a package folder nor a .zip package")
        self.zip = zipfile.ZipFile(path)
        names = self.zip.namelist()
        for name in names:
            pure = PurePosixPath(name)
            if pure.is_absolute() or ".." in pure.parts or "\\" in name:
                raise ModelPackageError(f"{path} contains an unsafe path '{name}'", "the archive is not a package")
        hits = [n for n in names if n == METADATA_FILE or n.endswith("/" + METADATA_FILE)]
        self.prefix = min(hits, key=len)[: -len(METADATA_FILE)] if hits else ""

    def read(self, name: str) -> bytes:
        try:
            if self.zip is None:
                return (self.path / name).read_bytes()
            return self.zip.read(self.prefix + name)
        except (FileNotFoundError, KeyError):
            raise ModelPackageError(f"model package {self.path} lacks {name}") from None

    def read_metadata(self) -> PackageMetadata:
        """The package's typed, validated metadata."""
        try:
            document = json.loads(self.read(METADATA_FILE))
        except json.JSONDecodeError as error:
            raise ModelPackageError(f"{self.path}: {METADATA_FILE} is not valid JSON ({error})") from None
        return parse_metadata(document, f"{self.path}/{METADATA_FILE}")

    def extract_to(self, target: Path, names=TEXT_FILES) -> None:
        """Copy the named files into the folder ``target`` (same relative paths)."""
        for name in names:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(self.read(name))


def read_metadata(path: str | Path) -> PackageMetadata:
    """The typed, validated metadata of a package folder or zip, without loading weights (no torch)."""
    return PackageSource(path).read_metadata()
