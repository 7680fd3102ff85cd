"""The cases of a ``batch`` run: from paths (a volume file, a DICOM series folder, or a folder of cases) and from a
MONAI datalist, each with the name of its output folder; names that would share a folder are refused up front.

Torch-free: everything here runs before the model is loaded. A folder that holds DICOM files itself is one case (a
series, or a CD export with its DICOMDIR); any other folder is a folder of cases: each volume file in it and each
subfolder holding DICOM files (at any depth) is one case, in name order, except that nnU-Net's channel files of one
case id (``X_0000.nii.gz``, ``X_0001.nii.gz``, ...: :mod:`.channel_file_cases`), in a folder or given one by one, are
one case; named pipes, sockets and devices (:mod:`.special_files`) are left out of a folder unopened, and refused as
a case.
"""

from __future__ import annotations

import dataclasses
import json
import os
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .channel_file_cases import OPTION
from .errors import InputError
from .output_folder import expand_home

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
DATALIST_SECTIONS = ("training", "validation", "testing", "test")
BATCH_FILE = "batch.json"
STUDY_UID = "0020|000d"
NAME_BYTES = 255  # the longest file name most file systems take
DATALIST_CHANNELS = "the datalist's 'channels'"
DATASET_FOLDERS = ("imagesTr", "imagesTs", "labelsTr", "labelsTs")  # a Decathlon or nnU-Net dataset's folders of cases


@dataclass(frozen=True)
class BatchCase:
    """One case: its ``name`` (the output folder's), its input paths (one per channel, or one 4D image whose
    volumes ``channels`` names) and where it came from, for messages; ``named_by``: where ``channels`` come from, for
    messages; ``refused``: (message, hint) of a case found unfit before it runs (nnU-Net channel files missing or
    extra: :mod:`.channel_file_cases`), recorded as failed while the other cases run; ``file_name``: of nnU-Net channel
    files grouped under their case id, the first file's name without extension, the case's name where its id is
    another case's too (``x_0000.nii.gz`` beside ``x.nii.gz``); ``by_patterns``: the volume files of one case's folder
    (:func:`placed_by_patterns`)."""

    name: str
    inputs: tuple[str, ...]
    source: str
    channels: tuple[str, ...] | None = None
    named_by: str = DATALIST_CHANNELS
    refused: tuple[str, str] | None = None
    file_name: str | None = None
    by_patterns: bool = False


def volume_stem(path: str | Path) -> str | None:
    """A volume file's name without its extension (``ct.nii.gz`` -> ``ct``); None for other files."""
    name = Path(path).name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def linked_as_named(path: Path) -> Path:
    """``path`` absolute, the links among its folders resolved but not a link at its own name: a case that is a link
    into a store of files named by their hashes (git-annex, DVC) is named by the link, read as ``segment`` reads the
    link (its dataset.json is the one beside the link) and listed in batch.json by the link's path."""
    if path.name in ("", ".."):
        return path.resolve()
    return path.parent.resolve() / path.name


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` is a DICOM file (named .dcm, or the DICM preamble); never a FIFO or device, never opened
    then."""
    from .readers.dicom_meta import dicom_file_class
    from .special_files import special_kind

    if special_kind(path) is not None:
        return False
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


def cases_from_paths(
    paths: Iterable[str | Path],
    channels: Sequence[str] | None = None,
    model_inputs: Sequence[str] | None = None,
    model_channels: Sequence | None = None,
) -> tuple[list[BatchCase], list[str]]:
    """The cases the ``CASE`` arguments name, and notes about what a folder of cases held that is no case.
    ``channels`` (``--channels``): what nnU-Net's channel files _0000, _0001, ... hold, or the volumes of a 4D image;
    ``model_inputs``: the model's channel names, where known (see :mod:`.channel_file_cases`); ``model_channels``: its
    channels with their filename patterns, where its package is here (a given folder they place is one case)."""
    from .special_files import special_kind

    cases: list[BatchCase] = []
    direct: list[tuple[BatchCase, Path]] = []  # volume files given themselves, with their paths as given
    notes: list[str] = []
    outputs: list[str] = []  # folders given that hold TokenUNet's output, no scans
    slices: dict[tuple[str, str], list[str]] = {}  # DICOM files given, by their folder and series
    for given in paths:
        path = expand_home(given)
        if not path.exists():
            raise InputError(f"the case {given} does not exist", "give volume files, DICOM folders or folders of cases")
        kind = special_kind(path)
        if kind is not None:  # opening a FIFO would block the batch
            raise InputError(f"the case {given} is {kind}, not a file", "give volume files, DICOM folders or folders")
        if path.name.startswith("._") and path.is_file():  # find ... -name '*.nii.gz' lists them on a Mac's copies
            raise InputError(
                f"the case {given} is macOS's metadata of {path.name[2:]} (an AppleDouble file), no scan",
                "leave out the files whose names start with ._ (find ... ! -name '._*'), or give their folder",
            )
        if path.is_dir() and not holds_dicom(path):
            found, left_out = cases_in_folder(path, channels, model_inputs)
            if _one_case_folder(found, model_channels):  # ``batch BraTS/*``: each case folder given
                files = tuple(str(linked_as_named(file)) for file in _case_folder_files(path))
                cases.append(BatchCase(_case_name(path), files, str(given), named_by=OPTION, by_patterns=True))
                continue
            output = None if found else tokenunet_output(path)
            if output is not None:  # ``batch data/* --out data/out`` run again: the shell lists the batch's output
                outputs.append(f"{given} holds {output}")
                notes.append(f"left out {given}: it holds {output} (TokenUNet's output), no scans")
                continue
            if not found:
                inner = Counter(file.name for file in _inner_volumes(path)).most_common(1)  # e.g. s0001/ct.nii.gz
                if inner and inner[0][1] == 1:  # no name shared by the subfolders: their files' ending
                    inner = [("*" + inner[0][0][len(volume_stem(inner[0][0])) :], 1)]
                hint = (
                    f"its subfolders hold volume files: give them as cases, e.g. {Path(given) / '*' / inner[0][0]}"
                    if inner
                    else "give the folder that holds the cases, or the cases themselves"
                )
                images = [path / name for name in ("imagesTs", "imagesTr") if (path / name).is_dir()]
                if images:  # a Decathlon or nnU-Net dataset's root: its images folder is the folder of cases
                    hint = f"it is a dataset's root: give the folder of its images, e.g. {images[0]}"
                raise InputError(
                    f"the folder {given} holds no case (no NIfTI, NRRD or MetaImage file, no DICOM subfolder)", hint
                )
            if one_study(found):  # a CD or PACS export of one study: one case, as segment reads that folder
                shown = ", ".join(Path(case.source).name for case in found[:3]) + (", ..." if len(found) > 3 else "")
                notes.append(
                    f"{given}: its {len(found)} DICOM subfolders ({shown}) hold one study: one case, read as segment "
                    "reads that folder (the largest series of the model's modality); to segment each series, give "
                    "the subfolders themselves"
                )
                cases.append(BatchCase(_case_name(path), (str(linked_as_named(path)),), str(given)))
                continue
            cases += found
            special = [(name, kind) for name in left_out if (kind := special_kind(path / name)) is not None]
            left_out = [name for name in left_out if name not in dict(special)]
            if special:
                from .special_files import special_entries_note

                notes.append(special_entries_note(special, str(given)))
            if left_out:
                shown = ", ".join(left_out[:5]) + (", ..." if len(left_out) > 5 else "")
                notes.append(f"{given}: left out {len(left_out)} entries that hold no case ({shown})")
            continue
        volumes = (
            sorted(entry.name for entry in path.iterdir() if entry.is_file() and volume_stem(entry))
            if path.is_dir()
            else []
        )
        if volumes:  # a series folder's volume files are no part of its series
            shown = ", ".join(volumes[:5]) + (", ..." if len(volumes) > 5 else "")
            notes.append(
                f"{given}: holds DICOM files, so it is one DICOM series; left out the volume files in it "
                f"({shown}): give them as cases of their own"
            )
        series = _series_of_file(path)
        if series is not None and series in slices:  # ``dicom/p1/*``: segment given one slice reads its series
            slices[series].append(str(given))
            continue
        if series is not None:
            slices[series] = [str(given)]
        stack_names = tuple(channels) if channels and volume_stem(path) is not None else None
        cases.append(BatchCase(_case_name(path), (str(linked_as_named(path)),), str(given), stack_names, OPTION))
        if path.is_file() and volume_stem(path) is not None:
            direct.append((cases[-1], Path(os.path.abspath(path))))  # a link is grouped by its own name, as given
    for files in slices.values():
        if len(files) > 1:
            shown = ", ".join(Path(file).name for file in files[:3]) + (", ..." if len(files) > 3 else "")
            notes.append(
                f"{Path(files[0]).parent}: {len(files)} files of one DICOM series given ({shown}): one case, read "
                "as segment reads one of them"
            )
    if outputs and not cases:
        raise InputError(
            f"{outputs[0]} (TokenUNet's output), no scans", "give the scans, or the folders that hold them"
        )
    return _named_apart(_channel_files_given(cases, direct, channels, model_inputs)), notes


def _one_case_folder(found: Sequence[BatchCase], channels: Sequence | None) -> bool:
    """Whether a given folder's cases ``found`` are the volume files of one multi-channel case: the model's
    ``channels`` place them one way only, as they place a case folder's files (:func:`placed_by_patterns`); never a
    folder of DICOM series, of nnU-Net channel files, of case folders, or of 4D images the patterns do not place."""
    if not channels or len(channels) < 2 or len(found) < len(channels):
        return False
    if any(
        case.by_patterns or case.file_name or len(case.inputs) != 1 or Path(case.inputs[0]).is_dir() for case in found
    ):
        return False
    case = BatchCase("", tuple(case.inputs[0] for case in found), "")
    try:
        return placed_by_patterns(case, channels)[0] is not case  # the same case: files the patterns do not place
    except InputError:
        return False


def _series_of_file(path: Path) -> tuple[str, str] | None:
    """(its folder, its SeriesInstanceUID) of a DICOM file; None for anything else, or a file whose header names no
    series."""
    if not path.is_file() or volume_stem(path) is not None or not is_dicom_file(path):
        return None
    from .readers.dicom import SERIES_UID, _header, _text

    reader = _header(str(path))
    uid = _text(reader, SERIES_UID) if reader is not None else ""
    return (os.path.realpath(path.parent), uid) if uid else None


def tokenunet_output(folder: Path) -> str | None:
    """What output of TokenUNet ``folder`` holds ("the results of a batch (batch.json)", "a segmentation", ...), or
    None."""
    from .output_folder import json_with_keys, result_held

    if (folder / BATCH_FILE).is_file():
        from .batch_command import BATCH_MARK  # the command line's module: imported only where a batch.json is

        if json_with_keys(BATCH_MARK)(folder / BATCH_FILE):
            return f"the results of a batch ({BATCH_FILE})"
    return result_held(folder)


def _channel_files_given(
    cases: list[BatchCase],
    direct: list[tuple[BatchCase, Path]],
    channels: Sequence[str] | None,
    model_inputs: Sequence[str] | None,
) -> list[BatchCase]:
    """``cases`` with the nnU-Net channel files given one by one (``direct``: each case of ``imagesTs/*.nii.gz`` and
    its path as given, made absolute) grouped as a folder's are (:mod:`.channel_file_cases`), each group in the place
    of its first file."""
    from .channel_file_cases import channel_file_cases

    source = {str(path): case.source for case, path in direct}
    given: dict[Path, list[Path]] = {}
    for _, path in direct:
        given.setdefault(path.parent, []).append(path)
    first: dict[str, BatchCase] = {}
    taken: set[str] = set()
    for folder, files in given.items():
        for found in channel_file_cases(folder, files, channels, model_inputs):
            first[str(found.files[0])] = _grouped_case(found, source[str(found.files[0])])
            taken.update(str(file) for file in found.files)
    paths = {id(case): str(path) for case, path in direct}
    kept, placed = [], {}
    for case in cases:
        path = paths.get(id(case))
        if path is None or path not in taken:
            kept.append(case)
        elif path in first:
            placed[path] = first.pop(path)
            kept.append(placed[path])
        elif path in placed:  # a file given twice: refused as such by check_case_names
            kept.append(placed[path])
    return kept


def _grouped_case(found, source: str) -> BatchCase:
    """The batch case of nnU-Net channel files grouped under their case id (a :class:`.ChannelFileCase`): its files
    as found in their folder (a link by its own name: its number and its dataset.json say its channel, as they do
    for ``segment`` given it), ``source``: where it came from, for messages."""
    inputs = tuple(str(file) for file in found.files)
    return BatchCase(found.name, inputs, source, found.names, OPTION, found.refused, volume_stem(found.files[0]))


def _inner_volumes(folder: Path) -> list[Path]:
    """The volume files one level down (``folder/<case>/ct.nii.gz``, as one folder per case lays them out)."""
    found = []
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.is_dir() and not entry.name.startswith(".") and tokenunet_output(entry) is None:
            found += [file for file in sorted(entry.iterdir()) if file.is_file() and volume_stem(file) is not None]
    return found


def _named_apart(cases: list[BatchCase]) -> list[BatchCase]:
    """Files that share a name (``s0001/ct.nii.gz``, ``s0002/ct.nii.gz``, one folder per case) named by their
    folders instead (``s0001``, ``s0002``), then by both (``s0001_ct``) where folders share names too; names that
    still collide are left to :func:`check_case_names`."""
    counts = Counter(case.name.casefold() for case in cases)  # a grouped case whose id is another's: its file's name
    cases = [
        dataclasses.replace(case, name=case.file_name) if case.file_name and counts[case.name.casefold()] > 1 else case
        for case in cases
    ]
    own = [case.name for case in cases]  # a file's stem, an nnU-Net case id
    for naming in (lambda case, name: _folder(case), lambda case, name: f"{_folder(case)}_{name}"):
        counts: dict[str, int] = {}
        for case in cases:
            counts[case.name.casefold()] = counts.get(case.name.casefold(), 0) + 1
        cases = [
            dataclasses.replace(case, name=naming(case, name))
            if counts[case.name.casefold()] > 1 and Path(case.inputs[0]).is_file()
            else case
            for case, name in zip(cases, own, strict=True)
        ]
    return cases


def _folder(case: BatchCase) -> str:
    return Path(case.inputs[0]).parent.name


def one_study(cases: Sequence[BatchCase]) -> bool:
    """Whether ``cases`` (of a folder of cases) are two or more DICOM folders whose first files name one study
    (StudyInstanceUID): the series of one patient's study, not several patients' scans."""
    if len(cases) < 2 or any(not Path(case.inputs[0]).is_dir() for case in cases):
        return False
    studies = {_study(Path(case.inputs[0])) for case in cases}
    return len(studies) == 1 and "" not in studies


def _study(folder: Path) -> str:
    """The StudyInstanceUID of the first DICOM file below ``folder`` ("" when none says one)."""
    from .readers.dicom import _header, _text
    from .readers.dicom_meta import DICOMDIR_CLASS, dicom_file_class
    from .special_files import special_kind

    for parent, folders, files in os.walk(folder):
        folders.sort()
        for name in sorted(files):
            path = Path(parent) / name
            if special_kind(path) is not None:  # a FIFO named .dcm: never opened
                continue
            kind = dicom_file_class(path)  # None: no DICM preamble
            if (kind is not None or path.suffix.lower() == ".dcm") and kind != DICOMDIR_CLASS:  # is_dicom_file's test
                reader = _header(str(path))
                if reader is not None:
                    return _text(reader, STUDY_UID)
    return ""


def cases_in_folder(
    folder: Path, channels: Sequence[str] | None = None, model_inputs: Sequence[str] | None = None
) -> tuple[list[BatchCase], list[str]]:
    """A folder of cases: its volume files (nnU-Net's channel files of one case id as one case:
    :mod:`.channel_file_cases`), its subfolders holding DICOM and, for a multi-channel model, its subfolders holding
    volume files (one case each), in name order; and the names of the other entries (left out). ``channels``,
    ``model_inputs``: as :func:`cases_from_paths` takes them."""
    from .channel_file_cases import channel_file_cases

    entries = [
        entry for entry in sorted(folder.iterdir(), key=lambda item: item.name) if not entry.name.startswith(".")
    ]
    volumes = [entry for entry in entries if entry.is_file() and volume_stem(entry) is not None]
    absolute = {Path(os.path.abspath(entry)): entry for entry in volumes}  # a link by its own name, as segment reads it
    grouped = {
        absolute[case.files[0]]: case for case in channel_file_cases(folder, list(absolute), channels, model_inputs)
    }
    in_groups = {absolute[file] for case in grouped.values() for file in case.files}
    cases, left_out = [], []
    for entry in entries:
        if entry in grouped:
            cases.append(_grouped_case(grouped[entry], str(entry)))
        elif entry in in_groups:
            continue
        elif entry in volumes:
            stack_names = tuple(channels) if channels else None  # the volumes of a 4D image
            cases.append(BatchCase(volume_stem(entry), (str(linked_as_named(entry)),), str(entry), stack_names, OPTION))
        elif entry.is_dir() and holds_dicom(entry, anywhere=True):
            cases.append(BatchCase(entry.name, (str(linked_as_named(entry)),), str(entry)))
        elif len(model_inputs or ()) > 1 and entry.name not in DATASET_FOLDERS and (files := _case_folder_files(entry)):
            inputs = tuple(str(linked_as_named(file)) for file in files)
            cases.append(BatchCase(entry.name, inputs, str(entry), named_by=OPTION, by_patterns=True))
        else:
            left_out.append(entry.name)
    return cases, left_out


def _case_folder_files(folder: Path) -> list[Path]:
    """The volume files of one case's folder (``BraTS_001/BraTS_001_t1.nii.gz``, ``_t1c``, ``_t2``, ``_flair``: a
    multi-channel case, its files placed by the model's patterns as ``segment`` places them), in name order; none
    for a file, or a folder that holds TokenUNet's output."""
    if not folder.is_dir() or tokenunet_output(folder) is not None:
        return []
    entries = sorted(folder.iterdir(), key=lambda item: item.name)
    return [entry for entry in entries if not entry.name.startswith(".") and entry.is_file() and volume_stem(entry)]


def placed_by_patterns(case: BatchCase, channels: Sequence) -> tuple[BatchCase, list[str]]:
    """A case folder's files that the model's ``channels`` (their filename patterns) place one way only, as ``case``
    with those files, and the names of the files left out: those no channel's pattern matches (BraTS's training
    folders hold ``BraTS_001_seg.nii.gz`` beside the sequences). Refused when the patterns do not place every channel
    one way only: ``segment`` runs such files in the order given, and a folder's name order is no order anyone chose.
    nnU-Net's numbered files are left to their dataset.json, as ``segment`` places them; a wrong count (too few files,
    or a left-over file some pattern matches) to ``segment``'s words.

    Raises:
        InputError: naming the files and the channels.
    """
    from .channel_stack import nnunet_indices
    from .channels import channel_assignment

    inputs = list(case.inputs)
    if len(channels) < 2 or len(inputs) < len(channels) or nnunet_indices(inputs) is not None:
        return case, []
    chosen, unique = channel_assignment(inputs, channels)
    placed = sorted(inputs[index] for index in chosen if index is not None)
    left = [item for item in inputs if item not in placed]
    if any(channel.matches(item) for item in left for channel in channels):
        return case, []
    if not unique:
        files = ", ".join(Path(item).name for item in inputs[:6]) + (", ..." if len(inputs) > 6 else "")
        raise InputError(
            f"the names of {files} do not say which channel ({', '.join(c.name for c in channels)}) each holds",
            "name each file for its channel, or give the case in a --datalist with its 'channels'",
        )
    return dataclasses.replace(case, inputs=tuple(placed)), [Path(item).name for item in left]


def _case_name(path: Path) -> str:
    """A case's output folder name: a volume file's name without extension, a DICOM folder's name, a DICOM file's
    folder's name."""
    if path.is_dir():  # a link by its own name (``patient7`` -> ``1.2.840...``), as a folder of cases names it
        return path.name if path.name not in ("", "..") else path.resolve().name
    stem = volume_stem(path)
    if stem is not None:
        return stem
    if is_dicom_file(path):  # a link's folder, the series segment reads with it (not a git-annex object's folder)
        return Path(os.path.abspath(path)).parent.name
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
    path, or a list of channel paths; ``"channels"`` naming what each file, or each volume of one 4D image, holds),
    or plain paths as in a Decathlon ``dataset.json``'s ``"test"`` list; ``"label"`` is ignored. Relative paths start
    at its ``"dataroot"``, else its folder; a case is named by its ``"name"``, else by its first image."""
    from .json_files import read_json_file
    from .training.data import check_channel_names, datalist_root

    path = expand_home(path)
    data = read_json_file(path, f"the datalist {path}")
    if not isinstance(data, dict):
        raise InputError(f"the datalist {path} is not a JSON object", "see the README for the datalist format")
    lists = [key for key, value in data.items() if isinstance(value, list) and key not in ("labels",)]
    if section is None:
        known = [key for key in lists if key in DATALIST_SECTIONS] or lists
        if len(known) != 1:
            which = f"several lists of cases: {', '.join(known)}" if known else "no list of cases"
            raise InputError(
                f"the datalist {path.name} has {which}",
                "choose one with --section" if known else "see the README for the datalist format",
            )
        section = known[0]
    elif section not in lists:
        raise InputError(
            f"the datalist {path.name} has no list '{section}'", f"its lists: {', '.join(lists) or 'none'}"
        )
    root = datalist_root(path, data)
    cases, missing = [], []
    for index, entry in enumerate(data[section]):
        where = f"{path.name} {section}[{index}]"
        images = entry.get("image") if isinstance(entry, dict) else entry
        images = images if isinstance(images, list) else [images]
        if not images or not all(isinstance(image, str) and image for image in images):
            raise InputError(f"{where}: 'image' must be a file path or a list of them (one per channel)")
        files = [str(linked_as_named(root / image)) for image in images]
        missing += [f"{section}[{index}]: {file}" for file in files if not Path(file).exists()]
        channels = entry.get("channels") if isinstance(entry, dict) else None
        if channels is not None:
            channels = check_channel_names(channels, where)
        name = entry.get("name") if isinstance(entry, dict) else None
        if name is not None and not (isinstance(name, str) and name):  # before: ignored, the file's name used
            raise InputError(
                f"{where}: 'name' must be a non-empty text (the case's folder), got {json.dumps(name)[:40]}",
                'quote it ("name": "5") or leave \'name\' out to name the case by its image',
            )
        name = name or _entry_name([Path(file) for file in files])
        cases.append(BatchCase(name, tuple(files), where, tuple(channels) if channels else None))
    if missing:
        entries = len({item.split(":")[0] for item in missing})
        shown = "; ".join(missing[:2]) + ("; ..." if len(missing) > 2 else "")
        raise InputError(
            f"{entries} of {len(cases)} entries of {path.name} name files that do not exist ({shown})",
            "fix the paths, or the datalist's 'dataroot'",
        )
    if not cases:
        raise InputError(f"the datalist's '{section}' list is empty")
    return cases


def check_case_names(cases: Sequence[BatchCase], root: Path) -> None:
    """Refuse names that are no plain folder name or too long for one (255 bytes), the same inputs given twice, and
    two cases that would write the same folder (compared without case and Unicode normalisation, as macOS's and
    Windows' file systems compare names)."""
    seen: dict[str, BatchCase] = {}
    given: dict[tuple, BatchCase] = {}
    for case in cases:
        name = case.name
        if name in ("", ".", "..") or name.startswith(".") or "/" in name or "\\" in name or name == BATCH_FILE:
            raise InputError(
                f"the case {case.source} would be written to a folder named {name!r}",
                "rename it (or give it a 'name' in the datalist)",
            )
        size = len(name.encode("utf-8", "surrogateescape"))
        if size > NAME_BYTES:
            raise InputError(
                f"the case {case.source}'s folder name {name[:20]}... is {size} bytes long; file systems take "
                f"{NAME_BYTES}",
                "give it a shorter name (a 'name' in the datalist, or rename the file)",
            )
        files = (tuple(os.path.realpath(path) for path in case.inputs), case.channels)  # two links to one file: twice
        twin = given.get(files)
        if twin is not None:
            raise InputError(
                f"{Path(case.inputs[0]).name} is given twice ({twin.source} and {case.source})",
                "give each case once",
            )
        given[files] = case
        key = unicodedata.normalize("NFC", name).casefold()
        other = seen.get(key)
        if other is not None:
            raise InputError(
                f"two cases would both be written to {root / name}: {other.source} and {case.source}",
                "rename one (or give datalist entries distinct 'name's), or run them in batches with other --out",
            )
        seen[key] = case
