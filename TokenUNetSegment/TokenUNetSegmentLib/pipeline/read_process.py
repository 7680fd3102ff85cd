"""The input's voxels read in a forked child process while the command imports torch and loads the model.

Reading a DICOM series and resampling it onto the model grid (SimpleITK) and importing torch both hold the GIL for
long stretches, so a thread overlaps them poorly (:func:`.segment_command.load_while_reading`). A child made with
``os.fork`` before torch is imported runs the read on its own core: it writes each volume's voxels (and its copy on
the model grid, :func:`.preprocess.resample_ahead`) into anonymous shared memory mapped before the fork, and sends
the rest (geometry, name, the reader's warnings) or its error through a pipe. The parent's arrays are views of that
memory: no copy, and each is freed with its last view.

The child reads only the inputs, writes no file, ignores nothing: Ctrl-C and SIGTERM end it at once (their default
action), it is killed when the parent dies (Linux's parent-death signal) and it leaves through ``os._exit``. The
parent kills it whenever it stops waiting for it (an error while loading the model, Ctrl-C, a cancel) and always
reaps it. Python warnings raised while reading are recorded in the child and shown by the parent in their order.

Used only where a fork is safe and pays: Linux, the main thread of a process with no other Python thread, torch not
imported yet (``batch`` after its first case, the Python API inside Slicer read inline),
Slicer not loaded, and ``TOKENUNET_READ_PROCESS`` not ``0``. Elsewhere :func:`fork_safe` is False and the caller reads
as before.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import select
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from .errors import CancelledError, OutOfMemoryError, TokenUNetError

SWITCH_VARIABLE = "TOKENUNET_READ_PROCESS"  # "0": read in the command's own process
MAX_VALUE_BYTES = 8  # the widest voxel a reader returns (float64): the shared memory is sized from the header with it
POLL_SECONDS = 0.1  # how often a parent waiting for the child looks at its cancel event
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a child gets when its parent dies


def fork_safe() -> bool:
    """Whether this process may read in a forked child (see the module's docstring).

    A fork copies only the calling thread: a lock another thread held stays locked in the child. Python's own
    threads are refused; the native ones the command has at this point belong to numpy's OpenBLAS and ITK's thread
    pool, which both stop their threads before a fork and restart them after (``pthread_atfork`` in OpenBLAS's
    ``driver/others/memory.c`` and ITK's ``itkThreadPool.cxx``). torch's OpenMP pool is not fork-safe: a process that
    imported torch reads inline.
    """
    if os.environ.get(SWITCH_VARIABLE, "").strip() == "0" or not sys.platform.startswith("linux"):
        return False
    if not hasattr(os, "fork") or "torch" in sys.modules or "slicer" in sys.modules:
        return False
    return threading.current_thread() is threading.main_thread() and threading.active_count() == 1


class ReadingProcess:
    """``read()`` (a list of :class:`.volumes.Volume`) in a forked child; :meth:`result` takes the volumes.

    ``values``: the values each volume's header declares (one per volume ``read`` returns, in its order); the shared
    memory is sized from them before the fork. An array that does not fit its region (or is no numpy array) comes
    through the pipe instead.
    """

    def __init__(self, read: Callable[[], list], values: Sequence[int]):
        self.pid = 0
        self.regions = [(_shared(count), _shared(count)) for count in values]  # per volume: voxels, model grid
        sys.stdout.flush()
        sys.stderr.flush()
        read_end, write_end = os.pipe()
        parent = os.getpid()
        try:
            self.pid = os.fork()
        except OSError:
            os.close(read_end)
            os.close(write_end)
            raise
        if self.pid == 0:  # the child: never returns
            code = 1
            try:
                os.close(read_end)
                _child_signals(parent)
                answer = _outcome(read, self.regions)  # the child's arrays are freed on return
                for region in (region for pair in self.regions for region in pair):
                    region.close()  # its exit, which the parent's end of the pipe waits for, has less to free
                _write_all(write_end, answer)
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        self.pipe = read_end

    def result(self, cancel=None) -> list:
        """The child's volumes once it has sent them, or its error raised here; with ``cancel`` (an event), a cancel
        stops the child and raises :class:`.errors.CancelledError`."""
        chunks = []
        while True:
            if cancel is not None and cancel.is_set():
                self.stop()
                raise CancelledError("segmentation cancelled")
            if not select.select([self.pipe], [], [], POLL_SECONDS)[0]:
                continue
            chunk = os.read(self.pipe, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        status = self._reap()
        if not chunks or status != 0:
            raise _died(status, cancel)
        succeeded, value, caught = pickle.loads(b"".join(chunks))
        for message in caught:  # in their order, as the parent's own warnings are shown
            warnings.showwarning(*message)
        if not succeeded:
            raise value
        return [self._volume(index, *item) for index, item in enumerate(value)]

    @contextlib.contextmanager
    def stopped_by_sigterm(self):
        """Within: SIGTERM kills the child at once, then does what it did before (e.g. sets the run's cancel event,
        which :meth:`result` then raises)."""
        previous = signal.getsignal(signal.SIGTERM)

        def stop_reading(signum, frame):
            with contextlib.suppress(ProcessLookupError):
                if self.pid:
                    os.kill(self.pid, signal.SIGKILL)
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

        signal.signal(signal.SIGTERM, stop_reading)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def stop(self) -> None:
        """Kill the child if it still runs and reap it (safe to call more than once)."""
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self._reap()
        self.regions = []

    def _reap(self) -> int:
        pid, self.pid = self.pid, 0
        with contextlib.suppress(OSError):
            os.close(self.pipe)
        if not pid:
            return 0
        while True:  # a second Ctrl-C must not leave a zombie
            try:
                return os.waitpid(pid, 0)[1]
            except KeyboardInterrupt:
                continue
            except ChildProcessError:
                return 0

    def _volume(self, index: int, volume, array, ahead):
        regions, self.regions[index] = self.regions[index], (None, None)
        volume.array = _from_region(array, regions[0])
        if ahead is not None:
            volume.on_model_grid = (ahead[0], _from_region(ahead[1], regions[1]))
        return volume


def _shared(values: int) -> mmap.mmap:
    """Anonymous memory shared with a child forked after this call; pages exist only once written."""
    return mmap.mmap(-1, max(1, values) * MAX_VALUE_BYTES, flags=mmap.MAP_SHARED)


def _child_signals(parent: int) -> None:
    """The child ends at once on Ctrl-C and SIGTERM, and when its parent dies."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request
        os._exit(1)


def _outcome(read: Callable[[], list], regions: list) -> bytes:
    """The child's answer, pickled: (True, [(volume without arrays, array, model-grid copy)], warnings) or (False,
    error, warnings); arrays placed in ``regions`` travel as their layout."""
    with warnings.catch_warnings(record=True) as caught:
        try:
            volumes = read()
            value = [_shipped(volume, regions[index]) for index, volume in enumerate(volumes)]
            succeeded = True
        except BaseException as error:  # noqa: BLE001 - raised again in the parent
            succeeded, value = False, error
    shown = [(w.message, w.category, w.filename, w.lineno) for w in caught]
    try:
        return pickle.dumps((succeeded, value, shown), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:  # an error (or warning) that cannot be pickled: its text
        plain = TokenUNetError(f"reading the input failed: {type(value).__name__}: {value}") if not succeeded else error
        return pickle.dumps((False, plain, [(str(w[0]), UserWarning, w[2], w[3]) for w in shown]))


def _shipped(volume, regions: tuple) -> tuple:
    """``volume`` without its arrays, and each array placed in its region (or itself when it does not fit)."""
    ahead = volume.on_model_grid
    bare = replace(volume, array=None, on_model_grid=None)
    shipped = _placed(volume.array, regions[0])
    return bare, shipped, (ahead[0], _placed(ahead[1], regions[1])) if ahead is not None else None


def _placed(array, region: mmap.mmap):
    """``array`` copied into ``region`` in its own memory order: its (shape, dtype, strides); the array itself when
    it is no numpy array or does not fit."""
    if not isinstance(array, np.ndarray) or array.nbytes > len(region) or array.dtype.hasobject:
        return array
    order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
    target = np.ndarray(array.shape, array.dtype, buffer=region, order=order)
    np.copyto(target, array, casting="no")
    return ("shared", array.shape, array.dtype.str, target.strides)


def _from_region(shipped, region: mmap.mmap | None):
    """The parent's array: a view of ``region`` for a placed array (it keeps the region mapped), else as sent."""
    if isinstance(shipped, tuple) and shipped and shipped[0] == "shared":
        _, shape, dtype, strides = shipped
        return np.ndarray(shape, np.dtype(dtype), buffer=region, strides=strides)
    return shipped


def _died(status: int, cancel) -> BaseException:
    """The error for a child that ended without an answer."""
    signum = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    if signum == signal.SIGINT:
        return KeyboardInterrupt()
    if signum == signal.SIGTERM or (cancel is not None and cancel.is_set()):
        return CancelledError("segmentation cancelled")
    if signum == signal.SIGKILL:
        return OutOfMemoryError(
            "the process reading the input was killed (by the system when memory ran out, or by a user)",
            "free memory and run again, or set TOKENUNET_READ_PROCESS=0 to read in the command's own process",
        )
    what = f"signal {signal.Signals(signum).name}" if signum is not None else f"exit code {os.WEXITSTATUS(status)}"
    return TokenUNetError(
        f"the process reading the input ended with {what}",
        "run again; set TOKENUNET_READ_PROCESS=0 to read in the command's own process",
    )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
