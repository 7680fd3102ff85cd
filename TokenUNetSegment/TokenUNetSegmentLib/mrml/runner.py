"""Run a segmentation in-process (scripting, tests) or as a subprocess through the pipeline CLI (the GUI's default).

Both kinds of run share one interface: ``start()``, ``poll()`` (call it from the thread that owns the scene: it
delivers the events), ``cancel()``, ``wait()``, ``add_observer(callback)``. Events are dicts:

- ``{"type": "progress", "stage": str, "fraction": float, "elapsed": float}``
- ``{"type": "log", "line": str}`` (subprocess output that is not progress)
- ``{"type": "state", "state": RunState, "error": TokenUNetError | None}`` when the run ends

A finished run's ``result`` is a pipeline ``SegmentationResult`` on the first input's grid. A subprocess run
exchanges NRRD files in a temporary folder that is removed whatever the outcome; cancel kills its whole process
tree. No MRML node is touched here: the caller applies the result (see ``logic.apply_result``).
"""

from __future__ import annotations

import enum
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..pipeline.errors import CancelledError, TokenUNetError
from ..pipeline.process_tree import popen_options, signal_tree, stop_tree

MODULE_DIR = Path(__file__).resolve().parents[2]  # the folder that holds TokenUNetSegmentLib
EXIT_CANCELLED = 130


class RunState(str, enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class RunRequest:
    """One run: input channels as ``(array (i, j, k), IJK -> world RAS)`` pairs, the model and options."""

    inputs: list
    model: str | Path | object | None = None
    device: str = "auto"
    heatmaps: bool = True
    probabilities: bool = False
    largest_component: bool = False

    def model_argument(self):
        if self.model is None or self.model == "":
            return None
        path = getattr(self.model, "path", None)  # a loaded ModelPackage
        return self.model if path is None else path


class Run:
    """Base of both runners: state, observers, elapsed time, progress."""

    def __init__(self, request: RunRequest):
        self.request = request
        self.state = RunState.IDLE
        self.result = None
        self.error: TokenUNetError | None = None
        self.stage, self.fraction = "", 0.0
        self.started = self.finished = None
        self._observers = []
        self._events: queue.Queue = queue.Queue()
        self._cancel = threading.Event()

    def add_observer(self, callback) -> None:
        self._observers.append(callback)

    @property
    def running(self) -> bool:
        return self.state == RunState.RUNNING

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.monotonic()) - self.started

    def _emit(self, event: dict) -> None:
        if event["type"] == "progress":
            self.stage, self.fraction = event["stage"], event["fraction"]
        for callback in list(self._observers):
            callback(event)

    def _progress(self, stage: str, fraction: float) -> None:
        self._events.put({"type": "progress", "stage": stage, "fraction": float(fraction), "elapsed": self.elapsed})

    def _drain(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            self._emit(event)

    def _finish(self, state: RunState, error: TokenUNetError | None = None) -> None:
        self.finished = time.monotonic()
        self.state, self.error = state, error
        self._emit({"type": "state", "state": state, "error": error})

    def cancel(self) -> None:
        """Ask the run to stop; :meth:`poll` reports ``CANCELLED`` once it has."""
        self._cancel.set()

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> RunState:
        """Poll until the run ends (or ``timeout`` seconds pass); returns the state."""
        limit = None if timeout is None else time.monotonic() + timeout
        while self.poll() == RunState.RUNNING:
            if limit is not None and time.monotonic() > limit:
                break
            time.sleep(interval)
        return self.state


class InProcessRun(Run):
    """``pipeline.segment`` in this process: :meth:`run` blocks; :meth:`start` uses a worker thread."""

    def _segment(self):
        from ..pipeline.segmentation import segment

        r = self.request
        return segment(
            r.inputs,
            r.model if r.model not in ("", None) else None,
            device=r.device,
            heatmaps=r.heatmaps,
            probabilities=r.probabilities,
            largest_component=True if r.largest_component else None,
            progress=self._progress,
            cancel=self._cancel,
        )

    def _outcome(self, work) -> tuple[RunState, TokenUNetError | None]:
        try:
            self.result = work()
            return RunState.COMPLETED, None
        except CancelledError as error:
            return RunState.CANCELLED, error
        except TokenUNetError as error:
            return RunState.FAILED, error
        except Exception as error:  # noqa: BLE001 - reported as a failed run, with its type
            return RunState.FAILED, TokenUNetError(f"internal error: {type(error).__name__}: {error}")

    def run(self) -> RunState:
        """Run in the calling thread, delivering events as they happen."""
        self.state, self.started = RunState.RUNNING, time.monotonic()
        self._progress = lambda stage, fraction: self._emit(  # noqa: E731 - direct delivery
            {"type": "progress", "stage": stage, "fraction": float(fraction), "elapsed": self.elapsed}
        )
        state, error = self._outcome(self._segment)
        self._finish(state, error)
        return state

    def start(self) -> InProcessRun:
        self.state, self.started = RunState.RUNNING, time.monotonic()

        def work():
            outcome = self._outcome(self._segment)
            self._events.put({"type": "_done", "outcome": outcome})

        self._thread = threading.Thread(target=work, name="TokenUNet segment", daemon=True)
        self._thread.start()
        return self

    def poll(self) -> RunState:
        if self.state != RunState.RUNNING:
            return self.state
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return self.state
            if event["type"] == "_done":
                self._thread.join()
                self._finish(*event["outcome"])
                return self.state
            self._emit(event)


class SubprocessRun(Run):
    """The pipeline CLI in a child process (its own process group), inputs and outputs as NRRD files.

    Args:
        request: the run.
        python: the interpreter for the child (default ``sys.executable``; inside Slicer, ``PythonSlicer``).
        grace: seconds a cancelled child gets to stop by itself before its process tree is killed.
        command: replaces the CLI command (for tests of the process handling); ``{out}`` is substituted.
        env: the child's environment (default: this process's).
        temp_dir: the folder for the run's temporary exchange folder (default: the system's).
    """

    def __init__(
        self,
        request: RunRequest,
        python: str | None = None,
        grace: float = 3.0,
        command: list[str] | None = None,
        env: dict | None = None,
        temp_dir: str | Path | None = None,
    ):
        super().__init__(request)
        self.temp_dir = temp_dir  # where the run's exchange folder goes (Slicer: its temporary folder)
        self.python = python or sys.executable
        self.grace = grace
        self.custom_command = command
        self.env = env
        self.folder: Path | None = None
        self.process: subprocess.Popen | None = None
        self.log: deque[str] = deque(maxlen=200)
        self._kill_at: float | None = None

    def cancel(self) -> None:
        """Ask the child to stop (SIGTERM to its process group); its tree is killed after ``grace`` seconds."""
        if self.state != RunState.RUNNING or self._cancel.is_set():
            return
        self._cancel.set()
        self._kill_at = time.monotonic() + self.grace
        signal_process_tree(self.process, kill=False)

    # -- files ---------------------------------------------------------------------------------------
    def _write_inputs(self) -> list[Path]:
        from ..pipeline.nrrd import write_nrrd
        from .volumes import plain_array

        paths = []
        for index, (array, affine) in enumerate(self.request.inputs):
            path = self.folder / "inputs" / f"channel{index}.nrrd"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_nrrd(path, plain_array(np.asarray(array)), np.asarray(affine, float), compression=0)
            paths.append(path)
        return paths

    def command(self, inputs: list[Path]) -> list[str]:
        """The CLI command line for this run."""
        out = self.folder / "out"
        if self.custom_command is not None:
            return [part.replace("{out}", str(out)) for part in self.custom_command]
        r = self.request
        command = [
            self.python,
            "-m",
            "TokenUNetSegmentLib.pipeline",
            "segment",
            *map(str, inputs),
            "--out",
            str(out),
            "--device",
            r.device,
            "--progress",
            "json",
            "--attention-grid",
            "token",
            "--no-overview",
        ]
        model = r.model_argument()
        if model is not None:
            command += ["--model", str(model)]
        if r.probabilities:
            command.append("--probabilities")
        if not r.heatmaps:
            command.append("--no-heatmaps")
        if r.largest_component:
            command.append("--largest-component")
        return command

    # -- process -------------------------------------------------------------------------------------
    def start(self) -> SubprocessRun:
        self.state, self.started = RunState.RUNNING, time.monotonic()
        self.folder = Path(tempfile.mkdtemp(prefix="tokenunet-run-", dir=self.temp_dir))
        try:
            inputs = self._write_inputs()
            env = dict(os.environ if self.env is None else self.env)
            env["PYTHONPATH"] = os.pathsep.join([str(MODULE_DIR), *filter(None, [env.get("PYTHONPATH")])])
            env.setdefault("PYTHONUNBUFFERED", "1")
            self.process = subprocess.Popen(
                self.command(inputs),
                cwd=str(self.folder),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
                encoding="utf-8",
                errors="replace",
                **popen_options(),
            )
        except Exception as error:
            self._cleanup()
            self._finish(RunState.FAILED, TokenUNetError(f"cannot start the segmentation process: {error}"))
            return self
        self._reader = threading.Thread(target=self._read, name="TokenUNet output", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        for raw in self.process.stdout:
            line = raw.rstrip("\n")
            if not line:
                continue
            if line.startswith("{"):
                try:
                    data = json.loads(line)
                    self._progress(data["stage"], data["fraction"])
                    continue
                except (ValueError, KeyError, TypeError):
                    pass
            self.log.append(line)
            self._events.put({"type": "log", "line": line})
        self.process.stdout.close()

    def poll(self) -> RunState:
        if self.state != RunState.RUNNING:
            return self.state
        self._drain()
        if self.process.poll() is None:
            if self._kill_at is not None and time.monotonic() >= self._kill_at:
                signal_process_tree(self.process, kill=True)
            return self.state
        self._reader.join()
        self._drain()
        code = self.process.returncode
        try:
            if self._cancel.is_set() or code == EXIT_CANCELLED:
                self._finish(RunState.CANCELLED, CancelledError("segmentation cancelled"))
            elif code != 0:
                self._finish(RunState.FAILED, TokenUNetError(self._failure_message(code)))
            else:
                try:
                    self.result = result_from_folder(self.folder / "out", self.request.inputs[0][1])
                except (OSError, ValueError, KeyError, TokenUNetError) as error:
                    self._finish(RunState.FAILED, TokenUNetError(f"cannot read the run's outputs: {error}"))
                else:
                    self._finish(RunState.COMPLETED)
        finally:
            kill_process_tree(self.process, 0)  # anything the child left behind in its group
            self._cleanup()
        return self.state

    def _failure_message(self, code: int) -> str:
        lines = [line for line in self.log if line.strip()]
        for line in reversed(lines):
            if line.startswith(("error:", "internal error:")):
                return line.split(":", 1)[1].strip() if line.startswith("error:") else line
        tail = lines[-1] if lines else "no output"
        return f"the segmentation process failed (exit code {code}): {tail}"

    def _cleanup(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def signal_process_tree(process: subprocess.Popen | None, kill: bool) -> None:
    """Ask the child's process tree to stop (``kill``: force it); never raises."""
    signal_tree(process, kill=kill)


def kill_process_tree(process: subprocess.Popen | None, grace: float = 3.0) -> None:
    """Stop ``process`` and its descendants: terminate, then kill after ``grace`` seconds; never raises."""
    stop_tree(process, grace)


def result_from_folder(folder: str | Path, input_affine=None):
    """A pipeline ``SegmentationResult`` from the CLI's files (``--attention-grid token``).

    ``input_affine`` (the first input's IJK -> RAS) replaces the files' affine, which NRRD stores rounded.
    """
    from ..pipeline.geometry import Grid
    from ..pipeline.package import Label
    from ..pipeline.segmentation import Heatmaps, SegmentationResult
    from ..pipeline.volumes import read_volume

    folder = Path(folder)
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    labels_volume = read_volume(folder / "segmentation.seg.nrrd")
    affine = labels_volume.affine
    if input_affine is not None:
        if not np.allclose(affine, input_affine, atol=1e-3):
            raise ValueError("the segmentation's geometry differs from the input's")
        affine = np.asarray(input_affine, float)
    labels = np.ascontiguousarray(labels_volume.array, dtype=np.uint8)
    table = [Label(e["value"], e["name"], tuple(e["color"]), None, e.get("terminology")) for e in report["labels"]]
    heatmaps = None
    maps = report.get("attention_maps") or []
    if maps:
        if report.get("attention_grid") != "token":
            raise ValueError("the attention maps were not written on the token grid")
        coarse, grid = {}, None
        for kind in dict.fromkeys(m["kind"] for m in maps):
            entries = sorted((m for m in maps if m["kind"] == kind), key=lambda m: m["token"])
            volumes = [read_volume(folder / m["file"]) for m in entries]
            grid = grid or Grid(tuple(volumes[0].array.shape), volumes[0].affine)
            coarse[kind] = np.stack([v.array.astype(np.float32) for v in volumes])
        heatmaps = Heatmaps(coarse, grid, Grid(tuple(labels.shape), affine))
    probabilities = None
    probability_dir = folder / "probabilities"
    if probability_dir.is_dir():
        probabilities = {
            label.name: read_volume(probability_dir / f"{label.name}.nrrd").array.astype(np.float32) for label in table
        }
    return SegmentationResult(
        labels=labels,
        affine=affine,
        label_table=table,
        heatmaps=heatmaps,
        token_matches=report.get("token_matches", []),
        volumes_ml={e["name"]: float(e.get("volume_ml", 0.0)) for e in report["labels"]},
        timings=dict(report.get("timings_s", {})),
        device=report.get("device", ""),
        model_id=report.get("model", ""),
        probabilities=probabilities,
        warnings=list(report.get("warnings", [])),
    )
