"""Offscreen pictures of a run, as Slicer shows it: three slice views and a 3D view, side by side.

The slice views come from MRML's own slice logic (background volume, heatmap foreground, segments as a label
layer: the pipeline behind Slicer's slice views); the 3D view renders the segments' closed surfaces in an
offscreen VTK window (EGL or OSMesa when there is no display). Used for the extension's screenshot.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk

from ..pipeline.output_folder import write_file_atomically
from .segmentation_nodes import CLOSED_SURFACE

ORIENTATIONS = ("Axial", "Coronal", "Sagittal")


def label_layer(scene, segmentation_node, reference):
    """A labelmap volume of the visible segments (on ``reference``'s grid) with the segments' colors."""
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "TokenUNet render labels")
    if not slicer.vtkSlicerSegmentationsModuleLogic.ExportVisibleSegmentsToLabelmapNode(
        segmentation_node, labelmap, reference
    ):
        raise RuntimeError("cannot export the segments to a labelmap")
    segmentation = segmentation_node.GetSegmentation()
    colors = slicer.vtkMRMLColorTableNode()
    colors.SetName("TokenUNet render colors")
    colors.SetTypeToUser()
    colors.SetNumberOfColors(segmentation.GetNumberOfSegments() + 1)
    colors.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    for index in range(segmentation.GetNumberOfSegments()):  # the export numbers segments 1, 2, ... in order
        segment = segmentation.GetNthSegment(index)
        colors.SetColor(index + 1, segment.GetName(), *segment.GetColor(), 1.0)
    scene.AddNode(colors)
    labelmap.CreateDefaultDisplayNodes()
    labelmap.GetDisplayNode().SetAndObserveColorNodeID(colors.GetID())
    return labelmap


def slice_view(
    application_logic,
    scene,
    name: str,
    orientation: str,
    background,
    foreground=None,
    foreground_opacity: float = 0.5,
    label=None,
    label_opacity: float = 0.5,
    size=(400, 400),
    center_ras=None,
) -> vtk.vtkImageData:
    """The RGB image of one slice view (through ``center_ras`` when given), as Slicer's slice logic blends it."""
    logic = slicer.vtkMRMLSliceLogic()
    logic.SetMRMLApplicationLogic(application_logic)
    logic.SetMRMLScene(scene)
    slice_node = logic.AddSliceNode(name)
    slice_node.SetOrientation(orientation)
    composite = logic.GetSliceCompositeNode()
    composite.SetBackgroundVolumeID(background.GetID())
    composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
    composite.SetForegroundOpacity(foreground_opacity)
    composite.SetLabelVolumeID(label.GetID() if label is not None else None)
    composite.SetLabelOpacity(label_opacity)
    slice_node.SetDimensions(int(size[0]), int(size[1]), 1)
    logic.FitSliceToAll()
    if center_ras is not None:
        slice_node.JumpSliceByOffsetting(*[float(c) for c in center_ras])  # through-plane only: keeps the fit
    logic.UpdateImageData()
    rgb = vtk.vtkImageExtractComponents()  # drop alpha: what is not covered is black, as in Slicer
    rgb.SetInputConnection(logic.GetImageDataConnection())
    rgb.SetComponents(0, 1, 2)
    rgb.Update()
    image = vtk.vtkImageData()
    image.DeepCopy(rgb.GetOutput())
    return image


def surfaces_view(segmentation_node, size=(400, 400), background=(0.1, 0.1, 0.15)) -> vtk.vtkImageData:
    """An anterior 3D view of the segments' closed surfaces, rendered offscreen (RGB)."""
    segmentation_node.CreateClosedSurfaceRepresentation()
    segmentation = segmentation_node.GetSegmentation()
    renderer = vtk.vtkRenderer()
    renderer.SetBackground(*background)
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        surface = segment.GetRepresentation(CLOSED_SURFACE)
        if surface is None or surface.GetNumberOfPoints() == 0:
            continue
        mapper = vtk.vtkPolyDataMapper()
        mapper.SetInputData(surface)
        mapper.ScalarVisibilityOff()
        actor = vtk.vtkActor()
        actor.SetMapper(mapper)
        actor.GetProperty().SetColor(*segment.GetColor())
        renderer.AddActor(actor)
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(int(size[0]), int(size[1]))
    window.AddRenderer(renderer)
    camera = renderer.GetActiveCamera()
    camera.SetPosition(0, 1, 0)  # looking from anterior (RAS +A) towards the patient
    camera.SetFocalPoint(0, 0, 0)
    camera.SetViewUp(0, 0, 1)
    renderer.ResetCamera()
    window.Render()
    grabber = vtk.vtkWindowToImageFilter()
    grabber.SetInput(window)
    grabber.SetInputBufferTypeToRGB()
    grabber.Update()
    image = vtk.vtkImageData()
    image.DeepCopy(grabber.GetOutput())
    window.Finalize()
    return image


def side_by_side(images) -> vtk.vtkImageData:
    """Images of equal height joined left to right."""
    append = vtk.vtkImageAppend()
    append.SetAppendAxis(0)
    for image in images:
        append.AddInputData(image)
    append.Update()
    return append.GetOutput()


def write_png(image, path) -> None:
    """``image`` as PNG at ``path``, all at once (encoded in memory, then
    :func:`~..pipeline.output_folder.write_file_atomically`): VTK's writer, writing the file itself, left a truncated
    PNG under the final name on a full disk and raised nothing."""
    from vtk.util import numpy_support

    writer = vtk.vtkPNGWriter()
    writer.WriteToMemoryOn()
    writer.SetInputData(image)
    writer.Write()
    write_file_atomically(path, numpy_support.vtk_to_numpy(writer.GetResult()).tobytes())


def image_array(image) -> np.ndarray:
    """(rows, columns, components) uint8 array of a 2D vtkImageData (row 0 at the bottom, as VTK stores it)."""
    from vtk.util import numpy_support

    width, height, _ = image.GetDimensions()
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return flat.reshape(height, width, -1)


def hottest_point_inside(heatmap, volume):
    """World position of ``heatmap``'s hottest voxel among those whose centres lie in ``volume``'s extent (a map
    on the coarse token grid also covers the padding around the scan); the volume's centre if none does."""
    from .volume_nodes import array_to_world

    values = slicer.util.arrayFromVolume(heatmap).transpose(2, 1, 0)  # (i, j, k)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in values.shape], indexing="ij"), -1).reshape(-1, 3)
    world = array_to_world(heatmap) @ np.c_[index, np.ones(len(index))].T
    inside_ijk = (np.linalg.inv(array_to_world(volume)) @ world)[:3].T
    extent = np.array(volume.GetImageData().GetDimensions()) - 0.5
    inside = np.all((inside_ijk >= -0.5) & (inside_ijk <= extent), axis=1)
    if not inside.any():
        return (array_to_world(volume) @ [*((extent - 0.5) / 2), 1.0])[:3]
    hottest = np.flatnonzero(inside)[int(np.argmax(values.reshape(-1)[inside]))]
    return world[:3, hottest]


def render_run(
    application_logic,
    scene,
    volume,
    segmentation_node,
    heatmap=None,
    path=None,
    panel=400,
    heatmap_opacity=0.5,
    window_level=(400.0, 40.0),
):
    """Three slice views through the heatmap's hottest point (or the volume centre) and a 3D view, joined.

    Returns the joined RGB vtkImageData (also written as PNG to ``path`` when given, all at once). Nodes made for the
    picture are removed again.
    """
    display = volume.GetDisplayNode()
    if display is None:
        volume.CreateDefaultDisplayNodes()
        display = volume.GetDisplayNode()
    display.SetAutoWindowLevel(False)
    display.SetWindowLevel(*window_level)
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    labelmap = label_layer(scene, segmentation_node, volume)
    centre = None if heatmap is None else hottest_point_inside(heatmap, volume)
    views = [
        slice_view(
            application_logic,
            scene,
            f"TokenUNetRender{o}",
            o,
            volume,
            heatmap,
            heatmap_opacity,
            labelmap,
            0.5,
            (panel, panel),
            centre,
        )
        for o in ORIENTATIONS
    ]
    views.append(surfaces_view(segmentation_node, (panel, panel)))
    joined = side_by_side(views)
    if path is not None:
        write_png(joined, path)
    for index in reversed(range(scene.GetNumberOfNodes())):
        node = scene.GetNthNode(index)
        if node.GetID() not in before:
            scene.RemoveNode(node)
    return joined
