"""The pipeline layer imports no Slicer, VTK or Qt; its files are listed for CMake; the entry point exists."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "TokenUNetSegment"
PIPELINE = MODULE / "TokenUNetSegmentLib" / "pipeline"


def test_pipeline_imports_no_slicer_vtk_or_qt_in_a_fresh_interpreter():
    modules = sorted(p.stem for p in PIPELINE.glob("*.py") if p.stem not in ("__init__", "__main__"))
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module('TokenUNetSegmentLib.pipeline.' + name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('slicer', 'vtk', 'vtkmodules', 'qt', 'ctk', 'PythonQt', 'mrml'))\n"
        "print(bad)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=MODULE, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_importing_the_package_is_cheap_and_the_lazy_names_resolve():
    code = (
        "import sys, TokenUNetSegmentLib.pipeline as p\n"
        "print('torch' in sys.modules, 'monai' in sys.modules)\n"
        "print(all(getattr(p, n) is not None for n in p.__all__))\n"
        "import TokenUNetSegmentLib.pipeline.cli\n"
        "from TokenUNetSegmentLib.pipeline import segment\n"
        "print(callable(segment) and segment.__name__ == 'segment')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=MODULE, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "False", "True", "True"], done.stderr


def test_every_pipeline_file_and_resource_is_listed_in_cmake():
    cmake = (MODULE / "CMakeLists.txt").read_text()
    listed = set(re.findall(r"^\s+(\S+)$", cmake, flags=re.M))
    for path in sorted(PIPELINE.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".json") and "__pycache__" not in path.parts:
            assert str(path.relative_to(MODULE)) in listed, path
    assert "Resources/Models.json" in listed


def test_entry_point_is_declared():
    text = (ROOT / "pyproject.toml").read_text()
    scripts = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    assert 'tokenunet = "TokenUNetSegmentLib.pipeline.cli:main"' in scripts


def test_help_lists_the_commands():
    done = subprocess.run(
        [sys.executable, "-m", "TokenUNetSegmentLib.pipeline", "--help"],
        cwd=MODULE,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "segment" in done.stdout and "models" in done.stdout
