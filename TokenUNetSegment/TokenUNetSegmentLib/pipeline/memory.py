"""Host memory: what is free, the user's limit (``TOKENUNET_MEMORY_LIMIT``) and sizes in words.

Torch-free, so that the file readers can check a header's size against it before reading any voxel.
"""

from __future__ import annotations

import os
import re

from .errors import TokenUNetError

LIMIT_VARIABLE = "TOKENUNET_MEMORY_LIMIT"
UNKNOWN = 1 << 62  # free memory that cannot be measured: do not refuse
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def host_available() -> int:
    """Free host RAM in bytes (``MemAvailable`` on Linux, free pages elsewhere)."""
    try:
        with open("/proc/meminfo") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return UNKNOWN


def parse_size(text: str) -> int:
    """Bytes from ``"8G"``, ``"512M"``, ``"1.5g"``, ``"2GiB"`` or a plain number of bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", str(text).lower())
    if not match:
        raise TokenUNetError(
            f"{LIMIT_VARIABLE}={text!r} is not a size", "use a number of bytes or a size such as 8G or 512M"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def memory_limit() -> tuple[int, str]:
    """(bytes, what it is): the free host memory, or ``TOKENUNET_MEMORY_LIMIT`` when that is smaller."""
    free = host_available()
    configured = os.environ.get(LIMIT_VARIABLE, "").strip()
    if configured:
        limit = parse_size(configured)
        if limit < free:
            return limit, f"the limit {LIMIT_VARIABLE}={configured}"
    return free, "free memory"


def format_size(size: float) -> str:
    """``1.9 GiB``, ``512 MiB``, ``12 KiB``, ``100 B``."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            value = size / scale
            return f"{value:.3g} {unit}" if value < 1000 else f"{value:.0f} {unit}"  # not 1.02e+03 KiB
    return f"{int(size)} B"
