"""``segment()``: volumes in, labels, token heatmaps and a report out, all on the input's own grid."""

from __future__ import annotations

import logging
import time
import warnings as pywarnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .catalog import ModelStore, resolve_model
from .device import check_memory, estimate_memory, resolve_device, run_with_oom_fallback
from .errors import InputError
from .geometry import Grid, image_from_array, model_grid, resample, resample_image
from .inference import sliding_window
from .package import Label, ModelPackage
from .postprocess import (
    keep_largest_component,
    label_fractions,
    labels_from_logits,
    normalise_maps,
    probabilities_of,
    soft_dice,
)
from .preprocess import prepare
from .progress import Progress
from .volumes import as_volume

log = logging.getLogger(__name__)
MAP_KINDS = ("gather", "broadcast")


@dataclass
class Heatmaps:
    """Per-token maps in [0, 1]: kept on the coarse token grid, mapped onto the input grid on request.

    ``get(kind, token)`` returns a float32 (i, j, k) array with exactly the input's geometry.
    """

    coarse: dict[str, np.ndarray]  # kind -> (N, h, w, d), normalised to [0, 1]
    coarse_grid: Grid
    target: Grid

    @property
    def kinds(self) -> list[str]:
        return list(self.coarse)

    @property
    def num_tokens(self) -> int:
        return int(next(iter(self.coarse.values())).shape[0])

    def get(self, kind: str, token: int) -> np.ndarray:
        if kind not in self.coarse:
            raise KeyError(f"unknown map kind '{kind}'; choose one of {self.kinds}")
        out = resample(self.coarse[kind][token], self.coarse_grid, self.target, "linear", default=0.0)
        return np.clip(out, 0.0, 1.0, out=out)

    def all(self, kind: str) -> np.ndarray:
        """Every token's map of ``kind`` on the input grid, shape (N, i, j, k)."""
        return np.stack([self.get(kind, t) for t in range(self.num_tokens)])


@dataclass
class SegmentationResult:
    """What :func:`segment` returns. Arrays are (i, j, k) on the input grid (``affine`` is its IJK->RAS)."""

    labels: np.ndarray
    affine: np.ndarray
    label_table: list[Label]
    heatmaps: Heatmaps | None
    token_matches: list[dict]
    volumes_ml: dict[str, float]
    timings: dict[str, float]
    device: str
    model_id: str
    probabilities: dict[str, np.ndarray] | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def grid(self) -> Grid:
        return Grid(tuple(self.labels.shape), self.affine)

    def report(self) -> dict:
        """A JSON-ready summary (timings, device, label volumes, token-label matches, warnings)."""
        return {
            "model": self.model_id,
            "device": self.device,
            "shape": list(self.labels.shape),
            "ijk_to_ras": np.asarray(self.affine).round(6).tolist(),
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
            "labels": [
                {**label.to_dict(), "volume_ml": round(self.volumes_ml.get(label.name, 0.0), 3)}
                for label in self.label_table
            ],
            "token_matches": self.token_matches,
            "warnings": list(self.warnings),
        }


def segment(
    inputs: Sequence | str | Path | tuple,
    model: str | Path | ModelPackage | None = None,
    *,
    device: str | torch.device = "auto",
    overlap: float | None = None,
    batch_size: int | None = None,
    probabilities: bool = False,
    heatmaps: bool = True,
    largest_component: bool | Sequence[str] | None = None,
    label_interpolation: str = "nearest",
    progress=None,
    cancel=None,
    store: ModelStore | None = None,
    check_free_memory: bool = True,
) -> SegmentationResult:
    """Segment one case.

    Args:
        inputs: one volume per model input channel, in the package's channel order; each a path (NIfTI,
            NRRD, MHA, a DICOM series folder) or an ``(array (i, j, k), ijk_to_ras 4x4)`` pair. A single
            path or pair is accepted for one-channel models. Extra channels are resampled onto the first
            channel's grid in physical space. A dict {channel name: input} is also accepted.
        model: a :class:`ModelPackage`, a catalog/cache id, a package path, or None for the catalog default.
        device: ``auto`` (cuda > mps > cpu), ``cpu``, ``cuda``, ``cuda:1`` or ``mps``.
        overlap: sliding-window overlap (default: the package's).
        batch_size: windows per forward pass (default: the package's, else 1 on CPU and 2 on GPU).
        probabilities: also return each label's probability map on the input grid.
        heatmaps: compute the per-token maps (Token-UNet packages only).
        largest_component: keep only the largest component of all labels (True) or of the named ones
            (default: the package's postprocessing setting).
        label_interpolation: ``"nearest"`` maps the model-grid labels onto the input grid (fast); ``"linear"``
            interpolates each label's probability onto the input grid and takes the argmax there (smoother
            boundaries when the input is finer than the model spacing; one resampling per label).
        progress: ``progress(stage, fraction)`` with a monotonic overall fraction in [0, 1].
        cancel: ``threading.Event``-like (``is_set()``) or a callable; checked between windows and stages.
        store: the model store used to resolve ids (default: catalog + per-user cache).
        check_free_memory: refuse runs whose estimated peak memory exceeds what is free.

    Raises:
        TokenUNetError: (and its subclasses) for bad inputs, bad packages, cancel, or memory.
    """
    if label_interpolation not in ("nearest", "linear"):
        raise InputError(f"label_interpolation must be 'nearest' or 'linear', got {label_interpolation!r}")
    reporter = Progress(progress, cancel)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    reporter.update("load", 0.0)
    package = resolve_model(model, store)
    cfg = package.config
    if isinstance(inputs, dict):  # {channel name: input}, e.g. from assign_inputs()
        missing = [name for name in package.input_names if inputs.get(name) is None]
        unknown = [name for name in inputs if name not in package.input_names]
        if missing or unknown:
            raise InputError(
                f"model '{package.id}' needs the channels {', '.join(package.input_names)}; "
                + "; ".join(
                    part
                    for part in (
                        f"missing: {', '.join(missing)}" if missing else "",
                        f"unknown: {', '.join(unknown)}" if unknown else "",
                    )
                    if part
                )
            )
        inputs = [inputs[name] for name in package.input_names]
    items = [inputs] if isinstance(inputs, (str, Path)) or _is_pair(inputs) else list(inputs)
    expected = cfg["architecture"]["in_channels"]
    if len(items) != expected:
        raise InputError(
            f"model '{package.id}' needs {expected} input channel(s) "
            f"({', '.join(package.input_names)}), got {len(items)}"
        )
    volumes = [as_volume(item, name) for item, name in zip(items, package.input_names, strict=True)]
    network = package.network
    run_device = resolve_device(device)
    timings["load"] = time.perf_counter() - clock
    reporter.update("load", 1.0)

    clock = time.perf_counter()
    inference = cfg["inference"]
    chosen_overlap = float(inference.get("overlap", 0.25) if overlap is None else overlap)
    if not 0 <= chosen_overlap < 1:
        raise InputError(f"overlap must be in [0, 1), got {chosen_overlap}")
    multiple = int(getattr(network, "size_multiple", 32))
    roi = [max(multiple, -(-int(r) // multiple) * multiple) for r in inference["roi_size"]]
    batch = int(batch_size or inference.get("sw_batch_size") or (2 if run_device.type == "cuda" else 1))
    if check_free_memory:
        grid = model_grid(volumes[0].grid, cfg["preprocessing"]["orientation"], cfg["preprocessing"].get("spacing"))
        estimate = estimate_memory(
            network, int(np.prod(grid.shape)), int(volumes[0].array.size), roi, batch, probabilities
        )
        check_memory(estimate, run_device)
    prepared = prepare(volumes, cfg, multiple, roi, package.input_names, reporter)
    result_warnings = list(prepared.warnings)
    for message in prepared.warnings:
        pywarnings.warn(message, stacklevel=2)
    timings["preprocess"] = time.perf_counter() - clock

    clock = time.perf_counter()
    want_tokens = heatmaps and bool(getattr(network, "has_tokens", False))
    used = {"device": run_device}

    def run(dev, size):
        used["device"] = dev
        return sliding_window(
            network,
            prepared.image,
            roi,
            chosen_overlap,
            inference.get("blending", "gaussian"),
            size,
            dev,
            reporter,
            want_tokens,
        )

    try:
        logits, maps = run_with_oom_fallback(run, run_device, batch, warn=lambda m: _warn(m, result_warnings))
    finally:
        network.to("cpu")  # also after a cancel or an error: the package stays usable on the CPU
    timings["inference"] = time.perf_counter() - clock

    clock = time.perf_counter()
    region_labels = labels_from_logits(logits, cfg, package.labels)
    names = _largest_component_names(largest_component, cfg, package.labels)
    if names:
        keep_largest_component(region_labels, [label.value for label in package.labels if label.name in names])
    reporter.update("postprocess", 0.4)
    token_matches, coarse = [], None
    if maps is not None:
        coarse = {kind: normalise_maps(maps[kind]) for kind in MAP_KINDS}
        values = [label.value for label in package.labels]
        factor = region_labels.shape[0] // coarse["gather"].shape[1]
        fractions = label_fractions(region_labels, values, factor)  # once for both kinds of map
        for kind in MAP_KINDS:
            dice = soft_dice(coarse[kind], fractions)
            for token in range(dice.shape[0]):
                best = int(np.argmax(dice[token]))
                token_matches.append(
                    {
                        "token": token,
                        "kind": kind,
                        "best_label": package.labels[best].name,
                        "soft_dice": round(float(dice[token, best]), 4),
                        "scores": {
                            label.name: round(float(d), 4) for label, d in zip(package.labels, dice[token], strict=True)
                        },
                    }
                )
    full = np.zeros(prepared.grid.shape, np.uint8)
    in_grid, in_region = prepared.paste_slices()
    full[in_grid] = region_labels[in_region]
    smooth = label_interpolation == "linear"
    probability_maps = probabilities_of(logits, cfg, package.labels) if probabilities or smooth else None
    del logits
    timings["postprocess"] = time.perf_counter() - clock
    reporter.update("postprocess", 1.0)

    clock = time.perf_counter()
    reporter.update("map back", 0.0)
    target = volumes[0].grid

    if smooth:
        labels = _smooth_labels(probability_maps, prepared, target, cfg, package.labels)
        if names:
            keep_largest_component(labels, [label.value for label in package.labels if label.name in names])
    else:
        labels = resample_image(image_from_array(full, prepared.grid.affine), target, "nearest", 0, np.uint8)
    del full
    counts = np.bincount(labels.ravel(), minlength=256)
    volumes_ml = {label.name: float(counts[label.value]) * target.voxel_volume_mm3 / 1000.0 for label in package.labels}
    output_probabilities = None
    if probabilities:
        output_probabilities = {}
        for label in package.labels:
            canvas = np.zeros(prepared.grid.shape, np.float32)
            canvas[in_grid] = probability_maps[label.value][in_region]
            output_probabilities[label.name] = resample(canvas, prepared.grid, target, "linear", 0.0)
    heatmap_set = None
    if coarse is not None:
        factor = prepared.region.shape[0] // coarse["gather"].shape[1]
        heatmap_set = Heatmaps(coarse, prepared.region.downsampled(factor), target)
    timings["map back"] = time.perf_counter() - clock
    reporter.update("map back", 1.0)
    timings["total"] = sum(timings.values())
    reporter.done()
    return SegmentationResult(
        labels=labels,
        affine=target.affine,
        label_table=list(package.labels),
        heatmaps=heatmap_set,
        token_matches=token_matches,
        volumes_ml=volumes_ml,
        timings=timings,
        device=str(used["device"]),
        model_id=package.id,
        probabilities=output_probabilities,
        warnings=result_warnings,
    )


def _is_pair(item) -> bool:
    return (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], np.ndarray)
        and np.asarray(item[1]).shape == (4, 4)
    )


def _warn(message: str, sink: list[str]) -> None:
    log.warning(message)
    sink.append(message)


def _largest_component_names(option, cfg: dict, labels: list[Label]) -> list[str]:
    if option is None:
        option = cfg.get("postprocessing", {}).get("largest_component", False)
    if option is True:
        return [label.name for label in labels]
    if not option:
        return []
    known = {label.name for label in labels}
    unknown = [name for name in option if name not in known]
    if unknown:
        raise InputError(f"largest_component names unknown labels: {', '.join(unknown)}")
    return list(option)


def _smooth_labels(
    probability_maps: dict[int, np.ndarray], prepared, target: Grid, cfg: dict, labels: list[Label]
) -> np.ndarray:
    """Labels decided on the input grid from linearly interpolated probabilities (running argmax, or the
    ordered region thresholds of sigmoid models)."""
    in_grid, in_region = prepared.paste_slices()

    def on_target(region_array: np.ndarray) -> np.ndarray:
        canvas = np.zeros(prepared.grid.shape, np.float32)
        canvas[in_grid] = region_array[in_region]
        return resample(canvas, prepared.grid, target, "linear", 0.0)

    out = np.zeros(target.shape, np.uint8)
    if cfg["inference"]["activation"] == "sigmoid":
        threshold = float(cfg["inference"].get("threshold", 0.5))
        for region in cfg["inference"]["regions"]:
            out[on_target(probability_maps[region["label"]]) > threshold] = region["label"]
        return out
    best = 1.0 - on_target(sum(probability_maps.values()))  # background probability (outside the crop: 1)
    for label in labels:
        p = on_target(probability_maps[label.value])
        better = p > best
        out[better] = label.value
        best[better] = p[better]
    return out
