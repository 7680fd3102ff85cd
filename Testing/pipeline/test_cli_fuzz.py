"""Property-based tests of the command line's argument parsing (hypothesis, issue 11 part 5): any mix of every
command's options with hostile values (numbers out of range, NaN, text, empty strings, options without values)
gives a parsed command line, the help (exit 0), or exit 2 with one line of at most 200 characters that names what
to do; never a traceback, never exit 1, and nothing written."""

import argparse
import os

import pytest
from helpers.fuzz import bounded
from hypothesis import assume, given
from hypothesis import strategies as st
from TokenUNetSegmentLib.pipeline import cli

BOUNDED = bounded(80)


def _options() -> dict[str, list[str]]:
    parser = cli.build_parser(*cli.COMMANDS)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {
        name: sorted({o for a in child._actions for o in a.option_strings if o not in ("-h", "--help")})
        for name, child in sub.choices.items()
    }


OPTIONS = _options()
VALUES = st.one_of(
    st.sampled_from(["0", "-1", "1", "2", "0.5", "1e999", "-1e999", "nan", "inf", "-0", "1e3", "0x10", "", " "]),
    st.sampled_from(["cpu", "cuda", "cuda:7", "gpu", "auto", "none", "json", "adamw", "poly", "token", "a=b", "="]),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12),
)


def _argv(command: str):
    token = st.one_of(st.sampled_from(OPTIONS[command]), VALUES)
    return st.lists(token, max_size=8).map(lambda rest: [command, *rest])


def _check_exit(code, err: str) -> None:
    assert code in (0, 2), (code, err)
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) <= 200
    assert "Traceback" not in err


@pytest.fixture
def empty_folder(tmp_path, monkeypatch):
    folder = tmp_path / "cwd"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("TOKENUNET_HOME", str(tmp_path / "home"))
    return folder


@BOUNDED
@given(argv=st.sampled_from(sorted(OPTIONS)).flatmap(_argv))
def test_any_arguments_parse_or_exit_2_in_one_line(argv, capsys, empty_folder):
    capsys.readouterr()
    try:
        cli.parse_arguments(argv)
        code = 0
    except SystemExit as exit:
        code = exit.code
    _check_exit(code, capsys.readouterr().err)
    assert os.listdir(empty_folder) == []


@BOUNDED
@given(
    command=st.sampled_from(["segment", "evaluate", "train"]),
    rest=st.data(),
)
def test_running_with_any_options_and_a_missing_input_exits_2(command, rest, capsys, empty_folder):
    """The run itself (not only the parser) checks its options: device names, ranges, files; the input is a file
    that does not exist, so every example ends with exit 2 before any work, whatever the options."""
    names = [o for o in OPTIONS[command] if o != "--debug"]  # --debug shows the traceback on purpose
    options = rest.draw(st.lists(st.one_of(st.sampled_from(names), VALUES), max_size=6))
    assume(not any(len(option) >= 5 and "--debug".startswith(option) for option in options))  # "--deb" is --debug
    required = {"segment": ["missing.nii.gz", "--out", "out"], "evaluate": ["missing.nii.gz", "--prediction", "p"]}
    required["train"] = ["missing.json", "--config", "missing-config.json", "--out", "run"]
    capsys.readouterr()
    code = cli.main([command, *required[command], *options])
    err = capsys.readouterr().err
    _check_exit(code, err)
    assert code == 2 or "-h" in options or "--help" in options
    assert os.listdir(empty_folder) == []
