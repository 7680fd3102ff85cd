"""One 4D image holding a multi-channel model's channels, split into one 3D volume per channel, in the model's order.

The Medical Segmentation Decathlon stores brain-tumour MRI so (``Task01_BrainTumour/imagesTr/BRATS_001.nii.gz``:
X x Y x Z x 4, its ``dataset.json`` saying ``"modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}``;
nnU-Net's dataset.json calls it ``"channel_names"``). Its order need not be the package's, and a wrong guess would
swap sequences without a word, so it is never guessed: it comes from the user (``--channels``, ``channels=``) or from
that dataset.json, and the run says which. Everything is checked from the header before any voxel is read.

The same volumes may come as a NRRD (a ``list`` or ``vector`` axis, or ITK's 4th domain axis) or a MetaImage (a 4th
axis, or ``ElementNumberOfChannels``): their headers say so (``readers``' ``stacked``), and they are split alike.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

DATASET_FOLDERS = ("imagesTr", "imagesTs")
"""Folders of the MSD / nnU-Net layout whose parent holds the dataset.json that names the images' channels."""
DATASET_KEYS = ("modality", "channel_names")
"""The dataset.json keys naming each volume (MSD and nnU-Net v1: ``modality``; nnU-Net v2: ``channel_names``)."""
STACK_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass(frozen=True)
class ChannelOrder:
    """What each volume of a 4D image holds: ``names`` as given (volume 0 first), where they come from
    (``source``), and ``volumes``: the volume of each of the package's channels, in the package's order."""

    file: str
    names: tuple[str, ...]
    source: str
    volumes: tuple[int, ...]
    channels: tuple[str, ...]

    def describe(self) -> str:
        pairs = ", ".join(f"{name} = volume {index}" for name, index in zip(self.channels, self.volumes, strict=True))
        return f"{self.file} holds the channels in 4D: {pairs} (order from {self.source})"

    def shown(self) -> list[str]:
        """How each channel's volume is named in messages, in the package's order (``BRATS_001.nii.gz, volume 2``):
        as :func:`_split` names the volumes it reads."""
        return [f"{self.file}, volume {volume}" for volume in self.volumes]

    def report(self) -> dict:
        return {
            "file": self.file,
            "source": self.source,
            "volume_names": list(self.names),
            "volumes": dict(zip(self.channels, self.volumes, strict=True)),
        }


def is_stack_candidate(item) -> bool:
    """Whether ``item`` may be a 4D image to split (a NIfTI, NRRD or MetaImage file), judged from its name alone."""
    if not isinstance(item, (str, Path)):
        return False
    name = Path(item).name.lower()
    return name.endswith(STACK_SUFFIXES) and Path(item).is_file()


def dataset_file(path: str | Path) -> Path | None:
    """The dataset.json that may name the channels of the image ``path``: the one in its own folder, else the one beside
    its ``imagesTr``/``imagesTs`` folder (the MSD and nnU-Net layout); None when there is neither."""
    folder = Path(path).absolute().parent
    places = [folder, folder.parent] if folder.name in DATASET_FOLDERS else [folder]
    for place in places:
        found = place / "dataset.json"
        if found.exists() or found.is_symlink():
            return found
    return None


def dataset_names(
    path: Path, option: str = "--channels", listed_as: str = "", unlisted_refused: bool = True
) -> tuple[list[str], Path] | None:
    """The channel names of the dataset.json of ``path`` (:func:`dataset_file`), and its path; None when there is no
    such file or it names no channels. ``option``: how the caller names the volumes instead; ``listed_as``: another
    file name under which the dataset.json may list ``path`` (nnU-Net v1 lists ``case.nii.gz`` for its per-channel
    files ``case_0000.nii.gz``, ...); ``unlisted_refused`` False: None for an image its dataset.json does not list,
    instead of the refusal.

    Raises:
        InputError: a dataset.json that cannot be read as JSON within :mod:`.json_files`' limits (size, nesting,
            duplicate keys, no regular file), or whose channel names are not numbered 0, 1, ..., or differ between
            its two keys.
    """
    from .json_files import read_json_file

    found = dataset_file(path)
    if found is None:
        return None
    hint = f"fix it, or pass {option} naming its volumes in order"
    try:
        data = read_json_file(found)
    except InputError as error:
        raise InputError(error.message, hint) from None
    names = dataset_channels(data, found, hint)
    if names is None:
        return None
    image = Path(path).absolute()
    depth = len(image.relative_to(found.parent.absolute()).parts)  # imagesTr/NAME, or NAME beside it
    listed = _listed_images(data, depth)
    own = "/".join(image.parts[-depth:])
    # another dataset's image copied in: its order may be another
    if listed and own not in listed and "/".join((*image.parts[-depth:-1], listed_as)) not in listed:
        if not unlisted_refused:
            return None
        raise InputError(
            f"{found} does not list {own} among its images, so its channel names may not be this image's",
            f"pass {option} naming its volumes in order",
        )
    return names, found


NNUNET_FILE = re.compile(r"^(?P<case>.+)_(?P<index>\d{4})(?P<ending>\.[A-Za-z][A-Za-z0-9.]*)$")
"""nnU-Net's per-channel file name, ``<case>_<XXXX><ending>``: XXXX numbers the channel in its dataset.json."""


def nnunet_indices(files: Sequence) -> list[int] | None:
    """The channel numbers of nnU-Net per-channel files of one case (``case_0000.nii.gz``, ``case_0001.nii.gz``, ...;
    each number once, one case, one folder), else None."""
    found = [NNUNET_FILE.match(Path(file).name) if isinstance(file, (str, Path)) else None for file in files]
    if len(files) < 2 or None in found:
        return None
    if len({(m["case"], m["ending"], str(Path(f).absolute().parent)) for m, f in zip(found, files, strict=True)}) != 1:
        return None
    indices = [int(m["index"]) for m in found]
    return indices if len(set(indices)) == len(indices) else None


def nnunet_file_names(files: Sequence, option: str) -> tuple[list[str], Path] | None:
    """What each of nnU-Net's per-channel files of one case holds (``case_0002.nii.gz``: channel 2 of the
    ``channel_names`` of its dataset.json, :func:`dataset_file`) and that dataset.json; None for
    other files, or without such a dataset.json or one that lists other images (an MSD dataset's 4D images).
    ``option``: how the caller names the files' channels instead.

    Raises:
        InputError: a dataset.json that cannot be read (see :func:`dataset_names`), or a channel number it lacks.
    """
    indices = nnunet_indices(files)
    if indices is None:
        return None
    case = NNUNET_FILE.match(Path(files[0]).name)
    instead = files_named_instead(option)
    try:
        found = dataset_names(Path(files[0]), option, case["case"] + case["ending"], unlisted_refused=False)
    except InputError as error:  # its hint names --channels of a 4D image, which several files cannot take
        raise InputError(error.message, f"fix it, or {instead}") from None
    if found is None:
        return None
    names, where = found
    for file, index in zip(files, indices, strict=True):
        if index >= len(names):
            raise InputError(
                f"{Path(file).name} is channel {index}, but {where} names {len(names)} channels ({', '.join(names)})",
                f"fix the file name or the dataset.json, or {instead}",
            )
    return [names[index] for index in indices], where


def files_named_instead(option: str) -> str:
    """How a caller that takes names as ``option`` names what each of several channel files holds, instead of their
    dataset.json (``segment``'s and ``evaluate``'s ``--channels`` and ``segment()``'s ``channels=`` name a 4D image's
    volumes only). Short: a command line's error is one line, whose hint is cut past half of it (``batch --help``
    says what ``--channels`` names)."""
    if option == "--channels":
        return "run batch on them with --channels"
    if option == "channels=":
        return "pass {channel name: file}"
    return f"name what each holds in {option}"


def refuse_unnamed_files(files: Sequence, hint: str, where: str = "") -> None:
    """Refuse nnU-Net channel files (``case_0000.nii.gz`` ...: :func:`nnunet_indices`) that nothing names, given to a
    multi-channel model: their numbers are a dataset's channels, and datasets number them otherwise (BraTS
    conversions put FLAIR or T1 first), so the given order would swap sequences without a word. ``where``: the case,
    as messages begin.

    Raises:
        InputError: saying nothing names them, with ``hint``.
    """
    if nnunet_indices(files) is not None:
        prefix = f"{where}: " if where else ""
        raise InputError(
            f"{prefix}nothing says what {Path(files[0]).name} and its other nnU-Net channel files hold", hint
        )


UNNAMED_FILES_HINT = "add a dataset.json naming their channels beside them"
"""How the channels of nnU-Net channel files that nothing names are named, on every path (beside them: the first place
:func:`dataset_file` looks). Short, as :func:`files_named_instead` says."""


def _listed_images(data: dict, depth: int = 2) -> set[str]:
    """The images an MSD dataset.json lists in "training" and "test", as their last ``depth`` parts (``imagesTr/NAME``);
    empty when it lists none (nnU-Net v2's dataset.json does not)."""
    entries = [*(data.get("training") or []), *(data.get("test") or [])]
    paths = [e.get("image") if isinstance(e, dict) else e for e in entries if isinstance(e, (dict, str))]
    flat = [p for item in paths for p in (item if isinstance(item, list) else [item]) if isinstance(p, str)]
    return {"/".join(Path(p).parts[-depth:]) for p in flat}


def dataset_channels(data, where: Path, hint: str | None = None) -> list[str] | None:
    """The channel names of the dataset.json ``data`` (read from ``where``): its ``modality`` (MSD, nnU-Net v1) or
    ``channel_names`` (nnU-Net v2) ``{"0": "FLAIR", "1": "T1w", ...}`` in the order of their numbers; None when it
    has neither.

    Raises:
        InputError: a table that is no object numbered 0, 1, ... without gaps, or two tables that differ.
    """
    tables = {key: data[key] for key in DATASET_KEYS if isinstance(data, dict) and key in data}
    for key, table in tables.items():
        if not isinstance(table, dict) or set(table) != {str(i) for i in range(len(table))}:
            raise InputError(f"{where} names its channels in '{key}' without numbering them 0, 1, ...", hint)
    names = {key: [str(table[str(i)]) for i in range(len(table))] for key, table in tables.items()}
    if len({tuple(listed) for listed in names.values()}) > 1:
        raise InputError(f"{where} names its channels twice, differently, in {' and '.join(map(repr, names))}", hint)
    return next(iter(names.values()), None)


def refuse_stacked(opened, name: str, channels: Sequence, model: str, channel: str = "") -> None:
    """Refuse an opened input (:class:`.volumes.OpenedVolume`) that holds several volumes where one 3D volume is
    needed (one input per channel; ``channel``: the one it is given for), or more than 4 dimensions, from its header.

    Raises:
        InputError: saying what the image holds and what to pass instead.
    """
    stacked = opened.stacked
    if not stacked:
        return
    listed = ", ".join(channel.name for channel in channels)
    if len(stacked) > 1:
        raise InputError(
            f"{name} has {3 + len(stacked)} dimensions ({' x '.join(map(str, stacked))} after the spatial ones)",
            "save each volume as a 3D file"
            + (f", or all as one 4D image (X x Y x Z x {len(channels)})" if len(channels) > 1 else ""),
        )
    if opened.stacked_axis:
        raise InputError(
            f"{name} is a 4D image whose 4th axis is {opened.stacked_axis}, not channels",
            "pass one 3D volume per channel" if len(channels) > 1 else "pass one 3D volume (e.g. one time point)",
        )
    if len(channels) == 1:
        raise InputError(
            f"{name} holds {stacked[0]} volumes (a 4D image); model '{model}' takes one 3D volume ({listed})",
            "pass a 3D volume, or choose a model with as many input channels",
        )
    raise InputError(
        f"{name} is a 4D image of {stacked[0]} volumes, given for channel {channel or channels[0].name}",
        "give one 3D volume per channel, or the 4D image alone with --channels naming its volumes",
    )


def refuse_names(inputs: Sequence, channels: Sequence, model: str, option: str = "--channels") -> None:
    """Refuse ``option`` (the names of one 4D image's volumes) where ``inputs`` are not one 4D image of the package's
    ``channels``, saying what was given instead.

    Raises:
        InputError: always.
    """
    item = inputs[0] if len(inputs) == 1 else None
    name = Path(item).name if isinstance(item, (str, Path)) else ""
    if len(channels) == 1:
        problem = f"a multi-channel 4D image; model '{model}' takes one 3D volume ({channels[0].name})"
        raise InputError(f"{option} names the volumes of {problem}", f"drop {option}")
    if len(inputs) != 1:
        raise InputError(
            f"{option} names the volumes of one 4D image, but {len(inputs)} inputs are given",
            f"pass the 4D image alone, or drop {option} and give one 3D input per channel",
        )
    if not name:
        raise InputError(
            f"{option} names the volumes of a 4D image file, not of an array",
            "pass one (array, ijk_to_ras) pair per channel, in the model's channel order",
        )
    if Path(item).is_file() and not name.lower().endswith(STACK_SUFFIXES):
        raise InputError(
            f"{option} names the volumes of a 4D image; {name} is no NIfTI, NRRD or MetaImage file",
            "save it as .nii.gz (e.g. with 3D Slicer or SimpleITK), or pass one 3D file per channel",
        )
    raise InputError(
        f"{option} names the volumes of a 4D image, but the input is no 4D image",
        f"drop {option}, or pass the 4D image alone",
    )


def open_stack(
    item,
    config,
    model: str,
    names: Sequence[str] | None = None,
    option: str = "--channels",
    purpose: str = "segmenting",
):
    """The package ``config``'s channels from one 4D image ``item`` (NIfTI, NRRD or MetaImage): (one
    :class:`.volumes.OpenedVolume` per channel, in the package's order, a :class:`ChannelOrder`), or None when ``item``
    is no 4D image. ``names``:
    what each volume holds, in order (else its dataset.json says: :func:`dataset_file`); ``option``: how the
    caller passes them, for messages; ``purpose``: what the image is read for, as :func:`.volumes.read_volume`'s. The
    header is checked now; the image is read once, when a channel is read.

    Raises:
        InputError: a time axis, more than 4 dimensions, a volume count other than the channel count, no order, or
            names that do not name the channels one to one.
    """
    from .channels import match_names
    from .readers import open_image

    channels = config.inputs
    if names is not None and len(channels) == 1:
        refuse_names([item], channels, model, option)
    if not is_stack_candidate(item):
        return None
    path = Path(item)
    opened = open_image(path, purpose=purpose)  # the header: the whole 4D read is checked against the memory limit
    if not opened.stacked:
        return None
    if len(opened.stacked) > 1 or opened.stacked_axis:  # 5D, or a time series
        refuse_stacked(opened, path.name, channels, model)
    count = opened.stacked[0]
    listed = ", ".join(channel.name for channel in channels)
    if count != len(channels):
        raise InputError(
            f"{path.name} holds {count} volumes along its 4th axis; model '{model}' needs {len(channels)} channels "
            f"({listed})",
            f"pass a 4D image of {len(channels)} volumes, or one 3D file per channel",
        )
    if names is not None:
        names, source = [str(name) for name in names], option
        if len(names) != count:
            raise InputError(
                f"{option} names {len(names)} volumes; {path.name} holds {count}",
                f"name each of its {count} volumes in order, e.g. {_example(option, channels)}",
            )
    else:
        found = dataset_names(path, option)
        if found is None:
            raise InputError(
                f"{path.name} holds {count} volumes (a 4D image), and nothing says which channel each one is",
                f"name its volumes in order, e.g. {_example(option, channels)}, "
                "or put its dataset.json beside imagesTr/",
            )
        names, where = found
        source = str(where)
        if len(names) != count:
            raise InputError(
                f"{where} names {len(names)} channels; {path.name} holds {count} volumes",
                f"pass {option} naming each of its {count} volumes in order",
            )
    shown = option if source == option else "dataset.json"
    where = [f"volume {index} in {shown}" for index in range(count)]
    try:
        channel_of = match_names(names, channels, model, where)
    except InputError as error:
        if source == option:
            raise
        # the dataset.json's own names (e.g. nnU-Net v2's normalisation schemes "noNorm", "zscore"): said by the user
        raise InputError(error.message, f"pass {option} naming its volumes in order") from None
    volumes = tuple(channel_of.index(c) for c in range(len(channels)))
    order = ChannelOrder(path.name, tuple(names), source, volumes, tuple(c.name for c in channels))
    read = _shared_read(opened, path.name, count, purpose)
    per_channel = [_channel(opened, read, volume, count) for volume in volumes]
    return per_channel, order


def _example(option: str, channels: Sequence) -> str:
    """How ``option`` names the volumes: as ``segment()``'s keyword, the command line's option or a datalist's JSON."""
    names = [channel.name for channel in channels]
    if option.endswith("="):
        return f"{option}{names!r}"
    return f"{option} {','.join(names)}" if option.startswith("--") else f'"channels": {json.dumps(names)}'


def _channel(opened, read, volume: int, count: int):
    from .volumes import OpenedVolume

    return OpenedVolume(opened.values // count, lambda: read()[volume], "", opened.grid)


def _shared_read(opened, name: str, count: int, purpose: str):
    """Read and split the image once, whichever channel asks first (a 4D read holds every channel at once)."""
    lock, kept = threading.Lock(), []

    def read():
        with lock:
            if not kept:
                kept.extend(_split(opened, name, count, purpose))
            return kept

    return read


def _split(opened, name: str, count: int, purpose: str) -> list:
    """The ``count`` volumes of the opened image, as ITK reads them: a 4D image (NIfTI; ITK's NRRD and MetaImage) or a
    3D image of ``count`` components per voxel (a NRRD ``list``/``vector`` axis, MetaImage channels), or a 4D image of
    one such (a 4th axis of 1: SimpleITK's ``JoinSeries`` of one multi-channel image)."""
    import numpy as np
    import SimpleITK as sitk

    from .geometry import affine_of_image
    from .volumes import Volume, check_volume

    image, warnings = opened()
    dimension, components = image.GetDimension(), image.GetNumberOfComponentsPerPixel()
    four_d = dimension == 4 and image.GetSize()[3] == count and components == 1
    one_of_channels = dimension == 4 and image.GetSize()[3] == 1 and components == count
    if not (four_d or one_of_channels or (dimension == 3 and components == count)):
        raise InputError(f"{name} was not read as {count} volumes of one value per voxel", "export it again")
    spacing = image.GetSpacing()[:3]
    if not all(s > 0 and np.isfinite(s) for s in spacing):
        raise InputError(f"{name} has zero or negative voxel spacing {spacing}", "fix the image header")
    affine = affine_of_image(image)  # the 3D geometry of its volumes
    array = sitk.GetArrayFromImage(image)  # (volume, k, j, i), or (k, j, i, volume), or (1, k, j, i, volume)
    array = array[0] if one_of_channels else array
    del image
    volumes = []
    for index in range(count):
        values = array[index] if four_d else array[..., index]
        volume = Volume(values.transpose(2, 1, 0), affine.copy(), f"{name}, volume {index}")
        volume.warnings = list(warnings) if index == 0 else []
        check_volume(volume, purpose, opened.finite_checked)
        volumes.append(volume)
    return volumes
