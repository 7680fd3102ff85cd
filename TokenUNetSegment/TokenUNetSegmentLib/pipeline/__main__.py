"""``python -m TokenUNetSegmentLib.pipeline``: the command line (see :mod:`.cli`)."""

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C in the first milliseconds: cancelled, without a traceback
    raise SystemExit(130) from None

raise SystemExit(main())
