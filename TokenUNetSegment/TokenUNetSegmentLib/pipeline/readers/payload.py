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


def verify_payloads(payloads: list[Payload], name: str) -> None:
    """Raise :class:`InputError` when a payload's file is missing, short, or its compressed data is broken."""
    for payload in payloads:
        if not payload.path.is_file():
            raise InputError(
                f"{name} names a data file that is missing: {payload.path.name}",
                "keep the header and its data file together in one folder",
            )
        available, complete = _available_bytes(payload, name)
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
        if payload.floats:
            bad = count_non_finite(payload)
            if bad:
                raise InputError(
                    f"{name} has {bad} NaN or infinite voxels",
                    "replace them (e.g. by the background value) before segmenting",
                )


def _available_bytes(payload: Payload, name: str) -> tuple[int, bool]:
    """(decoded bytes present at the payload's place, whether a compressed stream is complete); streams are
    decoded up to ``size + SLACK`` bytes."""
    file_size = payload.path.stat().st_size
    if payload.encoding == "raw":
        return (file_size if payload.offset < 0 else max(0, file_size - payload.offset)), True
    start = max(payload.offset, 0)
    if payload.encoding == "hex":
        return max(0, file_size - start) // 2, True
    if payload.encoding == "text":  # at least one character and one separator per value: a lower bound
        return max(0, file_size - start + 1) // 2 * payload.value_bytes, True
    return decoded_size(payload.path, start, payload.size + SLACK, name)


def decoded_size(path: Path, offset: int, enough: int, name: str) -> tuple[int, bool]:
    """(bytes a gzip or zlib stream (several gzip members allowed) decodes to, counted up to ``enough``;
    whether the stream is whole: it reached its end, or ``enough`` bytes).

    Raises :class:`InputError` when the stream is corrupt (bad data or checksum). Memory stays bounded by
    ``CHUNK`` whatever the compression ratio.
    """
    decoder, total = zlib.decompressobj(47), 0  # 47: a gzip or a zlib header
    try:
        with open(path, "rb") as stream:
            stream.seek(offset)
            data = stream.read(CHUNK)
            while total < enough:
                total += len(decoder.decompress(data, CHUNK))
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


def count_non_finite(payload: Payload) -> int:
    """NaN and infinite values of type ``payload.floats`` in the payload's data (``floats_from`` decoded bytes on);
    memory bounded by ``CHUNK`` (the file is known to be whole)."""
    dtype = np.dtype(payload.floats)
    skip, left, bad, carry = payload.floats_from, payload.size - payload.floats_from, 0, b""
    for data in _decoded_chunks(payload):
        if skip:
            data, skip = data[skip:], max(0, skip - len(data))
        data = carry + data[:left]
        usable = len(data) - len(data) % dtype.itemsize
        values = np.frombuffer(data, dtype, usable // dtype.itemsize)
        bad += int(values.size - np.count_nonzero(np.isfinite(values)))
        left -= usable
        carry = data[usable:]
        if left <= 0:
            break
    return bad


def _decoded_chunks(payload: Payload):
    """The payload's decoded bytes, at most ``CHUNK`` at a time (gzip or zlib streams, several members allowed)."""
    with open(payload.path, "rb") as stream:
        stream.seek(max(payload.offset, 0))
        if payload.encoding != "gzip":
            yield from iter(lambda: stream.read(CHUNK), b"")
            return
        decoder = zlib.decompressobj(47)
        data = stream.read(CHUNK)
        while data:
            yield decoder.decompress(data, CHUNK)
            if decoder.eof:
                data = decoder.unused_data + stream.read(CHUNK)
                if not data.startswith(GZIP_MAGIC):
                    return
                decoder = zlib.decompressobj(47)
            else:
                data = decoder.unconsumed_tail or stream.read(CHUNK)
