"""A lock file beside a destination, so that two runs never write the same folder or file at once.

The lock is ``.<name>.tokenunet-lock`` next to the destination (the destination itself is swapped, so it cannot
hold its own lock), created atomically (``O_CREAT | O_EXCL``) and holding the owner's pid, host, process start
time and a random token. A lock whose owner died (same host, pid gone or reused by another process) is stale and
is taken over: it is first renamed away, which only one contender can do, then created afresh. A lock held by a
live process, or by a process on another host (which cannot be checked), refuses the run with one line that
names the owner and the lock file.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import time
from pathlib import Path

from .errors import OutputError

LOCK_SUFFIX = ".tokenunet-lock"
_NAME_ROOM = 120  # bytes of a destination's name kept in the names of its hidden siblings
FRESH_SECONDS = 5.0  # an unreadable lock younger than this is being written by its owner


def hidden_sibling(destination: Path, tag: str) -> str:
    """The name of a hidden entry beside ``destination``: ``.<name><tag>``, a long name shortened with a hash (file
    names stop at 255 bytes)."""
    name = destination.name
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) > _NAME_ROOM:
        name = encoded[:60].decode("utf-8", "ignore") + "~" + hashlib.sha1(encoded).hexdigest()[:10]
    return f".{name}{tag}"


def lock_path(destination: str | Path) -> Path:
    """Where the lock of ``destination`` lives (beside it, hidden)."""
    destination = Path(destination)
    return destination.parent / hidden_sibling(destination, LOCK_SUFFIX)


class DestinationLock:
    """Exclusive use of ``destination`` by this run (a context manager; :meth:`acquire` / :meth:`release`).

    Args:
        destination: the folder or file the run writes.
        command: what holds the lock, for the message another run shows (e.g. ``"segment"``).
    """

    def __init__(self, destination: str | Path, command: str = "tokenunet"):
        self.destination = Path(destination)
        self.path = lock_path(self.destination)
        self.command = command
        self.token = secrets.token_hex(8)
        self.held = False

    def __enter__(self) -> DestinationLock:
        self.acquire()
        return self

    def __exit__(self, *_) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, taking over a stale one; :class:`OutputError` when another live run holds it."""
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start": process_start(os.getpid()),
            "token": self.token,
            "command": self.command,
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        for _ in range(5):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and not _stale(holder):
                    raise OutputError(
                        f"{self.destination.name} is in use by another TokenUNet run ({_describe(holder)})",
                        f"wait for it to end; if none is running, delete {self.path.name} beside it",
                    ) from None
                self._take_over()
                continue
            except OSError as error:
                raise OutputError(
                    f"cannot create the lock file {self.path}: {error.strerror or error}",
                    "choose a destination in a folder you can write to",
                ) from None
            try:
                with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
                    json.dump(owner, stream)
            except OSError as error:  # a full disk: no empty lock file left behind
                self.path.unlink(missing_ok=True)
                raise OutputError(
                    f"cannot write the lock file {self.path}: {error.strerror or error}",
                    "free some disk space or choose another folder",
                ) from None
            self.held = True
            return
        raise OutputError(f"cannot lock {self.destination}: other runs keep taking it", "try again")

    def release(self) -> None:
        """Remove the lock if it is still this run's (never another run's)."""
        if not self.held:
            return
        self.held = False
        holder = self._holder()
        if holder is not None and holder.get("token") == self.token:
            try:
                self.path.unlink()
            except OSError:
                pass

    def _holder(self) -> dict | None:
        """The lock's owner record; None when it is unreadable (and old enough to be a crash's leftover)."""
        try:
            text = self.path.read_text(encoding="utf-8")
            holder = json.loads(text)
            if isinstance(holder, dict) and isinstance(holder.get("pid"), int):
                return holder
        except FileNotFoundError:
            return {"pid": -1, "host": "", "gone": True}
        except (OSError, ValueError):
            pass
        try:
            young = time.time() - self.path.stat().st_mtime < FRESH_SECONDS
        except OSError:
            young = False
        return {"pid": 0, "host": "", "writing": True} if young else None

    def _take_over(self) -> None:
        """Move a stale (or vanished) lock out of the way; only one contender's rename can succeed."""
        aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        except OSError as error:
            raise OutputError(f"cannot replace the stale lock {self.path}: {error.strerror or error}") from None
        try:
            aside.unlink()
        except OSError:
            pass


def _stale(holder: dict) -> bool:
    """Whether the lock's owner is certainly gone (same host only; a lock being written is live)."""
    if holder.get("gone"):
        return True
    if holder.get("writing"):
        return False
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder["pid"]
    if not process_alive(pid):
        return True
    start = process_start(pid)
    return start is not None and holder.get("start") is not None and start != holder.get("start")


def _describe(holder: dict) -> str:
    if holder.get("writing"):
        return "a run is starting"
    where = "" if holder.get("host") == socket.gethostname() else f" on {str(holder.get('host'))[:40]}"
    return f"{str(holder.get('command', 'tokenunet'))[:20]}, pid {holder['pid']}{where} since {holder.get('since')}"


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists and is not a zombie."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        import psutil

        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
        except psutil.Error:
            return True
    except ImportError:
        pass
    if os.name == "nt":
        return _windows_process_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def process_start(pid: int):
    """An identifier of the process's start (Linux clock ticks, or psutil's create time); None when unknown."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        pass
    try:
        import psutil

        return round(psutil.Process(pid).create_time(), 2)
    except Exception:  # psutil missing, or the process is gone
        return None


def _windows_process_alive(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() == 5  # access denied: it exists
    try:
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)
