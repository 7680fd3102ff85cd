"""All-or-nothing output folders: staging beside the destination, the swap, the lock, the manifest, recovery after a
crash, and what a re-run keeps (the user's files) and deletes (only the tool's)."""

import errno
import json
import os
import signal
import socket
import sys

import pytest
from TokenUNetSegmentLib.pipeline import output_folder as of
from TokenUNetSegmentLib.pipeline.errors import OutputError
from TokenUNetSegmentLib.pipeline.locks import DestinationLock, lock_path
from TokenUNetSegmentLib.pipeline.output_folder import MANIFEST, OutputFolder, write_file_atomically

RESERVED = ("result.txt", "maps/m[0-9]*.txt")


def run(destination, files: dict, **options) -> OutputFolder:
    """One run writing ``files`` ({relative path: text}) through an OutputFolder; returns the folder object."""
    folder = OutputFolder(destination, "test", reserved=RESERVED, **options)
    with folder:
        for name, text in files.items():
            (folder.staging / name).parent.mkdir(parents=True, exist_ok=True)
            (folder.staging / name).write_text(text)
        folder.commit()
    return folder


def tree(folder) -> dict:
    """{relative path: text} of every file below ``folder`` except the manifest."""
    return {
        p.relative_to(folder).as_posix(): p.read_text()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def siblings(folder) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name != folder.name)


FIRST = {"result.txt": "1", "maps/m0.txt": "a", "maps/m1.txt": "b", "extra/e.txt": "x"}
SECOND = {"result.txt": "2", "maps/m0.txt": "A"}


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_rerun_replaces_the_tools_files_and_keeps_the_users(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(of, "_exchange", lambda first, second: False)
    out = tmp_path / "parent" / "out"
    run(out, FIRST)
    assert tree(out) == FIRST and siblings(out) == []  # no staging folder, no lock left beside it
    (out / "maps" / "mine.txt").write_text("user")  # a user's file inside a folder of ours
    (out / "notes").mkdir()
    (out / "notes" / "n.txt").write_text("user 2")
    run(out, SECOND)
    # the old run's files are gone (m1, extra/), the new ones in place, the user's untouched
    assert tree(out) == {**SECOND, "maps/mine.txt": "user", "notes/n.txt": "user 2"}
    assert siblings(out) == []
    assert set(json.loads((out / MANIFEST).read_text())["files"]) == set(SECOND)


def test_a_folder_the_tool_did_not_write_is_refused_untouched(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.docx").write_text("years of work")
    with pytest.raises(OutputError, match="already holds files that TokenUNet did not write"):
        run(mine, FIRST)
    assert tree(mine) == {"thesis.docx": "years of work"} and siblings(mine) == []
    (tmp_path / "empty").mkdir()
    run(tmp_path / "empty", FIRST)  # an empty folder is fine
    assert tree(tmp_path / "empty") == FIRST


def test_a_batchs_root_is_named_as_such_not_as_files_tokenunet_did_not_write(tmp_path):
    """``segment --out results`` where ``results`` is the root of a ``batch`` (found by hostile) (before: "already
    holds files that TokenUNet did not write (e.g. 'batch.json')", which TokenUNet wrote)."""
    root = tmp_path / "results"
    root.mkdir()
    (root / "batch.json").write_text(json.dumps({"tokenunet_batch": 1, "cases": []}))
    with pytest.raises(OutputError, match=r"results holds the results of a batch \(batch.json\)") as caught:
        run(root, FIRST)
    assert "choose another folder" in caught.value.hint
    assert tree(root) == {"batch.json": '{"tokenunet_batch": 1, "cases": []}'} and siblings(root) == []
    (root / "batch.json").write_text('{"mine": 1}')  # a file of the user's of that name: as before
    with pytest.raises(OutputError, match="already holds files that TokenUNet did not write"):
        run(root, FIRST)


def test_a_file_a_protected_folder_and_a_file_in_the_way_are_refused_before_writing(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        OutputFolder(tmp_path / "a-file", "test").open()
    with pytest.raises(OutputError, match="is a file"):
        OutputFolder(tmp_path / "a-file" / "below", "test").open()
    cache = tmp_path / "cache"
    with pytest.raises(OutputError, match="inside the model cache"):
        OutputFolder(cache / "models" / "x", "test", protected=[(cache, "the model cache")]).open()
    assert not cache.exists()
    with pytest.raises(OutputError, match="cannot use"):
        OutputFolder("/", "test").open()


def test_a_users_file_where_the_run_would_write_refuses_it_before_computing(tmp_path):
    out = tmp_path / "out"
    run(out, FIRST)
    (out / "maps" / "m7.txt").write_text("the user's own m7")  # not ours, named like one of ours
    with pytest.raises(OutputError, match="was not written by TokenUNet"):
        OutputFolder(out, "test", reserved=RESERVED).open()
    (out / "maps" / "m7.txt").unlink()
    (out / "result.txt").write_text("edited by the user")  # ours, but changed since: now the user's
    with pytest.raises(OutputError, match="changed since"):
        OutputFolder(out, "test", reserved=RESERVED).open()
    assert (out / "result.txt").read_text() == "edited by the user" and siblings(out) == []


def test_a_second_run_on_the_same_destination_is_refused_by_the_lock(tmp_path):
    out = tmp_path / "out"
    first = OutputFolder(out, "test")  # the command ``run`` below writes too: a result of another is refused
    first.open()
    with pytest.raises(OutputError, match=r"in use by another TokenUNet run \(test, pid \d+") as refused:
        OutputFolder(out, "test").open()
    assert "delete" in refused.value.hint
    (first.staging / "result.txt").write_text("1")
    first.commit()
    assert tree(out) == {"result.txt": "1"} and siblings(out) == []
    run(out, SECOND)  # released: the next run goes ahead


def test_a_stale_lock_is_taken_over_and_a_live_or_foreign_one_is_not(tmp_path):
    out = tmp_path / "out"
    lock = lock_path(out)
    tmp_path.joinpath("x").write_text("")
    dead = {"pid": 2**22 + 12345, "host": socket.gethostname(), "start": 1, "token": "t", "command": "segment"}
    lock.write_text(json.dumps(dead))
    run(out, FIRST)  # a dead owner's lock (crash, kill -9)
    assert not lock.exists()
    reused = {**dead, "pid": os.getppid(), "start": -5}  # a live pid, but another process started it
    lock.write_text(json.dumps(reused))
    run(out, SECOND)
    elsewhere = {**dead, "host": "another-host"}  # cannot be checked from here: never taken over
    lock.write_text(json.dumps(elsewhere))
    with pytest.raises(OutputError, match="on another-host"):
        run(out, FIRST)
    lock.write_text("{garbage")  # unreadable and old: a crash while it was written
    os.utime(lock, (1, 1))
    run(out, FIRST)
    assert tree(out) == FIRST and siblings(out) == ["x"]


def test_the_lock_is_exclusive_within_one_process_and_released_only_by_its_owner(tmp_path):
    out = tmp_path / "out"
    with DestinationLock(out, "a"):
        with pytest.raises(OutputError, match="in use"):
            DestinationLock(out, "b").acquire()
        other = DestinationLock(out, "c")
        other.release()  # not held: removes nothing
        assert lock_path(out).exists()
    assert not lock_path(out).exists()


def test_a_failure_while_writing_leaves_the_previous_result(tmp_path):
    out = tmp_path / "out"
    run(out, FIRST)
    folder = OutputFolder(out, "test")
    with pytest.raises(RuntimeError, match="boom"):
        with folder:
            (folder.staging / "result.txt").write_text("half")
            raise RuntimeError("boom")
    assert tree(out) == FIRST and siblings(out) == []


def test_a_failure_between_the_renames_puts_the_old_folder_back(tmp_path, monkeypatch):
    out = tmp_path / "out"
    run(out, FIRST)
    monkeypatch.setattr(of, "_exchange", lambda first, second: False)
    real = os.rename

    def second_rename_fails(source, target):
        if of.STAGING_TAG in str(source) and str(target) == str(out):  # the new folder moving in
            raise OSError(errno.EIO, "I/O error", str(target))
        return real(source, target)

    monkeypatch.setattr(of.os, "rename", second_rename_fails)
    with pytest.raises(OutputError, match="I/O error"):
        run(out, SECOND)
    assert tree(out) == FIRST and siblings(out) == []


def _leftover(out, tag, files: dict, state="complete", record=True):
    """A folder beside ``out`` as a run that died would leave it."""
    folder = out.parent / f".{out.name}{tag}99999-dead"
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    folder.mkdir(exist_ok=True)
    listed = {n: [(folder / n).stat().st_size, (folder / n).stat().st_mtime_ns] for n in files if record}
    (folder / MANIFEST).write_text(json.dumps({"state": state, "files": listed}))
    return folder


def test_what_a_crash_leaves_is_recovered_by_the_next_run(tmp_path):
    out = tmp_path / "out"
    # a crash right after the exchange: the new result in place, the old one (with a user's file) beside it
    run(out, SECOND)
    old = _leftover(out, of.STAGING_TAG, FIRST)
    (old / "maps" / "mine.txt").write_text("user")
    # a crash while another run was still writing its staging folder
    _leftover(out, of.STAGING_TAG.replace("-", "_"), {})  # not ours by name: never touched
    unfinished = _leftover(out, of.STAGING_TAG + "1-", {"result.txt": "partial"}, state="staging")
    run(out, {"result.txt": "3"})
    assert tree(out) == {"result.txt": "3", "maps/mine.txt": "user"}
    assert not old.exists() and not unfinished.exists()
    assert siblings(out) == [f".out{of.STAGING_TAG.replace('-', '_')}99999-dead"]


def test_a_crash_between_the_two_renames_restores_the_old_result(tmp_path):
    out = tmp_path / "out"
    aside = _leftover(out, of.ASIDE_TAG, FIRST)  # the destination is missing: only its old folder remains
    _leftover(out, of.STAGING_TAG, SECOND)  # and the complete new one that never moved in
    folder = OutputFolder(out, "test", reserved=RESERVED)
    folder.open()
    assert tree(out) == FIRST and not aside.exists()  # restored before the new run starts
    folder.abort()
    assert siblings(out) == []


def test_a_tampered_manifest_never_deletes_outside_the_folder(tmp_path):
    out = tmp_path / "out"
    run(out, FIRST)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "m0.txt").write_text("precious too")
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["files"].update({"../victim.txt": None, str(victim): None, "link/m0.txt": None})
    (out / MANIFEST).write_text(json.dumps(manifest))
    (out / "link").symlink_to(elsewhere)
    run(out, SECOND)
    assert victim.read_text() == "precious" and (elsewhere / "m0.txt").read_text() == "precious too"
    assert (out / "link").is_symlink()  # the user's link is carried over, not followed


def test_a_result_of_an_older_version_without_manifest_is_taken_over(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.txt").write_text("old")
    (out / "notes.txt").write_text("user")

    def legacy(folder):
        return {"result.txt"} if (folder / "result.txt").exists() else None

    run(out, SECOND, legacy_files=legacy)
    assert tree(out) == {**SECOND, "notes.txt": "user"}


def test_an_interrupt_during_the_swap_waits_until_it_is_done(tmp_path, monkeypatch):
    out = tmp_path / "out"
    run(out, FIRST)
    real = of._exchange

    def interrupted(first, second):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the swap
        return real(first, second)

    monkeypatch.setattr(of, "_exchange", interrupted)
    folder = run(out, SECOND)  # no KeyboardInterrupt
    assert tree(out) == SECOND and siblings(out) == []
    assert any("interrupt" in warning for warning in folder.warnings)


def test_a_full_disk_while_writing_is_one_line_and_the_old_result_stays(tmp_path):
    out = tmp_path / "out"
    run(out, FIRST)
    folder = OutputFolder(out, "test")
    with pytest.raises(OutputError) as full:
        with folder, folder.writing():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder.staging / "result.txt"))
    assert "disk" in str(full.value) and "full" in str(full.value) and "\n" not in str(full.value)
    with pytest.raises(OutputError) as itk:  # SimpleITK reports ENOSPC as a long RuntimeError
        folder = OutputFolder(out, "test")
        with folder, folder.writing():
            raise RuntimeError("itk::ERROR: NrrdImageIO(0x55): Write: Error writing\n" + "x" * 18000)
    assert len(str(itk.value)) < 300 and "\n" not in str(itk.value)
    assert tree(out) == FIRST and siblings(out) == []


def test_free_space_is_checked_before_computing(tmp_path):
    folder = OutputFolder(tmp_path / "out", "test")
    with folder:
        folder.check_space(1000)
        with pytest.raises(OutputError, match="needs about 8 EiB|needs about"):
            folder.check_space(2**62)
    assert siblings(tmp_path / "out") == [] and not (tmp_path / "out").exists()


def test_long_and_unicode_names(tmp_path):
    name = "résultat-" + "é" * 120  # 249 bytes: its hidden siblings' names are shortened
    out = tmp_path / name
    run(out, FIRST)
    run(out, SECOND)
    assert tree(out) == SECOND and siblings(out) == []


def test_a_destination_through_a_link_replaces_the_real_folder_and_keeps_the_link(tmp_path):
    real = tmp_path / "real"
    run(real, FIRST)
    (tmp_path / "link").symlink_to(real)
    run(tmp_path / "link", SECOND)
    assert (tmp_path / "link").is_symlink() and tree(real) == SECOND


def test_single_files_are_replaced_all_at_once_keeping_their_permissions(tmp_path):
    target = tmp_path / "sub" / "metrics.json"
    write_file_atomically(target, "{}")
    os.chmod(target, 0o600)
    write_file_atomically(target, b'{"a": 1}')
    assert target.read_text() == '{"a": 1}' and (target.stat().st_mode & 0o777) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]
    with pytest.raises(OutputError, match="is a folder"):
        write_file_atomically(tmp_path, "x")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_the_exchange_is_atomic_on_linux(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    assert of._exchange(tmp_path / "a", tmp_path / "b") is True
    assert (tmp_path / "b" / "x").read_text() == "a" and not any((tmp_path / "a").iterdir())
