"""Derive the Slicer API facts the module relies on from Slicer's own sources at the supported tags.

Reads bare git snapshots (Slicer/Slicer, commontk/CTK, fepegar/SlicerPyTorch, Slicer/ExtensionsIndex) with
``git show TAG:path`` and writes a small JSON of names, signatures, Q_PROPERTYs, CMake macro arguments,
packaging facts and the behaviour of Slicer's real ``parameterNodeWrapper`` (run from the pinned source with
``qt``/``ctk`` stand-ins, over PyPI's slicer-core). Nothing of Slicer's code is written to the repository:
only the facts. CI reads the JSON (``Testing/slicer_api_facts.json``); a developer who has the snapshots
re-runs this script when a new Slicer release is supported.

Usage (from the repository root, in the project's .venv, which has slicer-core)::

    .venv/bin/python scripts/slicer-api/derive_facts.py --mirror /work/.mirror \
        --qt-python /path/to/venv-with-PyQt5/bin/python  [--out Testing/slicer_api_facts.json]

``--qt-python`` is an interpreter with ``PyQt5==5.15.11`` and ``PyQt5-Qt5==5.15.2`` (Qt 5.15, as in Slicer
5.10 and 5.12): the Q_PROPERTYs of Qt's own widgets are read from its meta-objects (Qt's sources are too
large to fetch here).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import types
import typing

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import derive_mrml_facts  # noqa: E402 - the sibling script: MRML class headers

SLICER_TAGS = ("v5.10.0", "v5.12.0", "v5.12.3")
CTK_PIN_FILE = "SuperBuild/External_CTK.cmake"

# Python modules of Slicer whose functions/methods the module calls: (dotted name, path, class or None)
PYTHON_SOURCES = (
    ("slicer.util", "Base/Python/slicer/util.py", None),
    ("slicer.packaging", "Base/Python/slicer/packaging.py", None),
    ("slicer.i18n", "Base/Python/slicer/i18n.py", None),
    ("SampleData.SampleDataLogic", "Modules/Scripted/SampleData/SampleData.py", "SampleDataLogic"),
    (
        "slicer.ScriptedLoadableModule.ScriptedLoadableModuleWidget",
        "Base/Python/slicer/ScriptedLoadableModule.py",
        "ScriptedLoadableModuleWidget",
    ),
    (
        "slicer.ScriptedLoadableModule.ScriptedLoadableModuleTest",
        "Base/Python/slicer/ScriptedLoadableModule.py",
        "ScriptedLoadableModuleTest",
    ),
    ("SegmentEditor.SegmentEditorWidget", "Modules/Scripted/SegmentEditor/SegmentEditor.py", "SegmentEditorWidget"),
)
# C++ Qt classes of Slicer (header path) whose Q_PROPERTYs, slots and invokables the module or its .ui uses
SLICER_HEADERS = {
    "qMRMLWidget": "Libs/MRML/Widgets/qMRMLWidget.h",
    "qMRMLNodeComboBox": "Libs/MRML/Widgets/qMRMLNodeComboBox.h",
    "qMRMLSortFilterProxyModel": "Libs/MRML/Widgets/qMRMLSortFilterProxyModel.h",
    "qMRMLSegmentationShow3DButton": "Modules/Loadable/Segmentations/Widgets/qMRMLSegmentationShow3DButton.h",
    "qMRMLSegmentEditorWidget": "Modules/Loadable/Segmentations/Widgets/qMRMLSegmentEditorWidget.h",
    "qSlicerCoreApplication": "Base/QTCore/qSlicerCoreApplication.h",
    "qSlicerApplication": "Base/QTGUI/qSlicerApplication.h",
}
PYTHONQT_DECORATORS = (
    "Base/QTCore/qSlicerBaseQTCorePythonQtDecorators.h",
    "Base/QTGUI/qSlicerBaseQTGUIPythonQtDecorators.h",
)
CTK_HEADERS = {
    "ctkCollapsibleButton": "Libs/Widgets/ctkCollapsibleButton.h",
    "ctkSliderWidget": "Libs/Widgets/ctkSliderWidget.h",
    "ctkMenuButton": "Libs/Widgets/ctkMenuButton.h",
    "ctkCheckBox": "Libs/Widgets/ctkCheckBox.h",
    "ctkComboBox": "Libs/Widgets/ctkComboBox.h",
}
QT_CLASSES = (
    "QObject",
    "QWidget",
    "QFrame",
    "QLabel",
    "QAbstractButton",
    "QPushButton",
    "QToolButton",
    "QCheckBox",
    "QComboBox",
    "QProgressBar",
    "QAbstractScrollArea",
    "QAbstractItemView",
    "QListView",
    "QListWidget",
    "QSortFilterProxyModel",
    "QAbstractProxyModel",
    "QAbstractItemModel",
    "QCoreApplication",
    "QGuiApplication",
    "QApplication",
    "QSlider",
    "QAbstractSlider",
    "QSpinBox",
    "QDoubleSpinBox",
    "QAbstractSpinBox",
    "QLineEdit",
    "QTimer",
)
# widget classes and value types probed against the real parameterNodeWrapper's GUI connectors
PROBE_WIDGETS = (
    "qt.QCheckBox",
    "qt.QPushButton",
    "qt.QComboBox",
    "qt.QSpinBox",
    "qt.QSlider",
    "qt.QDoubleSpinBox",
    "qt.QLineEdit",
    "qt.QLabel",
    "qt.QTextEdit",
    "ctk.ctkSliderWidget",
    "ctk.ctkCheckBox",
    "ctk.ctkComboBox",
    "ctk.ctkDoubleSpinBox",
    "ctk.ctkDoubleSlider",
    "ctk.ctkCheckablePushButton",
    "ctk.ctkPathLineEdit",
    "slicer.qMRMLNodeComboBox",
    "slicer.qMRMLSliderWidget",
    "slicer.qMRMLSpinBox",
)
PROBE_TYPES = ("bool", "int", "float", "str", "node")


def git(mirror: pathlib.Path, repo: str, *args: str) -> str:
    return subprocess.run(
        ["git", f"--git-dir={mirror / repo / 'repo'}", *args], check=True, capture_output=True, text=True
    ).stdout


def show(mirror, repo, ref, path) -> str | None:
    try:
        return git(mirror, repo, "show", f"{ref}:{path}")
    except subprocess.CalledProcessError:
        return None


def signature(function: ast.FunctionDef) -> dict:
    args = function.args
    positional = [a.arg for a in args.posonlyargs + args.args]
    decorators = {ast.unparse(d) for d in function.decorator_list}
    if positional and positional[0] in ("self", "cls") and "staticmethod" not in decorators:
        positional = positional[1:]
    return {
        "params": positional + [a.arg for a in args.kwonlyargs],
        "positional": len(positional),
        "required": len(positional) - len(args.defaults),
        "varargs": args.vararg is not None,
        "varkw": args.kwarg is not None,
    }


def python_api(text: str, class_name: str | None) -> dict:
    tree = ast.parse(text)
    body = tree.body
    if class_name is not None:
        body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name).body
    functions = {n.name: signature(n) for n in body if isinstance(n, ast.FunctionDef) and not n.name.startswith("__")}
    attributes = set()
    if class_name is not None:  # instance attributes set in the class's methods (self.x = ...)
        for node in ast.walk(ast.Module(body=body, type_ignores=[])):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                if isinstance(node.value, ast.Name) and node.value.id == "self":
                    attributes.add(node.attr)
    classes = [n.name for n in body if isinstance(n, ast.ClassDef)]
    return {"functions": functions, "attributes": sorted(attributes), "classes": classes}


def qt_header(text: str, class_name: str) -> dict:
    """Base class, Q_PROPERTYs, public slots and Q_INVOKABLE methods of a Qt class declared in a header."""
    base, body = derive_mrml_facts.class_body(text, class_name)
    properties = re.findall(r"Q_PROPERTY\(\s*[\w:<>*& ]+?\s+(\w+)\s+READ", body)
    invokables = re.findall(r"Q_INVOKABLE\s+(?:virtual\s+|static\s+)?[\w:<>*&, ]+?[\s*&](\w+)\s*\(", body)
    slots, signals = [], []
    for section in re.finditer(
        r"(public\s+slots|signals|Q_SIGNALS|public\s+Q_SLOTS)\s*:(.*?)(?=\n\s*(?:public|protected|private|signals|Q_SIGNALS)\b[^:]*:|\Z)",
        body,
        re.S,
    ):
        names = re.findall(r"(\w+)\s*\([^;{]*\)\s*(?:const\s*)?(?:override\s*)?[;{]", section.group(2))
        (signals if "signal" in section.group(1).lower() else slots).extend(names)
    return {
        "base": base,
        "properties": sorted(set(properties)),
        "invokables": sorted(set(invokables)),
        "slots": sorted(set(slots)),
        "signals": sorted(set(signals)),
    }


def cmake_macro_arguments(text: str, macro: str) -> dict:
    match = re.search(rf"(?:macro|function)\({macro}\b(.*?)\n(?:end)", text, re.S | re.I)
    body = match.group(1)

    def values(name):
        found = re.search(rf"set\({name}\s*([^)]*)\)", body)
        return found.group(1).split() if found else []

    return {"options": values("options"), "one_value": values("oneValueArgs"), "multi_value": values("multiValueArgs")}


def pinned_version(text: str, package: str) -> str | None:
    match = re.search(rf"^\s*{package}==([\w.]+)", text or "", re.M | re.I)
    return match.group(1) if match else None


def tag_facts(mirror: pathlib.Path, tag: str) -> dict:
    commit = git(mirror, "Slicer+Slicer", "rev-list", "-n1", tag).strip()
    facts = {"commit": commit, "python": {}, "classes": {}}
    for dotted, path, class_name in PYTHON_SOURCES:
        text = show(mirror, "Slicer+Slicer", tag, path)
        if text is not None:
            facts["python"][dotted] = python_api(text, class_name)
    init = show(mirror, "Slicer+Slicer", tag, "Base/Python/slicer/__init__.py")
    facts["slicer_init_imports_packaging"] = bool(
        re.search(r"^\s*(from\s+\.\s+import\s+packaging|import\s+slicer\.packaging|from\s+\.packaging)", init, re.M)
    )
    for name, path in SLICER_HEADERS.items():
        facts["classes"][name] = qt_header(show(mirror, "Slicer+Slicer", tag, path), name)
    decorators = "".join(show(mirror, "Slicer+Slicer", tag, path) or "" for path in PYTHONQT_DECORATORS)
    for name in ("qSlicerCoreApplication", "qSlicerApplication"):  # PythonQt adds these to the classes
        static = re.findall(rf"static_{name}_(\w+)\s*\(", decorators)
        methods = re.findall(rf"\b(\w+)\s*\(\s*{name}\s*\*", decorators)
        facts["classes"][name]["python_decorators"] = sorted(set(static + methods))
    ctk_commit = re.search(
        r'Slicer_\$\{proj\}_GIT_TAG\s*\n\s*"([0-9a-f]{40})"', show(mirror, "Slicer+Slicer", tag, CTK_PIN_FILE)
    ).group(1)
    facts["ctk_commit"] = ctk_commit
    for name, path in CTK_HEADERS.items():
        facts["classes"][name] = qt_header(show(mirror, "commontk+CTK", ctk_commit, path), name)
    cmake = show(mirror, "Slicer+Slicer", tag, "CMakeLists.txt")
    facts["python_version"] = re.search(r'Slicer_REQUIRED_PYTHON_VERSION\s+"([\d.]+)"', cmake).group(1)
    facts["qt_version_minimum"] = re.search(r'set\(_required_qt_version\s+"([\d.]+)"\)', cmake).group(1)
    numpy = show(mirror, "Slicer+Slicer", tag, "SuperBuild/External_python-numpy.cmake")
    facts["numpy"] = pinned_version(numpy, "numpy")
    simpleitk = show(mirror, "Slicer+Slicer", tag, "SuperBuild/External_python-SimpleITK.cmake")
    if simpleitk is None:  # built from Slicer's SimpleITK fork: the version is in the pinned tag's comment
        source = show(mirror, "Slicer+Slicer", tag, "SuperBuild/External_SimpleITK.cmake")
        facts["simpleitk"] = re.search(r"slicer-v([\d.]+)", source).group(1)
    else:
        facts["simpleitk"] = pinned_version(simpleitk, "simpleitk")
    template = show(mirror, "Slicer+Slicer", tag, "Utilities/Templates/Extensions/Default/CMakeLists.txt")
    facts["extension_template_cmake_minimum"] = re.search(
        r"cmake_minimum_required\(VERSION\s+([^\s)]+)", template
    ).group(1)
    scripted = show(mirror, "Slicer+Slicer", tag, "Utilities/Templates/Modules/Scripted/CMakeLists.txt")
    facts["scripted_template_registers_unittest"] = "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in scripted
    facts["cmake_macros"] = {
        "slicer_add_python_unittest": cmake_macro_arguments(
            show(mirror, "Slicer+Slicer", tag, "CMake/SlicerMacroPythonTesting.cmake"), "slicer_add_python_unittest"
        ),
        "slicerMacroBuildScriptedModule": cmake_macro_arguments(
            show(mirror, "Slicer+Slicer", tag, "CMake/SlicerMacroBuildScriptedModule.cmake"),
            "slicerMacroBuildScriptedModule",
        ),
    }
    facts["parameter_node_wrapper"] = probe_parameter_node_wrapper(mirror, tag)
    return facts


# -- Slicer's real parameterNodeWrapper, run from the pinned source ------------------------------------------
class _Anything:
    """Stands for any Qt object the GUI connectors touch: every attribute exists, every call succeeds."""

    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        return _Anything()

    def __call__(self, *args, **kwargs):
        return _Anything()

    def __bool__(self):
        return True

    def __iter__(self):
        return iter(())

    def __int__(self):
        return 0

    def __float__(self):
        return 0.0

    def __index__(self):
        return 0


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        cls = type(name, (_Anything,), {})
        setattr(self, name, cls)
        return cls


def probe_parameter_node_wrapper(mirror, tag) -> dict:
    """Facts about the real parameterNodeWrapper: connectors per (widget, type), storage format, validators."""
    import slicer  # PyPI's slicer-core: real MRML

    saved = {name: sys.modules.get(name) for name in ("qt", "ctk")}
    sys.modules["qt"], sys.modules["ctk"] = _StubModule("qt"), _StubModule("ctk")
    added = []
    with tempfile.TemporaryDirectory() as folder:
        package = pathlib.Path(folder) / "pnw_probe"
        package.mkdir()
        base = "Base/Python/slicer/parameterNodeWrapper"
        for path in git(mirror, "Slicer+Slicer", "ls-tree", "--name-only", f"{tag}:{base}").split():
            if path.endswith(".py"):
                (package / path).write_text(show(mirror, "Slicer+Slicer", tag, f"{base}/{path}"))
        sources = "".join(p.read_text() for p in package.glob("*.py"))
        for name in sorted(set(re.findall(r"slicer\.(q\w+)", sources))):
            if not hasattr(slicer, name):
                setattr(slicer, name, type(name, (_Anything,), {}))
                added.append(name)
        sys.path.insert(0, folder)
        try:
            pnw = importlib.import_module("pnw_probe")
            return _probe(pnw, slicer)
        finally:
            sys.path.remove(folder)
            for name in [m for m in sys.modules if m.split(".")[0] == "pnw_probe"]:
                del sys.modules[name]
            for name in added:
                delattr(slicer, name)
            for name, module in saved.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module


def _probe(pnw, slicer) -> dict:
    qt, ctk = sys.modules["qt"], sys.modules["ctk"]
    modules = {"qt": qt, "ctk": ctk, "slicer": slicer}
    types_ = {"bool": bool, "int": int, "float": float, "str": str, "node": slicer.vtkMRMLScalarVolumeNode}
    connectors = {}
    for widget_name in PROBE_WIDGETS:
        prefix, name = widget_name.split(".")
        widget_class = getattr(modules[prefix], name)
        row = {}
        for type_name in PROBE_TYPES:
            datatype = types_[type_name]
            variants = [(datatype, type_name)]
            if type_name != "node":
                variants.append((typing.Annotated[datatype, pnw.Choice([datatype()])], f"{type_name}+Choice"))
            if type_name in ("int", "float"):
                variants.append((typing.Annotated[datatype, pnw.WithinRange(0, 1)], f"{type_name}+WithinRange"))
            for annotated, label in variants:
                try:
                    connector = pnw.createGuiConnector(widget_class(), annotated)
                    row[label] = type(connector).__name__
                except RuntimeError as error:
                    row[label] = None if "Unable to create GUI connector" in str(error) else f"error: {error}"
        connectors[name] = row

    # storage format: what the wrapper writes into a real vtkMRMLScriptedModuleNode
    scene = slicer.vtkMRMLScene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    namespace = {
        "__annotations__": {
            "flag": bool,
            "count": int,
            "level": float,
            "text": str,
            "volume": slicer.vtkMRMLScalarVolumeNode,
            "choice": typing.Annotated[str, pnw.Choice(["a", "b"])],
            "ranged": typing.Annotated[float, pnw.WithinRange(0.0, 1.0)],
        },
        "flag": False,
        "count": 0,
        "level": 0.0,
        "text": "",
        "choice": "a",
        "ranged": 0.5,
    }
    wrapper_class = pnw.parameterNodeWrapper(type("Probe", (), namespace))
    node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
    wrapped = wrapper_class(node)
    stored = {}
    for field, value in (("flag", True), ("count", 3), ("level", 0.25), ("text", "x y"), ("volume", volume)):
        setattr(wrapped, field, value)
        stored[field] = {
            "value": "<node>" if field == "volume" else value,
            "parameter": node.GetParameter(field),
            "reference_role": field if node.GetNodeReferenceID(field) == volume.GetID() else None,
        }
    wrapped.volume = None
    stored["volume_none"] = {"parameter": node.GetParameter("volume"), "reference": node.GetNodeReferenceID("volume")}

    def accepts(field, value):
        try:
            setattr(wrapped, field, value)
            return True
        except (ValueError, TypeError):
            return False

    validators = {
        "WithinRange": {
            "inclusive_minimum": accepts("ranged", 0.0),
            "inclusive_maximum": accepts("ranged", 1.0),
            "rejects_outside": not accepts("ranged", 1.0001),
        },
        "Choice": {"rejects_other": not accepts("choice", "c")},
    }
    node.SetParameter("choice", "c")  # a value stored outside the choices (older scene, other version)
    try:
        read = wrapped.choice
        validators["Choice"]["read_of_stored_other"] = f"returns {read!r}"
    except Exception as error:  # noqa: BLE001 - the behaviour is the fact
        validators["Choice"]["read_of_stored_other"] = f"raises {type(error).__name__}"
    combo = pnw.createGuiConnector(qt.QComboBox(), typing.Annotated[str, pnw.Choice(["a", "b"])])
    try:
        combo.write("c")
        validators["Choice"]["combo_write_other"] = "accepted"
    except Exception as error:  # noqa: BLE001
        validators["Choice"]["combo_write_other"] = f"raises {type(error).__name__}"
    validator_params = {}
    for name in ("Choice", "WithinRange", "Minimum", "Maximum", "Exclude", "NotNone", "IsInstance"):
        cls = getattr(pnw, name, None)
        if cls is not None:
            code = getattr(cls.__init__, "__code__", None)
            validator_params[name] = list(code.co_varnames[1 : code.co_argcount]) if code else []
    return {
        "connectors": connectors,
        "storage": stored,
        "validators": validators,
        "validator_params": validator_params,
        "property_name": pnw.SlicerParameterNamePropertyName,
    }


def qt_facts(python: str) -> dict:
    code = (
        "import json, sys\n"
        "from PyQt5 import QtCore, QtGui, QtWidgets\n"
        "out = {'qt_version': QtCore.QT_VERSION_STR, 'classes': {}}\n"
        "for name in sys.argv[1:]:\n"
        "    cls = next(getattr(m, name) for m in (QtWidgets, QtGui, QtCore) if hasattr(m, name))\n"
        "    mo = cls.staticMetaObject\n"
        "    props = [mo.property(i).name() for i in range(mo.propertyOffset(), mo.propertyCount())]\n"
        "    props = [p.decode() if isinstance(p, bytes) else p for p in props]\n"
        "    base = mo.superClass().className() if mo.superClass() is not None else None\n"
        "    entry = {'base': base, 'properties': sorted(props)}\n"
        "    entry['signals'] = sorted({bytes(mo.method(i).methodSignature()).decode()\n"
        "                               for i in range(mo.methodOffset(), mo.methodCount())\n"
        "                               if mo.method(i).methodType() == QtCore.QMetaMethod.Signal})\n"
        "    if name.endswith('Application') or name == 'QObject':  # what slicer.app inherits\n"
        "        entry['methods'] = sorted(n for n in vars(cls) if not n.startswith('_'))\n"
        "    out['classes'][name] = entry\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run(
        [python, "-c", code, *QT_CLASSES],
        check=True,
        capture_output=True,
        text=True,
        env={"QT_QPA_PLATFORM": "offscreen"},
    )
    pyqt = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('PyQt5'), m.version('PyQt5-Qt5'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    data = json.loads(result.stdout)
    data["source"] = f"PyQt5 {pyqt[0]} (PyQt5-Qt5 {pyqt[1]}) meta-objects"
    return data


def extensions_index_facts(mirror) -> dict:
    commit = git(mirror, "Slicer+ExtensionsIndex", "rev-parse", "HEAD").strip()
    pre_commit = show(mirror, "Slicer+ExtensionsIndex", commit, ".pre-commit-config.yaml")
    prettier = re.search(r'"prettier@([\d.]+)"', pre_commit).group(1)
    plugin, plugin_version = re.search(r'"(prettier-plugin-[\w-]+)@([\d.]+)"', pre_commit).groups()
    config = show(mirror, "Slicer+ExtensionsIndex", commit, ".prettierrc.js")
    options = {
        k: json.loads(v) for k, v in re.findall(r"^\s*(\w+)\s*:\s*([\d\"'\w]+)\s*,", config, re.M) if k != "plugins"
    }
    schema_file = re.search(r'"(schemas/[^"]+\.json)"', pre_commit).group(1)
    schema = json.loads(show(mirror, "Slicer+ExtensionsIndex", commit, schema_file))
    return {
        "commit": commit,
        "prettier": prettier,
        "plugins": {plugin: plugin_version},
        "options": options,
        "schema": {
            "file": schema_file,
            "required": schema["required"],
            "additional_properties": schema.get("additionalProperties", True),
            "properties": {k: v.get("type") for k, v in schema["properties"].items()},
        },
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", type=pathlib.Path, required=True, help="folder with <owner>+<name>/repo snapshots")
    parser.add_argument("--qt-python", required=True, help="a Python with PyQt5 5.15 for Qt's own Q_PROPERTYs")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("Testing/slicer_api_facts.json"))
    args = parser.parse_args(argv)
    missing = [t for t in SLICER_TAGS if not git(args.mirror, "Slicer+Slicer", "tag", "-l", t).strip()]
    if missing:
        parser.error(f"the Slicer snapshot lacks the tags {missing}")
    pytorch_commit = git(args.mirror, "fepegar+SlicerPyTorch", "rev-parse", "HEAD").strip()
    pytorch = python_api(
        show(args.mirror, "fepegar+SlicerPyTorch", pytorch_commit, "PyTorchUtils/PyTorchUtils.py"), "PyTorchUtilsLogic"
    )
    facts = {
        "about": "Derived by scripts/slicer-api/derive_facts.py from Slicer's sources; facts only, no code.",
        "supported_tags": list(SLICER_TAGS),
        "slicer": {tag: tag_facts(args.mirror, tag) for tag in SLICER_TAGS},
        "PyTorchUtils": {"repository": "fepegar/SlicerPyTorch", "commit": pytorch_commit, "PyTorchUtilsLogic": pytorch},
        "qt": qt_facts(args.qt_python),
        "extensions_index": extensions_index_facts(args.mirror),
        "mrml": derive_mrml_facts.derive(args.mirror / "Slicer+Slicer" / "repo"),
    }
    args.out.write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
