"""``python -m TokenUNetSegmentLib.pipeline``: the command line (see :mod:`.cli`)."""

import signal

signal.signal(signal.SIGTERM, signal.default_int_handler)  # a stop while the command line loads: a cancel, as Ctrl-C

try:
    from .cli import run_as_process
except KeyboardInterrupt:  # Ctrl-C or SIGTERM in the first milliseconds: cancelled, without a traceback
    raise SystemExit(130) from None

run_as_process()
