"""The module without the Slicer application: .ui <-> parameters <-> code, dependencies, sample registration."""

import ast
import hashlib
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers.paths import MODULE_DIR, ROOT
from helpers.processes import run_python
from helpers.ui import UI_FILE, ui_widgets
from TokenUNetSegmentLib.mrml.parameters import (
    MAX_INPUTS,
    Parameters,
    choices,
    node_fields,
    selector_types,
    value_fields,
    value_range,
)
from TokenUNetSegmentLib.widget.dependencies import (
    PROTECTED,
    TORCH_REQUIREMENT,
    constraints_text,
    dependencies_ready,
    missing_requirements,
    read_requirements,
    torch_available,
)

MODULE_FILE = MODULE_DIR / "TokenUNetSegment.py"
GUI_SOURCES = [MODULE_FILE, *sorted((MODULE_DIR / "TokenUNetSegmentLib" / "widget").glob("*.py"))]
# widget class -> the parameter types it can show (as Slicer's parameterNodeWrapper connects them)
WIDGET_TYPES = {
    "QCheckBox": bool,
    "QComboBox": str,
    "ctkSliderWidget": float,
    "QDoubleSpinBox": float,
    "QLineEdit": str,
    "QSpinBox": int,
}


def test_every_slicer_parameter_name_maps_to_a_parameter_field_of_a_fitting_type():
    bound = {}
    for name, (cls, properties) in ui_widgets().items():
        parameter = properties.get("SlicerParameterName")
        if parameter is None:
            continue
        assert parameter not in bound, f"{parameter} bound twice"
        bound[parameter] = name
        if parameter in node_fields():
            assert cls == "qMRMLNodeComboBox", name
            assert properties["nodeTypes"] == selector_types(parameter), name
            assert properties["nodeTypes"][0] == node_fields()[parameter], name
        else:
            assert parameter in value_fields(), f"{name}: no parameter field '{parameter}'"
            assert WIDGET_TYPES[cls] is value_fields()[parameter], name
            if cls == "QComboBox":
                assert choices(parameter), f"{parameter}: a combo box needs choices"
            if cls == "ctkSliderWidget":
                low, high = value_range(parameter)
                assert (float(properties["minimum"]), float(properties["maximum"])) == (low, high), name
    # the inputs, the output and the run options are bound; the device combo is filled by the panel (cuda:N)
    assert {f"inputVolume{i}" for i in range(MAX_INPUTS)} | {"outputSegmentation", "runMode"} <= set(bound)
    # the first selector also lists vector volumes (a selector lists no subclass it does not name), whose components
    # the Input channels field names
    assert selector_types("inputVolume0") == ["vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode"]
    assert bound["inputChannels"] == "inputChannelsEdit" and value_fields()["inputChannels"] is str
    assert "device" not in bound and choices("device") is None


def test_the_checker_rejects_a_binding_to_an_unknown_field():
    assert "notAField" not in value_fields() and "notAField" not in node_fields()
    assert WIDGET_TYPES["QCheckBox"] is not value_fields()["attentionThreshold"]


def used_ui_names(path):
    """Widget names a source reads from ``ui`` / ``self.ui`` (f-strings expanded over the input channels)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            base = node.value
            if (isinstance(base, ast.Name) and base.id == "ui") or (
                isinstance(base, ast.Attribute) and base.attr == "ui"
            ):
                names.add(node.attr)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
            target, attribute = node.args[0], node.args[1]
            is_ui = (isinstance(target, ast.Name) and target.id == "ui") or (
                isinstance(target, ast.Attribute) and target.attr == "ui"
            )
            if is_ui and isinstance(attribute, ast.JoinedStr):
                prefix = "".join(v.value for v in attribute.values if isinstance(v, ast.Constant))
                names.update(f"{prefix}{i}" for i in range(MAX_INPUTS))
            elif is_ui and isinstance(attribute, ast.Constant):
                names.add(attribute.value)
    return names


def test_every_widget_the_code_uses_exists_in_the_ui():
    widgets = ui_widgets()
    used = set().union(*(used_ui_names(path) for path in GUI_SOURCES))
    assert {"segmentButton", "inputSelector3", "tokenList", "progressBar"} <= used  # the scan sees the glue
    assert sorted(used - set(widgets)) == []


def test_node_selectors_follow_the_scene():
    root = ET.parse(UI_FILE).getroot()
    receivers = {
        c.findtext("receiver")
        for c in root.iter("connection")
        if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
    }
    selectors = {name for name, (cls, _) in ui_widgets().items() if cls == "qMRMLNodeComboBox"}
    assert selectors and selectors <= receivers
    assert root.find("widget").get("class") == "qMRMLWidget"


def pinned_in(path: Path, seen=()) -> dict[str, str]:
    """Lowercase name -> version of every ``name==version`` line of a requirements file, following ``-r`` includes
    (paths relative to the repository root, as pip resolves them from there)."""
    pins = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("-r "):
            included = ROOT / line[3:].strip()
            assert included.is_file() and included not in seen, f"{path.name}: bad include {line!r}"
            pins.update(pinned_in(included, (*seen, path)))
        elif match := re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*(\S+)", line):
            pins[match.group(1).lower()] = match.group(2)
    return pins


def unpinned_for_ci(user_pins, dev_file: Path) -> list[str]:
    """The user's pins that the development/CI environment does not install at the same version."""
    dev = pinned_in(dev_file)
    return [f"{name}=={version}" for name, version in user_pins if dev.get(name.lower()) != version]


def test_requirements_are_pinned_and_never_replace_slicer_packages(tmp_path):
    pins = read_requirements()
    assert {name.lower() for name, _ in pins} == {"monai", "einops", "safetensors"}
    assert not {name.lower() for name, _ in pins} & PROTECTED
    # what CI tests is what users get: every pin, at the same version, in the dev environment
    assert unpinned_for_ci(pins, ROOT / "requirements-dev.txt") == []
    assert pinned_in(ROOT / "requirements-dev.txt")["torch"] == "2.13.0"  # the CPU build from local disk
    drifted = tmp_path / "requirements-dev.txt"
    drifted.write_text("torch==2.13.0\nmonai==0.0.1\neinops==0.8.2\n")
    assert "monai==0.0.1" not in unpinned_for_ci([("monai", "0.0.1")], drifted)
    assert unpinned_for_ci(pins, drifted) != []  # a dev file that drifts from the user's pins is caught
    bad = tmp_path / "requirements.txt"
    bad.write_text("monai>=1.0\n")
    with pytest.raises(ValueError, match="pin"):
        read_requirements(bad)
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("# comment\nSimpleITK==2.0.0\ntorch==2.0.0  # never\neinops==0.8.2\n")
    assert read_requirements(mixed) == [("einops", "0.8.2")]


def test_only_absent_packages_are_installed():
    versions = {"monai": "1.5.0", "einops": None, "safetensors": "0.8.0"}
    pins = [("monai", "1.6.1"), ("einops", "0.8.2"), ("safetensors", "0.8.0")]
    assert missing_requirements(pins, versions.get) == ["einops==0.8.2"]
    assert missing_requirements(read_requirements()) == []  # this environment has them all


def test_torch_requirement_is_monais_own():
    from importlib.metadata import requires, version

    from packaging.requirements import Requirement

    (name, version_pin) = next((n, v) for n, v in read_requirements() if n.lower() == "monai")
    assert version("monai") == version_pin  # the environment has the MONAI users get
    torch = [Requirement(r) for r in requires("monai") if Requirement(r).name == "torch" and not Requirement(r).marker]
    assert [str(r.specifier) for r in torch] == [TORCH_REQUIREMENT]


def test_constraints_pin_the_installed_torch_numpy_and_simpleitk():
    versions = {"torch": "2.9.1+cu128", "numpy": "2.0.2", "SimpleITK": None}
    text = constraints_text(versions.get)
    assert [line for line in text.splitlines() if not line.startswith("#")] == ["torch==2.9.1+cu128", "numpy==2.0.2"]


def test_dependency_checks_read_package_metadata_without_importing_torch():
    assert torch_available({"torch": "2.13.0"}.get) and not torch_available({}.get)
    assert not dependencies_ready({"torch": "2.13.0"}.get)  # MONAI & co. missing
    code = (
        "import sys; from TokenUNetSegmentLib.widget.dependencies import dependencies_ready;"
        "from TokenUNetSegmentLib.pipeline.catalog import ModelStore;"
        "assert dependencies_ready(); ModelStore().entries();"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'monai')))"
    )
    assert run_python(code).strip() == "[]"


def module_tree():
    return ast.parse(MODULE_FILE.read_text())


def test_sample_data_is_registered_with_the_bundled_files_sha256_and_only_inside_slicer():
    constants = {
        t.id: n.value.value
        for n in module_tree().body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)
    }
    sample = MODULE_DIR / "Resources" / "Samples" / constants["SAMPLE_FILE"]
    assert hashlib.sha256(sample.read_bytes()).hexdigest() == constants["SAMPLE_SHA256"]
    source = MODULE_FILE.read_text()
    assert 'checksums=f"SHA256:{SAMPLE_SHA256}"' in source
    # the registration hook is connected only when the application exists
    guarded = [n for n in ast.walk(module_tree()) if isinstance(n, ast.If) and "slicer.app" in ast.unparse(n.test)]
    assert any("registerSampleData" in ast.unparse(n) for n in guarded)
    calls = [n for n in ast.walk(module_tree()) if isinstance(n, ast.Call) and "registerSampleData" in ast.unparse(n)]
    assert all(any(c in ast.unparse(g) for g in guarded) for c in map(ast.unparse, calls))


def test_logic_process_has_the_scripting_signature():
    logic = next(n for n in module_tree().body if isinstance(n, ast.ClassDef) and n.name == "TokenUNetSegmentLogic")
    process = next(n for n in logic.body if isinstance(n, ast.FunctionDef) and n.name == "process")
    names = [a.arg for a in process.args.args]
    assert names[:6] == ["self", "inputVolumes", "outputSegmentation", "model", "device", "waitForCompletion"]
    defaults = dict(zip(names[-len(process.args.defaults) :], process.args.defaults, strict=True))
    assert ast.literal_eval(defaults["model"]) is None and ast.literal_eval(defaults["device"]) == "auto"
    assert ast.literal_eval(defaults["waitForCompletion"]) is True
    classes = {n.name for n in module_tree().body if isinstance(n, ast.ClassDef)}
    assert classes == {"TokenUNetSegment", "TokenUNetSegmentWidget", "TokenUNetSegmentLogic", "TokenUNetSegmentTest"}


def test_parameters_dataclass_defaults_are_what_the_ui_starts_with():
    defaults = Parameters()
    assert defaults.device == "auto" and defaults.heatmapKind in choices("heatmapKind")
    low, high = value_range("attentionThreshold")
    assert low <= defaults.attentionThreshold <= high
