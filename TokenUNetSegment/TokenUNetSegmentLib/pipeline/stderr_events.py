"""Every line on stderr an event under ``--progress json``, also what C libraries write to file descriptor 2 themselves.

GDCM's JPEG decoders (``Unsupported JPEG data precision 12``), ITK, VTK, OpenMP and torch's C++ code write to file
descriptor 2 directly, bypassing Python's ``sys.stderr``. :class:`StderrEvents` points descriptor 2 at a pipe (1 MiB
where Linux allows) and a thread forwards what arrives to the real stderr line by line: an event line as it is, any
other line as a :class:`.run_contract.LogEvent` of level ``warning``. Python's own writes (the events, logging,
warnings) go through the same pipe, so that the order of lines is the order of writes. The final event (result or
error) is held back and written when the forwarding ends, after everything written before that: it stays the last
line. A C line cut by an event written between its two halves is joined again.

POSIX only (elsewhere, and when ``sys.stderr`` is not descriptor 2, e.g. under a test's capture, nothing changes).
Python's ``faulthandler``, when enabled, writes to the real stderr meanwhile, so that a crash's traceback is not
lost in a pipe whose reader dies with the process.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

from .run_contract import ErrorEvent, LogEvent, ResultEvent, decode_event, encode_event

PIPE_BYTES = 1 << 20  # what C libraries may write while the forwarding thread waits (Linux's unprivileged maximum)
LONGEST_LINE = 64 * 1024  # a longer line without its end (binary output) is forwarded in parts
CLOSE_SECONDS = 5.0  # how long closing waits for the thread to forward what is left
EVENT_START = '{"event": '


class StderrEvents:
    """File descriptor 2 forwarded as events while started (see the module's docstring)."""

    def __init__(self):
        self.active = False
        self.held: list[bytes] = []  # final events, written last
        self.carry = ""  # the start of a line cut by an event line
        self.done = threading.Event()
        self.end_mark = b"\x00tokenunet-end-" + os.urandom(8).hex().encode() + b"\x00"

    def start(self) -> bool:
        """Forward descriptor 2; False (and nothing changed) where that cannot be done."""
        try:
            if os.name != "posix" or sys.stderr.fileno() != 2:
                return False
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            return False
        self.saved = os.dup(2)  # the real stderr (not inherited by child processes)
        self.read_end, self.write_end = os.pipe()
        with contextlib.suppress(AttributeError, OSError):
            import fcntl

            fcntl.fcntl(self.write_end, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
        os.dup2(self.write_end, 2)
        self.thread = threading.Thread(target=self._forward, name="TokenUNet stderr", daemon=True)
        self.thread.start()
        self.active = True
        self._point_faulthandler(self.saved)
        return True

    def close(self) -> None:
        """Descriptor 2 back to the real stderr, after everything written so far is forwarded and the held final
        event written last. Waits at most :data:`CLOSE_SECONDS` (a reader of our stderr that does not read)."""
        if not self.active:
            return
        self.active = False
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        self._point_faulthandler(2)
        os.dup2(self.saved, 2)  # the pipe's other writers now: only child processes that inherited it
        with contextlib.suppress(OSError):
            _write_all(self.write_end, self.end_mark + b"\n")
        os.close(self.write_end)
        waited = 0.0
        while not self.done.is_set() and waited < CLOSE_SECONDS:
            try:
                self.done.wait(0.05)
                waited += 0.05
            except KeyboardInterrupt:  # a second Ctrl-C or SIGTERM: the final event is still on its way
                continue
        if self.done.is_set():
            os.close(self.saved)

    def _forward(self) -> None:
        """The thread: lines from the pipe to the real stderr until the end mark (or the pipe's end)."""
        pending = b""
        try:
            while True:
                chunk = os.read(self.read_end, 65536)
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
            with contextlib.suppress(OSError):
                os.close(self.read_end)
            self.done.set()

    def _guarded(self, line: bytes) -> None:
        """One line forwarded; should that fail in any way, the line as it came (the pipe must keep draining)."""
        try:
            self._line(line.decode("utf-8", "replace").rstrip("\r"))
        except Exception:
            self._write(line + b"\n")

    def _line(self, text: str) -> None:
        event = decode_event(text)
        if event is None:
            cut = text.rfind(EVENT_START)  # a C line's start, then an event written before the line's end
            if cut > 0 and decode_event(text[cut:]) is not None:
                self.carry += text[:cut]
                self._line(text[cut:])
                return
            text, self.carry = self.carry + text, ""
            if text.strip():
                self._write(encode_event(LogEvent(text.strip(), "warning")).encode() + b"\n")
            return
        line = text.strip().encode() + b"\n"
        if isinstance(event, (ResultEvent, ErrorEvent)):  # held back: the last line
            self.held, earlier = [line], self.held
            for held in earlier:
                self._write(held)
        else:
            self._write(line)

    def _write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # a reader that went away: the lines are dropped, the pipe drained
            _write_all(self.saved, data)

    @staticmethod
    def _point_faulthandler(fd: int) -> None:
        import faulthandler

        if faulthandler.is_enabled():
            faulthandler.enable(file=fd, all_threads=True)


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
