"""Which input goes to which channel of a multi-channel model (e.g. T1, T1c, T2 and FLAIR MRI).

Files or volume nodes are matched to channels by the package's filename patterns, one input per channel: a
pattern may match several names (``*t1*`` matches ``case_t1.nii.gz`` and ``case_t1ce.nii.gz``), so the
channels are matched as a whole (a maximum one-to-one matching), never each channel greedily on its own. An
input given for two channels, or an order the names contradict, is refused rather than run silently wrong.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path

from .errors import InputError


def _matching(options: list[list[int]], banned: tuple[int, int] | None = None) -> list[int | None]:
    """A maximum one-to-one matching of channels to candidates: ``options[c]`` lists channel c's candidates in
    order of preference (Kuhn's augmenting paths, channels in order, so earlier channels and candidates win ties);
    ``banned`` is a (channel, candidate) pair left out."""
    owner: dict[int, int] = {}  # candidate -> channel

    def place(channel: int, seen: set[int]) -> bool:
        for candidate in options[channel]:
            if candidate in seen or (channel, candidate) == banned:
                continue
            seen.add(candidate)
            if candidate not in owner or place(owner[candidate], seen):
                owner[candidate] = channel
                return True
        return False

    for channel in range(len(options)):
        place(channel, set())
    chosen: list[int | None] = [None] * len(options)
    for candidate, channel in owner.items():
        chosen[channel] = candidate
    return chosen


def channel_assignment(candidates: Sequence[str], channels: Sequence) -> tuple[list[int | None], bool]:
    """(candidate index per channel or None, whether that assignment is the only complete one).

    ``channels`` have a ``matches(name)`` method (:class:`.metadata.InputChannel`). As many channels as possible
    get a candidate their patterns match, each candidate serving one channel.
    """
    options = [[i for i, candidate in enumerate(candidates) if channel.matches(candidate)] for channel in channels]
    chosen = _matching(options)
    if None in chosen:
        return chosen, False
    unique = all(None in _matching(options, banned=(c, i)) for c, i in enumerate(chosen))
    return chosen, unique


def match_channels(candidates: Sequence[str], channels: Sequence) -> dict[str, str | None]:
    """Match file or volume names to input channels by their filename patterns.

    Each candidate serves one channel; as many channels as possible get one (so ``*t1*`` for T1 leaves
    ``case_t1ce`` to T1c's ``*t1ce*`` when ``case_t1`` is there too); unmatched channels get None. With one channel
    and one candidate, the candidate is taken whatever its name.
    """
    if len(channels) == 1 and len(candidates) == 1:
        return {channels[0].name: candidates[0]}
    chosen, _ = channel_assignment(candidates, channels)
    return {channel.name: None if i is None else candidates[i] for channel, i in zip(channels, chosen, strict=True)}


def order_inputs(inputs: Sequence[str], channels: Sequence, model: str) -> list[str]:
    """The command line's files in the model's channel order, checked before any voxel is read.

    Files whose names match the channels' patterns one way only are put in that order; otherwise the given order
    is kept, unless a name then contradicts it (a file named for another channel).

    Raises:
        InputError: the wrong number of files, a file given twice, or an order the file names contradict.
    """
    names = [channel.name for channel in channels]
    if len(inputs) != len(channels):
        hint = "one file or DICOM series (its folder or one of its files) per channel" if len(names) > 1 else None
        if len(names) > 1 and len(inputs) == 1:
            hint = "one file or DICOM series per channel, or one 4D image of them all with --channels"
        stray = [Path(item).name for item in inputs if not any(channel.matches(str(item)) for channel in channels)]
        if len(names) > 1 and len(inputs) > len(names) and 0 < len(stray) <= len(inputs) - len(names):
            hint = f"{', '.join(stray)} {'matches' if len(stray) == 1 else 'match'} no channel; one file per channel"
        raise InputError(
            f"model '{model}' needs {len(names)} input channel(s) ({', '.join(names)}), got {len(inputs)}", hint
        )
    check_distinct([str(Path(item).resolve()) for item in inputs], [Path(item).name for item in inputs], names)
    if len(channels) == 1:
        return list(inputs)
    chosen, unique = channel_assignment([str(item) for item in inputs], channels)
    if unique:
        return [inputs[i] for i in chosen]
    check_places(inputs, channels)
    return list(inputs)


def check_places(inputs: Sequence, channels: Sequence) -> None:
    """Refuse a file in one channel's place whose name matches another channel's patterns and not its own
    (``case_t1ce.nii.gz`` first for a model whose first channel is T1); inputs that are no paths are skipped.

    Raises:
        InputError: naming the file and both channels.
    """
    for item, channel in zip(inputs, channels, strict=True):
        if not isinstance(item, (str, Path)) or channel.matches(str(item)):
            continue
        others = [other.name for other in channels if other is not channel and other.matches(str(item))]
        if others:
            raise InputError(
                f"{Path(item).name} is in channel {channel.name}'s place but is named like channel {others[0]}",
                f"give one file per channel in the order {', '.join(c.name for c in channels)}, or name each for "
                "its channel",
            )


def check_distinct(keys: Sequence, shown: Sequence[str], names: Sequence[str]) -> None:
    """Refuse one input (equal ``keys``) given for two channels: each channel needs its own image.

    Raises:
        InputError: naming the input and the two channels.
    """
    for second, key in enumerate(keys):
        first = next(i for i, other in enumerate(keys) if other == key)
        if first != second:
            raise InputError(
                f"{shown[first]} is given for both channel '{names[first]}' and channel '{names[second]}'",
                "each channel needs its own image (e.g. one MRI sequence each); check which file goes where",
            )


def check_channels_fit(values: Sequence[int], limit: int | None = None) -> None:
    """Refuse channels whose voxels cannot all be held at once (as float32, the copy each channel gets on the
    first channel's grid) in free memory or ``TOKENUNET_MEMORY_LIMIT``: checked from their headers, before any
    is read (each file's own header check counts only itself).

    Raises:
        InputError: saying how much they need.
    """
    from .memory import LIMIT_VARIABLE, format_size, memory_limit

    need = 4 * sum(int(v) for v in values)
    what = "the given limit"
    if limit is None:
        limit, what = memory_limit()
    if len(values) > 1 and need > limit:
        raise InputError(
            f"the {len(values)} input channels need about {format_size(need)} together, over {what} "
            f"({format_size(limit)})",
            f"crop or downsample the volumes, free memory, or raise {LIMIT_VARIABLE}",
        )


def series_warnings(opened: Sequence, channels: Sequence) -> list[str]:
    """Warnings on the opened inputs (:class:`.volumes.OpenedVolume`) of ``channels``, in order: a DICOM series whose
    SeriesDescription matches another channel's patterns and not its own, where that channel's own series does not
    match them either (``FLAIR 3D`` given for T1 and ``T1 SE`` for FLAIR). The description is free text, so this is
    said, never refused (one series given for two channels is refused by :func:`.run_inputs.open_run_inputs`)."""
    warnings = []
    texts = [item.description.lower() for item in opened]
    own = [bool(text) and _describes(channel, text) for text, channel in zip(texts, channels, strict=True)]
    for item, text, channel in zip(opened, texts, channels, strict=True):
        if not text or _describes(channel, text):
            continue
        # another channel the description names, whose own series does not look like it ('T1 +C' for T1c is
        # no T1 when T1 has its 'T1' series)
        others = [o.name for i, o in enumerate(channels) if o is not channel and _describes(o, text) and not own[i]]
        if others:
            warnings.append(
                f"the DICOM series given for channel '{channel.name}' is described '{item.description}', like "
                f"channel '{others[0]}': check that each series goes to its channel"
            )
    return warnings


def _describes(channel, text: str) -> bool:
    return any(fnmatch.fnmatch(text, pattern.lower()) for pattern in channel.patterns)


SEQUENCE_SYNONYMS = {
    "t1": ("t1w", "t1n", "t1native", "nativet1", "t1pre", "t1precontrast"),
    "t1c": ("t1ce", "t1gd", "t1cgd", "t1gad", "t1post", "t1postcontrast", "t1contrast", "t1wce", "t1wc", "t1wgd"),
    "t2": ("t2w",),
    "flair": ("t2flair", "t2f", "t2wflair"),
}
"""Names of the brain-tumour MRI sequences as datasets write them (BraTS, the Medical Segmentation Decathlon's
``t1gd`` and ``T1w``, nnU-Net's ``channel_names``), each under one key; compared without case, spaces, ``-``, ``_``,
``+`` or ``.`` (``T1+C`` is ``t1c``)."""
_KEYS = {synonym: key for key, synonyms in SEQUENCE_SYNONYMS.items() for synonym in (key, *synonyms)}


def channel_key(name: str) -> str:
    """The comparison key of a channel name: lower case without separators, a sequence's synonyms unified."""
    plain = "".join(ch for ch in str(name).lower() if ch not in " -_+.()")
    return _KEYS.get(plain, plain)


def named_channel(name: str, channels: Sequence) -> int | None:
    """The index of the channel ``name`` names: its own name (any case), else the one channel with its
    :func:`channel_key`; None when none does, or when several do (an ambiguity: never guessed)."""
    exact = [i for i, channel in enumerate(channels) if channel.name.lower() == str(name).lower()]
    if len(exact) == 1:
        return exact[0]
    keyed = [i for i, channel in enumerate(channels) if channel_key(channel.name) == channel_key(name)]
    return keyed[0] if len(keyed) == 1 else None


def match_names(names: Sequence[str], channels: Sequence, model: str, what: Sequence[str]) -> list[int]:
    """The channel of each of ``names`` (``what[i]`` says where name i comes from, for messages), one to one.

    Raises:
        InputError: a name that names no channel (or several), or two names for one channel.
    """
    listed = ", ".join(channel.name for channel in channels)
    chosen: list[int] = []
    for name, where in zip(names, what, strict=True):
        index = named_channel(name, channels)
        if index is None:
            several = [c.name for c in channels if channel_key(c.name) == channel_key(name)]
            problem = f"names several channels ({', '.join(several)})" if several else "names no channel"
            raise InputError(
                f"'{name}' ({where}) {problem} of model '{model}'",
                f"use {listed}; any case, synonyms such as t1gd for T1c",
            )
        if index in chosen:
            first = chosen.index(index)
            raise InputError(
                f"'{names[first]}' ({what[first]}) and '{name}' ({where}) both name channel {channels[index].name} "
                f"of model '{model}'",
                f"name each channel once: {listed}",
            )
        chosen.append(index)
    return chosen


def order_named_files(files: Sequence, names: Sequence[str], channels: Sequence, model: str, where: str) -> list:
    """``files`` (one per channel, ``names[i]`` saying what ``files[i]`` holds: a datalist's ``"channels"``) in the
    model's channel order, placed by name with :func:`match_names`'s matching and synonyms, never by position.

    Raises:
        InputError: a count other than the files' or the model's, names that do not name the channels one to one,
            or a file named like another channel than the one its name puts it in.
    """
    listed = ", ".join(channel.name for channel in channels)
    if len(names) != len(files):
        raise InputError(
            f"{where}: 'channels' names {len(names)} channel{'s' if len(names) != 1 else ''}; 'image' lists "
            f"{len(files)} files",
            "name what each file holds, in the order of 'image'",
        )
    if len(files) != len(channels):
        raise InputError(
            f"{where} has {len(files)} image channels ({', '.join(map(str, names))}); the model takes "
            f"{len(channels)} ({listed})",
            f"give one file per model channel, or choose a model that takes {len(files)}",
        )
    what = [f"{where}'s 'channels' for {Path(file).name}" for file in files]
    chosen = match_names(names, channels, model, what)
    ordered = [files[chosen.index(channel)] for channel in range(len(channels))]
    check_places(ordered, channels)
    return ordered
