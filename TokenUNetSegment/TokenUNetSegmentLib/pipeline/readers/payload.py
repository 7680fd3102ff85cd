"""Is the voxel data all there? Checked before the image reader runs, in bounded memory.

A raw payload must be as long as its header says; a compressed one must decompress, without error and
with an intact checksum, to at least that many bytes. SimpleITK fills a short NIfTI file with zeros
without a word, and allocates the whole declared volume before it notices a short compressed stream.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..memory import format_size
from .header import Payload

CHUNK = 1 << 20
SLACK = 1 << 16
"""Decoded bytes read past what is needed, so that a stream's end and its checksum are usually reached."""
GZIP_MAGIC = b"\x1f\x8b"


def non_finite_voxels(name: str, count: int, purpose: str = "segmenting") -> InputError:
    """The error for a volume ``name`` with ``count`` NaN or infinite voxels, read for ``purpose`` (the hint's
    last word: "segmenting", "evaluating")."""
    return InputError(
        f"{name} has {count} NaN or infinite voxels", f"replace them (e.g. by the background value) before {purpose}"
    )


def verify_payloads(payloads: list[Payload], name: str, purpose: str = "segmenting") -> None:
    """Raise :class:`InputError` when a payload's file is missing, short, or its compressed data is broken, or holds
    NaN or infinite floats (the hint says to replace them before ``purpose``)."""
    for payload in payloads:
        if not payload.path.is_file():
            raise InputError(
                f"{name} names a data file that is missing: {payload.path.name}",
                "keep the header and its data file together in one folder",
            )
        counter = NonFiniteCounter(payload.floats, payload.floats_from, payload.size) if payload.floats else None
        available, complete = _available_bytes(payload, name, counter)
        where = name if payload.path.name == name else f"{name} (data file {payload.path.name})"
        if available < payload.size:
            percent = 100.0 * available / payload.size
            raise InputError(
                f"{where} is truncated: {format_size(available)} of the {format_size(payload.size)} of data "
                f"its header declares ({percent:.0f}%)",
                "the file is incomplete: copy or export it again",
            )
        if not complete:
            raise InputError(
                f"{where} is truncated: its compressed data ends before the end of its stream",
                "the file is incomplete: copy or export it again",
            )
        if counter is not None:
            if payload.encoding == "raw":
                _feed_file(payload, counter)
            if counter.bad:
                raise non_finite_voxels(name, counter.bad, purpose)


class NonFiniteCounter:
    """Counts the NaN and infinite values of a float type (``<f4``) in bytes fed piece by piece, from byte ``start``
    to ``stop`` of what is fed: ITK's NIfTI reader would set them to 0 without a word."""

    def __init__(self, floats: str, start: int, stop: int):
        self.dtype, self.start, self.stop = np.dtype(floats), start, stop
        self.position, self.carry, self.bad = 0, b"", 0

    def feed(self, data: bytes) -> None:
        begin, self.position = self.position, self.position + len(data)
        low, high = max(self.start - begin, 0), min(self.stop - begin, len(data))
        if high <= low:
            return
        data = self.carry + data[low:high]
        usable = len(data) - len(data) % self.dtype.itemsize
        values = np.frombuffer(data, self.dtype, usable // self.dtype.itemsize)
        self.bad += int(values.size - np.count_nonzero(np.isfinite(values)))
        self.carry = data[usable:]


def _feed_file(payload: Payload, counter: NonFiniteCounter) -> None:
    """Feed a raw payload's bytes to ``counter``, ``CHUNK`` at a time."""
    with open(payload.path, "rb") as stream:
        stream.seek(max(payload.offset, 0))
        while counter.position < counter.stop:
            data = stream.read(CHUNK)
            if not data:
                return
            counter.feed(data)


def _available_bytes(payload: Payload, name: str, counter: NonFiniteCounter | None = None) -> tuple[int, bool]:
    """(decoded bytes present at the payload's place, whether a compressed stream is complete); streams are
    decoded up to ``size + SLACK`` bytes (and fed to ``counter`` as they are)."""
    file_size = payload.path.stat().st_size
    if payload.encoding == "raw":
        return (file_size if payload.offset < 0 else max(0, file_size - payload.offset)), True
    start = max(payload.offset, 0)
    if payload.encoding == "hex":
        return max(0, file_size - start) // 2, True
    if payload.encoding == "text":  # at least one character and one separator per value: a lower bound
        return max(0, file_size - start + 1) // 2 * payload.value_bytes, True
    return decoded_size(payload.path, start, payload.size + SLACK, name, counter.feed if counter else None)


def decoded_size(path: Path, offset: int, enough: int, name: str, consume=None) -> tuple[int, bool]:
    """(bytes a gzip or zlib stream (several gzip members allowed) decodes to, counted up to ``enough``;
    whether the stream is whole: it reached its end, or ``enough`` bytes); ``consume(data)`` sees the decoded bytes.

    Raises :class:`InputError` when the stream is corrupt (bad data or checksum). Memory stays bounded by
    ``CHUNK`` whatever the compression ratio.
    """
    decoder, total = zlib.decompressobj(47), 0  # 47: a gzip or a zlib header
    try:
        with open(path, "rb") as stream:
            stream.seek(offset)
            data = stream.read(CHUNK)
            while total < enough:
                decoded = decoder.decompress(data, CHUNK)
                total += len(decoded)
                if consume is not None:
                    consume(decoded)
                if decoder.eof:  # another gzip member may follow (as `cat a.gz b.gz` makes)
                    data = decoder.unused_data + stream.read(CHUNK)
                    if not data.startswith(GZIP_MAGIC):
                        return total, True
                    decoder = zlib.decompressobj(47)
                    continue
                data = decoder.unconsumed_tail or stream.read(CHUNK)
                if not data:
                    return total, False  # the file ends before the stream does
    except (zlib.error, OSError, ValueError) as error:
        raise InputError(
            f"{name} has corrupt compressed data ({str(error).split(': ')[-1].strip()[:50]})",
            "the file is damaged: copy or export it again",
        ) from None
    return total, True
