"""Child processes on every platform: no console window on Windows, and a stop that ends the whole tree.

A segmentation child may start workers of its own (data loaders, ``torch`` threads in other processes), so
stopping it means stopping its descendants too. ``psutil`` finds them on every platform when it is installed
(Slicer does not bundle it); without it the child is started as the leader of a new process group (POSIX) and
the group is signalled, or Windows' ``taskkill /T`` ends the tree. None of these functions raises: a process
that has already gone is simply done.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

# Windows creation flags (the subprocess constants exist only on Windows)
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000


def popen_options(platform: str = os.name) -> dict:
    """``subprocess.Popen`` keyword arguments for a child that can be stopped with its tree.

    POSIX: a new session, so the child leads a process group. Windows: a new process group and no console
    window (a GUI application such as Slicer would otherwise flash one for every run).
    """
    if platform == "nt":
        return {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}
    return {"start_new_session": True}


def _psutil():
    try:
        import psutil
    except ImportError:
        return None
    return psutil


def _tree(process: subprocess.Popen, psutil) -> list:
    """The child and its descendants as psutil processes (descendants first), or [] when it is gone."""
    try:
        root = psutil.Process(process.pid)
        return [*root.children(recursive=True), root]
    except psutil.Error:
        return []


def signal_tree(process: subprocess.Popen | None, kill: bool = False, platform: str = os.name) -> None:
    """Ask the child and its descendants to stop (``kill``: force them), without waiting."""
    if process is None:
        return
    if platform == "nt" and process.poll() is not None:
        return  # Windows has no process groups to reach after the child is gone
    psutil = _psutil()
    if psutil is not None:
        for member in _tree(process, psutil):
            try:
                member.kill() if kill else member.terminate()
            except psutil.Error:
                pass
        if platform == "nt":
            return
    if platform == "nt":
        _taskkill(process.pid)  # terminating a Windows process is always forced; /T takes the tree
        return
    try:
        os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)  # the child leads its group
    except (ProcessLookupError, PermissionError, OSError):
        pass


def _taskkill(pid: int) -> None:
    try:
        subprocess.run(
            ["taskkill", "/F", "/T", "/PID", str(pid)],
            capture_output=True,
            check=False,
            creationflags=CREATE_NO_WINDOW,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        pass


def stop_tree(process: subprocess.Popen | None, grace: float = 3.0, platform: str = os.name) -> None:
    """Stop the child and its descendants: ask, wait up to ``grace`` seconds, then force; reaps the child."""
    if process is None:
        return
    psutil = _psutil()
    members = _tree(process, psutil) if psutil is not None else []
    signal_tree(process, kill=False, platform=platform)
    deadline = time.monotonic() + grace
    try:
        process.wait(timeout=max(0.0, grace))
    except subprocess.TimeoutExpired:
        pass
    if psutil is not None and members:
        try:
            _, alive = psutil.wait_procs(members, timeout=max(0.0, deadline - time.monotonic()))
        except psutil.Error:
            alive = members
        for member in alive:
            try:
                member.kill()
            except psutil.Error:
                pass
    signal_tree(process, kill=True, platform=platform)
    try:
        process.wait(timeout=30)
    except (subprocess.TimeoutExpired, OSError):
        pass
