"""Helpers for the MRML adapter tests (real MRML from PyPI's slicer-core, app-like set-up)."""

from __future__ import annotations

import numpy as np
import vtk
from TokenUNetSegmentLib.mrml.scene import create_scene
from TokenUNetSegmentLib.mrml.segmentation_nodes import segment_mask_world
from TokenUNetSegmentLib.mrml.volume_nodes import array_to_matrix, set_volume_from_array

from .packages import physical_ball

ROTATE_Z_30 = np.array(
    [
        [np.cos(np.pi / 6), -np.sin(np.pi / 6), 0, 12.0],
        [np.sin(np.pi / 6), np.cos(np.pi / 6), 0, -7.0],
        [0, 0, 1, 25.0],
        [0, 0, 0, 1],
    ]
)


BALL_AFFINE = np.array([[2.0, 0, 0, -20.0], [0, 2.0, 0, -18.0], [0, 0, 2.0, -10.0], [0, 0, 0, 1]])
BALL_SHAPE = (20, 18, 12)


def new_scene():
    return create_scene()


def add_volume(scene, array_ijk, affine, name="ct", transform=None):
    """A scalar volume node with ``array_ijk`` at ``affine`` in its own (local) coordinates."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    set_volume_from_array(node, array_ijk, affine)  # no parent transform yet: local == world
    node.CreateDefaultDisplayNodes()
    if transform is not None:
        node.SetAndObserveTransformNodeID(add_linear_transform(scene, transform).GetID())
    return node


def add_vector_volume(scene, components_ijk, affine, name="BRATS_001", voxel_vector_type=None):
    """A vector volume node whose voxels hold the (i, j, k) arrays ``components_ijk``, one per component, at
    ``affine`` (what Slicer makes of a 4D NIfTI or a NRRD with a ``list`` axis); ``voxel_vector_type``: what its
    reader would say the components are (e.g. ``vtkMRMLVolumeNode.VoxelVectorTypeColorRGB``; default undefined)."""
    import slicer

    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", name)
    stacked = np.stack([np.asarray(c).transpose(2, 1, 0) for c in components_ijk], axis=-1)  # (k, j, i, n)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(stacked))
    node.SetIJKToRASMatrix(array_to_matrix(affine))
    if voxel_vector_type is not None:
        node.SetVoxelVectorType(voxel_vector_type)
    node.CreateDefaultDisplayNodes()
    return node


def add_linear_transform(scene, matrix, name="moved"):
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    node.SetMatrixTransformToParent(array_to_matrix(matrix))
    return node


def world_point(node, ijk):
    """World RAS of voxel ``ijk`` of a volume node, computed by VTK/MRML (independent of our matrices)."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    local = matrix.MultiplyPoint([*map(float, ijk), 1.0])[:3]
    transform = node.GetParentTransformNode()
    if transform is None:
        return np.array(local)
    to_world = vtk.vtkGeneralTransform()
    transform.GetTransformToWorld(to_world)
    return np.array(to_world.TransformPoint(local))


def node_ids(scene):
    nodes = scene.GetNodes()
    return {nodes.GetItemAsObject(i).GetID() for i in range(nodes.GetNumberOfItems())}


def ball_volume(scene, transform=None, name="ct", affine=BALL_AFFINE):
    """A small CT-like volume node (a 9 mm ball of 250 HU) on ``affine``, optionally under a transform."""
    array = physical_ball(BALL_SHAPE, affine, affine[:3, :3] @ [10, 9, 6] + affine[:3, 3], 9.0, value=250.0)
    return add_volume(scene, array, affine, name=name, transform=transform)


def made_labels(node, shape):
    """The made segments' masks combined into a label array on the input grid (value from the segment)."""
    segmentation = node.GetSegmentation()
    labels = np.zeros(shape, np.uint8)
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        mask, _, _ = segment_mask_world(node, segment_id)
        labels[mask] = segmentation.GetSegment(segment_id).GetLabelValue()
    return labels


def assert_same_labels_but_near_ties(labels, expected, margin: float = 0.02):
    """``labels`` equal ``expected.labels`` (a ``segment(..., probabilities=True)`` result) except at voxels whose
    two most likely classes lie within ``margin``, at most 1 % of them: the network's sums run in another order with
    another thread count (a run picks its threads by the machine's load), and a near-tie can fall either way."""
    differ = labels != expected.labels
    if not differ.any():
        return
    foreground = np.stack(list(expected.probabilities.values()))
    ranked = np.sort(np.concatenate([1 - foreground.sum(0, keepdims=True), foreground]), axis=0)
    gaps = (ranked[-1] - ranked[-2])[differ]
    assert differ.sum() <= 0.01 * labels.size and gaps.max() < margin, (
        f"{differ.sum()} voxels differ, the largest probability gap among them {gaps.max():.3f}"
    )
