"""The module under Slicer's own Python (3.12 in Slicer 5.10 and 5.12, from the facts of test_slicer_api).

- Every module file compiles with a 3.12 interpreter (warnings are errors), when one is installed here.
- ``Resources/requirements.txt`` resolves for Python 3.12 wheels with the numpy each supported Slicer bundles
  and a torch that MONAI accepts pinned by a constraints file (as the module installs them): pip must not need
  to replace either. The default run checks this from the pinned packages' own metadata (offline, instant) and
  resolves it against the package index for the oldest supported Slicer (about 30 s); the newer ones run with -m slow.
"""

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest
from helpers.paths import ROOT
from helpers.slicer_facts import FACTS
from TokenUNetSegmentLib.widget.dependencies import TORCH_REQUIREMENT

MODULE_DIR = ROOT / "TokenUNetSegment"
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


def test_pinned_requirements_accept_slicers_python_numpy_and_our_lowest_torch_by_their_metadata():
    """Each pinned requirement, installed here at its pin, accepts each supported Slicer's Python; what they require
    accepts that Slicer's numpy and the lowest torch we ask for, and none of them asks for SimpleITK."""
    from importlib.metadata import metadata, requires, version

    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    text = (MODULE_DIR / "Resources" / "requirements.txt").read_text(encoding="utf-8")
    pins = dict(line.split("==") for line in text.split() if "==" in line)
    checked = 0
    for tag in FACTS["supported_tags"]:
        facts = FACTS["slicer"][tag]
        python = facts["python_version"]
        environment = {"python_version": ".".join(python.split(".")[:2]), "python_full_version": python, "extra": ""}
        wanted = {"numpy": facts["numpy"], "torch": LOWEST_TORCH}
        for name, pinned in pins.items():
            assert version(name) == pinned, f"the environment should have the {name} users get"
            requires_python = metadata(name).get("Requires-Python")
            assert not requires_python or SpecifierSet(requires_python).contains(python), (name, tag)
            for requirement in map(Requirement, requires(name) or []):
                if requirement.marker is not None and not requirement.marker.evaluate(environment):
                    continue
                assert requirement.name.lower() != "simpleitk", name
                if requirement.name.lower() in wanted:
                    assert requirement.specifier.contains(wanted[requirement.name.lower()]), (name, requirement, tag)
                    checked += 1
    assert checked >= 2 * len(FACTS["supported_tags"])  # MONAI's numpy and torch requirements, at every tag


# Resolves against the package index (about 30 s per Slicer here): the oldest supported Slicer in the default run,
# the newer ones with -m slow.
@pytest.mark.parametrize(
    "tag", [FACTS["supported_tags"][0], *(pytest.param(t, marks=pytest.mark.slow) for t in FACTS["supported_tags"][1:])]
)
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
