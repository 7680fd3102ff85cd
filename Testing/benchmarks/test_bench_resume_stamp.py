"""The resume-stamp benchmark (slow): a small real run prints both figures."""

from pathlib import Path

import pytest
from helpers.processes import run_benchmark

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_a_small_run_measures_the_stamp_and_the_hash(tmp_path):
    stdout, result = run_benchmark(
        HERE / "bench_resume_stamp.py", ["--slices", "20", "--size", "64", "--repeats", "2"], tmp_path / "figures.json"
    )
    assert "20 slices of 64 x 64" in stdout and "ratio hash / stamp" in stdout
    assert result["stamp_ms"] > 0 and result["hash_ms"] > 0
