"""All-or-nothing output folders: a run writes a staging folder beside its destination and swaps it into place.

The destination holds the previous complete result or the new complete one, never a mix:

1. :meth:`OutputFolder.open` (before any computation) checks the destination (a folder or creatable, not a file,
   not inside a protected folder such as the model cache), takes its lock (:mod:`.locks`), recovers what a
   crashed run left beside it, and creates the staging folder ``.<name>.tokenunet-staging-<pid>-<token>`` in the
   same parent (so the same file system, where renames are atomic).
2. The run writes into :attr:`OutputFolder.staging`; :meth:`OutputFolder.writing` turns a full disk or an
   unwritable file into one :class:`.errors.OutputError` line.
3. :meth:`OutputFolder.commit` writes the manifest ``.tokenunet-manifest.json`` (every file the run wrote, with
   its size and modification time), then swaps: on Linux one ``renameat2(RENAME_EXCHANGE)`` call exchanges the
   two folders atomically; elsewhere the old folder is renamed aside and the new one renamed in (restored on
   failure). Then the user's own files inside the old folder (any file its manifest does not list, or that
   changed since it was written) are moved into the new one, and the old folder's listed files are deleted;
   nothing else is ever deleted. Ctrl-C and SIGTERM wait until the swap is done.

A crash (power loss, ``kill -9``) at any point leaves the destination with the old or the new complete result
(or, between the two renames of the fallback, no destination and a complete old folder beside it); the next run
on the same destination restores or cleans up those leftovers under the lock before it starts. A destination that
holds files no manifest lists (and that is not a result of an older version, see ``legacy_files``) is refused, so
a user's folder is never swapped or deleted wholesale.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import secrets
import shutil
import signal
import stat
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from .cancel_signals import CancelOnSignal, stops_recorded
from .errors import OutputError
from .locks import DestinationLock, hidden_sibling
from .memory import format_size
from .special_files import not_a_file, special_kind

MANIFEST = ".tokenunet-manifest.json"
_KINDS = {"models import": "package"}
"""Commands that write the same kind of folder (the manifest's ``written_by``): each replaces the others' results."""
_WHAT = {
    "segment": "a segmentation",
    "package": "a model package",
    "cka": "a CKA comparison",
    "robustness": "a robustness report",
}
STAGING_TAG = ".tokenunet-staging-"
ASIDE_TAG = ".tokenunet-old-"
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
"""Errors that end a write for want of room (EFBIG: a file over the file system's or the process's size limit)."""


def expand_home(path: str | Path) -> Path:
    """``path`` with a leading ``~`` or ``~user`` that the shell left alone (quoted, from a script or a GUI field) made
    the home folder, as the shell would have; a ``~word`` that names no user stays a plain name, as in the shell
    (``Path.expanduser`` raises RuntimeError there)."""
    return Path(os.path.expanduser(os.fspath(path)))


def refuse_output_over_inputs(out: str | Path, option: str, inputs, reads: str, instead: str) -> None:
    """Raise :class:`.errors.InputError` when the output file ``out`` (``~`` the home folder) is, links to, or names the
    place of a file of ``inputs`` (``(what, path)`` pairs; a path None is skipped; :func:`same_place`: as the file
    system compares names), which the command ``reads``: it would be replaced by its own output (the message:
    ``OPTION NAME is WHAT, which READS (INSTEAD)``)."""
    from .errors import InputError

    out = expand_home(out)
    for what, path in inputs:
        if path is not None and same_place(out, expand_home(path)):
            raise InputError(f"{option} {out.name} is {what}, which {reads}", instead)


def same_place(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file on disk, either of which may not exist yet: the same file where both exist
    (a link, a hard link, the path spelled otherwise, another case on a file system that ignores case); else the same
    name in the same folder, compared as that folder's file system compares names (:func:`names_ignore_case`)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them absent (or unreadable): their names then
        pass
    try:
        if not os.path.samefile(a.parent, b.parent):
            return False
    except OSError:  # a folder absent or unreadable: not the same place
        return False
    return a.name == b.name or (a.name.casefold() == b.name.casefold() and names_ignore_case(a.parent))


def names_ignore_case(folder: Path) -> bool:
    """Whether the file system of ``folder`` takes names that differ only in case for one file (macOS's APFS and HFS+,
    Windows' NTFS, FAT and exFAT as formatted by default, an ext4 folder with casefold): probed, not guessed from the
    system, on the first of its entries with a letter, looked up in the other case (the same entry, where no other
    entry has that name), else on the folder's own name in its parent. False when nothing tells (an empty folder whose
    name has no letter)."""
    folder = Path(os.path.abspath(folder))
    for place, candidates in ((folder, None), (folder.parent, [folder.name])):
        try:
            names = os.listdir(place)
        except OSError:
            continue
        probe = next((name for name in candidates or names if _has_case(name)), None)
        if probe is None:
            continue
        other = probe.swapcase()
        if other in names:  # two entries: names are told apart by case
            return False
        try:
            first, second = os.lstat(place / probe), os.lstat(place / other)
        except OSError:  # the other case names nothing: told apart
            return False
        return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)
    return False


def _has_case(name: str) -> bool:
    """Whether ``name`` has an ASCII letter (whose other case every case-insensitive file system maps to it) and no
    other cased character (whose case mappings file systems disagree on)."""
    return name.isascii() and name.lower() != name.upper()


def resolve_destination(path: str | Path) -> Path:
    """The absolute destination with symbolic links resolved (the folder that is really replaced)."""
    text = os.fspath(path)
    if not text or "\x00" in text:
        raise OutputError(f"invalid output path {text!r}", "give a folder name")
    destination = Path(os.path.realpath(expand_home(text)))
    if destination.name in ("", ".", ".."):
        raise OutputError(f"cannot use {destination} as an output folder", "name a folder inside it")
    _check_lengths(destination)
    return destination


NAME_MAX = 255
"""Bytes in one file name that common file systems take (ext4, XFS, APFS, NTFS in UTF-16 units)."""
PATH_ROOM = 256
"""Bytes kept free below the system's path limit for what a run writes inside or beside its destination."""


def _name_size(name: str) -> int:
    """A name's length as its file system counts it: UTF-16 units on Windows (NTFS), bytes elsewhere."""
    return len(name.encode("utf-16-le", "surrogatepass")) // 2 if os.name == "nt" else len(os.fsencode(name))


def _check_lengths(path: Path) -> None:
    """Refuse a path with a name longer than file systems take, or too long to write inside (before any work).

    Names of folders that exist are taken as they are: their file system took them (a FAT, exFAT or NTFS disk takes
    255 UTF-16 units, up to 765 bytes of UTF-8)."""
    for depth, part in enumerate(path.parts[1:], start=2):
        size = _name_size(part)
        if size > NAME_MAX and not os.path.lexists(Path(*path.parts[:depth])):
            raise OutputError(
                f"the output path has a folder or file name {size} bytes long ({part[:24]}...); file systems take "
                f"{NAME_MAX}",
                "choose a shorter name",
            )
    try:
        limit = os.pathconf("/", "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):  # Windows: long paths are allowed once enabled
        limit = 32767
    size = len(os.fsencode(str(path)))
    if size > limit - PATH_ROOM:
        raise OutputError(
            f"the output path is {size} bytes long; with what is written inside it, it would pass this system's "
            f"limit of {limit}",
            "choose a shorter path",
        )


class OutputFolder:
    """The destination folder of one run, written all at once (a context manager that aborts unless committed).

    Args:
        destination: the folder to (re)place.
        command: the writer's name, recorded in the manifest and the lock.
        reserved: patterns (``fnmatch``, relative POSIX paths) of the files this run may write; a file of the
            user's that matches one refuses the run before it starts instead of being replaced.
        legacy_files: ``legacy_files(folder)`` -> the files of a result written before manifests existed (None
            when the folder is not one); such a folder is taken over with those files as the tool's.
        protected: folders the destination may not be in (e.g. the model cache); ``(path, what)`` pairs.
        holder: the command another run is told holds the folder's lock, where it is not ``command`` (``batch``
            writes ``segment``'s results).
    """

    def __init__(
        self,
        destination: str | Path,
        command: str,
        *,
        reserved: Iterable[str] = (),
        legacy_files: Callable[[Path], set[str] | None] | None = None,
        protected: Iterable[tuple[Path, str]] = (),
        holder: str | None = None,
    ):
        self.destination = resolve_destination(destination)
        self.command = command
        self.reserved = tuple(reserved)
        self.legacy_files = legacy_files
        self.protected = tuple(protected)
        self.staging: Path | None = None
        self.warnings: list[str] = []
        self.committed = False
        self._lock = DestinationLock(self.destination, holder or command)
        self._created: list[Path] = []

    # -- opening ---------------------------------------------------------------------------------------------

    def __enter__(self) -> OutputFolder:
        if self.staging is None:
            self.open()
        return self

    def __exit__(self, kind, error, trace) -> None:
        if not self.committed:
            self.abort()

    def check(self) -> None:
        """What :meth:`open` refuses about the destination as it is now (inside a protected folder, a file, a
        folder of the user's, a file of the user's that the run would replace), without locking it or writing
        anything: for a caller that checks many destinations before it starts (``batch``)."""
        self._check_place()
        try:
            self._check_collisions(self.reserved, patterns=True)  # reads the manifest: refuses a folder of the user's
        except OSError as error:
            raise _os_output_error(error, self.destination) from None

    def open(self) -> Path:
        """Check the destination, lock it, clean up after crashed runs, create the staging folder; returns it."""
        destination = self.destination
        self._check_place()
        self._make_parents()
        self._lock.acquire()
        try:
            self._recover()
            self._owned_files()  # refuses a folder of the user's before anything is computed
            self._check_collisions(self.reserved, patterns=True)
            staging = (
                destination.parent / f"{hidden_sibling(destination, STAGING_TAG)}{os.getpid()}-{secrets.token_hex(4)}"
            )
            staging.mkdir()
            _write_manifest(staging, {"state": "staging", "written_by": self.command})
        except OSError as error:
            self._release()
            raise _os_output_error(error, destination) from None
        except BaseException:
            self._release()
            raise
        self.staging = staging
        return staging

    def _check_place(self) -> None:
        """Refuse a destination inside a protected folder, or one that is a file."""
        self._check_protected()
        if self.destination.exists() and not self.destination.is_dir():
            raise OutputError(f"the output path {self.destination} is a file, not a folder", "choose a folder")
        if is_mount_point(self.destination):  # its staging folder would be on another file system than it
            raise OutputError(
                f"the output folder {self.destination} is a mount point (a disk, share or bind mount): a result "
                "cannot be renamed into its place there",
                f"name a folder inside it, e.g. {self.destination / 'tokenunet'}",
            )

    def _check_protected(self) -> None:
        for folder, what in self.protected:
            try:
                inside = self.destination == Path(os.path.realpath(folder)) or self.destination.is_relative_to(
                    os.path.realpath(folder)
                )
            except (OSError, ValueError):
                inside = False
            if inside:
                raise OutputError(f"the output folder {self.destination} is inside {what}", "choose another folder")

    def _make_parents(self) -> None:
        missing = []
        parent = self.destination.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        if not parent.is_dir():
            raise OutputError(f"cannot create {self.destination}: {parent} is a file", "choose another folder")
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            except OSError as error:
                self._remove_created()
                raise _os_output_error(error, self.destination) from None
            self._created.append(folder)
        if not os.access(self.destination.parent, os.W_OK | os.X_OK):
            self._remove_created()
            raise OutputError(  # the output is made beside its folder, then moved in: the parent must be writable
                f"cannot write in {self.destination.parent}: {_why_not_writable(self.destination.parent)}",
                "choose a folder you can write to",
            )

    def check_space(self, expected_bytes: int) -> None:
        """Refuse (before computing) when the destination's disk has less free space than ``expected_bytes``."""
        check_free_space(self.destination.parent, expected_bytes)

    # -- writing ---------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def writing(self):
        """Turn failures while files are written into the staging folder into one-line :class:`OutputError`."""
        try:
            yield self.staging
        except OutputError:
            raise
        except OSError as error:
            raise _os_output_error(error, self.destination) from None
        except RuntimeError as error:  # SimpleITK's writers report a full disk as a long RuntimeError
            if _disk_nearly_full(self.destination.parent):
                raise _os_output_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), self.destination) from None
            first = " ".join(str(error).split())[:160]
            if "itk::" in first or "ImageFileWriter" in first or "Could not create" in first:
                raise OutputError(f"cannot write the output in {self.destination}: {first}") from None
            raise

    # -- committing ------------------------------------------------------------------------------------------

    def commit(self) -> Path:
        """Put the staging folder in place of the destination (all at once); returns the destination."""
        if self.staging is None or self.committed:
            raise OutputError("the output folder was not opened (or was already committed)")
        destination, staging = self.destination, self.staging
        try:
            with self.writing():
                files = _record(staging)
                _sync_files(staging, files)
                _write_manifest(staging, {"state": "complete", "written_by": self.command, "files": files})
            with _deferred_signals(self.warnings):
                old_files = self._owned_files() if destination.exists() else None
                new_names = set(files)
                self._check_collisions(new_names, patterns=False, owned=old_files)
                here = _working_folder_in(destination)
                permissions = _permissions_of(destination) if old_files is not None else None
                old = self._swap(staging, old_files, permissions)
                self.committed = True
                self.staging = None
                if old is not None:
                    self._finish_old(old, set(old_files or {}), destination)
                    _give_permissions(destination, permissions)
                if here is not None:
                    self._follow_working_folder(here)
        except OSError as error:
            raise _os_output_error(error, destination) from None
        finally:
            if not self.committed:
                self.abort()
            else:
                self._release()
        return destination

    def abort(self) -> None:
        """Remove the staging folder (every file in it is this run's) and the lock; the destination is untouched."""
        if self.committed:
            return
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        self._release()
        self._remove_created()

    def _release(self) -> None:
        self._lock.release()

    def _remove_created(self) -> None:
        for folder in reversed(self._created):
            try:
                folder.rmdir()
            except OSError:
                break
        self._created = []

    def _swap(self, staging: Path, old_files: dict | None, permissions: tuple[int, int] | None) -> Path | None:
        destination = self.destination
        if old_files is None:
            os.rename(staging, destination)
            _sync_dir(destination.parent)
            return None
        had_manifest = os.path.lexists(destination / MANIFEST)
        _give_permissions(staging, permissions, owner_full=True)
        _write_manifest(destination, {"state": "complete", "written_by": self.command, "files": old_files})
        try:
            if _exchange(staging, destination):
                _sync_dir(destination.parent)
                return staging
            aside = _sibling(destination, ASIDE_TAG)
            os.rename(destination, aside)
            try:
                os.rename(staging, destination)
            except BaseException:
                os.rename(aside, destination)
                raise
        except BaseException:  # the destination could not be replaced (busy): it keeps what it had, no manifest added
            if not had_manifest:
                with contextlib.suppress(OSError):
                    os.unlink(destination / MANIFEST)
            raise
        _sync_dir(destination.parent)
        return aside

    def _follow_working_folder(self, here: str) -> None:
        """The result replaced the folder this process works in (``--out .``): work in the new one, and tell the user,
        whose terminal still shows the old, deleted folder (before: ``ls`` showed nothing, and the same command run
        again was refused because its folder no longer existed)."""
        with contextlib.suppress(OSError):
            os.chdir(here)
        again = "cd ." if Path(here) == self.destination else f"cd {self.destination}"
        self.warnings.append(
            f"the result replaced the folder you are in ({self.destination}); a terminal still shows the old one: "
            f"type {again} to see the new files"
        )

    def _finish_old(self, old: Path, owned: set[str], destination: Path) -> None:
        """Move the user's files from the replaced folder into the new one, then delete the old listed files.

        The new result is in place by now: a file of the user's that cannot be moved (a read-only or immutable
        folder) is a warning, and the old folder keeps its manifest so that the next run on the destination tries
        again (:meth:`_recover`)."""
        try:
            _carry_foreign(old, destination, owned, self.warnings)
        except OSError as error:
            self.warnings.append(
                f"the new result is in place, but files of yours stay in {old}: cannot move "
                f"{error.filename or 'one of them'}: {error.strerror or error} (the next run there tries again)"
            )
            _delete_listed(old, owned, keep_manifest=True)
            return
        leftover = _delete_listed(old, owned)
        if leftover:
            self.warnings.append(f"kept {old}: it still holds {leftover[0]} (not written by TokenUNet)")

    # -- what the destination holds --------------------------------------------------------------------------

    def _owned_files(self) -> dict:
        """The destination's files that this tool wrote and that are unchanged, with their records.

        Raises :class:`OutputError` for a non-empty folder that is no result of this tool.
        """
        destination = self.destination
        if not destination.is_dir():
            return {}
        manifest = _read_manifest(destination)
        if manifest is None:
            entries = [entry for entry in os.listdir(destination)]
            if not entries:
                return {}
            legacy = self.legacy_files(destination) if self.legacy_files else None
            if legacy is None:
                _refuse_a_batch_root(destination)
                example = sorted(entries)[0]
                raise OutputError(
                    f"the output folder {destination} already holds files that TokenUNet did not write (e.g. "
                    f"{example[:60]!r})",
                    "choose a new or empty folder",
                )
            return {name: None for name in legacy if _is_plain_file(destination, name)}
        writer = manifest.get("written_by")
        theirs, ours = _KINDS.get(writer, writer), _KINDS.get(self.command, self.command)
        if isinstance(writer, str) and theirs != ours:
            what = result_held(destination)
            raise OutputError(  # a result of another command is never replaced, nor its files deleted
                f"the output folder {destination} holds {what}, not {_WHAT.get(ours, 'a result of ' + repr(ours))}",
                "choose another folder",
            )
        listed = manifest.get("files") or {}
        return {
            name: record
            for name, record in listed.items()
            if _safe_relative(name) and _is_plain_file(destination, name) and _unchanged(destination, name, record)
        }

    def _check_collisions(self, names: Iterable[str], patterns: bool, owned: dict | None = None) -> None:
        """Refuse when a file of the user's in the destination would be replaced by one of ``names``."""
        destination = self.destination
        if not destination.is_dir():
            return
        owned = self._owned_files() if owned is None else owned
        names = tuple(names)
        folders = {str(parent) for name in names for parent in PurePosixPath(name).parents if str(parent) != "."}
        for relative in _files(destination):  # files and links, never real folders
            if relative in owned or relative == MANIFEST:
                continue
            # the entry itself, or a folder it is in, where the run writes a file; or a file or link where it makes
            # a folder
            places = [relative, *(str(parent) for parent in PurePosixPath(relative).parents if str(parent) != ".")]
            if patterns:
                hit = any(fnmatch.fnmatchcase(place, pattern) for place in places for pattern in names) or any(
                    fnmatch.fnmatchcase(relative, folder) for folder in folders
                )
            else:
                hit = any(place in names for place in places) or relative in folders
            if hit:
                raise OutputError(
                    f"{destination / relative} was not written by TokenUNet (or was changed since) and this run "
                    "would replace it",
                    "move it away, or choose another folder",
                )

    # -- recovery after a crash ------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Finish or undo what a run that died left beside the destination (the lock is held)."""
        destination, parent = self.destination, self.destination.parent
        prefixes = (hidden_sibling(destination, STAGING_TAG), hidden_sibling(destination, ASIDE_TAG))
        leftovers = sorted(
            (parent / name for name in os.listdir(parent) if name.startswith(prefixes)),
            key=lambda path: ASIDE_TAG not in path.name,  # an old folder set aside comes first
        )
        for folder in leftovers:
            if folder.is_symlink() or not folder.is_dir():
                continue
            manifest = _read_manifest(folder)
            if manifest is None:
                try:
                    folder.rmdir()  # created, but the run died before its manifest
                except OSError:
                    self.warnings.append(f"left {folder} alone: it has no manifest")
                continue
            if manifest.get("state") != "complete":
                shutil.rmtree(folder, ignore_errors=True)  # an unfinished staging folder: all the run's own
                continue
            owned = {
                name
                for name, record in (manifest.get("files") or {}).items()
                if _safe_relative(name) and _is_plain_file(folder, name) and _unchanged(folder, name, record)
            }
            if not destination.exists():
                os.rename(folder, destination)  # the crash came between the two renames: put it back
                continue
            self._finish_old(folder, owned, destination)


# -- helpers -------------------------------------------------------------------------------------------------


def _permissions_of(folder: Path) -> tuple[int, int] | None:
    """The group and mode of ``folder`` (None where there are none to keep: absent, or Windows)."""
    if os.name == "nt":
        return None
    try:
        info = os.stat(folder)
    except OSError:
        return None
    return info.st_gid, stat.S_IMODE(info.st_mode)


def _give_permissions(folder: Path, permissions: tuple[int, int] | None, owner_full: bool = False) -> None:
    """Give ``folder`` (a new result) the group and mode of the folder it replaces: a user's ``chmod 700`` (patient
    data kept private) or a lab's ``chmod 2770`` must not become the default 755. ``owner_full``: the owner keeps
    full access until the swap is finished. A group the user is not in is left as it is."""
    if permissions is None:
        return
    group, mode = permissions
    with contextlib.suppress(OSError):
        if os.stat(folder).st_gid != group:
            os.chown(folder, -1, group)
    with contextlib.suppress(OSError):
        os.chmod(folder, mode | (stat.S_IRWXU if owner_full else 0))


def _working_folder_in(destination: Path) -> str | None:
    """This process's working folder when it is ``destination`` or inside it (the swap replaces it), else None."""
    try:
        here = os.getcwd()
    except OSError:
        return None
    return here if Path(here) == destination or Path(here).is_relative_to(destination) else None


def is_mount_point(path: Path) -> bool:
    """Whether ``path`` is where a file system is mounted, bind mounts of a folder of the same file system included
    (``os.path.ismount`` compares devices, so it misses those; Linux lists every mount in /proc/self/mountinfo)."""
    if not os.path.isdir(path):
        return False
    if os.path.ismount(path):
        return True
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as stream:
            text = stream.read(16 * 2**20)
    except OSError:  # not Linux
        return False
    return os.fspath(path) in _mount_points(text)


def _mount_points(text: str) -> set[str]:
    """The mount points of /proc/self/mountinfo (its fifth field, with spaces, tabs, newlines and backslashes as
    octal escapes)."""
    import re

    points = set()
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) > 4:
            points.add(re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), fields[4]))
    return points


def earlier_result(required: Iterable[str], optional: Iterable[str] = ()) -> Callable[[Path], set[str] | None]:
    """``legacy_files`` for :class:`OutputFolder`: a folder holding the ``required`` files, perhaps some ``optional``
    ones and nothing else is a result written before manifests existed (its files are the tool's)."""
    required, allowed = set(required), set(required) | set(optional)

    def files(folder: Path) -> set[str] | None:
        names = {path.name for path in folder.iterdir()}
        plain = {name for name in names if (folder / name).is_file()}
        return names if required <= plain and names <= allowed and names == plain else None

    return files


def complete_result(folder: str | Path) -> bool:
    """Whether ``folder`` holds a complete result of this tool: a committed manifest whose every file is there,
    unchanged since it was written."""
    folder = Path(folder)
    manifest = _read_manifest(folder)
    if manifest is None or manifest.get("state") != "complete" or not manifest.get("files"):
        return False
    return all(
        _safe_relative(name) and _is_plain_file(folder, name) and _unchanged(folder, name, record)
        for name, record in manifest["files"].items()
    )


def remove_listed_files(
    folder: str | Path,
    command: str,
    legacy_files: Callable[[Path], set[str] | None] | None = None,
    first: Iterable[str] = (),
) -> list[str]:
    """Delete what the tool wrote in ``folder`` (the files its manifest lists and that are unchanged, or, without a
    manifest, ``legacy_files(folder)``), ``first`` ones first, then the folders left empty, under the folder's lock.

    Returns the entries that remain (the user's); :class:`OutputError` for a folder the tool did not write.
    """
    folder = Path(os.path.abspath(folder))
    with DestinationLock(folder, command):
        manifest = _read_manifest(folder)
        if manifest is None:
            owned = legacy_files(folder) if legacy_files else None
            if owned is None:
                raise OutputError(f"{folder} was not written by TokenUNet", "delete it yourself if you want it gone")
        else:
            owned = {
                name
                for name, record in (manifest.get("files") or {}).items()
                if _safe_relative(name) and _is_plain_file(folder, name) and _unchanged(folder, name, record)
            }
        for name in first:
            if name in owned and _is_plain_file(folder, name):
                os.unlink(folder / name)
        return _delete_listed(folder, owned)


def write_file_atomically(path: str | Path, data: bytes | str | Callable) -> Path:
    """Write one output file all at once: a hidden temporary file beside it, synced, then renamed over it.

    ``data`` is bytes, text (UTF-8) or a function that writes into the binary stream it is given.
    """
    path = resolve_destination(path)
    check_file_destination(path, replace=True)  # whether to replace a file there: decided by the caller
    temporary = _sibling(path, STAGING_TAG)
    missing = [folder for folder in path.parents if not os.path.lexists(folder)]  # made here, removed on failure
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "xb") as stream:
            if path.is_file():
                os.chmod(temporary, stat.S_IMODE(path.stat().st_mode))  # keep the replaced file's permissions
            if callable(data):
                data(stream)
            else:
                stream.write(data.encode("utf-8") if isinstance(data, str) else data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        with contextlib.suppress(OSError):
            for folder in missing:  # deepest first; stops at one that holds something
                folder.rmdir()
        if isinstance(error, OSError):
            raise _os_output_error(error, path) from None
        if isinstance(error, RuntimeError) and _disk_nearly_full(path.parent):  # a writer that hides the OSError
            raise _os_output_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path) from None
        raise
    return path


def result_held(folder: Path) -> str | None:
    """What result of a TokenUNet command ``folder`` holds, by its manifest ("a segmentation", ...); None for none."""
    manifest = _read_manifest(folder) if folder.is_dir() else None
    writer = manifest.get("written_by") if manifest else None
    if not isinstance(writer, str):
        return None
    return _WHAT.get(_KINDS.get(writer, writer), f"the output of {writer[:40]!r}")


def _refuse_a_batch_root(folder: Path) -> None:
    """Refuse, naming it, the root of a ``batch`` (its ``batch.json`` and one folder per case; no manifest).

    Raises:
        OutputError: when ``folder`` holds a batch's ``batch.json``.
    """
    from .batch_cases import BATCH_FILE

    if not (folder / BATCH_FILE).is_file():
        return
    from .batch_command import BATCH_MARK  # the command line's module: imported only where a batch.json is

    if json_with_keys(BATCH_MARK)(folder / BATCH_FILE):
        raise OutputError(
            f"the output folder {folder} holds the results of a batch ({BATCH_FILE})", "choose another folder"
        )


def check_free_space(folder: str | Path, expected_bytes: float, what: str = "the output") -> None:
    """Refuse (before computing) when ``folder``'s disk has less free space than ``expected_bytes``."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if expected_bytes > free:
        raise OutputError(
            f"{what} needs about {format_size(expected_bytes)} but {folder} has {format_size(free)} free",
            "free some disk space or choose another folder",
        )


def check_file_destination(path: str | Path, replace: bool | Callable[[Path], bool] = False) -> Path:
    """Check (before computing) that a single output file can be written at ``path``; returns it resolved.

    An existing file is replaced only with the user's say: ``replace`` True (``--overwrite``, or an API caller's
    explicit path), or a predicate that recognises the file as this command's own earlier output (e.g.
    :func:`json_with_keys`); anything else there (a config the user mistyped as the output) is refused.
    """
    path = resolve_destination(path)
    if path.is_dir():
        raise OutputError(f"the output file {path} is a folder", "give a file name")
    if path.exists() and not path.is_file():
        raise OutputError(f"the output path {path} {not_a_file(special_kind(path))}", "give a file name")
    if path.exists() and not (replace is True or (callable(replace) and replace(path))):
        raise OutputError(
            f"{path} already exists and is not an earlier output of this command",
            "choose another file name, or add --overwrite to replace it",
        )
    parent = path.parent
    while not parent.exists():  # missing folders are created when the file is written
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot create {path}: {parent} is a file", "choose another place")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OutputError(f"cannot write {path}: {_why_not_writable(parent)}", "choose a place you can write to")
    return path


def json_with_keys(*keys: str) -> Callable[[Path], bool]:
    """A predicate for :func:`check_file_destination`: the file holds a JSON object with all of ``keys``."""

    def written_here(path: Path) -> bool:
        from .errors import TokenUNetError
        from .json_files import read_json_file

        try:
            value = read_json_file(path)
        except TokenUNetError:
            return False
        return isinstance(value, dict) and all(key in value for key in keys)

    return written_here


def _sibling(destination: Path, tag: str) -> Path:
    """A new hidden name beside ``destination`` for this process (staging, set aside, temporary file)."""
    return destination.parent / f"{hidden_sibling(destination, tag)}{os.getpid()}-{secrets.token_hex(4)}"


def _os_output_error(error: OSError, destination: Path) -> OutputError:
    if error.errno == errno.EFBIG:
        return OutputError(
            f"a file of the output {destination} is larger than its file system or this process's file-size limit "
            "allows; nothing was changed there",
            "choose a folder on another disk (FAT32 takes files up to 4 GiB), or raise the limit (ulimit -f)",
        )
    if error.errno in _DISK_FULL:
        try:
            free = format_size(shutil.disk_usage(destination.parent).free)
        except OSError:
            free = "unknown"
        return OutputError(
            f"the disk of {destination} is full ({free} free); nothing was changed there",
            "free some disk space or choose another folder",
        )
    reason = error.strerror or str(error)
    where = f" ({error.filename})" if getattr(error, "filename", None) else ""
    hint = {
        errno.EACCES: "choose a folder you can write to",
        errno.EPERM: "choose a folder you can write to",
        errno.EROFS: "the file system is read-only: choose another folder",
        errno.ENAMETOOLONG: "choose a shorter path",
    }.get(error.errno, "choose another folder")
    return OutputError(f"cannot write the output {destination}: {reason}{where}", hint)


def _why_not_writable(folder: Path) -> str:
    try:
        os.stat(folder)
    except OSError as error:  # e.g. a loop of links: "Too many levels of symbolic links"
        return (error.strerror or str(error)).lower()
    try:
        if os.statvfs(folder).f_flag & getattr(os, "ST_RDONLY", 1):
            return "its file system is read-only"
    except (OSError, AttributeError):
        pass
    return "permission denied"


def _disk_nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


def _files(folder: Path) -> list[str]:
    """Relative POSIX paths of every non-directory entry below ``folder`` (symbolic links not followed)."""
    found = []
    for root, dirs, names in os.walk(folder):
        base = Path(root).relative_to(folder)
        for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            found.append((base / name).as_posix())
    return sorted(found)


def _record(folder: Path) -> dict:
    """{relative path: [size, mtime_ns]} of the files in a staging folder (no links or special files allowed)."""
    records = {}
    for relative in _files(folder):
        if relative == MANIFEST:
            continue
        info = os.lstat(folder / relative)
        if not stat.S_ISREG(info.st_mode):
            raise OutputError(f"the run wrote something other than a plain file: {relative}")
        records[relative] = [info.st_size, info.st_mtime_ns]
    return records


def _sync_files(folder: Path, files: dict) -> None:
    if os.name == "nt":
        return
    for relative in files:
        descriptor = os.open(folder / relative, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    _sync_dir(folder)


def _sync_dir(folder: Path) -> None:
    if os.name == "nt":
        return
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _write_manifest(folder: Path, content: dict) -> None:
    temporary = folder / f"{MANIFEST}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)  # a crash's leftover, or a link: never written through
    try:
        with open(temporary, "x", encoding="utf-8") as stream:
            json.dump({"version": 1, **content}, stream, indent=1)
            stream.flush()
            if os.name != "nt":
                os.fsync(stream.fileno())
        os.replace(temporary, folder / MANIFEST)
    except BaseException:  # a full disk: no half-written manifest left in the folder (an old result's, the user's)
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 64 * 2**20:
            return None
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(content, dict) or not isinstance(content.get("files", {}), dict):
        return None
    return content


def _safe_relative(name: str) -> bool:
    """A manifest entry that names a file inside its folder (no absolute path, ``..``, drive or backslash)."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name or ":" in name:
        return False
    pure = PurePosixPath(name)
    return not pure.is_absolute() and all(part not in ("", ".", "..") for part in pure.parts)


def _is_plain_file(folder: Path, relative: str) -> bool:
    """Whether ``folder/relative`` is a regular file reached through real folders only (no links on the way)."""
    current = folder
    parts = PurePosixPath(relative).parts
    try:
        for part in parts[:-1]:
            current = current / part
            if not stat.S_ISDIR(os.lstat(current).st_mode):
                return False
        return stat.S_ISREG(os.lstat(current / parts[-1]).st_mode)
    except OSError:
        return False


def _unchanged(folder: Path, relative: str, record) -> bool:
    """Whether a listed file still has the size and modification time it was written with."""
    if record is None:
        return True
    try:
        info = os.lstat(folder / relative)
        return [info.st_size, info.st_mtime_ns] == list(record)
    except (OSError, TypeError):
        return False


def _carry_foreign(old: Path, new: Path, owned: set[str], warnings: list[str], relative: str = "") -> None:
    """Move every entry of ``old`` that is not the tool's into ``new`` (whole folders when they hold none of
    the tool's files); an entry whose name is taken in ``new`` stays where it is, with a warning."""
    source = old / relative if relative else old
    for name in sorted(os.listdir(source)):
        path = f"{relative}/{name}" if relative else name
        if path in owned or path == MANIFEST or path == f"{MANIFEST}.tmp":
            continue
        here, there = source / name, new / path
        is_folder = stat.S_ISDIR(os.lstat(here).st_mode)
        if is_folder and os.path.isdir(there) and not os.path.islink(there):
            _carry_foreign(old, new, owned, warnings, path)  # both have this folder: merge into the new one
            continue
        if is_folder and not os.path.lexists(there) and any(item.startswith(path + "/") for item in owned):
            there.mkdir()
            _carry_foreign(old, new, owned, warnings, path)
            continue
        if os.path.lexists(there):
            warnings.append(f"kept {here}: {there} exists")
            continue
        there.parent.mkdir(parents=True, exist_ok=True)
        os.rename(here, there)


def _delete_listed(folder: Path, owned: set[str], keep_manifest: bool = False) -> list[str]:
    """Delete ``owned`` files of ``folder``, its manifest (unless ``keep_manifest``) and then its empty folders; what
    remains, if anything."""
    for relative in sorted(owned):
        if _is_plain_file(folder, relative):
            with contextlib.suppress(OSError):
                os.unlink(folder / relative)
    for name in () if keep_manifest else (MANIFEST, f"{MANIFEST}.tmp"):
        with contextlib.suppress(OSError):
            os.unlink(folder / name)
    for root, dirs, _ in os.walk(folder, topdown=False):
        for name in dirs:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                with contextlib.suppress(OSError):
                    os.rmdir(path)
    try:
        folder.rmdir()
        return []
    except OSError:
        return _files(folder)[:1] or ["an empty folder"]


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(first: Path, second: Path) -> bool:
    """Swap two folders atomically (Linux ``renameat2``); False where the system or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return False
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = function(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, getattr(errno, "ENOTSUP", errno.EINVAL), errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


@contextlib.contextmanager
def _deferred_signals(warnings: list[str]):
    """Hold Ctrl-C, SIGTERM and a hang-up until the block is done (main thread only; other threads cannot get them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with stops_recorded(lambda received, previous: _handle_after_swap(received, previous, warnings)):
        yield


def _handle_after_swap(received: list[int], previous: dict, warnings: list[str]) -> None:
    """What a stop held while the result was put in place becomes once it is there: no longer a cancel of this run."""
    if not received:
        return
    warnings.append("an interrupt came while the result was put in place; it waited until the swap was done")
    for signum in received:
        handler = previous.get(signum)
        if handler is signal.default_int_handler:
            continue  # the result is complete: a deferred Ctrl-C (or SIGTERM as one) no longer cancels it
        if isinstance(handler, CancelOnSignal):
            handler.request(signum)  # the result is complete; a batch stops before its next case
        elif callable(handler):
            handler(signum, None)
        elif handler == signal.SIG_DFL and signum != signal.SIGINT:
            signal.raise_signal(signum)
