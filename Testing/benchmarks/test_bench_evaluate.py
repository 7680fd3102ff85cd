"""The evaluate benchmark (slow): a small run against this checkout's own commit prints every case and agrees."""

from pathlib import Path

import pytest
from helpers.processes import run_benchmark

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_a_small_run_measures_every_case_and_the_values_agree(tmp_path):
    stdout, result = run_benchmark(
        HERE / "bench_evaluate.py", ["--baseline", "HEAD", "--size", "0.2", "--repeats", "1"], tmp_path / "figures.json"
    )
    assert "time ratio baseline / now" in stdout and "DIFFER" not in stdout, stdout
    assert set(result) == {"dice", "evaluate", "hd95 far", "hd95 balls", "hd95 mid"}
    assert all(case["equal"] and case["now"]["seconds"] > 0 for case in result.values())
