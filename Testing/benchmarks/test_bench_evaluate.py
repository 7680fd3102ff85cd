"""The evaluate benchmark (slow): a small run against this checkout's own commit prints every case and agrees."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_a_small_run_measures_every_case_and_the_values_agree(tmp_path):
    figures = tmp_path / "figures.json"
    options = ["--baseline", "HEAD", "--size", "0.2", "--repeats", "1", "--json", str(figures)]
    done = subprocess.run(
        [sys.executable, str(HERE / "bench_evaluate.py"), *options], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "time ratio baseline / now" in done.stdout and "DIFFER" not in done.stdout, done.stdout
    result = json.loads(figures.read_text())
    assert set(result) == {"dice", "evaluate", "hd95 far", "hd95 balls", "hd95 mid"}
    assert all(case["equal"] and case["now"]["seconds"] > 0 for case in result.values())
