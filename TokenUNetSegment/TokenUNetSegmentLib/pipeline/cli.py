"""The command line: ``python -m TokenUNetSegmentLib.pipeline <command> ...`` (``tokenunet`` when installed).

Commands are registered in :data:`COMMANDS` as name -> :class:`Command` (help, add_arguments, run), so other
modules (training, evaluation, CKA) add theirs with :func:`register_command`. A run function returns the exit
code; :class:`TokenUNetError` becomes a one-line message and exit code 2 (a traceback only with ``--debug``).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}
EXIT_USER_ERROR = 2
EXIT_CANCELLED = 130
WRITE_START = 0.9  # share of the progress bar for segment(); the output files take the rest


def register_command(name: str, help: str, add_arguments, run) -> None:
    """Add a subcommand: ``add_arguments(parser)`` declares its options, ``run(args)`` returns the exit code."""
    COMMANDS[name] = Command(help, add_arguments, run)


class ProgressPrinter:
    """Progress on stderr: a bar on a terminal, JSON lines for programs (``--progress json``), or nothing."""

    def __init__(self, mode: str = "auto", stream=None):
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "none"
        self.mode = mode
        self.start = time.monotonic()
        self.last = ""

    def __call__(self, stage: str, fraction: float) -> None:
        if self.mode == "json":
            print(json.dumps({"stage": stage, "fraction": round(fraction, 4)}), file=self.stream, flush=True)
        elif self.mode == "bar":
            filled = int(30 * fraction)
            line = (
                f"\r[{'#' * filled}{'.' * (30 - filled)}] {100 * fraction:5.1f}% {stage:<12} "
                f"{time.monotonic() - self.start:6.1f}s"
            )
            if line != self.last:
                self.stream.write(line)
                self.stream.flush()
                self.last = line

    def close(self) -> None:
        if self.mode == "bar" and self.last:
            self.stream.write("\n")
            self.stream.flush()


# --- segment -------------------------------------------------------------------------------------------


def _segment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="one volume per model input channel (NIfTI, NRRD, MHA or a DICOM folder), in the "
        "model's channel order, or in any order when the file names match its channel patterns",
    )
    parser.add_argument("--model", "-m", default=None, help="model id or package path (default: the catalog's)")
    parser.add_argument("--out", "-o", required=True, help="output folder")
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    parser.add_argument("--overlap", type=float, default=None, help="sliding-window overlap in [0, 1)")
    parser.add_argument("--batch-size", type=int, default=None, help="windows per forward pass")
    parser.add_argument("--probabilities", action="store_true", help="also write per-label probability maps")
    parser.add_argument("--no-heatmaps", action="store_true", help="skip the token attention maps")
    parser.add_argument(
        "--attention-grid",
        choices=("auto", "input", "token"),
        default="auto",
        help="write token maps on the input grid, or on the coarse token grid (small, same place "
        "in space); auto: the input grid unless that exceeds 2 GiB",
    )
    parser.add_argument("--largest-component", action="store_true", help="keep each label's largest component")
    parser.add_argument(
        "--smooth",
        action="store_true",
        help="decide labels on the input grid from interpolated probabilities (smoother, slower)",
    )
    parser.add_argument("--no-overview", action="store_true", help="skip overview.png")
    parser.add_argument("--progress", choices=("auto", "bar", "json", "none"), default="auto")


def _install_cancel_handlers(event: threading.Event) -> list:
    previous = []
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM,) + ((signal.SIGBREAK,) if hasattr(signal, "SIGBREAK") else ()):
            previous.append((signum, signal.signal(signum, lambda *_: event.set())))
    return previous


def run_segment(args: argparse.Namespace, cancel=None) -> int:
    from pathlib import Path

    from .catalog import ModelStore
    from .outputs import write_outputs
    from .package import assign_inputs
    from .segmentation import segment
    from .volumes import as_volume

    cancel = cancel or threading.Event()
    printer = ProgressPrinter(args.progress)
    handlers = _install_cancel_handlers(cancel) if isinstance(cancel, threading.Event) else []
    try:
        store = ModelStore(getattr(args, "catalog", None))
        package = store.load(args.model)
        inputs = list(args.inputs)
        if len(inputs) > 1:  # files named like the package's channel patterns go to their channels
            assigned = assign_inputs(inputs, package.config)
            if all(assigned.values()) and len(set(assigned.values())) == len(inputs):
                inputs = list(assigned.values())
        volumes = [as_volume(path) for path in inputs]  # read once: segment() and the overview share them

        def segment_progress(stage: str, fraction: float) -> None:
            printer(stage, WRITE_START * fraction)  # the output files take the rest of the bar

        result = segment(
            volumes,
            package,
            device=args.device,
            overlap=args.overlap,
            batch_size=args.batch_size,
            probabilities=args.probabilities,
            heatmaps=not args.no_heatmaps,
            largest_component=True if args.largest_component else None,
            label_interpolation="linear" if args.smooth else "nearest",
            progress=segment_progress,
            cancel=cancel,
        )
        intensity = package.config["preprocessing"]["intensity"]
        intensity = intensity[0] if isinstance(intensity, list) else intensity
        window = intensity.get("window") if intensity["method"] == "ct_window" else None
        started = time.perf_counter()
        extra = {
            "inputs": {name: str(Path(p).resolve()) for name, p in zip(package.input_names, inputs, strict=True)},
            "package": {
                "id": package.id,
                "path": str(package.path),
                "version": package.metadata["version"],
                "description": package.metadata["description"],
            },
        }
        outputs = write_outputs(
            result,
            args.out,
            image=volumes[0].array,
            window=window,
            attention_grid=args.attention_grid,
            overview=not args.no_overview,
            extra_report=extra,
            progress=lambda f: printer("write", WRITE_START + (1 - WRITE_START) * f),
        )
        printer.close()
        for message in result.warnings:
            print(f"warning: {message}", file=sys.stderr)
        print(
            f"wrote {outputs['segmentation']} ({len(result.label_table)} labels, device {result.device}, "
            f"{result.timings['total'] + time.perf_counter() - started:.1f} s)"
        )
        return 0
    except BaseException:  # errors, cancel, Ctrl-C: end the progress line before the message
        printer.close()
        raise
    finally:
        for signum, handler in handlers:
            signal.signal(signum, handler)


# --- models --------------------------------------------------------------------------------------------


def _models_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="list bundled, cached and downloadable models")
    listing.add_argument("--json", action="store_true")
    info = sub.add_parser("info", help="show a model's metadata")
    info.add_argument("model", help="id or package path")
    info.add_argument("--json", action="store_true")
    imp = sub.add_parser("import", help="import a package (folder or .zip), or weights (.safetensors/.pt/.pth)")
    imp.add_argument("path")
    imp.add_argument("--overwrite", action="store_true")
    imp.add_argument("--like", help="for weights files: the model whose configuration they fit")
    imp.add_argument("--id", dest="new_id", help="for weights files: the new model id")
    remove = sub.add_parser("remove", help="delete a cached model")
    remove.add_argument("model")


def run_models(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .catalog import ModelStore
    from .errors import TokenUNetError
    from .package import package_from_weights, read_metadata

    store = ModelStore(getattr(args, "catalog", None))
    if args.action == "list":
        entries = store.entries()
        if args.json:
            print(
                json.dumps(
                    [
                        {
                            "id": e.id,
                            "source": e.source,
                            "available": e.available,
                            "description": e.description,
                            "path": str(e.path) if e.path else None,
                            "url": e.url,
                        }
                        for e in entries
                    ],
                    indent=2,
                )
            )
        elif not entries:
            print(f"no models (catalog {store.catalog_path}, cache {store.cache_dir})")
        else:
            width = max(len(e.id) for e in entries)
            for e in entries:
                print(f"{e.id:<{width}}  {e.source:<12}  {e.description}")
        return 0
    if args.action == "info":
        path = store.resolve(args.model)
        metadata = read_metadata(path)
        cfg = metadata["tokenunet"]
        if args.json:
            print(json.dumps(metadata, indent=2))
            return 0
        arch = cfg["architecture"]
        print(
            f"id:           {cfg['id']}\npath:         {path}\nversion:      {metadata['version']}\n"
            f"description:  {metadata['description']}\narchitecture: {arch['name']} "
            f"({arch['in_channels']} -> {arch['out_channels']} channels)\n"
            f"inputs:       {', '.join(i['name'] + ' (' + i['modality'] + ')' for i in cfg['inputs'])}\n"
            f"spacing:      {cfg['preprocessing']['spacing']} mm, orientation {cfg['preprocessing']['orientation']}\n"
            f"labels:       {', '.join(str(label['value']) + ' ' + label['name'] for label in cfg['labels'])}\n"
            f"weights:      {cfg['weights']['file']} sha256 {cfg['weights']['sha256']}\n"
            f"copyright:    {metadata['copyright']}"
        )
        return 0
    if args.action == "import":
        source = Path(args.path)
        if source.suffix.lower() in (".safetensors", ".pt", ".pth", ".ckpt"):
            if not (args.like and args.new_id):
                raise TokenUNetError(
                    "importing a weights file needs --like MODEL and --id NEW_ID",
                    "MODEL is the package whose configuration the weights fit",
                )
            target = store.cache_dir / args.new_id
            if target.exists() and not args.overwrite:
                raise TokenUNetError(f"model '{args.new_id}' is already in the cache", "remove it or pass --overwrite")
            store.cache_dir.mkdir(parents=True, exist_ok=True)
            import shutil
            import tempfile

            with tempfile.TemporaryDirectory(dir=store.cache_dir) as scratch:
                built = package_from_weights(source, store.load(args.like), args.new_id, Path(scratch) / "pkg")
                path = store.import_package(built, overwrite=args.overwrite)
                shutil.rmtree(built, ignore_errors=True)
        else:
            path = store.import_package(source, overwrite=args.overwrite)
        print(f"imported {path.name} into {path}")
        return 0
    path = store.remove(args.model)
    print(f"removed {args.model} ({path})")
    return 0


def _cka_arguments(parser: argparse.ArgumentParser) -> None:
    from .cka import add_arguments

    add_arguments(parser)


def run_cka(args: argparse.Namespace) -> int:
    from .cka import run
    from .errors import InputError

    try:
        return run(args)
    except (ValueError, OSError) as error:
        raise InputError(" ".join(str(error).split())) from None


register_command("segment", "segment volumes with a model package", _segment_arguments, run_segment)
register_command("models", "list, inspect, import or remove model packages", _models_arguments, run_models)
register_command("cka", "compare two networks' encoder stages with linear CKA", _cka_arguments, run_cka)


# --- entry point ---------------------------------------------------------------------------------------


COMMAND_MODULES = ("evaluate", "training.command")
"""Modules that register further commands when imported (their heavy imports happen on use)."""


def build_parser() -> argparse.ArgumentParser:
    from importlib import import_module

    for module in COMMAND_MODULES:
        import_module(f"{__package__}.{module}")
    parser = argparse.ArgumentParser(prog="tokenunet", description="TokenUNet segmentation with token attention maps.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--catalog", default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        child = sub.add_parser(name, help=command.help, description=command.help)
        child.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        command.add_arguments(child)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 user error, 130 cancelled)."""
    import logging

    from .allocator import use_huge_pages

    use_huge_pages()  # before torch is imported
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from .errors import CancelledError, TokenUNetError

    try:
        return COMMANDS[args.command].run(args)
    except CancelledError:
        print("cancelled; no output was written", file=sys.stderr)
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        print("\ninterrupted; no output was written", file=sys.stderr)
        return EXIT_CANCELLED
    except TokenUNetError as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as error:  # noqa: BLE001 - a one-line message, the traceback with --debug
        if args.debug:
            raise
        print(f"internal error: {type(error).__name__}: {error} (run with --debug for the traceback)", file=sys.stderr)
        return 1
