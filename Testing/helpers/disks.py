"""Small real file systems for fault tests: a tmpfs of a given size, optionally read-only (root on Linux)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys

import pytest

LINUX_MOUNT = sys.platform.startswith("linux") and shutil.which("mount") is not None


@contextlib.contextmanager
def tmpfs(path, size="1m", read_only=False):
    """A small tmpfs at ``path`` (root only; the test is skipped where it cannot be mounted)."""
    path.mkdir()
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}); needs root on Linux")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def bind_mount(source, target):
    """``source`` bind-mounted at ``target`` (one file system: ``os.path.ismount`` cannot tell); root on Linux."""
    target.mkdir()
    done = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here ({done.stderr.strip() or 'mount failed'}); needs root on Linux")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)
