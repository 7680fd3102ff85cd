"""Benchmark of what ``batch --resume`` pays to tell an unchanged input from a replaced one, on a DICOM series.

``result_key.input_stamp`` (``stat`` of every file: size, modification and change time, inode) against reading and
hashing every file with SHA-256, the alternative that would also catch a replaced file whose size and times were
all kept. Both run in this process on the same folder, alternately, the files in memory after a first read (a cold
disk or a network share adds its read time to the hash only). Printed: each one's median milliseconds and the ratio.

    .venv/bin/python Testing/benchmarks/bench_resume_stamp.py                 # 300 slices of 512 x 512
    .venv/bin/python Testing/benchmarks/bench_resume_stamp.py --slices 30 --size 128 --repeats 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent / "TokenUNetSegment"))


def content_hash(folder: Path) -> str:
    """SHA-256 over every file's bytes, in name order (what a content stamp would cost)."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        with open(folder / name, "rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def median_ms(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512, help="rows and columns of each slice")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the figures to this file")
    options = parser.parse_args()

    import numpy as np
    from helpers.readers import write_dicom_series
    from TokenUNetSegmentLib.pipeline.result_key import input_stamp

    with tempfile.TemporaryDirectory(prefix="bench-stamp-") as scratch:
        series = Path(scratch) / "series"
        values = np.random.default_rng(0).integers(-1000, 1000, (options.slices, options.size, options.size))
        write_dicom_series(series, values.astype(np.int16))
        megabytes = sum(p.stat().st_size for p in series.iterdir()) / 2**20
        content_hash(series)  # the files in memory for both
        stamp = median_ms(lambda: input_stamp(series), options.repeats)
        hashed = median_ms(lambda: content_hash(series), options.repeats)
    shape = f"{options.slices} slices of {options.size} x {options.size}"
    print(f"{shape} ({megabytes:.0f} MB), median of {options.repeats}")
    print(f"stat stamp (size, times, inode): {stamp:.1f} ms")
    print(f"SHA-256 of the files:            {hashed:.1f} ms")
    print(f"ratio hash / stamp: {hashed / stamp:.0f}")
    if options.json:
        figures = {"slices": options.slices, "megabytes": megabytes, "stamp_ms": stamp, "hash_ms": hashed}
        Path(options.json).write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
