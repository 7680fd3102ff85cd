"""Layer 4, the GUI glue: the only layer that may import qt, ctk and slicer.app."""
