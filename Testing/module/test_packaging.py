"""Extension packaging: CMake lists every file of the module; s4ext, JSON and CMake metadata agree."""

import json
import re
import shlex

from helpers.paths import MODULE_DIR, ROOT


def cmake_list(text, variable):
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not found"
    return [item.replace("${MODULE_NAME}", "TokenUNetSegment") for item in match.group(1).split()]


def cmake_sets(text):
    return {
        m.group(1): shlex.split(m.group(2))[0] if m.group(2).strip() else ""
        for m in re.finditer(r'set\((EXTENSION_\w+)\s*(".*?"|[^)]*)\)', text, re.S)
    }


def s4ext_fields(text):
    fields = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            fields[key] = value.strip()
    return fields


def test_every_module_python_file_is_listed_in_cmake_and_exists():
    listed = set(cmake_list((MODULE_DIR / "CMakeLists.txt").read_text(), "MODULE_PYTHON_SCRIPTS"))
    on_disk = {str(p.relative_to(MODULE_DIR)) for p in MODULE_DIR.rglob("*.py") if "__pycache__" not in p.parts}
    assert on_disk - listed == set(), "add these to MODULE_PYTHON_SCRIPTS"
    assert listed - on_disk == set(), "listed in CMake but missing on disk"


def test_every_module_resource_is_listed_in_cmake_and_exists():
    listed = set(cmake_list((MODULE_DIR / "CMakeLists.txt").read_text(), "MODULE_PYTHON_RESOURCES"))
    resources = {str(p.relative_to(MODULE_DIR)) for p in (MODULE_DIR / "Resources").rglob("*") if p.is_file()}
    assert resources - listed == set(), "add these to MODULE_PYTHON_RESOURCES"
    assert [name for name in listed if not (MODULE_DIR / name).is_file()] == [], "listed in CMake but missing"


def test_extension_metadata_agrees_across_cmake_s4ext_and_json():
    cmake_text = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"project\(TokenUNet\)", cmake_text)
    cmake = cmake_sets(cmake_text)
    s4ext = s4ext_fields((ROOT / "TokenUNet.s4ext").read_text())
    catalog = json.loads((ROOT / "TokenUNet.json").read_text())

    assert (
        cmake["EXTENSION_DEPENDS"].split() == s4ext["depends"].split() == catalog["build_dependencies"] == ["PyTorch"]
    )
    assert cmake["EXTENSION_HOMEPAGE"] == s4ext["homepage"]
    assert cmake["EXTENSION_CATEGORY"] == s4ext["category"] == catalog["category"] == "Segmentation"
    assert cmake["EXTENSION_DESCRIPTION"] == s4ext["description"]
    assert cmake["EXTENSION_ICONURL"] == s4ext["iconurl"]
    assert cmake["EXTENSION_CONTRIBUTORS"] == s4ext["contributors"]
    assert cmake["EXTENSION_SCREENSHOTURLS"].split() == s4ext.get("screenshoturls", "").split()
    assert s4ext["scmurl"] == catalog["scm_url"]
    assert s4ext["scmrevision"] == catalog["scm_revision"]
    assert s4ext["build_subdirectory"] == catalog["build_subdirectory"]
    assert s4ext["homepage"].rstrip("/") in catalog["scm_url"]
    assert {
        "$schema",
        "category",
        "scm_url",
        "scm_revision",
        "build_dependencies",
        "build_subdirectory",
        "tier",
    } <= set(catalog)


def test_icon_named_in_metadata_is_a_128_pixel_png_in_the_repository():
    cmake = cmake_sets((ROOT / "CMakeLists.txt").read_text())
    relative = cmake["EXTENSION_ICONURL"].split("/main/", 1)[1]
    data = (ROOT / relative).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == int.from_bytes(data[20:24], "big") == 128


def test_module_file_declares_title_category_and_credits():
    source = (MODULE_DIR / "TokenUNetSegment.py").read_text()
    for attribute in ("title", "categories", "contributors", "helpText", "acknowledgementText"):
        assert f"self.parent.{attribute}" in source
    assert '_("Segmentation")' in source


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"\*\*Run the tests\*\*: `([^`]+)`", readme).group(1)
    ci_lines = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))
    ]
    assert ci_lines == [command]


def test_screenshots_named_in_metadata_are_pngs_in_the_repository():
    urls = cmake_sets((ROOT / "CMakeLists.txt").read_text())["EXTENSION_SCREENSHOTURLS"].split()
    assert urls, "name at least one screenshot in EXTENSION_SCREENSHOTURLS"
    for url in urls:
        data = (ROOT / url.split("/main/", 1)[1]).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"


def test_entry_point_is_declared():
    text = (ROOT / "pyproject.toml").read_text()
    scripts = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    assert 'tokenunet = "TokenUNetSegmentLib.pipeline.__main__:main"' in scripts  # as python -m (sigreview)
    from TokenUNetSegmentLib.pipeline import __main__ as entry  # its stop handlers are set when main() runs

    assert callable(entry.main)
