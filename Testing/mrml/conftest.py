"""Fixtures of the MRML adapter tests."""

import pytest
from helpers.scenes import new_scene


@pytest.fixture
def ctx():
    """A new app-like scene (real MRML from PyPI's slicer-core)."""
    return new_scene()
