"""Layer 3, the MRML adapter: the scene is passed in; Slicer MRML classes only (no Qt, no slicer.app).

- ``volumes``: volume nodes <-> (array (i, j, k), IJK -> world RAS), through parent linear transforms.
- ``segmentation``: labels -> one segment per label (name, color, terminology), beside the input; only the
  segments this module made are replaced in an existing node.
- ``heatmaps``: token maps -> heat-colored 0..1 volumes in a folder per run, the "Token attention" segmentation.
- ``parameters``: the module parameters as a dataclass stored in a ``vtkMRMLScriptedModuleNode``.
- ``runner``: in-process and subprocess (pipeline CLI) runs with progress, cancel and cleanup.
- ``logic``: ``SceneRun`` (a run bound to a scene) and ``apply_result`` (a result -> nodes).
- ``controller``: the GUI's decisions without Qt.
- ``render``: offscreen pictures of a run; ``scene``: an app-like scene without the application.

Example (outside Slicer, with PyPI's slicer-core)::

    from TokenUNetSegmentLib.mrml.scene import create_scene
    from TokenUNetSegmentLib.mrml.logic import SceneRun
    from TokenUNetSegmentLib.mrml.parameters import Parameters

    ctx = create_scene()
    volume = ctx.volumes_logic.AddArchetypeVolume("ct.nii.gz", "CT", 0)
    run = SceneRun(ctx.scene, Parameters(inputVolume0=volume, model="my-model"), mode="inprocess")
    run.run_now()
    run.nodes.segmentation, run.nodes.heatmaps, run.nodes.attention
"""
