"""The user's path, timed from the outside: the command line on DICOM series, as a user runs it.

``bench_pipeline.py --cli`` writes synthetic CT DICOM series (512 x 512 x 300 at 0.8 x 0.8 x 1.5 mm, and a
20-slice slab of it) and runs ``python -m TokenUNetSegmentLib.pipeline segment SERIES --out FOLDER`` in a
fresh process with the command's defaults (token maps, overview, report; ``--progress json`` only adds the
progress lines Slicer's runs read; ``--device`` is bench_pipeline's: cpu unless it names another), with the
bundled default model and with a random-weight 32AttnLong package at 1.5 mm that it writes. Per run it prints:

- wall: from starting the process to its exit (interpreter start-up and imports included);
- first line: when the first progress line arrived; to net: when the ``inference`` stage began (the first window);
- read: reading the DICOM series with the pipeline's reader in a separate process;
- start-up: until the first progress line, less the read when that line comes after it (commands whose first
  line is the ``start`` stage print it before reading anything: there start-up = first line);
- load, preprocess, inference, postprocess, map back: ``segment()``'s stages from report.json;
- write: the output files (the command's reported total minus ``segment()``'s);
- other: the rest of the wall time (importing torch and loading the model when the first line comes before them,
  and the interpreter's exit after the files are written);
- cores: the CPU time of all the command's threads over its wall time (about 1 when the network ran one thread);
- the peak resident memory of the process, the output folder's size and file count, and the time (outside) and
  share of the wall time spent outside the network (everything but ``inference``).

``--repeats N`` runs every case N times, alternating which version goes first, and prints each figure's median
(this machine's runs vary by seconds, and a run just after another is slower or faster for it).

It also times ``--help`` and ``models list`` (median of 3 each). With ``--baseline-dir`` every command also runs
with another checkout's code, just before this one's (same load on the machine: compare within a run).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parents[2] / "TokenUNetSegment"
CLI = [sys.executable, "-m", "TokenUNetSegmentLib.pipeline"]
CT_SHAPE = (512, 512, 300)
SLAB_SLICES = 20
SPACING = (0.8, 0.8, 1.5)
STAGES = ("load", "preprocess", "inference", "postprocess", "map back")


def environment(module_dir: Path = MODULE_DIR) -> dict:
    """The child's environment: ``module_dir`` (a TokenUNetSegment folder) importable, as inside Slicer."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": str(module_dir) + (os.pathsep + path if path else "")}


def write_dicom_series(folder: Path, array, affine, series_uid: str) -> Path:
    """One CT DICOM file per k-slice of an int16 (i, j, k) array with its IJK->RAS affine."""
    import numpy as np
    import SimpleITK as sitk
    from TokenUNetSegmentLib.pipeline.geometry import image_from_array

    folder.mkdir(parents=True, exist_ok=True)
    volume = image_from_array(np.asarray(array, np.int16), affine)
    direction, spacing = volume.GetDirection(), volume.GetSpacing()
    orientation = (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7])
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume.GetDepth()):
        image = volume[:, :, k]
        tags = {
            "0008|0060": "CT",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
            "0008|0018": f"{series_uid}.3.{k + 1}",
            "0020|000d": f"{series_uid}.1",
            "0020|000e": f"{series_uid}.2",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in volume.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0037": "\\".join(f"{v:.6f}" for v in orientation),
            "0028|0030": f"{spacing[1]:.6f}\\{spacing[0]:.6f}",
            "0018|0050": f"{spacing[2]:.6f}",
        }
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:04d}.dcm"))
        writer.Execute(image)
    return folder


def write_inputs(scratch: Path, synthetic_ct, scale: float = 1.0) -> dict[str, Path]:
    """The full CT (each side times ``scale``, same spacing) and a 20-slice slab from its middle, as DICOM
    series folders."""
    import numpy as np
    from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing

    affine = affine_from_spacing(SPACING, origin=(200.0, 180.0, -200.0), direction=np.diag([-1.0, -1.0, 1.0]))
    shape = tuple(max(SLAB_SLICES, round(side * scale)) for side in CT_SHAPE)
    volume = synthetic_ct(shape, SPACING)
    start = (shape[2] - SLAB_SLICES) // 2
    slab_affine = affine.copy()
    slab_affine[:3, 3] = affine[:3, :3] @ np.array([0.0, 0.0, start]) + affine[:3, 3]
    uid = "1.2.826.0.1.3680043.2.1125.9"
    return {
        "CT {}x{}x{}".format(*shape): write_dicom_series(scratch / "ct", volume, affine, uid + ".1"),
        f"slab {shape[0]}x{shape[1]}x{SLAB_SLICES}": write_dicom_series(
            scratch / "slab", volume[:, :, start : start + SLAB_SLICES], slab_affine, uid + ".2"
        ),
    }


def write_random_package(scratch: Path, network: str, config: dict) -> Path:
    """A package of ``network`` with random weights (time and memory only)."""
    import torch
    from TokenUNetSegmentLib.model import build_network
    from TokenUNetSegmentLib.pipeline import make_metadata, write_package

    torch.manual_seed(0)
    net = build_network(network, 1, config["architecture"]["out_channels"])
    metadata = make_metadata(config, description="benchmark, random weights", authors="-", copyright="-")
    return write_package(scratch / f"bench-{network}", net, metadata, license_text="-", readme_text="-")


def read_seconds(series: Path) -> float:
    """Seconds to read ``series`` with the pipeline's reader, in a fresh process (imports not counted)."""
    script = (
        "import time\nfrom TokenUNetSegmentLib.pipeline.volumes import read_volume\n"
        f"t = time.perf_counter(); read_volume({str(series)!r}); print(time.perf_counter() - t)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment(), check=True)
    return float(done.stdout.split()[-1])


def run_command(arguments: list[str], cwd: Path, module_dir: Path = MODULE_DIR) -> dict:
    """Run the command line of ``module_dir``; returns wall seconds, peak RSS (GiB), first progress line (s),
    stdout."""
    started = time.perf_counter()
    process = subprocess.Popen(
        CLI + arguments,
        cwd=cwd,
        env=environment(module_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first_line, network_at, err_lines = [], [], []

    def watch_stderr():
        for line in process.stderr:
            if not first_line and '"stage"' in line:
                first_line.append(time.perf_counter() - started)
                first_line.append(json.loads(line).get("stage"))
            if not network_at and '"stage": "inference"' in line:
                network_at.append(time.perf_counter() - started)
            err_lines.append(line)

    watcher = threading.Thread(target=watch_stderr, daemon=True)
    watcher.start()
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    watcher.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{' '.join(arguments)} failed ({process.returncode}):\n{''.join(err_lines)[-3000:]}")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,  # all the command's threads
        "peak_rss_gib": usage.ru_maxrss / 2**20,  # KiB on Linux
        "first_line": first_line[0] if first_line else None,
        "first_stage": first_line[1] if first_line else None,
        "network_at": network_at[0] if network_at else None,
        "stdout": out,
    }


def folder_size(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def reported_seconds(stdout: str) -> float:
    """The seconds the command reports for segmenting and writing: its ``wrote ... (…, 12.3 s)`` line (other lines,
    such as the labels' table, may follow it)."""
    line = next(line for line in stdout.splitlines() if line.startswith("wrote "))
    return float(line.rsplit("(", 1)[1].split(" s)")[0].split(", ")[-1])


def segment_run(
    series: Path, read: float, model: Path | None, out: Path, module_dir: Path = MODULE_DIR, device: str = "cpu"
) -> dict:
    """One user run of ``segment`` with its defaults on ``device``; the figures of the module docstring."""
    arguments = ["segment", str(series), "--out", str(out), "--progress", "json", "--device", device]
    arguments += ["--model", str(model)] if model else []
    done = run_command(arguments, out.parent, module_dir)
    report = json.loads((out / "report.json").read_text())
    stages = {name: float(report["timings_s"][name]) for name in STAGES}
    reported = reported_seconds(done["stdout"])
    size, count = folder_size(out)
    first = done["first_line"] or 0.0
    read_before_first_line = read if done["first_stage"] != "start" else 0.0
    return {
        "wall_s": round(done["wall"], 2),
        "first_line_s": round(done["first_line"], 2) if done["first_line"] is not None else None,
        "start-up_s": round(first - read_before_first_line, 2) if done["first_line"] is not None else None,
        "read_s": round(read, 2),
        **{f"{name}_s": round(value, 2) for name, value in stages.items()},
        "write_s": round(reported - float(report["timings_s"]["total"]), 2),
        # whatever the stages above do not cover: torch's import and the model's loading after a "start" line,
        # the interpreter's exit after the files are written
        "other_s": round(done["wall"] - first - (read - read_before_first_line) - reported, 2),
        "to_network_s": round(done["network_at"], 2) if done["network_at"] is not None else None,
        "outside_s": round(done["wall"] - stages["inference"], 2),
        "non_network_share": round(1 - stages["inference"] / done["wall"], 3),
        "cpu_s": round(done["cpu"], 2),  # over wall: the cores the run kept busy on average
        "peak_rss_gib": round(done["peak_rss_gib"], 2),
        "output_mb": round(size / 2**20, 1),
        "output_files": count,
        "attention_grid": report.get("attention_grid"),
    }


def command_seconds(arguments: list[str], cwd: Path, module_dir: Path = MODULE_DIR, repeats: int = 3) -> float:
    return statistics.median(run_command(arguments, cwd, module_dir)["wall"] for _ in range(repeats))


def main(args, synthetic_ct, config) -> dict:
    """Write the inputs and packages, run every case, print the table; returns the JSON summary.

    With ``args.baseline_dir`` (another checkout's TokenUNetSegment folder) every command runs with that code
    first and then with this one, so that both see the same load on the machine.
    """
    import tempfile

    sys.path.insert(0, str(MODULE_DIR))
    versions = {"this": MODULE_DIR}
    if args.baseline_dir:
        versions = {"baseline": Path(args.baseline_dir).resolve(), **versions}
    summary = {
        "machine": {"cpus": os.cpu_count(), "device": args.device},
        "versions": {k: str(v) for k, v in versions.items()},
    }
    summary.update(commands=[], runs=[])
    with tempfile.TemporaryDirectory(prefix="tokenunet-bench-") as scratch_name:
        scratch = Path(scratch_name)
        clock = time.perf_counter()
        inputs = write_inputs(scratch, synthetic_ct, args.scale)
        print(f"DICOM series written in {time.perf_counter() - clock:.1f} s", flush=True)
        models = {"bundled (default)": None}
        if args.network:
            cfg = config(args.network, args.model_spacing, args.roi)
            models[f"{args.network} {args.model_spacing:g} mm"] = write_random_package(scratch, args.network, cfg)
        for version, module_dir in versions.items():
            row = {
                "version": version,
                "--help_s": round(command_seconds(["--help"], scratch, module_dir), 2),
                "models list_s": round(command_seconds(["models", "list"], scratch, module_dir), 2),
            }
            summary["commands"].append(row)
            print(json.dumps(row), flush=True)
        repeats = getattr(args, "repeats", 1)
        for case, series in inputs.items():
            read = read_seconds(series)
            for model_name, model in models.items():
                for repeat in range(repeats):
                    for version, module_dir in run_order(versions, repeat):
                        out = scratch / f"out-{len(summary['runs'])}"
                        row = {"case": case, "model": model_name, "version": version, "repeat": repeat}
                        row.update(segment_run(series, read, model, out, module_dir, args.device))
                        shutil.rmtree(out)
                        summary["runs"].append(row)
                        print(json.dumps(row), flush=True)
    summary["medians"] = medians(summary["runs"]) if repeats > 1 else []
    print(table(summary["medians"] or summary["runs"], summary["commands"]))
    return summary


def run_order(versions: dict, repeat: int) -> list:
    """The versions in the order of ``repeat``: as given on even repeats, reversed on odd ones (the run just after
    another's ran on a machine the first one left warm or fragmented; alternating cancels that out)."""
    items = list(versions.items())
    return items if repeat % 2 == 0 else items[::-1]


def medians(rows: list[dict]) -> list[dict]:
    """One row per case, model and version: the median of every figure over its repeats (``runs``: how many)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["case"], row["model"], row["version"]), []).append(row)
    out = []
    for (case, model, version), group in groups.items():
        row = {"case": case, "model": model, "version": version, "runs": len(group)}
        for key in group[0]:
            if key.endswith("_s") or key in ("non_network_share", "peak_rss_gib", "output_mb", "output_files"):
                values = [r[key] for r in group if r[key] is not None]
                if not values:
                    row[key] = None
                else:  # a file count stays a whole number
                    row[key] = (statistics.median_low if key == "output_files" else statistics.median)(values)
        out.append(row)
    return out


def table(rows: list[dict], commands: list[dict]) -> str:
    lines = [
        f"{row['version']}: --help {row['--help_s']:.2f} s, models list {row['models list_s']:.2f} s"
        for row in commands
    ]
    columns = ["wall", "start-up", "read", *STAGES, "write", "other"]
    lines += [
        f"{'case':<22}{'model':<20}{'version':<10}"
        + "".join(f"{c:>12}" for c in columns)
        + f"{'1st line':>10}{'to net':>8}{'outside':>9}{'outside %':>11}{'cores':>7}{'peak GiB':>10}{'out MB':>9}"
        + f"{'files':>7}"
    ]
    for row in rows:
        values = "".join(f"{row[c + '_s'] if row[c + '_s'] is not None else float('nan'):>12.2f}" for c in columns)
        lines.append(
            f"{row['case']:<22}{row['model']:<20}{row['version']:<10}{values}"
            f"{row['first_line_s'] or float('nan'):>10.2f}"
            f"{row.get('to_network_s') or float('nan'):>8.2f}{row.get('outside_s', float('nan')):>9.2f}"
            f"{100 * row['non_network_share']:>11.1f}{row.get('cpu_s', float('nan')) / row['wall_s']:>7.2f}"
            f"{row['peak_rss_gib']:>10.2f}{row['output_mb']:>9.1f}"
            f"{row['output_files']:>7}"
        )
    return "\n".join(lines)
