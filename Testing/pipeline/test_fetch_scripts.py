"""The demo model's data fetchers (scripts/demo-model/fetch_*.py) as a new user first calls them."""

import subprocess
import sys

import pytest
from helpers.paths import SCRIPTS

FETCHERS = ["fetch_liver_patient.py", "fetch_second_patient.py"]


@pytest.mark.parametrize("script", FETCHERS)
def test_help_prints_usage_and_fetches_nothing(script, tmp_path):
    """``--help`` (found by hostile) (before: taken for the output folder: a folder named ``--help`` made, the package
    downloaded from PyPI into it and the patient written there, exit 0)."""
    done = subprocess.run([sys.executable, str(SCRIPTS / "demo-model" / script), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and "usage:" in done.stdout and "OUT_FOLDER" in done.stdout, done.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("script", FETCHERS)
def test_more_than_one_folder_or_an_unknown_option_is_refused(script, tmp_path):
    for arguments in (["a", "b"], ["--out", "x"]):
        done = subprocess.run([sys.executable, str(SCRIPTS / "demo-model" / script), *arguments], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 2 and "error:" in done.stderr, done.stderr[-2000:]
        assert list(tmp_path.iterdir()) == []
