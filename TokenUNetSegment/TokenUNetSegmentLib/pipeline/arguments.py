"""Arguments checked where they come in: numbers of the command line (each function below returns an ``argparse``
type, so a bad value is one argparse error, exit code 2, before anything runs) and paths given to the Python API
(:func:`as_path`, an :class:`.errors.ArgumentError` for anything else, never a ``TypeError`` from deep inside).

Example: ``parser.add_argument("--steps", type=integer(minimum=1))``.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from .errors import ArgumentError


def as_path(value, what: str = "path") -> Path:
    """``value`` (text or a path-like object) as a :class:`~pathlib.Path`; :class:`ArgumentError` otherwise."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise ArgumentError(f"{what} must be a file or folder path, got {type(value).__name__}")
    if not value or "\x00" in value:
        raise ArgumentError(f"{what} must be a file or folder path, got {value[:40]!r}")
    return Path(value)


MAX_INT = 2**31 - 1  # counts beyond this are typing mistakes (and overflow C integers in torch and NumPy)


def integer(minimum: int | None = None, maximum: int = MAX_INT):
    """An integer in ``[minimum, maximum]``."""

    def parse(text: str) -> int:
        try:
            value = int(str(text).strip(), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{_shown(text)} is not a whole number") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {_shown(text)}")
        return value

    parse.__name__ = "integer"
    return parse


def number(minimum: float | None = None, maximum: float | None = None, below: float | None = None, above=None):
    """A finite number in ``[minimum, maximum]``, optionally strictly ``below``/``above`` a bound."""

    def parse(text: str) -> float:
        try:
            value = float(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{_shown(text)} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {_shown(text)}")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, got {value:g}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:g}, got {value:g}")
        if below is not None and value >= below:
            raise argparse.ArgumentTypeError(f"must be below {below:g}, got {value:g}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"must be above {above:g}, got {value:g}")
        return value

    parse.__name__ = "number"
    return parse


def text(what: str = "a value"):
    """Text that is not empty (``--model "$MODEL"`` with the variable unset must not mean the default model)."""

    def parse(value: str) -> str:
        if not str(value).strip():
            raise argparse.ArgumentTypeError(f"is empty (give {what})")
        return str(value)

    parse.__name__ = "text"
    return parse


def user_path(value: str) -> str:
    """A path of a file the command reads, with a leading ``~`` the shell left alone (the path quoted, or from a script
    or a GUI field) as the home folder (``~user`` too; a ``~word`` naming no user stays a name, as in the shell), as
    :func:`.output_folder.expand_home` takes ``--out``, and as ``--model`` and ``batch``'s CASEs are taken."""
    return os.path.expanduser(str(value))


def user_text_path(what: str):
    """:func:`text` (not empty) that is a path read as :func:`user_path` (``models import PATH``)."""
    check = text(what)

    def parse(value: str) -> str:
        return user_path(check(value))

    parse.__name__ = "path"
    return parse


DEVICE_KINDS = ("auto", "cpu", "cuda", "mps")  # as pipeline.device (which imports torch) accepts them


def device_name(value: str) -> str:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (is it present: checked when the run starts)."""
    name = str(value).strip().lower()
    kind, colon, index = name.partition(":")
    if kind not in DEVICE_KINDS or (colon and not (kind == "cuda" and index.isdigit() and len(index) < 4)):
        raise argparse.ArgumentTypeError(f"unknown device {_shown(value)} (use auto, cpu, cuda, cuda:N or mps)")
    return name


device_name.__name__ = "device"


def _shown(text) -> str:
    text = str(text)
    return repr(text if len(text) <= 40 else text[:37] + "...")


def channel_names(text: str) -> list[str]:
    """``--channels FLAIR,T1,T1c,T2``: the names, in order."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"'{text}' is no comma-separated list of channel names (e.g. FLAIR,T1,T1c,T2)")
    return names
