"""TokenUNet.json is formatted as the Extensions Index's pre-commit formats it, and fits the Index's schema.

The prettier version, its plugin and options come from the Index (facts in slicer_api_facts.json); the test
installs them from npm once into .venv/prettier/ and runs ``prettier --check`` offline afterwards.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers.paths import ROOT
from helpers.slicer_facts import FACTS

CATALOG = ROOT / "TokenUNet.json"
INDEX = FACTS["extensions_index"]
TOOLS = ROOT / ".venv" / "prettier"


@pytest.fixture(scope="module")
def prettier():
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: the Extensions Index's prettier check cannot run here")
    packages = [f"prettier@{INDEX['prettier']}", *(f"{name}@{v}" for name, v in INDEX["plugins"].items())]
    stamp = TOOLS / "installed.txt"
    if not stamp.is_file() or stamp.read_text(encoding="utf-8") != " ".join(packages):
        TOOLS.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [npm, "install", "--prefix", str(TOOLS), "--no-save", "--no-audit", "--no-fund", *packages],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        stamp.write_text(" ".join(packages))
    config = TOOLS / "prettierrc.json"
    plugins = [str(TOOLS / "node_modules" / name / "dist" / "index.js") for name in INDEX["plugins"]]
    plugins = [p if Path(p).is_file() else name for p, name in zip(plugins, INDEX["plugins"], strict=True)]
    config.write_text(json.dumps({"plugins": plugins, **INDEX["options"]}))
    return [str(TOOLS / "node_modules" / ".bin" / "prettier"), "--config", str(config)]


def test_catalog_entry_is_formatted_as_the_index_pre_commit_formats_it(prettier, tmp_path):
    result = subprocess.run([*prettier, "--check", str(CATALOG)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    unformatted = tmp_path / "Unformatted.json"
    unformatted.write_text(CATALOG.read_text(encoding="utf-8").replace('[\n    "PyTorch"\n  ]', '["PyTorch"]'))
    check = subprocess.run([*prettier, "--check", str(unformatted)], capture_output=True, text=True, timeout=120)
    assert check.returncode != 0  # the check sees the one-line array the multi-line-arrays plugin rewraps


def test_catalog_entry_fits_the_index_schema():
    entry = json.loads(CATALOG.read_text(encoding="utf-8"))
    schema = INDEX["schema"]
    assert set(schema["required"]) <= set(entry)
    assert set(entry) <= set(schema["properties"])  # additionalProperties: false (no description field)
    python_type = {"string": str, "array": list, "integer": int, "boolean": bool}
    assert all(isinstance(value, python_type[schema["properties"][key]]) for key, value in entry.items())
