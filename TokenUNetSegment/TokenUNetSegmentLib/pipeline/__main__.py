"""``python -m TokenUNetSegmentLib.pipeline``: the command line (see :mod:`.cli`)."""

try:
    from .cli import run_as_process
except KeyboardInterrupt:  # Ctrl-C in the first milliseconds: cancelled, without a traceback
    raise SystemExit(130) from None

run_as_process()
