"""A run's output folder: its layout, its writer (:func:`write_outputs`) and its reader (:func:`read_outputs`).

Layout::

    segmentation.seg.nrrd                   labels, with Slicer's segment names, colors and terminology
    attention/token<NN>_<kind>.nrrd         each token's map in [0, 1]: by default on its own coarse token grid as
                                            uint8 steps of 1/255 (``TokenUNet_Scale`` in the header), or on the
                                            input grid as float32 (``--attention-grid input``)
    probabilities/<label name>.nrrd         with --probabilities
    overview.png                            unless --no-overview
    report.json                             timings, device, label volumes with confidence and flags, the run's
                                            flags and summary, token matches, the files above

The folder is written all at once (:class:`.output_folder.OutputFolder`): into a staging folder beside it, swapped
into place when every file is complete, under a lock, with a manifest of the files written; a failed or cancelled
run leaves the previous result as it was, and a re-run keeps the user's own files in the folder. The reader turns
a folder back into a :class:`SegmentationResult` (the subprocess run's way back; no torch).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from .background import BackgroundCall
from .confidence import Assessment
from .errors import ArgumentError, InputError
from .geometry import Grid
from .metadata import Label
from .nrrd import write_nrrd, write_segmentation
from .output_folder import OutputFolder
from .result import SegmentationResult, TokenMaps

SEGMENTATION_FILE = "segmentation.seg.nrrd"
REPORT_FILE = "report.json"
OVERVIEW_FILE = "overview.png"
ATTENTION_DIR = "attention"
PROBABILITY_DIR = "probabilities"
ATTENTION_GRIDS = ("auto", "input", "token")
DEFAULT_ATTENTION_GRID = "token"
MAP_STEPS = 1024  # maps on the input grid are written as float32 in steps of 1/1024
TOKEN_GRID_LEVELS = 255  # maps on the token grid are written as uint8: value = byte / 255
AUTO_INPUT_GRID_LIMIT = 2 * 2**30  # bytes of float32 maps on the input grid beyond which "auto" keeps the token grid
LOADING = "loading the result"  # what its files are read for, as the hint about NaN values in them says
MAP_FIELDS = ("TokenUNet_Token", "TokenUNet_Kind", "TokenUNet_BestLabel", "TokenUNet_SoftDice")  # NRRD keys
SCALE_FIELD = "TokenUNet_Scale"  # of a map stored as integers: value = stored * scale


def token_map_file(token: int, kind: str) -> str:
    """The path of a token map inside the output folder."""
    return f"{ATTENTION_DIR}/token{token:02d}_{kind}.nrrd"


def probability_file(label_name: str) -> str:
    return f"{PROBABILITY_DIR}/{label_name}.nrrd"


def choose_attention_grid(choice: str, kinds: int, tokens: int, voxels: int, limit: int | None = None) -> str:
    """``input`` or ``token`` for ``choice``: ``auto`` is the input grid unless its float32 maps (``kinds`` x
    ``tokens`` maps of ``voxels`` voxels) would exceed ``limit`` (default 2 GiB, e.g. 64 maps of a 512^2 x 300 CT).
    """
    if choice in ("input", "token"):
        return choice
    if choice != "auto":
        raise ArgumentError(f"unknown attention grid '{choice}'", f"choose one of {', '.join(ATTENTION_GRIDS)}")
    limit = AUTO_INPUT_GRID_LIMIT if limit is None else limit
    return "input" if kinds * tokens * voxels * 4 <= limit else "token"


def attention_bounds(choice: str, maps: int, voxels: int, exact: bool = False) -> tuple[bool, int]:
    """For the checks before a run: whether ``choice`` may write the maps on the input grid, and the voxels to count
    per map on disk, for ``maps`` maps of an input of ``voxels`` voxels (``exact``: the package's own count, so
    ``auto`` is decided as :func:`choose_attention_grid` will; else at most that many, and ``auto`` writes at most
    :data:`AUTO_INPUT_GRID_LIMIT` bytes of input-grid maps)."""
    coarse = voxels // 512  # the token grid: 1/8 of the model grid per axis, which is at most the input's
    if maps and exact:
        choice = choose_attention_grid(choice, 1, maps, voxels)
    if not maps or choice == "token":
        return False, coarse
    if choice == "input":
        return True, voxels
    return 2 * voxels * 4 <= AUTO_INPUT_GRID_LIMIT, max(coarse, min(voxels, AUTO_INPUT_GRID_LIMIT // (4 * maps)))


RESERVED_FILES = (
    SEGMENTATION_FILE,
    REPORT_FILE,
    OVERVIEW_FILE,
    f"{ATTENTION_DIR}/token*_*.nrrd",
    f"{PROBABILITY_DIR}/*.nrrd",
)
"""What a run may write in its folder (a user's file by one of these names refuses the run before it starts)."""


def output_folder(out_dir: str | Path, protected=None, holder: str = "segment") -> OutputFolder:
    """The :class:`.output_folder.OutputFolder` of a segmentation run (``protected``: ``(folder, what)`` pairs the
    output may not be inside; None: those of the default :class:`.catalog.ModelStore`, the model cache and the
    bundled packages, as the command line refuses them, or none where no home folder holds a cache), not yet opened;
    ``holder``: the command that runs it, named to another run that finds the folder in use (``batch``)."""
    if protected is None:
        from .catalog import ModelStore
        from .errors import ModelPackageError

        try:
            protected = ModelStore().protected_folders()
        except ModelPackageError:  # no home folder, so no model cache to write into: the result is still written
            protected = ()
    return OutputFolder(
        out_dir,
        "segment",
        reserved=RESERVED_FILES,
        legacy_files=_files_of_a_result,
        protected=protected,
        holder=holder,
    )


def estimate_output_bytes(
    voxels: int, labels: int, token_maps: int = 0, token_voxels: int = 0, probabilities: bool = False
) -> int:
    """About the bytes a result of ``voxels`` input voxels takes on disk (compressed as written; token maps on
    the input grid unless ``token_voxels``, the token grid's size, is given)."""
    maps = token_maps * (token_voxels or voxels) * 4 // 2  # maps in steps of 1/1024 compress to about 40 %
    return int(voxels + maps + (labels * voxels * 4 if probabilities else 0) + 2**20)


def _files_of_a_result(folder: Path) -> set[str] | None:
    """The files of a result written before manifests existed (its report lists them), or None."""
    try:
        report = json.loads((folder / REPORT_FILE).read_text(encoding="utf-8"))
        listed = set(report["files"]) if isinstance(report, dict) and isinstance(report.get("files"), list) else None
    except (OSError, ValueError, TypeError):
        return None
    if not listed or SEGMENTATION_FILE not in listed:
        return None
    names = {name for name in (SEGMENTATION_FILE, REPORT_FILE, OVERVIEW_FILE) if name in listed}
    for entry in (report.get("attention_maps") or []) if ATTENTION_DIR in listed else []:
        if isinstance(entry, dict) and isinstance(entry.get("file"), str):
            names.add(entry["file"])
    if PROBABILITY_DIR in listed and (folder / PROBABILITY_DIR).is_dir():
        names.update(f"{PROBABILITY_DIR}/{p.name}" for p in (folder / PROBABILITY_DIR).glob("*.nrrd"))
    return names


def write_outputs(
    result: SegmentationResult,
    out_dir: str | Path | OutputFolder,
    *,
    image=None,
    window=None,
    attention_grid: str = DEFAULT_ATTENTION_GRID,
    overview: bool = True,
    extra_report: dict | None = None,
    progress=None,
) -> dict[str, Path]:
    """Write every output of ``result`` into ``out_dir`` all at once (created if needed); returns role -> path.

    Args:
        result: a SegmentationResult.
        out_dir: the folder (not inside the model cache or a bundled model's folder), or an
            :class:`.output_folder.OutputFolder` the caller opened before computing (it is committed here).
        image: the first input channel's array (i, j, k) for the overview (skipped when None).
        window: display window (low, high) for the overview.
        attention_grid: ``"token"`` (default) writes each map on the coarse token grid with its own geometry (same
            place in space; Slicer shows it interpolated) as uint8 steps of 1/255: 64 maps of a 512 x 512 x 300
            CT take well under 1 MB; ``"input"`` maps each onto the input grid (exactly its geometry) as float32
            (63 MB and 5.5 s of CPU per map of that CT); ``"auto"``: see :func:`choose_attention_grid`.
        progress: optional ``progress(fraction)`` called after each file.

    Raises:
        OutputError: the folder cannot be written (a file, not writable, full, in use by another run, inside the
            model cache or a bundled model, holding another command's result such as a model package, or holding
            files of the user's that this run would replace); the folder is then as it was.
    """
    from .overview import render_overview
    from .versions import describe_environment

    if not isinstance(result, SegmentationResult):
        raise ArgumentError(f"write_outputs needs a SegmentationResult, got {type(result).__name__}")
    maps = result.token_maps
    grid = choose_attention_grid(
        attention_grid, len(maps.kinds) if maps else 0, maps.num_tokens if maps else 0, result.labels.size
    )
    folder = out_dir if isinstance(out_dir, OutputFolder) else output_folder(out_dir)
    with folder:
        staging = folder.staging
        written: dict[str, Path] = {}
        with folder.writing():
            rendering = None
            if overview and image is not None:  # next to the other files: 0.5 -> 0.35 s for a 300-slice CT
                rendering = BackgroundCall(lambda: render_overview(staging / OVERVIEW_FILE, image, result, window))
            try:
                write_segmentation(staging / SEGMENTATION_FILE, result.labels, result.affine, result.label_table)
                written["segmentation"] = Path(SEGMENTATION_FILE)
                entries = []
                if maps is not None:
                    (staging / ATTENTION_DIR).mkdir()
                    entries = _write_token_maps(result, staging, grid, progress)
                    written["attention"] = Path(ATTENTION_DIR)
                if result.probabilities:
                    (staging / PROBABILITY_DIR).mkdir()
                    for name, array in result.probabilities.items():
                        write_nrrd(staging / probability_file(name), array, result.affine)
                    written["probabilities"] = Path(PROBABILITY_DIR)
            finally:
                if rendering is not None:
                    rendering.wait()  # nothing writes into the staging folder once it may be removed
            if rendering is not None:
                rendering.result()
                written["overview"] = Path(OVERVIEW_FILE)
            report = result.report()
            report["environment"] = describe_environment()
            report["attention_maps"] = entries
            report["attention_grid"] = grid
            report.update(extra_report or {})
            report["files"] = sorted(str(p) for p in written.values()) + [REPORT_FILE]
            (staging / REPORT_FILE).write_text(json.dumps(report, indent=2), encoding="utf-8")
            written["report"] = Path(REPORT_FILE)
        destination = folder.commit()
    if progress:
        progress(1.0)
    return {key: destination / relative for key, relative in written.items()}


def _write_token_maps(result: SegmentationResult, staging: Path, grid: str, progress) -> list[dict]:
    """Every token map as NRRD (token, kind and best label in the header); their report entries.

    Token grid: uint8 steps of 1/255 with the scale in the header (measured on 64 maps of the bundled model on a
    512 x 512 x 300 CT: 0.16 MB, where float32 in steps of 1/1024 takes 0.36 MB; gzip levels 1, 6 and 9 give
    the same size). Input grid: float32 in steps of 1/1024 (exact in float32: compresses about twice as fast).
    """
    maps = result.token_maps
    best = {(m["kind"], m["token"]): m for m in result.token_matches}
    tasks = [(kind, token) for kind in maps.kinds for token in range(maps.num_tokens)]

    def write_map(kind: str, token: int) -> dict:
        match = best.get((kind, token), {})
        values = (str(token), kind, match.get("best_label", ""), str(match.get("soft_dice", "")))
        fields = dict(zip(MAP_FIELDS, values, strict=True))
        if grid == "token":
            array, affine = quantized_map(maps.coarse[kind][token]), maps.coarse_grid.affine
            fields[SCALE_FIELD] = f"{1.0 / TOKEN_GRID_LEVELS:.10g}"
        else:
            array, affine = maps.get(kind, token), result.affine
            np.multiply(array, MAP_STEPS, out=array)
            np.round(array, out=array)
            array *= np.float32(1.0 / MAP_STEPS)
        write_nrrd(staging / token_map_file(token, kind), array, affine, fields)
        return {
            "file": token_map_file(token, kind),
            "token": token,
            "kind": kind,
            "best_label": match.get("best_label"),
            "soft_dice": match.get("soft_dice"),
        }

    # zlib and SimpleITK release the GIL: a few threads write maps in parallel
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        futures = [pool.submit(write_map, kind, token) for kind, token in tasks]
        try:
            for number, future in enumerate(as_completed(futures)):
                future.result()
                if progress:
                    progress(0.8 * (number + 1) / len(tasks))
        except BaseException:  # a stop or a failed map: the maps still queued are not written (the pool's exit
            pool.shutdown(wait=True, cancel_futures=True)  # would write them all first); those being written end
            raise
        return [future.result() for future in futures]


def quantized_map(values: np.ndarray) -> np.ndarray:
    """A map in [0, 1] as uint8 steps of 1/:data:`TOKEN_GRID_LEVELS` (rounded to the nearest step)."""
    return np.rint(np.clip(values, 0.0, 1.0) * TOKEN_GRID_LEVELS).astype(np.uint8)


def read_map(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A token map file as (float32 values in [0, 1], IJK->RAS): integer maps are scaled by their header's
    ``TokenUNet_Scale``."""
    from .nrrd import read_nrrd_fields
    from .volumes import read_volume

    volume = read_volume(path, purpose=LOADING)
    array = volume.array.astype(np.float32)
    if volume.array.dtype.kind in "iu":
        scale = read_nrrd_fields(path).get(SCALE_FIELD)
        if scale is None:
            raise InputError(
                f"{path.name} stores integers without a {SCALE_FIELD} field", "segment the scan again to rewrite it"
            )
        array *= np.float32(float(scale))
    return array, volume.affine


def read_outputs(folder: str | Path, input_affine=None) -> SegmentationResult:
    """The :class:`SegmentationResult` an output folder holds (token maps must be on the token grid).

    ``input_affine`` (the first input's IJK -> RAS) replaces the files' affine, which NRRD stores rounded.

    Raises:
        InputError: the folder is no complete result, its geometry differs from ``input_affine`` or its maps are
            on the input grid.
    """
    from .arguments import as_path
    from .json_files import read_json_file
    from .volumes import read_volume

    folder = as_path(folder, "an output folder")
    report = read_json_file(folder / REPORT_FILE)
    if not isinstance(report, dict) or not isinstance(report.get("labels"), list):
        raise InputError(f"{folder / REPORT_FILE} is not the report of a segmentation run")
    labels_volume = read_volume(folder / SEGMENTATION_FILE, purpose=LOADING)
    affine = labels_volume.affine
    if input_affine is not None:
        if not np.allclose(affine, input_affine, atol=1e-3):
            raise InputError("the segmentation's geometry differs from the input's")
        affine = np.asarray(input_affine, float)
    labels = np.ascontiguousarray(labels_volume.array, dtype=np.uint8)
    table = [Label(e["value"], e["name"], tuple(e["color"]), None, e.get("terminology")) for e in report["labels"]]
    token_maps = None
    entries = report.get("attention_maps") or []
    if entries:
        if report.get("attention_grid") != "token":
            raise InputError("the attention maps were not written on the token grid")
        coarse, grid = {}, None
        for kind in dict.fromkeys(m["kind"] for m in entries):
            ordered = sorted((m for m in entries if m["kind"] == kind), key=lambda m: m["token"])
            read = [read_map(folder / m["file"]) for m in ordered]
            grid = grid or Grid(tuple(read[0][0].shape), read[0][1])
            coarse[kind] = np.stack([array for array, _ in read])
        token_maps = TokenMaps(coarse, grid, Grid(tuple(labels.shape), affine))
    probabilities = None
    if (folder / PROBABILITY_DIR).is_dir():
        probabilities = {
            label.name: read_volume(folder / probability_file(label.name), purpose=LOADING).array.astype(np.float32)
            for label in table
        }
    return SegmentationResult(
        labels=labels,
        affine=affine,
        label_table=table,
        token_maps=token_maps,
        token_matches=report.get("token_matches", []),
        volumes_ml={e["name"]: float(e.get("volume_ml", 0.0)) for e in report["labels"]},
        timings=dict(report.get("timings_s", {})),
        device=report.get("device", ""),
        model_id=report.get("model", ""),
        probabilities=probabilities,
        warnings=list(report.get("warnings", [])),
        assessment=Assessment.from_report(report),
        test_time_augmentation=report.get("test_time_augmentation") is True,
    )
