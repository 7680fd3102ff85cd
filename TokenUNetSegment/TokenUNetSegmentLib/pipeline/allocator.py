"""Memory allocation for processes that run inference: fewer page faults for new large tensors.

The C library serves large blocks with fresh pages from the kernel and hands them back when they are freed,
so every new full-resolution map costs one page fault per 4 KiB page. Measured on the 2-core development CPU
(Linux, glibc; one thread, CPU time of a 32AttnLong forward at 1 x 4 x 128^3 on the channels-last path, 8
forwards): 1.46-1.48 s with 192,000 page faults per forward; with PyTorch's transparent huge pages for large
tensors (``THP_MEM_ALLOC_ENABLE``, 2 MiB pages) 1.10-1.18 s and 8,000 faults, same peak memory; keeping freed
blocks in the heap as well (glibc's mmap and trim thresholds) 1.01-1.03 s and no faults, peak resident memory
+150-250 MB (blocks of different sizes fragment the heap).

The command line asks for huge pages (every command: they only change the page size) and keeps freed blocks
for ``segment`` (a process that runs inference and exits, also behind Slicer's subprocess runs). Neither is
applied to Slicer's own process, whose resident memory would stay at its peak until it quits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys

THP_VARIABLE = "THP_MEM_ALLOC_ENABLE"  # read by PyTorch's CPU allocator at its first allocation
_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
RETAINED_BLOCK_LIMIT = 1 << 30  # blocks up to 1 GiB come from the heap; larger ones are still returned at once
TRIM_THRESHOLD = (1 << 31) - 1  # free memory at the heap's top is returned beyond 2 GiB


def use_huge_pages() -> bool:
    """Ask PyTorch to back tensors of 2 MiB and more with transparent huge pages (Linux); returns whether the
    request can still take effect (it must come before ``torch`` is imported). A user's own setting wins."""
    if not sys.platform.startswith("linux") or "torch" in sys.modules:
        return False
    os.environ.setdefault(THP_VARIABLE, "1")
    return os.environ[THP_VARIABLE] == "1"


def retain_freed_memory() -> bool:
    """Keep freed blocks up to :data:`RETAINED_BLOCK_LIMIT` for reuse (glibc on Linux); returns whether it applied.

    Elsewhere (macOS, Windows, musl) it does nothing and returns False.
    """
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, RETAINED_BLOCK_LIMIT) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def tune_inference_process() -> None:
    """Both of the above, for a process that runs inference and exits (call before importing torch)."""
    use_huge_pages()
    retain_freed_memory()
