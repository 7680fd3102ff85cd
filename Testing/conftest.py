"""Shared pytest set-up. ``TokenUNetSegment/`` and ``Testing/`` are on sys.path (pyproject's pythonpath), so tests
import the library and :mod:`helpers`; seeds are fixed; and what is expensive is made once per session:

- ``tiny_package``: a tiny random-weight package (one CT channel, 2 labels, 8 tokens, 3 mm, 16^3 windows).
- ``sample_cli_run``: the bundled sample CT segmented by the catalog's default (bundled) model, once, through
  the command line in a child process as a user's terminal and the GUI run it (``--progress json``, token maps on
  the token grid, the overview); its output folder and the child's output.
- ``sample_result``: that run's output folder read back (:func:`pipeline.outputs.read_outputs`).
"""

import types

import pytest
import torch
from helpers.packages import make_package, tiny_config
from helpers.paths import SAMPLE_CT
from helpers.processes import run_cli


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory):
    return make_package(tmp_path_factory.mktemp("tiny"), tiny_config(roi=(16, 16, 16), spacing=(3.0, 3.0, 3.0)))


@pytest.fixture(scope="session")
def sample_cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "out"
    home = tmp_path_factory.mktemp("home")  # no cached package shadows the bundled default
    options = ["--device", "cpu", "--progress", "json", "--attention-grid", "token"]
    done = run_cli("segment", SAMPLE_CT, "--out", out, *options, env={"TOKENUNET_HOME": str(home)})
    assert done.returncode == 0, done.stderr[-3000:]
    return types.SimpleNamespace(folder=out, stdout=done.stdout, stderr=done.stderr)


@pytest.fixture(scope="session")
def sample_result(sample_cli_run):
    from TokenUNetSegmentLib.pipeline.outputs import read_outputs

    return read_outputs(sample_cli_run.folder)
