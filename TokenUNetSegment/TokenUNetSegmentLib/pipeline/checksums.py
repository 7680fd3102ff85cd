"""SHA256 of files and bytes, and the check that raises a clear error on a mismatch (no torch)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import ModelPackageError


def sha256_bytes(data: bytes) -> str:
    """Hex SHA256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex SHA256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(data: bytes, expected: str, what: str) -> None:
    """Raise :class:`ModelPackageError` when ``data`` does not hash to ``expected``."""
    actual = sha256_bytes(data)
    if actual != expected.lower():
        raise ModelPackageError(
            f"checksum mismatch for {what}: expected SHA256 {expected[:12]}..., got {actual[:12]}...",
            "the file is corrupted or was modified; download or import the package again",
        )
