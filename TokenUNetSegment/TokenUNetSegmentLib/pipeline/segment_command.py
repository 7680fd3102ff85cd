"""The ``segment`` command: files in, the output folder of :mod:`.outputs` out.

``tokenunet segment CT.nii.gz --model ID --out FOLDER``; SIGTERM (or Ctrl-C) cancels wherever the run is (reading,
torch's import, between windows: :mod:`.cancel_signals`) and leaves no partial output. With ``--progress json`` stderr
carries typed events only (progress, warnings, and a final result or error event; see :mod:`.run_contract`).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .arguments import channel_names, device_name, integer, number, text, user_path
from .background import BackgroundCall, switch_interval
from .cancel_signals import cleaning_up, install_cancel_handlers, restore_handlers
from .cli import WRITE_START, ProgressPrinter
from .outputs import ATTENTION_GRIDS, DEFAULT_ATTENTION_GRID
from .run_contract import ExitCode, ResultEvent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser)
    add_run_options(parser)


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """One run's inputs: a volume per channel, or one 4D image with ``--channels``."""
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        type=user_path,
        help="one volume per model input channel (NIfTI, NRRD, MHA or a DICOM folder), in the "
        "model's channel order, or in any order when the file names match its channel patterns; nnU-Net's numbered "
        "files (CASE_0000.nii.gz, ...) by their dataset.json's channel names (beside them or beside their "
        "imagesTr/imagesTs folder), refused when nothing names them",
    )
    parser.add_argument(
        "--channels",
        type=channel_names,
        help="for one 4D image holding every channel (NIfTI, NRRD or MetaImage; the Medical Segmentation Decathlon's "
        "imagesTr/*.nii.gz): "
        "what each of its volumes holds, in order, comma-separated, e.g. FLAIR,T1,T1c,T2 (the model's channel names, "
        "any case, synonyms such as t1gd or t1ce for T1c); default: the dataset.json beside it or beside its imagesTr "
        "folder",
    )


def add_run_options(parser: argparse.ArgumentParser, out_help: str = "output folder") -> None:
    """The model, device, window, output and progress options, shared with the ``batch`` command."""
    parser.add_argument(
        "--model",
        "-m",
        type=text("a model id or package path"),
        help="model id or package path (default: the catalog's)",
    )
    parser.add_argument("--out", "-o", required=True, help=out_help)
    parser.add_argument(
        "--device",
        type=device_name,
        default="auto",
        help="auto (the default: cuda > mps > cpu), cpu, cuda, cuda:N or mps",
    )
    parser.add_argument(
        "--overlap",
        type=number(minimum=0.0, below=1.0),
        default=None,
        help="sliding-window overlap in [0, 1), as MONAI's (default: the model's, 0.25 for the bundled one); the "
        "window count, and the time, grows about as 1/(1-overlap)^3 (0.9: about 30 times 0.25's); window steps are "
        "whole token cells (8 voxels in the bundled model's 64^3 windows: above 0.875 acts as 0.875); a warning says "
        "the count when it doubles",
    )
    parser.add_argument(
        "--batch-size",
        type=integer(minimum=1, maximum=4096),
        default=None,
        help="windows per pass (default: the model's, else 1 on a CPU, 2 on a GPU)",
    )
    parser.add_argument("--probabilities", action="store_true", help="also write per-label probability maps")
    parser.add_argument("--no-heatmaps", action="store_true", help="skip the token attention maps")
    parser.add_argument(
        "--attention-grid",
        choices=ATTENTION_GRIDS,
        default=DEFAULT_ATTENTION_GRID,
        help="token (default): each map on its own coarse token grid, same place in space (small: Slicer shows "
        "it interpolated); input: resampled onto the input grid (large); auto: the input grid unless that "
        "exceeds 2 GiB",
    )
    parser.add_argument("--largest-component", action="store_true", help="keep each label's largest component")
    parser.add_argument(
        "--smooth",
        action="store_true",
        help="decide labels on the input grid from interpolated probabilities (smoother, slower)",
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: average the labels' probabilities over five passes of the network (the scan "
        "as it is, turned +/-15 degrees and scaled 0.85/1.15 in-plane); about five times the network's time",
    )
    parser.add_argument("--no-overview", action="store_true", help="skip overview.png")
    parser.add_argument(
        "--progress",
        choices=("auto", "bar", "json", "none"),
        default="auto",
        help="auto: a bar on a terminal, else none; json: one event per line on stderr (default: auto)",
    )


# The reading thread returns to Python between its SimpleITK calls and waits for the GIL that torch's import holds
READ_SWITCH_INTERVAL_S = 0.001
AHEAD_THREADS = max(1, (os.cpu_count() or 2) - 1)  # resampling next to torch's import: one core left to the import


def assessment_lines(result) -> list[str]:
    """The table printed after a run: per label its volume, confidence and flag codes, then the run's summary
    (``warning:`` first when nothing was found or the scan itself is flagged)."""
    assessment = result.assessment
    if assessment is None:
        return []
    width = max([len("label")] + [len(label.name) for label in result.label_table])
    lines = [f"{'label':<{width}}  {'volume mL':>10}  {'confidence':>10}  flags"]
    for label in result.label_table:
        judged = assessment.labels.get(label.name)
        if judged is None:
            continue
        codes = ", ".join(flag.code for flag in judged.flags)
        volume = result.volumes_ml.get(label.name, 0.0)
        lines.append(f"{label.name:<{width}}  {volume:>10.1f}  {judged.confidence:>10.2f}  {codes}".rstrip())
    warn = bool(assessment.flags) or not assessment.found
    lines.append(("warning: " if warn else "") + assessment.summary)
    return lines


def check_options(args: argparse.Namespace) -> None:
    """Refuse run options that contradict each other (before anything is opened)."""
    from .errors import InputError

    if args.no_heatmaps and args.attention_grid != DEFAULT_ATTENTION_GRID:  # before: ignored
        raise InputError(
            f"--attention-grid {args.attention_grid} places maps that --no-heatmaps does not write",
            "drop one of the two",
        )


@dataclass
class CaseInputs:
    """One run's inputs checked from their headers (:func:`open_case`): a path per channel, the 4D image's channel
    order when one image holds them all, and ``read()``, which reads the voxels and resamples them onto the model
    grid (safe to call in a thread)."""

    paths: list
    stack_order: object | None
    on_input_grid: bool
    read: Callable[[], list]
    made_from: dict  # what the result is made from (:mod:`.result_key`), taken before any voxel is read


def _ordered_files(inputs: list, channels, config, package_id: str, option: str, where: str, printer) -> list:
    """One file per channel in the package's order, each put in its channel by what it holds: ``channels`` (a
    datalist's names of its files), else nnU-Net's numbered files (``case_0000.nii.gz``) by the dataset.json beside
    their ``imagesTr``/``imagesTs`` folder, else by their names (:func:`.channels.order_inputs`)."""
    from .channel_stack import UNNAMED_FILES_HINT, files_named_instead, nnunet_file_names, refuse_unnamed_files
    from .channels import order_inputs, order_named_files

    if channels is None and len(inputs) == len(config.inputs) > 1:
        found = nnunet_file_names(inputs, option)
        if found is not None:
            channels, where = found[0], f"{Path(inputs[0]).name} (channel names from {found[1]})"
        elif option == "--channels":  # segment's files: nothing but their dataset.json names them
            refuse_unnamed_files(inputs, f"{UNNAMED_FILES_HINT}, or {files_named_instead(option)}")
        else:  # a datalist's entry, as train refuses it
            listed = json.dumps([channel.name for channel in config.inputs])
            refuse_unnamed_files(inputs, f'name what each holds in the entry\'s "channels", e.g. {listed}')
    if channels is None:
        return order_inputs(inputs, config.inputs, package_id)  # by name, one per channel
    ordered = order_named_files(inputs, list(channels), config.inputs, package_id, where)
    pairs = ", ".join(f"{c.name} = {Path(item).name}" for c, item in zip(config.inputs, ordered, strict=True))
    printer.note(f"channels by name: {pairs}")
    return ordered


def open_case(
    inputs,
    channels,
    config,
    package_id: str,
    folder,
    args,
    printer,
    option: str = "--channels",
    named_in: str = "",
) -> CaseInputs:
    """Open one run's ``inputs`` (``channels``: the names of one 4D image's volumes, given as ``option``, or with
    ``named_in`` (where they come from, e.g. a datalist's entry) of each of several files) and check
    them from their headers (a DICOM series' slices included, a folder's series chosen by the channel's Modality),
    the run's memory and the free space of ``folder``'s disk, before any voxel is read: as ``segment()`` does
    (:mod:`.run_inputs`)."""
    from .channel_stack import open_stack, refuse_names
    from .channels import series_warnings
    from .outputs import estimate_output_bytes
    from .preprocess import resample_ahead
    from .result_key import made_from
    from .run_inputs import RunNeeds, open_run_inputs

    source = made_from(inputs, channels, args)
    stack = None  # one 4D image holding every channel: its order from --channels or its dataset.json
    if len(inputs) == 1 and (len(config.inputs) > 1 or channels is not None):
        stack = open_stack(inputs[0], config, package_id, channels, option)
    if stack is not None:
        items, order = stack
        paths = [inputs[0]] * len(items)
        shown = order.shown()
        printer.note(order.describe())
    elif channels is not None and not (named_in and len(inputs) > 1):
        refuse_names(inputs, config.inputs, package_id, option)
    else:
        items = paths = _ordered_files(list(inputs), channels, config, package_id, option, named_in, printer)
        shown = [Path(item).name for item in paths]
    needs = RunNeeds(not args.no_heatmaps, args.probabilities, args.attention_grid, bool(getattr(args, "tta", False)))
    checked = open_run_inputs(items, config, package_id, shown, needs)
    opened = checked.opened
    found_series = series_warnings(opened, config.inputs)
    folder.check_space(
        estimate_output_bytes(
            opened[0].values, len(config.labels), checked.maps, checked.map_voxels, probabilities=args.probabilities
        )
    )

    def read() -> list:  # once: segment() and the overview share them
        volumes = [read_one() for read_one in opened]
        volumes[0].warnings += found_series  # reported with the readers' warnings
        resample_ahead(volumes, config, threads=AHEAD_THREADS)
        return volumes

    return CaseInputs(paths, stack[1] if stack is not None else None, checked.on_input_grid, read, source)


def segment_case(case: CaseInputs, volumes: list, package, folder, args, printer, progress, cancel):
    """Segment one case's read ``volumes`` with the loaded ``package`` and write ``folder`` (opened) all at once;
    ``progress(stage, fraction)`` goes over the whole case (segment(), then the files). Returns ``(result, files,
    seconds)``; warnings are printed as they come, and the folder's own after the files are written."""
    from .outputs import write_outputs
    from .segmentation import segment

    shown: list[str] = []
    with warnings.catch_warnings():  # segment()'s warnings (API callers get them so) are printed when they come
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = lambda message, *_, **__: (shown.append(str(message)), printer.warning(str(message)))
        result = segment(
            volumes,
            package,
            device=args.device,
            overlap=args.overlap,
            batch_size=args.batch_size,
            probabilities=args.probabilities,
            with_token_maps=not args.no_heatmaps,
            maps_on_input_grid=case.on_input_grid,
            largest_component=True if args.largest_component else None,
            label_interpolation="linear" if args.smooth else "nearest",
            test_time_augmentation=bool(getattr(args, "tta", False)),
            progress=lambda stage, fraction: progress(stage, WRITE_START * fraction),
            cancel=cancel,
        )
    started = time.perf_counter()
    extra = {
        "inputs": {name: str(Path(p).resolve()) for name, p in zip(package.input_names, case.paths, strict=True)},
        **({"channel_order": case.stack_order.report()} if case.stack_order is not None else {}),
        "package": {
            "id": package.id,
            "path": str(package.path),
            "version": package.metadata.version,
            "description": package.metadata.description,
            "weights_sha256": package.config.weights.sha256,
        },
        "made_from": case.made_from,
    }
    outputs = write_outputs(
        result,
        folder,
        image=volumes[0].array,
        window=package.config.display_window,
        attention_grid=args.attention_grid,
        overview=not args.no_overview,
        extra_report=extra,
        progress=lambda f: progress("write", WRITE_START + (1 - WRITE_START) * f),
    )
    printer.close()
    for message in [*(m for m in result.warnings if m not in shown), *folder.warnings]:
        printer.warning(message)
    return result, outputs, result.timings["total"] + time.perf_counter() - started


def run_segment(args: argparse.Namespace, cancel=None) -> int:
    """Segment ``args.inputs`` and write the output folder; returns the exit code (errors raise).

    What the user can get wrong (the output folder, the model, the inputs' channels and headers: a DICOM series'
    slices included, free disk space for the outputs the headers imply) is checked before torch is imported. The
    voxels are then read and resampled onto the model grid (:func:`.preprocess.resample_ahead`) in a thread while
    torch is imported and the package loaded (damaged voxel data is reported once that is done). The output folder
    is locked from the start and replaced only when the run is done.
    """
    from .catalog import ModelStore
    from .outputs import output_folder
    from .package_source import read_metadata
    from .progress import Progress

    cancel = cancel or threading.Event()
    printer = ProgressPrinter(args.progress)
    handlers = install_cancel_handlers(cancel) if isinstance(cancel, threading.Event) else []
    folder = None
    check_options(args)
    try:
        printer("start", 0.0)  # a first line at once: before the model and inputs are read, torch imported
        store = ModelStore(getattr(args, "catalog", None))
        folder = output_folder(args.out, store.protected_folders())
        folder.open()
        download = Progress(lambda stage, fraction: printer(stage, WRITE_START * fraction), cancel)
        package_path = store.resolve(args.model, lambda fraction: download.update("download", fraction), cancel)
        metadata = read_metadata(package_path)
        case = open_case(args.inputs, args.channels, metadata.config, metadata.id, folder, args, printer)
        package, volumes = load_while_reading(lambda: load_package_at(package_path), case.read)
        result, outputs, seconds = segment_case(case, volumes, package, folder, args, printer, printer, cancel)
        printer.emit(
            ResultEvent(
                str(folder.destination),
                {role: str(path.relative_to(folder.destination)) for role, path in outputs.items()},
                tuple(result.warnings),
                round(seconds, 3),
            )
        )
        print(
            f"wrote {outputs['segmentation']} ({len(result.label_table)} labels, device {result.device}, "
            f"{seconds:.1f} s)"
        )
        for line in assessment_lines(result):
            print(line)
        return ExitCode.OK
    except BaseException:  # errors, cancel, Ctrl-C: end the progress line before the message
        with cleaning_up():
            printer.close()
            if folder is not None:
                folder.abort()  # the previous result stays as it was
        raise
    finally:
        restore_handlers(handlers)


def load_while_reading(load: Callable[[], object], read: Callable[[], list]):
    """``(load(), read())``: the voxels read in a thread while ``load()`` imports torch and loads the package in
    another. The main thread only waits for them: a stop (:mod:`.cancel_signals`) is raised there at once, never
    inside torch's import, where a ``KeyboardInterrupt`` from Python code that torch's C++ start-up runs aborted the
    process (exit -6, the case's staging folder and lock left) or marked it to end by SIGINT (exit -2)."""
    with switch_interval(READ_SWITCH_INTERVAL_S):
        reading = BackgroundCall(read, "TokenUNet read")  # next to torch's import
        loading = BackgroundCall(load, "TokenUNet load")
        return loading.result(), reading.result()


def load_package_at(path):
    """The package at ``path`` loaded (torch imported on first use)."""
    from .package_loader import load_package

    return load_package(path)
