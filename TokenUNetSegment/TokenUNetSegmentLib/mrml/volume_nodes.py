"""Volume nodes <-> (array (i, j, k), IJK->RAS 4x4), honouring parent linear transforms.

"World" below means Slicer's RAS world coordinates (after every parent transform); "local" means a node's
own coordinates (before its parent transform).
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk

from ..pipeline.errors import InputError


def matrix_to_array(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=float)


def array_to_matrix(array) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r][c]))
    return matrix


def local_to_world(node) -> np.ndarray:
    """The 4x4 from a transformable node's coordinates to world RAS (identity without parent transform).

    Raises:
        InputError: the node is under a non-linear (e.g. grid or B-spline) transform.
    """
    transform = node.GetParentTransformNode() if node is not None else None
    if transform is None:
        return np.eye(4)
    if not transform.IsTransformToWorldLinear():
        raise InputError(
            f"'{node.GetName()}' is under the non-linear transform '{transform.GetName()}'",
            "harden the transform (Data module) before segmenting",
        )
    matrix = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToWorld(matrix)
    return matrix_to_array(matrix)


def ijk_to_ras(node) -> np.ndarray:
    """The volume's own IJK->RAS (without parent transforms)."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix_to_array(matrix)


def ijk_to_world(node) -> np.ndarray:
    """IJK -> world RAS of a volume node, through its parent linear transforms."""
    return local_to_world(node) @ ijk_to_ras(node)


def array_to_world(node) -> np.ndarray:
    """World RAS of the voxel ``array[i, j, k]`` of ``slicer.util.arrayFromVolume(node)`` (transposed to (i, j, k)).

    Slicer's IJK is the image's own index, which starts at the extent's first index (not 0 after e.g.
    ``vtkExtractVOI``); the array starts there.
    """
    start = np.eye(4)
    start[:3, 3] = node.GetImageData().GetExtent()[0::2]
    return ijk_to_world(node) @ start


def scalar_components(node) -> int:
    """Values per voxel of a volume node's image (3 for a color image, N for a vector volume of N frames or
    sequences); 1 when it has no voxels yet (that is refused elsewhere)."""
    image = node.GetImageData() if node is not None and hasattr(node, "GetImageData") else None
    if image is None or image.GetPointData().GetScalars() is None:
        return 1
    return int(image.GetNumberOfScalarComponents())


def components_refusal(name: str, components: int, channels: int) -> InputError:
    """The refusal of a volume of ``components`` values per voxel given to a model of ``channels`` inputs: its
    components are never taken as channels (their order is unknown), so say how to split it."""
    if channels == 1:
        return InputError(
            f"volume '{name}' has {components} components per voxel (a color, vector or multi-frame volume); the "
            "model takes one scalar volume",
            "extract one component with the Vector to Scalar Volume module, or pick a scalar volume",
        )
    return InputError(
        f"volume '{name}' has {components} components per voxel; the model takes its {channels} input channels as "
        f"{channels} scalar volumes",
        "split it into one volume per component (Vector to Scalar Volume module) and select each for its channel",
    )


def volume_to_array(node, components: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(array (i, j, k), array index -> world RAS)`` of a scalar volume node (a view of the node's voxels); with
    ``components`` above 1, ``(array (i, j, k, components), ...)`` of a vector volume of that many.

    Raises:
        InputError: no node, no voxels, a labelmap or tensor volume, another number of components, or a non-linear
            parent transform.
    """
    if node is None:
        raise InputError("no input volume selected")
    image = node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0 or image.GetPointData().GetScalars() is None:
        raise InputError(f"volume '{node.GetName()}' has no voxels")
    if node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputError(
            f"volume '{node.GetName()}' is a labelmap (labels, not image intensities)",
            "pick the image itself, or convert it to a scalar volume in the Volumes module if it was loaded as a "
            "labelmap by mistake",
        )
    if image.GetPointData().GetTensors() is not None:  # a DTI volume
        raise InputError(
            f"volume '{node.GetName()}' holds diffusion tensors",
            "segmentation needs a scalar volume (e.g. a scalar map computed from the tensors)",
        )
    if image.GetNumberOfScalarComponents() != components:
        raise InputError(
            f"volume '{node.GetName()}' has {image.GetNumberOfScalarComponents()} components per voxel",
            "segmentation needs a scalar volume: convert a color image to grayscale, or pick one frame of a "
            "multi-frame (4D) volume",
        )
    array_kji = slicer.util.arrayFromVolume(node)  # (k, j, i), or (k, j, i, components)
    return array_kji.transpose(2, 1, 0, *range(3, array_kji.ndim)), array_to_world(node)


def set_volume_from_array(node, array_ijk: np.ndarray, world_affine: np.ndarray) -> None:
    """Fill a volume node with an (i, j, k) array placed at ``world_affine`` in world RAS.

    The node keeps its parent transform: its own IJK->RAS becomes ``inverse(parent to world) @ world_affine``,
    so the voxels land at the same physical place whatever transform the node is under.
    """
    local = np.linalg.inv(local_to_world(node)) @ np.asarray(world_affine, float)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(np.asarray(array_ijk).transpose(2, 1, 0)))
    node.SetIJKToRASMatrix(array_to_matrix(local))
    node.Modified()


def oriented_image(array_ijk: np.ndarray, affine: np.ndarray, offset=(0, 0, 0)):
    """A ``vtkOrientedImageData`` of an (i, j, k) uint8 array whose voxel (0, 0, 0) sits at ``affine @ offset``.

    ``offset`` lets a cropped block keep the extent (index range) of the full grid it was cut from.
    """
    from vtk.util import numpy_support

    array_ijk = np.asarray(array_ijk, np.uint8)
    image = slicer.vtkOrientedImageData()
    lo = [int(o) for o in offset]
    image.SetExtent(
        lo[0],
        lo[0] + array_ijk.shape[0] - 1,
        lo[1],
        lo[1] + array_ijk.shape[1] - 1,
        lo[2],
        lo[2] + array_ijk.shape[2] - 1,
    )
    image.SetImageToWorldMatrix(array_to_matrix(affine))
    flat = np.ascontiguousarray(array_ijk.ravel(order="F"))
    scalars = numpy_support.numpy_to_vtk(flat, deep=True, array_type=vtk.VTK_UNSIGNED_CHAR)
    image.GetPointData().SetScalars(scalars)
    return image


def oriented_image_to_array(image) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """``(array (i, j, k), image-to-world 4x4, extent start)`` of a ``vtkOrientedImageData``."""
    from vtk.util import numpy_support

    extent = image.GetExtent()
    shape = tuple(extent[2 * a + 1] - extent[2 * a] + 1 for a in range(3))
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    if min(shape) <= 0:
        return np.zeros((0, 0, 0), np.uint8), matrix_to_array(matrix), (0, 0, 0)
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return flat.reshape(shape, order="F"), matrix_to_array(matrix), (extent[0], extent[2], extent[4])


def mask_bounds(mask: np.ndarray) -> tuple[list[int], list[int]]:
    """Index bounds [lo, hi) per axis of a non-empty mask."""
    lo, hi = [], []
    for axis in range(3):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        lo.append(int(hits[0]))
        hi.append(int(hits[-1]) + 1)
    return lo, hi
