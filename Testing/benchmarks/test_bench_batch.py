"""The batch benchmark (slow): a small real run of both ways, its figures and the labels' equality."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_a_small_run_compares_batch_with_a_loop_of_segment(tmp_path):
    figures = tmp_path / "figures.json"
    options = ["--cases", "2", "--shape", "64", "64", "20", "--repeats", "2", "--json", str(figures)]
    done = subprocess.run(
        [sys.executable, str(HERE / "bench_batch.py"), *options], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "labels identical: yes" in done.stdout and "2 DICOM cases 64x64x20" in done.stdout
    result = json.loads(figures.read_text())
    assert len(result["loop_s"]) == len(result["batch_s"]) == len(result["ratio_per_repeat"]) == 2
    assert len(result["batch_case_s"]) == 2 and all(seconds > 0 for seconds in result["batch_case_s"])
