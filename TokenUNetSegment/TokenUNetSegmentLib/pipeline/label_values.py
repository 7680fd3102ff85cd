"""What a label map may hold: whole values from 0 to 65535. A probability map, a label map resampled linearly or
background stored as -1 is refused rather than rounded, clipped or wrapped (``evaluate``, ``robustness``,
``train``)."""

from __future__ import annotations

import numpy as np

from .errors import InputError

LARGEST_LABEL = 65535


def check_label_values(values: np.ndarray, where: str) -> None:
    """Refuse label values that are no labels; ``where`` names the map in the message (e.g. "ref.nii.gz").

    Raises:
        InputError: values that are not whole numbers (or not finite), negative, or above 65535.
    """
    values = np.asarray(values)
    if not values.size:
        return
    if not np.issubdtype(values.dtype, np.integer):
        example = _first_fraction(values)
        if example is not None:
            raise InputError(
                f"{where} holds values that are not whole numbers (e.g. {float(example):g}; a probability map, "
                "or linear interpolation?)",
                "resample label maps with nearest neighbour; threshold soft masks at 0.5",
            )
    low, high = values.min(), values.max()
    if low < 0:
        raise InputError(
            f"{where} holds negative values (down to {float(low):g})",
            "store background as 0 and structures as 1, 2, ...",
        )
    if high > LARGEST_LABEL:
        raise InputError(f"{where} holds values above {LARGEST_LABEL} ({float(high):g})", "use values 1 to 65535")


def _first_fraction(values: np.ndarray, chunk: int = 1 << 22) -> float | None:
    """The first value that is not a whole number (or not finite), or None; in chunks, so that a float label map
    needs no temporary arrays of its own size."""
    flat = values.reshape(-1)
    for start in range(0, flat.size, chunk):
        part = flat[start : start + chunk]
        bad = ~np.isfinite(part) | (np.abs(part - np.rint(part)) > 1e-3)
        if bad.any():
            return float(part[bad][0])
    return None
