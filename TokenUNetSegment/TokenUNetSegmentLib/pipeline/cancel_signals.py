"""Ctrl-C, SIGTERM and a hang-up for ``segment``, ``batch`` and ``train``: stop now, wherever the run is.

The first stop sets the run's cancel event (what the window loop, a download and ``batch``'s next case look at) and
raises ``KeyboardInterrupt`` in the main thread at once: while a case's headers are checked, while the main thread
waits for the reading thread, in torch's import, between windows. A cancel flag alone was looked at only between
windows, so a stop during the other steps waited for them to end (seconds on a large DICOM series, torch's import on a
busy machine). Later stops only set the event: the command is already stopping, and its clean-up (dropping the case in
progress, rewriting ``batch.json``, releasing the locks) is not cut short by a second Ctrl-C; one that comes 5 s or more
after the raised one raises again (something caught that one and the run went on), unless the command is in its
clean-up (:func:`cleaning_up`), which may take longer (a large staging folder removed from a slow disk).

A stop that comes while a result is swapped into place waits for the swap (:mod:`.output_folder`), then only sets the
event (:meth:`CancelOnSignal.request`): the result is complete, and ``batch`` stops before its next case.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import threading
import time
from collections.abc import Callable

STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK") if hasattr(signal, name)
)  # SIGHUP: the terminal closed (an ssh session dropped); SIGBREAK: Windows' Ctrl-Break


def left_alone(signum: int) -> bool:
    """Whether a stop signal is not ours to handle: a handler not set from Python (an embedding application's own,
    which Python could not put back), or a hang-up the process was told to ignore (``nohup``)."""
    handler = signal.getsignal(signum)
    return handler is None or (signum == getattr(signal, "SIGHUP", None) and handler == signal.SIG_IGN)


RAISE_AGAIN_S = 5.0  # a stop this long after the one raised raises again: that one was lost (clean-up takes < 1 s)


class StopsSeen:
    """When a stop was last raised as ``KeyboardInterrupt`` in this command (shared by nested handlers)."""

    def __init__(self):
        self.raised_at: float | None = None
        self.cleaning = 0  # how many clean-ups after a stop run now (:func:`cleaning_up`): no stop is raised again


class CancelOnSignal:
    """A signal handler: the first stop sets ``event`` and raises ``KeyboardInterrupt``; later ones set it only, but
    for one that comes :data:`RAISE_AGAIN_S` after the raised one (something caught it: the run went on).

    ``seen`` (shared with the handler this one replaces, when it is one: the command line's around a command's own)
    records the raised stop: one that comes after the command put back the command line's handler (while the error
    is reported, the process ends) is not raised again (before: a second Ctrl-C there ended the process with the
    signal, exit -2, not 130)."""

    def __init__(self, event: threading.Event, seen: StopsSeen | None = None):
        self.event = event
        self.seen = seen if seen is not None else StopsSeen()

    def __call__(self, signum, frame) -> None:
        silence_a_hung_up_terminal(signum)
        self.event.set()
        now, raised_at = time.monotonic(), self.seen.raised_at
        if raised_at is None or (not self.seen.cleaning and now - raised_at >= RAISE_AGAIN_S):
            self.seen.raised_at = now
            raise KeyboardInterrupt

    def request(self, signum: int | None = None) -> None:
        """A stop that must not interrupt what runs now (it was held until a swap was done): the event only."""
        silence_a_hung_up_terminal(signum)
        self.event.set()


def silence_a_hung_up_terminal(signum: int | None) -> None:
    """After a hang-up, point stdout and stderr at the null device where they are the terminal that hung up: every
    write there fails (EIO), and a failing write (the line that ends a progress bar) cut the clean-up after the stop
    short: a case's lock and staging folder left, batch.json saying "running", exit 1. A terminal still there (a
    hang-up sent by ``kill -HUP``) is kept; so are files and pipes."""
    if signum is None or signum != getattr(signal, "SIGHUP", None):
        return
    for descriptor in (1, 2):
        try:
            if stat.S_ISCHR(os.fstat(descriptor).st_mode) and not os.isatty(descriptor):  # a hung-up terminal
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, descriptor)
                os.close(null)
        except OSError:
            continue


def install_cancel_handlers(event: threading.Event) -> list:
    """Ctrl-C, SIGTERM, a hang-up (and Windows' SIGBREAK) cancel through ``event`` (:class:`CancelOnSignal`); the
    previous handlers, to put back. Nothing is installed outside the main thread (signals are not delivered there), nor
    for a signal :func:`left_alone` (an embedding application's own handler; a hang-up under ``nohup``)."""
    previous = []
    if threading.current_thread() is threading.main_thread():
        enclosing = signal.getsignal(signal.SIGINT)
        handler = CancelOnSignal(event, enclosing.seen if isinstance(enclosing, CancelOnSignal) else None)
        for signum in STOP_SIGNALS:
            if not left_alone(signum):
                previous.append((signum, signal.signal(signum, handler)))
    return previous


@contextlib.contextmanager
def cleaning_up():
    """Within: the command cleans up after a stop or an error (drops the case in progress, rewrites ``batch.json``,
    releases its locks). A stop after the raised one only sets the flag here however late it comes: before, one that
    came :data:`RAISE_AGAIN_S` after the first (a user pressing Ctrl-C again while a large staging folder was removed
    from a slow disk) was taken for one after a swallowed stop and raised inside the clean-up, leaving the staging
    folder and lock behind. A first stop still raises."""
    handler = signal.getsignal(signal.SIGINT)
    seen = handler.seen if isinstance(handler, CancelOnSignal) else None
    if seen is not None:
        seen.cleaning += 1
    try:
        yield
    finally:
        if seen is not None:
            seen.cleaning -= 1


def restore_handlers(previous: list) -> None:
    """Put back the handlers :func:`install_cancel_handlers` replaced."""
    for signum, handler in previous:
        signal.signal(signum, handler)


@contextlib.contextmanager
def stops_recorded(replay: Callable[[list[int], dict], None], block: bool = False):
    """Ctrl-C, SIGTERM and a hang-up recorded instead of handled while the block runs (main thread only: call it
    there); after it, even when it raised, the previous handlers are put back and ``replay(received, previous)``
    decides what the signals that came (each once, in order) become, given the handlers they would have met.
    ``block``: also blocked for the thread, so that processes forked inside start with them blocked. Signals left
    alone (:func:`left_alone`: an embedding application's own handler, ``nohup``) are not touched."""
    received: list[int] = []
    previous = {}
    for signum in STOP_SIGNALS:
        if left_alone(signum):
            continue
        with contextlib.suppress(ValueError, OSError):
            previous[signum] = signal.signal(signum, lambda number, _frame: received.append(number))
    mask = (
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS) if block and hasattr(signal, "pthread_sigmask") else None
    )
    try:
        yield
    finally:
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # one sent to this thread comes now, still recorded
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        replay(list(dict.fromkeys(received)), previous)


@contextlib.contextmanager
def stops_held():
    """Ctrl-C, SIGTERM and a hang-up held until the block is done, then handled by the handlers they would have met
    (main thread only): for a block whose code a ``KeyboardInterrupt`` must not reach, such as torch's start of data
    loader workers, which runs fork hooks (where Python swallows it: the stop was lost) and leaves a half-made iterator.
    They are blocked for the main thread too, so that the processes it forks start with them blocked, to be unblocked
    (:func:`unblock_stops`) once they have set their own handling."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with stops_recorded(_handle_held, block=True):
        yield


def _handle_held(received: list[int], previous: dict) -> None:
    for signum in received:
        handler = previous[signum]
        if callable(handler):
            handler(signum, None)
        elif handler == signal.SIG_DFL:
            signal.raise_signal(signum)


def unblock_stops() -> None:
    """Let the stop signals that :func:`stops_held` blocked reach this thread (in a process forked inside it)."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
