"""The stderr forwarding benchmark (slow): a small real run and its figures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_a_small_run_times_segment_with_and_without_the_forwarding(tmp_path):
    figures = tmp_path / "figures.json"
    options = ["--repeats", "1", "--events", "50", "--json", str(figures)]
    done = subprocess.run(
        [sys.executable, str(HERE / "bench_stderr_events.py"), *options], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "50 progress events:" in done.stdout and "segment on the sample" in done.stdout
    result = json.loads(figures.read_text())
    assert all(len(result[key]) == 1 and result[key][0] > 0 for key in ("events_on_ms", "segment_on_s"))
