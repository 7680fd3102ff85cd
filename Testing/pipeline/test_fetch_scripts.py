"""The demo model's data fetchers (scripts/demo-model/fetch_*.py) as a new user first calls them."""

import os
import socket
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


@pytest.mark.parametrize("script", FETCHERS)
def test_a_package_index_out_of_reach_is_told_in_one_line_without_a_traceback(script, tmp_path):
    """pip pointed at a local port that refuses connections (no network used) (found by hostile) (before: a
    CalledProcessError traceback under pip's lines): one line saying what failed and what to do, exit nonzero, and
    the output folders it made removed again (before: left empty)."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    with socket.socket() as closed:  # bound, never listening: every connection to it is refused
        closed.bind(("127.0.0.1", 0))
        environment.update(
            PIP_CONFIG_FILE=os.devnull,  # no find-links or extra index of this machine's pip configuration
            PIP_INDEX_URL=f"http://127.0.0.1:{closed.getsockname()[1]}/simple/",
            PIP_RETRIES="0",
            PIP_NO_CACHE_DIR="1",
            PIP_DISABLE_PIP_VERSION_CHECK="1",
        )
        done = subprocess.run([sys.executable, str(SCRIPTS / "demo-model" / script), str(tmp_path / "data" / "new")],
                              capture_output=True, text=True, timeout=300, env=environment)  # fmt: skip
    error = done.stderr.strip()
    assert done.returncode != 0 and "Traceback" not in error and error.count("\n") == 0, error[-2000:]
    assert error.startswith("error: could not download ") and "package index" in error and "network" in error, error
    assert list(tmp_path.iterdir()) == []  # the folders it made for the download are gone again
