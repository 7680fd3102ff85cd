"""The command line: its commands, exit codes, one-line errors, typed error events, progress display."""

import os
import subprocess
import sys

import pytest
from helpers.packages import make_package
from helpers.paths import MODULE_DIR
from helpers.processes import run_cli, run_python, stops_command_code
from TokenUNetSegmentLib.pipeline import cli
from TokenUNetSegmentLib.pipeline.run_contract import ErrorEvent, ExitCode, decode_event


def segment_cli(path, package, out, *options) -> int:
    """Exit code of ``segment PATH --model PACKAGE --out OUT OPTIONS...`` through the CLI."""
    return cli.main(["segment", str(path), "--model", str(package), "--out", str(out), *options])


def test_user_errors_exit_2_with_one_line(cli_case, tmp_path, capsys):
    root, package, path = cli_case
    for argv, message in [
        (
            ["segment", str(tmp_path / "missing.nii.gz"), "--model", str(package), "--out", str(tmp_path / "o")],
            "input not found",
        ),
        (["segment", str(path), "--model", "no-such-model", "--out", str(tmp_path / "o")], "unknown model id"),
        (
            ["segment", str(path), str(path), "--model", str(package), "--out", str(tmp_path / "o")],
            "needs 1 input channel",
        ),
        (["models", "remove", "no-such-model"], "unknown model id"),
    ]:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
    with pytest.raises(Exception, match="input not found"):
        cli.main(
            [
                "--debug",
                "segment",
                str(tmp_path / "missing.nii.gz"),
                "--model",
                str(package),
                "--out",
                str(tmp_path / "o"),
            ]
        )


def test_checksum_mismatch_through_the_cli(cli_case, tmp_path, capsys):
    package = make_package(tmp_path)
    weights = package / "models/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    assert cli.main(["models", "info", str(package)]) == 0  # metadata alone is fine
    capsys.readouterr()
    assert cli.main(["segment", str(cli_case[2]), "--model", str(package), "--out", str(tmp_path / "o")]) == 2
    assert "checksum mismatch" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_progress_printer_bar_on_a_terminal_and_silent_otherwise():
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    printer = cli.ProgressPrinter("auto", terminal)
    printer("inference", 0.5)
    printer("write", 1.0)
    printer.close()
    text = terminal.getvalue()
    assert text.count("\r") == 2 and "[###############...............]  50.0% inference" in text
    assert "100.0% write" in text and text.endswith("\n")
    pipe = io.StringIO()
    silent = cli.ProgressPrinter("auto", pipe)
    silent("inference", 0.5)
    silent.close()
    assert pipe.getvalue() == ""


def test_cka_is_a_subcommand_of_the_pipeline_cli(tmp_path, capsys):
    argv = [
        "cka",
        "--a",
        "NoToken",
        "--a-option",
        "channels=(4, 8, 16, 32)",
        "--b",
        "8Token",
        "--b-option",
        "channels=(4, 8, 16, 32)",
        "--size",
        "16",
        "--samples",
        "2",
        "--out",
        str(tmp_path),
    ]
    assert cli.main(argv) == 0
    assert (tmp_path / "cka.json").is_file()
    assert cli.main(["cka", "--a", "Nope", "--b", "NoToken", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown network 'Nope'") and len(err.strip().splitlines()) == 1


def test_help_lists_every_command_and_declares_none_of_their_arguments(capsys):
    assert cli.main(["--help"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in ("segment", "models", "evaluate", "train", "cka"))
    parser = cli.build_parser()  # no command named: subcommands listed, arguments not declared (no imports)
    with pytest.raises(SystemExit):
        parser.parse_args(["segment", "ct.nii.gz", "--out", "o"])
    capsys.readouterr()
    args = cli.parse_arguments(["--catalog", "c.json", "segment", "ct.nii.gz", "--out", "o", "--no-heatmaps"])
    assert (args.command, args.catalog, args.inputs, args.no_heatmaps) == ("segment", "c.json", ["ct.nii.gz"], True)


def test_a_command_imports_only_its_own_modules():
    code = (
        "import sys\n"
        "from TokenUNetSegmentLib.pipeline import cli\n"
        "cli.parse_arguments(['segment', 'a.nii.gz', '--out', 'o'])\n"
        "cli.parse_arguments(['models', 'list'])\n"
        "print(sorted(m for m in sys.modules if m.endswith(('.trainer', '.evaluate', '.cka', 'training.command'))))\n"
    )
    assert run_python(code).strip() == "[]"


def test_every_commands_help_imports_neither_torch_nor_monai():
    """The README's promise: ``--help`` answers at once (before: ``cka --help`` imported torch, 2.5 s)."""
    code = (
        "import contextlib, io, sys\n"
        "from TokenUNetSegmentLib.pipeline import cli\n"
        "for argv in [[], ['segment'], ['models'], ['models', 'import'], ['evaluate'], ['train'], ['robustness'],\n"
        "             ['datalist'], ['cka']]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        assert cli.main([*argv, '--help']) == 0\n"
        "print(sorted(m for m in ('torch', 'monai') if m in sys.modules))\n"
    )
    assert run_python(code).strip() == "[]"


def test_failures_with_json_progress_end_with_a_typed_error_event(cli_case, tmp_path, capsys):
    root, package, path = cli_case
    argv = ["segment", str(tmp_path / "missing.nii.gz"), "--model", str(package), "--out", str(tmp_path / "o")]
    assert cli.main([*argv, "--progress", "json"]) == ExitCode.USER_ERROR
    lines = capsys.readouterr().err.splitlines()
    event = decode_event(lines[-1])
    assert isinstance(event, ErrorEvent) and event.category == "user" and event.error_type == "InputError"
    assert "input not found" in event.message and event.exit_code == 2
    assert all(decode_event(line) is not None for line in lines)  # nothing but events on stderr


def test_internal_errors_exit_1_with_a_hint_to_debug(monkeypatch, capsys):
    from TokenUNetSegmentLib.pipeline import models_command

    def broken(args):
        raise KeyError("boom")

    monkeypatch.setattr(models_command, "run_models", broken)
    assert cli.main(["models", "list"]) == ExitCode.INTERNAL_ERROR == 1
    err = capsys.readouterr().err
    assert err.startswith("internal error: KeyError") and "--debug" in err and err.count("\n") == 1


def test_a_package_missing_from_this_python_is_a_user_error_that_says_which_and_what_to_do(tmp_path):
    """A new user who runs ``python -m ...`` with a Python lacking the dependencies gets one line, not a traceback:
    whether the command's module needs the package to declare its arguments (cka: torch) or only in its run
    (segment: torch after the headers are read)."""
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"  # importing torch now raises ModuleNotFoundError, as where it is missing
        "sys.stderr = sys.stdout\n"
        "from TokenUNetSegmentLib.pipeline import cli\n"
        "print('exit', cli.main(['cka', '--a', 'NoToken', '--b', '8Attn']))\n"
        f"print('exit', cli.main(['segment', 'Resources/Samples/AbdomenCT.nii.gz', '--out', {str(tmp_path / 'o')!r},"
        " '--progress', 'none']))\n"
    )
    lines = run_python(code).splitlines()
    assert lines[1] == lines[3] == "exit 2", lines
    for line in (lines[0], lines[2]):
        assert line.startswith("error: torch is not installed in ") and "scripts/setup-venv.sh" in line
    event = ErrorEvent.from_error(ModuleNotFoundError("No module named 'monai'", name="monai.networks"))
    assert (event.category, event.error_type, event.exit_code) == ("user", "MissingDependencyError", 2)
    own = ErrorEvent.from_error(ModuleNotFoundError("No module named 'x'", name="TokenUNetSegmentLib.x"))
    assert own.category == "internal"  # our own module missing: a broken installation, not the user's Python


def test_a_caller_of_main_keeps_its_garbage_collector_as_it_was(monkeypatch, tmp_path, capsys):
    """Only ``run_as_process`` (``tokenunet``, ``python -m``) freezes the collector's objects before its exit;
    ``cli.main()`` is a caller's, with or without arguments (before: without them, the caller's objects were frozen:
    its cycles never collected again)."""
    import gc

    catalog = tmp_path / "catalog.json"
    catalog.write_text('{"models": []}')
    before = gc.get_freeze_count()
    assert cli.main(["--catalog", str(catalog), "models", "list"]) == 0
    monkeypatch.setattr("sys.argv", ["tokenunet", "--catalog", str(catalog), "models", "list"])
    assert cli.main() == 0
    assert gc.get_freeze_count() == before


def test_ctrl_c_while_the_command_loads_is_a_cancel_not_a_traceback(monkeypatch, capsys):
    """Before: Ctrl-C in the first half second of ``segment`` (while its modules are imported to declare its
    options) printed a ``KeyboardInterrupt`` traceback, also between the JSON events of ``--progress json``."""

    def interrupted(argv=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "parse_arguments", interrupted)
    assert cli.main(["segment", "ct.nii.gz", "--out", "o", "--progress", "json"]) == ExitCode.CANCELLED
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and decode_event(lines[0]).category == "cancelled"
    assert cli.main(["segment", "ct.nii.gz", "--out", "o"]) == ExitCode.CANCELLED
    assert capsys.readouterr().err.strip() == "interrupted; no output was written"


def test_sigterm_while_the_command_line_loads_is_a_cancel(tmp_path):
    """Before: SIGTERM in the first half second of ``segment`` on a busy machine (while the commands' modules are
    imported to declare their options, before the stop handlers were set) killed the process by the signal (exit -15,
    143 in a shell), where Ctrl-C there was already a cancel: exit 130 and its one line."""
    import subprocess
    import sys

    from helpers.paths import MODULE_DIR

    code = (
        "import os, signal, sys, time\n"
        "from TokenUNetSegmentLib.pipeline import cli\n"
        "def loading(argv=None):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(5)\n"
        "cli.parse_arguments = loading\n"
        "sys.argv = ['tokenunet', 'segment', 'ct.nii.gz', '--out', 'o']\n"
        "cli.run_as_process()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=MODULE_DIR, capture_output=True, text=True, timeout=60)
    assert done.returncode == ExitCode.CANCELLED, (done.returncode, done.stderr)
    assert done.stderr.strip() == "interrupted; no output was written"
    # earlier still: SIGTERM while ``python -m TokenUNetSegmentLib.pipeline`` imports the command line
    assert_a_stop_at_the_import_of_is_a_cancel("TokenUNetSegmentLib.pipeline.cli")


def assert_a_stop_at_the_import_of_is_a_cancel(module: str) -> None:
    """``python -m TokenUNetSegmentLib.pipeline models list`` sent SIGTERM as it begins to import ``module``: exit 130,
    no traceback."""
    code = (
        "import os, runpy, signal, sys\n"
        "class StopOnImport:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name == {module!r}:\n"
        "            os.kill(os.getpid(), signal.SIGTERM)\n"
        "sys.meta_path.insert(0, StopOnImport())\n"
        "sys.argv = ['tokenunet', 'models', 'list']\n"
        "runpy.run_module('TokenUNetSegmentLib.pipeline', run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=MODULE_DIR, capture_output=True, text=True, timeout=60)
    assert done.returncode == ExitCode.CANCELLED and "Traceback" not in done.stderr, (done.returncode, done.stderr)


LOADING = {  # what the loading code does with the KeyboardInterrupt a stop raises in it
    # importlib's module lock's weakref callback: Python prints "Exception ignored in" and goes on
    "swallowed": (
        "import weakref\n"
        "class Thing:\n"
        "    pass\n"
        "def loading(parser):\n"
        "    thing = Thing()\n"
        "    ref = weakref.ref(thing, lambda _: os.kill(os.getpid(), signal.SIGTERM))\n"
        "    del thing\n"
    ),
    # numpy's C start-up: the import it makes fails, and numpy reports an ImportError instead
    "turned into an ImportError": (
        "def loading(parser):\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(5)\n"
        "    except KeyboardInterrupt:\n"
        "        raise ImportError('PyCapsule_Import could not import module \"datetime\"') from None\n"
    ),
    # numpy's import_array() in another extension's start-up: printed (PyErr_Print), then an ImportError
    "printed, then turned into an ImportError": (
        "def loading(parser):\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(5)\n"
        "    except KeyboardInterrupt:\n"
        "        sys.excepthook(*sys.exc_info())\n"
        "        raise ImportError('numpy.core.multiarray failed to import') from None\n"
    ),
}


@pytest.mark.parametrize("what", LOADING)
def test_a_stop_lost_in_the_loading_code_is_still_a_cancel(tmp_path, what):
    """SIGTERM (or Ctrl-C) while the command line loads, raised where the code that runs catches it (found by
    sigreview: real SIGTERMs 0.07-0.2 s into ``python -m ... segment``). Before: swallowed in importlib's callback, the
    stop was lost: segment ran to its end, exit 0; turned into numpy's ImportError: "internal error", exit 1. Now the
    stop is remembered: exit 130 and its one line (not Python's "Exception ignored in ..." traceback of the swallowed
    one), the command not run."""
    ran = tmp_path / "ran"
    code = (
        "import os, runpy, signal, sys, time\n"
        f"{LOADING[what]}"
        "def run(args):\n"
        f"    open({str(ran)!r}, 'w').close()\n"
        "    return 0\n"
        "from TokenUNetSegmentLib.pipeline import cli\n"
        "cli.register_command('loads', 'a command whose module loads slowly', loading, run)\n"
        "sys.argv = ['tokenunet', 'loads']\n"
        "runpy.run_module('TokenUNetSegmentLib.pipeline', run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=MODULE_DIR, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr.strip().splitlines()) == (130, ["interrupted; no output was written"])
    assert not ran.exists()


def test_a_stop_as_the_command_line_starts_is_a_cancel_not_a_traceback():
    """SIGTERM (or Ctrl-C) while ``python -m TokenUNetSegmentLib.pipeline`` has imported its command line but has not
    begun to parse its arguments (found by sigreview: 2 of 80 real SIGTERMs 0.07-0.2 s in, at ``import logging`` and the
    allocator's import). Before: a ``KeyboardInterrupt`` traceback, exit -2 (a SIGTERM told as a SIGINT). Now: exit 130,
    no traceback."""
    assert_a_stop_at_the_import_of_is_a_cancel("TokenUNetSegmentLib.pipeline.allocator")


@pytest.mark.parametrize("progress", ["none", "json"])
def test_python_warnings_of_a_command_are_one_line_or_a_json_event(monkeypatch, capsys, progress):
    """Before: a warning raised inside a command (``evaluate --model`` on a small volume) printed Python's two
    lines, ``/path/evaluate.py:294: UserWarning: ...`` and the source line, also under ``--progress json``."""
    import argparse
    import sys
    import warnings

    def add_arguments(parser):
        parser.add_argument("--progress", default="none")

    def run(args: argparse.Namespace) -> int:
        warnings.warn("the volume is small\n  for this model", UserWarning, stacklevel=1)
        return 0

    monkeypatch.setitem(cli.COMMANDS, "warns", cli.Command("warns", add_arguments, run))
    monkeypatch.setattr(  # what Python does outside pytest (which records warnings)
        warnings, "showwarning", lambda *a, **k: sys.stderr.write(warnings.formatwarning(*a[:4], k.get("line")))
    )
    assert cli.main(["warns", "--progress", progress]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    if progress == "json":
        assert decode_event(lines[0]).message == "the volume is small for this model"
    else:
        assert lines[0] == "warning: the volume is small for this model"


def test_an_option_given_twice_takes_its_last_value():
    """Left as argparse does it (a recipe script passes its defaults first and the user's overrides after them:
    scripts/models/abdomen-organs-totalseg/train.sh); the README says so."""
    args = cli.parse_arguments(["segment", "ct.nii.gz", "-o", "a", "--out", "b", "--overlap", "0.5"])
    assert args.out == "b" and args.overlap == 0.5


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_option_with_a_default_states_it_truly_in_its_help(name):
    """Before: ``train --help`` showed no default for --steps, --optimizer, --weight-decay, ...; ``segment --help``
    none for --overlap and --batch-size (the model's) and --progress. A stated default must be the real one."""
    import argparse

    for each in command_parsers(name):
        for action in each._actions:
            default = action.default
            unset = default is None or default is False or default == [] or default == argparse.SUPPRESS
            if action.option_strings and not unset:
                assert "default" in command_help(each, action).lower(), (name, action.dest)
    # the defaults written out by hand are the real ones
    segment = cli.build_parser("segment").parse_args(["segment", "x", "--out", "o"])
    assert (segment.device, segment.attention_grid, segment.progress) == ("auto", "token", "auto")
    cka = cli.build_parser("cka").parse_args(["cka", "--a", "x", "--b", "y"])
    assert (cka.in_channels, cka.size, cka.samples, cka.pooling, cka.out) == (1, 64, 8, "positions", "cka")


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_option_and_argument_says_what_it_is_in_its_help(name):
    """Before: ``models import --overwrite`` and ``models remove``'s argument were listed without a word."""
    import argparse

    for each in command_parsers(name):
        for action in each._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                assert action.help, (each.prog, action.dest)


def command_parsers(name):
    """The parser of command ``name`` and those of its actions (``models list``, ...)."""
    import argparse

    parser = cli.build_parser(name)
    command = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return [command] + [
        child for a in command._actions if isinstance(a, argparse._SubParsersAction) for child in a.choices.values()
    ]


def command_help(parser, action) -> str:
    return " ".join(parser._get_formatter()._expand_help(action).split()) if action.help else ""


def test_sigterm_cancels_every_command_as_ctrl_c_does(tmp_path):
    """Before: SIGTERM (a batch system's stop) killed every command but ``segment`` at once (exit -15): an output
    folder's lock and staging folder stayed behind. Now it cancels as Ctrl-C: the folder is aborted, the lock
    released, exit 130 with one line; one that comes while the result is swapped in waits, then cancels nothing."""
    code = (
        stops_command_code("SIGTERM")
        + f"print('exit', cli.main(['stops', '--out', {str(tmp_path / 'a')!r}, '--when', 'writing']))\n"
        f"print('exit', cli.main(['stops', '--out', {str(tmp_path / 'b')!r}, '--when', 'never']))\n"
        f"print('exit', cli.main(['stops', '--out', {str(tmp_path / 'c')!r}, '--when', 'never']))\n"
        "print('handler restored', signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)\n"
    )
    lines = [line for line in run_python(code).splitlines() if line]
    assert lines == ["interrupted; no output was written", "exit 130", "exit 0", "exit 0", "handler restored True"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "c"]  # no lock, no staging folder, no a/


def test_argument_errors_under_json_progress_are_json_events(capsys):
    """Before: ``segment ... --overlap 2 --progress json`` printed ``error: argument --overlap: ...`` as text, the
    one line on stderr that a program reading events could not decode."""
    for argv in (["--overlap", "2", "--out", "o"], ["--batch-size", "x", "--out", "b"], []):
        assert cli.main(["segment", "ct.nii.gz", "--progress", "json", *argv]) == ExitCode.USER_ERROR
        (line,) = capsys.readouterr().err.splitlines()
        event = decode_event(line)
        assert isinstance(event, ErrorEvent) and event.category == "user" and event.error_type == "ArgumentError"
    assert cli.main(["segment", "ct.nii.gz", "--overlap", "2", "--out", "o"]) == ExitCode.USER_ERROR
    assert capsys.readouterr().err.startswith("error: argument --overlap: must be below 1")


def test_a_caller_of_main_gets_the_exit_code_of_bad_arguments_and_of_help(capsys):
    """Before: argparse's ``SystemExit`` went through ``cli.main`` to its caller (a script's ``code = cli.main(argv)``
    never got its code), where every other user error returned 2."""
    assert cli.main(["segment", "ct.nii.gz", "--overlap", "2", "--out", "o"]) == ExitCode.USER_ERROR
    capsys.readouterr()
    assert cli.main(["no-such-command"]) == ExitCode.USER_ERROR
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: argument COMMAND: invalid choice: 'no-such-command'"), line
    assert cli.main(["evaluate", "--help"]) == ExitCode.OK
    assert "--prediction" in capsys.readouterr().out


def test_the_command_line_still_exits_2_on_bad_arguments_and_0_after_help():
    done = run_cli("segment", "ct.nii.gz", "--overlap", "2", "--out", "o")
    assert done.returncode == 2 and done.stderr.startswith("error: argument --overlap: must be below 1"), done.stderr
    assert done.stderr.count("\n") == 1 and done.stdout == ""
    done = run_cli("segment", "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: tokenunet segment") and done.stderr == ""


def test_an_unknown_option_of_a_command_points_to_that_commands_help(capsys):
    """Before: ``tokenunet datalist --layout decathlon ...`` (the layout is an argument, not an option) said "see
    'tokenunet --help'", whose help lists the commands, not the datalist command's layouts and options."""
    argv = ["datalist", "--layout", "decathlon", "Task09_Spleen", "--out", "d.json"]
    assert cli.main(argv) == ExitCode.USER_ERROR
    (line,) = capsys.readouterr().err.splitlines()
    assert line == "error: unrecognized arguments: --layout (see 'tokenunet datalist --help')", line
    assert cli.main(["--debug", "segment", "ct.nii.gz", "--out", "o", "--no-such-option"]) == ExitCode.USER_ERROR
    assert "(see 'tokenunet segment --help')" in capsys.readouterr().err


def test_an_unknown_option_of_a_models_action_points_to_that_actions_help(capsys):
    """``models`` has actions with options of their own (found by reviewhost). Before: ``tokenunet models list
    --bogus`` said "see 'tokenunet models --help'", whose help lists the actions, not the options of ``list``."""
    assert cli.main(["models", "list", "--bogus"]) == ExitCode.USER_ERROR
    (line,) = capsys.readouterr().err.splitlines()
    assert line == "error: unrecognized arguments: --bogus (see 'tokenunet models list --help')", line
    assert cli.main(["models", "import", "pkg", "--id", "x", "--bogus"]) == ExitCode.USER_ERROR
    assert "(see 'tokenunet models import --help')" in capsys.readouterr().err


def test_attention_grid_with_no_heatmaps_is_a_contradiction(tmp_path, capsys):
    """Before: ``--no-heatmaps --attention-grid input`` wrote no maps without a word about the grid asked for."""
    argv = ["segment", "ct.nii.gz", "--out", str(tmp_path / "o"), "--no-heatmaps", "--attention-grid", "input"]
    assert cli.main(argv) == ExitCode.USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: --attention-grid input places maps that --no-heatmaps does not write"), err
    assert not any(tmp_path.iterdir())


def test_a_process_of_its_own_ends_without_the_teardown_but_with_its_exit_code_output_and_atexit_callbacks(tmp_path):
    """``run_as_process`` (``tokenunet``, ``python -m``) ends with ``os._exit`` after the command: the exit code, the
    buffered output and the ``atexit`` callbacks as a normal exit gives them; a still running thread is waited for."""
    catalog = tmp_path / "catalog.json"
    catalog.write_text('{"models": []}')
    marker = tmp_path / "atexit-ran"
    code = (
        "import atexit, pathlib, sys, threading, time\n"
        f"atexit.register(lambda: pathlib.Path({str(marker)!r}).write_text('yes'))\n"
        "if sys.argv[1] == 'thread':\n"
        f"    late = pathlib.Path({str(marker)!r} + '-thread')\n"
        "    threading.Thread(target=lambda: (time.sleep(0.5), late.write_text('done'))).start()\n"
        "sys.stdout.write('buffered, not flushed')\n"
        f"sys.argv = ['tokenunet', '--catalog', {str(catalog)!r}] + sys.argv[2:]\n"
        "from TokenUNetSegmentLib.pipeline.cli import run_as_process\n"
        "run_as_process()\n"
    )
    for case, argv, expected in [
        ("none", ["models", "list"], 0),
        ("none", ["segment"], 2),
        ("thread", ["models", "list"], 0),
    ]:
        marker.unlink(missing_ok=True)
        done = subprocess.run([sys.executable, "-c", code, case, *argv], cwd=MODULE_DIR, capture_output=True, text=True)
        assert done.returncode == expected, done.stderr
        assert done.stdout.startswith("buffered, not flushed") and marker.read_text() == "yes"
    assert (tmp_path / "atexit-ran-thread").read_text() == "done"


def test_a_process_of_its_own_reports_output_it_could_not_write_and_a_closed_pipe_quietly(tmp_path):
    """``run_as_process`` ends with ``os._exit``: before, a command's last stdout lines (block-buffered in a file or a
    pipe) were flushed there with every error suppressed: stdout on a full disk (``> /dev/full``) lost the result line
    and exited 0 without a word (the interpreter's own exit said so and exited 120). Now the output is flushed while the
    command's errors are still reported: one line, exit 1; a reader that went away (``| head``) stays quiet, exit 0."""
    code = (
        "import sys\n"
        "from TokenUNetSegmentLib.pipeline import cli\n"
        "def run(args):\n"
        "    print('wrote the result')\n"
        "    return 0\n"
        "cli.register_command('prints', 'test', lambda parser: None, run)\n"
        "sys.argv = ['tokenunet', 'prints']\n"
        "cli.run_as_process()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout block-buffered, as by default
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=MODULE_DIR, stdout=full, stderr=subprocess.PIPE, env=env, timeout=60
        )
    assert done.returncode == ExitCode.INTERNAL_ERROR, done.stderr
    assert done.stderr.decode().splitlines() == [
        "internal error: OSError: [Errno 28] No space left on device (run with --debug for the traceback)"
    ]
    reader = subprocess.Popen(
        [sys.executable, "-c", code], cwd=MODULE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    reader.stdout.close()  # the reader went away before the line came
    assert reader.wait(timeout=60) == ExitCode.OK
    assert reader.stderr.read() == b""


def test_a_caller_of_main_in_its_own_process_keeps_its_process_and_its_handlers(tmp_path):
    """``cli.main()`` without arguments, called by a script (``sys.argv`` set, then ``code = cli.main()``), is a caller
    in its own process, as ``cli.main(argv)`` is. Before: a cancel ended the caller's whole process with
    ``os._exit(130)`` (its code after the call never ran, its ``atexit`` callbacks neither) and the handlers stayed
    installed after the call. Now only ``run_as_process`` (``tokenunet``, ``python -m``) ends the process."""
    code = (
        "import signal, sys\n"
        "from TokenUNetSegmentLib.pipeline import cli\n"
        "def run(args):\n"
        "    signal.raise_signal(signal.SIGTERM)\n"
        "    return 0\n"
        "cli.register_command('stops', 'test', lambda parser: None, run)\n"
        "sys.argv = ['tokenunet', 'stops']\n"
        "code = cli.main()\n"
        "print('after main', code, signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=MODULE_DIR, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["after main 130 True"]
    assert [line for line in done.stderr.splitlines() if line] == ["interrupted; no output was written"]


def test_version_prints_the_extensions_version_without_importing_torch_or_monai(capsys):
    """Before: ``tokenunet --version`` said "the following arguments are required: COMMAND", exit 2. Now it prints the
    version pyproject.toml takes from the package (one place), exit 0, as fast as ``--help``."""
    import TokenUNetSegmentLib
    import tomllib
    from helpers.paths import ROOT

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "TokenUNetSegmentLib.__version__"}
    assert cli.main(["--version"]) == ExitCode.OK
    printed = capsys.readouterr()
    assert printed.out == f"tokenunet {TokenUNetSegmentLib.__version__}\n" and printed.err == ""
    done = run_cli("--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, printed.out, "")
    code = (
        "import contextlib, io, sys\n"
        "from TokenUNetSegmentLib.pipeline import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert cli.main(['--version']) == 0\n"
        "print(sorted(m for m in ('torch', 'monai', 'numpy', 'SimpleITK') if m in sys.modules))\n"
    )
    assert run_python(code).strip() == "[]"
