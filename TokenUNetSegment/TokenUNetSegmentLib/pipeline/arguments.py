"""Argument types of the command line: numbers checked where they are parsed, so a bad value is one argparse
error (exit code 2, one line) before anything runs, never an internal error deep inside.

Each function returns an ``argparse`` type: ``parser.add_argument("--steps", type=integer(minimum=1))``.
"""

from __future__ import annotations

import argparse
import math

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


def _shown(text) -> str:
    text = str(text)
    return repr(text if len(text) <= 40 else text[:37] + "...")
