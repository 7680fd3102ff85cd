"""The contract of a segmentation run between its caller (the Slicer module, a script) and the pipeline.

- :class:`RunRequest`: what to segment and how; turned into ``segment()`` keyword arguments (a run in this
  process) or into the ``segment`` command line (a run in a child process), here and nowhere else.
- Typed events: :class:`ProgressEvent`, :class:`LogEvent`, :class:`ResultEvent` and :class:`ErrorEvent` are what
  the command line writes with ``--progress json`` (one JSON object per line, :func:`encode_event` /
  :func:`decode_event`), and ``batch`` adds a :class:`CaseEvent` as each case starts and ends; :class:`FinishedEvent`
  ends every run in the caller's process.
- :class:`ExitCode`: the command line's exit codes; :class:`RunState`: where a run stands.

The files a run writes, and their reader, are in :mod:`.outputs`.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import ClassVar

from . import errors
from .errors import CancelledError, TokenUNetError, missing_dependency


class ExitCode(enum.IntEnum):
    """Exit codes of the command line."""

    OK = 0
    INTERNAL_ERROR = 1  # a bug: the message suggests --debug
    USER_ERROR = 2  # bad input, bad package, not enough memory: one line says what to do
    CANCELLED = 130  # SIGTERM, Ctrl-C or a cancel request; nothing was written, or the message says what stays


class RunState(str, enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class ProgressEvent:
    """``fraction`` of the whole run (monotonic, 0..1) reached in ``stage``; ``elapsed`` seconds since start."""

    stage: str
    fraction: float
    elapsed: float = 0.0
    kind: ClassVar[str] = "progress"


@dataclass(frozen=True)
class LogEvent:
    """A line for the log: a warning about the result, or a child process's output that is not an event."""

    message: str
    level: str = "info"  # "info" or "warning"
    kind: ClassVar[str] = "log"


@dataclass(frozen=True)
class ResultEvent:
    """A run completed: the output folder and its files (role -> path relative to the folder)."""

    folder: str
    files: dict
    warnings: tuple = ()
    seconds: float = 0.0
    kind: ClassVar[str] = "result"


@dataclass(frozen=True)
class CaseEvent:
    """The ``batch`` command's case ``index`` (from 1) of ``count`` started or ended: ``status`` started, done,
    failed, skipped or cancelled; ``folder`` its output folder; ``message`` and ``category`` (user or internal) say
    why a case failed. The progress events between a case's ``started`` and its end are that case's."""

    index: int
    count: int
    name: str
    status: str
    folder: str = ""
    message: str = ""
    category: str = ""
    seconds: float = 0.0
    kind: ClassVar[str] = "case"


MAX_LINE = 200  # characters of the one line a user error prints
MAX_MESSAGE = 1000  # characters of an error event's message (a library's error text can be kilobytes long)


LONG_PATH = re.compile(r"(?<![\w.])/(?:[^\s/]+/){3,}[^\s/]*")
"""An absolute POSIX path of more than three parts, as users' files and folders are written in messages."""


def shorter_paths(text: str) -> str:
    """``text`` with each long absolute path cut to its last two parts (``/a/b/c/d.nii.gz``: ``.../c/d.nii.gz``)."""

    def cut(found: re.Match) -> str:
        path, tail = found.group(0), []
        for part in reversed(path.rstrip("/").split("/")):  # two named parts: a wildcard's folder is kept
            tail.insert(0, part)
            if len([kept for kept in tail if "*" not in kept and "?" not in kept]) == 2:
                break
        return ".../" + "/".join(tail) + ("/" if path.endswith("/") else "")

    return LONG_PATH.sub(cut, text)


def one_line(prefix: str, message: str, hint: str | None = None, limit: int = MAX_LINE) -> str:
    """``prefix message (hint)`` on one line of at most ``limit`` characters: whitespace collapsed; only when too long,
    long paths cut to their last two parts first, then the hint kept (up to half the line) and the message shortened in
    its middle."""
    message = " ".join(str(message).split())
    hint = " ".join(str(hint).split()) if hint else ""
    hint_part = f" ({hint})" if hint else ""
    if len(prefix) + len(message) + len(hint_part) <= limit:
        return f"{prefix}{message}{hint_part}"
    message, hint = shorter_paths(message), shorter_paths(hint)
    hint_part = f" ({hint})" if hint else ""
    if len(prefix) + len(message) + len(hint_part) > limit and len(hint_part) > limit // 2:
        hint_part = hint_part[: limit // 2 - 4] + "...)"
    room = limit - len(prefix) - len(hint_part)
    if len(message) > room:
        head = (room - 3) * 2 // 3
        message = message[:head] + "..." + message[len(message) - (room - 3 - head) :]
    return f"{prefix}{message}{hint_part}"


ERROR_CATEGORIES = {"user": ExitCode.USER_ERROR, "cancelled": ExitCode.CANCELLED, "internal": ExitCode.INTERNAL_ERROR}


@dataclass(frozen=True)
class ErrorEvent:
    """A run failed (``category`` ``user`` or ``internal``) or was cancelled; carries the typed error's fields."""

    message: str
    category: str = "user"
    hint: str | None = None
    error_type: str = "TokenUNetError"
    restart_required: bool = False
    kind: ClassVar[str] = "error"

    @property
    def exit_code(self) -> ExitCode:
        return ERROR_CATEGORIES[self.category]

    @classmethod
    def from_error(cls, error: BaseException) -> ErrorEvent:
        if isinstance(error, (CancelledError, KeyboardInterrupt)):
            message = "interrupted" if isinstance(error, KeyboardInterrupt) else "cancelled"
            kept = error.hint if isinstance(error, CancelledError) else None  # what stays, where a command keeps it
            if kept:
                message = str(error.message)
            return cls(message, "cancelled", kept, error_type="CancelledError")
        error = missing_dependency(error) or error
        if isinstance(error, TokenUNetError):
            return cls(
                str(error.message)[:MAX_MESSAGE], "user", error.hint, type(error).__name__, error.restart_required
            )
        text = f"internal error: {type(error).__name__}: {error}"[:MAX_MESSAGE]
        return cls(text, "internal", error_type=type(error).__name__)

    def line(self) -> str:
        """The one line (at most :data:`MAX_LINE` characters) the command line prints for this error."""
        if self.category == "cancelled":  # the hint says what was kept, where a command keeps what it finished
            return one_line("", f"{self.message}; {self.hint or 'no output was written'}", limit=MAX_LINE * 2)
        if self.category == "internal":
            return one_line("", self.message, "run with --debug for the traceback")
        return one_line("error: ", self.message, self.hint)

    def to_error(self) -> TokenUNetError:
        """The typed error this event describes (its class when the pipeline defines it)."""
        if self.category == "cancelled":
            return CancelledError(self.message, self.hint)
        cls = getattr(errors, self.error_type, None)
        if not (isinstance(cls, type) and issubclass(cls, TokenUNetError)) or cls is CancelledError:
            cls = TokenUNetError
        return cls(self.message, self.hint, self.restart_required)


@dataclass(frozen=True)
class FinishedEvent:
    """A run ended in ``state`` (completed, failed or cancelled); ``error`` says why when it did not complete."""

    state: RunState
    error: TokenUNetError | None = None
    kind: ClassVar[str] = "finished"


WIRE_EVENTS = {cls.kind: cls for cls in (ProgressEvent, LogEvent, ResultEvent, ErrorEvent, CaseEvent)}


def encode_event(event) -> str:
    """One JSON line for an event the command line reports (``{"event": kind, ...fields}``)."""
    return json.dumps({"event": event.kind, **asdict(event)})


def decode_event(line: str):
    """The event a JSON line describes, or None for any other line (plain log output)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
        cls = WIRE_EVENTS[data.pop("event")]
        known = {f.name for f in fields(cls)}
        event = cls(**{k: v for k, v in data.items() if k in known})
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if isinstance(event, ResultEvent):
        event = ResultEvent(event.folder, dict(event.files), tuple(event.warnings), float(event.seconds))
    return event


EVENT_START = '{"event": '


def split_event(line: str) -> tuple[str, object]:
    """``(text, event)`` of a line: ``("", event)`` for an event line, ``(text, None)`` for a plain one, and for a
    plain text's start followed by an event (a partial line written to the same pipe just before an event line: a
    C library's on stderr, or Python's unbuffered stdout merged with stderr) both."""
    event = decode_event(line)
    if event is not None:
        return "", event
    cut = line.rfind(EVENT_START)
    if cut > 0:
        event = decode_event(line[cut:])
        if event is not None:
            return line[:cut], event
    return line, None


@dataclass
class RunRequest:
    """One run: the input channels, the model and the options.

    Args:
        inputs: one per model input channel, in its order: ``(array (i, j, k), IJK -> world RAS)`` pairs (from
            a scene) or file paths.
        model: a model id or package path; None (or "") for the catalog's default. Resolved (and downloaded
            if needed) by the run itself.
        with_token_maps: compute the per-token attention maps (Token-UNet models).
        names: what the user calls each input (a Slicer volume's name), for the run's messages about inputs
            that it holds as arrays.
        test_time_augmentation: average five passes of the network (``segment``'s ``--tta``).
        channels: what each of the n values per voxel of the one input holds, in order (a Slicer vector volume whose
            components are MRI sequences: an ``(array (i, j, k, n), IJK -> world RAS)`` pair, or a 4D image file);
            matched to the model's channels by name, with their synonyms, never by position.
    """

    inputs: list
    model: str | None = None
    device: str = "auto"
    with_token_maps: bool = True
    probabilities: bool = False
    largest_component: bool = False
    names: tuple[str, ...] = ()
    test_time_augmentation: bool = False
    channels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from .errors import ArgumentError

        if self.model is not None and not isinstance(self.model, (str, Path)):
            raise ArgumentError(f"a run's model is an id or a package path, got {type(self.model).__name__}")
        if not isinstance(self.device, str):
            raise ArgumentError(f"a run's device is a name such as cpu, got {type(self.device).__name__}")
        if not isinstance(self.inputs, (list, tuple)):
            raise ArgumentError("a run's inputs are a list (one per channel)")
        self.model = str(self.model) if self.model not in (None, "") else None
        self.channels = tuple(self.channels)
        if self.channels:
            stacked = self.stacked_array()
            values = stacked.shape[3] if stacked is not None else None
            if len(self.inputs) != 1 or values not in (None, len(self.channels)):
                raise ArgumentError(
                    f"a run's channels name the {len(self.channels)} values per voxel of its one input, got "
                    f"{len(self.inputs)} input(s)" + (f" of {values} values per voxel" if values else "")
                )
            if not all(isinstance(name, str) and name.strip() and "," not in name for name in self.channels):
                raise ArgumentError("a run's channel names are non-empty texts without commas")

    def stacked_array(self):
        """The array of the one input when it is an ``(array (i, j, k, n), affine)`` pair, else None."""
        import numpy as np

        item = self.inputs[0] if len(self.inputs) == 1 else None
        array = item[0] if isinstance(item, tuple) and len(item) == 2 else None
        return array if isinstance(array, np.ndarray) and array.ndim == 4 else None

    def segment_inputs(self):
        """The inputs as :func:`.segmentation.segment` takes them: ``inputs``, or, for one array whose values per
        voxel ``channels`` names, {name: a :class:`.volumes.Volume` of that component}, which ``segment()`` places in
        the model's channels by name and synonym (its ``channels=`` names the volumes of a 4D image file only). Each
        is named in messages as the command line names the volumes of the file a child run gets (``'BRATS_001',
        volume 2``)."""
        from .volumes import Volume

        stacked = self.stacked_array()
        if not self.channels or stacked is None:
            return self.inputs
        affine, owner = self.inputs[0][1], f"'{self.names[0]}', " if self.names else ""
        return {
            name: Volume(stacked[..., index], affine, f"{owner}volume {index}")
            for index, name in enumerate(self.channels)
        }

    def segment_options(self) -> dict:
        """Keyword arguments of :func:`.segmentation.segment` for this request (besides inputs and model)."""
        return {
            "device": self.device,
            "with_token_maps": self.with_token_maps,
            "probabilities": self.probabilities,
            "largest_component": True if self.largest_component else None,
            "test_time_augmentation": self.test_time_augmentation,
            **({"channels": list(self.channels)} if self.channels and self.stacked_array() is None else {}),
        }

    def command_arguments(self, input_files: list[Path], out: Path) -> list[str]:
        """The ``segment`` command's arguments for this request, with inputs written to ``input_files``.

        Token maps travel on the token grid (small, exact) and there is no overview picture.
        """
        arguments = ["segment", *map(str, input_files), "--out", str(out), "--device", self.device or "auto"]
        arguments += ["--progress", "json", "--attention-grid", "token", "--no-overview"]
        if self.model is not None:
            arguments += ["--model", self.model]
        if self.probabilities:
            arguments.append("--probabilities")
        if not self.with_token_maps:
            arguments.append("--no-heatmaps")
        if self.largest_component:
            arguments.append("--largest-component")
        if self.test_time_augmentation:
            arguments.append("--tta")
        if self.channels:  # the one input file holds every channel: what each of its volumes holds
            arguments += ["--channels", ",".join(self.channels)]
        return arguments
