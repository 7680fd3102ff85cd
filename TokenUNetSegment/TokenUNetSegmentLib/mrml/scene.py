"""An application-like MRML set-up without the Slicer application (tests, headless scripts, web front ends).

Inside Slicer the application already did all of this: use ``slicer.mrmlScene`` there instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import slicer


@dataclass
class SceneContext:
    """A scene and the logics that make it behave as in the application (keep it alive while in use)."""

    scene: object
    application_logic: object
    color_logic: object
    volumes_logic: object
    segmentations_logic: object
    subject_hierarchy_logic: object


def create_scene() -> SceneContext:
    """A new scene with color tables, volume, segmentation (converter rules) and subject-hierarchy logics."""
    scene = slicer.vtkMRMLScene()
    application_logic = slicer.vtkSlicerApplicationLogic()
    application_logic.SetMRMLScene(scene)
    color_logic = slicer.vtkSlicerColorLogic()
    color_logic.SetMRMLApplicationLogic(application_logic)
    color_logic.SetMRMLScene(scene)
    color_logic.AddDefaultColorNodes()
    application_logic.SetModuleLogic("Colors", color_logic)
    logics = []
    for cls in (
        slicer.vtkSlicerVolumesLogic,
        slicer.vtkSlicerSegmentationsModuleLogic,
        slicer.vtkSlicerSubjectHierarchyModuleLogic,
    ):
        logic = cls()
        logic.SetMRMLApplicationLogic(application_logic)
        logic.SetMRMLScene(scene)
        logics.append(logic)
    return SceneContext(scene, application_logic, color_logic, *logics)
