"""Layer 2, the pipeline: inference, model packages, training and the CLI (no Slicer, VTK or Qt)."""
