"""Memory allocation for processes that run inference: fewer page faults for new large tensors.

The C library serves large blocks with fresh pages from the kernel and hands them back when they are freed,
so every new full-resolution map costs one page fault per 4 KiB page. Measured on the 2-core development CPU
(Linux, glibc; one thread, CPU time of a 32AttnLong forward at 1 x 1 x 128^3 on the channels-last path, 8
forwards): 1.46-1.48 s with 192,000 page faults per forward; with PyTorch's transparent huge pages for
tensors of 2 MiB and more (``THP_MEM_ALLOC_ENABLE``) 1.10-1.18 s and 8,000 faults, the same peak memory.

Keeping freed blocks in glibc's heap instead (raising its mmap and trim thresholds) measured 1.01-1.06 s but
was dropped: peak resident memory grew by 150-250 MB, and a 64 MB tensor allocated and freed in turn grew the
heap by 64 MB each time (PyTorch's aligned allocations do not fit the block just freed).

The command line asks for huge pages before it imports torch (every command: they only change the page
size); Slicer's own process is left as it is. A caller of ``cli.main`` in its own process (a script, Slicer's
console) gets its environment back when the command returns (:func:`environment_kept`): PyTorch reads the variable
once, at its first allocation (a static in c10's CPU allocator), so the tensors of the rest of that process keep the
huge pages, while the caller's later child processes inherit the environment it had.
"""

from __future__ import annotations

import contextlib
import os
import sys

THP_VARIABLE = "THP_MEM_ALLOC_ENABLE"  # read by PyTorch's CPU allocator at its first allocation


def use_huge_pages() -> bool:
    """Ask PyTorch to back tensors of 2 MiB and more with transparent huge pages (Linux); returns whether the
    request can still take effect (it must come before ``torch`` is imported). A user's own setting wins."""
    if not sys.platform.startswith("linux") or "torch" in sys.modules:
        return False
    os.environ.setdefault(THP_VARIABLE, "1")
    return os.environ[THP_VARIABLE] == "1"


@contextlib.contextmanager
def environment_kept():
    """Put the caller's huge-page setting (set, unset) back in ``os.environ`` on leaving, as :func:`use_huge_pages`
    found it: an in-process caller's environment, inherited by its subprocesses, stays as it was."""
    before = os.environ.get(THP_VARIABLE)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(THP_VARIABLE, None)
        else:
            os.environ[THP_VARIABLE] = before
