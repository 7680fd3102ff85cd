"""Runs of a :class:`.run_contract.RunRequest`, in this process or in a child process, behind one interface.

``start()``, ``poll()`` (call it from the thread that owns the results, e.g. Slicer's GUI thread: it delivers
the events), ``cancel()``, ``wait()``, ``add_observer(callback)``. Observers receive typed events
(:class:`ProgressEvent`, :class:`LogEvent`, and one :class:`FinishedEvent` at the end). A completed run's
``result`` is a :class:`SegmentationResult` on the first input's grid.

The model is resolved (downloaded if needed, with progress and cancel) and loaded inside the run: in the worker
thread of an in-process run, in the child of a subprocess run; never by the caller before it.
"""

from __future__ import annotations

import queue
import threading
import time

from .errors import CancelledError, TokenUNetError
from .run_contract import FinishedEvent, ProgressEvent, RunRequest, RunState

RUN_MODES = ("subprocess", "inprocess")


class Run:
    """Base of both kinds of run: state, observers, elapsed time, progress, cancel."""

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

    def _begin(self) -> None:
        self.state, self.started = RunState.RUNNING, time.monotonic()

    def _emit(self, event) -> None:
        if isinstance(event, ProgressEvent):
            self.stage, self.fraction = event.stage, event.fraction
        for callback in list(self._observers):
            callback(event)

    def _progress_event(self, stage: str, fraction: float) -> ProgressEvent:
        return ProgressEvent(stage, float(fraction), self.elapsed)

    def _queue_progress(self, stage: str, fraction: float) -> None:
        self._events.put(self._progress_event(stage, fraction))

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
        self._emit(FinishedEvent(state, error))

    def cancel(self) -> None:
        """Ask the run to stop; :meth:`poll` reports ``CANCELLED`` once it has."""
        self._cancel.set()

    def poll(self) -> RunState:
        raise NotImplementedError

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

    def _segment(self, progress):
        from .segmentation import segment

        r = self.request
        return segment(r.segment_inputs(), r.model, progress=progress, cancel=self._cancel, **r.segment_options())

    def _outcome(self, progress) -> tuple[RunState, TokenUNetError | None]:
        try:
            self.result = self._segment(progress)
            return RunState.COMPLETED, None
        except CancelledError as error:
            return RunState.CANCELLED, error
        except TokenUNetError as error:
            return RunState.FAILED, error
        except Exception as error:  # noqa: BLE001 - reported as a failed run, with its type
            return RunState.FAILED, TokenUNetError(f"internal error: {type(error).__name__}: {error}")

    def run(self) -> RunState:
        """Run in the calling thread, delivering events as they happen."""
        self._begin()
        state, error = self._outcome(lambda stage, fraction: self._emit(self._progress_event(stage, fraction)))
        self._finish(state, error)
        return state

    def start(self) -> InProcessRun:
        self._begin()

        def work():
            self._events.put(("done", self._outcome(self._queue_progress)))

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
            if isinstance(event, tuple):  # the worker's outcome
                self._thread.join()
                self._finish(*event[1])
                return self.state
            self._emit(event)


def make_run(request: RunRequest, mode: str = "subprocess", python: str | None = None, temp_dir=None) -> Run:
    """An unstarted run of the requested kind (``subprocess`` or ``inprocess``); ``python`` and ``temp_dir`` (where
    its exchange folder goes) are a subprocess run's."""
    if mode == "inprocess":
        return InProcessRun(request)
    if mode == "subprocess":
        from .subprocess_run import SubprocessRun

        return SubprocessRun(request, python=python, temp_dir=temp_dir)
    raise ValueError(f"unknown run mode '{mode}'; choose one of {', '.join(RUN_MODES)}")
