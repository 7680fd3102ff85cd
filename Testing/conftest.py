"""Shared pytest set-up: the module folder is on sys.path (pyproject's pythonpath); seeds are fixed."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield
