"""Where outputs may go (outaudit): a file or link of the user's where a run makes a folder, links at the tool's own
hidden names, names and paths longer than file systems take, an output folder that is the root of a file system, a
file-size limit, a deleted working folder, a user's file that cannot be moved, and the sample script's relative
output folder (its default stays the repository's sample-output/). Each is refused before the work in one line
(exit 2), or written where the user named; nothing of the user's is moved, replaced or written through."""

import errno
import json
import os
import resource
import signal
import subprocess
import sys

import pytest
from helpers.disks import LINUX_MOUNT, tmpfs
from helpers.paths import MODULE_DIR
from TokenUNetSegmentLib.pipeline import cli, output_folder, segmentation
from TokenUNetSegmentLib.pipeline.errors import InputError, OutputError
from TokenUNetSegmentLib.pipeline.output_folder import OutputFolder, write_file_atomically

RESERVED = ("result.txt", "maps/m[0-9]*.txt")


def _must_not_run(*args, **kwargs):
    raise AssertionError("the segmentation ran before the output folder was checked")


def one_line(err: str) -> bool:
    return err.startswith("error: ") and err.count("\n") == 1 and len(err) <= 201


def write(destination, files: dict) -> None:
    folder = OutputFolder(destination, "test", reserved=RESERVED)
    with folder:
        for name, text in files.items():
            (folder.staging / name).parent.mkdir(parents=True, exist_ok=True)
            (folder.staging / name).write_text(text)
        folder.commit()


@pytest.mark.parametrize("kind", ["file", "link to a folder", "dangling link"])
def test_a_file_or_link_where_a_run_makes_a_folder_is_refused_before_computing(tmp_path, kind):
    """Before: ``out/maps`` of the user's (a file, or a link to a folder elsewhere) matched no reserved pattern, so
    the run went ahead and then moved it out of ``out`` into a hidden folder beside it, left there for good."""
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    write(out, {"result.txt": "1", "maps/m0.txt": "a"})
    elsewhere.mkdir()
    (elsewhere / "m0.txt").write_text("the user's")
    for name in os.listdir(out / "maps"):
        os.unlink(out / "maps" / name)
    (out / "maps").rmdir()
    if kind == "file":
        (out / "maps").write_text("the user's notes")
    else:
        (out / "maps").symlink_to(elsewhere if kind == "link to a folder" else tmp_path / "gone")
    with pytest.raises(OutputError, match=r"maps was not written by TokenUNet .* this run would replace it"):
        OutputFolder(out, "test", reserved=RESERVED).open()
    assert sorted(os.listdir(tmp_path)) == ["elsewhere", "out"]  # no staging folder, no lock
    assert os.path.lexists(out / "maps") and (elsewhere / "m0.txt").read_text() == "the user's"


def test_a_folder_of_the_users_where_a_run_writes_a_file_is_refused_before_computing(tmp_path):
    """(outaudit) Before: ``out/result.txt/`` a folder of the user's (``notes.txt`` in it) matched no reserved name,
    so the run went ahead and then moved it out of ``out`` into a hidden folder beside it."""
    out = tmp_path / "out"
    write(out, {"result.txt": "1", "maps/m0.txt": "a"})
    (out / "result.txt").unlink()
    (out / "result.txt").mkdir()
    (out / "result.txt" / "notes.txt").write_text("the user's")
    with pytest.raises(OutputError, match=r"result.txt/notes.txt was not written by TokenUNet"):
        OutputFolder(out, "test", reserved=RESERVED).open()
    folder = OutputFolder(out, "test")  # nothing reserved: the same found when the result is put in place
    with folder, pytest.raises(OutputError, match=r"result.txt/notes.txt was not written by TokenUNet"):
        (folder.staging / "result.txt").write_text("2")
        folder.commit()
    assert (out / "result.txt" / "notes.txt").read_text() == "the user's" and sorted(os.listdir(tmp_path)) == ["out"]


def test_a_result_of_another_command_is_refused_untouched(tmp_path):
    """(outaudit) A manifest made a folder the tool's whatever command wrote it: a run of another command replaced it
    and deleted its files (e.g. a model package's weights, metadata and licence under a segmentation)."""
    out = tmp_path / "out"
    folder = OutputFolder(out, "package")
    with folder:
        (folder.staging / "weights.bin").write_text("hours of training")
        folder.commit()
    with pytest.raises(OutputError, match=r"holds a model package, not a segmentation") as refused:
        OutputFolder(out, "segment", reserved=RESERVED).open()
    assert "choose another folder" in refused.value.hint
    assert (out / "weights.bin").read_text() == "hours of training" and sorted(os.listdir(tmp_path)) == ["out"]
    with pytest.raises(OutputError, match="holds a model package, not a result of 'something else'"):
        OutputFolder(out, "something else").check()
    write(tmp_path / "mine", {"result.txt": "1"})  # the same command replaces its own result as before
    write(tmp_path / "mine", {"result.txt": "2"})
    assert (tmp_path / "mine" / "result.txt").read_text() == "2"


def test_segment_into_the_folder_of_its_own_model_package_keeps_the_package(cli_case, tmp_path, capsys):
    """(outaudit) ``segment CT --model run/package --out run/package`` (a slip for ``--out run/seg``). Before: the
    segmentation ran, replaced the package folder and deleted the package's metadata, weights and licence, which
    ``train`` took hours to make; only the empty configs/, models/ and docs/ were left beside the segmentation."""
    import shutil

    root, package, path = cli_case
    mine = tmp_path / "package"
    shutil.copytree(package, mine)
    before = sorted(str(p.relative_to(mine)) for p in mine.rglob("*"))
    for out in (mine,):
        assert cli.main(["segment", str(path), "--model", str(mine), "--out", str(out), "--no-overview"]) == 2
        err = capsys.readouterr().err
        assert one_line(err) and "holds a model package, not a segmentation" in err, err
    assert sorted(str(p.relative_to(mine)) for p in mine.rglob("*")) == before
    assert sorted(os.listdir(tmp_path)) == ["package"]


def test_the_python_api_refuses_the_places_the_command_line_refuses_in_the_same_words(
    cli_case, tmp_path, monkeypatch, capsys
):
    """(apiguard) ``write_outputs(result, folder)`` wrote into the model cache and into a bundled model's folder,
    which ``segment --out`` refuses; a model package folder (one with a manifest) it refused already. The API now
    raises the same OutputError (a TokenUNetError) as the command line's exit-2 line, and writes nothing."""
    import json
    import shutil

    import numpy as np
    from helpers.packages import ball_phantom, threshold_package
    from TokenUNetSegmentLib.pipeline import catalog
    from TokenUNetSegmentLib.pipeline.outputs import write_outputs

    root, package, path = cli_case
    home, bundled = tmp_path / "home", tmp_path / "Models" / "tiny-demo"
    shutil.copytree(package, bundled)
    (tmp_path / "Models.json").write_text(
        json.dumps({"models": [{"id": "tiny-demo", "description": "tiny", "path": "Models/tiny-demo"}]})
    )
    monkeypatch.setenv("TOKENUNET_HOME", str(home))
    monkeypatch.setattr(catalog, "DEFAULT_CATALOG", tmp_path / "Models.json")
    trained = tmp_path / "run" / "package"
    with OutputFolder(trained, "package") as folder:  # what train and package write: a manifest of a package
        (folder.staging / "weights.bin").write_text("hours of training")
        folder.commit()

    def files():  # every path, and each file's time (a folder's changes with the lock taken beside a destination)
        return {p: p.is_file() and p.stat().st_mtime_ns for p in tmp_path.rglob("*")}

    before = files()
    image = ball_phantom((24, 24, 16), (12, 12, 8), (5, 5, 4))
    result = segmentation.segment([(image, np.eye(4))], threshold_package(), device="cpu")
    argv = ["segment", str(path), "--model", str(package), "--no-overview"]
    for out, what in [
        (home / "models" / "new", "is inside the model cache"),
        (bundled / "out", "is inside the bundled model 'tiny-demo'"),
        (trained, "holds a model package, not a segmentation"),
    ]:
        with pytest.raises(OutputError) as refused:
            write_outputs(result, out, overview=False)
        assert what in str(refused.value), refused.value
        assert cli.main([*argv, "--out", str(out)]) == 2
        assert capsys.readouterr().err == f"error: {refused.value}\n"  # the command line's words, as one line
    assert files() == before and not home.exists()


def test_the_python_api_writes_a_result_where_no_home_folder_holds_a_model_cache(tmp_path, monkeypatch):
    """With no home folder (HOME unset, no user entry, TOKENUNET_HOME unset: a bare container) there is no model cache
    to keep results out of: ``write_outputs`` writes the result (the guard added for the cache must not refuse it)."""
    import numpy as np
    from helpers.packages import ball_phantom, threshold_package
    from TokenUNetSegmentLib.pipeline import catalog
    from TokenUNetSegmentLib.pipeline.errors import ModelPackageError
    from TokenUNetSegmentLib.pipeline.outputs import write_outputs

    def no_home():
        raise ModelPackageError("cannot find a home folder for the model cache", "set TOKENUNET_HOME")

    image = ball_phantom((24, 24, 16), (12, 12, 8), (5, 5, 4))
    result = segmentation.segment([(image, np.eye(4))], threshold_package(), device="cpu")
    monkeypatch.setattr(catalog, "tokenunet_home", no_home)
    write_outputs(result, tmp_path / "out", overview=False)
    assert (tmp_path / "out" / "report.json").is_file()


def test_a_link_of_the_users_at_the_attention_folder_refuses_segment_before_it_runs(cli_case, tmp_path, capsys):
    root, package, path = cli_case
    out, theirs = tmp_path / "out", tmp_path / "theirs"
    assert cli.main(["segment", str(path), "--model", str(package), "--out", str(out), "--no-overview"]) == 0
    capsys.readouterr()
    theirs.mkdir()
    (theirs / "token00_gather.nrrd").write_text("the user's")
    for name in os.listdir(out / "attention"):
        os.unlink(out / "attention" / name)
    (out / "attention").rmdir()
    (out / "attention").symlink_to(theirs)
    before = sorted(os.listdir(out))
    assert cli.main(["segment", str(path), "--model", str(package), "--out", str(out), "--no-overview"]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "attention was not written by TokenUNet" in err, err
    assert sorted(os.listdir(out)) == before and (out / "attention").is_symlink()
    assert os.listdir(theirs) == ["token00_gather.nrrd"] and sorted(os.listdir(tmp_path)) == ["out", "theirs"]


def test_names_and_paths_longer_than_file_systems_take_are_one_line_before_the_work(
    cli_case, tmp_path, monkeypatch, capsys
):
    """Before: ``internal error: OSError: [Errno 36] File name too long``, exit 1 (a 256-byte name; a 4 KiB path)."""
    root, package, path = cli_case
    monkeypatch.setattr(segmentation, "segment", _must_not_run)
    too_long_name = tmp_path / ("é" * 128)  # 256 bytes
    too_long_path = tmp_path.joinpath(*["d" * 200] * 21, "out")
    for out, message in [(too_long_name, "256 bytes long"), (too_long_path, "bytes long")]:
        assert cli.main(["segment", str(path), "--model", str(package), "--out", str(out)]) == 2, out
        err = capsys.readouterr().err
        assert one_line(err) and message in err and "shorter" in err, err
        with pytest.raises(OutputError, match="bytes long"):
            write_file_atomically(out / "x.json", "{}")
    assert os.listdir(tmp_path) == []
    json_out = tmp_path / ("e" * 251 + ".json")
    reference = str(path)
    assert cli.main(["evaluate", reference, "--prediction", reference, "--json", str(json_out)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "256 bytes long" in err, err
    write(tmp_path / ("é" * 127), {"result.txt": "1"})  # 254 bytes: still fine


def test_a_mount_point_as_the_output_folder_is_refused_before_computing(cli_case, tmp_path, monkeypatch, capsys):
    """A result is renamed into place, which cannot be done at the root of a file system (a USB disk, a share).
    Before: the whole run, then "Device or resource busy" and a stray manifest left in the user's disk."""
    root, package, path = cli_case
    monkeypatch.setattr(segmentation, "segment", _must_not_run)
    disk = tmp_path / "disk"
    disk.mkdir()
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: os.fspath(p) == str(disk) or real_ismount(p))
    assert cli.main(["segment", str(path), "--model", str(package), "--out", str(disk)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "is a mount point" in err and "inside it" in err, err
    assert os.listdir(disk) == [] and sorted(os.listdir(tmp_path)) == ["disk"]
    write(disk / "results", {"result.txt": "1"})  # a folder inside it is fine


@pytest.mark.skipif(not LINUX_MOUNT or os.geteuid() != 0, reason="mounts a tmpfs (root on Linux)")
def test_a_real_mount_point_keeps_its_files_and_a_folder_inside_it_works(cli_case, tmp_path, capsys):
    root, package, path = cli_case
    with tmpfs(tmp_path / "disk", "4m") as disk:
        assert cli.main(["segment", str(path), "--model", str(package), "--out", str(disk), "--no-overview"]) == 2
        assert "is a mount point" in capsys.readouterr().err
        assert os.listdir(disk) == []
        out = disk / "results"
        assert cli.main(["segment", str(path), "--model", str(package), "--out", str(out), "--no-overview"]) == 0
        assert (out / "segmentation.seg.nrrd").is_file() and sorted(os.listdir(disk)) == ["results"]


def test_a_file_size_limit_is_not_called_a_full_disk(tmp_path):
    """EFBIG (a process's ``ulimit -f``, or FAT32's 4 GiB) was reported as "the disk of ... is full (42.6 GiB
    free)". A real limit, in a child process (Python ignores SIGXFSZ, so the write fails with EFBIG)."""
    code = (
        "import resource, sys; from TokenUNetSegmentLib.pipeline.output_folder import write_file_atomically;"
        "from TokenUNetSegmentLib.pipeline.errors import OutputError\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
        f"try: write_file_atomically({str(tmp_path / 'big.bin')!r}, b'x' * 100000)\n"
        "except OutputError as e: print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=MODULE_DIR)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert "file-size limit" in line and "full" not in line and "nothing was changed" in line, line
    assert os.listdir(tmp_path) == []
    assert resource.getrlimit(resource.RLIMIT_FSIZE)  # the limit was the child's only
    message = str(output_folder._os_output_error(OSError(errno.ENOSPC, "No space left on device"), tmp_path / "o"))
    assert "is full" in message  # a full disk is still called one


def test_the_sample_script_prints_its_usage_for_help_and_refuses_options_and_extra_arguments(tmp_path):
    """``bash scripts/segment-sample.sh --help`` (or ``-h``) (found by hostile) (before: taken for the output folder:
    the sample segmented into a folder named ``--help``); ``--out x``, a second folder (before: the second ignored)."""
    from helpers.processes import sample_script_with_stand_ins

    script, calls = sample_script_with_stand_ins(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    for arguments, code in [(["--help"], 0), (["-h"], 0), (["--out", "x"], 2), (["a", "b"], 2), (["-x"], 2)]:
        done = subprocess.run(["bash", str(script), *arguments], cwd=work, text=True, capture_output=True)
        assert done.returncode == code, (arguments, done.stderr)
        said = done.stdout if code == 0 else done.stderr
        assert "segment-sample.sh [OUTPUT_FOLDER]" in said, said
        assert not calls.exists() and list(work.iterdir()) == []
    done = subprocess.run(["bash", str(script), "--", "-odd"], cwd=work, text=True, capture_output=True)
    assert done.returncode == 0, done.stderr  # a folder whose name starts with '-', after '--'
    segment = json.loads(calls.read_text().splitlines()[0])
    assert segment["argv"][segment["argv"].index("--out") + 1] == str(work / "-odd")


def test_the_sample_script_writes_a_relative_output_folder_where_it_was_run(tmp_path):
    """Before: ``bash scripts/segment-sample.sh out`` changed to the repository first, so ``out`` went into the
    repository, not the user's folder. The script runs against stand-ins for the venv set-up and Python."""
    from helpers.processes import sample_script_with_stand_ins

    script, calls = sample_script_with_stand_ins(tmp_path)
    repo = script.parent.parent
    work = tmp_path / "work"
    work.mkdir()
    for given, expected in [("rel/out", work / "rel" / "out"), (str(tmp_path / "abs"), tmp_path / "abs")]:
        calls.unlink(missing_ok=True)
        done = subprocess.run(
            ["bash", str(repo / "scripts" / "segment-sample.sh"), given], cwd=work, text=True, capture_output=True
        )
        assert done.returncode == 0, done.stderr
        segment, evaluate = [json.loads(line) for line in calls.read_text().splitlines()]
        assert segment["argv"][segment["argv"].index("--out") + 1] == str(expected)
        assert evaluate["argv"][evaluate["argv"].index("--json") + 1] == str(expected / "evaluation.json")
        assert done.stdout.splitlines()[-1] == said(expected, repo)  # paths that open from where it was run
    calls.unlink()
    done = subprocess.run(
        ["bash", str(repo / "scripts" / "segment-sample.sh")], cwd=work, check=True, capture_output=True
    )
    segment = json.loads(calls.read_text().splitlines()[0])
    out = segment["argv"][segment["argv"].index("--out") + 1]
    assert os.path.join(segment["cwd"], out) == str(repo / "sample-output")  # as documented
    assert done.stdout.decode().splitlines()[-1] == said(repo / "sample-output", repo)


def said(out, repo) -> str:
    """The sample script's last line for the output folder ``out``: every path absolute (before: the sample's path
    and the default output folder were relative to the repository, not to where the script was run)."""
    sample = repo / "TokenUNetSegment" / "Resources" / "Samples" / "AbdomenCT.nii.gz"
    return f"open {out}/overview.png, or load {out}/segmentation.seg.nrrd and {sample} in 3D Slicer"


def test_a_single_file_that_fails_leaves_no_folders_it_made(tmp_path):
    """(outaudit) Before: ``datalist --out a/b/list.json`` on a full disk said "nothing was changed there" and left the
    folders a/b it had made; folders that were there before stay."""
    (tmp_path / "kept").mkdir()

    def full(stream):
        stream.write(b"{")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match="is full"):
        write_file_atomically(tmp_path / "kept" / "a" / "b" / "list.json", full)
    assert os.listdir(tmp_path) == ["kept"] and os.listdir(tmp_path / "kept") == []
    write_file_atomically(tmp_path / "kept" / "a" / "b" / "list.json", "{}")
    assert (tmp_path / "kept" / "a" / "b" / "list.json").read_text() == "{}"


def test_a_link_at_the_manifests_temporary_name_is_not_written_through(tmp_path):
    """(outaudit) Before: a link ``out/.tokenunet-manifest.json.tmp`` (a shared folder, another user) had the next
    run write its manifest into the file it pointed to, replacing that file's content."""
    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    write(out, {"result.txt": "1"})
    victim.write_text("precious")
    (out / ".tokenunet-manifest.json.tmp").symlink_to(victim)
    write(out, {"result.txt": "2"})
    assert victim.read_text() == "precious" and (out / "result.txt").read_text() == "2"
    assert not os.path.islink(out / ".tokenunet-manifest.json")


def test_a_link_at_the_batch_space_reserves_name_is_not_written_through(cli_case, tmp_path, capsys):
    """(outaudit) Before: a link ``ROOT/.batch.json.tokenunet-reserve`` had ``batch`` fill the file it pointed to
    with zeros (the room it keeps for a last batch.json on a full disk): the user's file destroyed."""
    root, package, path = cli_case
    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    out.mkdir()
    victim.write_text("precious")
    (out / ".batch.json.tokenunet-reserve").symlink_to(victim)
    assert cli.main(["batch", str(path), "--model", str(package), "--out", str(out), "--no-overview"]) == 0
    capsys.readouterr()
    assert victim.read_text() == "precious" and (out / "batch.json").is_file()


def test_a_users_file_that_cannot_be_moved_after_the_swap_is_a_warning_not_a_failure(tmp_path, monkeypatch):
    """(outaudit) The new result is in place once swapped; a user's file in the old one that cannot be moved into it
    (an immutable or read-only folder: EPERM) then made the run fail ("error: cannot write the output ...", exit 2)
    though its result was written, and every later run on the folder failed the same way."""
    out = tmp_path / "out"
    write(out, {"result.txt": "1", "maps/m0.txt": "a"})
    (out / "maps" / "mine.txt").write_text("the user's")
    real_rename = os.rename

    def refuse_the_users(source, target, *args, **kwargs):
        if os.fspath(source).endswith("mine.txt"):
            raise PermissionError(errno.EPERM, "Operation not permitted", os.fspath(source))
        return real_rename(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "rename", refuse_the_users)
    folder = OutputFolder(out, "test", reserved=RESERVED)
    with folder:
        (folder.staging / "result.txt").write_text("2")
        folder.commit()  # no error: the result is in place
    assert (out / "result.txt").read_text() == "2"
    kept = [name for name in os.listdir(tmp_path) if name != "out"]
    assert len(kept) == 1 and (tmp_path / kept[0] / "maps" / "mine.txt").read_text() == "the user's"
    assert any("mine.txt" in warning and kept[0] in warning for warning in folder.warnings), folder.warnings
    assert not (tmp_path / kept[0] / "result.txt").exists()  # the tool's old files are gone all the same
    write(out, {"result.txt": "3"})  # a later run works (and says again where the file is)
    monkeypatch.setattr(os, "rename", real_rename)
    write(out, {"result.txt": "4"})  # once it can be moved, it is
    assert (out / "maps" / "mine.txt").read_text() == "the user's" and sorted(os.listdir(tmp_path)) == ["out"]


def test_a_loop_of_links_on_the_way_is_named_as_such(tmp_path):
    """(outaudit) Before: ``--out loopa/x`` with ``loopa -> loopb -> loopa``: "cannot write in .../loopa: permission
    denied", which sent the user to check permissions."""
    (tmp_path / "loopa").symlink_to("loopb")
    (tmp_path / "loopb").symlink_to("loopa")
    for destination in (tmp_path / "loopa" / "x", tmp_path / "loopa" / "x" / "y"):
        with pytest.raises(OutputError, match="symbolic links") as refused:
            OutputFolder(destination, "test").open()
        assert "permission" not in str(refused.value)
    assert sorted(os.listdir(tmp_path)) == ["loopa", "loopb"]


@pytest.mark.parametrize("out", ["relative", "absolute"])
def test_a_command_run_in_a_deleted_folder_is_one_line_before_any_work(cli_case, tmp_path, out):
    """(outaudit) A terminal whose folder was deleted (``rm -rf`` in another one). Before: a relative --out was
    ``internal error: FileNotFoundError``, exit 1; an absolute one got as far as torch's import, which ended the
    process ("Intel oneMKL FATAL ERROR: Cannot load .../libtorch_cpu.so", exit 2 from MKL), leaving the lock and the
    staging folder beside the output."""
    root, package, path = cli_case
    gone = tmp_path / "gone"
    gone.mkdir()
    target = "out" if out == "relative" else str(tmp_path / "out")
    code = (
        "import os, sys\n"
        f"os.chdir({str(gone)!r}); os.rmdir({str(gone)!r})\n"
        "from TokenUNetSegmentLib.pipeline import cli\n"
        f"sys.exit(cli.main(['segment', {str(path)!r}, '--model', {str(package)!r}, '--out', {target!r}]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(MODULE_DIR)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert one_line(done.stderr) and "current folder" in done.stderr and "no longer exists" in done.stderr
    assert os.listdir(tmp_path) == []


def test_commands_that_name_no_relative_path_run_in_a_deleted_folder(tmp_path):
    """(leftfix) ``models list`` reads only the catalog and the model cache, named by absolute paths: it runs in a
    deleted folder (before: refused as every command was). ``--help`` too. Refused still: the same list with a relative
    ``--catalog`` or ``TOKENUNET_HOME``, and the commands that take paths (``models info`` takes an id or a path).
    (sigreview) Refused too: a relative ``HOME`` without ``TOKENUNET_HOME`` (before: the cache ``HOME/.tokenunet``,
    relative to a folder that no longer exists, was read as empty: the list lacked the user's models, exit 0)."""
    gone, home, user = tmp_path / "gone", tmp_path / "home", str(tmp_path / "user")
    gone.mkdir()
    runs = {  # argv, TOKENUNET_HOME, HOME
        "list": (["models", "list"], str(home), user),
        "list json": (["models", "list", "--json"], str(home), user),
        "help": (["--help"], str(home), user),
        "models help": (["models", "--help"], str(home), user),
        "relative catalog": (["--catalog", "catalog.json", "models", "list"], str(home), user),
        "relative home": (["models", "list"], "home", user),
        "relative user home": (["models", "list"], "", "user"),  # the cache in ~/.tokenunet (sigreview)
        "info": (["models", "info", "abdomen-organs-3mm-demo"], str(home), user),
    }
    code = (
        "import contextlib, io, json, os, sys\n"
        f"os.chdir({str(gone)!r}); os.rmdir({str(gone)!r})\n"
        "from TokenUNetSegmentLib.pipeline import cli\n"
        "seen = {}\n"
        f"for name, (argv, home, user) in {runs!r}.items():\n"
        "    os.environ['TOKENUNET_HOME'], os.environ['HOME'] = home, user\n"
        "    out, err = io.StringIO(), io.StringIO()\n"
        "    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):\n"
        "        code = cli.main(argv)\n"
        "    seen[name] = (code, out.getvalue(), err.getvalue())\n"
        "print(json.dumps(seen))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(MODULE_DIR)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    for name in ("list", "list json", "help", "models help"):
        assert seen[name][0] == 0 and seen[name][2] == "", (name, seen[name])
    assert "abdomen-organs-3mm-demo" in seen["list"][1] and json.loads(seen["list json"][1])
    for name in ("relative catalog", "relative home", "relative user home", "info"):
        code, _, err = seen[name]
        assert code == 2 and one_line(err) and "current folder" in err and "no longer exists" in err, (name, err)
    assert os.listdir(tmp_path) == []


def test_a_full_disk_while_the_old_manifest_is_rewritten_leaves_no_temporary_file_in_it(tmp_path, monkeypatch):
    """(outaudit) The swap first rewrites the old result's manifest; a full disk there left
    ``out/.tokenunet-manifest.json.tmp`` (half written) inside the user's previous result."""
    out = tmp_path / "out"
    write(out, {"result.txt": "1"})
    before = sorted(os.listdir(out)), (out / ".tokenunet-manifest.json").read_bytes()
    real_dump = json.dump

    def full_in_the_old_folder(content, stream, *args, **kwargs):
        if isinstance(stream.name, str) and os.path.dirname(stream.name) == str(out):
            stream.write("{")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_dump(content, stream, *args, **kwargs)

    monkeypatch.setattr(json, "dump", full_in_the_old_folder)
    with pytest.raises(OutputError, match="is full"):
        write(out, {"result.txt": "2"})
    assert (sorted(os.listdir(out)), (out / ".tokenunet-manifest.json").read_bytes()) == before
    assert (out / "result.txt").read_text() == "1" and sorted(os.listdir(tmp_path)) == ["out"]


def test_a_tilde_in_evaluate_json_is_the_home_folder_for_the_input_check_too(tmp_path, monkeypatch, capsys):
    """(outaudit) ``--json '~/ev/ref.nii.gz' --overwrite`` (a tilde the shell left alone: quoted, from a script or a
    GUI field). Before: the check that --json is no input compared the path unexpanded, found nothing, and the file
    was then written at the expanded path: the user's reference label map replaced by the metrics JSON."""
    from helpers.training_data import write_dataset

    monkeypatch.setenv("HOME", str(tmp_path))
    write_dataset(tmp_path / "ev", cases=1, validation=0)
    reference = tmp_path / "ev" / "case0_seg.nii.gz"
    before = reference.read_bytes()
    json_out = "~/ev/case0_seg.nii.gz"
    assert (
        cli.main(["evaluate", str(reference), "--prediction", str(reference), "--json", json_out, "--overwrite"]) == 2
    )
    err = capsys.readouterr().err
    assert one_line(err) and "is the reference, which this evaluation reads" in err, err
    assert reference.read_bytes() == before


def datalist_with_config(tmp_path) -> tuple[list[str], object]:
    """(``datalist folders`` arguments over one case written in ``tmp_path``, with ``--config tmp_path/config.json``;
    that configuration file)."""
    from helpers.training_data import train_config, write_dataset

    data = write_dataset(tmp_path / "data", cases=1, validation=0).parent
    config = tmp_path / "config.json"
    config.write_text(json.dumps(train_config()))
    images, labels = tmp_path / "img", tmp_path / "label"
    images.mkdir(), labels.mkdir()
    (images / "img0001.nii.gz").write_bytes((data / "case0.nii.gz").read_bytes())
    (labels / "label0001.nii.gz").write_bytes((data / "case0_seg.nii.gz").read_bytes())
    arguments = ["datalist", "folders", "--images", str(images), "--labels", str(labels), "--config", str(config)]
    return arguments, config


def test_a_tilde_in_datalist_out_is_the_home_folder_for_the_input_check_too(tmp_path, monkeypatch, capsys):
    """(outaudit) The same for ``datalist --out '~/.../config.json' --overwrite``: the configuration it reads was
    replaced by the datalist."""
    monkeypatch.setenv("HOME", str(tmp_path))
    arguments, config = datalist_with_config(tmp_path)
    before = config.read_bytes()
    assert cli.main([*arguments, "--out", "~/config.json", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "is the configuration --config, which this command reads" in err, err
    assert config.read_bytes() == before


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX hang-up")
def test_a_hang_up_cancels_as_sigterm_does_and_nohup_is_respected(tmp_path):
    """(outaudit) The terminal closed (an ssh session dropped) during a run. Before: SIGHUP killed the process at
    once: the output's lock and staging folder stayed beside it (a batch's batch.json said 'running'). Now a hang-up
    cancels as SIGTERM does: the folder aborted, nothing left, exit 130; under ``nohup`` (SIGHUP ignored) the run goes
    on to its end; one during the final swap waits for it."""
    from helpers.processes import run_python, stops_command_code

    code = (
        stops_command_code("SIGHUP")
        + f"print('exit', cli.main(['stops', '--out', {str(tmp_path / 'a')!r}, '--when', 'writing']))\n"
        f"print('exit', cli.main(['stops', '--out', {str(tmp_path / 'b')!r}, '--when', 'never']))\n"
        "print('handler restored', signal.getsignal(signal.SIGHUP) == signal.SIG_DFL)\n"
        "signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nohup\n"
        f"print('exit', cli.main(['stops', '--out', {str(tmp_path / 'n')!r}, '--when', 'writing']))\n"
        "print('still ignored', signal.getsignal(signal.SIGHUP) == signal.SIG_IGN)\n"
        "signal.signal(signal.SIGHUP, signal.SIG_DFL)\n"
        f"print('exit', cli.main(['stops', '--out', {str(tmp_path / 'c')!r}, '--when', 'never']))\n"
    )
    lines = [line for line in run_python(code).splitlines() if line]
    assert lines == [
        "interrupted; no output was written",
        "exit 130",
        "exit 0",
        "handler restored True",
        "exit 0",
        "still ignored True",
        "exit 0",
    ], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "c", "n"]  # no lock, no staging folder, no a/
    assert sorted(os.listdir(tmp_path / "n")) == [".tokenunet-manifest.json", "half.txt", "whole.txt"]


def test_the_output_over_inputs_check_compares_names_as_the_folders_file_system_does(tmp_path, monkeypatch, capsys):
    """(smallfix4) ``refuse_output_over_inputs`` (``evaluate --json``, ``datalist --out``, the calibration script's
    ``--json``): ``--out CONFIG.JSON`` beside the ``config.json`` it reads, on a file system that ignores case (before:
    compared only where both names exist, so on such a disk the configuration was replaced by the datalist). Whether a
    folder ignores case is probed on its entries, never guessed from the system: a hard link or a symbolic link under
    the other case's name does not make a case-sensitive folder look case-insensitive."""
    folder = tmp_path / "Cases"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    inputs = [("the configuration --config", folder / "config.json")]
    refuse = output_folder.refuse_output_over_inputs
    refuse(folder / "CONFIG.JSON", "--out", inputs, "this command reads", "write the datalist elsewhere")  # told apart
    assert not output_folder.names_ignore_case(folder) and not output_folder.names_ignore_case(tmp_path / "empty")
    os.link(folder / "config.json", folder / "CONFIG.json")
    (folder / "Config.json").symlink_to("config.json")
    assert not output_folder.names_ignore_case(folder)  # three entries: the names are told apart
    (tmp_path / "empty").mkdir()
    assert not output_folder.names_ignore_case(tmp_path / "empty")  # probed on its own name in its parent
    with monkeypatch.context() as simulated:
        simulated.setattr(output_folder, "names_ignore_case", lambda place: True)
        with pytest.raises(InputError) as refused:
            refuse(folder / "CONFIG.JSON", "--out", inputs, "this command reads", "write the datalist elsewhere")
        assert str(refused.value) == (
            "--out CONFIG.JSON is the configuration --config, which this command reads (write the datalist elsewhere)"
        )
        assert not output_folder.same_place(folder / "CONFIG.JSON", tmp_path / "config.json")  # another folder

        arguments, config = datalist_with_config(tmp_path)
        before = config.read_bytes()
        assert cli.main([*arguments, "--out", str(tmp_path / "Config.Json"), "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert one_line(err) and "--out Config.Json is the configuration --config, which this command reads" in err, err
        assert config.read_bytes() == before and not (tmp_path / "Config.Json").exists()
