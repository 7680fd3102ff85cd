"""Helpers for the MRML adapter tests (real MRML from PyPI's slicer-core, app-like set-up)."""

from __future__ import annotations

import numpy as np
import vtk
from TokenUNetSegmentLib.mrml.scene import create_scene
from TokenUNetSegmentLib.mrml.volumes import array_to_matrix, set_volume_from_array

ROTATE_Z_30 = np.array(
    [
        [np.cos(np.pi / 6), -np.sin(np.pi / 6), 0, 12.0],
        [np.sin(np.pi / 6), np.cos(np.pi / 6), 0, -7.0],
        [0, 0, 1, 25.0],
        [0, 0, 0, 1],
    ]
)


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
