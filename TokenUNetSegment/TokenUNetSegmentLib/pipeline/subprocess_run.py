"""A run in a child process: the pipeline's ``segment`` command, inputs and outputs as NRRD files.

The child runs in its own process group and reports typed JSON events (``--progress json``, see
:mod:`.run_contract`); its output folder is read back with :func:`.outputs.read_outputs`. The temporary folder
is removed whatever the outcome, and cancel ends the child's whole process tree (:mod:`.process_tree`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import replace
from pathlib import Path

import numpy as np

from .errors import CancelledError, TokenUNetError
from .process_tree import popen_options, signal_tree, stop_tree
from .run_contract import ErrorEvent, ExitCode, LogEvent, ProgressEvent, ResultEvent, RunRequest, RunState, split_event
from .runs import Run

MODULE_DIR = Path(__file__).resolve().parents[2]  # the folder that holds TokenUNetSegmentLib
HEADER_BYTES = 2048  # room for one exchange file's NRRD header


def python_executable() -> str:
    """The interpreter for child runs: Slicer's ``PythonSlicer`` where it exists (inside Slicer,
    ``sys.executable`` is the Slicer application itself), else this interpreter."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    folder = Path(sys.executable).parent
    for name in ("PythonSlicer", "PythonSlicer.exe"):
        if (folder / name).is_file():
            return str(folder / name)
    return sys.executable


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
        self.reported: ErrorEvent | ResultEvent | None = None  # the child's final event, if it sent one
        self._kill_at: float | None = None

    def cancel(self) -> None:
        """Ask the child to stop (SIGTERM to its process group); its tree is killed after ``grace`` seconds."""
        if self.state != RunState.RUNNING or self._cancel.is_set():
            return
        self._cancel.set()
        self._kill_at = time.monotonic() + self.grace
        signal_tree(self.process, kill=False)

    def _write_inputs(self) -> list[Path]:
        """The inputs as uncompressed NRRD files in the run's folder, once its disk has room for them all.

        Raises:
            OutputError: less free space than the files need (before any is written or converted).
        """
        from .nrrd import PLAIN_TYPES, plain_array, write_nrrd
        from .output_folder import check_free_space

        arrays = [np.asarray(array) for array, _ in self.request.inputs]
        needed = sum(a.size * (a.itemsize if a.dtype.type in PLAIN_TYPES else 4) + HEADER_BYTES for a in arrays)
        check_free_space(self.folder, needed, "writing the run's inputs for the segmentation process")
        paths = []
        for index, (array, affine) in enumerate(self.request.inputs):
            path = self.folder / "inputs" / f"channel{index}.nrrd"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_nrrd(path, plain_array(np.asarray(array)), np.asarray(affine, float), compression=0)
            paths.append(path)
        return paths

    def _named(self, text: str) -> str:
        """``text`` with the exchange files (``channel0.nrrd``) called by the inputs' names, where the request
        gives them: the user knows the volumes, not the files this run wrote for its child."""
        for index, name in enumerate(self.request.names):
            text = text.replace(f"channel{index}.nrrd", f"'{name}'")
        return text

    def command(self, inputs: list[Path]) -> list[str]:
        """The command line of the child."""
        out = self.folder / "out"
        if self.custom_command is not None:
            return [part.replace("{out}", str(out)) for part in self.custom_command]
        return [self.python, "-m", "TokenUNetSegmentLib.pipeline", *self.request.command_arguments(inputs, out)]

    def start(self) -> SubprocessRun:
        self._begin()
        # absolute: the child runs inside this folder, so a relative one would name another place for it
        self.folder = Path(os.path.abspath(tempfile.mkdtemp(prefix="tokenunet-run-", dir=self.temp_dir)))
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
            if not isinstance(error, TokenUNetError):
                error = TokenUNetError(f"cannot start the segmentation process: {error}")
            self._finish(RunState.FAILED, error)
            return self
        self._reader = threading.Thread(target=self._read, name="TokenUNet output", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        for raw in self.process.stdout:
            text, event = split_event(raw.rstrip("\n"))  # stdout and stderr share the pipe: a line may hold both
            if text.strip():
                self._log(LogEvent(text))
            if isinstance(event, ProgressEvent):
                self._queue_progress(event.stage, event.fraction)
                continue
            if isinstance(event, (ErrorEvent, ResultEvent)):
                self.reported = event
            elif event is not None:
                self._log(event)
        self.process.stdout.close()

    def _log(self, event) -> None:
        if isinstance(event, LogEvent):
            event = replace(event, message=self._named(event.message))
        self.log.append(getattr(event, "message", ""))
        self._events.put(event)

    def poll(self) -> RunState:
        if self.state != RunState.RUNNING:
            return self.state
        self._drain()
        if self.process.poll() is None:
            if self._kill_at is not None and time.monotonic() >= self._kill_at:
                signal_tree(self.process, kill=True)
            return self.state
        self._reader.join()
        self._drain()
        code = self.process.returncode
        try:
            if self._cancel.is_set() or code == ExitCode.CANCELLED:
                self._finish(RunState.CANCELLED, CancelledError("segmentation cancelled"))
            elif code != ExitCode.OK:
                self._finish(RunState.FAILED, self._failure(code))
            else:
                self._finish_with_outputs()
        finally:
            stop_tree(self.process, 0)  # anything the child left behind in its tree
            self._cleanup()
        return self.state

    def _finish_with_outputs(self) -> None:
        from .outputs import read_outputs

        try:
            self.result = read_outputs(self.folder / "out", self.request.inputs[0][1])
        except (OSError, ValueError, KeyError, TokenUNetError) as error:
            self._finish(RunState.FAILED, TokenUNetError(f"cannot read the run's outputs: {error}"))
        else:
            self.result.warnings = [self._named(warning) for warning in self.result.warnings]
            self._finish(RunState.COMPLETED)

    def _failure(self, code: int) -> TokenUNetError:
        """The child's typed error, or (when it died without one) its exit code and last log line."""
        if isinstance(self.reported, ErrorEvent):
            error = self.reported.to_error()
            error.message = self._named(error.message)
            return error
        lines = [line for line in self.log if line.strip()]
        return TokenUNetError(
            f"the segmentation process failed (exit code {code}): {lines[-1] if lines else 'no output'}"
        )

    def _cleanup(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
