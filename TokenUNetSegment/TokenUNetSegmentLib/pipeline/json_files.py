"""Reading JSON that a user or a package supplies, with limits checked before it is read whole.

A file larger than ``max_bytes`` is refused from its size (and reading stops past the limit, for files that grow
or lie about their size); nesting deeper than ``max_depth`` is refused before parsing (Python's parser would
recurse); ``NaN``/``Infinity``, numbers that overflow to infinity and duplicate keys are refused. Every failure
is the caller's :class:`.errors.TokenUNetError` subclass with one line saying what is wrong.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path

from .errors import InputError, TokenUNetError

MAX_JSON_BYTES = 16 * 2**20  # metadata with a long training record is ~100 KiB; datalists of thousands of cases
MAX_JSON_DEPTH = 64
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def read_json_file(
    path: str | Path,
    what: str | None = None,
    error: type[TokenUNetError] = InputError,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
):
    """The JSON value in the file ``path``; ``what`` names it in messages (default: the path)."""
    path = Path(path)
    what = what or str(path)
    try:
        info = os.stat(path)  # before opening: opening a FIFO would block
        if stat.S_ISDIR(info.st_mode):
            raise error(f"{what} is a folder, not a JSON file")
        if not stat.S_ISREG(info.st_mode):
            from .special_files import not_a_file, special_kind

            raise error(f"{what} {not_a_file(special_kind(path))}")  # a FIFO, a socket, a device: said
        if info.st_size > max_bytes:
            raise error(f"{what} is too large for a JSON file ({info.st_size} bytes; at most {max_bytes})")
        with open(path, "rb") as stream:
            data = stream.read(max_bytes + 1)
    except FileNotFoundError:
        raise error(f"{what} not found") from None
    except OSError as problem:
        raise error(f"cannot read {what}: {problem.strerror or problem}") from None
    return parse_json_bytes(data, what, error, max_bytes, max_depth)


def parse_json_bytes(
    data: bytes | str,
    what: str,
    error: type[TokenUNetError] = InputError,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
):
    """The JSON value in ``data`` (bytes or text), with the limits of :func:`read_json_file`."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise error(f"{what} is too large for a JSON file (more than {max_bytes} bytes)")
    depth = json_depth(raw)
    if depth > max_depth:
        raise error(f"{what} nests {depth} levels deep (at most {max_depth} are accepted)")
    try:
        return json.loads(
            raw,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            object_pairs_hook=_unique_keys,
        )
    except _JSONValueError as problem:
        raise error(f"{what} is not valid JSON: {problem}") from None
    except (ValueError, RecursionError) as problem:  # JSONDecodeError, UnicodeDecodeError, digit limits
        text = " ".join(str(problem).split())[:120]
        raise error(f"{what} is not valid JSON ({text})") from None


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in ``raw`` (brackets inside strings do not count)."""
    brackets = _STRINGS.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


class _JSONValueError(ValueError):
    pass


def _refuse_constant(name: str):
    raise _JSONValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _JSONValueError(f"the number {text[:40]} is out of range")
    return value


def _unique_keys(pairs: list) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise _JSONValueError(f"the key {duplicate[:60]!r} appears twice in one object")
    return result
