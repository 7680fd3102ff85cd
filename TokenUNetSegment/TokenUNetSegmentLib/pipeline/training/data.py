"""Training data: a decathlon-style datalist and its cases, preprocessed exactly as ``segment()`` does
(orientation, spacing, foreground crop, padding to the window), with the raw HU image and a tissue map kept
for synthesis and intensity augmentation."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..channel_stack import dataset_channels, open_stack
from ..checksums import sha256_file
from ..errors import InputError
from ..geometry import box_distance_mm, overlaps, resample, same_grid
from ..metadata import parse_config
from ..preprocess import prepare
from ..volumes import read_volume
from .label_tables import name_key, named_table
from .tissues import tissue_map, tissue_means

log = logging.getLogger(__name__)


@dataclass
class Case:
    """One preprocessed case on the model grid (the region ``segment()`` would feed the network).

    ``image`` (C, X, Y, Z) is normalised as the package does; ``hu`` holds the same region before the CT
    window (None for other intensity methods); ``label`` (X, Y, Z) uint8 holds package label values (or
    ``UNKNOWN``); ``tissues`` the tissue map (see :mod:`.tissues`); ``pad`` the value per channel that
    fills voxels outside the scan.
    """

    name: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    files: dict[str, str]
    missing: tuple[int, ...] = ()  # package label values not annotated in a partially labelled case
    repeat: int = 1  # relative sampling weight
    hu: np.ndarray | None = None
    tissues: np.ndarray | None = None
    tissue_means: np.ndarray | None = None
    pad: tuple[float, ...] = (0.0,)
    inside: np.ndarray | None = None  # voxels of the region that lie inside the scan
    patient: str = ""
    synthesis: bool = True
    source: dict = field(default_factory=dict)  # spacing and extent of the scan as read
    channels: tuple[str, ...] = ()  # the file (or 4D image's volume) in each of the model's channels, in its order


UNKNOWN = 255
"""Label value of voxels in a partially labelled case that are background or one of its unannotated labels."""


def check_channel_names(names, where: str) -> list[str]:
    """A datalist entry's ``"channels"``: what each file of its ``"image"`` (or each volume of one 4D image) holds, as
    a list of names (``train`` and ``batch`` read it alike).

    Raises:
        InputError: anything but a list of non-empty names; ``where`` names the entry.
    """
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise InputError(
            f"{where}: 'channels' names what each file of 'image' (or each volume of one 4D image) holds, as a list "
            "of names",
            'e.g. "image": "imagesTr/BRATS_001.nii.gz", "channels": ["FLAIR", "T1w", "t1gd", "T2w"]',
        )
    return names


def images_said(data: dict, path: Path) -> dict:
    """What the datalist ``data`` (read from ``path``) says its images are: ``"channel_names"``, its channels as the
    dataset names them (MSD's ``"modality"``, nnU-Net v2's ``"channel_names"``) in number order, or None; and
    ``"modality"``, one text for all of them ("CT", as Auto3DSeg's task file writes it), or None.

    Raises:
        InputError: a channel table that is not numbered 0, 1, ... (:func:`..channel_stack.dataset_channels`).
    """
    text = data.get("modality") if isinstance(data.get("modality"), str) else None
    tables = {key: value for key, value in data.items() if key != "modality"} if text is not None else data
    return {
        "modality": text.strip() if text and text.strip() else None,
        "channel_names": dataset_channels(tables, path, 'e.g. "modality": {"0": "CT"}'),
    }


def read_datalist(path: str | Path) -> dict:
    """A decathlon-style datalist with paths made absolute.

    Format::

        {"labels": {"1": "spleen", "2": "kidney_right"} | "totalsegmentator" | "btcv" | "amos",
         "training":   [{"image": "ct1.nii.gz" | ["t1.nii.gz", "t2.nii.gz"],
                         "label": "seg1.nii.gz" | {"spleen": "masks/spleen.nii.gz", ...},
                         "labels": {...},          # optional per-case name table (file value -> name)
                         "partial": true,          # optional: see below
                         "repeat": 2,              # optional: sampled twice as often
                         "patient": "A",           # optional: for leave-one-patient-out (default: name)
                         "synthesis": false}],     # optional: no synthetic images from this case
         "validation": [...]}                      # optional, same keys

    Relative paths are relative to the datalist's folder (or to ``"dataroot"`` when given). A label given
    as {structure name: mask file} is one binary mask per structure (TotalSegmentator's layout).
    A ``"partial": true`` case annotates only the model labels its name table names; its unnamed voxels
    count as "background or an unannotated label", and values named after other structures as background.
    ``"partial": false`` says the case is complete: model labels its table does not name are absent from
    the scan (without the key, a name table that lacks model labels is refused as a likely mistake).
    """
    from ..json_files import read_json_file

    path = Path(path)
    data = read_json_file(path, f"the datalist {path}")
    if not isinstance(data, dict) or not isinstance(data.get("training"), list) or not data["training"]:
        raise InputError(f"the datalist {path} has no 'training' list", "see the README for the datalist format")
    root = datalist_root(path, data)

    def absolute(value):
        return str((root / value).resolve())

    def table(value, where):
        try:
            return named_table(value)
        except (KeyError, ValueError, AttributeError, TypeError):
            raise InputError(
                f"{where}: 'labels' must be a {{value: name}} table or one of totalsegmentator, btcv, amos"
            ) from None

    out = {"labels": table(data.get("labels"), str(path)), "training": [], "validation": []}
    out.update(images_said(data, path))
    for split in ("training", "validation"):
        for index, entry in enumerate(data.get(split) or []):
            where = f"datalist {split}[{index}]"
            if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                raise InputError(f"{where} needs 'image' and 'label'")
            images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
            label_files = list(entry["label"].values()) if isinstance(entry["label"], dict) else [entry["label"]]
            if not images or not label_files or not all(isinstance(i, str) and i for i in [*images, *label_files]):
                raise InputError(f"{where}: 'image' and 'label' must be file paths (or a {{name: file}} table)")
            case = {"image": [absolute(i) for i in images]}
            if isinstance(entry["label"], dict):  # one mask file per structure
                masks = {str(name): absolute(file) for name, file in entry["label"].items()}
                case["label"] = masks
                names = {value: name for value, name in enumerate(masks, start=1)}
                files = list(masks.values())
            else:
                case["label"] = absolute(entry["label"])
                names = table(entry["labels"], where) if "labels" in entry else out["labels"]
                files = [case["label"]]
            for file in [*case["image"], *files]:
                if not Path(file).exists():
                    raise InputError(f"{where}: file not found: {file}")
            for file in files:  # a label map that is the scan itself would train its intensities as labels
                same = next((image for image in case["image"] if os.path.samefile(file, image)), None)
                if same is not None:
                    raise InputError(
                        f"{where}: its label {Path(file).name} is its image {Path(same).name}",
                        "name the case's label map (or masks) in 'label'",
                    )
            case["labels"] = names
            case["name"] = entry.get("name") or Path(case["image"][0]).name.split(".")[0]
            case["patient"] = str(entry.get("patient", case["name"]))
            case["partial"] = entry.get("partial")
            case["synthesis"] = bool(entry.get("synthesis", True))
            if case["partial"] and not names:
                raise InputError(f"{where} is partial but has no 'labels' name table")
            if "channels" in entry:  # what each file, or each volume of one 4D image, holds, in order
                names = check_channel_names(entry["channels"], where)
                if len(images) > 1 and len(names) != len(images):
                    raise InputError(
                        f"{where}: 'channels' names {len(names)} channels; 'image' lists {len(images)} files",
                        "name what each file holds, in the order of 'image'",
                    )
                case["channels"] = names
            case["where"] = where
            case["repeat"] = entry.get("repeat", 1)
            if not isinstance(case["repeat"], (int, float)) or case["repeat"] <= 0:
                raise InputError(f"{where}: 'repeat' must be a number > 0")
            out[split].append(case)
    seen = {image: index for index, case in enumerate(out["training"]) for image in case["image"]}
    for index, case in enumerate(out["validation"]):
        both = [image for image in case["image"] if image in seen]
        if both:
            raise InputError(
                f"the datalist's validation[{index}] uses {Path(both[0]).name}, also in training[{seen[both[0]]}]",
                "validate on other scans than you train on (or leave 'validation' out)",
            )
    return out


def datalist_root(path: Path, data: dict) -> Path:
    """The folder a datalist's relative paths start from: its ``"dataroot"`` (relative to the file), else the
    file's own folder."""
    if not isinstance(data.get("dataroot", "."), str):
        raise InputError(f"the datalist's 'dataroot' is not a path: {str(data['dataroot'])[:40]}")
    return (Path(path).parent / data.get("dataroot", ".")).resolve()


def label_lookup(file_names: dict[int, str] | None, labels: list[dict], partial: bool | None = None) -> np.ndarray:
    """A table mapping label-file values (0..65535) to package label values; names decide when known.

    Without a name table the file's values are the package's values. Values the table does not name become
    background, or ``UNKNOWN`` in a ``partial`` case (where only named structures are known); values named
    after structures that are not model labels are background either way.
    """
    lut = np.zeros(65536, np.uint8)
    if file_names is None:
        for label in labels:
            lut[label["value"]] = label["value"]
        return lut
    by_name = {_key(name): value for value, name in file_names.items()}
    missing = [label["name"] for label in labels if _key(label["name"]) not in by_name]
    if missing and partial is None:
        raise InputError(
            f"the label file's name table lacks {', '.join(missing)}",
            "name every model label in the datalist's 'labels' table (file value -> name), "
            'or mark the case "partial": true (those labels are not annotated in it) or "partial": false '
            "(they are absent from the scan)",
        )
    if partial:
        lut[:] = UNKNOWN
        lut[[value for value in file_names if 0 <= value < 65536]] = 0
    model_value = {_key(label["name"]): label["value"] for label in labels}
    for value, name in file_names.items():  # several file values may name one label (e.g. an organ and its tumour)
        if _key(name) in model_value and 0 <= value < 65536:
            lut[value] = model_value[_key(name)]
    return lut


def missing_labels(file_names: dict[int, str] | None, labels: list[dict]) -> tuple[int, ...]:
    """Package label values that a name table does not name (not annotated in a partial case)."""
    if file_names is None:
        return ()
    named = {_key(name) for name in file_names.values()}
    return tuple(label["value"] for label in labels if _key(label["name"]) not in named)


_key = name_key


def read_label_values(entry: dict, image_grid=None) -> tuple[np.ndarray, object]:
    """The label file's values (uint16) and its grid; per-structure masks are merged (first one wins), each
    resampled in physical space onto the first one's grid when stored otherwise. Values that are no labels
    (fractions, as linear interpolation leaves them; negative values) and a label of the image's voxel shape
    that lies elsewhere (a header written wrong) are refused rather than rounded or trained on."""
    if not isinstance(entry["label"], dict):
        volume = read_volume(entry["label"], purpose="training")
        _check_label_volume(volume, entry, image_grid)
        return np.asarray(volume.array).astype(np.uint16), volume.grid
    merged, grid = None, None
    for value, file in reversed(list(enumerate(entry["label"].values(), start=1))):
        volume = read_volume(file, purpose="training")
        _check_label_volume(volume, entry, image_grid)
        mask = np.asarray(volume.array) > 0
        if merged is None:
            merged, grid = np.zeros(mask.shape, np.uint16), volume.grid
        elif not same_grid(volume.grid, grid):
            mask = resample(mask.astype(np.uint8), volume.grid, grid, "nearest", 0, np.uint8) > 0
        merged[mask] = value
    return merged, grid


def _check_label_volume(volume, entry: dict, image_grid) -> None:
    from ..label_values import check_label_values

    where = f"case {entry['name']}: the label {Path(volume.name).name}"
    check_label_values(volume.array, where)
    if image_grid is not None and volume.grid.shape == image_grid.shape and overlaps(image_grid, volume.grid):
        distance = box_distance_mm(image_grid, volume.grid)
        if distance > 0.5 * float(np.min(image_grid.spacing)):
            shape = " x ".join(str(n) for n in image_grid.shape)
            raise InputError(
                f"{where} has the same {shape} voxels as its image but lies {distance:.0f} mm from it "
                "(a wrong origin, spacing or orientation?)",
                "copy the image's geometry into the label file if they belong together",
            )


def _case_volumes(entry: dict, config, model: str) -> tuple[list, list[str]]:
    """A case's image volumes in the model's channel order, and which file (or volume) each is: one 4D image whose
    volumes its ``channels`` (else the dataset.json beside its imagesTr folder) name (:mod:`..channel_stack`), or one
    file per channel, each put in its channel by name as ``segment`` puts files (:func:`.case_files`)."""
    images = entry["image"]
    if len(images) == 1 and (len(config.inputs) > 1 or entry.get("channels")):
        stack = open_stack(images[0], config, model, entry.get("channels"), DATALIST_CHANNELS, "training")
        if stack is not None:
            return [opened() for opened in stack[0]], stack[1].shown()
    files = case_files(entry, config, model)
    return [read_volume(p, purpose="training") for p in files], [Path(p).name for p in files]


DATALIST_CHANNELS = "the datalist's 'channels'"


def case_files(entry: dict, config, model: str) -> list[str]:
    """A case's channel files in the model's channel order, placed by what each holds, never by their position: the
    entry's ``channels`` (one name per file), else nnU-Net's file numbers read in the dataset.json beside their
    ``imagesTr`` folder, else the files' names matched to the channels' patterns as ``segment`` matches them.

    Raises:
        InputError: names that do not name the model's channels one to one, or nnU-Net-numbered files (``_0000``)
            that nothing names.
    """
    from ..channel_stack import nnunet_file_names, refuse_unnamed_files
    from ..channels import order_inputs, order_named_files

    images, names = list(entry["image"]), entry.get("channels")
    where = entry.get("where") or f"case {entry.get('name', '')}"
    if len(images) < 2 or len(images) != len(config.inputs) and names is None:
        return images  # one file, or a count load_case refuses in its words
    if names is None:
        found = nnunet_file_names(images, DATALIST_CHANNELS)
        if found is not None:
            names, where = found[0], f"{where} (channel names from {found[1]})"
        else:
            listed = json.dumps([channel.name for channel in config.inputs])
            refuse_unnamed_files(images, f'name what each holds in "channels", e.g. {listed}', where)
    if names is not None:
        return order_named_files(images, names, config.inputs, model, where)
    return order_inputs(images, config.inputs, model)


def load_case(entry: dict, cfg: dict, size_multiple: int, roi_size) -> Case:
    """Read and preprocess one datalist entry with the package configuration ``cfg``."""
    typed = parse_config(cfg, "training configuration")
    volumes, channels = _case_volumes(entry, typed, cfg.get("id", "being trained"))
    if len(volumes) != len(cfg["inputs"]):
        listed = ", ".join(channel.name for channel in typed.inputs)
        raise InputError(
            f"case {entry['name']} has {len(volumes)} image channels; the model takes {len(cfg['inputs'])} ({listed})",
            f"list one image per model channel in 'image', or train a configuration whose 'inputs' name {len(volumes)}",
        )
    values, label_grid = read_label_values(entry, volumes[0].grid)
    if not (overlaps(volumes[0].grid, label_grid) and overlaps(label_grid, volumes[0].grid)):
        raise InputError(
            f"case {entry['name']}: the label map {_label_name(entry)} does not overlap its image in physical space",
            "check that the label map belongs to this image (same patient, same scan)",
        )
    _warn_not_hu(entry["name"], volumes, typed.preprocessing.intensity)
    prepared = prepare(volumes, typed, size_multiple, roi_size)
    for message in prepared.warnings:
        log.warning("case %s: %s", entry["name"], message)
    on_grid = resample(values, label_grid, prepared.region, "nearest", 0, np.uint16)
    partial = entry.get("partial")
    _warn_unnamed_values(values, entry, cfg["labels"])
    label = label_lookup(entry["labels"], cfg["labels"], partial)[on_grid]
    label_files = list(entry["label"].values()) if isinstance(entry["label"], dict) else [entry["label"]]
    files = {key: sha256_file(p) for key, p in _file_keys([*entry["image"], *label_files]).items()}
    missing = missing_labels(entry["labels"], cfg["labels"]) if partial else ()
    spacing = tuple(float(s) for s in prepared.grid.spacing)
    source_grid = volumes[0].grid
    source = {
        "spacing_mm": [round(float(s), 4) for s in source_grid.spacing],
        "extent_mm": [round(float(n * s), 1) for n, s in zip(source_grid.shape, source_grid.spacing, strict=True)],
    }
    case = Case(entry["name"], prepared.image, label, spacing, files, missing, entry.get("repeat", 1))
    case.patient, case.synthesis, case.source, case.channels = (
        entry.get("patient", entry["name"]),
        entry.get("synthesis", True),
        source,
        tuple(channels),
    )
    ones = np.ones(source_grid.shape, np.uint8)
    case.inside = resample(ones, source_grid, prepared.region, "nearest", 0, np.uint8) > 0
    if all(setting.method == "ct_window" for setting in typed.preprocessing.intensity):
        # the same region before the CT window: outside the scan, each channel's minimum (as prepare() pads)
        hu = [
            resample(np.asarray(v.array, np.float32), v.grid, prepared.region, "linear", float(np.min(v.array)))
            for v in volumes
        ]
        case.hu = np.stack(hu).astype(np.float32)
        case.pad = tuple(float(np.min(v.array)) for v in volumes)
        case.tissues = tissue_map(case.hu[0], on_grid, entry["labels"])
        case.tissue_means = tissue_means(case.hu[0], case.tissues)
    else:
        case.pad = tuple(float(case.image[c].min()) for c in range(case.image.shape[0]))
    return case


def _warn_not_hu(name: str, volumes, intensity) -> None:
    """Warn about a channel the configuration windows as CT HU whose image has no air, lung or fat (no value below
    ``NOT_HU_MINIMUM``: an MRI listed for a CT model, in a datalist that does not say its modality; a CT cropped
    inside the body keeps its fat)."""
    from ..confidence import NOT_HU_MINIMUM

    for volume, setting in zip(volumes, intensity, strict=False):
        if setting.method != "ct_window":
            continue
        lowest = float(np.min(volume.array))
        if lowest > NOT_HU_MINIMUM:
            low, high = setting.window
            log.warning(
                "case %s: its image has no value below %g (lowest %g: no air, lung or fat): not a CT in Hounsfield "
                "units (an MRI?), but the configuration windows CT values (%g to %g HU); train a configuration for "
                "these images",
                name, NOT_HU_MINIMUM, lowest, low, high,
            )  # fmt: skip


def _warn_unnamed_values(values: np.ndarray, entry: dict, labels: list[dict]) -> None:
    """Warn about label values that the case's table does not name (or, without a table, that are no model label
    value): they train as background (or as unknown in a partial case), which is right only if intended."""
    known = set(entry["labels"]) if entry["labels"] is not None else {label["value"] for label in labels}
    present = np.flatnonzero(np.bincount(values.ravel(), minlength=1))
    unnamed = [int(v) for v in present if v and int(v) not in known]
    if unnamed:
        shown = ", ".join(str(v) for v in unnamed[:8]) + (", ..." if len(unnamed) > 8 else "")
        what = "its 'labels' table does not name" if entry["labels"] is not None else "are no model label value"
        log.warning(
            "case %s: %s holds values %s that %s: trained as %s",
            entry["name"], _label_name(entry), shown, what, "unknown" if entry.get("partial") else "background",
        )  # fmt: skip


def _label_name(entry: dict) -> str:
    return "(structure masks)" if isinstance(entry["label"], dict) else Path(entry["label"]).name


def _file_keys(paths: list[str]) -> dict[str, str]:
    """File name -> path, with the parent folder in the name where names repeat or say nothing
    (TotalSegmentator's ``<case>/ct.nii.gz`` and ``segmentations/<structure>.nii.gz``)."""
    names = [Path(p).name for p in paths]
    out = {}
    for path, name in zip(paths, names, strict=True):
        vague = names.count(name) > 1 or name.startswith("ct.") or Path(path).parent.name == "segmentations"
        out[f"{Path(path).parent.name}/{name}" if vague else name] = path
    return out


def is_lateralised(labels: list[dict]) -> bool:
    """Whether any label names a side (left/right), so that left-right flips would corrupt labels."""
    names = [label["name"].lower() for label in labels]
    return any("left" in n or "right" in n or n.endswith(("_l", "_r", " l", " r")) for n in names)
