"""Every line on stderr an event under ``--progress json``, also what C libraries write to file descriptor 2 themselves.

GDCM's JPEG decoders (``Unsupported JPEG data precision 12``), ITK, VTK, OpenMP and torch's C++ code write to file
descriptor 2 directly, bypassing Python's ``sys.stderr``. :class:`StderrEvents` points descriptor 2 at a pipe (1 MiB
where Linux allows) read by a forwarding process (forked at the start, before any thread or torch) that writes what
arrives to the real stderr line by line: an event line as it is, any other line as a :class:`.run_contract.LogEvent`
of level ``warning``. Python's own writes (the events, logging, warnings) go through the same pipe, so that the order
of lines is the order of writes. The final event (result or error) is held back and written when the forwarding ends,
after everything written before it: it stays the last line. A C line cut by an event written between its two halves
is joined again.

A process, not a thread: it needs neither this process's GIL (a C call that holds it while writing more than the pipe
holds would wait forever for a thread) nor its life (what a library writes just before it aborts or crashes the
process still arrives). It ignores Ctrl-C and SIGTERM (sent to the whole process group) and ends at the end mark or
when the pipe's last writer is gone.

POSIX only; elsewhere, when ``sys.stderr`` is not descriptor 2 (a test's capture) or when this process already runs
threads (a caller's, in which a fork is unsafe), nothing changes.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time

from .cancel_signals import STOP_SIGNALS
from .run_contract import ErrorEvent, LogEvent, ResultEvent, encode_event, split_event

PIPE_BYTES = 1 << 20  # what libraries may write before the forwarding process reads (Linux's unprivileged maximum)
LONGEST_LINE = 64 * 1024  # a longer line without its end (binary output) is forwarded in parts
CLOSE_SECONDS = 5.0  # how long closing waits for the forwarding process to write what is left


class StderrEvents:
    """File descriptor 2 forwarded as events while started (see the module's docstring)."""

    def __init__(self):
        self.active = False
        self.end_mark = b"\x00tokenunet-end-" + os.urandom(8).hex().encode() + b"\x00"

    def start(self) -> bool:
        """Forward descriptor 2; False (and nothing changed) where that cannot be done."""
        try:
            if os.name != "posix" or sys.stderr.fileno() != 2 or threading.active_count() > 1:
                return False
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            return False
        made: list[int] = []
        try:
            made += os.pipe()
            read_end, self.write_end = made
            with contextlib.suppress(AttributeError, OSError):
                import fcntl

                fcntl.fcntl(self.write_end, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
            made += os.pipe()
            self.finished, finished = made[2:]  # closed by the forwarding process once it wrote its last line
            self.pid = os.fork()
        except OSError:  # no descriptors or processes left (EMFILE, EAGAIN): the run goes on without forwarding
            for fd in made:
                os.close(fd)
            return False
        if self.pid == 0:  # the forwarding process: never returns into the command
            code = 0
            try:
                os.close(self.write_end)
                os.close(self.finished)
                for signum in STOP_SIGNALS:  # a hang-up too: the command stops, this forwards its last lines
                    signal.signal(signum, signal.SIG_IGN)
                Forwarder(read_end, 2, self.end_mark).run()
                os.close(finished)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(read_end)
        os.close(finished)
        self.saved = os.dup(2)  # the real stderr, for the faulthandler (not inherited by child processes)
        os.dup2(self.write_end, 2)
        self.active = True
        self._point_faulthandler(self.saved)
        return True

    def close(self) -> None:
        """Descriptor 2 back to the real stderr, after everything written so far is forwarded and the held final
        event written last. Waits at most :data:`CLOSE_SECONDS` (for a reader of our stderr that does not read)."""
        if not self.active:
            return
        self.active = False
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        self._point_faulthandler(2)
        os.dup2(self.saved, 2)  # the pipe's other writers now: only child processes that inherited it
        os.close(self.saved)
        with contextlib.suppress(OSError):
            _write_all(self.write_end, self.end_mark + b"\n")
        os.close(self.write_end)
        deadline = time.monotonic() + CLOSE_SECONDS
        finished = _uninterrupted(lambda: select.select([self.finished], [], [], max(0, deadline - time.monotonic())))
        os.close(self.finished)
        with contextlib.suppress(ChildProcessError):
            if not finished[0]:  # a reader of our stderr that does not read: the lines left are dropped
                os.kill(self.pid, signal.SIGKILL)
            _uninterrupted(lambda: os.waitpid(self.pid, 0))

    @staticmethod
    def _point_faulthandler(fd: int) -> None:
        import faulthandler

        if faulthandler.is_enabled():
            faulthandler.enable(file=fd, all_threads=True)


class Forwarder:
    """Lines from ``source`` to ``target``: events as they are, other text as warning log events, final events held
    until the end mark (or the pipe's end) and written last."""

    def __init__(self, source: int, target: int, end_mark: bytes):
        self.source, self.target, self.end_mark = source, target, end_mark
        self.held: list[bytes] = []  # final events, written last
        self.carry = ""  # the start of a line cut by an event line

    def run(self) -> None:
        pending = b""
        try:
            while True:
                chunk = os.read(self.source, 65536)
                if not chunk:
                    break
                *lines, pending = (pending + chunk).split(b"\n")
                if len(pending) > LONGEST_LINE:
                    lines.append(pending)
                    pending = b""
                for line in lines:
                    if line.endswith(self.end_mark):  # after a last line without its end, if any
                        pending = line[: -len(self.end_mark)]
                        return
                    self._guarded(line)
        except OSError:
            pass
        finally:
            self._guarded(pending + self.carry.encode())
            self.carry = ""
            for line in self.held:
                self._write(line)

    def _guarded(self, line: bytes) -> None:
        """One line forwarded; should that fail in any way, the line as it came (the pipe must keep draining)."""
        try:
            self._line(line.decode("utf-8", "replace").rstrip("\r"))
        except Exception:
            self._write(line + b"\n")

    def _line(self, line: str) -> None:
        text, event = split_event(line)
        if event is None:
            text, self.carry = self.carry + text, ""
            if text.strip():
                self._write(encode_event(LogEvent(text.strip(), "warning")).encode() + b"\n")
            return
        self.carry += text  # a C line's start, then an event written before the line's end
        line = line[len(text) :].strip().encode() + b"\n"  # as it came (fields this version does not know too)
        if isinstance(event, (ResultEvent, ErrorEvent)):  # held back: the last line
            self.held, earlier = [line], self.held
            for held in earlier:
                self._write(held)
        else:
            self._write(line)

    def _write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # a reader that went away: the lines are dropped, the pipe drained
            _write_all(self.target, data)


def _uninterrupted(call):
    """``call()``, called again when a second Ctrl-C or SIGTERM interrupts it (the final event is on its way)."""
    while True:
        try:
            return call()
        except KeyboardInterrupt:
            continue


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


@contextlib.contextmanager
def events_on_stderr(active: bool = True):
    """Within: descriptor 2 forwarded as events (when ``active``; see :class:`StderrEvents`)."""
    forwarding = StderrEvents()
    if active:
        forwarding.start()
    try:
        yield forwarding
    finally:
        forwarding.close()
