"""The cases of a ``batch`` run: from paths (a volume file, a DICOM series folder, or a folder of cases) and from a
MONAI datalist, each with the name of its output folder; names that would share a folder are refused up front.

Torch-free: everything here runs before the model is loaded. A folder that holds DICOM files itself is one case (a
series, or a CD export with its DICOMDIR); any other folder is a folder of cases: each volume file in it and each
subfolder holding DICOM files (at any depth) is one case, in name order.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
DATALIST_SECTIONS = ("training", "validation", "testing", "test")
BATCH_FILE = "batch.json"


@dataclass(frozen=True)
class BatchCase:
    """One case: its ``name`` (the output folder's), its input paths (one per channel, or one 4D image whose
    volumes ``channels`` names) and where it came from, for messages."""

    name: str
    inputs: tuple[str, ...]
    source: str
    channels: tuple[str, ...] | None = None


def volume_stem(path: str | Path) -> str | None:
    """A volume file's name without its extension (``ct.nii.gz`` -> ``ct``); None for other files."""
    name = Path(path).name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def is_dicom_file(path: Path) -> bool:
    from .readers.dicom_meta import dicom_file_class

    return path.suffix.lower() == ".dcm" or dicom_file_class(path) is not None


def holds_dicom(folder: Path, anywhere: bool = False) -> bool:
    """Whether ``folder`` holds a DICOM file itself (``anywhere``: or in any of its subfolders)."""
    for parent, folders, files in os.walk(folder):
        folders.sort()
        if any(is_dicom_file(Path(parent) / name) for name in sorted(files)):
            return True
        if not anywhere:
            return False
    return False


def cases_from_paths(paths: Iterable[str | Path]) -> tuple[list[BatchCase], list[str]]:
    """The cases the ``CASE`` arguments name, and notes about what a folder of cases held that is no case."""
    cases: list[BatchCase] = []
    notes: list[str] = []
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            raise InputError(f"the case {given} does not exist", "give volume files, DICOM folders or folders of cases")
        if path.is_dir() and not holds_dicom(path):
            found, left_out = cases_in_folder(path)
            if not found:
                inner = Counter(file.name for file in _inner_volumes(path)).most_common(1)  # e.g. s0001/ct.nii.gz
                raise InputError(
                    f"the folder {given} holds no case (no NIfTI, NRRD or MetaImage file, no DICOM subfolder)",
                    f"its subfolders hold volume files: give them as cases, e.g. {Path(given) / '*' / inner[0][0]}"
                    if inner
                    else "give the folder that holds the cases, or the cases themselves",
                )
            cases += found
            if left_out:
                shown = ", ".join(left_out[:5]) + (", ..." if len(left_out) > 5 else "")
                notes.append(f"{given}: left out {len(left_out)} entries that hold no case ({shown})")
            continue
        cases.append(BatchCase(_case_name(path), (str(path.resolve()),), str(given)))
    return _named_apart(cases), notes


def _inner_volumes(folder: Path) -> list[Path]:
    """The volume files one level down (``folder/<case>/ct.nii.gz``, as one folder per case lays them out)."""
    found = []
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.is_dir() and not entry.name.startswith("."):
            found += [file for file in sorted(entry.iterdir()) if file.is_file() and volume_stem(file) is not None]
    return found


def _named_apart(cases: list[BatchCase]) -> list[BatchCase]:
    """Files that share a name (``s0001/ct.nii.gz``, ``s0002/ct.nii.gz``, one folder per case) named by their
    folders instead (``s0001``, ``s0002``), then by both (``s0001_ct``) where folders share names too; names that
    still collide are left to :func:`check_case_names`."""
    for naming in (lambda file: file.parent.name, lambda file: f"{file.parent.name}_{volume_stem(file) or file.stem}"):
        counts: dict[str, int] = {}
        for case in cases:
            counts[case.name.casefold()] = counts.get(case.name.casefold(), 0) + 1
        cases = [
            BatchCase(naming(Path(case.inputs[0])), case.inputs, case.source, case.channels)
            if counts[case.name.casefold()] > 1 and Path(case.inputs[0]).is_file()
            else case
            for case in cases
        ]
    return cases


def cases_in_folder(folder: Path) -> tuple[list[BatchCase], list[str]]:
    """A folder of cases: its volume files and its subfolders holding DICOM, in name order; and the names of the
    other entries (left out)."""
    cases, left_out = [], []
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and volume_stem(entry) is not None:
            cases.append(BatchCase(volume_stem(entry), (str(entry.resolve()),), str(entry)))
        elif entry.is_dir() and holds_dicom(entry, anywhere=True):
            cases.append(BatchCase(entry.name, (str(entry.resolve()),), str(entry)))
        else:
            left_out.append(entry.name)
    return cases, left_out


def _case_name(path: Path) -> str:
    """A case's output folder name: a volume file's name without extension, a DICOM folder's name, a DICOM file's
    folder's name."""
    if path.is_dir():
        return path.resolve().name
    stem = volume_stem(path)
    if stem is not None:
        return stem
    if is_dicom_file(path):
        return path.resolve().parent.name
    return path.stem


def _entry_name(files: Sequence[Path]) -> str:
    """A datalist entry's case name: its file's, or what its channel files' names share up to a separator
    (``BraTS_001_t1.nii.gz``, ``BraTS_001_flair.nii.gz`` -> ``BraTS_001``; nnU-Net's ``case_0000``, ``case_0001``
    -> ``case``), else the first file's."""
    names = [_case_name(file) for file in files]
    if len(names) == 1:
        return names[0]
    shared = os.path.commonprefix(names)
    if shared not in names:  # cut back to the last separator: "one_t" of one_t1 and one_t2 is "one"
        shared = shared[: max(shared.rfind(mark) for mark in "_-. ") + 1] if any(m in shared for m in "_-. ") else ""
    return shared.rstrip("_-. ") or names[0]


def cases_from_datalist(path: str | Path, section: str | None = None) -> list[BatchCase]:
    """The cases of a MONAI datalist's ``section`` (default: its only list of cases): entries with ``"image"`` (a
    path, or a list of channel paths; a 4D image's volumes named by ``"channels"``), or plain paths as in a
    Decathlon ``dataset.json``'s ``"test"`` list; ``"label"`` is ignored. Relative paths start at its
    ``"dataroot"``, else its folder; a case is named by its ``"name"``, else by its first image."""
    from .json_files import read_json_file
    from .training.data import datalist_root

    path = Path(path).expanduser()
    data = read_json_file(path, f"the datalist {path}")
    if not isinstance(data, dict):
        raise InputError(f"the datalist {path} is not a JSON object", "see the README for the datalist format")
    lists = [key for key, value in data.items() if isinstance(value, list) and key not in ("labels",)]
    if section is None:
        known = [key for key in lists if key in DATALIST_SECTIONS] or lists
        if len(known) != 1:
            raise InputError(
                f"the datalist {path.name} has {'no list of cases' if not known else 'several: ' + ', '.join(known)}",
                "choose one with --section" if known else "see the README for the datalist format",
            )
        section = known[0]
    elif section not in lists:
        raise InputError(
            f"the datalist {path.name} has no list '{section}'", f"its lists: {', '.join(lists) or 'none'}"
        )
    root = datalist_root(path, data)
    cases = []
    for index, entry in enumerate(data[section]):
        where = f"{path.name} {section}[{index}]"
        images = entry.get("image") if isinstance(entry, dict) else entry
        images = images if isinstance(images, list) else [images]
        if not images or not all(isinstance(image, str) and image for image in images):
            raise InputError(f"{where}: 'image' must be a file path or a list of them (one per channel)")
        files = [str((root / image).resolve()) for image in images]
        for file in files:
            if not Path(file).exists():
                raise InputError(f"{where}: file not found: {file}", "fix the path, or its 'dataroot'")
        channels = entry.get("channels") if isinstance(entry, dict) else None
        if channels is not None and not (isinstance(channels, list) and all(isinstance(c, str) for c in channels)):
            raise InputError(f"{where}: 'channels' names the volumes of one 4D image, as a list of names")
        name = entry.get("name") if isinstance(entry, dict) else None
        name = name if isinstance(name, str) and name else _entry_name([Path(file) for file in files])
        cases.append(BatchCase(name, tuple(files), where, tuple(channels) if channels else None))
    if not cases:
        raise InputError(f"the datalist's '{section}' list is empty")
    return cases


def check_case_names(cases: Sequence[BatchCase], root: Path) -> None:
    """Refuse names that are no plain folder name, and two cases that would write the same folder (compared
    without case, as macOS's and Windows' file systems do)."""
    seen: dict[str, BatchCase] = {}
    for case in cases:
        name = case.name
        if name in ("", ".", "..") or name.startswith(".") or "/" in name or "\\" in name or name == BATCH_FILE:
            raise InputError(
                f"the case {case.source} would be written to a folder named {name!r}",
                "rename it (or give it a 'name' in the datalist)",
            )
        other = seen.get(name.casefold())
        if other is not None:
            raise InputError(
                f"two cases would both be written to {root / name}: {other.source} and {case.source}",
                "rename one (or give datalist entries distinct 'name's), or run them in batches with other --out",
            )
        seen[name.casefold()] = case
