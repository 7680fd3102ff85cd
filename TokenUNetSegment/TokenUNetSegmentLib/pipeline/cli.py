"""The command line: ``python -m TokenUNetSegmentLib.pipeline <command> ...`` (``tokenunet`` when installed).

Commands are declared in :data:`COMMANDS` by name with their help and where their arguments and run function
live (``"module:function"`` in the pipeline package), imported only when that command is used: ``--help`` and
``models list`` import neither torch nor MONAI, and no command imports another's modules.
:func:`register_command` adds commands with callables. A run function returns the exit code; errors become an
:class:`.run_contract.ExitCode` and one line on stderr (with ``--progress json``, a typed ``ErrorEvent``), a
traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import NoReturn

from .. import __version__
from .errors import missing_dependency
from .run_contract import ErrorEvent, ExitCode, LogEvent, ProgressEvent, encode_event
from .stderr_events import events_on_stderr

WRITE_START = 0.9  # share of the progress bar for segment(); the output files take the rest


@dataclass
class Command:
    """A subcommand: its help, ``add_arguments(parser)`` and ``run(args) -> exit code`` (callables, or
    ``"module:function"`` names inside the pipeline package, imported on first use)."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], object] | str
    run: Callable[[argparse.Namespace], int] | str

    @staticmethod
    def _load(target):
        if callable(target):
            return target
        module, name = target.split(":")
        return getattr(import_module(f"{__package__}.{module}"), name)

    def declare(self, parser: argparse.ArgumentParser) -> None:
        self._load(self.add_arguments)(parser)

    def __call__(self, args: argparse.Namespace) -> int:
        return self._load(self.run)(args)


COMMANDS: dict[str, Command] = {
    "segment": Command(
        "segment volumes with a model package", "segment_command:add_arguments", "segment_command:run_segment"
    ),
    "batch": Command(
        "segment many cases (files, DICOM folders, a folder of cases or a datalist) with one model, loaded once",
        "batch_command:add_arguments",
        "batch_command:run_batch",
    ),
    "models": Command(
        "list, inspect, import or remove model packages", "models_command:add_arguments", "models_command:run_models"
    ),
    "evaluate": Command(
        "Dice, HD95 and volume difference of a segmentation vs a reference",
        "evaluate:add_arguments",
        "evaluate:run_evaluate",
    ),
    "train": Command(
        "train a model package on a datalist (MONAI; torchrun for several processes)",
        "training.command:_arguments",
        "training.command:run_train",
    ),
    "robustness": Command(
        "Dice of a model on thin slabs, oblique grids, other voxel sizes, noise and crops of a labelled CT",
        "robustness:add_arguments",
        "robustness:run_robustness",
    ),
    "datalist": Command(
        "write a training datalist from a TotalSegmentator, Decathlon/nnU-Net or BTCV-style dataset",
        "training.command:_datalist_arguments",
        "training.command:run_datalist",
    ),
    "cka": Command(
        "compare two networks' encoder stages with linear CKA", "cka_command:add_arguments", "cka_command:run_command"
    ),
}


def register_command(name: str, help: str, add_arguments, run) -> None:
    """Add a subcommand: ``add_arguments(parser)`` declares its options, ``run(args)`` returns the exit code."""
    COMMANDS[name] = Command(help, add_arguments, run)


class ProgressPrinter:
    """Progress on stderr: a bar on a terminal, typed JSON event lines for programs (``--progress json``), or
    nothing. The fraction shown never decreases."""

    def __init__(self, mode: str = "auto", stream=None):
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "none"
        self.mode = mode
        self.start = time.monotonic()
        self.last = ""
        self.fraction = 0.0

    @property
    def json(self) -> bool:
        return self.mode == "json"

    def __call__(self, stage: str, fraction: float) -> None:
        self.fraction = max(self.fraction, fraction)
        if self.json:
            self.emit(ProgressEvent(stage, round(self.fraction, 4), round(time.monotonic() - self.start, 3)))
        elif self.mode == "bar":
            filled = int(30 * self.fraction)
            line = (
                f"\r[{'#' * filled}{'.' * (30 - filled)}] {100 * self.fraction:5.1f}% {stage:<12} "
                f"{time.monotonic() - self.start:6.1f}s"
            )
            if line != self.last:
                self._write(line)
                self.last = line

    def emit(self, event) -> None:
        """One typed event as a JSON line (``--progress json`` only)."""
        if self.json:
            print(encode_event(event), file=self.stream, flush=True)

    def warning(self, message: str) -> None:
        if self.json:
            self.emit(LogEvent(message, "warning"))
        else:
            if self.mode == "bar" and self.last:  # below the bar, which goes on on the next line
                self.stream.write("\n")
                self.last = ""
            print(f"warning: {message}", file=self.stream)

    def note(self, message: str) -> None:
        """A line for the log that is no warning (e.g. where a 4D image's channel order comes from)."""
        if self.json:
            self.emit(LogEvent(message, "info"))
        else:
            if self.mode == "bar" and self.last:
                self.stream.write("\n")
                self.last = ""
            print(f"note: {message}", file=self.stream)

    def close(self) -> None:
        if self.mode == "bar" and self.last:
            self._write("\n")
            self.last = ""  # the next bar starts on its own line

    def _write(self, text: str) -> None:
        """Draw on the terminal; one that is gone (hung up: EIO, before the hang-up's signal is handled) ends the bar,
        not the command: the run, or its clean-up after the hang-up, goes on."""
        try:
            self.stream.write(text)
            self.stream.flush()
        except OSError:
            self.mode = "none"


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``error: ... (see 'tokenunet segment --help')``) and exit
    code 2, like every other user error; its subcommand parsers are of the same kind. An option given twice takes
    its last value, as in argparse and most tools (recipe scripts pass their defaults first, the user's after)."""

    def _add_action(self, action: argparse.Action) -> argparse.Action:
        """Every option's help states its default (argparse shows none unless told)."""
        default = action.default
        unset = default is None or default is False or default == [] or default == argparse.SUPPRESS
        meaningful = not unset and action.option_strings
        if meaningful and "default" not in (action.help or "").lower() and action.help is not argparse.SUPPRESS:
            value = action.default
            shown = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            action.help = f"{action.help} (default: {shown})" if action.help else f"default: {shown}"
            action.help = action.help.replace("%", "%%").replace("%%(", "%(")
        return super()._add_action(action)

    def error(self, message: str):
        event = ErrorEvent(message, "user", f"see '{self.prog} --help'", "ArgumentError")
        self.exit(ExitCode.USER_ERROR, (encode_event(event) if JSON_ERRORS.get() else event.line()) + "\n")


JSON_ERRORS = contextvars.ContextVar("JSON_ERRORS", default=False)
"""Whether parse errors are JSON error events (the command line asks for ``--progress json``)."""


def build_parser(*commands: str) -> argparse.ArgumentParser:
    """The parser; the named commands get their arguments declared (importing where they live), the others
    are listed with their help only (enough for ``--help``)."""
    parser = OneLineParser(prog="tokenunet", description="TokenUNet segmentation with token attention maps.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--catalog", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"tokenunet {__version__}", help="print the version")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.commands = {}  # each command's parser, for the errors that are its own
    for name, command in COMMANDS.items():
        child = parser.commands[name] = sub.add_parser(name, help=command.help, description=command.help)
        child.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        if name in commands:
            command.declare(child)
    return parser


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse a command line, declaring the arguments of the command it names only."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    top = OneLineParser(prog="tokenunet", add_help=False)
    top.add_argument("--debug", action="store_true")
    top.add_argument("--catalog")
    _, rest = top.parse_known_args(argv)
    named = next((token for token in rest if not token.startswith("-")), None)
    parser = build_parser(*([named] if named in COMMANDS else []))
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # told by the command's parser: its --help lists its options, the top's ('tokenunet --help') does not
        _chosen_parser(parser.commands[args.command], args).error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def _chosen_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost parser ``args`` went through: ``models list``'s for ``tokenunet models list ...`` (the options
    of an action are listed by its own --help only)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and getattr(args, action.dest, None) in action.choices:
            return _chosen_parser(action.choices[getattr(args, action.dest)], args)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line (``argv``, else ``sys.argv[1:]``); returns the exit code (see
    :class:`.run_contract.ExitCode`), also for ``--help`` (0) and bad arguments (2, after their one line): argparse's
    ``SystemExit`` does not reach the caller. The caller's process goes on: its signal handlers are put back and
    nothing ends it, also on a cancel (a script, a notebook, Slicer's console; the process of its own is
    :func:`run_as_process`). Its environment too: the huge-page request made for torch (:mod:`.allocator`) is taken
    back on return."""
    from .allocator import environment_kept

    with environment_kept():
        return _run(argv)


def run_as_process() -> NoReturn:
    """``tokenunet`` and ``python -m TokenUNetSegmentLib.pipeline``: the command line, then the process ends at once.

    The command's stop handlers stay to the process's end (a second Ctrl-C while the cancel is reported changes
    nothing), and a cancelled command's process ends with :func:`_end_cancelled_process`. Otherwise, once the command
    has returned, its files written and closed and its stdout flushed (a write error reported as the command's),
    the interpreter's teardown of the 1,200 modules a run imports (torch and MONAI) only frees what the process's end
    frees: 0.13 s of every run (median of 5, in a process that imported what ``segment`` does). The exit runs the
    ``atexit`` callbacks and flushes stdout and stderr first; while a thread other than a daemon still runs, the
    interpreter's own exit waits for it as before, its collections skipped over the objects frozen here.
    """
    import atexit
    import gc

    code = _run(None, own_process=True)
    gc.freeze()
    if code == ExitCode.CANCELLED:
        _end_cancelled_process(code)
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive() and not t.daemon]
    if others or not hasattr(atexit, "_run_exitfuncs"):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(int(code))


def _end_cancelled_process(code: int) -> None:
    """End a cancelled command's own process now, with ``code``: everything the command wrote is done and its locks
    are released; stdout, stderr and the log are flushed. Not the interpreter's usual end: it waits for a worker
    thread still inside a C++ call (a reading thread in SimpleITK's reader, torch's import: seconds to minutes on a
    large series; :class:`.background.BackgroundCall` threads are not daemons because a normal exit during such a call
    crashes), puts back the default handlers (a second stop then killed the process: exit -2 or -15), and ends by
    SIGINT (exit -2, not 130) once a ``KeyboardInterrupt`` went through Python code run by C++ (torch's start-up)."""
    import logging

    from .cancel_signals import STOP_SIGNALS

    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _check_working_folder(args: argparse.Namespace) -> None:
    """Refuse to run in a folder that was deleted (or moved away): relative paths name nothing there, and torch's
    libraries fail to load from it (oneMKL ends the process), after the output's lock and staging folder were made.
    ``models list`` runs there (it reads the catalog and the model cache only, without torch) unless one of them is
    named by a relative path."""
    from .catalog import HOME_VARIABLE
    from .errors import InputError

    if (args.command, getattr(args, "action", None)) == ("models", "list"):
        home = os.environ.get(HOME_VARIABLE, "").strip() or os.path.expanduser("~")  # the cache: ~/.tokenunet else
        named = (getattr(args, "catalog", None), home)
        if not any(value and not os.path.isabs(os.path.expanduser(value)) for value in named):
            return
    try:
        os.getcwd()
    except FileNotFoundError:
        raise InputError(
            "the current folder no longer exists (it was deleted, moved away or replaced)",
            "cd into a folder (cd . where a new folder of the same name replaced it), then run again",
        ) from None


def _run(argv: list[str] | None, own_process: bool = False) -> int:
    """Parse ``argv`` and run its command; every error becomes one line (or event) and its exit code. The stop
    handlers are put back after the command unless this is the command line's ``own_process``."""
    tokens = sys.argv[1:] if argv is None else [str(a) for a in argv]
    json_progress = "--progress=json" in tokens or ("--progress", "json") in zip(tokens, tokens[1:], strict=False)
    json_errors = JSON_ERRORS.set(json_progress)
    loading = threading.Event()  # set by a stop while the command line loads, in a process of its own
    hooks = sys.unraisablehook, sys.excepthook
    try:
        if own_process:  # a stop while the commands' modules load (half a second on a busy machine) is a cancel too
            from .cancel_signals import install_cancel_handlers

            install_cancel_handlers(loading)
            sys.unraisablehook, sys.excepthook = _quiet_stops(*hooks)  # one swallowed is remembered, not printed
        import logging

        for stream in (sys.stdout, sys.stderr):  # file names that are not valid text are printed escaped
            with contextlib.suppress(AttributeError, ValueError):
                stream.reconfigure(errors="backslashreplace")
        from .allocator import use_huge_pages

        use_huge_pages()  # before torch is imported
        args = parse_arguments(argv)
        if loading.is_set():  # its KeyboardInterrupt was swallowed where it was raised (importlib's callbacks)
            raise KeyboardInterrupt
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    except KeyboardInterrupt as error:  # Ctrl-C while a command's modules load: no traceback either
        return _report(ErrorEvent.from_error(error), json_progress, after_interrupt=True)
    except SystemExit as stop:  # argparse's end: --help (0) or an argument error, its line already printed (2)
        return ExitCode.OK if stop.code in (0, None) else ExitCode.USER_ERROR
    except Exception as error:
        if loading.is_set():  # the stop's KeyboardInterrupt turned into another error (numpy's C start-up)
            return _report(ErrorEvent.from_error(KeyboardInterrupt()), json_progress, after_interrupt=True)
        if not isinstance(error, ModuleNotFoundError) or missing_dependency(error) is None or "--debug" in tokens:
            raise  # declaring a command's arguments imports its module: a missing dependency is told in one line
        return _report(ErrorEvent.from_error(error), json_progress)
    finally:
        JSON_ERRORS.reset(json_errors)
        sys.unraisablehook, sys.excepthook = hooks
    json_progress = getattr(args, "progress", None) == "json"
    with _stops_cancel(restore=not own_process), events_on_stderr(json_progress):  # C libraries' lines: events
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _warning_printer(json_progress)
                _check_working_folder(args)
                code = COMMANDS[args.command](args)
            sys.stdout.flush()  # its last lines: a full disk is told here, as the command's (``os._exit`` may follow)
            return code
        except BrokenPipeError:  # the reader of our output went away (``| head``): nothing left to tell it
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return ExitCode.OK
        except (Exception, KeyboardInterrupt) as error:
            event = ErrorEvent.from_error(error)
            if args.debug and event.category != "cancelled":
                raise
            return _report(event, json_progress, isinstance(error, KeyboardInterrupt))


def _quiet_stops(unraisable, excepthook) -> tuple:
    """``sys.unraisablehook`` and ``sys.excepthook`` that drop a stop's ``KeyboardInterrupt`` where Python or a C
    library swallows it (a weakref callback of importlib's) or prints it (numpy's ``import_array`` in an extension's
    start-up: ``PyErr_Print``), handing anything else to the hooks they replace."""

    def unraisable_but_stops(information) -> None:
        if not isinstance(information.exc_value, KeyboardInterrupt):
            unraisable(information)

    def excepthook_but_stops(kind, value, traceback) -> None:
        if not isinstance(value, KeyboardInterrupt):
            excepthook(kind, value, traceback)

    return unraisable_but_stops, excepthook_but_stops


@contextlib.contextmanager
def _stops_cancel(restore: bool):
    """SIGTERM (a batch system's or the GUI's stop) cancels every command as Ctrl-C does: output folders are aborted,
    locks released, exit code 130 (before: only ``segment``; the others died at once, leaving their lock and staging
    folder behind). The first stop raises ``KeyboardInterrupt``, later ones do not (:mod:`.cancel_signals`): a second
    Ctrl-C while the command cleans up, reports or its process ends changes nothing. The handlers are put back only
    for a caller in this process (``restore``); a process of its own keeps them to its end."""
    from .cancel_signals import install_cancel_handlers, restore_handlers

    previous = install_cancel_handlers(threading.Event())
    try:
        yield
    finally:
        if restore:
            restore_handlers(previous)


def _warning_printer(json_progress: bool):
    """``warnings.showwarning`` for a command: one ``warning: ...`` line (a JSON log event with ``--progress json``),
    not Python's two lines with the source line that warned."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split())
        print(encode_event(LogEvent(text, "warning")) if json_progress else f"warning: {text}", file=sys.stderr)

    return show


def _report(event: ErrorEvent, json_progress: bool, after_interrupt: bool = False) -> int:
    """Tell a failure as one line (or one JSON event for programs); its exit code."""
    if json_progress:
        print(encode_event(event), file=sys.stderr, flush=True)
    else:
        print(("\n" if after_interrupt else "") + event.line(), file=sys.stderr)
    return event.exit_code


__all__ = ["COMMANDS", "Command", "ExitCode", "ProgressPrinter", "build_parser", "main", "register_command"]
