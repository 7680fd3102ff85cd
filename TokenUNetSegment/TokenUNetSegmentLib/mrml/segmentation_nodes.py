"""Labels -> a segmentation node: one segment per label (name, color, terminology), in physical space.

Segments this module makes carry the tag :data:`.attributes.MODEL_TAG` (the model id); writing into an existing node
replaces only those and keeps every other (the user's own) segment untouched. A made segment whose mask no longer
matches its :data:`.attributes.MASK_TAG` fingerprint was edited by the user: :func:`release_edited_segments` gives it
to the user (untagged) so that a re-run keeps it.
"""

from __future__ import annotations

import hashlib

import numpy as np
import slicer
import vtk

from ..pipeline.errors import InputError
from .attributes import MASK_TAG, MODEL_TAG
from .volume_nodes import local_to_world, mask_bounds, oriented_image, oriented_image_to_array

LABELMAP = "Binary labelmap"
CLOSED_SURFACE = "Closed surface"


def subject_hierarchy(scene):
    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)


def hierarchy_item(scene, node) -> int:
    """The subject-hierarchy item of ``node``, created under the scene item when the application has not."""
    hierarchy = subject_hierarchy(scene)
    item = hierarchy.GetItemByDataNode(node)
    if not item:
        item = hierarchy.CreateItem(hierarchy.GetSceneItemID(), node)
    return item


def place_beside(scene, node, reference) -> None:
    """Put ``node`` under the same subject-hierarchy parent (study, folder) as ``reference``."""
    if reference is None:
        return
    hierarchy = subject_hierarchy(scene)
    parent = hierarchy.GetItemParent(hierarchy_item(scene, reference))
    hierarchy.SetItemParent(hierarchy_item(scene, node), parent)


def segment_tag(segment, tag: str) -> str:
    """A segment's tag value ("" when absent)."""
    value = vtk.reference("")
    return str(value) if segment.GetTag(tag, value) else ""


def new_segmentation_node(scene, name: str, reference=None):
    """An empty segmentation node with display nodes, under the reference volume's transform and parent."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
    node.CreateDefaultDisplayNodes()
    if reference is not None:
        transform = reference.GetParentTransformNode()
        node.SetAndObserveTransformNodeID(transform.GetID() if transform is not None else None)
        place_beside(scene, node, reference)
    return node


def made_segment_ids(node, tag: str = MODEL_TAG) -> list[str]:
    """IDs of the segments of ``node`` that carry ``tag`` (i.e. that this module made)."""
    segmentation = node.GetSegmentation()
    ids = []
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        if segment_tag(segment, tag):
            ids.append(segmentation.GetNthSegmentID(index))
    return ids


def mask_fingerprint(segment) -> str:
    """A digest of a segment's binary-labelmap mask and where it lies in the node's coordinates (not of the
    layer's extent, which the Segment Editor may grow or shrink without changing the mask)."""
    array, image_to_local, start = oriented_image_to_array(segment.GetRepresentation(LABELMAP))
    mask = array == segment.GetLabelValue()
    digest = hashlib.blake2b(np.round(image_to_local, 6).tobytes(), digest_size=16)
    if mask.any():
        lo, hi = mask_bounds(mask)
        block = mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        digest.update(np.add(lo, start).astype(np.int64).tobytes() + np.array(block.shape, np.int64).tobytes())
        digest.update(np.packbits(block).tobytes())
    return digest.hexdigest()


def release_edited_segments(node) -> list[str]:
    """Hand the made segments the user edited since they were written over to the user (their model and mask
    tags removed, so that a re-run keeps them); returns their names."""
    segmentation = node.GetSegmentation()
    names = []
    for segment_id in made_segment_ids(node):
        segment = segmentation.GetSegment(segment_id)
        written = segment_tag(segment, MASK_TAG)
        if written and written != mask_fingerprint(segment):
            segment.RemoveTag(MODEL_TAG)
            segment.RemoveTag(MASK_TAG)
            names.append(segment.GetName())
    return names


def check_output(node) -> None:
    """Refuse an existing segmentation node that a result cannot be written into (checked before a run).

    Raises:
        InputError: its segments are stored as another representation (e.g. the user's closed surfaces), or it
            is under a non-linear transform.
    """
    segmentation = node.GetSegmentation()
    source = segmentation.GetSourceRepresentationName()
    if segmentation.GetNumberOfSegments() and source != LABELMAP:
        raise InputError(
            f"segmentation '{node.GetName()}' is stored as '{source}', not as a binary labelmap",
            "choose a new output segmentation",
        )
    local_to_world(node)


def add_segment(
    node, name: str, color, image, label_value: int = 1, tags: dict | None = None, terminology: str | None = None
) -> str:
    """Add a segment whose labelmap is ``image`` (shared by every segment given the same image object)."""
    segmentation = node.GetSegmentation()
    segment = slicer.vtkSegment()
    segment.SetName(name)
    segment.SetColor(*[float(c) for c in color])
    segment.SetNameAutoGenerated(False)
    segment.SetColorAutoGenerated(False)
    if terminology:
        segment.SetTerminology(terminology)
    for key, value in (tags or {}).items():
        segment.SetTag(key, str(value))
    segment.AddRepresentation(LABELMAP, image)
    segment.SetLabelValue(int(label_value))
    segment_id = segmentation.GenerateUniqueSegmentID(name.replace(" ", "_"))
    segmentation.AddSegment(segment, segment_id)
    return segment_id


def write_labels(
    scene,
    labels: np.ndarray,
    world_affine: np.ndarray,
    label_table,
    node=None,
    reference=None,
    model_id: str = "TokenUNet",
    name: str | None = None,
    show3d: bool = False,
):
    """Write a label map as one segment per label entry; returns the segmentation node.

    Args:
        labels: (i, j, k) label values on the grid ``world_affine`` (IJK -> world RAS).
        label_table: entries with ``value``, ``name``, ``color`` (0-255) and ``terminology`` (pipeline ``Label``).
        node: an existing segmentation node to write into (segments tagged by an earlier run are replaced,
            the others kept: call :func:`release_edited_segments` first to keep the ones the user edited), or None
            for a new node beside ``reference``.
        reference: the input volume: gives the reference geometry, the transform and the hierarchy parent.
        show3d: also build the closed-surface representation (3D view).
    """
    from ..pipeline.nrrd import terminology_entry

    if node is None:
        base = f"{reference.GetName()} segmentation" if reference is not None else "TokenUNet segmentation"
        node = new_segmentation_node(scene, name or base, reference)
    else:
        check_output(node)
    local = np.linalg.inv(local_to_world(node)) @ np.asarray(world_affine, float)
    segmentation = node.GetSegmentation()
    was = node.StartModify()
    try:
        for segment_id in made_segment_ids(node):
            segmentation.RemoveSegment(segment_id)
        if reference is not None and segmentation.GetNumberOfSegments() == 0:
            node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
        if not segmentation.GetNumberOfSegments() and segmentation.GetSourceRepresentationName() != LABELMAP:
            node.SetSourceRepresentationToBinaryLabelmap()
        image = oriented_image(labels, local)  # one shared layer for all labels of this run
        for label in label_table:
            segment_id = add_segment(
                node,
                label.name,
                [c / 255.0 for c in label.color],
                image,
                label.value,
                {MODEL_TAG: model_id},
                terminology_entry(label),
            )
            segment = segmentation.GetSegment(segment_id)
            segment.SetTag(MASK_TAG, mask_fingerprint(segment))
    finally:
        node.EndModify(was)
    set_closed_surface(node, show3d)
    return node


def shows_closed_surfaces(node) -> bool:
    """Whether ``node`` (a segmentation node in a scene, or None) has its closed surfaces built (Show 3D on)."""
    return (
        node is not None
        and node.GetScene() is not None
        and node.GetSegmentation().ContainsRepresentation(CLOSED_SURFACE)
    )


def set_closed_surface(node, show3d: bool) -> None:
    """Build (or drop) the closed-surface representation that the 3D view shows."""
    if show3d:
        node.CreateClosedSurfaceRepresentation()
    else:
        node.RemoveClosedSurfaceRepresentation()


def segment_mask_world(node, segment_id: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """A segment's binary mask as ``(array (i, j, k) bool, IJK -> world RAS of array[0, 0, 0])``.

    The affine already includes the block's extent offset and the node's parent transform.
    """
    segment = node.GetSegmentation().GetSegment(segment_id)
    image = segment.GetRepresentation(LABELMAP)
    array, image_to_local, start = oriented_image_to_array(image)
    shift = np.eye(4)
    shift[:3, 3] = start
    return array == segment.GetLabelValue(), local_to_world(node) @ image_to_local @ shift, start
