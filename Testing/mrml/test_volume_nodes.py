"""Volume nodes <-> (array (i, j, k), IJK->world RAS) on real MRML, under parent transforms."""

import numpy as np
import pytest
import slicer
import vtk
from helpers.scenes import ROTATE_Z_30, add_linear_transform, add_volume, new_scene, world_point
from TokenUNetSegmentLib.mrml.volume_nodes import (
    array_to_matrix,
    ijk_to_world,
    oriented_image,
    oriented_image_to_array,
    set_volume_from_array,
    volume_to_array,
)
from TokenUNetSegmentLib.pipeline.errors import InputError

AFFINE = np.array([[-1.5, 0, 0, 10.0], [0, 1.2, 0.3, -5.0], [0, 0, 2.0, 3.0], [0, 0, 0, 1]])


@pytest.fixture
def ctx():
    return new_scene()


def test_volume_to_array_is_ijk_with_the_volume_geometry(ctx):
    array = np.random.default_rng(0).normal(size=(7, 5, 4)).astype(np.float32)
    node = add_volume(ctx.scene, array, AFFINE)
    got, affine = volume_to_array(node)
    np.testing.assert_array_equal(got, array)
    assert got.shape == (7, 5, 4)
    np.testing.assert_allclose(affine, AFFINE, atol=1e-9)
    # the (k, j, i) array Slicer holds, seen through our (i, j, k) view
    assert slicer.util.arrayFromVolume(node)[3, 2, 1] == array[1, 2, 3]


@pytest.mark.parametrize("nested", [False, True])
def test_parent_linear_transforms_are_honoured(ctx, nested):
    array = np.arange(60, dtype=np.int16).reshape(5, 4, 3)
    node = add_volume(ctx.scene, array, AFFINE, transform=ROTATE_Z_30)
    if nested:
        outer = np.eye(4)
        outer[:3, 3] = [3.0, -40.0, 8.0]
        node.GetParentTransformNode().SetAndObserveTransformNodeID(add_linear_transform(ctx.scene, outer).GetID())
    _, affine = volume_to_array(node)
    for ijk in [(0, 0, 0), (4, 3, 2), (1, 2, 0)]:
        np.testing.assert_allclose(affine @ [*ijk, 1.0], [*world_point(node, ijk), 1.0], atol=1e-9)
    assert not np.allclose(affine, AFFINE)


def test_non_linear_parent_transform_is_refused_with_advice(ctx):
    node = add_volume(ctx.scene, np.zeros((4, 4, 4), np.float32), AFFINE)
    warp = ctx.scene.AddNewNodeByClass("vtkMRMLTransformNode", "warp")
    spline = vtk.vtkThinPlateSplineTransform()
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    for p in [(0, 0, 0), (10, 0, 0), (0, 10, 0), (0, 0, 10)]:
        source.InsertNextPoint(p)
        target.InsertNextPoint([c + 1.0 for c in p])
    spline.SetSourceLandmarks(source)
    spline.SetTargetLandmarks(target)
    warp.SetAndObserveTransformToParent(spline)
    node.SetAndObserveTransformNodeID(warp.GetID())
    with pytest.raises(InputError, match="harden"):
        volume_to_array(node)


def test_missing_empty_and_vector_volumes_are_refused(ctx):
    with pytest.raises(InputError, match="no input volume"):
        volume_to_array(None)
    with pytest.raises(InputError, match="no voxels"):
        volume_to_array(ctx.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode"))
    vector = ctx.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode")
    slicer.util.updateVolumeFromArray(vector, np.zeros((3, 4, 5, 3), np.uint8))
    with pytest.raises(InputError, match="components"):
        volume_to_array(vector)


def test_set_volume_from_array_places_voxels_in_world_space_under_a_transform(ctx):
    node = ctx.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    node.SetAndObserveTransformNodeID(add_linear_transform(ctx.scene, ROTATE_Z_30).GetID())
    world = AFFINE.copy()
    set_volume_from_array(node, np.ones((3, 4, 5), np.float32), world)
    np.testing.assert_allclose(ijk_to_world(node), world, atol=1e-9)
    np.testing.assert_allclose(world_point(node, (2, 3, 4)), (world @ [2, 3, 4, 1.0])[:3], atol=1e-9)


def test_oriented_image_round_trip_keeps_values_geometry_and_extent():
    mask = np.zeros((4, 5, 6), np.uint8)
    mask[1, 2, 3] = 7
    image = oriented_image(mask, AFFINE, offset=(2, 0, 5))
    assert image.GetExtent() == (2, 5, 0, 4, 5, 10)
    array, affine, start = oriented_image_to_array(image)
    np.testing.assert_array_equal(array, mask)
    np.testing.assert_allclose(affine, AFFINE)
    assert start == (2, 0, 5)


def test_volumes_without_intensities_are_refused_with_advice(ctx):
    """What a user can pick from the Python console that is not an image of intensities gets a plain message,
    never a traceback (the panel's selectors already hide labelmaps)."""
    labelmap = ctx.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    set_volume_from_array(labelmap, np.zeros((4, 5, 6), np.uint8), AFFINE)
    with pytest.raises(InputError, match="labelmap.*Volumes module"):
        volume_to_array(labelmap)
    no_scalars = ctx.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "allocated nothing")
    image = vtk.vtkImageData()
    image.SetDimensions(4, 5, 6)  # dimensions but no voxel values
    no_scalars.SetAndObserveImageData(image)
    with pytest.raises(InputError, match="no voxels"):
        volume_to_array(no_scalars)
    tensors = ctx.scene.AddNewNodeByClass("vtkMRMLDiffusionTensorVolumeNode", "dti")
    image = vtk.vtkImageData()
    image.SetDimensions(4, 5, 6)
    image.AllocateScalars(vtk.VTK_FLOAT, 1)
    values = vtk.vtkFloatArray()
    values.SetNumberOfComponents(9)
    values.SetNumberOfTuples(4 * 5 * 6)
    image.GetPointData().SetTensors(values)
    tensors.SetAndObserveImageData(image)
    with pytest.raises(InputError, match="tensor"):
        volume_to_array(tensors)
    frames = ctx.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "4D")
    slicer.util.updateVolumeFromArray(frames, np.zeros((3, 4, 5, 12), np.int16))
    with pytest.raises(InputError, match="12 components.*one frame"):
        volume_to_array(frames)


def test_an_image_whose_extent_does_not_start_at_zero_keeps_its_place(ctx):
    """Slicer's IJK is the image's own index (its extent), e.g. after vtkExtractVOI or a script's SetExtent."""
    node = ctx.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "cropped")
    image = vtk.vtkImageData()
    image.SetExtent(5, 8, 2, 6, 7, 12)
    image.AllocateScalars(vtk.VTK_SHORT, 1)
    node.SetAndObserveImageData(image)
    node.SetIJKToRASMatrix(array_to_matrix(AFFINE))
    node.SetAndObserveTransformNodeID(add_linear_transform(ctx.scene, ROTATE_Z_30).GetID())
    array, affine = volume_to_array(node)
    assert array.shape == (4, 5, 6)
    for index in [(0, 0, 0), (3, 4, 5)]:
        extent_index = np.add(index, (5, 2, 7))
        np.testing.assert_allclose((affine @ [*index, 1.0])[:3], world_point(node, extent_index), atol=1e-6)
