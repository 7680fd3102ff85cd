"""The model benchmark: ratios per input size, table notes, and (slow) a real end-to-end run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent / "bench_models.py"
sys.path.insert(0, str(BENCH.parent))
import bench_models  # noqa: E402


def row(name, size, params, peak, ms, feature_size=None):
    return {
        "name": name,
        "input_size": size,
        "params": params,
        "peak_mb": peak,
        "median_ms": ms,
        "median_cpu_ms": 2 * ms,
        "feature_size": feature_size,
    }


def test_ratios_use_the_baseline_of_the_same_input_size():
    rows = [
        row("32AttnLong", 128, 25, 10, 5),
        row("MetaUNETR-global_filter", 96, 50, 20, 30),
        row("SwinUNETR", 128, 100, 100, 100),
        row("SwinUNETR", 96, 100, 40, 60),
    ]
    lines = bench_models.table(rows, "cpu").splitlines()
    assert lines[2].split()[-4:] == ["25.0", "10.0", "5.0", "5.0"]
    assert lines[3].split()[-4:] == ["50.0", "50.0", "50.0", "50.0"]
    assert any("ratios to SwinUNETR at 96^3" in line for line in lines)


@pytest.mark.slow
def test_benchmark_runs_end_to_end_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--size", "64", "--models", "8Token", "--warmup", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["device"] == "cpu" and [m["name"] for m in data["models"]] == ["8Token", "SwinUNETR"]
    assert all(m["params"] > 0 and m["peak_mb"] > 0 and m["median_ms"] > 0 for m in data["models"])
    assert all(m["median_cpu_ms"] > 0 for m in data["models"])
    assert "SwinUNETR" in result.stdout and "time %" in result.stdout
