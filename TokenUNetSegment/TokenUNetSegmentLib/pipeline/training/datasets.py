"""Readers that turn public dataset layouts into training datalists, with the structure names matched to a
model's labels (words in any order, underscores or spaces, synonyms such as AMOS's "postcava").

- TotalSegmentator (Wasserthal et al. 2023): ``ROOT/<case>/ct.nii.gz`` and ``ROOT/<case>/segmentations/
  <structure>.nii.gz`` (one binary mask per structure), ``ROOT/meta.csv`` (``;``-separated, columns
  ``image_id`` and ``split`` = train / val / test).
- Medical Segmentation Decathlon and nnU-Net raw datasets: ``ROOT/dataset.json`` with ``labels`` (MSD:
  ``{"1": "liver"}``; nnU-Net v2: ``{"liver": 1}``), ``imagesTr/``, ``labelsTr/`` (MSD lists its
  ``training`` pairs; nnU-Net v2 names channels ``<case>_0000<ending>``). AMOS 2022 ships this layout.
- Folders of images and label maps paired by the number in their names (BTCV's ``img/img0001.nii.gz`` and
  ``label/label0001.nii.gz``) with a known table (``btcv``, ``amos``, ``totalsegmentator``) or a JSON one.

Each reader returns ``(datalist, report)``: the datalist (``dataroot`` absolute, paths relative to it) and
which model labels were found. A case whose table lacks some model labels is marked ``"partial": true``.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from ..channel_stack import NNUNET_FILE, dataset_channels
from ..errors import InputError, TokenUNetError
from ..json_files import read_json_file
from ..special_files import special_entries, special_kind
from .label_tables import name_key, named_table

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
UNREAD = 1 << 62  # the memory "limit" of a header read for what it declares: reading is for train to check


def _is_image(path: Path) -> bool:
    """Whether ``path`` is an image file by its name; hidden files (macOS's ``._scan.nii.gz`` metadata) are not."""
    return not path.name.startswith(".") and path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def match_report(names: list[str], model_labels: list[str] | None) -> dict:
    """Which model labels a dataset's structure names provide (by :func:`name_key`)."""
    if not model_labels:
        return {"matched": [], "missing": [], "structures": len(names)}
    keys = {name_key(n) for n in names}
    matched = [label for label in model_labels if name_key(label) in keys]
    return {
        "matched": matched,
        "missing": [label for label in model_labels if label not in matched],
        "structures": len(names),
    }


def _finish(
    root: Path,
    training: list[dict],
    validation: list[dict],
    model_labels,
    names_seen: list[str],
    source: str,
    skipped=(),
    channels=None,
):
    """The datalist and its report; ``channels``: the dataset's channel names, kept as MSD's ``"modality"`` so that
    ``train`` can match them to its configuration (an MRI dataset is refused for a CT model)."""
    report = match_report(names_seen, model_labels)
    report["skipped"] = list(skipped)  # what was found but not used, and why
    if model_labels and not report["matched"]:
        raise InputError(
            f"none of the model's labels ({', '.join(model_labels)}) is among the dataset's structures",
            "check that the configuration and the dataset describe the same anatomy",
        )
    if not training and validation:  # found, but all held out
        raise InputError(
            f"all {len(validation)} cases found in {root} went to validation, none to training",
            "name the training split in --splits (meta.csv)"
            if source == SOURCES[0]
            else "use a smaller --validation-fraction",
        )
    if not training:
        raise InputError(f"no training cases found in {root}")
    datalist = {"description": f"{source} dataset at {root}", "dataroot": str(root.resolve()), "training": training}
    if channels:
        datalist["modality"] = {str(index): name for index, name in enumerate(channels)}
    if validation:
        datalist["validation"] = validation
    return datalist, report


SOURCES = ("TotalSegmentator", "Decathlon / nnU-Net", "image/label folders")


def written_by_datalist(path: Path) -> bool:
    """Whether the file at ``path`` is a datalist this module wrote (its description names a layout of
    :data:`SOURCES`), which the ``datalist`` command may replace; a datalist written by hand is not."""
    try:
        value = read_json_file(path)
    except TokenUNetError:
        return False
    description = value.get("description") if isinstance(value, dict) else None
    return isinstance(description, str) and description.startswith(tuple(f"{s} dataset at " for s in SOURCES))


def listed_files(datalist: dict):
    """Each file a datalist of these readers lists, as ``(path, what it is)``: the images and label maps (or
    TotalSegmentator's masks) of every case, the paths joined to its ``dataroot``."""
    root = Path(datalist["dataroot"])
    for entry in (*datalist.get("training", ()), *datalist.get("validation", ())):
        case = entry["name"]
        images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
        names = entry.get("channels") if len(images) > 1 else None
        for index, image in enumerate(images):
            yield root / image, f"the {names[index] + ' ' if names else ''}image of case {case}"
        if isinstance(entry["label"], dict):
            for structure, mask in entry["label"].items():
                yield root / mask, f"the {structure} mask of case {case}"
        else:
            yield root / entry["label"], f"the label map of case {case}"


def _partial(names: list[str], model_labels) -> bool:
    keys = {name_key(n) for n in names}
    return bool(model_labels) and any(name_key(label) not in keys for label in model_labels)


def totalsegmentator(root, model_labels=None, splits=("train",), validation_splits=("val",), structures="all"):
    """Datalist of a TotalSegmentator-style dataset. ``structures``: "all" masks of each case (full label
    maps, which also feed synthesis) or "model" (only those named like a model label: faster to read)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder not found: {root}")
    split_of = {}
    meta = root / "meta.csv"
    _refuse_special(meta, "meta.csv", "replace it with the dataset's meta.csv file, or remove it")
    if meta.is_file():
        with open(meta, newline="", encoding="utf-8-sig") as stream:  # Excel's "CSV UTF-8" starts with a BOM
            sample = stream.read(4096)
            stream.seek(0)
            reader = csv.DictReader(stream, delimiter=";" if sample.count(";") >= sample.count(",") else ",")
            for row in reader:
                if row.get("image_id"):
                    split_of[row["image_id"].strip()] = (row.get("split") or "train").strip()
    training, validation, seen, skipped = [], [], set(), []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        skipped += _special_notes(folder, f"{folder.name}/")
        ct = next((folder / f"ct{s}" for s in IMAGE_SUFFIXES if (folder / f"ct{s}").is_file()), None)
        masks_dir = folder / "segmentations"
        if ct is None or not masks_dir.is_dir():
            if ct is not None or masks_dir.is_dir():  # half a case (other folders are not cases)
                skipped.append(f"{folder.name} (no {'segmentations/' if ct else 'ct.nii.gz'})")
            continue
        masks = {_stem(m): m for m in sorted(masks_dir.iterdir()) if _is_image(m)}
        skipped += _special_notes(masks_dir, f"{folder.name}/segmentations/")
        if structures == "model" and model_labels:
            wanted = {name_key(label) for label in model_labels}
            masks = {n: m for n, m in masks.items() if name_key(n) in wanted}
        if not masks:
            continue
        seen.update(masks)
        entry = {
            "name": folder.name,
            "patient": folder.name,
            "image": str(ct.relative_to(root)),
            "label": {n: str(m.relative_to(root)) for n, m in masks.items()},
        }
        entry["partial"] = _partial(list(masks), model_labels) if structures == "all" else True
        split = split_of.get(folder.name, "train")
        if split in splits:
            training.append(entry)
        elif split in validation_splits:
            validation.append(entry)
    return _finish(root, training, validation, model_labels, sorted(seen), SOURCES[0], skipped, ["CT"])


MODALITIES = {"CT": "CT", "MR": "MR", "MRI": "MR"}
"""A one-channel dataset.json's channel names that say a modality, as that modality."""
MR_SEQUENCES = {"adc", "dwi", "pd", "pdw", "swi", "t2star", "dce", "dixon"}
"""One-channel MRI datasets' channel names besides those of :data:`..channels.SEQUENCE_SYNONYMS` (T1, T2, FLAIR...):
MSD Prostate's ``ADC``, diffusion, proton density."""


def named_modality(name) -> str | None:
    """The modality ("CT" or "MR") that a channel or dataset name says: "CT", "ct", "MRI", an MRI sequence ("T2w",
    "FLAIR", "ADC") or a name starting with MR ("MR T2"); None when it says none (nnU-Net's "noNorm", "zscore")."""
    from ..channels import SEQUENCE_SYNONYMS, channel_key

    text = str(name).strip()
    if text.upper() in MODALITIES:
        return MODALITIES[text.upper()]
    if channel_key(text) in SEQUENCE_SYNONYMS or channel_key(text) in MR_SEQUENCES or re.match(r"mri?\b", text, re.I):
        return "MR"
    return None


CONFIGURATION_HINT = "choose the configuration of a model for this dataset's images"
"""What to do about a dataset whose images a training configuration does not take."""
MODEL_HINT = "choose a model for this datalist's images (--model)"
"""What to do about a datalist whose images the model a command runs does not take."""


def _refuse_another_modality(name: str, channel, model: str, where, hint: str = CONFIGURATION_HINT) -> None:
    """Refuse a dataset channel ``name`` that says another modality than the model's input ``channel`` takes."""
    said = named_modality(name)
    wanted = named_modality(channel.modality) or channel.modality.strip().upper()
    if said and wanted and said != wanted:
        raise InputError(
            f"{where} names {said} images ({name}); model '{model}' takes {channel.modality}",
            hint,
        )


def check_datalist_modality(data: dict, inputs, model: str, where, hint: str = CONFIGURATION_HINT) -> None:
    """Match what a datalist (:func:`.data.read_datalist`) says its images are to a configuration's ``inputs``:
    its channel names one to one (:func:`model_channel_order`), or its one ``"modality"`` text ("CT") to every input.

    Raises:
        InputError: as :func:`model_channel_order`, or a modality text that no input takes.
    """
    if data.get("channel_names"):
        model_channel_order(data["channel_names"], inputs, model, where, hint)
    elif data.get("modality"):
        for channel in inputs:
            _refuse_another_modality(data["modality"], channel, model, where, hint)


def check_datalist_file_modality(path: Path, config) -> None:
    """:func:`check_datalist_modality` for a datalist that a command reads its own way (``batch --datalist``,
    ``robustness --datalist``): what the file says its images are against the package configuration ``config``'s
    inputs, before a case is read; a datalist that says nothing passes.

    Raises:
        InputError: as :func:`check_datalist_modality`, or a malformed channel table.
    """
    from .data import images_said

    data = read_json_file(path, f"the datalist {path}")
    if isinstance(data, dict):
        check_datalist_modality(images_said(data, path), config.inputs, config.id, path, MODEL_HINT)


def model_channel_order(
    channels: list[str], inputs, model: str, where: Path, hint: str = CONFIGURATION_HINT
) -> list[int]:
    """For each of a model's input channels (``inputs``, the configuration's), the dataset channel that holds it.

    Raises:
        InputError: another channel count, a dataset channel naming no model channel or two naming one, or a
            one-channel dataset whose name says another modality (CT, MR) than the model's.
    """
    from ..channels import match_names

    listed = ", ".join(channel.name for channel in inputs)
    if len(channels) != len(inputs):
        plural = "s" if len(channels) > 1 else ""
        raise InputError(
            f"{where} names {len(channels)} channel{plural} ({', '.join(channels)}); model '{model}' takes "
            f"{len(inputs)} ({listed})",
            hint,
        )
    if len(inputs) == 1:  # one channel: its name says a modality at most ("CT", "MRI", "T2"), never one to match
        _refuse_another_modality(channels[0], inputs[0], model, where, hint)
        return [0]
    chosen = match_names(channels, inputs, model, [f"channel {i} in dataset.json" for i in range(len(channels))])
    return [chosen.index(channel) for channel in range(len(inputs))]


def decathlon(root, model_labels=None, validation_fraction: float = 0.0, inputs=None, model: str = "the model"):
    """Datalist of a Medical Segmentation Decathlon / nnU-Net raw / AMOS dataset (``dataset.json``).

    ``inputs``: the model configuration's input channels; the dataset's channels must name them one to one, and
    a case's per-channel files are listed in the model's channel order (a 4D image keeps its volumes' names,
    ``"channels"``, which the training loader maps)."""
    root = Path(root)
    where = root / "dataset.json"
    spec = read_json_file(where)
    if not isinstance(spec, dict):
        raise InputError(f"{where} is not a JSON object", "see the Medical Segmentation Decathlon's dataset.json")
    table = _decathlon_labels(spec.get("labels"), where)
    named = dataset_channels(spec, where, 'e.g. "channel_names": {"0": "CT"} (nnU-Net v2)')
    channels = named or ["CT"]
    if inputs is None:  # with a configuration, matching its channels says which of them two names share
        _refuse_twice_named(channels, where)
    order = model_channel_order(channels, inputs, model, where) if inputs is not None else None
    pairs, skipped = [], []
    training = spec.get("training")
    if training is not None and not isinstance(training, list):
        raise InputError(f"{where}: 'training' must be a list of {{image, label}} pairs")
    if training:  # MSD lists its pairs
        for index, item in enumerate(training):
            if not isinstance(item, dict) or not item.get("image") or not isinstance(item.get("label"), str):
                raise InputError(f"{where}: training[{index}] needs 'image' and 'label'", "list both file paths")
            image = item["image"] if isinstance(item["image"], list) else [item["image"]]
            if not all(isinstance(i, str) for i in image):
                raise InputError(f"{where}: training[{index}]: 'image' must be a file path or a list of them")
            pairs.append((image, item["label"]))
    else:  # nnU-Net v2: cases from labelsTr, channels <case>_<XXXX><ending> in imagesTr
        ending = str(spec.get("file_ending", ".nii.gz"))
        for label in sorted((root / "labelsTr").glob(f"[!.]*{ending}")):  # hidden: macOS's ._case metadata
            if special_kind(label) is not None:  # a FIFO: never opened (it would block)
                skipped.append(f"labelsTr/{label.name} ({special_kind(label)})")
                continue
            case = label.name[: -len(ending)]
            images = [f"imagesTr/{case}_{c:04d}{ending}" for c in range(len(channels))]
            pairs.append((images, f"labelsTr/{label.name}"))
    entries = []
    for images, label in pairs:
        images = [str(Path(i)) for i in images]  # "./imagesTr/x" -> "imagesTr/x"
        label = str(Path(label))
        for part in (*images, label):
            _refuse_special(root / part, part, "replace it with the image file, or take the case out of the dataset")
        missing = [p for p in [*images, label] if not (root / p).is_file()]
        if missing and training:
            raise InputError(f"{root}: file listed in dataset.json not found: {missing[0]}")
        if missing:  # nnU-Net v2: a label in labelsTr without all its channels in imagesTr
            raise InputError(
                f"{root}: {label} has no image {missing[0]}",
                "every case in labelsTr needs one file per channel_names entry in imagesTr",
            )
        _check_images(root, images, channels, where)
        names = list(channels)  # what each file holds (one file per channel), or each volume of one 4D image
        if order is not None and len(images) == len(order) > 1:  # one file per channel: in the model's order
            images, names = [images[index] for index in order], [names[index] for index in order]
        entry = {"name": _stem(Path(label)), "image": images if len(images) > 1 else images[0], "label": label}
        if len(channels) > 1:  # named, never guessed from the order: train and batch put each in its channel by name
            entry["channels"] = names
        entry["labels"] = {str(v): n for v, n in table.items()}
        if _partial(list(table.values()), model_labels):
            entry["partial"] = True
        entries.append(entry)
    count = int(round(len(entries) * validation_fraction))
    training, validation = entries[count:], entries[:count]
    datalist, report = _finish(
        root, training, validation, model_labels, list(table.values()), SOURCES[1], skipped, named
    )
    if order is not None and len(order) > 1:
        report["channels"] = [(channel.name, channels[index]) for channel, index in zip(inputs, order, strict=True)]
    return datalist, report


def _refuse_twice_named(channels: list[str], where: Path) -> None:
    """Refuse a dataset.json naming one channel twice (``T1`` and ``T1w``, or ``zscore`` twice): its files are put in
    a model's channels by name, and such names cannot tell them apart."""
    from ..channels import channel_key

    keys = [channel_key(name) for name in channels]
    for second, key in enumerate(keys):
        first = keys.index(key)
        if first != second:
            raise InputError(
                f"{where} names channels {first} and {second} alike ({channels[first]!r}, {channels[second]!r}): "
                "nothing tells their images apart",
                "give each channel its own name in dataset.json (e.g. T1, T1c, T2, FLAIR)",
            )


def _check_images(root: Path, images: list[str], channels: list[str], where: Path) -> None:
    """Each image of a case holds what the dataset.json says, from its header: one 3D volume per channel file, or
    one 4D image of as many volumes as channels (before: a 3D image among an MSD dataset's 4D ones was found by
    ``train`` only when it reached that case).

    Raises:
        InputError: naming the file, what it holds and what the dataset.json says.
    """
    from ..readers import open_image

    listed = f"{len(channels)} channel{'s' if len(channels) > 1 else ''} ({', '.join(channels)})"
    if len(images) > 1 and len(images) != len(channels):
        raise InputError(
            f"{where} lists {len(images)} images for the case of {images[0]}, but names {listed}",
            "list one file per channel, in its channel_names order",
        )
    wanted = len(channels) if len(images) == 1 else 1
    for image in images:
        opened = open_image(root / image, limit=UNREAD)  # a header only: no voxel is read here
        volumes = opened.stacked[0] if len(opened.stacked) == 1 and not opened.stacked_axis else 1
        odd = opened.stacked_axis or len(opened.stacked) > 1 or volumes != wanted
        if not odd:
            continue
        held = (
            f"is a 4D image along {opened.stacked_axis}"
            if opened.stacked_axis
            else f"has {3 + len(opened.stacked)} dimensions"
            if len(opened.stacked) > 1
            else f"holds {volumes} volumes (a 4D image)"
            if volumes > 1
            else "is one 3D volume"
        )
        expected = f"one 4D image of {len(channels)} volumes per case" if wanted > 1 else "one 3D volume per file"
        raise InputError(
            f"{image} {held}, but {where} names {listed}: {expected}",
            "convert that case's image to match the others, or leave the case out of the dataset",
        )


def _decathlon_labels(labels, where: Path) -> dict[int, str]:
    """The label file values -> names of a dataset.json: MSD ``{"1": "liver"}`` or nnU-Net v2 ``{"liver": 1}``.
    nnU-Net v2 region-based labels (``{"liver": [1, 2]}``: overlapping regions, trained with sigmoids) are no
    label map and are refused; a region of one value is that value."""
    if not isinstance(labels, dict):
        raise InputError(f"{where}: 'labels' must map label values to names", 'e.g. {"0": "background", "1": "liver"}')
    table = {}
    for key, value in labels.items():
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if str(key).isdigit() and isinstance(value, str):  # MSD: {"1": "liver"}
            table[int(key)] = value
        elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:  # nnU-Net v2: {"liver": 1}
            table[value] = str(key)
        elif isinstance(value, list):
            raise InputError(
                f"{where}: label '{key}' is region-based ({value}); overlapping regions are no label map",
                'list each value once with its own name (nnU-Net v2: {"name": value})',
            )
        else:
            raise InputError(f"{where}: label {key!r}: {str(value)[:30]!r} is no label value", "use whole numbers >= 0")
    table = {v: n for v, n in table.items() if v != 0 and name_key(n) != "background"}
    if not table:
        raise InputError(f"{where} names no labels")
    return table


def folders(images, labels, table, model_labels=None, validation_fraction: float = 0.0):
    """Datalist of images and label maps in two folders, paired by the last number in their names."""
    images, labels = Path(images), Path(labels)
    for folder in (images, labels):
        if not folder.is_dir():
            raise InputError(f"folder not found: {folder}")
    if os.path.samefile(images, labels):  # each image would be paired with itself as its label map
        raise InputError(
            f"--images and --labels name one folder ({labels})",
            "give the folder of label maps as --labels",
        )
    try:
        names = named_table(table) if not (isinstance(table, str) and table.endswith(".json")) else None
    except KeyError:
        raise InputError(f"unknown label table '{table}'", "use btcv, amos, totalsegmentator or a JSON file") from None
    if names is None:
        from ..evaluate import name_table  # checks every entry of the table

        names = name_table(table, table)

    def number(path: Path) -> str | None:
        found = re.findall(r"\d+", _stem(path))
        return found[-1].lstrip("0") or "0" if found else None

    def by_number(folder: Path) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for path in sorted(p for p in folder.iterdir() if _is_image(p) and number(p) is not None):
            if number(path) in found:
                channel_files = all(NNUNET_FILE.match(p.name) for p in (found[number(path)], path))
                raise InputError(
                    f"{found[number(path)].name} and {path.name} in {folder} both have case number {number(path)}",
                    "they look like nnU-Net channel files (_0000, ...): use the decathlon layout with its dataset.json"
                    if channel_files
                    else "keep one file per case in the folder",
                )
            found[number(path)] = path
        return found

    # absolute but not resolved: a folder of symbolic links stays the dataset's root (read_datalist follows them)
    images, labels = Path(os.path.abspath(images)), Path(os.path.abspath(labels))
    label_by_number = by_number(labels)
    root = _common_parent(images, labels)
    entries, image_by_number = [], by_number(images)
    skipped = [f"{p.name} (no label)" for n, p in image_by_number.items() if n not in label_by_number]
    skipped += [f"{p.name} (no image)" for n, p in label_by_number.items() if n not in image_by_number]
    skipped += _special_notes(images, "") + _special_notes(labels, "")
    for key, image in image_by_number.items():
        label = label_by_number.get(key)
        if label is None:
            continue
        entry = {
            "name": _stem(image),
            "image": str(image.relative_to(root)),
            "label": str(label.relative_to(root)),
            "labels": {str(v): n for v, n in names.items()},
        }
        if _partial(list(names.values()), model_labels):
            entry["partial"] = True
        entries.append(entry)
    count = int(round(len(entries) * validation_fraction))
    names = list(names.values())
    return _finish(root, entries[count:], entries[:count], model_labels, names, SOURCES[2], skipped)


def _special_notes(folder: Path, prefix: str) -> list[str]:
    """``prefix + name (what it is)`` of each entry of ``folder`` that is no file nor folder (a FIFO, a socket, a
    device): left out unopened, and said."""
    return [f"{prefix}{name} ({kind})" for name, kind in special_entries(folder)]


def _refuse_special(path: Path, shown: str, hint: str) -> None:
    """Refuse ``path`` when it is a FIFO, a socket or a device (opening a FIFO would block).

    Raises:
        InputError: saying what it is.
    """
    kind = special_kind(path)
    if kind is not None:
        raise InputError(f"{shown} is {kind}, not a file", hint)


def _common_parent(a: Path, b: Path) -> Path:
    parts = []
    for x, y in zip(a.parts, b.parts, strict=False):
        if x != y:
            break
        parts.append(x)
    return Path(*parts)
