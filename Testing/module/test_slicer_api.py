"""API conformance against Slicer's real sources at the supported tags (facts in slicer_api_facts.json).

The facts were derived from Slicer, CTK, SlicerPyTorch and the Extensions Index by
``scripts/slicer-api/derive_facts.py`` (tags and commits are in the JSON). These tests read the module's code
(AST) and fail when the module calls a ``slicer.util`` / ``slicer.packaging`` / ``SampleData`` /
``PyTorchUtils`` function or keyword that a supported Slicer does not have, or registers itself in a way the
supported Slicers' CMake does not. The .ui file and the parameter bindings: ``test_slicer_ui_bindings.py``.
"""

from __future__ import annotations

import ast
import re

from helpers.paths import MODULE_DIR, ROOT
from helpers.slicer_facts import FACTS, TAGS

SOURCES = [MODULE_DIR / "TokenUNetSegment.py", *sorted((MODULE_DIR / "TokenUNetSegmentLib").rglob("*.py"))]
# Python namespaces whose calls are checked: dotted prefix -> (facts key, where the facts live)
NAMESPACES = {
    "slicer.util": "slicer.util",
    "slicer.packaging": "slicer.packaging",
    "slicer.i18n": "slicer.i18n",
    "SampleData.SampleDataLogic": "SampleData.SampleDataLogic",
    "PyTorchUtils.PyTorchUtilsLogic": "PyTorchUtils",
    "SegmentEditor.SegmentEditorWidget": "SegmentEditor.SegmentEditorWidget",
}


def api(tag: str, namespace: str) -> dict | None:
    """Functions of a namespace at a tag (None where the namespace does not exist there)."""
    if namespace == "PyTorchUtils":
        return FACTS["PyTorchUtils"]["PyTorchUtilsLogic"]["functions"]
    found = FACTS["slicer"][tag]["python"].get(namespace)
    return found["functions"] if found is not None else None


# -- reading the module's calls ------------------------------------------------------------------------------
class Calls(ast.NodeVisitor):
    """Calls of one source file, resolved to dotted names through its imports and simple assignments."""

    def __init__(self, tree: ast.Module):
        self.aliases: dict[str, str] = {}
        self.calls: list[tuple[str, ast.Call]] = []
        self.attributes: list[tuple[str, ast.AST]] = []
        self.unsafe_packaging: list[ast.AST] = []
        self.visit(tree)

    def visit_Import(self, node):
        for alias in node.names:
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                root = alias.name.split(".")[0]
                self.aliases.setdefault(root, root)

    def visit_ImportFrom(self, node):
        if node.level == 0 and node.module:
            for alias in node.names:
                self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def visit_Assign(self, node):
        self.generic_visit(node)
        if len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = node.value
            if isinstance(value, ast.Call) and not value.args and not value.keywords:
                value = value.func  # x = PyTorchUtils.PyTorchUtilsLogic() -> x stands for the class
            name = self.resolve(value)
            if name is not None and name.split(".")[0] in ("slicer", "SampleData", "PyTorchUtils", "SegmentEditor"):
                self.aliases[node.targets[0].id] = name
            if self.is_packaging_getattr(node.value):  # packaging = getattr(slicer, "packaging", None)
                self.aliases[node.targets[0].id] = "slicer.packaging"

    def is_packaging_getattr(self, node) -> bool:
        return (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and len(node.args) >= 2
            and self.resolve(node.args[0]) == "slicer"
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value == "packaging"
        )

    def resolve(self, node) -> str | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Call) and self.resolve(node.func) == "slicer.util.getModuleWidget":
            argument = node.args[0] if node.args else None
            if isinstance(argument, ast.Constant):
                parts.append(f"{argument.value}.{argument.value}Widget")
                return ".".join(reversed(parts))
        if not isinstance(node, ast.Name):
            return None
        base = self.aliases.get(node.id)
        if base is None:
            return None
        return ".".join([base, *reversed(parts)])

    def visit_Call(self, node):
        self.generic_visit(node)
        name = self.resolve(node.func)
        if name is not None:
            self.calls.append((name, node))
        if self.is_packaging_getattr(node):
            self.unsafe_packaging.append(node)

    def visit_Attribute(self, node):
        self.generic_visit(node)
        name = self.resolve(node)
        if name is not None and name.startswith("slicer.app."):
            self.attributes.append((name, node))


def module_calls():
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        yield path, tree, Calls(tree)


def call_problems(name: str, call: ast.Call, functions: dict) -> list[str]:
    function = name.rsplit(".", 1)[1]
    if function not in functions:
        return [f"{name} does not exist"]
    info = functions[function]
    problems = []
    positional = [a for a in call.args if not isinstance(a, ast.Starred)]
    keywords = [k.arg for k in call.keywords if k.arg is not None]
    if len(positional) > info["positional"] and not info["varargs"]:
        problems.append(f"{name} takes at most {info['positional']} positional arguments, given {len(positional)}")
    unknown = [k for k in keywords if k not in info["params"]]
    if unknown and not info["varkw"]:
        problems.append(f"{name} has no keyword {unknown}")
    has_star = any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords)
    covered = set(info["params"][: len(positional)]) | set(keywords)
    missing = [p for p in info["params"][: info["required"]] if p not in covered]
    if missing and not has_star:
        problems.append(f"{name} misses the required argument(s) {missing}")
    return problems


def checked_namespace(name: str) -> str | None:
    for prefix in NAMESPACES:
        if name.startswith(prefix + ".") and name.count(".") == prefix.count(".") + 1:
            return prefix
    return None


def test_every_slicer_call_exists_with_its_keywords_at_every_supported_tag():
    problems, checked = [], 0
    for path, _tree, calls in module_calls():
        for name, call in calls.calls:
            prefix = checked_namespace(name)
            if prefix is None:
                continue
            checked += 1
            for tag in TAGS:
                functions = api(tag, NAMESPACES[prefix])
                if functions is None:
                    continue  # the namespace itself is absent there: see the packaging guard test
                for problem in call_problems(name, call, functions):
                    problems.append(f"{path.relative_to(ROOT)}:{call.lineno} at Slicer {tag}: {problem}")
    assert checked >= 10, "the scan should see the module's Slicer calls"
    assert problems == []


def test_the_call_checker_catches_unknown_functions_keywords_and_missing_arguments():
    functions = api(TAGS[0], "slicer.util")
    call = ast.parse("f(1, 2, 3, 4, windowTitle='x', nosuch=1)").body[0].value
    assert call_problems("slicer.util.confirmOkCancelDisplay", call, functions) == [
        "slicer.util.confirmOkCancelDisplay takes at most 3 positional arguments, given 4"
    ]  # it has **kwargs (QMessageBox properties): unknown keywords pass
    assert call_problems("slicer.util.noSuchFunction", call, functions) == ["slicer.util.noSuchFunction does not exist"]
    torch = api(TAGS[0], "PyTorchUtils")
    bad = ast.parse("f(askConfirmation=True, torchVersion='>=2')").body[0].value
    assert call_problems("PyTorchUtils.PyTorchUtilsLogic.installTorch", bad, torch) == [
        "PyTorchUtils.PyTorchUtilsLogic.installTorch has no keyword ['torchVersion']"
    ]
    assert "slicer.packaging" not in FACTS["slicer"]["v5.10.0"]["python"]  # absent before 5.12
    assert call_problems(
        "slicer.util.pip_install", ast.parse("f('x', constraints='c')").body[0].value, api("v5.10.0", "slicer.util")
    ) == ["slicer.util.pip_install has no keyword ['constraints']"]


def guarded_by_import_error(tree: ast.Module, node: ast.AST) -> bool:
    """Whether ``node`` lies inside a try whose handlers catch ImportError (or ModuleNotFoundError)."""
    for candidate in ast.walk(tree):
        if not isinstance(candidate, ast.Try):
            continue
        caught = {ast.unparse(h.type) for h in candidate.handlers if h.type is not None}
        if not any(re.search(r"\b(ImportError|ModuleNotFoundError)\b", c) for c in caught):
            continue
        if any(node is inner for stmt in candidate.body for inner in ast.walk(stmt)):
            return True
    return False


def test_slicer_packaging_is_imported_explicitly_and_guarded_where_it_is_used():
    # slicer/__init__.py does not import it at any supported tag, and 5.10 does not have it
    assert not any(FACTS["slicer"][tag]["slicer_init_imports_packaging"] for tag in TAGS)
    problems, used = [], False
    for path, tree, calls in module_calls():
        relative = path.relative_to(ROOT)
        problems += [
            f"{relative}:{n.lineno}: slicer.packaging reached without importing it" for n in calls.unsafe_packaging
        ]
        uses = [call for name, call in calls.calls if name.startswith("slicer.packaging.")]
        if not uses:
            continue
        used = True
        imports = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Import) and any(a.name == "slicer.packaging" for a in n.names)
        ]
        if not imports:
            problems.append(f"{relative}: calls slicer.packaging without 'import slicer.packaging'")
        absent_somewhere = any(api(tag, "slicer.packaging") is None for tag in TAGS)
        if absent_somewhere and not all(guarded_by_import_error(tree, n) for n in imports):
            problems.append(
                f"{relative}: 'import slicer.packaging' must fall back on ImportError (Slicer 5.10 lacks it)"
            )
    assert problems == []
    assert used, "the installer should use slicer.packaging where it exists"


PYTHONQT_OBJECT_METHODS = {"connect", "disconnect"}  # PythonQt adds connect(signal, slot) to every QObject


def app_members(tag: str) -> set[str]:
    members = set(PYTHONQT_OBJECT_METHODS)
    for name in ("qSlicerCoreApplication", "qSlicerApplication"):
        info = FACTS["slicer"][tag]["classes"][name]
        for kind in ("properties", "invokables", "slots", "signals", "python_decorators"):
            members.update(info[kind])
    for name in ("QApplication", "QGuiApplication", "QCoreApplication", "QObject"):
        info = FACTS["qt"]["classes"][name]
        members.update(info["properties"])
        members.update(info.get("methods", []))
    return members


def test_slicer_app_members_exist_at_every_supported_tag():
    problems = []
    for path, _tree, calls in module_calls():
        for name, node in calls.attributes:
            member = name.split(".")[2]
            for tag in TAGS:
                if member not in app_members(tag):
                    problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: slicer.app.{member} not at {tag}")
    assert problems == []


def test_segment_editor_calls_exist():
    """Calls on the Segment Editor's widget (``.editor``, a qMRMLSegmentEditorWidget) exist at every tag."""
    problems, seen = [], 0
    for path, _tree, calls in module_calls():
        for name, call in calls.calls:
            if not name.startswith("SegmentEditor.SegmentEditorWidget.editor."):
                continue
            seen += 1
            method = name.rsplit(".", 1)[1]
            for tag in TAGS:
                widget = FACTS["slicer"][tag]["python"]["SegmentEditor.SegmentEditorWidget"]
                editor = FACTS["slicer"][tag]["classes"]["qMRMLSegmentEditorWidget"]
                if "editor" not in widget["attributes"] or method not in editor["slots"] + editor["invokables"]:
                    problems.append(f"{path.relative_to(ROOT)}:{call.lineno}: editor.{method} not at {tag}")
    assert seen >= 1, "the module should open its result in Segment Editor"
    assert problems == []


# -- the .ui file --------------------------------------------------------------------------------------------
def test_module_cmake_registers_the_self_test_with_the_real_macro_arguments():
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    match = re.search(r"slicer_add_python_unittest\(([^)]*)\)", text)
    assert match, "register the module's self-test: slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)"
    words = match.group(1).split()
    for tag in TAGS:
        macro = FACTS["slicer"][tag]["cmake_macros"]["slicer_add_python_unittest"]
        keywords = [w for w in words if re.fullmatch(r"[A-Z_]+", w)]
        assert set(keywords) <= set(macro["one_value"] + macro["multi_value"] + macro["options"])
        assert "SCRIPT" in keywords
    assert re.search(r"if\(BUILD_TESTING\).*slicer_add_python_unittest", text, re.S)
    build = re.search(r"slicerMacroBuildScriptedModule\((.*?)\)", text, re.S).group(1).split()
    macro = FACTS["slicer"][TAGS[0]]["cmake_macros"]["slicerMacroBuildScriptedModule"]
    keywords = [w for w in build if re.fullmatch(r"[A-Z_]+", w)]
    assert set(keywords) <= set(macro["one_value"] + macro["multi_value"] + macro["options"])


def test_cmake_minimum_is_the_oldest_supported_extension_template():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    wanted = FACTS["slicer"][TAGS[0]]["extension_template_cmake_minimum"]
    assert f"cmake_minimum_required(VERSION {wanted} FATAL_ERROR)" in text


def test_minimum_slicer_version_is_the_oldest_supported_tag():
    tree = ast.parse((MODULE_DIR / "TokenUNetSegment.py").read_text(encoding="utf-8"))
    constants = {
        t.id: ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name) and t.id == "MINIMUM_SLICER_VERSION"
    }
    oldest = tuple(int(x) for x in TAGS[0].lstrip("v").split(".")[:2])
    assert constants.get("MINIMUM_SLICER_VERSION") == oldest
