"""SimpleITK calls made quiet: ITK warnings off while reading (the reader reports what matters itself), and
ITK's multi-line exception text cut to its one telling line."""

from __future__ import annotations

import re

import SimpleITK as sitk

from ..process_settings import SharedSetting

_warning_display = SharedSetting(sitk.ProcessObject.GetGlobalWarningDisplay, sitk.ProcessObject.SetGlobalWarningDisplay)


def quiet_itk():
    """ITK's global warning display off for the block (put back after the last of overlapping blocks; nested and
    thread-safe)."""
    return _warning_display.hold(False)


def itk_error_text(error: BaseException, limit: int = 100) -> str:
    """The last non-empty line of an ITK exception without its source location, at most ``limit`` characters."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[-1] if lines else type(error).__name__
    for prefix in ("sitk::ERROR:", "ITK ERROR:", "Reason:"):
        if prefix in text:
            text = text.split(prefix, 1)[1].strip()
    text = re.sub(r"^\w+\(0x[0-9a-fA-F]+\):\s*", "", text)  # the ITK object's class and address
    return text[:limit]


def pixel_bytes(pixel_id: int) -> int:
    """Bytes of one component of a SimpleITK pixel type."""
    return sitk.GetArrayViewFromImage(sitk.Image([1, 1], pixel_id)).itemsize
