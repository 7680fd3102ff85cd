"""Fixtures of the pipeline tests: a CT-like phantom file and a package for it, made once per session."""

import pytest
from helpers.packages import ct_phantom_file, make_package, tiny_config


@pytest.fixture(scope="session")
def cli_case(tmp_path_factory):
    """(folder, a tiny package (3 mm, 32^3 windows, foreground crop), a CT-like phantom .nii.gz)."""
    root = tmp_path_factory.mktemp("cli")
    package = make_package(root, tiny_config(roi=(32, 32, 32), spacing=(3.0, 3.0, 3.0), crop=True))
    return root, package, ct_phantom_file(root / "ct.nii.gz")


@pytest.fixture
def one_inference_thread(monkeypatch):
    """CPU inference on one thread whatever the machine's load (``device.threads_for_load`` picks fewer threads when
    other processes keep the CPUs busy, and float sums over other thread counts can move a label at a boundary): for
    tests that compare the labels of two runs voxel for voxel."""
    from TokenUNetSegmentLib.pipeline import device

    monkeypatch.setattr(device, "threads_for_load", lambda current, *_, **__: 1)
