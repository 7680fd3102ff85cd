"""Layer rules of extension.md: each layer imports only what it may (checked at run time and statically), and
the light entry points (``--help``, ``models list/info``, the GUI's model list) load neither torch nor MONAI."""

import ast
import json
import sys

import pytest
from helpers.paths import LIB, MODULE_DIR, SAMPLE_CT
from helpers.processes import run_python

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


def layer_files(layer):
    """Every .py file of a layer, sub-packages (e.g. pipeline/training) included."""
    return sorted(p for p in (LIB / layer).rglob("*.py") if "__pycache__" not in p.parts)


def layer_modules(layer):
    for path in layer_files(layer):
        if path.name == "__main__.py":
            continue
        parts = path.relative_to(MODULE_DIR).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path, root=MODULE_DIR):
    """Absolute module names imported by a file (relative imports resolved against its package under ``root``)."""
    package = path.relative_to(root).with_suffix("").parts[:-1]
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


def test_the_layer_lists_cover_every_file():
    modules = list(layer_modules("pipeline"))
    assert "TokenUNetSegmentLib.pipeline.training.trainer" in modules  # sub-packages are included
    on_disk = {p for p in LIB.rglob("*.py") if "__pycache__" not in p.parts and p.parent != LIB}
    assert on_disk == {p for layer in LAYERS for p in layer_files(layer)}


def test_each_layer_loads_no_forbidden_module_in_a_fresh_interpreter():
    """Layers load in order in one interpreter (model, then pipeline, then mrml): after each, what is loaded is
    what the layer and the ones below it pulled in, which must not include what that layer forbids."""
    code = "import importlib, json, sys\nloaded = {}\n"
    for layer in FORBIDDEN_LOADED:
        code += f"for name in {list(layer_modules(layer))!r}: importlib.import_module(name)\n"
        code += f"loaded[{layer!r}] = sorted(sys.modules)\n"
    code += "print(json.dumps(loaded))\n"
    loaded = json.loads(run_python(code).strip().splitlines()[-1])
    for layer, forbidden in FORBIDDEN_LOADED.items():
        assert [m for m in loaded[layer] if matches(m, forbidden)] == [], layer
    assert "torch" in loaded["model"] and "SimpleITK" in loaded["pipeline"]  # the check sees real imports


def test_light_entry_points_load_neither_torch_nor_monai():
    """``--help``, ``models list`` and ``models info``, the GUI's model list, the whole MRML layer but the
    renderer, and the pipeline package's lazy names: no torch, no MONAI, and ``--help`` declares no command's
    arguments (so neither the trainer, nor evaluation, nor CKA is imported)."""
    mrml = list(layer_modules("mrml"))
    code = (
        "import contextlib, importlib, io, json, sys\n"
        f"for name in {[*mrml, 'TokenUNetSegmentLib.widget.dependencies']!r}: importlib.import_module(name)\n"
        "import TokenUNetSegmentLib.pipeline as pipeline\n"
        "from TokenUNetSegmentLib.pipeline import cli\n"
        "from TokenUNetSegmentLib.pipeline.catalog import ModelStore\n"
        "from TokenUNetSegmentLib.mrml.controller import model_infos\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    codes = [cli.main(['--help']), cli.main(['models', 'list'])]\n"
        "    codes.append(cli.main(['models', 'info', ModelStore().default_id()]))\n"
        "infos = model_infos(ModelStore())\n"
        "lazy = [n for n in pipeline.__all__ if pipeline._LAZY.get(n) in ('metadata', 'run_contract', 'catalog')]\n"
        "resolved = all(getattr(pipeline, n) is not None for n in lazy)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'monai'))\n"
        "commands = sorted(m for m in sys.modules if m.endswith(('.trainer', '.evaluate', '.cka', '.segmentation')))\n"
        "print(json.dumps([heavy, commands, codes, out.getvalue(), [i.input_names for i in infos], resolved]))\n"
    )
    heavy, commands, codes, printed, inputs, resolved = json.loads(run_python(code).strip().splitlines()[-1])
    assert heavy == [] and commands == []
    assert codes == [0, 0, 0] and "segment" in printed and "models" in printed and "abdomen-organs" in printed
    assert "architecture: 32Attn" in printed and inputs and resolved


def test_segmenting_with_a_token_unet_never_imports_monai(tmp_path):
    """A whole ``segment`` run of the bundled Token-UNet (windows, token maps, report, overview) without MONAI,
    whose package import costs seconds per run (15 s on a machine with many optional packages)."""
    code = (
        "import json, sys\n"
        "from TokenUNetSegmentLib.pipeline import cli\n"
        f"code = cli.main(['segment', {str(SAMPLE_CT)!r}, '--out', {str(tmp_path / 'out')!r}, '--device', 'cpu'])\n"
        "print(json.dumps([code, sorted(m for m in sys.modules if m.split('.')[0] == 'monai')]))\n"
    )
    code, monai_modules = json.loads(run_python(code).strip().splitlines()[-1])
    assert code == 0 and (tmp_path / "out" / "report.json").exists()
    assert monai_modules == []


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_source_imports_only_allowed_modules(layer):
    offending = {}
    for path in layer_files(layer):
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
        for path in layer_files("mrml")
        for attr in application_attributes(path.read_text())
        if attr in forbidden
    ]
    assert not offending
    assert set(application_attributes("import slicer\nscene = slicer.mrmlScene\nfrom slicer import app")) == {
        "mrmlScene",
        "app",
    }


def test_rule_checker_catches_a_forbidden_import(tmp_path):
    """The static check is not vacuous: a model-layer file importing SimpleITK would be caught (the probe file
    lives in a copy of the package layout under tmp_path, never in the source tree)."""
    probe = tmp_path / "TokenUNetSegmentLib" / "model" / "_probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("import SimpleITK as sitk\nfrom ..pipeline import segment\n")
    names = set(imported_names(probe, tmp_path))
    assert matches("SimpleITK", FORBIDDEN_IMPORTED["model"]) and "SimpleITK" in names
    assert "TokenUNetSegmentLib.pipeline" in names and matches("TokenUNetSegmentLib.pipeline.segment", names)


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


def file_scope_imports(path):
    """Modules a file imports at file scope (not inside functions)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_headless_logic_imports_no_qt_module():
    """The module file's Logic imports Qt only for a run that does not wait (``qt.QTimer``); the widget-layer
    helpers it uses (GUI binding, dependency checks) import no Qt themselves, and the scripting path
    (``process``, ``startRun``, ``modelInfos``) nothing of the widget layer."""
    tree = ast.parse((MODULE_DIR / "TokenUNetSegment.py").read_text())
    logic = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TokenUNetSegmentLogic")
    methods = {n.name: n for n in logic.body if isinstance(n, ast.FunctionDef)}
    used_widgets = set()
    for name, method in methods.items():
        for node in ast.walk(method):
            if isinstance(node, ast.ImportFrom) and node.module and ".widget." in node.module:
                used_widgets.add(node.module.rsplit(".", 1)[1])
                assert name not in ("process", "startRun", "modelInfos", "_python"), name
            if isinstance(node, ast.Import) and any(alias.name == "qt" for alias in node.names):
                assert name == "process", name
    waiting = ast.unparse(methods["process"]).split("if waitForCompletion:")[1].split("import qt")[0]
    assert "return run.nodes" in waiting  # a waiting run returns before qt is imported
    assert used_widgets and "panel" not in used_widgets
    for module in used_widgets:
        imports = file_scope_imports(LIB / "widget" / f"{module}.py")
        assert not [n for n in imports if matches(n, {"qt", "ctk", "slicer"})], module
