"""A run's inputs opened and checked from their headers, before any voxel is read: one function for the command line
and ``segment()``, so the two refuse the same inputs with the same words.

Torch-free. The checks, in order: the channels fit in memory together (:func:`.channels.check_channels_fit`), no
DICOM series serves two channels, each DICOM series' Modality suits its channel (:func:`.volumes.check_modality`),
and the whole run's host memory (:func:`.run_memory.check_inputs_fit`, from the first input's header and the
package's configuration) when any input is a file (arrays are in memory already: checked once, in full, later).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..model.variants import declared_token_count
from .errors import ArgumentError, InputError
from .result import MAP_KINDS

log = logging.getLogger(__name__)
MOST_TOKENS = 32  # the most learned tokens of a registered network, for one whose count the configuration does not say


@dataclass(frozen=True)
class RunNeeds:
    """What a run will keep besides its labels, for the memory and disk checks: token maps (on the token grid,
    ``input`` or ``auto``: see :func:`.outputs.attention_bounds`) and probability maps; and whether it averages
    test-time augmentation's passes (memory only)."""

    with_token_maps: bool = True
    probabilities: bool = False
    attention_grid: str = "token"
    test_time_augmentation: bool = False


@dataclass(frozen=True)
class OpenedInputs:
    """The opened inputs (one :class:`.volumes.OpenedVolume` per channel, in the package's order), the token maps
    the run may write (``maps``), whether they go on the input grid and the voxels each counts on disk."""

    opened: list
    maps: int
    on_input_grid: bool
    map_voxels: int


def open_run_inputs(
    items: Sequence, config, model: str, names: Sequence[str], needs: RunNeeds | None = None
) -> OpenedInputs:
    """Open ``items`` (one per channel of ``config``, in its order; ``names``: how each is shown) and check them from
    their headers (see the module docstring). ``needs`` None skips the run's memory check.

    Raises:
        InputError: channels that do not fit together, one DICOM series for two channels, a Modality the channel
            does not take, a spacing that makes the scan longer than a body.
        OutOfMemoryError: the run cannot fit in free memory or ``TOKENUNET_MEMORY_LIMIT``.
    """
    from .channel_stack import refuse_stacked
    from .channels import check_channels_fit, check_distinct
    from .outputs import attention_bounds
    from .run_memory import check_inputs_fit
    from .volumes import OpenedVolume, check_modality, open_input

    channels = config.inputs
    opened = [
        item  # a channel of a 4D image (channel_stack.open_stack)
        if isinstance(item, OpenedVolume)
        else open_input(item, channel.name, channel.modality)  # a folder's series chosen by the channel's Modality
        for item, channel in zip(items, channels, strict=True)
    ]
    for item, name, channel in zip(opened, names, channels, strict=True):  # a 4D image given for one channel
        refuse_stacked(item, name, channels, model, channel.name)
    check_channels_fit([item.values for item in opened])  # all channels together, before any is read
    series = [(o.series, f"the DICOM series '{o.description or name}'") for o, name in zip(opened, names, strict=True)]
    keys = [uid or ("input", index) for index, (uid, _) in enumerate(series)]  # only series are compared here
    check_distinct(keys, [shown for _, shown in series], [channel.name for channel in channels])
    for item, name, channel in zip(opened, names, channels, strict=True):
        check_modality(item.modality, channel.modality, name, model, channel.name)
    architecture = config.architecture
    learned = declared_token_count(architecture.name, architecture.build_arguments())
    with_maps = needs is not None and needs.with_token_maps
    maps = len(MAP_KINDS) * (MOST_TOKENS if learned is None else learned) if with_maps else 0
    voxels = opened[0].values
    grid = needs.attention_grid if needs is not None else "token"
    on_input_grid, map_voxels = attention_bounds(grid, maps, voxels, exact=learned is not None)
    if needs is not None and any(isinstance(item, (str, Path, OpenedVolume)) for item in items):  # files
        check_inputs_fit(
            opened,
            config,
            names[0],
            needs.with_token_maps,
            needs.probabilities,
            on_input_grid,
            needs.test_time_augmentation,
        )
    return OpenedInputs(opened, maps, on_input_grid, map_voxels)


def channel_items(
    inputs, config, model: str, stack_names: Sequence[str] | None = None, option: str = "channels="
) -> tuple[list, list[str]]:
    """``segment()``'s inputs as one item per channel of ``config``, in its order, and how each is shown: a path or
    an ``(array, ijk_to_ras)`` pair for a one-channel model, a list in the channel order (nnU-Net's numbered files,
    ``case_0000.nii.gz`` ..., in the order their dataset.json's channel names say), a dict {channel name:
    input} (names in any case, with the usual synonyms: ``flair``, ``t1ce``), or one 4D image holding every
    channel, ``stack_names`` naming its volumes in order (else its dataset.json: :mod:`.channel_stack`). Only a 4D
    image's header is opened. ``option``: how the caller passes ``stack_names``, for messages.

    Raises:
        InputError: the wrong number of channels, channel names the package does not have, one image for two
            channels, a list whose file names contradict the channel order.
        ArgumentError: inputs of another kind.
    """
    from .channel_stack import (
        UNNAMED_FILES_HINT,
        files_named_instead,
        nnunet_file_names,
        open_stack,
        refuse_names,
        refuse_unnamed_files,
    )
    from .channels import check_distinct, check_places, order_named_files

    names = [channel.name for channel in config.inputs]
    by_name = isinstance(inputs, dict)  # {channel name: input}, e.g. from assign_inputs(): each input's channel named
    if by_name:
        inputs = _by_channel(inputs, config.inputs, model)
    inputs = _home_expanded(inputs)
    single = isinstance(inputs, (str, Path)) or (isinstance(inputs, (list, tuple)) and len(inputs) == 1)
    if single and (len(names) > 1 or stack_names is not None):
        item = inputs if isinstance(inputs, (str, Path)) else inputs[0]
        stack = open_stack(item, config, model, stack_names, option)
        if stack is not None:
            opened, order = stack
            log.info(order.describe())
            return opened, order.shown()
    if stack_names is not None:
        given = list(inputs) if isinstance(inputs, (list, tuple)) and not _is_pair(inputs) else [inputs]
        refuse_names(given, config.inputs, model, option)
    if isinstance(inputs, (str, Path)) or _is_pair(inputs):
        items = [inputs]
    else:
        try:
            items = list(inputs)
        except TypeError:
            raise ArgumentError(
                f"the inputs are a path, an (array, ijk_to_ras) pair, or a list of them (one per channel), "
                f"got {type(inputs).__name__}"
            ) from None
    if len(items) != len(names):
        stacked = len(items) == 1 and _is_pair(items[0]) and items[0][0].ndim == 4  # channels along an array's axis
        raise InputError(
            f"model '{model}' needs {len(names)} input channel(s) ({', '.join(names)}), got {len(items)}",
            f"an array of 4 dimensions: pass one (array, ijk_to_ras) pair per channel: {', '.join(names)}"
            if stacked and len(names) > 1
            else None,
        )
    check_distinct([_identity(item) for item in items], [_shown(item) for item in items], names)
    if len(names) > 1 and not by_name and all(isinstance(item, (str, Path)) for item in items):
        found = nnunet_file_names(items, option)  # nnU-Net's numbered files: what each holds, by its dataset.json
        if found is not None:
            where = f"{Path(items[0]).name} (channel names from {found[1]})"
            items = order_named_files(items, found[0], config.inputs, model, where)
        else:  # their numbers say no sequence: as segment's command line refuses them
            by_name = ", ".join(f"'{name}': ..." for name in names)
            instead = f"pass {{{by_name}}}" if option == "channels=" else files_named_instead(option)  # evaluate's
            refuse_unnamed_files(items, f"{UNNAMED_FILES_HINT}, or {instead}")
    if len(names) > 1:
        check_places(items, config.inputs)  # a list is in the channel order: a name may not contradict it
    return items, [_named(item, name) for item, name in zip(items, names, strict=True)]


def _by_channel(inputs: dict, channels: Sequence, model: str) -> list:
    """A dict {channel name: input} in the channel order; its names in any case, with the usual synonyms."""
    from .channels import named_channel

    names = [channel.name for channel in channels]
    found: dict[int, object] = {}
    unknown, twice = [], []
    for key, value in inputs.items():
        index = named_channel(str(key), channels)
        if index is None:
            unknown.append(str(key))
        elif index in found:
            keys = ", ".join(str(other) for other in inputs if named_channel(str(other), channels) == index)
            twice.append(f"{names[index]} (as {keys})")
        else:
            found[index] = value
    missing = [name for index, name in enumerate(names) if found.get(index) is None]
    parts = [
        f"{what}: {', '.join(listed)}"
        for what, listed in (("missing", missing), ("unknown", unknown), ("given twice", twice))
        if listed
    ]
    if parts:
        raise InputError(f"model '{model}' needs the channels {', '.join(names)}; " + "; ".join(parts))
    return [found[index] for index in range(len(names))]


def _home_expanded(inputs):
    """``inputs`` with a leading ``~`` of each file path made the home folder, as the command line's
    (:func:`.arguments.user_path`): a path from a script, a notebook or a GUI field has none expanded by a shell."""
    from .arguments import user_path

    def expanded(item):
        return type(item)(user_path(item)) if isinstance(item, (str, Path)) else item

    if isinstance(inputs, list) or (isinstance(inputs, tuple) and not _is_pair(inputs)):
        return [expanded(item) for item in inputs]
    return expanded(inputs)


def _named(item, channel: str) -> str:
    """An input as its volume will be named: a file's name, a Volume's own, else the channel's."""
    return Path(item).name if isinstance(item, (str, Path)) else getattr(item, "name", channel)


def _identity(item):
    """What makes two inputs the same image: a file's resolved path; an array's memory and layout with its place."""
    if isinstance(item, (str, Path)):
        return str(Path(item).resolve())
    array, affine = (item.array, item.affine) if _is_volume(item) else item if _is_pair(item) else (None, None)
    if isinstance(array, np.ndarray):
        return (array.__array_interface__["data"][0], array.shape, array.strides, np.asarray(affine, float).tobytes())
    return id(item)


def _shown(item) -> str:
    return Path(item).name if isinstance(item, (str, Path)) else "the same array"


def _is_pair(item) -> bool:
    return (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], np.ndarray)
        and np.asarray(item[1]).shape == (4, 4)
    )


def _is_volume(item) -> bool:
    from .volumes import Volume

    return isinstance(item, Volume)
