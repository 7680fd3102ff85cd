"""Layer 3, the MRML adapter: the scene is passed in; Slicer MRML classes only (no Qt, no slicer.app).

- ``volume_nodes``: volume nodes <-> (array (i, j, k), IJK -> world RAS), through parent linear transforms.
- ``segmentation_nodes``: labels -> one segment per label (name, color, terminology), beside the input; only
  the segments this module made are replaced in an existing node.
- ``heatmap_nodes``: token maps -> heat-colored 0..1 volumes in a folder per run, the "Token attention"
  segmentation.
- ``attributes``: every attribute and tag key this module puts on nodes and segments.
- ``parameters``: the module parameters as a dataclass stored in a ``vtkMRMLScriptedModuleNode``.
- ``result_nodes``: ``apply_result`` (a completed run's result -> nodes) and ``RunNodes``.
- ``scene_run``: ``SceneRun``, a pipeline run (``pipeline.runs``) bound to a scene.
- ``controller``: the GUI's decisions without Qt, and the model list.
- ``render``: offscreen pictures of a run; ``scene``: an app-like scene without the application.

Example (outside Slicer, with PyPI's slicer-core)::

    from TokenUNetSegmentLib.mrml.scene import create_scene
    from TokenUNetSegmentLib.mrml.scene_run import SceneRun
    from TokenUNetSegmentLib.mrml.parameters import Parameters

    ctx = create_scene()
    volume = ctx.volumes_logic.AddArchetypeVolume("ct.nii.gz", "CT", 0)
    run = SceneRun(ctx.scene, Parameters(inputVolume0=volume, model="my-model"), mode="inprocess")
    run.run_now()
    run.nodes.segmentation, run.nodes.heatmap_nodes, run.nodes.attention
"""
