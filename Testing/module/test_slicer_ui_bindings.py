"""The .ui file and the parameter bindings against Slicer's real sources at the supported tags (facts in
slicer_api_facts.json, derived by ``scripts/slicer-api/derive_facts.py``): every widget class and property
exists in the pinned CTK/qMRML/Qt classes, and every parameter is bound and stored the way Slicer's real
``parameterNodeWrapper`` (its behaviour recorded in the facts) would bind and store it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from helpers.slicer_facts import FACTS, TAGS
from helpers.ui import UI_FILE


def class_chain(tag: str, name: str) -> list[dict]:
    """The class and its bases, from the Slicer/CTK facts at ``tag`` and Qt's."""
    chain = []
    while name is not None:
        info = FACTS["slicer"][tag]["classes"].get(name) or FACTS["qt"]["classes"].get(name)
        if info is None:
            raise KeyError(name)
        chain.append(info)
        name = info["base"]
    return chain


def ui_elements():
    root = ET.parse(UI_FILE).getroot()
    for element in root.iter("widget"):
        properties = [(p.get("name"), p.get("stdset")) for p in element.findall("property")]
        yield element.get("name"), element.get("class"), properties
    for element in root.iter("customwidget"):
        yield "customwidget", element.findtext("class"), [("extends:" + element.findtext("extends"), None)]


def test_ui_widget_classes_and_properties_exist_in_the_pinned_ctk_qmrml_and_qt():
    problems = []
    for tag in TAGS:
        for name, cls, properties in ui_elements():
            try:
                chain = class_chain(tag, cls)
            except KeyError as missing:
                problems.append(f"{tag}: {name}: class {missing} unknown")
                continue
            known = set().union(*(set(c["properties"]) for c in chain))
            for prop, stdset in properties:
                if prop.startswith("extends:"):
                    if prop.split(":", 1)[1] not in [c["base"] for c in chain[:-1]] + [cls]:
                        problems.append(f"{tag}: custom widget {cls} does not extend {prop.split(':', 1)[1]}")
                    continue
                if stdset == "0":  # a dynamic property (SlicerParameterName): not a Q_PROPERTY
                    continue
                if prop not in known:
                    problems.append(f"{tag}: {name} ({cls}) has no property '{prop}'")
    assert problems == []


# -- parameters against Slicer's real parameterNodeWrapper ---------------------------------------------------
@dataclass
class Field:
    """How the module declares a parameter to the wrapper (the same helpers build the wrapper class)."""

    kind: str  # bool, int, float, str or node
    choices: tuple | None
    range: tuple | None
    default: object


def wrapper_fields() -> dict[str, Field]:
    from TokenUNetSegmentLib.mrml.parameters import Parameters, choices, node_fields, value_fields, value_range

    fields = {name: Field("node", None, None, None) for name in node_fields()}
    defaults = Parameters()
    for name, kind in value_fields().items():
        fields[name] = Field(kind.__name__, choices(name), value_range(name), getattr(defaults, name))
    return fields


def bindings() -> dict[str, tuple[str, str]]:
    """SlicerParameterName -> (widget name, widget class) of the .ui file."""
    found = {}
    for element in ET.parse(UI_FILE).getroot().iter("widget"):
        for prop in element.findall("property"):
            if prop.get("name") == FACTS["slicer"][TAGS[0]]["parameter_node_wrapper"]["property_name"]:
                found[prop[0].text] = (element.get("name"), element.get("class"))
    return found


def test_every_binding_has_a_gui_connector_in_the_real_parameter_node_wrapper():
    fields = wrapper_fields()
    problems = []
    for parameter, (widget, cls) in bindings().items():
        field = fields[parameter]
        label = field.kind + ("+Choice" if field.choices else "") + ("+WithinRange" if field.range else "")
        for tag in TAGS:
            connectors = FACTS["slicer"][tag]["parameter_node_wrapper"]["connectors"]
            if cls not in connectors:
                problems.append(f"{tag}: {widget}: no connector is known for {cls}")
                continue
            connector = connectors[cls][label]
            if connector is None or connector.startswith("error"):
                problems.append(f"{tag}: {widget} ({cls}) cannot show a {label} parameter: {connector}")
    assert problems == []


def candidates(field) -> list:
    if field.choices:
        extra = ["", "other", "cuda:0", "cuda:1", "cuda:7"] if field.kind == "str" else []
        return list(field.choices) + extra
    if field.range:
        low, high = field.range
        return [low, high, low - 1e-6, high + 1e-6, (low + high) / 2, 0.0, low / 2, 1.0]
    return []


def wrapper_accepts(tag, field, value) -> bool:
    validators = FACTS["slicer"][tag]["parameter_node_wrapper"]["validators"]
    if field.choices and value not in field.choices:
        return not validators["Choice"]["rejects_other"]
    if field.range:
        low, high = field.range
        inclusive = validators["WithinRange"]
        above = value > low if not inclusive["inclusive_minimum"] else value >= low
        below = value < high if not inclusive["inclusive_maximum"] else value <= high
        return above and below
    return True


def test_the_module_accepts_exactly_the_values_the_wrapper_validators_accept():
    """A value the module accepts but the wrapper refuses breaks the GUI binding (e.g. a stored ``cuda:1``)."""
    from dataclasses import replace

    from TokenUNetSegmentLib.mrml.parameters import Parameters

    problems = []
    for name, field in wrapper_fields().items():
        for value in candidates(field):
            module_accepts = not replace(Parameters(), **{name: value}).validate()
            for tag in TAGS:
                if module_accepts != wrapper_accepts(tag, field, value):
                    problems.append(
                        f"{tag}: {name}={value!r}: module {module_accepts}, parameterNodeWrapper "
                        f"{wrapper_accepts(tag, field, value)}"
                    )
        if field.kind != "node" and not wrapper_accepts(TAGS[0], field, field.default):
            problems.append(f"{name}: default {field.default!r} fails its own validators")
    assert problems == []


def test_parameters_are_stored_as_the_real_wrapper_stores_them():
    import slicer
    from TokenUNetSegmentLib.mrml.parameters import Parameters, write_parameters

    scene = slicer.vtkMRMLScene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    fields = wrapper_fields()
    for tag in TAGS:
        storage = FACTS["slicer"][tag]["parameter_node_wrapper"]["storage"]
        probes = {"bool": storage["flag"], "float": storage["level"], "str": storage["text"], "int": storage["count"]}
        parameters = Parameters()
        expected, references = {}, {}
        for name, field in fields.items():
            if field.kind == "node":
                setattr(parameters, name, volume)
                references[name] = storage["volume"]
            elif field.kind in probes and not field.choices and not field.range:
                setattr(parameters, name, probes[field.kind]["value"])
                expected[name] = probes[field.kind]["parameter"]
        node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
        write_parameters(node, parameters)
        assert {name: node.GetParameter(name) for name in expected} == expected
        for name, fact in references.items():
            assert fact["reference_role"] and node.GetNodeReferenceID(name) == volume.GetID()
            assert node.GetParameter(name) == fact["parameter"]


class NodeComboBox:
    """A qMRMLNodeComboBox as far as the binding goes: it shows only a node of a class it lists (no subclass, as
    ``showChildNodeTypes`` is off in the .ui file)."""

    def __init__(self, parameter: str, node_types: list[str]):
        self.parameter, self.nodeTypes, self.current = parameter, node_types, None

    def property(self, name):
        return self.parameter if name == "SlicerParameterName" else None

    def setCurrentNode(self, node):
        self.current = node if node is not None and node.GetClassName() in self.nodeTypes else None


class BindingWrapper:
    """``connectGui`` as Slicer 5.10's wrapper does it for node parameters (``guiConnectors.py``:
    ``qMRMLNodeComboBoxToNodeConnector.__init__`` sets ``nodeTypes = getNodeTypes(datatype)``, the annotation's one
    class; then ``connector.write(value)``)."""

    def __init__(self, **values):
        self.__dict__.update(values)

    def connectGui(self, ui):
        from TokenUNetSegmentLib.mrml.parameters import node_fields

        for widget in vars(ui).values():
            name = widget.property("SlicerParameterName")
            if name in node_fields():
                widget.nodeTypes = [node_fields()[name]]
                widget.setCurrentNode(getattr(self, name))
        return 7


def test_the_first_input_selector_lists_and_shows_a_vector_volume_once_bound():
    """Before: the binding left the selector listing scalar volumes only, so no vector volume could be chosen in the
    panel, and one a saved scene held as the first input was shown as none."""
    import types

    import slicer
    from TokenUNetSegmentLib.mrml.parameters import MAX_INPUTS, selector_types
    from TokenUNetSegmentLib.widget.parameter_binding import connect_gui

    scene = slicer.vtkMRMLScene()
    vector = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "BRATS_001")
    names = [f"inputVolume{index}" for index in range(MAX_INPUTS)]
    ui = types.SimpleNamespace(
        **{f"inputSelector{index}": NodeComboBox(name, selector_types(name)) for index, name in enumerate(names)}
    )
    wrapped = BindingWrapper(**{**dict.fromkeys(names), "inputVolume0": vector})
    assert connect_gui(wrapped, ui) == 7
    assert ui.inputSelector0.nodeTypes == ["vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode"]
    assert ui.inputSelector0.current is vector
    assert ui.inputSelector1.nodeTypes == ["vtkMRMLScalarVolumeNode"]


# -- packaging facts -----------------------------------------------------------------------------------------


# -- signals the code connects to ----------------------------------------------------------------------------
def connections() -> list[tuple[str, str, str, int]]:
    """(class of the sender, signal signature, file, line) of every ``sender.connect("signal(args)", slot)``: .ui
    widgets (``ui.name`` / ``self.ui.name``), Qt timers and ``slicer.app``."""
    import ast

    from helpers.paths import MODULE_DIR
    from helpers.ui import ui_widgets

    widgets = {name: cls for name, (cls, _props) in ui_widgets().items()}
    sources = [
        MODULE_DIR / "TokenUNetSegment.py",
        *sorted((MODULE_DIR / "TokenUNetSegmentLib" / "widget").glob("*.py")),
    ]
    found = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (
                isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "connect"
            ):
                continue
            if not (node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                continue
            sender = ast.unparse(node.func.value)
            name = sender.rsplit(".", 1)[-1]
            if sender.startswith(("ui.", "self.ui.")):
                cls = widgets[name]
            elif name == "timer":
                cls = "QTimer"
            elif sender == "slicer.app":
                cls = "qSlicerApplication"
            else:
                cls = f"unknown sender {sender}"
            found.append((cls, node.args[0].value.replace(" ", ""), path.name, node.lineno))
    return found


def test_every_connected_signal_exists_with_its_arguments_at_every_tag():
    """Qt's signals are compared in full (``currentIndexChanged(int)``), Slicer's and CTK's by name (their facts
    hold names; the arguments were read in the headers: ctkSliderWidget ``valueChanged(double)``)."""
    problems, seen = [], connections()
    for tag in TAGS:
        for cls, signal, where, line in seen:
            try:
                chain = class_chain(tag, cls)
            except KeyError:
                problems.append(f"{where}:{line}: {cls}")
                continue
            qt_signals = set().union(*(set(c.get("signals", [])) for c in chain if "invokables" not in c))
            named = set().union(*(set(c["signals"]) for c in chain if "invokables" in c))
            if signal not in qt_signals and signal.split("(")[0] not in named:
                problems.append(f"{tag}: {where}:{line}: {cls} has no signal {signal}")
    assert len(seen) >= 10, seen
    assert problems == []


def test_the_signal_check_needs_the_arguments_of_qt_signals():
    chain = class_chain(TAGS[0], "QComboBox")
    signals = set().union(*(set(c.get("signals", [])) for c in chain))
    assert "currentIndexChanged(int)" in signals and "currentIndexChanged(double)" not in signals
    assert "timeout()" in class_chain(TAGS[0], "QTimer")[0]["signals"]
