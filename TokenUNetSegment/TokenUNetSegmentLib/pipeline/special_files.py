"""Entries of input folders that are no files: named pipes (FIFOs), sockets, devices.

Opening a FIFO for reading blocks until some program writes to it (forever, in a folder of scans), and a device
such as ``/dev/zero`` never ends: readers skip such entries unopened (and say so), and a path given as an input
that is one is refused. Torch-free, standard library only.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def special_kind(path: str | Path) -> str | None:
    """What ``path`` is when it is no regular file nor folder (links followed): ``a named pipe (FIFO)``, ``a socket``,
    ``a character device``, ``a block device``; None for a file, a folder, or a path that cannot be examined."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    return mode_kind(mode)


def mode_kind(mode: int) -> str | None:
    """What a file of ``st_mode`` ``mode`` is when it is a FIFO, a socket or a device (as :func:`special_kind`)."""
    return next((kind for test, kind in KINDS if test(mode)), None)


def not_a_file(kind: str | None) -> str:
    """The words every message uses for a path that is no regular file, after its name: ``is a named pipe (FIFO),
    not a file`` for a ``kind`` from :func:`special_kind`, ``is not a regular file`` when what it is is unknown."""
    return f"is {kind}, not a file" if kind else "is not a regular file"


def open_regular(path: str | Path):
    """``path`` opened for binary reading, or None when it is no regular file: opened without blocking (a FIFO's
    open would wait for a writer), then examined. Raises OSError as ``open`` does."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.close(descriptor)
            return None
        if hasattr(os, "set_blocking"):
            os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def special_entries(folder: str | Path) -> list[tuple[str, str]]:
    """(name, what it is) of the entries of ``folder`` that are no files nor folders (FIFOs, sockets, devices), in
    name order; none opened."""
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if not entry.is_file() and not entry.is_dir():
                kind = special_kind(entry.path)
                if kind is not None:
                    found.append((entry.name, kind))
    return sorted(found)


def special_entries_note(names_and_kinds: list[tuple[str, str]], where: str) -> str:
    """A note on the entries of ``where`` left out because they are no files, e.g. ``left out pipe.nii.gz (a named
    pipe (FIFO), not a file)``."""
    shown = ", ".join(f"{name} ({kind})" for name, kind in names_and_kinds[:5])
    more = f" and {len(names_and_kinds) - 5} more" if len(names_and_kinds) > 5 else ""
    return f"{where}: left out {shown}{more}: no file, never opened"
