"""nnU-Net's per-channel files in a folder of cases, as ``imagesTr``/``imagesTs`` (and nnU-Net's ``predict -i``
folders) hold them: ``BRATS_001_0000.nii.gz`` ... ``BRATS_001_0003.nii.gz`` are one case, ``BRATS_001``.

A file's number is its channel in the dataset's own list (the dataset.json's ``channel_names``, MSD's ``modality``,
or ``--channels``), not the model's: the files of a case are placed in the model's channels by those names
(:func:`.channel_stack.nnunet_file_names`, :func:`.channels.order_named_files`), never by position. Without names,
only files numbered ``_0000`` alone (one channel: nnU-Net's CT layout) are grouped, each case named by its id; for a
multi-channel model such files are refused before any case runs. A case whose numbers are not exactly those the
names list (a channel file missing, or one more) is refused alone, in words that name its files; numbers without
``_0000`` beyond the names' count (``BraTS_0001`` ... ``BraTS_0009``: scans numbered one by one) are no channel
files. Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .channel_stack import DATASET_FOLDERS, NNUNET_FILE, dataset_channels, dataset_file, dataset_names
from .errors import InputError

OPTION = "--channels"


@dataclass(frozen=True)
class ChannelFileCase:
    """One case id's files in the order of their numbers; ``names``: what each holds when ``--channels`` says so
    (else None: its dataset.json, found again when the case is opened, or one channel); ``refused``: (message, hint)
    of a case whose numbers are not the channels'."""

    name: str
    files: tuple[Path, ...]
    names: tuple[str, ...] | None = None
    refused: tuple[str, str] | None = None


def channel_file_cases(
    folder: Path, files: Sequence[Path], names: Sequence[str] | None = None, model_inputs: Sequence[str] | None = None
) -> list[ChannelFileCase]:
    """The cases of nnU-Net channel files among the volume ``files`` of ``folder`` (resolved: as they are read when the
    case runs; one case's files in one folder), in name order (files in none of them stay cases of their own).
    ``names``: ``--channels``, what channels 0, 1, ... hold; ``model_inputs``: the model's channel names (None when
    not known before it is downloaded).

    Raises:
        InputError: channel files that nothing names for a multi-channel model, names whose count is not the model's,
            or a dataset.json that cannot be read (for a model of more channels than one, or not known).
    """
    groups: dict[tuple[Path, str], dict[str, dict[int, Path]]] = {}
    for file in sorted(files, key=lambda item: item.name):
        found = NNUNET_FILE.match(file.name)
        if found is not None:  # a case's files in one folder, as nnunet_file_names reads them when the case runs
            key = (file.absolute().parent, found["case"])
            groups.setdefault(key, {}).setdefault(found["ending"], {})[int(found["index"])] = file
    cases, unnamed = [], []
    for (_, case), endings in groups.items():
        if len(endings) > 1:  # saved twice, or split between .nii and .nii.gz: nothing says which to take
            cases.append(_two_formats(case, endings))
            continue
        ((ending, numbered),) = endings.items()
        first = numbered[min(numbered)]
        listed = (list(names), OPTION) if names else _dataset_names(first, case + ending, model_inputs)
        if listed is None:
            if set(numbered) == {0}:  # nnU-Net's one-channel layout: the case is its id
                cases.append(ChannelFileCase(case, (first,)))
            if 0 in numbered:
                unnamed.append(first)
            continue
        if 0 not in numbered and max(numbered) >= len(listed[0]):  # numbered scans (BraTS_0001 ...), no channels
            continue
        if len(listed[0]) == 1 and set(numbered) != {0}:  # one channel: scan_0000, scan_0001 ... are whole scans
            continue
        check_count(listed[0], str(listed[1]), model_inputs)
        cases.append(_named_case(case, numbered, listed[0], str(listed[1])))
    if unnamed and model_inputs is not None and len(model_inputs) > 1:
        raise _unnamed(folder, unnamed)
    return sorted(cases, key=lambda item: item.files[0].name)


def _dataset_names(first: Path, listed_as: str, model_inputs: Sequence[str] | None) -> tuple[list[str], Path] | None:
    """The channel names of the dataset.json of ``first`` (:func:`.channel_stack.dataset_names`); for a one-channel
    model, which needs none (``segment`` never reads it), one that cannot be read (malformed, a FIFO) names none."""
    try:
        return dataset_names(first, OPTION, listed_as, unlisted_refused=False)
    except InputError:
        if model_inputs is not None and len(model_inputs) == 1:
            return None
        raise


def check_count(names: Sequence[str], where: str, model_inputs: Sequence[str] | None) -> None:
    """Refuse channel names (of ``where``: ``--channels`` or a dataset.json) whose count is not the model's.

    Raises:
        InputError: naming both lists.
    """
    if model_inputs is None or len(names) == len(model_inputs):
        return
    own = f"{len(names)} channel{'s' if len(names) != 1 else ''} ({', '.join(names)})"
    hint = "name each of the model's channels once, in the order of the files' numbers"
    if where != OPTION:
        hint = "choose the model made for this dataset, or pass --channels naming what its files _0000, ... hold"
    raise InputError(
        f"{where} names {own}; the model takes {len(model_inputs)} ({', '.join(model_inputs)})",
        hint,
    )


def _named_case(case: str, numbered: dict[int, Path], names: Sequence[str], where: str) -> ChannelFileCase:
    """The case of ``numbered`` files ({number: file}) whose numbers ``names`` (from ``where``) name; refused when its
    numbers are not exactly 0 .. len(names) - 1."""
    files = tuple(numbered[index] for index in sorted(numbered))
    ending = NNUNET_FILE.match(files[0].name)["ending"]
    problems = []
    said = where if where == OPTION else Path(where).name  # the line stays short: the path is in the case's folder
    missing = [index for index in range(len(names)) if index not in numbered]
    if missing:
        lacking = ", ".join(
            f"{case}_{index:04d}{ending} (channel {index} of {len(names)} in {said}: {names[index]})"
            for index in missing
        )
        problems.append(f"{case} lacks {lacking}; it has {', '.join(file.name for file in files)}")
    extra = [numbered[index].name for index in sorted(numbered) if index >= len(names)]
    if extra:
        problems.append(
            f"{', '.join(extra)} {'is a channel' if len(extra) == 1 else 'are channels'} beyond the {len(names)} "
            f"{said} names ({', '.join(names)})"
        )
    refused = None
    if problems:
        hint = "add the missing file" if missing else f"take the extra file out of the folder, or fix {said}"
        refused = ("; ".join(problems), hint)
    held = tuple(names[index] if index < len(names) else "" for index in sorted(numbered)) if where == OPTION else None
    return ChannelFileCase(case, files, held if refused is None else None, refused)


def _two_formats(case: str, endings: dict[str, dict[int, Path]]) -> ChannelFileCase:
    """The case whose channel files have two endings or more (``x_0000.nii.gz`` and ``x_0000.nii``), refused."""
    files = tuple(file for numbered in endings.values() for _, file in sorted(numbered.items()))
    kinds = "; ".join(f"{ending}: {', '.join(file.name for _, file in sorted(numbered.items()))}"
                      for ending, numbered in endings.items())  # fmt: skip
    return ChannelFileCase(
        case,
        files,
        refused=(
            f"{case}'s channel files are in two formats or more ({kinds}); nothing says which to read",
            "keep one format of each case's files in the folder (nnU-Net reads those of its dataset.json's "
            "file_ending)",
        ),
    )


def _unnamed(folder: Path, files: Sequence[Path]) -> InputError:
    """The refusal of nnU-Net channel files that nothing names, for a multi-channel model: saying so of the
    dataset.json that is there (one naming no channels, or listing other images: another dataset's) where there is
    one."""
    from .json_files import read_json_file

    option = f"pass {OPTION} naming _0000, _0001, ... in order"
    found = dataset_file(files[0])
    if found is None:
        where = f"beside {folder.name}/" if folder.name in DATASET_FOLDERS else "in it"
        return InputError(
            f"{folder.name}: no dataset.json names its nnU-Net channel files ({files[0].name}, ...)",
            f"add the dataset.json {where}, or {option}",
        )
    case = NNUNET_FILE.match(files[0].name)["case"]
    if dataset_channels(read_json_file(found), found) is None:
        why = "names no channels (it has neither 'channel_names' nor 'modality')"
    else:
        why = f"does not list {case} among its images, so its channel names may be another dataset's"
    return InputError(
        f"{folder.name}: {found} {why}; nothing says what its nnU-Net channel files ({files[0].name}, ...) hold",
        f"fix {found.name}, or {option}",
    )
