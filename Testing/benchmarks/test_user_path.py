"""The user's-path benchmark: its table, and (slow) a real run of the command line on small DICOM series."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import user_path  # noqa: E402


def run_row(version: str, wall: float, cpu: float, inference: float) -> dict:
    stages = {f"{name}_s": 0.1 for name in user_path.STAGES} | {"inference_s": inference}
    return {
        "case": "CT 8x8x8",
        "model": "bundled (default)",
        "version": version,
        "wall_s": wall,
        "first_line_s": 0.2,
        "start-up_s": 0.2,
        "read_s": 0.1,
        **stages,
        "write_s": 0.3,
        "other_s": 1.0,
        "non_network_share": round(1 - inference / wall, 3),
        "cpu_s": cpu,
        "peak_rss_gib": 0.5,
        "output_mb": 0.4,
        "output_files": 68,
    }


def test_the_table_shows_the_cores_each_run_kept_busy_and_its_share_outside_the_network():
    commands = [{"version": "this", "--help_s": 0.07, "models list_s": 0.15}]
    lines = user_path.table([run_row("baseline", 20.0, 21.0, 15.0), run_row("this", 10.0, 16.0, 5.0)], commands)
    lines = lines.splitlines()
    assert lines[0] == "this: --help 0.07 s, models list 0.15 s"
    header = lines[1].split()
    assert "cores" in header and "outside" in header
    baseline, this = (line.split() for line in lines[2:])  # ... 1st line, outside %, cores, peak GiB, out MB, files
    assert float(baseline[-4]) == pytest.approx(1.05) and float(this[-4]) == pytest.approx(1.6)
    assert float(baseline[-5]) == pytest.approx(25.0) and float(this[-5]) == pytest.approx(50.0)


@pytest.mark.slow
def test_repeats_alternate_which_version_runs_first_and_the_table_shows_medians():
    versions = {"baseline": Path("b"), "this": Path("t")}
    assert [v for v, _ in user_path.run_order(versions, 0)] == ["baseline", "this"]
    assert [v for v, _ in user_path.run_order(versions, 1)] == ["this", "baseline"]
    rows = [run_row("this", wall, 2 * wall, 10.0) | {"repeat": r} for r, wall in enumerate([14.0, 19.0, 15.0])]
    rows += [run_row("baseline", 20.0, 30.0, 10.0) | {"to_network_s": None, "outside_s": 10.0}]
    rows[0] |= {"to_network_s": 2.0, "outside_s": 4.0}
    rows[1] |= {"to_network_s": 3.0, "outside_s": 9.0}
    rows[2] |= {"to_network_s": 2.5, "outside_s": 5.0}
    medians = user_path.medians(rows)
    this = next(m for m in medians if m["version"] == "this")
    assert this["runs"] == 3 and this["wall_s"] == 15.0 and this["to_network_s"] == 2.5 and this["outside_s"] == 5.0
    assert next(m for m in medians if m["version"] == "baseline")["to_network_s"] is None
    header, line = user_path.table(medians, []).splitlines()[:2]
    assert "to net" in header and f"{2.5:>8.2f}{5.0:>9.2f}" in line  # to the network, outside it


def test_a_small_run_of_the_command_line_reports_every_stage(tmp_path):
    out = tmp_path / "cli.json"
    done = subprocess.run(
        [sys.executable, str(HERE / "bench_pipeline.py"), "--cli", "--scale", "0.1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert len(summary["runs"]) == 4 and all(run["wall_s"] > 0 and run["cpu_s"] > 0 for run in summary["runs"])
    assert "cores" in done.stdout
