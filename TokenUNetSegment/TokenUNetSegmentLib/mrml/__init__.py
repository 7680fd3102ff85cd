"""Layer 3, the MRML adapter: the scene is passed in; Slicer MRML classes only (no Qt, no slicer.app)."""
