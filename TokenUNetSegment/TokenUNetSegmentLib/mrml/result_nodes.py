"""A completed run's result -> nodes: the segmentation, and per run a folder of heatmaps, the "Token attention"
segmentation and probability volumes.

This is all the MRML layer does with a run: the run itself (in-process or a child process) and its files are
the pipeline's (:mod:`..pipeline.runs`, :mod:`..pipeline.outputs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import slicer

from ..pipeline.confidence import Assessment
from ..pipeline.outputs import choose_attention_grid
from .attributes import (
    CONFIDENCE_TAG,
    FLAG_MESSAGES_TAG,
    FLAGS_TAG,
    KIND_ATTRIBUTE,
    PROBABILITY_ATTRIBUTE,
    RUN_ATTRIBUTE,
    RUN_FLAGS_ATTRIBUTE,
    SUMMARY_ATTRIBUTE,
)
from .heatmap_nodes import add_attention_segmentation, add_heatmaps, add_map_volume, heat_color_node, run_folder
from .parameters import Parameters
from .segmentation_nodes import made_segment_ids, release_edited_segments, subject_hierarchy, write_labels


@dataclass
class RunNodes:
    """What a completed run added to (or updated in) the scene, with what the run said about its result: its
    assessment (confidence and flags) and the warnings of reading and preparing the input."""

    segmentation: object
    folder: int = 0
    heatmap_nodes: list = field(default_factory=list)
    attention: object = None
    probabilities: list = field(default_factory=list)
    assessment: Assessment | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def heatmaps(self) -> list:
        """The former name of :attr:`heatmap_nodes` (kept for scripts written against it)."""
        return self.heatmap_nodes


def apply_result(scene, result, parameters: Parameters, reference, output=None) -> RunNodes:
    """Add a completed run's nodes to the scene (beside ``reference``, the first input volume).

    ``output`` is the segmentation node to write into (module-made segments replaced unless the user edited them,
    others kept) or None.
    Nodes removed from the scene while the run was going on are treated as absent (the labels are in world
    coordinates, so they still land at the right place).
    """
    if output is not None and output.GetScene() is not scene:
        output = None
    if reference is not None and reference.GetScene() is not scene:
        reference = None
    kept = release_edited_segments(output) if output is not None else []
    segmentation = write_labels(
        scene,
        result.labels,
        result.affine,
        result.label_table,
        node=output,
        reference=reference,
        model_id=result.model_id or "TokenUNet",
        show3d=parameters.show3D,
    )
    mark_assessment(segmentation, result.assessment)
    nodes = RunNodes(segmentation, assessment=result.assessment, warnings=list(result.warnings))
    nodes.warnings += [f"your edited segment '{name}' is kept; the new result is beside it" for name in kept]
    token_maps = result.token_maps
    want_maps = parameters.heatmaps and token_maps is not None
    if not (want_maps or result.probabilities):
        return nodes
    count = sum(1 for _ in _run_folders(scene))
    name = f"TokenUNet {result.model_id} {reference.GetName() if reference is not None else ''} run {count + 1}"
    nodes.folder = run_folder(scene, reference, " ".join(name.split()), f"{count + 1}")
    if want_maps:
        kinds = [k for k in parameters.kinds if k in token_maps.kinds]
        grid = choose_attention_grid(parameters.heatmapGrid, len(kinds), token_maps.num_tokens, result.labels.size)
        nodes.heatmap_nodes = add_heatmaps(
            scene, token_maps, result.token_matches, result.affine, kinds, reference, nodes.folder, grid
        )
        if parameters.attentionSegments and nodes.heatmap_nodes:
            first_kind = [n for n in nodes.heatmap_nodes if n.GetAttribute(KIND_ATTRIBUTE) == kinds[0]]
            nodes.attention = add_attention_segmentation(
                scene,
                first_kind,
                parameters.attentionThreshold,
                reference,
                nodes.folder,
                f"Token attention ({kinds[0]})",
            )
    for label in result.label_table if result.probabilities else []:
        nodes.probabilities.append(
            add_map_volume(
                scene,
                result.probabilities[label.name],
                result.affine,
                f"{label.name} probability",
                reference,
                nodes.folder,
                {PROBABILITY_ATTRIBUTE: label.name},
                heat_color_node(scene),
            )
        )
    subject_hierarchy(scene).SetItemExpanded(nodes.folder, False)
    return nodes


def mark_assessment(node, assessment: Assessment | None) -> None:
    """Tag this module's segments with their confidence and flags (segment status "flagged" for an organ found
    with flags: the flag icon of the Segment Editor's list) and the node with the run's flags and summary."""
    if assessment is None:
        return
    segmentation = node.GetSegmentation()
    for segment_id in made_segment_ids(node):
        segment = segmentation.GetSegment(segment_id)
        judged = assessment.labels.get(segment.GetName())
        if judged is None:
            continue
        segment.SetTag(CONFIDENCE_TAG, f"{judged.confidence:.3f}")
        segment.SetTag(FLAGS_TAG, ",".join(flag.code for flag in judged.flags))
        segment.SetTag(FLAG_MESSAGES_TAG, "; ".join(flag.message for flag in judged.flags))
        if judged.found and judged.flags:
            logic = slicer.vtkSlicerSegmentationsModuleLogic
            logic.SetSegmentStatus(segment, logic.Flagged)
    node.SetAttribute(RUN_FLAGS_ATTRIBUTE, ",".join(flag.code for flag in assessment.flags))
    node.SetAttribute(SUMMARY_ATTRIBUTE, assessment.summary)


def _run_folders(scene):
    import vtk

    hierarchy = subject_hierarchy(scene)
    children = vtk.vtkIdList()
    hierarchy.GetItemChildren(hierarchy.GetSceneItemID(), children, True)
    for index in range(children.GetNumberOfIds()):
        item = children.GetId(index)
        if hierarchy.GetItemAttribute(item, RUN_ATTRIBUTE):
            yield item
