"""Small real file systems for fault tests: a tmpfs of a given size, optionally read-only (root on Linux)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys

import pytest

LINUX_MOUNT = sys.platform.startswith("linux") and shutil.which("mount") is not None


@contextlib.contextmanager
def _mounted(path, arguments: list, what: str):
    """``mount *arguments path`` on a new folder ``path``, unmounted afterwards; the test is skipped where it cannot
    be mounted (root on Linux)."""
    path.mkdir()
    done = subprocess.run(["mount", *arguments, str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount {what} here ({done.stderr.strip() or 'mount failed'}); needs root on Linux")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def tmpfs(path, size="1m", read_only=False):
    """A small tmpfs at ``path`` (a context manager; root only)."""
    options = f"size={size}" + (",ro" if read_only else "")
    return _mounted(path, ["-t", "tmpfs", "-o", options, "tmpfs"], "a tmpfs")


def bind_mount(source, target):
    """``source`` bind-mounted at ``target`` (a context manager; one file system: ``os.path.ismount`` cannot tell)."""
    return _mounted(target, ["--bind", str(source)], "a bind mount")
