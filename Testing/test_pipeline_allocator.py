"""The command line's memory allocation: new large tensors reuse memory (few page faults)."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[1] / "TokenUNetSegment"
GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
FAULTS = """
import resource
import torch

def faults_of_a_new_64_mb_tensor():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(1 << 24).fill_(1.0)  # created, touched and freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

# the fewest over a few tries: a kernel may reclaim idle pages (e.g. DAMON's pageout) or lack huge pages
def fewest_faults():
    return min(faults_of_a_new_64_mb_tensor() for _ in range(6))
"""


def _run(script: str) -> list[str]:
    """``script``'s printed words, run in a fresh interpreter without a huge-page setting of its own."""
    env = {key: value for key, value in os.environ.items() if key != "THP_MEM_ALLOC_ENABLE"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=MODULE_DIR, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_retained_memory_serves_the_next_large_tensor_without_page_faults():
    plain, applied, retained = _run(
        "from TokenUNetSegmentLib.pipeline.allocator import retain_freed_memory\n"
        + FAULTS
        + "plain = fewest_faults(); applied = retain_freed_memory(); print(plain, applied, fewest_faults())"
    )
    assert int(plain) > 10_000  # 16,384 pages of 4 KiB, each faulted in afresh
    assert applied == "True" and int(retained) < 100


def _transparent_huge_pages() -> bool:
    try:
        return "[never]" not in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not _transparent_huge_pages(), reason="needs Linux transparent huge pages")
def test_huge_pages_make_a_new_large_tensor_cost_few_page_faults():
    before_torch = "from TokenUNetSegmentLib.pipeline.allocator import use_huge_pages\nprint(use_huge_pages())\n"
    applied, huge = _run(before_torch + FAULTS + "print(fewest_faults())")
    assert applied == "True" and int(huge) < 4_000  # 32 pages of 2 MiB (4 KiB ones where none is free)
    after_torch = "import torch\nfrom TokenUNetSegmentLib.pipeline.allocator import use_huge_pages\n"
    assert _run(after_torch + "print(use_huge_pages())") == ["False"]  # too late once torch is imported


def test_nothing_changes_off_glibc_and_linux(monkeypatch):
    from TokenUNetSegmentLib.pipeline import allocator

    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert allocator.retain_freed_memory() is False
    monkeypatch.setattr(allocator.sys, "platform", "win32")
    assert allocator.use_huge_pages() is False
