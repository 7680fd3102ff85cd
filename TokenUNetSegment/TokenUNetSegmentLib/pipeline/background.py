"""A function run in a thread next to the caller's work, its result or error handed back to the caller."""

from __future__ import annotations

import threading

from . import process_settings


class BackgroundCall:
    """``function()`` in a thread: :meth:`result` returns its value or raises its error in the caller's thread.

    Meant for C++ work (SimpleITK's readers and resampling, zlib) next to the caller's Python: the GIL lets them
    overlap where the C++ code releases it. Not a daemon thread: the interpreter's exit waits for it, since a process
    that exits while a thread runs SimpleITK's reader crashes (measured: an exit with code 2 during a DICOM read
    ended in a segmentation fault or an abort in 9 of 10 tries).
    """

    def __init__(self, function, name: str = "TokenUNet background"):
        self._outcome: tuple[bool, object] | None = None
        self._thread = threading.Thread(target=self._run, args=(function,), name=name)
        self._thread.start()

    def _run(self, function) -> None:
        try:
            self._outcome = (True, function())
        except BaseException as error:  # noqa: BLE001 - handed to the caller by result()
            self._outcome = (False, error)

    def wait(self, seconds: float | None = None) -> None:
        """Wait until the call has ended, at most ``seconds``."""
        self._thread.join(seconds)

    def result(self):
        """The call's value once it has ended; its error is raised here."""
        self._thread.join()
        succeeded, value = self._outcome
        if not succeeded:
            raise value
        return value


def switch_interval(seconds: float):
    """Threads hand the GIL over after ``seconds`` (Python's default: 5 ms) inside the block; restored after.

    A thread that calls C++ in many short steps waits for the GIL after each step while another thread runs Python:
    a shorter interval lets it go on sooner. Blocks that overlap (``segment`` commands run by ``cli.main`` in two
    threads) put back the interval of before the first once the last has ended
    (:class:`.process_settings.SharedSetting`).
    """
    return process_settings.switch_interval.hold(seconds)
