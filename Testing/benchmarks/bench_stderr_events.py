"""Benchmark of ``--progress json``'s stderr forwarding (:mod:`.pipeline.stderr_events`): what it costs a run.

Two figures, each against a baseline measured in the same run:

- the forwarding's own start and end (fork, the end mark, the forwarding process's exit), in a process that has
  imported what ``segment`` has when the forwarding starts, with N progress events between them, against the same
  events written without forwarding;
- ``segment`` on the bundled sample CT with ``--progress json --device cpu --no-overview``, each in a fresh process,
  with the forwarding and without it (its start patched to decline), alternating which runs first; medians.

    .venv/bin/python Testing/benchmarks/bench_stderr_events.py                 # 5 repeats
    .venv/bin/python Testing/benchmarks/bench_stderr_events.py --repeats 1 --json figures.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULE_DIR = HERE.parents[1] / "TokenUNetSegment"
SAMPLE = MODULE_DIR / "Resources" / "Samples" / "AbdomenCT.nii.gz"

EVENTS_RUN = """
import os, sys, time
from TokenUNetSegmentLib.pipeline import segment_command  # what segment has imported when forwarding starts
from TokenUNetSegmentLib.pipeline.cli import ProgressPrinter
from TokenUNetSegmentLib.pipeline.stderr_events import StderrEvents

forward, events = sys.argv[1] == "on", int(sys.argv[2])
started = time.perf_counter()
forwarding = StderrEvents()
if forward:
    assert forwarding.start(), "the forwarding did not start"
printer = ProgressPrinter("json")
for index in range(events):
    printer("inference", index / max(events, 1))
forwarding.close()
print(time.perf_counter() - started)
"""

SEGMENT_RUN = """
import sys
from TokenUNetSegmentLib.pipeline import cli, stderr_events
if sys.argv[1] == "off":
    stderr_events.StderrEvents.start = lambda self: False
sys.argv = ["tokenunet", *sys.argv[2:]]
sys.exit(cli.main())
"""


def python(code: str, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *arguments], cwd=MODULE_DIR, capture_output=True, text=True, timeout=600
    )


def events_seconds(forward: bool, events: int) -> float:
    done = python(EVENTS_RUN, "on" if forward else "off", str(events))
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(done.stderr.splitlines()) == events
    return float(done.stdout)


def segment_seconds(forward: bool, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    options = ["--out", str(out), "--progress", "json", "--device", "cpu", "--no-overview"]
    started = time.perf_counter()
    done = python(SEGMENT_RUN, "on" if forward else "off", "segment", str(SAMPLE), *options)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-2000:]
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--events", type=int, default=200, help="progress events of the first figure")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    figures: dict[str, list[float]] = {"events_off_ms": [], "events_on_ms": [], "segment_off_s": [], "segment_on_s": []}
    with tempfile.TemporaryDirectory(prefix="bench-stderr-") as folder:
        for repeat in range(args.repeats):
            order = (False, True) if repeat % 2 == 0 else (True, False)
            for forward in order:
                key = "on" if forward else "off"
                figures[f"events_{key}_ms"].append(1000 * events_seconds(forward, args.events))
                figures[f"segment_{key}_s"].append(segment_seconds(forward, Path(folder) / key))
    median = {key: statistics.median(values) for key, values in figures.items()}
    print(
        f"{args.events} progress events: {median['events_off_ms']:.2f} ms written directly, "
        f"{median['events_on_ms']:.2f} ms forwarded (start and end included): "
        f"+{median['events_on_ms'] - median['events_off_ms']:.2f} ms"
    )
    print(
        f"segment on the sample (median of {args.repeats}): {median['segment_off_s']:.3f} s without forwarding, "
        f"{median['segment_on_s']:.3f} s with it: ratio {median['segment_on_s'] / median['segment_off_s']:.3f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({**figures, "median": median}, indent=1))


if __name__ == "__main__":
    main()
