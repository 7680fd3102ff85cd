"""Child processes of the tests: the pipeline's command line, and what importing some modules loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .paths import MODULE_DIR


def run_cli(*args, env=None, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """``python -m TokenUNetSegmentLib.pipeline ARGS...`` in a child process (text output captured)."""
    return subprocess.run(
        [sys.executable, "-m", "TokenUNetSegmentLib.pipeline", *map(str, args)],
        cwd=MODULE_DIR,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        **kwargs,
    )


def start_cli(*args) -> subprocess.Popen:
    """``python -m TokenUNetSegmentLib.pipeline ARGS...`` started in a child process (text pipes), not waited for."""
    return subprocess.Popen(
        [sys.executable, "-m", "TokenUNetSegmentLib.pipeline", *map(str, args)],
        cwd=MODULE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_python(code: str, timeout: float = 300) -> str:
    """Run ``code`` in a fresh interpreter (the module folder as working directory); its stdout.

    Fails the test with the child's stderr when it exits with an error.
    """
    done = subprocess.run([sys.executable, "-c", code], cwd=MODULE_DIR, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout


def with_file_size_limit(code: str, limit: int) -> str:
    """``code`` run under a real ``ulimit -f`` of ``limit`` bytes (for :func:`run_python`): a write past it fails with
    EFBIG after what fits was written, as on a disk that fills up mid-write (Python ignores SIGXFSZ)."""
    soft = f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))"
    return f"import resource\n{soft}\n{code}"


def stops_command_code(signal_name: str) -> str:
    """Python code registering a test command ``stops`` that writes into an output folder and raises ``signal_name``
    (``SIGTERM``, ``SIGHUP``) while writing (``--when writing``) or, for an output named ``c``, while the result is
    swapped in: for tests of how the command line turns a stop into a cancel."""
    return (
        "import os, signal, sys\n"
        "sys.stderr = sys.stdout\n"
        "from TokenUNetSegmentLib.pipeline import cli\n"
        "from TokenUNetSegmentLib.pipeline.output_folder import OutputFolder\n"
        "def run(args):\n"
        "    with OutputFolder(args.out, 'test') as folder:\n"
        "        (folder.staging / 'half.txt').write_text('half')\n"
        "        if args.when == 'writing':\n"
        f"            signal.raise_signal(signal.{signal_name})\n"
        "        (folder.staging / 'whole.txt').write_text('whole')\n"
        "        folder.commit()\n"
        "    return 0\n"
        "def arguments(parser):\n"
        "    parser.add_argument('--out')\n"
        "    parser.add_argument('--when')\n"
        "swap = OutputFolder._swap\n"
        "def swap_with_a_stop(self, *a):\n"
        f"    signal.raise_signal(signal.{signal_name}) if self.destination.name == 'c' else None\n"
        "    return swap(self, *a)\n"
        "OutputFolder._swap = swap_with_a_stop\n"
        "cli.register_command('stops', 'test', arguments, run)\n"
    )


def run_benchmark(script: Path, options: list[str], figures: Path) -> tuple[str, dict]:
    """Run a benchmark script with ``options`` and ``--json figures``; its stdout and the figures it wrote (the
    slow tests of the benchmarks: a small real run, checked for a clean exit)."""
    done = subprocess.run(
        [sys.executable, str(script), *options, "--json", str(figures)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(figures.read_text())


def child_pids(pid):
    """Processes whose parent or process group is ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and (int(fields[1]) == pid or int(fields[2]) == pid):
                found.append(int(entry.name))
    return found


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] if Path(f"/proc/{pid}").exists() else "X"
    return state != "Z"


def sample_script_with_stand_ins(folder: Path) -> tuple[Path, Path]:
    """A copy of ``scripts/segment-sample.sh`` in ``folder/repo`` whose venv set-up does nothing and whose Python
    records each call (``{"cwd", "argv"}``, a JSON line) in the returned file: (the script, the calls file)."""
    import sys

    from .paths import ROOT

    repo = folder / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "scripts" / "segment-sample.sh").write_text((ROOT / "scripts" / "segment-sample.sh").read_text())
    (repo / "scripts" / "setup-venv.sh").write_text("true\n")
    (repo / ".venv" / "bin").mkdir(parents=True)
    calls = folder / "calls.jsonl"
    python = repo / ".venv" / "bin" / "python"
    python.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"open({str(calls)!r}, 'a').write(json.dumps({{'cwd': os.getcwd(), 'argv': sys.argv[1:]}}) + '\\n')\n"
    )
    python.chmod(0o755)
    return repo / "scripts" / "segment-sample.sh", calls
