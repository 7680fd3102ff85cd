"""Slicer's own MRML reader (PyPI slicer-core) opens our .seg.nrrd: names, colors, terminology, physical place."""

import numpy as np
import pytest
from helpers.packages import physical_ball, rotation, voxel_centres
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing
from TokenUNetSegmentLib.pipeline.metadata import Label
from TokenUNetSegmentLib.pipeline.nrrd import write_segmentation

slicer = pytest.importorskip("slicer")


def read_with_slicer(path):
    from slicer import vtkMRMLScene, vtkMRMLSegmentationNode, vtkMRMLSegmentationStorageNode

    scene = vtkMRMLScene()
    node = vtkMRMLSegmentationNode()
    scene.AddNode(node)
    storage = vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1
    return node.GetSegmentation()


def world_points(segmentation, segment_id):
    """RAS coordinates of the voxels of a segment's binary labelmap, as Slicer places them."""
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    image = segmentation.GetSegment(segment_id).GetRepresentation("Binary labelmap")
    extent = image.GetExtent()
    dims = [extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1]
    values = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1]).transpose(2, 1, 0)
    label = segmentation.GetSegment(segment_id).GetLabelValue()
    ijk = np.argwhere(values == label) + np.array(extent[::2])
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    m = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    return ijk @ m[:3, :3].T + m[:3, 3]


def test_slicer_reads_names_colors_terminology_and_physical_place(tmp_path):
    direction = rotation(2, 25) @ rotation(1, 15) @ np.diag([-1.0, 1.0, 1.0])  # oblique, mirrored
    affine = affine_from_spacing((0.9, 1.3, 2.2), origin=(30, -40, -20), direction=direction)
    shape = (60, 50, 30)
    middle = affine[:3, :3] @ ((np.array(shape) - 1) / 2) + affine[:3, 3]
    centres = {1: middle + [9.0, -6.0, 4.0], 2: middle + [-8.0, 7.0, -5.0]}
    labels = np.zeros(shape, np.uint8)
    for value, centre in centres.items():
        labels[physical_ball(shape, affine, centre, 7.0) > 0] = value
    assert all((labels == v).sum() > 100 for v in centres)
    anatomy = ["SCT", "123037004", "Anatomical Structure"]
    liver = {"category": anatomy, "type": ["SCT", "10200004", "Liver"]}
    right_kidney = {
        "category": anatomy,
        "type": ["SCT", "64033007", "Kidney"],
        "modifier": ["SCT", "24028007", "Right"],
    }
    table = [
        Label(1, "liver", (221, 130, 101), terminology=liver),
        Label(2, "kidney_right", (185, 102, 83), terminology=right_kidney),
    ]
    path = write_segmentation(tmp_path / "seg.seg.nrrd", labels, affine, table)
    segmentation = read_with_slicer(path)
    assert segmentation.GetNumberOfSegments() == 2
    for label in table:
        segment = segmentation.GetSegment(label.name)
        assert segment is not None and segment.GetName() == label.name
        np.testing.assert_allclose(segment.GetColor(), np.array(label.color) / 255, atol=1e-5)
        points = world_points(segmentation, label.name)
        ours = voxel_centres(shape, affine)[labels == label.value]
        assert len(points) == len(ours)
        np.testing.assert_allclose(points.mean(axis=0), ours.mean(axis=0), atol=1e-3)
        np.testing.assert_allclose(points.mean(axis=0), centres[label.value], atol=1.0)
    entry = segmentation.GetSegment("kidney_right").GetTerminology()
    assert "SCT^64033007^Kidney~SCT^24028007^Right" in entry
