"""TokenUNetSegment helper package, in four layers (each imports only the ones before it).

- ``model``: the networks (torch, einops, monai.networks).
- ``pipeline``: inference, model packages, training and the command line (MONAI, SimpleITK, numpy).
- ``mrml``: the MRML adapter; the scene is always passed in (Slicer MRML classes only).
- ``widget``: Qt and Slicer-application glue for the module's GUI.

Importing this package imports nothing heavy: import the layer you need.
"""

__version__ = "0.1.0"
"""The extension's version: ``tokenunet --version`` prints it, and pyproject.toml takes it from here."""
