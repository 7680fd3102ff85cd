"""Model package metadata without torch: the files' layout, the schema checks and the zip/folder reader.

Listing and describing models (the Slicer module opening, ``models list``) reads only this, so it never imports
torch; loading the network is :mod:`.package`'s job.
"""

from __future__ import annotations

import fnmatch
import json
import zipfile
from functools import cache
from pathlib import Path, PurePosixPath

from .errors import ModelPackageError
from .jsonschema_lite import validation_errors

METADATA_FILE = "configs/metadata.json"
WEIGHTS_FILE = "models/model.safetensors"
SCHEMA_DIR = Path(__file__).with_name("schemas")


@cache
def load_schema(name: str) -> dict:
    """A JSON schema shipped with the pipeline: ``"metadata"`` or ``"catalog"``."""
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))


def assign_inputs(candidates: list[str], config: dict) -> dict[str, str | None]:
    """Match file or volume names to the package's input channels by their filename patterns.

    Each channel (in order) takes the first not yet taken candidate whose base name matches one of its
    patterns (case-insensitive shell patterns such as ``*t1c*``); unmatched channels get None. With one
    channel and one candidate, the candidate is taken whatever its name.
    """
    inputs = config["inputs"]
    if len(inputs) == 1 and len(candidates) == 1:
        return {inputs[0]["name"]: candidates[0]}
    taken: set[int] = set()
    chosen: dict[str, str | None] = {}
    for entry in inputs:
        chosen[entry["name"]] = None
        for index, candidate in enumerate(candidates):
            base = PurePosixPath(str(candidate).replace("\\", "/")).name.lower()
            if index not in taken and any(fnmatch.fnmatch(base, p.lower()) for p in entry.get("patterns", [])):
                chosen[entry["name"]] = candidate
                taken.add(index)
                break
    return chosen


def validate_metadata(metadata: dict, what: str = "metadata.json") -> None:
    """Check ``metadata`` against the schema and the rules a schema cannot express.

    Raises:
        ModelPackageError: listing the first problems found.
    """
    problems = validation_errors(metadata, load_schema("metadata"))
    if not problems:
        problems = _semantic_problems(metadata["tokenunet"])
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise ModelPackageError(f"invalid model package {what}: {shown}")


def _semantic_problems(cfg: dict) -> list[str]:
    problems = []
    arch = cfg["architecture"]
    if len(cfg["inputs"]) != arch["in_channels"]:
        problems.append(f"{len(cfg['inputs'])} inputs declared for a network with {arch['in_channels']} channels")
    intensity = cfg["preprocessing"]["intensity"]
    if isinstance(intensity, list) and len(intensity) != arch["in_channels"]:
        problems.append("preprocessing.intensity must have one entry per input channel")
    for entry in intensity if isinstance(intensity, list) else [intensity]:
        if entry["method"] == "ct_window" and ("window" not in entry or entry["window"][0] >= entry["window"][1]):
            problems.append("a ct_window intensity needs window [low, high] with low < high")
    orientation = cfg["preprocessing"]["orientation"]
    if sorted(_AXIS_OF[c] for c in orientation) != [0, 1, 2]:
        problems.append(f"orientation '{orientation}' must name each of the three axes once (e.g. RAS)")
    values = [label["value"] for label in cfg["labels"]]
    if len(set(values)) != len(values):
        problems.append("label values must be unique")
    names = [label["name"] for label in cfg["labels"]]
    if len(set(names)) != len(names):
        problems.append("label names must be unique")
    inference = cfg["inference"]
    out = arch["out_channels"]
    if inference["activation"] == "sigmoid":
        regions = inference.get("regions")
        if not regions:
            problems.append("a sigmoid model needs inference.regions (output channel -> label value)")
        for region in regions or []:
            if region["channel"] >= out:
                problems.append(f"region channel {region['channel']} >= out_channels {out}")
            if region["label"] not in values:
                problems.append(f"region label {region['label']} is not in labels")
    else:
        for label in cfg["labels"]:
            channel = label.get("channel", label["value"])
            if channel >= out:
                problems.append(f"label '{label['name']}' uses output channel {channel} >= out_channels {out}")
    return problems


_AXIS_OF = {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}


class _Source:
    """Read files of a package that is a folder or a zip (optionally with one top-level folder)."""

    def __init__(self, path: Path):
        self.path = path
        if path.is_dir():
            self.zip = None
            return
        if not path.is_file():
            raise ModelPackageError(f"model package not found: {path}")
        if not zipfile.is_zipfile(path):
            raise ModelPackageError(f"{path} is neither a package folder nor a .zip package")
        self.zip = zipfile.ZipFile(path)
        names = self.zip.namelist()
        for name in names:
            pure = PurePosixPath(name)
            if pure.is_absolute() or ".." in pure.parts or "\\" in name:
                raise ModelPackageError(f"{path} contains an unsafe path '{name}'", "the archive is not a package")
        hits = [n for n in names if n == METADATA_FILE or n.endswith("/" + METADATA_FILE)]
        self.prefix = min(hits, key=len)[: -len(METADATA_FILE)] if hits else ""

    def read(self, name: str) -> bytes:
        try:
            if self.zip is None:
                return (self.path / name).read_bytes()
            return self.zip.read(self.prefix + name)
        except (FileNotFoundError, KeyError):
            raise ModelPackageError(f"model package {self.path} lacks {name}") from None

    def extract_to(self, target: Path) -> None:
        for name in (METADATA_FILE, "LICENSE", "docs/README.md"):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(self.read(name))


def read_metadata(path: str | Path) -> dict:
    """The validated metadata of a package folder or zip, without loading weights."""
    source = _Source(Path(path))
    try:
        metadata = json.loads(source.read(METADATA_FILE))
    except json.JSONDecodeError as error:
        raise ModelPackageError(f"{path}: {METADATA_FILE} is not valid JSON ({error})") from None
    validate_metadata(metadata, f"{path}/{METADATA_FILE}")
    return metadata
