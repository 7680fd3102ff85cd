"""``segment()``: volumes in, labels, token maps and a report out, all on the input's own grid.

One run goes through five timed stages, each a function of its own module: load (:mod:`.package_loader`,
:func:`channel_volumes`), preprocess (:mod:`.preprocess`), inference (:mod:`.inference`), postprocess
(:mod:`.postprocess`) and map back (:mod:`.map_back`).
"""

from __future__ import annotations

import logging
import time
import warnings as pywarnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from . import process_settings
from .catalog import ModelStore
from .confidence import Assessment, assess
from .device import check_memory, cpu_sample, estimate_memory, resolve_device
from .errors import InputError, OutOfMemoryError
from .geometry import Grid, model_grid
from .inference import WindowPlan, overlap_cost, plan_windows, run_windows, scan_plan
from .map_back import map_back
from .metadata import PackageConfig
from .package_loader import ModelPackage, resolve_model
from .postprocess import ModelGridOutputs, postprocess
from .preprocess import Prepared, prepare
from .progress import PassProgress, Progress
from .result import MAP_KINDS, SegmentationResult, TokenMaps
from .run_inputs import RunNeeds, channel_items, open_run_inputs
from .run_memory import augmentation_bytes, largest_region, wrong_spacing
from .test_time_augmentation import AUGMENTATIONS, averaged_scores, turning_axis
from .volumes import Volume

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
    channels: Sequence[str] | None = None,
    test_time_augmentation: bool = False,
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
        channels: for one 4D image (NIfTI, NRRD, MetaImage) holding every channel (the Decathlon's layout), what
            each of its volumes holds, in order (e.g. ``["FLAIR", "T1", "T1c", "T2"]``; names in any case, with the
            usual synonyms such as ``t1gd``); without it, the dataset.json beside its ``imagesTr``/``imagesTs``
            folder names them, else the image is refused. Outputs lie on its 3D grid.
        test_time_augmentation: average the label probabilities of five passes of the network (the scan as it
            is, turned +/-15 degrees and scaled 0.85/1.15 in-plane; :mod:`.test_time_augmentation`): about five
            times the network's time, labels that depend less on the body's pose and size. Token maps come from
            the unchanged pass.

    Raises:
        TokenUNetError: (and its subclasses) for bad inputs, bad packages, cancel, or memory.
    """
    if label_interpolation not in ("nearest", "linear"):
        raise InputError(f"label_interpolation must be 'nearest' or 'linear', got {label_interpolation!r}")
    # runs that overlap (Slicer's in-process run, a console call): the first saves the process's settings, the last
    # puts them back; this thread keeps its own torch thread count
    with process_settings.held_by_a_run():
        started = cpu_sample()  # the CPU time others use from here on sets the network's threads
        reporter = Progress(progress, cancel)
        clock = StageClock(reporter)
        result_warnings: list[str] = []
        smooth = label_interpolation == "linear"

        with clock.stage("load"):
            package = resolve_model(model, store, lambda fraction: reporter.update("download", fraction), cancel)

            grid = "input" if maps_on_input_grid else "token"
            needs = (
                RunNeeds(with_token_maps, probabilities, grid, test_time_augmentation) if check_free_memory else None
            )
            volumes = channel_volumes(inputs, package, needs, channels)
            run_device = resolve_device(device)
            config, network = package.config, package.network
            keep = config.largest_component_labels(largest_component)

        with clock.stage("preprocess"):
            plan = plan_windows(network, config.inference, run_device, overlap, batch_size)
            if check_free_memory:
                _check_memory(
                    package,
                    volumes,
                    plan,
                    run_device,
                    probabilities,
                    maps_on_input_grid and with_token_maps,
                    test_time_augmentation,
                )
            prepared = prepare(volumes, config, plan.size_multiple, plan.roi_size, reporter)
            cost = None if overlap is None else overlap_cost(prepared.image.shape[1:], plan, config.inference.overlap)
            _publish([*prepared.warnings, *([cost] if cost else [])], result_warnings)

        with clock.stage("inference"):
            want_tokens = with_token_maps and bool(network.has_tokens)
            passes = len(AUGMENTATIONS) if test_time_augmentation else 1
            logits, maps, used_device, used_batch = run_windows(
                network,
                prepared.image,
                plan,
                run_device,
                PassProgress(reporter, 0, passes),
                want_tokens,
                lambda m: _warn(m, result_warnings),
                since=started,
            )
            if test_time_augmentation:
                logits, used_device = _augmented_logits(
                    network, prepared, logits, plan, used_device, used_batch, reporter, result_warnings, started, config
                )

        with clock.stage("postprocess"):
            on_model_grid = postprocess(logits, maps, prepared, config, keep, probabilities or smooth, reporter)
            _publish(on_model_grid.warnings, result_warnings)
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
            test_time_augmentation=test_time_augmentation,
        )


def _augmented_logits(
    network, prepared: Prepared, logits, plan: WindowPlan, device, batch, reporter, sink, since, config
):
    """Test-time augmentation's further passes over ``prepared`` and the averaged scores (:func:`.averaged_scores`),
    each pass starting from the device and batch the pass before fell back to, if it did. Returns (scores, the
    device the last pass ran on)."""
    passes = len(AUGMENTATIONS)
    fitted = {"device": device, "plan": replace(plan, batch_size=batch)}

    def one_pass(changed, index):
        scores, _, fitted["device"], used_batch = run_windows(
            network,
            changed,
            fitted["plan"],
            fitted["device"],
            PassProgress(reporter, index, passes),
            False,
            lambda m: _warn(m, sink),
            since=since,
        )
        fitted["plan"] = replace(plan, batch_size=used_batch)
        return scores

    region = prepared.region
    extent = [part.stop - part.start for part in prepared.paste_slices()[1]]  # the scan in the region
    logits = averaged_scores(
        prepared.image,
        logits,
        one_pass,
        region.direction,
        region.spacing,
        config.inference.activation,
        prepared.padding,
        reporter.check,
        turning_axis(region.direction, extent, plan.roi_size),
    )
    return logits, fitted["device"]


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
    inputs, package: ModelPackage, needs: RunNeeds | None = None, channels: Sequence[str] | None = None
) -> list[Volume]:
    """One checked :class:`Volume` per input channel of ``package``, in its order.

    Before any is read, the inputs are checked from their headers as the command line checks them
    (:func:`.run_inputs.open_run_inputs`); ``needs``: what the run keeps, for its memory check from the files'
    headers (None: no memory check; arrays in memory are checked once, in full, later); ``channels``: the volumes of
    a 4D image, as :func:`segment`'s.

    Raises:
        InputError: the wrong number of channels, or channel names the package does not have.
    """
    items, shown = channel_items(inputs, package.config, package.id, channels)
    opened = open_run_inputs(items, package.config, package.id, shown, needs).opened
    return [read() for read in opened]


def _check_memory(
    package: ModelPackage,
    volumes: list[Volume],
    plan: WindowPlan,
    device,
    probabilities: bool,
    maps_on_input_grid: bool,
    test_time_augmentation: bool = False,
) -> None:
    first = volumes[0]
    pre = package.config.preprocessing
    grid = model_grid(first.grid, pre.orientation, pre.spacing)
    _, windows = scan_plan(grid.shape, plan.roi_size, plan.overlap, plan.step_multiple)
    batch = min(plan.batch_size, windows)  # a batch holds at most the volume's windows
    region = largest_region(grid.shape, plan.roi_size, plan.size_multiple)  # what the network runs over
    estimate = estimate_memory(
        package.network,
        region,
        int(first.array.size),
        plan.roi_size,
        batch,
        probabilities,
        maps_on_input_grid,
    )
    estimate["host"] += sum(volume.array.nbytes for volume in volumes[1:])  # the other channels' own arrays
    if test_time_augmentation:
        network = package.network
        estimate["host"] += augmentation_bytes(int(network.out_channels), int(network.in_channels), region)
    try:
        check_memory(estimate, device)
    except OutOfMemoryError:
        error = wrong_spacing(first.grid, first.name)
        if error is None:
            raise
        raise error from None


def _publish(messages: Sequence[str], sink: list[str]) -> None:
    """Warn ``segment()``'s caller of each message and keep it for the result."""
    for message in messages:
        pywarnings.warn(message, stacklevel=3)
        sink.append(message)


def _warn(message: str, sink: list[str]) -> None:
    log.warning(message)
    sink.append(message)
