"""The ``train`` command: ``tokenunet train DATALIST --config CONFIG.json --out FOLDER [recipe options]``.

Data-parallel: ``torchrun --nproc_per_node N -m TokenUNetSegmentLib.pipeline train ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

from ..arguments import device_name, integer, number, user_path
from ..cli import ProgressPrinter
from ..errors import CancelledError, InputError, OutputError
from ..run_contract import ResultEvent


def _arguments(parser: argparse.ArgumentParser) -> None:
    from .recipe import Recipe

    default = Recipe()
    parser.add_argument(
        "datalist", type=user_path, help="decathlon-style datalist JSON (training/validation cases, label names)"
    )
    parser.add_argument(
        "--config",
        required=True,
        type=user_path,
        help="JSON with the package's 'tokenunet' section (id, architecture, inputs, preprocessing, "
        "inference, labels), or an existing package (or a catalog model id) whose configuration to train",
    )
    parser.add_argument("--out", "-o", required=True, help="output folder (log, checkpoints, package/)")
    parser.add_argument("--id", dest="model_id", help="model id of the package (default: the config's)")
    parser.add_argument("--steps", type=integer(1), default=default.steps)
    parser.add_argument(
        "--batch-size", type=integer(1, 4096), default=default.batch_size, help="patches per step and process"
    )
    parser.add_argument(
        "--patch-size", type=integer(1, 4096), nargs=3, help="patch size (default: the inference roi_size)"
    )
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default=default.optimizer)
    parser.add_argument("--lr", type=number(above=0.0), help="learning rate (default 0.01 sgd, 3e-4 adamw)")
    parser.add_argument("--weight-decay", type=number(minimum=0.0), default=default.weight_decay)
    parser.add_argument("--schedule", choices=("poly", "cosine"), default=default.schedule)
    parser.add_argument("--warmup-steps", type=integer(0), default=0)
    parser.add_argument("--augmentation", type=number(0.0, 10.0), default=1.0, help="augmentation strength (0 = none)")
    parser.add_argument("--flip-axes", type=integer(0, 2), nargs="*", default=[], help="random flips along these axes")
    parser.add_argument(
        "--synthetic-ratio",
        type=number(0.0, 1.0),
        default=default.synthetic_ratio,
        help="share of patches synthesised from tissue maps (SynthSeg-style CT; "
        'cases with "synthesis": false excluded)',
    )
    parser.add_argument(
        "--remap-ratio",
        type=number(0.0, 1.0),
        default=default.remap_ratio,
        help="share of the other patches whose tissues get another contrast phase",
    )
    parser.add_argument(
        "--background-ratio",
        type=number(0.0, 1.0),
        default=default.background_ratio,
        help="share of patches centred anywhere rather than on an organ (hard background)",
    )
    parser.add_argument("--lesion-probability", type=number(0.0, 1.0), default=default.lesion_probability)
    parser.add_argument(
        "--large-lesion-share",
        type=number(0.0, 1.0),
        default=default.large_lesion_share,
        help="share of the lesions drawn 30-90 mm across (large metastases) instead of 6-30 mm",
    )
    parser.add_argument(
        "--hold-out",
        nargs="*",
        default=[],
        metavar="PATIENT",
        help="leave these patients' cases out (leave-one-patient-out folds; see the datalist's \"patient\")",
    )
    parser.add_argument(
        "--select",
        choices=("best", "last"),
        default=default.select,
        help="package the best validated checkpoint or the last one",
    )
    parser.add_argument("--workers", type=integer(0, 256), default=default.workers, help="processes that draw patches")
    parser.add_argument("--val-every", type=integer(1), default=default.val_every, help="validate every N steps")
    parser.add_argument("--seed", type=integer(0, 2**32 - 1 - 10**6), default=0)
    parser.add_argument("--threads", type=integer(1, 1024), help="CPU threads per process (default: torch's)")
    parser.add_argument(
        "--max-minutes",
        type=number(above=0.0),
        help="stop this invocation after this long (a --resume continues) and package the selected checkpoint",
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    parser.add_argument(
        "--device", type=device_name, default="auto", help="auto (the default), cpu, cuda, cuda:N or mps"
    )
    parser.add_argument("--description", help="package description")
    parser.add_argument("--progress", choices=("auto", "bar", "json", "none"), default="auto")


def load_config(path: str) -> dict:
    """The ``tokenunet`` section from a JSON file (bare or within a metadata.json), a package, or a catalog model's
    package named by its id (as ``segment --model`` names it: a known id is that model)."""
    source = _catalog_package(path) or Path(path)
    if source.is_dir() or source.suffix.lower() == ".zip":
        from ..package_source import read_metadata

        return read_metadata(source).config.to_dict()
    from ..json_files import read_json_file

    data = read_json_file(source, f"the training configuration {path}")
    if not isinstance(data, dict):
        raise InputError(
            f"the training configuration {path} is not a JSON object", "see scripts/demo-model/config.json"
        )
    section = data.get("tokenunet", data)
    if not isinstance(section, dict):
        raise InputError(f"the 'tokenunet' section of {path} is not a JSON object")
    return section


def _catalog_package(text: str) -> Path | None:
    """The package of the catalog model whose id is ``text``, None when no model has that id.

    Raises:
        InputError: a downloadable model that is not on this computer yet (nothing is downloaded here).
    """
    from ..catalog import ModelStore
    from ..metadata import model_id_problem

    if model_id_problem(text) is not None:
        return None
    store = ModelStore()
    if text not in {entry.id for entry in store.entries()}:
        return None
    path = store.local_path(text)
    if path is None:
        raise InputError(
            f"model '{text}' is in the catalog but not on this computer yet",
            f"download it first (e.g. tokenunet segment --model {text} on any scan), then pass its id again",
        )
    return path


def _datalist_config(path: str):
    """The typed configuration ``datalist --config`` matches the dataset to (labels, input channels)."""
    from ..metadata import parse_config

    return parse_config(load_config(path), f"the configuration {path}")


def check_output(out: str | Path, resume: bool) -> Path:
    """The training folder, checked before any work: a folder (or creatable), and, without ``resume``, holding
    no earlier run whose log, checkpoints or package this run would replace."""
    from ..output_folder import resolve_destination
    from .trainer import CHECKPOINT_DIR, LOG_FILE, PACKAGE_DIR

    folder = resolve_destination(out)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"the output path {folder} is a file, not a folder", "choose a folder")
    places = (LOG_FILE, CHECKPOINT_DIR, f"{CHECKPOINT_DIR}/best.pt", f"{CHECKPOINT_DIR}/last.pt", PACKAGE_DIR)
    for place in (folder / name for name in places):  # what the run reads and writes stays inside --out
        if place.is_symlink():
            raise OutputError(
                f"{place} is a link (to {os.readlink(place)}): train writes its files only inside --out",
                "remove the link, or choose another --out",
            )
    earlier = [name for name in (LOG_FILE, CHECKPOINT_DIR, PACKAGE_DIR) if os.path.lexists(folder / name)]
    if earlier and not resume:
        raise OutputError(
            f"{folder} already holds a training run ({', '.join(earlier)})",
            "pass --resume to continue it, or choose another folder",
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(
            f"cannot create {folder}: {error.strerror or error}", "choose a folder you can write to"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write in {folder}", "choose a folder you can write to")
    return folder


def run_train(args: argparse.Namespace) -> int:
    """Train and package; Ctrl-C or SIGTERM stops it (:mod:`..cancel_signals`: a second stop does not cut the clean-up
    short) with a line that names the checkpoints it keeps and ``--resume``."""
    import threading

    from ..cancel_signals import cleaning_up, install_cancel_handlers, restore_handlers
    from ..locks import DestinationLock
    from .recipe import Recipe
    from .trainer import _distributed, train

    rank, world = _distributed()
    stop = threading.Event()  # set by Ctrl-C or SIGTERM
    handlers = install_cancel_handlers(stop)
    try:
        from ..output_folder import resolve_destination

        args.out = str(resolve_destination(args.out))  # every process writes where rank 0 checks and locks ('~' too)
        if rank != 0:  # writes nothing: "no output was written" would read as if the whole run had left nothing
            try:
                return _train(args, train, Recipe, rank)
            except (KeyboardInterrupt, CancelledError, Exception) as error:
                if isinstance(error, Exception) and not isinstance(error, CancelledError) and not stop.is_set():
                    raise
                # stopped, or failing because another process of the group stopped by the same signal
                raise CancelledError(
                    f"interrupted (process {rank} of {world})", "process 0 writes the run's files and says what it kept"
                ) from None
        # one process checks and locks the folder; the others write nothing there but through it
        destination = Path(args.out)
        created = [f for f in (destination, *destination.parents) if not os.path.lexists(f)]  # innermost first
        out = check_output(args.out, args.resume)
        lock = DestinationLock(out, "train")
        try:
            lock.acquire()
            try:
                return _train(args, train, Recipe, rank)
            finally:
                with cleaning_up():  # a later stop does not cut the release short (:mod:`..cancel_signals`)
                    lock.release()
        except BaseException as error:
            with cleaning_up():
                with contextlib.suppress(OSError):  # a run refused or failed before writing leaves no empty folder
                    for folder in created:
                        folder.rmdir()
                # an error while a stop is handled (a worker or another process of the group ended by the same signal)
                stopped = isinstance(error, (KeyboardInterrupt, CancelledError)) or stop.is_set()
                kept = kept_after_a_stop(out) if stopped else None
            if kept:
                raise CancelledError("interrupted", kept) from None
            if stopped and isinstance(error, Exception):
                raise KeyboardInterrupt from None
            raise
    finally:
        restore_handlers(handlers)


def kept_after_a_stop(out: Path) -> str | None:
    """What a stopped training run leaves in ``out`` and how to go on (None: nothing, the folder is as it was)."""
    from .trainer import CHECKPOINT_DIR, LOG_FILE

    checkpoints, log = out / CHECKPOINT_DIR, out / LOG_FILE
    if (checkpoints / "last.pt").is_file():
        step = _last_saved_step(log)
        saved = f"; the log's last save: step {step}" if step is not None else ""
        return (
            f"kept: the checkpoints in {checkpoints} (last.pt{saved}) and {log}; "
            "continue with the same command and --resume"
        )
    if log.is_file():
        return f"kept: {log}, no checkpoint yet; run again with --resume (it starts over) or into another folder"
    return None


def _last_saved_step(log: Path) -> int | None:
    """The step of the last checkpoint ``last.pt`` the training log records (validations and timed saves)."""
    step = None
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("event") in ("validation", "checkpoint"):
                    step = record.get("step", step)
    return step


def _train(args: argparse.Namespace, train, Recipe, rank: int) -> int:
    from ..metadata import parse_config

    config = load_config(args.config)
    if args.model_id:
        config["id"] = args.model_id
    parse_config(config, f"training configuration {args.config}")  # one clear error before any work
    recipe = Recipe.from_arguments(args)
    printer = ProgressPrinter(args.progress if rank == 0 else "none")
    cpus = os.cpu_count() or 1
    if args.threads and args.threads > cpus:  # torch takes them, and the CPUs switch between them
        printer.warning(
            f"--threads {args.threads} is more than this computer's {cpus} CPUs: it trains slower, not faster"
        )

    def echo(record: dict) -> None:
        if record.get("event") == "validation":
            line = f"step {record['step']}: loss {record['loss']:.4f}, validation mean Dice {record['mean_dice']:.4f}"
            if printer.json:  # an info log event, not a plain line among the events
                printer.note(line)
                return
            printer.close()
            printer.last = ""
            print(line, file=sys.stderr)

    started = time.perf_counter()
    try:
        package = train(
            args.datalist,
            config,
            args.out,
            recipe,
            resume=args.resume,
            device=args.device,
            description=args.description,
            progress=printer,
            echo=echo,
        )
    finally:
        printer.close()
    if package is not None:
        folder = Path(args.out).resolve()
        files = {"package": os.path.relpath(Path(package).resolve(), folder)}
        printer.emit(ResultEvent(str(folder), files, seconds=round(time.perf_counter() - started, 3)))
        print(f"wrote {package}")
    return 0


class _LayoutOption(argparse.Action):
    """Stores an option of one layout and notes that it was given, so that it is refused with another layout even
    when given with its default value (``decathlon ... --table btcv``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.layout_options_given = {*getattr(namespace, "layout_options_given", ()), self.dest}


def _datalist_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "layout",
        choices=("totalsegmentator", "decathlon", "folders"),
        help="totalsegmentator: <case>/ct.nii.gz + segmentations/; decathlon: dataset.json "
        "(MSD, nnU-Net raw, AMOS); folders: --images and --labels paired by number (BTCV)",
    )
    parser.add_argument("root", nargs="?", type=user_path, help="the dataset folder (totalsegmentator, decathlon)")
    parser.add_argument("--images", action=_LayoutOption, type=user_path, help="folders: the image folder")
    parser.add_argument("--labels", action=_LayoutOption, type=user_path, help="folders: the label folder")
    parser.add_argument(
        "--table",
        action=_LayoutOption,
        type=user_path,
        default="btcv",
        help="folders: btcv, amos, totalsegmentator or a JSON name table",
    )
    parser.add_argument(
        "--config",
        type=user_path,
        help="the model whose labels and input channels to match (report and 'partial'): a catalog model id, a "
        "package, or a configuration JSON",
    )
    parser.add_argument(
        "--splits",
        action=_LayoutOption,
        nargs="+",
        default=["train"],
        help="totalsegmentator: meta.csv splits to train on",
    )
    parser.add_argument(
        "--validation-splits",
        action=_LayoutOption,
        nargs="*",
        default=["val"],
        help="totalsegmentator: splits to validate on",
    )
    parser.add_argument(
        "--structures",
        action=_LayoutOption,
        choices=("all", "model"),
        default="all",
        help="totalsegmentator: read every mask (full maps for synthesis) or only the model's",
    )
    parser.add_argument(
        "--validation-fraction",
        action=_LayoutOption,
        type=number(0.0, below=1.0),
        default=0.0,
        help="decathlon, folders: share held out",
    )
    parser.add_argument("--out", "-o", required=True, help="the datalist JSON to write")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out file that this command did not write"
    )


LAYOUT_OPTIONS = {  # option: (its dest, the layouts it applies to)
    "--images": ("images", ("folders",)),
    "--labels": ("labels", ("folders",)),
    "--table": ("table", ("folders",)),
    "--splits": ("splits", ("totalsegmentator",)),
    "--validation-splits": ("validation_splits", ("totalsegmentator",)),
    "--structures": ("structures", ("totalsegmentator",)),
    "--validation-fraction": ("validation_fraction", ("decathlon", "folders")),
}


def _check_layout_options(args: argparse.Namespace) -> None:
    """Options of another layout are refused, not ignored (before: ``decathlon ... --splits test`` trained on every
    split without a word)."""
    if args.layout == "folders" and args.root:
        raise InputError(
            f"the folders layout takes no dataset folder (got {args.root!r})", "give --images and --labels instead"
        )
    given = getattr(args, "layout_options_given", set())
    for option, (dest, layouts) in LAYOUT_OPTIONS.items():
        if args.layout not in layouts and dest in given:
            raise InputError(
                f"{option} applies only to the {' and '.join(layouts)} layout{'s' if len(layouts) > 1 else ''}",
                f"drop it for the {args.layout} layout",
            )


def _refuse_out_over_an_input(args: argparse.Namespace) -> None:
    """``--out`` may not name a file the command reads (``--overwrite`` or not): the dataset's dataset.json or
    meta.csv, a name table, the configuration."""
    from ..output_folder import refuse_output_over_inputs

    root = Path(args.root) if args.root else None
    inputs = [
        ("the dataset's own dataset.json", root / "dataset.json" if root and args.layout == "decathlon" else None),
        ("the dataset's meta.csv", root / "meta.csv" if root and args.layout == "totalsegmentator" else None),
        ("the name table --table", Path(args.table) if args.layout == "folders" and args.table else None),
        ("the configuration --config", Path(args.config) if args.config else None),
    ]
    refuse_output_over_inputs(args.out, "--out", inputs, "this command reads", "write the datalist elsewhere")


def _refuse_out_over_a_listed_file(out: Path, given: str, datalist: dict) -> None:
    """``--out`` may not be (or link to) an image or label map the datalist lists, ``--overwrite`` or not: the
    user's scan would be replaced by the datalist. Checked once the dataset is scanned, before anything is written."""
    import os

    from .datasets import listed_files

    try:
        target = os.stat(out)
    except OSError:  # not there yet: nothing of the dataset's to lose
        return
    for path, what in listed_files(datalist):
        try:
            listed = os.stat(path)
        except OSError:
            continue
        if (listed.st_dev, listed.st_ino) == (target.st_dev, target.st_ino):
            raise InputError(
                f"--out {Path(given).name} is {what}, which the datalist lists ({path})", "write the datalist elsewhere"
            )


def _refuse_out_inside_the_datasets_folders(out: Path, given: str, datalist: dict, args: argparse.Namespace) -> None:
    """``--out`` may not lie inside a folder that holds the dataset's images or label maps (``imagesTr``, a
    TotalSegmentator case folder, ``--images``/``--labels``), ``--overwrite`` or not: a file there that the datalist
    does not list (another scan, the user's notes) would be replaced, and a new file would land among the data. The
    dataset's root (beside ``dataset.json`` or ``meta.csv``) stays allowed."""
    import os

    from .datasets import listed_files

    def identity(folder) -> tuple[int, int] | None:  # the folder on disk, however its path is spelled
        try:
            info = os.stat(folder)
        except OSError:
            return None
        return info.st_dev, info.st_ino

    root = Path(os.path.realpath(args.root)) if args.root else None
    folders = {Path(os.path.realpath(path.parent)) for path, _ in listed_files(datalist)}
    folders |= {Path(os.path.realpath(f)) for f in (args.images, args.labels) if args.layout == "folders" and f}
    # compared as folders on disk, not as text: on a case-insensitive disk (macOS, Windows) "imagestr" is "imagesTr"
    by_identity = {identity(folder): folder for folder in folders - {root}}
    by_identity.pop(identity(root) if root else None, None)
    by_identity.pop(None, None)
    for parent in Path(os.path.realpath(out)).parents:  # the innermost first
        folder = by_identity.get(identity(parent))
        if folder is not None:
            raise InputError(
                f"--out {Path(given).name} is inside the dataset's folder {folder.name} ({folder}), which this "
                "command reads",
                f"write the datalist elsewhere, e.g. in {root or folder.parent}",
            )


def _refuse_out_named_as_an_image(out: Path) -> None:
    """``--out`` may not be named as an image or label map, ``--overwrite`` or not: a datalist is JSON, and such a
    name outside the listed folders is a scan the datalist does not list (a test scan in ``imagesTs``)."""
    from .datasets import IMAGE_SUFFIXES

    if out.name.lower().endswith(IMAGE_SUFFIXES):
        raise InputError(
            f"--out {out.name} names an image file; a datalist is JSON", "give a .json file name, e.g. datalist.json"
        )


def run_datalist(args: argparse.Namespace) -> int:
    from ..output_folder import check_file_destination, write_file_atomically
    from . import datasets

    _check_layout_options(args)
    _refuse_out_over_an_input(args)
    # before the dataset is scanned; a datalist this command wrote is replaced, any other file only if asked
    out = check_file_destination(args.out, args.overwrite or datasets.written_by_datalist)
    config = _datalist_config(args.config) if args.config else None
    labels = [label.name for label in config.labels] if config else None
    if args.layout == "folders":
        if not (args.images and args.labels):
            raise InputError("the folders layout needs --images and --labels")
        datalist, report = datasets.folders(args.images, args.labels, args.table, labels, args.validation_fraction)
    elif not args.root:
        raise InputError(f"the {args.layout} layout needs the dataset folder")
    elif args.layout == "totalsegmentator":
        if config and (len(config.inputs) != 1 or config.inputs[0].modality.upper() not in ("", "CT")):
            listed = ", ".join(channel.name for channel in config.inputs)
            raise InputError(
                f"TotalSegmentator's cases are one CT each; model '{config.id}' takes {len(config.inputs)} "
                f"channel{'s' if len(config.inputs) > 1 else ''} ({listed})",
                "choose the configuration of a CT model",
            )
        datalist, report = datasets.totalsegmentator(
            args.root, labels, tuple(args.splits), tuple(args.validation_splits), args.structures
        )
    else:
        inputs = config.inputs if config else None
        datalist, report = datasets.decathlon(args.root, labels, args.validation_fraction, inputs, config and config.id)
    _refuse_out_over_a_listed_file(out, args.out, datalist)
    _refuse_out_inside_the_datasets_folders(out, args.out, datalist, args)
    _refuse_out_named_as_an_image(out)  # after the two above, which say more where they apply
    write_file_atomically(out, json.dumps(datalist, indent=2) + "\n")  # all at once
    cases = len(datalist["training"]), len(datalist.get("validation", []))
    print(f"wrote {out}: {cases[0]} training and {cases[1]} validation cases, {report['structures']} structures")
    if report.get("skipped"):
        shown = ", ".join(report["skipped"][:10]) + (", ..." if len(report["skipped"]) > 10 else "")
        print(f"warning: {len(report['skipped'])} left out: {shown}", file=sys.stderr)
    if report.get("channels"):
        first = datalist["training"][0]
        files = first["image"] if isinstance(first["image"], list) else None
        print(
            "model channels from the dataset's: "
            + ", ".join(
                f"{model} = {files[index]} ({ours})" if files else f"{model} = {ours}"
                for index, (model, ours) in enumerate(report["channels"])
            )
        )
    if labels:
        print(f"model labels found: {', '.join(report['matched'])}")
        if report["missing"]:
            print(f"model labels not in the dataset (cases marked partial): {', '.join(report['missing'])}")
    return 0
