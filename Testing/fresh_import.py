"""Which modules importing some modules pulls in, measured in a fresh interpreter (for layer rules)."""

import json
import subprocess
import sys
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parents[1] / "TokenUNetSegment"


def modules_loaded_by(names: list[str], timeout: float = 300) -> list[str]:
    """Every entry of ``sys.modules`` after importing ``names`` in a new Python process."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=MODULE_DIR, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])
