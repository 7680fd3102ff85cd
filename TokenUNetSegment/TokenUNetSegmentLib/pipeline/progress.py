"""Progress reporting (stage name, overall fraction, monotonic) and cooperative cancel."""

from __future__ import annotations

from collections.abc import Callable

from .errors import CancelledError

ProgressCallback = Callable[[str, float], None]

# share of the whole run given to each stage (sums to 1)
STAGES = {"load": 0.04, "preprocess": 0.08, "inference": 0.76, "postprocess": 0.06, "map back": 0.06}
# parts of a stage reported under their own name: (stage, start, end) as fractions of that stage
SUBSTAGES = {"download": ("load", 0.0, 0.9)}


def cancel_requested(cancel) -> bool:
    """Whether ``cancel`` (None, an object with ``is_set()`` such as ``threading.Event``, or a callable) is set."""
    if cancel is None:
        return False
    return bool(cancel.is_set() if hasattr(cancel, "is_set") else cancel())


class Progress:
    """Turns per-stage fractions into a monotonic overall fraction and checks the cancel flag.

    Args:
        callback: called as ``callback(stage, fraction)`` with fraction in [0, 1], never decreasing.
        cancel: an object with ``is_set()`` (e.g. ``threading.Event``) or a callable returning True to cancel.
    """

    def __init__(self, callback: ProgressCallback | None = None, cancel=None):
        self.callback = callback
        self.cancel = cancel
        self.fraction = 0.0

    def cancelled(self) -> bool:
        return cancel_requested(self.cancel)

    def check(self) -> None:
        """Raise :class:`CancelledError` if cancel was requested."""
        if self.cancelled():
            raise CancelledError("segmentation cancelled")

    def update(self, stage: str, stage_fraction: float = 0.0) -> None:
        """Report ``stage_fraction`` (0..1) of ``stage`` (or of a sub-stage such as ``download``); checks cancel."""
        self.check()
        parent, low, high = SUBSTAGES.get(stage, (stage, 0.0, 1.0))
        start = 0.0
        for name, share in STAGES.items():
            if name == parent:
                break
            start += share
        within = low + (high - low) * min(max(stage_fraction, 0.0), 1.0)
        value = min(1.0, start + STAGES.get(parent, 0.0) * within)
        self.fraction = max(self.fraction, value)
        if self.callback is not None:
            self.callback(stage, self.fraction)

    def done(self) -> None:
        self.fraction = 1.0
        if self.callback is not None:
            self.callback("done", 1.0)


class PassProgress:
    """One of ``count`` equal passes over a stage, reported to ``progress`` as its share of that stage (the
    network's passes of test-time augmentation each report 0..1 of ``inference``)."""

    def __init__(self, progress: Progress, index: int, count: int):
        self.progress, self.index, self.count = progress, index, count

    def check(self) -> None:
        self.progress.check()

    def update(self, stage: str, stage_fraction: float = 0.0) -> None:
        within = min(max(stage_fraction, 0.0), 1.0)
        self.progress.update(stage, (self.index + within) / self.count)
