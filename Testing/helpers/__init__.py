"""Shared test helpers (a package on pytest's pythonpath; test files import these, never each other).

- ``paths``: where the repository's parts are.
- ``packages``: tiny random-weight model packages, the threshold "segmenter", synthetic volumes.
- ``scenes``: app-like MRML scenes and volume nodes (PyPI's slicer-core).
- ``training_data``: phantom training sets and datalists.
- ``processes``: the command line in a child process; modules a fresh interpreter loads.
- ``ui``: the widgets of the module's .ui file.
"""
