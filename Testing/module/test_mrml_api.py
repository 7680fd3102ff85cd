"""The MRML / segmentation / logic methods the Slicer-facing code calls exist in Slicer 5.10 and the releases since.

CI runs this code over PyPI's slicer-core (5.11 and newer), so a method added after 5.10 would pass every other
test. ``scripts/slicer-api/derive_mrml_facts.py`` read the headers of the classes used at each tag (the ``mrml``
key of ``slicer_api_facts.json``: names only). Every CamelCase attribute the module, widget and MRML layers use is
classified below: a Slicer class (checked against the facts, through its bases), VTK's own API (VTK 9, not
Slicer's), or not VTK at all. A new call fails here until it is classified, and a Slicer one until the facts
show it at every tag.
"""

from __future__ import annotations

import ast

from helpers.paths import MODULE_DIR, ROOT
from helpers.slicer_facts import FACTS

LIBRARY = MODULE_DIR / "TokenUNetSegmentLib"
SOURCES = [
    MODULE_DIR / "TokenUNetSegment.py",
    *sorted((LIBRARY / "mrml").glob("*.py")),
    *sorted((LIBRARY / "widget").glob("*.py")),
]
MODULES = {"qt", "ctk", "vtk", "slicer", "typing", "unittest", "importlib", "metadata"}  # slicer.vtkX: see below

# method -> the Slicer classes the code calls it on (each must declare it, itself or through a base)
SLICER = {
    "AddDefaultColorNodes": ("vtkSlicerColorLogic",),
    "AddNewNodeByClass": ("vtkMRMLScene",),
    "AddNode": ("vtkMRMLScene",),
    "AddNodeReferenceID": ("vtkMRMLSegmentationNode",),
    "AddRepresentation": ("vtkSegment",),
    "AddSegment": ("vtkSegmentation",),
    "AddSliceNode": ("vtkMRMLSliceLogic",),
    "Clear": ("vtkMRMLScene",),
    "ContainsRepresentation": ("vtkSegmentation",),
    "CreateClosedSurfaceRepresentation": ("vtkMRMLSegmentationNode",),
    "CreateDefaultDisplayNodes": ("vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode", "vtkMRMLLabelMapVolumeNode"),
    "CreateFolderItem": ("vtkMRMLSubjectHierarchyNode",),
    "CreateItem": ("vtkMRMLSubjectHierarchyNode",),
    "EndCloseEvent": ("vtkMRMLScene",),
    "EndImportEvent": ("vtkMRMLScene",),
    "EndModify": ("vtkMRMLNode",),
    "ExportVisibleSegmentsToLabelmapNode": ("vtkSlicerSegmentationsModuleLogic",),
    "FitSliceToAll": ("vtkMRMLSliceLogic",),
    "Flagged": ("vtkSlicerSegmentationsModuleLogic",),
    "GenerateUniqueName": ("vtkMRMLScene",),
    "GenerateUniqueSegmentID": ("vtkSegmentation",),
    "GetAttribute": ("vtkMRMLNode",),
    "GetAttributeNames": ("vtkMRMLNode",),
    "GetColor": ("vtkSegment",),
    "GetDisplayNode": ("vtkMRMLScalarVolumeNode", "vtkMRMLLabelMapVolumeNode"),
    "GetHideFromEditors": ("vtkMRMLNode",),
    "GetID": ("vtkMRMLNode",),
    "GetIJKToRASMatrix": ("vtkMRMLVolumeNode",),
    "GetImageData": ("vtkMRMLVolumeNode",),
    "GetImageDataConnection": ("vtkMRMLSliceLogic",),
    "GetImageToWorldMatrix": ("vtkOrientedImageData",),
    "GetItemAttribute": ("vtkMRMLSubjectHierarchyNode",),
    "GetItemByDataNode": ("vtkMRMLSubjectHierarchyNode",),
    "GetItemChildren": ("vtkMRMLSubjectHierarchyNode",),
    "GetItemParent": ("vtkMRMLSubjectHierarchyNode",),
    "GetLabelValue": ("vtkSegment",),
    "GetMatrixTransformToWorld": ("vtkMRMLTransformNode",),
    "GetName": ("vtkMRMLNode", "vtkSegment"),
    "GetNodeByID": ("vtkMRMLScene",),
    "GetNodeReference": ("vtkMRMLScriptedModuleNode",),
    "GetNodesByClass": ("vtkMRMLScene",),
    "GetNthNode": ("vtkMRMLScene",),
    "GetNthNodeByClass": ("vtkMRMLScene",),
    "GetNthNodeReference": ("vtkMRMLSegmentationNode",),
    "GetNthSegment": ("vtkSegmentation",),
    "GetNthSegmentID": ("vtkSegmentation",),
    "GetNumberOfNodeReferences": ("vtkMRMLSegmentationNode",),
    "GetNumberOfNodes": ("vtkMRMLScene",),
    "GetNumberOfNodesByClass": ("vtkMRMLScene",),
    "GetNumberOfSegments": ("vtkSegmentation",),
    "GetParameter": ("vtkMRMLScriptedModuleNode",),
    "GetParentTransformNode": ("vtkMRMLScalarVolumeNode",),
    "GetRepresentation": ("vtkSegment",),
    "GetScene": ("vtkMRMLNode",),
    "GetSceneItemID": ("vtkMRMLSubjectHierarchyNode",),
    "GetSegment": ("vtkSegmentation",),
    "GetSegmentation": ("vtkMRMLSegmentationNode",),
    "GetSingletonNode": ("vtkMRMLScene",),
    "GetSliceCompositeNode": ("vtkMRMLSliceLogic",),
    "GetSourceRepresentationName": ("vtkSegmentation",),
    "GetSubjectHierarchyNode": ("vtkMRMLSubjectHierarchyNode",),
    "GetTag": ("vtkSegment",),
    "IsNodePresent": ("vtkMRMLScene",),
    "IsTransformToWorldLinear": ("vtkMRMLTransformNode",),
    "JumpSliceByOffsetting": ("vtkMRMLSliceNode",),
    "RemoveClosedSurfaceRepresentation": ("vtkMRMLSegmentationNode",),
    "RemoveNode": ("vtkMRMLScene",),
    "RemoveSegment": ("vtkSegmentation",),
    "RemoveTag": ("vtkSegment",),
    "SetAndObserveColorNodeID": ("vtkMRMLScalarVolumeDisplayNode",),
    "SetAndObserveTransformNodeID": ("vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode"),
    "SetAttribute": ("vtkMRMLNode",),
    "SetAutoWindowLevel": ("vtkMRMLScalarVolumeDisplayNode",),
    "SetBackgroundVolumeID": ("vtkMRMLSliceCompositeNode",),
    "SetColor": ("vtkMRMLColorTableNode", "vtkSegment", "vtk:vtkProperty"),
    "SetColorAutoGenerated": ("vtkSegment",),
    "SetDimensions": ("vtkMRMLSliceNode",),
    "SetForegroundOpacity": ("vtkMRMLSliceCompositeNode",),
    "SetForegroundVolumeID": ("vtkMRMLSliceCompositeNode",),
    "SetIJKToRASMatrix": ("vtkMRMLVolumeNode",),
    "SetImageToWorldMatrix": ("vtkOrientedImageData",),
    "SetItemAttribute": ("vtkMRMLSubjectHierarchyNode",),
    "SetItemExpanded": ("vtkMRMLSubjectHierarchyNode",),
    "SetItemParent": ("vtkMRMLSubjectHierarchyNode",),
    "SetLabelOpacity": ("vtkMRMLSliceCompositeNode",),
    "SetLabelValue": ("vtkSegment",),
    "SetLabelVolumeID": ("vtkMRMLSliceCompositeNode",),
    "SetMRMLApplicationLogic": ("vtkMRMLSliceLogic", "vtkSlicerColorLogic", "vtkSlicerSegmentationsModuleLogic"),
    "SetMRMLScene": ("vtkSlicerApplicationLogic", "vtkMRMLSliceLogic", "vtkSlicerVolumesLogic"),
    "SetModuleLogic": ("vtkSlicerApplicationLogic",),
    "SetModuleName": ("vtkMRMLScriptedModuleNode",),
    "SetName": ("vtkMRMLNode", "vtkSegment"),
    "SetNameAutoGenerated": ("vtkSegment",),
    "SetNodeReferenceID": ("vtkMRMLScriptedModuleNode",),
    "SetNumberOfColors": ("vtkMRMLColorTableNode",),
    "SetOrientation": ("vtkMRMLSliceNode",),
    "SetParameter": ("vtkMRMLScriptedModuleNode",),
    "SetReferenceImageGeometryParameterFromVolumeNode": ("vtkMRMLSegmentationNode",),
    "SetSegmentStatus": ("vtkSlicerSegmentationsModuleLogic",),
    "SetSingletonTag": ("vtkMRMLNode",),
    "SetSourceRepresentationToBinaryLabelmap": ("vtkMRMLSegmentationNode",),
    "SetTag": ("vtkSegment",),
    "SetTerminology": ("vtkSegment",),
    "SetTypeToUser": ("vtkMRMLColorTableNode",),
    "SetWindowLevel": ("vtkMRMLScalarVolumeDisplayNode",),
    "SetWindowLevelMinMax": ("vtkMRMLScalarVolumeDisplayNode",),
    "StartCloseEvent": ("vtkMRMLScene",),
    "StartModify": ("vtkMRMLNode",),
    "UpdateImageData": ("vtkMRMLSliceLogic",),
    "GetVoxelVectorType": ("vtkMRMLVectorVolumeNode",),
    "VoxelVectorTypeColorRGB": ("vtkMRMLVolumeNode",),
    "VoxelVectorTypeColorRGBA": ("vtkMRMLVolumeNode",),
    "VoxelVectorTypeSpatial": ("vtkMRMLVolumeNode",),
    "VoxelVectorTypeSpatialCovariant": ("vtkMRMLVolumeNode",),
}
# VTK's own API (vtkObject, data objects, rendering): not Slicer's, stable across the VTK 9 of Slicer 5.10+
VTK = {
    "AddActor": "vtkRenderer", "AddInputData": "vtkImageAppend", "AddObserver": "vtkObject",
    "AddRenderer": "vtkRenderWindow", "RemoveObserver": "vtkObject",
    "DeepCopy": "vtkImageData", "Finalize": "vtkRenderWindow", "GetActiveCamera": "vtkRenderer",
    "GetDimensions": "vtkImageData", "GetElement": "vtkMatrix4x4", "GetExtent": "vtkImageData",
    "GetId": "vtkIdList", "GetItemAsObject": "vtkCollection", "GetNumberOfIds": "vtkIdList",
    "GetNumberOfItems": "vtkCollection", "GetNumberOfPoints": "vtkDataSet",
    "GetNumberOfScalarComponents": "vtkImageData", "GetOutput": "vtkAlgorithm", "GetPointData": "vtkDataSet",
    "GetProperty": "vtkActor", "GetResult": "vtkPNGWriter", "GetScalars": "vtkDataSetAttributes",
    "GetTensors": "vtkDataSetAttributes", "IsA": "vtkObjectBase",
    "Modified": "vtkObject", "ModifiedEvent": "vtkCommand", "Render": "vtkRenderWindow",
    "ResetCamera": "vtkRenderer", "ScalarVisibilityOff": "vtkMapper", "SetAppendAxis": "vtkImageAppend",
    "SetBackground": "vtkRenderer", "SetComponents": "vtkImageExtractComponents", "SetElement": "vtkMatrix4x4",
    "SetExtent": "vtkImageData", "SetFocalPoint": "vtkCamera",
    "SetInput": "vtkWindowToImageFilter", "SetInputBufferTypeToRGB": "vtkWindowToImageFilter",
    "SetInputConnection": "vtkAlgorithm", "SetInputData": "vtkAlgorithm", "SetMapper": "vtkActor",
    "SetOffScreenRendering": "vtkRenderWindow", "SetPosition": "vtkCamera", "SetScalars": "vtkDataSetAttributes",
    "SetSize": "vtkRenderWindow", "SetViewUp": "vtkCamera", "Update": "vtkAlgorithm", "Write": "vtkWriter",
    "WriteToMemoryOn": "vtkPNGWriter",
}  # fmt: skip
# not VTK at all: Python classes and enums of this project, Python's, Qt's and the Python-scripted Slicer modules'
NOT_VTK = {
    "Annotated", "CANCELLED", "COMPLETED", "DECLINED", "FAILED", "IDLE", "RUNNING", "ModelInfo",
    "PackageNotFoundError", "PyTorchUtilsLogic", "SampleDataLogic", "SkipTest", "T", "QDesktopServices",
    "QFileDialog", "QListWidgetItem", "QLabel", "QTimer", "QUrl", "Qt", "UserRole", "ArgumentTypeError",
}  # fmt: skip


def used_names():
    """(name, receiver source, file:line) of every CamelCase attribute outside module namespaces."""
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr[:1].isupper():
                receiver = ast.unparse(node.value)
                if receiver in MODULES:
                    continue
                yield node.attr, receiver, f"{path.relative_to(ROOT)}:{node.lineno}"


def declared(tag: str, cls: str, name: str) -> bool:
    classes = FACTS["mrml"]["tags"][tag]["classes"]
    while cls in classes:
        if name in classes[cls]["names"]:
            return True
        cls = classes[cls]["base"]
    return False


def test_every_camelcase_attribute_is_classified():
    unknown = sorted(
        {f"{where}: {receiver}.{name}" for name, receiver, where in used_names()}
        - {f"{w}: {r}.{n}" for n, r, w in used_names() if n in SLICER or n in VTK or n in NOT_VTK}
    )
    assert unknown == [], "classify these in test_mrml_api.py (Slicer class, VTK or not VTK)"
    overlaps = (set(SLICER) & set(VTK)) | (set(SLICER) & NOT_VTK) | (set(VTK) & NOT_VTK)
    assert overlaps == set()


def test_every_slicer_method_is_declared_at_every_tag():
    tags = FACTS["mrml"]["tags"]
    assert {"v5.10.0", "v5.12.3"} <= set(tags), "the oldest supported release and the newest one"
    used = {name for name, _r, _w in used_names()}
    problems = [
        f"{cls}.{name} not declared at Slicer {tag}"
        for name, classes in SLICER.items()
        for cls in classes
        if not cls.startswith("vtk:")
        for tag in tags
        if not declared(tag, cls, name)
    ]
    assert problems == []
    assert set(SLICER) <= used, f"no longer used (remove): {sorted(set(SLICER) - used)}"


def test_slicer_classes_constructed_or_named_exist_at_every_tag():
    """``slicer.vtkX`` (constructors, static methods) and class names in strings are classes the facts hold."""
    names = set()
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and ast.unparse(node.value) == "slicer" and node.attr.startswith("vtk"):
                names.add(node.attr)
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if node.value.startswith(("vtkMRML", "vtkSlicer")) and node.value.isidentifier():
                    names.add(node.value)
    for tag, facts in FACTS["mrml"]["tags"].items():
        assert names - set(facts["classes"]) == set(), f"classes not in the facts at {tag}"
    assert {"vtkSegment", "vtkSlicerSegmentationsModuleLogic", "vtkMRMLScalarVolumeNode"} <= names


def test_the_checker_catches_a_method_slicer_5_10_lacks():
    assert declared("v5.10.0", "vtkSegment", "SetTerminology")  # the reason 5.10 is the oldest supported
    assert declared("v5.10.0", "vtkMRMLLabelMapVolumeNode", "GetImageData")  # through vtkMRMLVolumeNode
    assert not declared("v5.10.0", "vtkSegmentation", "SetTerminology")
    assert not declared("v5.10.0", "vtkMRMLScene", "NoSuchMethod")
