"""Output places a regular user names (outreview, after outaudit): ``--out .`` run again from the same terminal, a
``~user`` the shell left alone, a bind mount as the output folder, a terminal that really hangs up. Each either
works as the user meant or is refused before the work in one line (exit 2), with nothing of the user's changed."""

import errno
import os
import select
import subprocess
import sys
import time

import pytest
from helpers.disks import LINUX_MOUNT, bind_mount
from helpers.paths import MODULE_DIR
from TokenUNetSegmentLib.pipeline import cli, output_folder, segmentation
from TokenUNetSegmentLib.pipeline.errors import OutputError
from TokenUNetSegmentLib.pipeline.output_folder import OutputFolder


def _must_not_run(*args, **kwargs):
    raise AssertionError("the segmentation ran before the output folder was checked")


def one_line(err: str) -> bool:
    return err.startswith("error: ") and err.count("\n") == 1 and len(err) <= 201


def test_out_dot_twice_from_the_same_terminal_works_and_says_how_to_see_the_result(
    cli_case, tmp_path, monkeypatch, capsys
):
    """``cd results; tokenunet segment ../ct.nii.gz --out .``: the result is swapped in for the folder the terminal is
    in. Before: the terminal (and the process) were left in the deleted old folder (``ls`` showed nothing), with no
    word of it, and the same command run again was refused: "the current folder no longer exists"."""
    root, package, path = cli_case
    here = tmp_path / "results"
    here.mkdir()
    monkeypatch.chdir(here)
    arguments = ["segment", str(path), "--model", str(package), "--out", ".", "--no-overview"]
    for _ in range(2):
        assert cli.main(arguments) == 0, capsys.readouterr().err
        said = "".join(capsys.readouterr())
        assert "cd ." in said and "the folder you are in" in said, said
        assert os.getcwd() == str(here) and "segmentation.seg.nrrd" in os.listdir(".")  # this process: the new one
    assert sorted(os.listdir(tmp_path)) == ["results"]


def test_a_tilde_user_that_names_no_user_is_a_plain_name_as_in_the_shell(cli_case, tmp_path, monkeypatch, capsys):
    """``--out '~nosuchuser/out'`` (the shell leaves ``~word`` alone when no user has that name). Before:
    ``internal error: RuntimeError: Could not determine home directory.``, exit 1, from segment, evaluate, ..."""
    root, package, path = cli_case
    monkeypatch.chdir(tmp_path)
    name = "~tokenunet-no-such-user"
    assert cli.main(["segment", str(path), "--model", str(package), "--out", f"{name}/out", "--no-overview"]) == 0
    capsys.readouterr()
    assert (tmp_path / name / "out" / "segmentation.seg.nrrd").is_file()  # where the shell would have put it
    (tmp_path / "e.json").write_text("{}")
    for arguments in (
        ["evaluate", str(path), "--prediction", str(path), "--json", f"{name}/e.json"],
        ["evaluate", f"{name}/ct.nii.gz", "--prediction", str(path), "--json", "e.json", "--overwrite"],
    ):
        code = cli.main(arguments)
        err = capsys.readouterr().err
        assert "internal error" not in err and code in (0, 2), err


def _mount_info(*points: str) -> str:
    lines = [
        f"{20 + n} 1 0:{40 + n} / {point} rw,relatime shared:1 - ext4 /dev/sda1 rw" for n, point in enumerate(points)
    ]
    return "\n".join(lines) + "\n"


def test_mount_points_are_read_with_their_escapes():
    text = _mount_info("/", "/media/u/My\\040Disk", "/srv/a\\134b", "/mnt/tab\\011x")
    assert output_folder._mount_points(text) == {"/", "/media/u/My Disk", "/srv/a\\b", "/mnt/tab\tx"}


@pytest.mark.skipif(not LINUX_MOUNT or os.geteuid() != 0, reason="bind-mounts a folder (root on Linux)")
def test_a_bind_mount_on_the_same_file_system_is_refused_before_computing(cli_case, tmp_path, monkeypatch, capsys):
    """``mount --bind ~/data /srv/out`` (or a container's volume of the host's own disk): ``os.path.ismount`` says
    False (same device, another inode). Before: the whole run, then "Device or resource busy", and a stray manifest
    left in the user's folder."""
    root, package, path = cli_case
    monkeypatch.setattr(segmentation, "segment", _must_not_run)
    source = tmp_path / "data"
    source.mkdir()
    with bind_mount(source, tmp_path / "mounted") as mounted:
        assert not os.path.ismount(mounted)
        assert cli.main(["segment", str(path), "--model", str(package), "--out", str(mounted)]) == 2
        err = capsys.readouterr().err
        assert one_line(err) and "is a mount point" in err and "mounted/tokenunet)" in err, err
        assert os.listdir(mounted) == [] and os.listdir(source) == []
    assert sorted(os.listdir(tmp_path)) == ["data", "mounted"]


def test_a_swap_that_fails_leaves_no_manifest_in_a_folder_that_had_none(tmp_path, monkeypatch):
    """A destination that cannot be renamed (a mount point not recognised as one, a folder another program holds
    open on Windows). Before: the old files' manifest written into it just before the swap stayed there."""
    out = tmp_path / "out"
    out.mkdir()

    def busy(first, second):
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(second))

    monkeypatch.setattr(output_folder, "_exchange", busy)
    folder = OutputFolder(out, "test")
    with folder, pytest.raises(OutputError, match="busy"):
        (folder.staging / "result.txt").write_text("1")
        folder.commit()
    assert os.listdir(out) == [] and sorted(os.listdir(tmp_path)) == ["out"]


HANGING_COMMAND = """
import sys, time
from TokenUNetSegmentLib.pipeline import cli
from TokenUNetSegmentLib.pipeline.output_folder import OutputFolder
def run(args):
    printer = cli.ProgressPrinter("bar")
    folder = OutputFolder(args.out, "test")
    folder.open()
    try:
        (folder.staging / "half.txt").write_text("half")
        open(args.ready, "w").close()
        for step in range(6000):
            printer("working", step / 6000)
            time.sleep(0.01)
    except KeyboardInterrupt:
        printer.close()  # as batch does: the bar's line ended, then the case dropped
        folder.abort()
        raise
    return 0
def arguments(parser):
    parser.add_argument("--out")
    parser.add_argument("--ready")
cli.register_command("hangs", "test", arguments, run)
sys.argv = ["tokenunet", "hangs", "--out", sys.argv[1], "--ready", sys.argv[2]]
cli.run_as_process()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a pseudo-terminal hung up (Linux)")
def test_a_real_hang_up_of_the_terminal_cleans_up_though_the_terminal_cannot_be_written(tmp_path):
    """The terminal really closes (its pseudo-terminal's master end: an ssh session dropped). Every later write to it
    fails (EIO). Before: the line that ends the progress bar failed, so the clean-up after the hang-up stopped
    there: a real ``batch`` left the case's lock and staging folder and batch.json saying "running", exit 1."""
    import pty

    out, ready = tmp_path / "out", tmp_path / "ready"
    pid, master = pty.fork()
    if pid == 0:  # the child: a session of its own on the pseudo-terminal
        try:
            os.chdir(MODULE_DIR)
            os.execv(sys.executable, [sys.executable, "-c", HANGING_COMMAND, str(out), str(ready)])
        finally:
            os._exit(99)
    deadline = time.monotonic() + 120
    try:
        while not ready.exists() and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                os.read(master, 65536)  # keep the terminal drained
        assert ready.exists(), "the child never started"
        time.sleep(0.3)
    finally:
        os.close(master)  # the hang-up
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        pytest.fail("the hung-up command did not end")
    assert os.waitstatus_to_exitcode(status) == 130
    assert sorted(os.listdir(tmp_path)) == ["ready"]  # no lock, no staging folder, no out/


def test_a_long_name_of_a_folder_that_exists_is_taken_as_it_is(tmp_path, monkeypatch):
    """The length check counted every name of the path in UTF-8 bytes, those of existing folders too: a folder that a
    FAT/exFAT/NTFS disk (255 UTF-16 units) or Windows holds under a long non-Latin name (100 CJK characters: 300
    bytes) was refused as "longer than file systems take" although it is there. A file system took it; only the
    names the run makes are checked (here with a limit of 20, as this disk takes 255 bytes)."""
    monkeypatch.setattr(output_folder, "NAME_MAX", 20)
    there = tmp_path / ("患" * 10)  # 30 bytes, made by a file system that takes it
    there.mkdir()
    assert output_folder.resolve_destination(there / "out") == there / "out"
    with pytest.raises(OutputError, match="30 bytes long"):
        output_folder.resolve_destination(tmp_path / ("新" * 10))


def test_the_sample_script_takes_a_tilde_the_shell_left_as_the_home_folder(tmp_path):
    """``bash scripts/segment-sample.sh "~/results"`` (quoted, from a script). Before: outaudit's fix made every OUTPUT
    that does not start with / relative to the caller's folder: the result went to ``./~/results``, while the command
    line itself takes ``~`` as the home folder. The script runs against stand-ins for the venv set-up and Python."""
    import json

    from helpers.processes import sample_script_with_stand_ins

    script, calls = sample_script_with_stand_ins(tmp_path)
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    for given, expected in [("~/results", home / "results"), ("~", home), ("a~b", work / "a~b")]:
        calls.unlink(missing_ok=True)
        environment = {**os.environ, "HOME": str(home)}
        done = subprocess.run(["bash", str(script), given], cwd=work, text=True, capture_output=True, env=environment)
        assert done.returncode == 0, done.stderr
        argv = json.loads(calls.read_text().splitlines()[0])["argv"]
        assert argv[argv.index("--out") + 1] == str(expected), given


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
@pytest.mark.parametrize("mode", [0o700, 0o2770, 0o750])
def test_the_output_folders_permissions_stay_the_users(tmp_path, mode):
    """``mkdir scans; chmod 700 scans`` (patient data kept private), or a lab's shared ``chmod 2770`` folder, then a run
    into it and a run again. Before: the result was swapped in as a new folder made with the default mode (755): the
    private folder became readable by every user of the machine, the group lost its write access."""
    out = tmp_path / "out"
    out.mkdir()
    os.chmod(out, mode)
    for text in ("1", "2"):
        folder = OutputFolder(out, "test")
        with folder:
            (folder.staging / "result.txt").write_text(text)
            folder.commit()
        assert (out / "result.txt").read_text() == text
        assert oct(os.stat(out).st_mode & 0o7777) == oct(mode)
    assert sorted(os.listdir(tmp_path)) == ["out"]
