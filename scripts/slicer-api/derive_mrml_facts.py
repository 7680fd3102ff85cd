"""Derive the MRML / segmentation / logic C++ methods the module calls from Slicer's headers at given tags.

PyPI's slicer-core (5.11 and newer) gives CI the real MRML, but not the one of Slicer 5.10: a method added after
5.10 would pass every test and fail in the oldest supported application. This script reads the headers of the
classes the module uses (``git show TAG:path`` on a bare snapshot of Slicer/Slicer) and writes, per tag, each
class's base and the names it declares (methods, the accessors of ``vtkSetMacro``-style macros, enum values).
Only names are written, no code. ``Testing/module/test_mrml_api.py`` checks the module's calls against them.

Usage (from the repository root)::

    python scripts/slicer-api/derive_mrml_facts.py --mirror /work/.mirror [--out Testing/slicer_api_facts.json]

It updates the ``mrml`` key of the facts file and leaves every other key as it is.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import subprocess

TAGS = ("v5.10.0", "v5.12.0", "v5.12.3")  # the oldest supported release, and the releases since
HEADERS = {
    "vtkMRMLNode": "Libs/MRML/Core/vtkMRMLNode.h",
    "vtkMRMLScene": "Libs/MRML/Core/vtkMRMLScene.h",
    "vtkMRMLStorableNode": "Libs/MRML/Core/vtkMRMLStorableNode.h",
    "vtkMRMLTransformableNode": "Libs/MRML/Core/vtkMRMLTransformableNode.h",
    "vtkMRMLDisplayableNode": "Libs/MRML/Core/vtkMRMLDisplayableNode.h",
    "vtkMRMLVolumeNode": "Libs/MRML/Core/vtkMRMLVolumeNode.h",
    "vtkMRMLScalarVolumeNode": "Libs/MRML/Core/vtkMRMLScalarVolumeNode.h",
    "vtkMRMLLabelMapVolumeNode": "Libs/MRML/Core/vtkMRMLLabelMapVolumeNode.h",
    "vtkMRMLTensorVolumeNode": "Libs/MRML/Core/vtkMRMLTensorVolumeNode.h",
    "vtkMRMLVectorVolumeNode": "Libs/MRML/Core/vtkMRMLVectorVolumeNode.h",
    "vtkMRMLDiffusionWeightedVolumeNode": "Libs/MRML/Core/vtkMRMLDiffusionWeightedVolumeNode.h",
    "vtkMRMLSegmentationNode": "Libs/MRML/Core/vtkMRMLSegmentationNode.h",
    "vtkMRMLTransformNode": "Libs/MRML/Core/vtkMRMLTransformNode.h",
    "vtkMRMLDisplayNode": "Libs/MRML/Core/vtkMRMLDisplayNode.h",
    "vtkMRMLVolumeDisplayNode": "Libs/MRML/Core/vtkMRMLVolumeDisplayNode.h",
    "vtkMRMLScalarVolumeDisplayNode": "Libs/MRML/Core/vtkMRMLScalarVolumeDisplayNode.h",
    "vtkMRMLColorNode": "Libs/MRML/Core/vtkMRMLColorNode.h",
    "vtkMRMLColorTableNode": "Libs/MRML/Core/vtkMRMLColorTableNode.h",
    "vtkMRMLScriptedModuleNode": "Libs/MRML/Core/vtkMRMLScriptedModuleNode.h",
    "vtkMRMLSubjectHierarchyNode": "Libs/MRML/Core/vtkMRMLSubjectHierarchyNode.h",
    "vtkMRMLAbstractViewNode": "Libs/MRML/Core/vtkMRMLAbstractViewNode.h",
    "vtkMRMLSliceNode": "Libs/MRML/Core/vtkMRMLSliceNode.h",
    "vtkMRMLSliceCompositeNode": "Libs/MRML/Core/vtkMRMLSliceCompositeNode.h",
    "vtkSegment": "Libs/vtkSegmentationCore/vtkSegment.h",
    "vtkSegmentation": "Libs/vtkSegmentationCore/vtkSegmentation.h",
    "vtkOrientedImageData": "Libs/vtkSegmentationCore/vtkOrientedImageData.h",
    "vtkMRMLAbstractLogic": "Libs/MRML/Logic/vtkMRMLAbstractLogic.h",
    "vtkMRMLApplicationLogic": "Libs/MRML/Logic/vtkMRMLApplicationLogic.h",
    "vtkMRMLSliceLogic": "Libs/MRML/Logic/vtkMRMLSliceLogic.h",
    "vtkMRMLColorLogic": "Libs/MRML/Logic/vtkMRMLColorLogic.h",
    "vtkSlicerApplicationLogic": "Base/Logic/vtkSlicerApplicationLogic.h",
    "vtkSlicerModuleLogic": "Base/Logic/vtkSlicerModuleLogic.h",
    "vtkSlicerColorLogic": "Modules/Loadable/Colors/Logic/vtkSlicerColorLogic.h",
    "vtkSlicerVolumesLogic": "Modules/Loadable/Volumes/Logic/vtkSlicerVolumesLogic.h",
    "vtkSlicerSegmentationsModuleLogic": "Modules/Loadable/Segmentations/Logic/vtkSlicerSegmentationsModuleLogic.h",
    "vtkSlicerSubjectHierarchyModuleLogic": (
        "Modules/Loadable/SubjectHierarchy/Logic/vtkSlicerSubjectHierarchyModuleLogic.h"
    ),
    "vtkSlicerTerminologiesModuleLogic": "Modules/Loadable/Terminologies/Logic/vtkSlicerTerminologiesModuleLogic.h",
}
# accessor macros: macro name -> the prefixes/suffixes of the methods it declares
MACROS = {
    "vtkSetMacro": ("Set{}",),
    "vtkGetMacro": ("Get{}",),
    "vtkSetStringMacro": ("Set{}",),
    "vtkGetStringMacro": ("Get{}",),
    "vtkSetObjectMacro": ("Set{}",),
    "vtkGetObjectMacro": ("Get{}",),
    "vtkGetSmartPointerMacro": ("Get{}",),
    "vtkSetClampMacro": ("Set{}",),
    "vtkBooleanMacro": ("{}On", "{}Off"),
    "vtkSetVector2Macro": ("Set{}",),
    "vtkSetVector3Macro": ("Set{}",),
    "vtkSetVector4Macro": ("Set{}",),
    "vtkGetVector2Macro": ("Get{}",),
    "vtkGetVector3Macro": ("Get{}",),
    "vtkGetVector4Macro": ("Get{}",),
    "vtkGetVectorMacro": ("Get{}",),
    "vtkSetVectorMacro": ("Set{}",),
    "vtkGetEnumMacro": ("Get{}",),
    "vtkSetEnumMacro": ("Set{}",),
}
KEYWORDS = {"if", "for", "while", "switch", "return", "sizeof", "defined", "operator", "static_cast"}


def git_show(mirror: pathlib.Path, tag: str, path: str) -> str:
    return subprocess.run(
        ["git", "-C", str(mirror), "show", f"{tag}:{path}"], check=True, capture_output=True, text=True
    ).stdout


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def class_body(header: str, name: str) -> tuple[str, str]:
    """The first base of class ``name`` and the header's text after its declaration, without comments."""
    code = strip_comments(header)
    match = re.search(rf"\bclass\s+(?:\w+\s+)?{name}\s*:\s*public\s+(\w+)", code)
    if match is None:
        raise ValueError(f"no declaration of {name} found")
    return match.group(1), code[match.end() :]


def class_facts(name: str, header: str) -> dict:
    """The class's first base and the names it declares (methods, macro accessors, enum values)."""
    base, body = class_body(header, name)
    names = set()
    for macro, patterns in MACROS.items():
        for argument in re.findall(rf"\b{macro}\s*\(\s*(\w+)", body):
            names.update(pattern.format(argument) for pattern in patterns)
    for declared in re.findall(r"\b([A-Za-z_]\w*)\s*\(", body):
        if declared not in KEYWORDS and not declared.startswith("vtk") and not declared.isupper():
            names.add(declared)
    for enum_body in re.findall(r"\benum\b[^{;]*\{([^}]*)\}", body):
        names.update(re.findall(r"^\s*([A-Za-z_]\w*)", item)[0] for item in enum_body.split(",") if item.strip())
    return {"base": base, "header": HEADERS[name], "names": sorted(names)}


def derive(mirror: pathlib.Path) -> dict:
    facts = {"about": "names each class declares in its header (methods, macro accessors, enum values)", "tags": {}}
    for tag in TAGS:
        commit = subprocess.run(
            ["git", "-C", str(mirror), "rev-list", "-n", "1", tag], check=True, capture_output=True, text=True
        ).stdout.strip()
        classes = {name: class_facts(name, git_show(mirror, tag, path)) for name, path in HEADERS.items()}
        facts["tags"][tag] = {"commit": commit, "classes": classes}
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mirror", type=pathlib.Path, required=True, help="folder holding Slicer+Slicer/repo")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("Testing/slicer_api_facts.json"))
    args = parser.parse_args()
    facts = json.loads(args.out.read_text(encoding="utf-8"))
    facts["mrml"] = derive(args.mirror / "Slicer+Slicer" / "repo")
    args.out.write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
