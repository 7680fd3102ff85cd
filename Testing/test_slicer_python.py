"""The module under Slicer's own Python (3.12 in Slicer 5.10 and 5.12, from the facts of test_slicer_api).

- Every module file compiles with a 3.12 interpreter (warnings are errors), when one is installed here.
- ``Resources/requirements.txt`` resolves for Python 3.12 wheels with the numpy each supported Slicer bundles
  and a torch that MONAI accepts pinned by a constraints file (as the module installs them): pip must not need
  to replace either.
"""

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from TokenUNetSegmentLib.widget.dependencies import TORCH_REQUIREMENT

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "TokenUNetSegment"
FACTS = json.loads(Path(__file__).with_name("slicer_api_facts.json").read_text(encoding="utf-8"))
SLICER_PYTHONS = sorted({".".join(FACTS["slicer"][tag]["python_version"].split(".")[:2]) for tag in FACTS["slicer"]})
LOWEST_TORCH = TORCH_REQUIREMENT.removeprefix(">=")


def find_python(version: str) -> str | None:
    """An interpreter of ``version`` (e.g. 3.12): on PATH, under pyenv, or Debian's."""
    candidates = [shutil.which(f"python{version}"), f"/usr/bin/python{version}"]
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")))
    for candidate in filter(None, candidates):
        try:
            found = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if found.returncode == 0 and found.stdout.strip() == version:
            return candidate
    return None


def test_slicer_python_versions_are_what_the_project_supports():
    assert SLICER_PYTHONS == ["3.12"]
    assert 'target-version = "py310"' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")  # ruff: no syntax newer than 3.12


@pytest.mark.parametrize("version", SLICER_PYTHONS)
def test_every_module_file_compiles_under_slicers_python(version):
    python = find_python(version)
    if python is None:
        pytest.skip(f"no Python {version} interpreter here (pyenv, PATH or Debian's python{version})")
    files = sorted(str(p) for p in MODULE_DIR.rglob("*.py") if "__pycache__" not in p.parts)
    code = (
        "import sys, warnings\n"
        "warnings.simplefilter('error')\n"
        "for path in sys.argv[1:]:\n"
        "    compile(open(path, encoding='utf-8').read(), path, 'exec', dont_inherit=True)\n"
        "print(len(sys.argv) - 1)\n"
    )
    result = subprocess.run([python, "-c", code, *files], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(files) > 50


@pytest.mark.parametrize("tag", FACTS["supported_tags"])
def test_requirements_resolve_for_slicers_python_without_replacing_its_packages(tag, tmp_path):
    facts = FACTS["slicer"][tag]
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(f"torch=={LOWEST_TORCH}\nnumpy=={facts['numpy']}\n")
    report = tmp_path / "report.json"
    command = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
        "--python-version", ".".join(facts["python_version"].split(".")[:2]), "--quiet", "--report", str(report),
        "-r", str(MODULE_DIR / "Resources" / "requirements.txt"), "-c", str(constraints),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    if result.returncode != 0 and any(s in output for s in ("NewConnectionError", "Failed to establish", "timed out")):
        pytest.skip("the package index is unreachable from here")
    assert result.returncode == 0, output
    installed = {
        i["metadata"]["name"].lower(): i["metadata"]["version"]
        for i in json.loads(report.read_text(encoding="utf-8"))["install"]
    }
    assert installed["numpy"] == facts["numpy"] and installed["torch"] == LOWEST_TORCH
    requirements = (MODULE_DIR / "Resources" / "requirements.txt").read_text(encoding="utf-8")
    pins = dict(line.split("==") for line in requirements.split() if "==" in line)
    assert {name.lower(): version for name, version in pins.items()}.items() <= installed.items()
    assert "simpleitk" not in installed  # nothing we install asks for another SimpleITK


def test_the_module_file_itself_parses_under_python_3_9_so_older_slicers_show_the_refusal():
    """Slicer 5.8 (Python 3.9) must be able to load TokenUNetSegment.py to tell the user it is too old."""
    python = find_python("3.9")
    if python is None:
        pytest.skip("no Python 3.9 interpreter here")
    code = "import ast, sys; ast.parse(open(sys.argv[1], encoding='utf-8').read())"
    result = subprocess.run(
        [python, "-c", code, str(MODULE_DIR / "TokenUNetSegment.py")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
