"""``python -m TokenUNetSegmentLib.pipeline`` and ``tokenunet``: the command line (see :mod:`.cli`)."""

import signal


def main() -> None:
    """Run the command line in this process. Ctrl-C, SIGTERM and a hang-up (unless ignored: ``nohup``) while it loads
    cancel it, exit 130, as they do later: raised as ``KeyboardInterrupt``, and remembered, for one raised inside the
    import machinery is swallowed there (a module lock's weakref callback) and the run went on."""
    stops: list[int] = []

    def stop(signum, _frame):
        stops.append(signum)
        raise KeyboardInterrupt

    try:
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            signum = getattr(signal, name, None)
            if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, stop)
        from .cli import run_as_process

        if stops:
            raise KeyboardInterrupt
        run_as_process()  # it installs the commands' handlers first thing, and ends the process
    except KeyboardInterrupt:  # in the first milliseconds: cancelled, without a traceback
        import os
        import sys

        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                continue
        os._exit(130)  # not SystemExit: after a stop raised where C code ran Python, python -m ended by SIGINT (-2)


if __name__ == "__main__":
    main()
