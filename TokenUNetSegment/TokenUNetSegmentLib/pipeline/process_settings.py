"""Process-wide settings that runs change for a while, owned in one place, so that runs overlapping in one process
(Slicer's in-process run beside a ``segment()`` typed in its Python console, a second run, a training) each get what
they would get alone, and the process gets back exactly what it had before the first of them once the last has ended,
in whatever order they end, completed, failed or cancelled.

A setting saved on entry and put back on exit by each run is wrong as soon as two runs overlap: the second saves the
first's temporary value as "the caller's", and whichever ends last puts back what it saved. Here the first holder of
a setting saves it and the last puts it back (:class:`SharedSetting`: Python's switch interval, ITK's warning
display, cudnn's flags, the global random number generators that ``train`` seeds).

Torch's intra-op thread count is two counts in one: each thread's own (what its torch operations use; OpenMP keeps
one per thread) and the process's, which a thread takes on its first torch operation (threads started later: an
in-process run's worker thread, a pool's workers). ``torch.set_num_threads`` sets both, so a run that put its own
thread on 1 thread for a while (the scoring pass) also put every thread started meanwhile on 1: another run's worker
thread ran its whole network on 1 thread. :func:`use_threads` and :func:`threads_here` set the calling thread's
count and keep the process's as it was when the first block began (``segment()`` and ``train`` run in one whole). On a
torch build without OpenMP (one count for the process; not the builds tested here, whose backend is OpenMP) a thread's
own count cannot differ from the process's: the process's is kept there too, and the scoring pass's workers run on it.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable

# re-entrant: a hold's end can run inside a locked section of its own thread, when Python's cyclic collector frees
# a hold left open (a stop handled in contextlib's __enter__ just after the hold was taken) at an allocation there
_lock = threading.RLock()
_KEEP = object()  # a holder that sets no value of its own


class SharedSetting:
    """A process-wide setting that overlapping holders change: while any holds it, it has the latest remaining
    holder's value; once the last has let go, the value it had before the first."""

    def __init__(self, read: Callable[[], object], write: Callable[[object], None]):
        self._read, self._write = read, write
        self._held: dict[object, object] = {}  # each holder's token -> its value, in the order they came
        self._before = None

    @contextlib.contextmanager
    def hold(self, value=_KEEP):
        """``value`` for the block (by default the setting is left as it is: the block may change it, a
        library's call that sets it); afterwards the latest other holder's value, or the value before the first."""
        mine = object()
        try:  # a stop handled as the section ends (the lock let go) still lets go of the hold
            with _lock:
                if not self._held:
                    self._before = self._read()
                self._held[mine] = value
                if value is not _KEEP:
                    self._write(value)
            yield
        finally:
            with _lock:
                if mine in self._held:  # not when stopped before it held; no call before the hold is gone
                    del self._held[mine]
                    values = [held for held in self._held.values() if held is not _KEEP]
                    if not self._held or values:
                        self._write(values[-1] if values else self._before)


switch_interval = SharedSetting(sys.getswitchinterval, sys.setswitchinterval)


def _cudnn_flags() -> tuple[bool, bool]:
    import torch

    return torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark


def _set_cudnn_flags(flags: tuple[bool, bool]) -> None:
    import torch

    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags


cudnn_flags = SharedSetting(_cudnn_flags, _set_cudnn_flags)  # MONAI's set_determinism (``train``) sets them


def _random_states() -> tuple:
    """The states of the process's global random number generators: Python's, numpy's, torch's (CPU; CUDA's where
    started, else the seed they will start with) and MONAI's seed for new transforms (``monai.utils.get_seed``)."""
    import random

    import numpy as np
    import torch

    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else torch.initial_seed()
    monai_seed = getattr(sys.modules.get("monai.utils.misc"), "_seed", None)
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda, monai_seed


def _set_random_states(states: tuple) -> None:
    import random

    import numpy as np
    import torch

    python, numpy_state, torch_state, cuda, monai_seed = states
    random.setstate(python)
    np.random.set_state(numpy_state)
    torch.set_rng_state(torch_state)
    if isinstance(cuda, int):  # not started before: started (or, lazily, to start) with the caller's seed
        torch.cuda.manual_seed_all(cuda)
    else:
        torch.cuda.set_rng_state_all(cuda)
    monai = sys.modules.get("monai.utils.misc")
    if monai is not None:
        monai._seed = monai_seed


random_generators = SharedSetting(_random_states, _set_random_states)  # ``train`` seeds them (set_determinism)


class _TorchThreads:
    """The process's torch thread count while runs hold it: the count before the first, kept for threads started
    later; each thread's own count set apart from it."""

    def __init__(self):
        self.holders = 0
        self.before: int | None = None  # the process's count when the first holder came
        self.in_networks = 0  # threads that the CPU networks of this process's runs use now


_torch = _TorchThreads()


def _in_new_thread(call: Callable[[], object]):
    """``call()`` in a thread of its own: torch's thread calls there see and set the process's count only."""
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(call()), name="TokenUNet settings")
    thread.start()
    thread.join()
    return outcome[0]


def _process_threads() -> int:
    """The torch thread count a thread started now gets."""
    import torch

    return _in_new_thread(torch.get_num_threads)


def _set_threads(count: int) -> None:
    """This thread's count ``count``; the process's as it was before the first holder (or as it is, with none)."""
    import torch

    keep = _torch.before if _torch.holders else _process_threads()
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    if count != keep:
        _in_new_thread(lambda: torch.set_num_threads(keep))


def use_threads(count: int) -> None:
    """Put the calling thread on ``count`` torch threads for good (a pool's worker, which ends with its pool); the
    count that threads started later get is kept."""
    with _lock:
        _set_threads(count)


@contextlib.contextmanager
def threads_here(count: int | None = None):
    """Run the block with the calling thread on ``count`` torch threads (None: its own); yields the count. After it
    the thread's own count is back, and threads started later get the process's count of before the first block of
    any thread, whatever the order in which overlapping blocks end, also after an error or a stop (one handled as the
    block's locked sections end too). A block whose end never ran (a stop handled in ``contextlib``'s own code) ends
    when Python frees it, in whichever thread: that thread keeps its own count."""
    import torch

    held, mine = False, threading.current_thread()
    try:  # a stop handled as the section ends (the lock let go) still lets go of the hold
        with _lock:
            own = torch.get_num_threads()  # a new thread's: the process's, kept while blocks overlap
            if not _torch.holders:
                _torch.before = _process_threads()
            _torch.holders += 1
            held = True  # no stop is handled between these two lines (no call)
            count = own if count is None else count
            _set_threads(count)
        yield count
    finally:
        if held:  # no call before the lock: a stop is not handled before the hold is let go
            with _lock:
                try:  # a hold left open ends where the collector frees it: another thread keeps its count
                    if threading.current_thread() is mine:
                        _set_threads(own)
                finally:  # a stop raised here still lets go of the hold
                    _torch.holders -= 1
                    if not _torch.holders:
                        _in_new_thread(lambda: torch.set_num_threads(_torch.before))


@contextlib.contextmanager
def network_threads(choose: Callable[[int], int]):
    """:func:`threads_here` for a CPU network on ``choose(busy)`` threads, ``busy`` being the threads that the CPU
    networks of this process's other runs use now (their CPU time is this process's own, which
    :func:`.device.load_of_others` leaves out); yields the count. Chosen and counted at once: two networks that start
    together do not both count the CPUs as free."""
    counted = 0
    try:  # a stop handled as the section ends (the lock let go) still takes the count back
        with _lock:
            count = choose(_torch.in_networks)
            _torch.in_networks += count
            counted = count  # no stop is handled between these two lines (no call)
        with threads_here(count):
            yield count
    finally:
        if counted:
            with _lock:
                _torch.in_networks -= counted


@contextlib.contextmanager
def held_by_a_run():
    """A run's hold on the process's settings (``segment()``, ``train``): the first run's start saves torch's thread
    count and cudnn's flags (``train`` sets them for determinism), the last run's end puts them back; the calling
    thread keeps its own torch thread count."""
    with threads_here(), cudnn_flags.hold():
        yield
