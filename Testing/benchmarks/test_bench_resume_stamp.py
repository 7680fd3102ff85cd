"""The resume-stamp benchmark (slow): a small real run prints both figures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_a_small_run_measures_the_stamp_and_the_hash(tmp_path):
    figures = tmp_path / "figures.json"
    options = ["--slices", "20", "--size", "64", "--repeats", "2", "--json", str(figures)]
    done = subprocess.run(
        [sys.executable, str(HERE / "bench_resume_stamp.py"), *options], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "20 slices of 64 x 64" in done.stdout and "ratio hash / stamp" in done.stdout
    result = json.loads(figures.read_text())
    assert result["stamp_ms"] > 0 and result["hash_ms"] > 0
