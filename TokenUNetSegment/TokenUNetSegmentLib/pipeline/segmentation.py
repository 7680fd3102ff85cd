"""``segment()``: volumes in, labels, token maps and a report out, all on the input's own grid.

One run goes through five timed stages, each a function of its own module: load (:mod:`.package_loader`,
:func:`channel_volumes`), preprocess (:mod:`.preprocess`), inference (:mod:`.inference`), postprocess
(:mod:`.postprocess`) and map back (:mod:`.map_back`).
"""

from __future__ import annotations

import logging
import time
import warnings as pywarnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from .catalog import ModelStore
from .channels import check_channels_fit, check_distinct, check_places
from .confidence import Assessment, assess
from .device import check_memory, cpu_sample, estimate_memory, resolve_device
from .errors import ArgumentError, InputError, OutOfMemoryError
from .geometry import Grid, model_grid
from .inference import WindowPlan, overlap_cost, plan_windows, run_windows, scan_plan
from .map_back import map_back
from .metadata import PackageConfig
from .package_loader import ModelPackage, resolve_model
from .postprocess import ModelGridOutputs, postprocess
from .preprocess import Prepared, prepare
from .progress import Progress
from .result import MAP_KINDS, SegmentationResult, TokenMaps
from .run_memory import check_inputs_fit, wrong_spacing
from .volumes import OpenedVolume, Volume, check_modality, open_input

log = logging.getLogger(__name__)
__all__ = ["MAP_KINDS", "SegmentationResult", "TokenMaps", "channel_volumes", "segment"]


class StageClock:
    """Times the stages of a run and reports each one's start and end to the progress reporter."""

    def __init__(self, reporter: Progress):
        self.reporter = reporter
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        started = time.perf_counter()
        self.reporter.update(name, 0.0)
        yield
        self.timings[name] = time.perf_counter() - started
        self.reporter.update(name, 1.0)


def segment(
    inputs: Sequence | str | Path | tuple | dict,
    model: str | Path | ModelPackage | None = None,
    *,
    device: str | torch.device = "auto",
    overlap: float | None = None,
    batch_size: int | None = None,
    probabilities: bool = False,
    with_token_maps: bool = True,
    largest_component: bool | Sequence[str] | None = None,
    label_interpolation: str = "nearest",
    progress=None,
    cancel=None,
    store: ModelStore | None = None,
    check_free_memory: bool = True,
    maps_on_input_grid: bool = False,
) -> SegmentationResult:
    """Segment one case.

    Args:
        inputs: one volume per model input channel, in the package's channel order; each a path (NIfTI,
            NRRD, MHA, a DICOM series folder) or an ``(array (i, j, k), ijk_to_ras 4x4)`` pair. A single
            path or pair is accepted for one-channel models. Extra channels are resampled onto the first
            channel's grid in physical space. A dict {channel name: input} is also accepted.
        model: a :class:`ModelPackage`, a catalog/cache id, a package path, or None for the catalog default
            (downloaded on first use, within this run: progress stage ``download``, stopped by ``cancel``).
        device: ``auto`` (cuda > mps > cpu), ``cpu``, ``cuda``, ``cuda:1`` or ``mps``.
        overlap: sliding-window overlap (default: the package's).
        batch_size: windows per forward pass (default: the package's, else 1 on CPU and 2 on GPU).
        probabilities: also return each label's probability map on the input grid.
        with_token_maps: compute the per-token maps (networks with tokens only).
        largest_component: keep only the largest component of all labels (True) or of the named ones
            (default: the package's postprocessing setting).
        label_interpolation: ``"nearest"`` maps the model-grid labels onto the input grid (fast); ``"linear"``
            interpolates each label's probability onto the input grid and takes the argmax there (smoother
            boundaries when the input is finer than the model spacing; one resampling per label).
        progress: ``progress(stage, fraction)`` with a monotonic overall fraction in [0, 1].
        cancel: ``threading.Event``-like (``is_set()``) or a callable; checked between windows and stages.
        store: the model store used to resolve ids (default: catalog + per-user cache).
        check_free_memory: refuse runs whose estimated peak memory exceeds what is free (or
            ``TOKENUNET_MEMORY_LIMIT``): for files, from their headers before any voxel is read (the command
            line's check), then exactly once they are read.
        maps_on_input_grid: the caller will write the token maps on the input grid
            (``write_outputs(attention_grid="input")``): counted in that check.

    Raises:
        TokenUNetError: (and its subclasses) for bad inputs, bad packages, cancel, or memory.
    """
    if label_interpolation not in ("nearest", "linear"):
        raise InputError(f"label_interpolation must be 'nearest' or 'linear', got {label_interpolation!r}")
    started = cpu_sample()  # the CPU time others use from here on sets the network's threads
    reporter = Progress(progress, cancel)
    clock = StageClock(reporter)
    result_warnings: list[str] = []
    smooth = label_interpolation == "linear"

    with clock.stage("load"):
        package = resolve_model(model, store, lambda fraction: reporter.update("download", fraction), cancel)

        def fits(opened: list[OpenedVolume], name: str) -> None:  # files: from their headers, as the command line
            maps = maps_on_input_grid and with_token_maps
            check_inputs_fit(opened, package.config, name, with_token_maps, probabilities, maps)

        volumes = channel_volumes(inputs, package, fits if check_free_memory else None)
        run_device = resolve_device(device)
        config, network = package.config, package.network
        keep = config.largest_component_labels(largest_component)

    with clock.stage("preprocess"):
        plan = plan_windows(network, config.inference, run_device, overlap, batch_size)
        if check_free_memory:
            _check_memory(package, volumes, plan, run_device, probabilities, maps_on_input_grid and with_token_maps)
        prepared = prepare(volumes, config, plan.size_multiple, plan.roi_size, reporter)
        cost = None if overlap is None else overlap_cost(prepared.image.shape[1:], plan, config.inference.overlap)
        for message in [*prepared.warnings, *([cost] if cost else [])]:
            pywarnings.warn(message, stacklevel=2)
            result_warnings.append(message)

    with clock.stage("inference"):
        want_tokens = with_token_maps and bool(network.has_tokens)
        logits, maps, used_device = run_windows(
            network,
            prepared.image,
            plan,
            run_device,
            reporter,
            want_tokens,
            lambda m: _warn(m, result_warnings),
            since=started,
        )

    with clock.stage("postprocess"):
        on_model_grid = postprocess(logits, maps, prepared, config, keep, probabilities or smooth, reporter)
        token_matches = on_model_grid.token_matches
        del logits, maps
        assessment = assess_run(on_model_grid, prepared, config, volumes[0].grid)

    with clock.stage("map back"):
        target = volumes[0].grid
        on_input_grid = map_back(
            on_model_grid, prepared, target, config.inference, config.labels, keep, smooth, probabilities
        )
        del on_model_grid

    timings = dict(clock.timings)
    timings["total"] = sum(timings.values())
    reporter.done()
    return SegmentationResult(
        labels=on_input_grid.labels,
        affine=target.affine,
        label_table=list(config.labels),
        token_maps=on_input_grid.token_maps,
        token_matches=token_matches,
        volumes_ml=on_input_grid.volumes_ml,
        timings=timings,
        device=str(used_device),
        model_id=package.id,
        probabilities=on_input_grid.probabilities,
        warnings=result_warnings,
        assessment=assessment,
    )


def assess_run(outputs: ModelGridOutputs, prepared: Prepared, config: PackageConfig, source: Grid) -> Assessment:
    """The run's confidence per label and its flags (:mod:`.confidence`), from the model-grid measures."""
    by_name = {label.name: outputs.measures.get(label.value, {"voxels": 0}) for label in config.labels}
    inside = prepared.field_of_view
    return assess(
        by_name,
        config.statistics,
        prepared.intensity,
        config.preprocessing.intensity[0].method == "ct_window",
        source,
        int(inside.sum()) if inside is not None else int(np.prod(prepared.grid.shape)),
    )


def channel_volumes(
    inputs, package: ModelPackage, fits: Callable[[list[OpenedVolume], str], object] | None = None
) -> list[Volume]:
    """One checked :class:`Volume` per input channel of ``package``, in its order.

    ``fits(opened, name)``: called with the opened inputs and the first one's name before any is read, when any is a
    file (arrays in memory are allocated already): to refuse a run that cannot fit from the files' headers.

    Raises:
        InputError: the wrong number of channels, or channel names the package does not have.
    """
    names = package.input_names
    if isinstance(inputs, dict):  # {channel name: input}, e.g. from assign_inputs()
        missing = [name for name in names if inputs.get(name) is None]
        unknown = [name for name in inputs if name not in names]
        if missing or unknown:
            parts = [
                f"{what}: {', '.join(found)}" for what, found in (("missing", missing), ("unknown", unknown)) if found
            ]
            raise InputError(f"model '{package.id}' needs the channels {', '.join(names)}; " + "; ".join(parts))
        inputs = [inputs[name] for name in names]
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
        raise InputError(
            f"model '{package.id}' needs {len(names)} input channel(s) ({', '.join(names)}), got {len(items)}"
        )
    check_distinct([_identity(item) for item in items], [_shown(item) for item in items], names)
    if len(names) > 1:
        check_places(items, package.config.inputs)  # a list is in the channel order: a name may not contradict it
    channels = package.config.inputs
    opened = [open_input(item, channel.name, channel.modality) for item, channel in zip(items, channels, strict=True)]
    check_channels_fit([item.values for item in opened])  # all channels together, before any is read
    for item, found, channel in zip(items, opened, channels, strict=True):  # from the headers, as the command line
        check_modality(found.modality, channel.modality, _named(item, channel.name), package.id, channel.name)
    if fits is not None and any(isinstance(item, (str, Path)) for item in items):
        fits(opened, _named(items[0], names[0]))
    return [read() for read in opened]


def _named(item, channel: str) -> str:
    """An input as its volume will be named: a file's name, a Volume's own, else the channel's."""
    return Path(item).name if isinstance(item, (str, Path)) else getattr(item, "name", channel)


def _check_memory(
    package: ModelPackage,
    volumes: list[Volume],
    plan: WindowPlan,
    device,
    probabilities: bool,
    maps_on_input_grid: bool,
) -> None:
    first = volumes[0]
    pre = package.config.preprocessing
    grid = model_grid(first.grid, pre.orientation, pre.spacing)
    _, windows = scan_plan(grid.shape, plan.roi_size, plan.overlap, plan.step_multiple)
    batch = min(plan.batch_size, windows)  # a batch holds at most the volume's windows
    estimate = estimate_memory(
        package.network,
        int(np.prod(grid.shape)),
        int(first.array.size),
        plan.roi_size,
        batch,
        probabilities,
        maps_on_input_grid,
    )
    estimate["host"] += sum(volume.array.nbytes for volume in volumes[1:])  # the other channels' own arrays
    try:
        check_memory(estimate, device)
    except OutOfMemoryError:
        error = wrong_spacing(first.grid, first.name)
        if error is None:
            raise
        raise error from None


def _identity(item):
    """What makes two inputs the same image: a file's resolved path; an array's memory and layout with its place."""
    if isinstance(item, (str, Path)):
        return str(Path(item).resolve())
    array, affine = (item.array, item.affine) if isinstance(item, Volume) else item if _is_pair(item) else (None, None)
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


def _warn(message: str, sink: list[str]) -> None:
    log.warning(message)
    sink.append(message)
