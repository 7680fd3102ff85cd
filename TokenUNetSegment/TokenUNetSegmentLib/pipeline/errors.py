"""Typed errors of the pipeline: a message saying what failed and a hint saying what to do next."""

from __future__ import annotations

import sys


class TokenUNetError(Exception):
    """A user-facing error: ``message`` says what failed, ``hint`` (optional) what to do next.

    The command line prints ``str(error)`` as one line and exits with code 2; the Slicer module shows it
    in a message box. ``restart_required`` asks the caller to restart the application first.
    """

    def __init__(self, message: str, hint: str | None = None, restart_required: bool = False):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.restart_required = restart_required

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InputError(TokenUNetError):
    """An input volume cannot be used (missing file, wrong dimension, bad geometry, bad values)."""


class ModelPackageError(TokenUNetError):
    """A model package or catalog is missing, malformed, tampered with or does not fit its network."""


class UnsafeWeightsError(ModelPackageError):
    """A weights file would execute code when loaded, or is in a format we do not load."""


class OutputError(TokenUNetError):
    """An output cannot be written: the destination is a file, not writable, full, locked by another run, or
    holds files the tool did not write."""


class ArgumentError(TokenUNetError, ValueError):
    """An argument of a pipeline function or command is of the wrong kind or out of range (also a
    ``ValueError``, so callers that caught that keep working)."""


class OutOfMemoryError(TokenUNetError):
    """The run cannot fit in the memory of the chosen device."""


class CancelledError(TokenUNetError):
    """The run was cancelled by the caller."""

    def __init__(self, message: str = "cancelled", hint: str | None = None):
        super().__init__(message, hint)


class MissingDependencyError(TokenUNetError):
    """A third-party package the command needs is not installed in the Python that runs it."""


def missing_dependency(error: BaseException) -> MissingDependencyError | None:
    """The user error for ``error`` when it is a third-party package missing from this Python, else None (a
    module of our own that fails to import is a broken installation: an internal error)."""
    if not isinstance(error, ModuleNotFoundError) or not error.name:
        return None
    package = error.name.partition(".")[0]
    if package == __name__.partition(".")[0]:
        return None
    return MissingDependencyError(
        f"{package} is not installed in {sys.executable}",
        "use the project's .venv/bin/python, which bash scripts/setup-venv.sh sets up",
    )
