"""Layer rules of extension.md: each layer imports only what it may (checked at run time and statically)."""

import ast
import sys
from pathlib import Path

import pytest
from fresh_import import modules_loaded_by

MODULE_DIR = Path(__file__).resolve().parents[1] / "TokenUNetSegment"
LIB = MODULE_DIR / "TokenUNetSegmentLib"
LAYERS = ["model", "pipeline", "mrml", "widget"]

# Modules a layer must never pull in, directly or through a dependency (checked in a fresh interpreter).
FORBIDDEN_LOADED = {
    "model": {"slicer", "vtk", "vtkmodules", "qt", "ctk", "SimpleITK", "PythonQt"},
    "pipeline": {"slicer", "vtk", "vtkmodules", "qt", "ctk", "PythonQt"},
    "mrml": {"qt", "ctk", "PythonQt"},
}
# Imports a layer's own code must not write (MONAI itself loads its transforms on import, so
# monai.transforms / monai.data are checked here, in the source).
FORBIDDEN_IMPORTED = {
    "model": {
        "slicer",
        "vtk",
        "vtkmodules",
        "qt",
        "ctk",
        "SimpleITK",
        "monai.transforms",
        "monai.data",
        "monai.inferers",
        "nibabel",
        "TokenUNetSegmentLib.pipeline",
        "TokenUNetSegmentLib.mrml",
        "TokenUNetSegmentLib.widget",
    },
    "pipeline": {"slicer", "vtk", "vtkmodules", "qt", "ctk", "TokenUNetSegmentLib.mrml", "TokenUNetSegmentLib.widget"},
    "mrml": {"qt", "ctk", "TokenUNetSegmentLib.widget"},
    "widget": set(),
}
FORBIDDEN_SLICER_ATTRIBUTES = {"mrml": {"app", "mrmlScene", "modules"}}


def layer_modules(layer):
    for path in sorted((LIB / layer).rglob("*.py")):
        if path.name == "__main__.py":
            continue
        parts = path.relative_to(MODULE_DIR).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path):
    """Absolute module names imported by a file (relative imports resolved against its package)."""
    package = path.relative_to(MODULE_DIR).with_suffix("").parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def matches(name, forbidden):
    return any(name == f or name.startswith(f + ".") for f in forbidden)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN_LOADED))
def test_layer_loads_no_forbidden_module_in_a_fresh_interpreter(layer):
    loaded = modules_loaded_by(list(layer_modules(layer)))
    assert not [m for m in loaded if matches(m, FORBIDDEN_LOADED[layer])]


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_source_imports_only_allowed_modules(layer):
    offending = {}
    for path in (LIB / layer).rglob("*.py"):
        bad = sorted({name for name in imported_names(path) if matches(name, FORBIDDEN_IMPORTED[layer])})
        if bad:
            offending[str(path.relative_to(MODULE_DIR))] = bad
    assert not offending


def application_attributes(source):
    """``slicer.X`` attributes a source uses, as attribute access or ``from slicer import X``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "slicer":
            yield node.attr
        elif isinstance(node, ast.ImportFrom) and node.module == "slicer":
            yield from (alias.name for alias in node.names)


def test_mrml_layer_never_reaches_for_the_application_scene():
    forbidden = FORBIDDEN_SLICER_ATTRIBUTES["mrml"]
    offending = [
        f"{path.name}: slicer.{attr}"
        for path in (LIB / "mrml").rglob("*.py")
        for attr in application_attributes(path.read_text())
        if attr in forbidden
    ]
    assert not offending
    assert set(application_attributes("import slicer\nscene = slicer.mrmlScene\nfrom slicer import app")) == {
        "mrmlScene",
        "app",
    }


def test_rule_checker_catches_a_forbidden_import(tmp_path):
    """The static check is not vacuous: a model-layer file importing SimpleITK would be caught."""
    fake = MODULE_DIR / "TokenUNetSegmentLib" / "model" / "_probe.py"
    names = set()
    try:
        fake.write_text("import SimpleITK as sitk\nfrom ..pipeline import segment\n")
        names = set(imported_names(fake))
    finally:
        fake.unlink()
    assert matches("SimpleITK", FORBIDDEN_IMPORTED["model"]) and "SimpleITK" in names
    assert "TokenUNetSegmentLib.pipeline" in names


SLICER_BUNDLED = {"slicer", "vtk", "qt", "ctk", "__main__"}


def test_module_file_imports_only_stdlib_and_slicer_at_file_scope():
    tree = ast.parse((MODULE_DIR / "TokenUNetSegment.py").read_text())
    top_level = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            top_level += [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            top_level.append(node.module.split(".")[0])
        elif isinstance(node, ast.Try):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.module:
                    top_level.append(inner.module.split(".")[0])
    assert top_level
    assert [m for m in top_level if m not in sys.stdlib_module_names and m not in SLICER_BUNDLED] == []
