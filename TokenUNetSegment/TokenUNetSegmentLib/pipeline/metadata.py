"""A model package's configuration, typed: ``configs/metadata.json`` parsed once into frozen dataclasses.

The JSON (MONAI bundle keys plus our ``tokenunet`` section) is checked against the schema in ``schemas/`` and
against the rules a schema cannot express, then turned into :class:`PackageMetadata` (bundle fields) around a
:class:`PackageConfig` (the ``tokenunet`` section: architecture, inputs, preprocessing, inference, labels,
weights; the training record and the training data's statistics stay mappings as written, and
``PackageConfig.statistics`` types the latter as :class:`TrainingStatistics`). Everything downstream reads these
objects, never the raw dict. This module needs neither torch nor MONAI, so listing models and ``--help`` stay
fast.

Example::

    metadata = parse_metadata(json.loads(text))
    metadata.config.input_names, metadata.config.inference.roi_size, metadata.config.labels[0].color
"""

from __future__ import annotations

import copy
import fnmatch
import json
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

from .channels import match_channels
from .errors import ArgumentError, InputError, ModelPackageError
from .jsonschema_lite import pattern_matches, validation_errors

SCHEMA_DIR = Path(__file__).with_name("schemas")
ACTIVATIONS = ("softmax", "sigmoid")
_AXIS_OF = {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}


@cache
def load_schema(name: str) -> dict:
    """A JSON schema shipped with the pipeline: ``"metadata"`` or ``"catalog"``."""
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))


ID_RULE = "an id has letters, digits, '.', '_' and '-', up to 100, e.g. abdomen-organs-3mm-demo"
WINDOWS_DEVICE_NAMES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def model_id_problem(model_id) -> str | None:
    """What is wrong with ``model_id`` as a model id (None when it is a valid one).

    A valid id matches the schema's pattern in full (letters, digits, ``.``, ``_``, ``-``; a letter or digit
    first, no ``.`` last; at most 100 characters) and is no Windows device name (``con``, ``nul.x``...), so it
    is a safe folder name on every system and never a path.
    """
    if not isinstance(model_id, str):
        return f"a model id must be text, got {type(model_id).__name__}"
    rule = load_schema("metadata")["properties"]["tokenunet"]["properties"]["id"]
    if not model_id or len(model_id) > rule["maxLength"] or not pattern_matches(rule["pattern"], model_id):
        return f"'{model_id[:60]}' is not a valid model id"
    if model_id.split(".")[0].lower() in WINDOWS_DEVICE_NAMES:
        return f"'{model_id}' is not a valid model id (a device name on Windows)"
    return None


def check_model_id(model_id) -> str:
    """``model_id`` when it is a valid model id (see :func:`model_id_problem`), else :class:`ModelPackageError`."""
    problem = model_id_problem(model_id)
    if problem:
        raise ModelPackageError(problem, ID_RULE)
    return model_id


@dataclass(frozen=True)
class Label:
    """One output label: its value in the label map, name, RGB color (0-255) and SNOMED CT codes.

    ``channel`` is the softmax output channel when it differs from ``value``.
    """

    value: int
    name: str
    color: tuple[int, int, int]
    channel: int | None = None
    terminology: Mapping | None = None

    @property
    def output_channel(self) -> int:
        return self.channel if self.channel is not None else self.value

    def to_dict(self) -> dict:
        out = {"value": self.value, "name": self.name, "color": list(self.color)}
        if self.terminology:
            out["terminology"] = copy.deepcopy(dict(self.terminology))
        return out

    @classmethod
    def from_dict(cls, entry: Mapping) -> Label:
        return cls(
            int(entry["value"]),
            str(entry["name"]),
            tuple(int(c) for c in entry["color"]),
            entry.get("channel"),
            copy.deepcopy(entry.get("terminology")),
        )


@dataclass(frozen=True)
class InputChannel:
    """One input channel: its name, modality and the filename patterns that identify its files."""

    name: str
    modality: str = ""
    patterns: tuple[str, ...] = ()

    def matches(self, candidate: str) -> bool:
        """Whether ``candidate``'s base name matches one of the patterns (case-insensitive shell patterns)."""
        base = PurePosixPath(str(candidate).replace("\\", "/")).name.lower()
        return any(fnmatch.fnmatch(base, pattern.lower()) for pattern in self.patterns)


@dataclass(frozen=True)
class Intensity:
    """Intensity normalisation of one channel: ``ct_window`` (to [0, 1]), ``zscore`` (over non-zero) or ``none``."""

    method: str
    window: tuple[float, float] | None = None


@dataclass(frozen=True)
class Preprocessing:
    """Model orientation and spacing (None: keep the input's), per-channel intensity, foreground crop."""

    orientation: str
    spacing: tuple[float, float, float] | None
    intensity: tuple[Intensity, ...]  # one per input channel
    crop_foreground: bool = False
    crop_margin_mm: float = 10.0


@dataclass(frozen=True)
class Region:
    """A sigmoid output channel and the label value it sets (regions later in the list win)."""

    channel: int
    label: int


@dataclass(frozen=True)
class Inference:
    """Sliding-window settings and how outputs become labels."""

    roi_size: tuple[int, int, int]
    activation: str = "softmax"
    overlap: float = 0.25
    blending: str = "gaussian"
    sw_batch_size: int | None = None
    threshold: float = 0.5
    regions: tuple[Region, ...] = ()


@dataclass(frozen=True)
class Architecture:
    """The network by registry name, with its channel counts and constructor parameters."""

    name: str
    in_channels: int
    out_channels: int
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def build_arguments(self) -> dict[str, Any]:
        """The constructor keyword arguments (JSON lists as tuples)."""
        return {k: tuple(v) if isinstance(v, list) else v for k, v in self.parameters.items()}


@dataclass(frozen=True)
class Weights:
    """The weights file inside the package and its SHA256."""

    file: str
    sha256: str

    def __str__(self) -> str:
        return f"{self.file} sha256 {self.sha256}"


@dataclass(frozen=True)
class ValueRange:
    """The range of a value over the training cases (``mean`` when recorded)."""

    min: float
    max: float
    mean: float | None = None

    @classmethod
    def parse(cls, entry) -> ValueRange | None:
        """A range from ``{"min", "max", "mean"?}``; None for anything else (absent, null, malformed)."""
        if not isinstance(entry, Mapping) or not all(_is_number(entry.get(key)) for key in ("min", "max")):
            return None
        mean = entry.get("mean")
        return cls(float(entry["min"]), float(entry["max"]), float(mean) if _is_number(mean) else None)


@dataclass(frozen=True)
class LabelStatistics:
    """One label in the training cases: in how many it was present, its volumes in mL on the model grid (all;
    ``volume_ml_complete``: only where it did not touch the scan's edge) and the HU of its voxels."""

    cases: int
    volume_ml: ValueRange | None = None
    volume_ml_complete: ValueRange | None = None
    hu: Mapping[str, float] | None = None


@dataclass(frozen=True)
class TrainingStatistics:
    """What the real training cases looked like (``tokenunet.training_statistics``, written by the training
    tool), for telling how far a new scan and its result lie from them. Every part may be missing.

    ``intensity_hu``: mean, sd and percentiles (``p01`` ... ``p99``) of the inputs' HU above
    ``body_threshold_hu``; ``source_spacing_mm`` / ``source_extent_mm``: per-axis (min, max) of the scans as
    read; ``min_slab_mm``: the thinnest field of view the augmentation simulated.
    """

    cases: int
    labels: Mapping[str, LabelStatistics] = field(default_factory=dict)
    intensity_hu: Mapping[str, float] | None = None
    labelled_fraction: ValueRange | None = None
    source_spacing_mm: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    source_extent_mm: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    min_slab_mm: float | None = None

    @classmethod
    def parse(cls, section) -> TrainingStatistics | None:
        """The typed statistics of a package's section, None when the package has none (older or third-party
        packages); unreadable parts become None."""
        if not isinstance(section, Mapping):
            return None
        labels = {}
        for name, entry in (section.get("labels") or {}).items():
            if isinstance(entry, Mapping):
                hu = entry.get("hu")
                labels[str(name)] = LabelStatistics(
                    int(entry.get("cases") or 0),
                    ValueRange.parse(entry.get("volume_ml")),
                    ValueRange.parse(entry.get("volume_ml_complete")),
                    _numbers(hu),
                )
        augmentation = section.get("augmentation") or {}
        slab = augmentation.get("min_slab_mm") if isinstance(augmentation, Mapping) else None
        return cls(
            cases=int(section.get("cases") or 0),
            labels=labels,
            intensity_hu=_numbers(section.get("intensity_hu")),
            labelled_fraction=ValueRange.parse(section.get("labelled_fraction")),
            source_spacing_mm=_axis_ranges(section.get("source_spacing_mm")),
            source_extent_mm=_axis_ranges(section.get("source_extent_mm")),
            min_slab_mm=float(slab) if _is_number(slab) else None,
        )


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(entry) -> dict[str, float] | None:
    if not isinstance(entry, Mapping):
        return None
    return {str(key): float(value) for key, value in entry.items() if _is_number(value)}


def _axis_ranges(entry) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    if not isinstance(entry, Mapping):
        return None
    low, high = entry.get("min"), entry.get("max")
    if not all(isinstance(v, list) and len(v) == 3 and all(_is_number(x) for x in v) for v in (low, high)):
        return None
    return tuple(float(x) for x in low), tuple(float(x) for x in high)


@dataclass(frozen=True)
class PackageConfig:
    """The ``tokenunet`` section of a package: what the pipeline needs to build, feed and read the network."""

    id: str
    architecture: Architecture
    inputs: tuple[InputChannel, ...]
    preprocessing: Preprocessing
    inference: Inference
    labels: tuple[Label, ...]
    name: str = ""
    largest_component: bool | tuple[str, ...] = False  # postprocessing default
    weights: Weights | None = None
    training: Mapping | None = None  # the training record, kept as written
    training_statistics: Mapping | None = None  # what the training data looked like (volumes, HU, fields of view)
    source: Mapping = field(default_factory=dict, repr=False, compare=False)  # the section as read

    @property
    def statistics(self) -> TrainingStatistics | None:
        """``training_statistics`` typed for the confidence checks; None when the package has none (packages
        written before the training tool recorded them, third-party packages)."""
        return TrainingStatistics.parse(self.training_statistics)

    @property
    def input_names(self) -> list[str]:
        return [channel.name for channel in self.inputs]

    @property
    def display_window(self) -> tuple[float, float] | None:
        """The first channel's CT window (for pictures), or None for other intensity methods."""
        first = self.preprocessing.intensity[0]
        return first.window if first.method == "ct_window" else None

    def largest_component_labels(self, option: bool | Sequence[str] | None = None) -> list[str]:
        """Names of the labels whose largest component alone is kept (``option`` None: the package default).

        Raises:
            InputError: ``option`` names a label the package does not have.
        """
        option = self.largest_component if option is None else option
        if option is True:
            return [label.name for label in self.labels]
        if not option:
            return []
        known = {label.name for label in self.labels}
        unknown = [name for name in option if name not in known]
        if unknown:
            raise InputError(f"largest_component names unknown labels: {', '.join(unknown)}")
        return list(option)

    def to_dict(self) -> dict:
        """The section as JSON-ready data (a copy of what was parsed)."""
        return copy.deepcopy(dict(self.source))


@dataclass(frozen=True)
class PackageMetadata:
    """The whole ``configs/metadata.json``: bundle fields we show, our typed config, and the document itself."""

    config: PackageConfig
    version: str
    description: str
    authors: str
    copyright: str
    intended_use: str = ""
    document: Mapping = field(default_factory=dict, repr=False, compare=False)

    @property
    def id(self) -> str:
        return self.config.id

    def to_dict(self) -> dict:
        return copy.deepcopy(dict(self.document))


def parse_metadata(document: Mapping, what: str = "metadata.json", require_weights: bool = True) -> PackageMetadata:
    """Validate a metadata document and return it typed (``require_weights=False``: a package in memory).

    Raises:
        ModelPackageError: listing the first problems found.
    """
    _raise_if(validation_errors(document, metadata_schema(require_weights)), what)
    config = _config_from(document["tokenunet"])
    _raise_if(semantic_problems(config), what)
    return PackageMetadata(
        config=config,
        version=document["version"],
        description=document["description"],
        authors=document["authors"],
        copyright=document["copyright"],
        intended_use=document.get("intended_use", ""),
        document=copy.deepcopy(dict(document)),
    )


def parse_config(section: Mapping, what: str = "configuration", require_weights: bool = False) -> PackageConfig:
    """Validate a bare ``tokenunet`` section (e.g. a training configuration, without weights) and type it."""
    schema = metadata_schema(require_weights)
    _raise_if(validation_errors(section, schema["properties"]["tokenunet"], schema), what)
    config = _config_from(section)
    _raise_if(semantic_problems(config), what)
    return config


def validate_metadata(document: Mapping, what: str = "metadata.json") -> None:
    """Check a metadata document against the schema and the semantic rules (see :func:`parse_metadata`)."""
    parse_metadata(document, what)


@cache
def metadata_schema(require_weights: bool = True) -> dict:
    """The metadata schema; without ``require_weights`` the ``tokenunet.weights`` entry is optional
    (training configurations, packages held in memory)."""
    schema = copy.deepcopy(load_schema("metadata"))
    if not require_weights:
        section = schema["properties"]["tokenunet"]
        section["required"] = [key for key in section["required"] if key != "weights"]
    return schema


def _raise_if(problems: list[str], what: str) -> None:
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise ModelPackageError(f"invalid model package {what}: {shown}")


def _config_from(section: Mapping) -> PackageConfig:
    """The typed config of a schema-valid section (every key the schema requires is present)."""
    arch = section["architecture"]
    architecture = Architecture(
        arch["name"], arch["in_channels"], arch["out_channels"], copy.deepcopy(arch.get("parameters") or {})
    )
    pre = section["preprocessing"]
    settings = pre["intensity"] if isinstance(pre["intensity"], list) else [pre["intensity"]] * arch["in_channels"]
    intensity = tuple(
        Intensity(entry["method"], tuple(float(v) for v in entry["window"]) if "window" in entry else None)
        for entry in settings
    )
    spacing = pre.get("spacing")
    inference = section["inference"]
    postprocessing = section.get("postprocessing") or {}
    largest = postprocessing.get("largest_component", False)
    weights = section.get("weights")
    return PackageConfig(
        id=section["id"],
        name=section.get("name", ""),
        architecture=architecture,
        inputs=tuple(
            InputChannel(entry["name"], entry.get("modality", ""), tuple(entry.get("patterns", [])))
            for entry in section["inputs"]
        ),
        preprocessing=Preprocessing(
            orientation=pre["orientation"],
            spacing=tuple(float(s) for s in spacing) if spacing else None,
            intensity=intensity,
            crop_foreground=bool(pre.get("crop_foreground", False)),
            crop_margin_mm=float(pre.get("crop_margin_mm", 10.0)),
        ),
        inference=Inference(
            roi_size=tuple(int(r) for r in inference["roi_size"]),
            activation=inference["activation"],
            overlap=float(inference.get("overlap", 0.25)),
            blending=inference.get("blending", "gaussian"),
            sw_batch_size=inference.get("sw_batch_size"),
            threshold=float(inference.get("threshold", 0.5)),
            regions=tuple(Region(r["channel"], r["label"]) for r in inference.get("regions", [])),
        ),
        labels=tuple(Label.from_dict(entry) for entry in section["labels"]),
        largest_component=tuple(largest) if isinstance(largest, list) else bool(largest),
        weights=Weights(weights["file"], weights["sha256"]) if weights else None,
        training=copy.deepcopy(section.get("training")),
        training_statistics=copy.deepcopy(section.get("training_statistics")),
        source=copy.deepcopy(dict(section)),
    )


WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"{port}{n}" for port in ("COM", "LPT") for n in range(1, 10))}
LABEL_NAME_BYTES = 250  # probabilities/<name>.nrrd: within the 255 bytes most file systems take for a name


def label_file_problem(name: str) -> str | None:
    """Why the label ``name`` cannot name its file ``probabilities/<name>.nrrd`` on every system the package may run
    on (a path; a control character, which would also reach the terminal raw; what Windows cannot hold or reads as a
    device or a stream), or None."""
    if name in (".", "..") or any(mark in name for mark in "/\\"):
        return "no '/', '\\', '.' or '..'"
    if any(unicodedata.category(char) == "Cc" for char in name):
        return "no control characters"
    if any(mark in name for mark in '<>:"|?*') or name.endswith((".", " ")):
        return "no '<', '>', ':', '\"', '|', '?' or '*', no '.' or space at its end: Windows cannot name a file so"
    if name.split(".")[0].rstrip(" ").upper() in WINDOWS_DEVICES:
        return f"Windows reserves {name.split('.')[0].upper()!r} for a device"
    if len(name.encode("utf-8", "surrogateescape")) > LABEL_NAME_BYTES:
        return f"at most {LABEL_NAME_BYTES} bytes"
    return None


def semantic_problems(config: PackageConfig) -> list[str]:
    """The rules a schema cannot express: channel counts, windows, orientation, unique labels, output channels."""
    problems = []
    if config.id.split(".")[0].lower() in WINDOWS_DEVICE_NAMES:
        problems.append(f"id '{config.id}' is a device name on Windows")
    arch = config.architecture
    if len(config.inputs) != arch.in_channels:
        problems.append(f"{len(config.inputs)} inputs declared for a network with {arch.in_channels} channels")
    if len(config.preprocessing.intensity) != arch.in_channels:
        problems.append("preprocessing.intensity must have one entry per input channel")
    for entry in config.preprocessing.intensity:
        if entry.method == "ct_window" and (entry.window is None or entry.window[0] >= entry.window[1]):
            problems.append("a ct_window intensity needs window [low, high] with low < high")
    orientation = config.preprocessing.orientation
    if sorted(_AXIS_OF[c] for c in orientation) != [0, 1, 2]:
        problems.append(f"orientation '{orientation}' must name each of the three axes once (e.g. RAS)")
    values = [label.value for label in config.labels]
    if len(set(values)) != len(values):
        problems.append("label values must be unique")
    names = [label.name for label in config.labels]
    if len({unicodedata.normalize("NFC", name).casefold() for name in names}) != len(names):  # one file on macOS
        problems.append("label names must be unique (compared without case: Liver and liver name one file)")
    for name in names:  # --probabilities writes probabilities/<name>.nrrd: no other folder, inside or outside
        why = label_file_problem(name)
        if why is not None:
            problems.append(f"label name {name[:40]!r} cannot name a file ({why})")
    out = arch.out_channels
    if config.inference.activation == "sigmoid":
        if not config.inference.regions:
            problems.append("a sigmoid model needs inference.regions (output channel -> label value)")
        for region in config.inference.regions:
            if region.channel >= out:
                problems.append(f"region channel {region.channel} >= out_channels {out}")
            if region.label not in values:
                problems.append(f"region label {region.label} is not in labels")
    else:
        for label in config.labels:
            if label.output_channel >= out:
                problems.append(
                    f"label '{label.name}' uses output channel {label.output_channel} >= out_channels {out}"
                )
    return problems


def assign_inputs(candidates: Sequence[str], config: PackageConfig) -> dict[str, str | None]:
    """Input channel name -> matching candidate (or None), by the package's filename patterns."""
    if not isinstance(config, PackageConfig):
        raise ArgumentError(f"assign_inputs needs a PackageConfig (package.config), got {type(config).__name__}")
    if not isinstance(candidates, Sequence) or isinstance(candidates, str):
        raise ArgumentError("assign_inputs needs a list of file names")
    if not all(isinstance(c, (str, PurePath)) for c in candidates):
        raise ArgumentError("assign_inputs needs a list of file names")
    return match_channels([str(c) for c in candidates], config.inputs)
