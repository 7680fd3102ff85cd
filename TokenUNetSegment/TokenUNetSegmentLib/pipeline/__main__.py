"""``python -m TokenUNetSegmentLib.pipeline``: the command line (see :mod:`.cli`)."""

from .cli import main

raise SystemExit(main())
