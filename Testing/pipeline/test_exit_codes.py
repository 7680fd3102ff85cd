"""Exit codes of user errors (issue 11, part 4): JSON files read with limits, malformed name tables and numeric
options exit 2 with one line that says what to do (before: ``internal error: ...``, exit 1); a real internal error
exits 1 with a hint to ``--debug``."""

import os

import pytest
from TokenUNetSegmentLib.pipeline import cli
from TokenUNetSegmentLib.pipeline.errors import InputError
from TokenUNetSegmentLib.pipeline.json_files import MAX_JSON_DEPTH, parse_json_bytes, read_json_file


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), f"nests {MAX_JSON_DEPTH + 1} levels deep"),
        ("[" * 200_000, "nests 200000 levels deep"),  # before: RecursionError
        ('{"a": 1, "a": 2}', "the key 'a' appears twice in one object"),
        ('{"a": NaN}', "NaN is not a JSON number"),
        ('{"a": Infinity}', "Infinity is not a JSON number"),
        ('{"a": 1e999}', "the number 1e999 is out of range"),
        ('{"a": 1' + "0" * 5000 + "}", "not valid JSON"),  # Python's digit limit
        (b'{"a": "\xff"}', "not valid JSON"),
        ("", "not valid JSON"),
        ('{"a": "[[[[[["}', None),  # brackets inside strings do not count as depth
    ],
)
def test_json_is_read_with_limits(text, words):
    data = text if isinstance(text, bytes) else text.encode()
    if words is None:
        assert parse_json_bytes(data, "x.json") == {"a": "[[[[[["}
        return
    with pytest.raises(InputError) as raised:
        parse_json_bytes(data, "x.json")
    assert words in str(raised.value) and "\n" not in str(raised.value)


def test_json_files_that_are_folders_fifos_or_too_large(tmp_path):
    os.mkfifo(tmp_path / "fifo.json")  # opening it would block
    (tmp_path / "big.json").write_bytes(b" " * 1001)
    for name, words in [
        ("fifo.json", r"is a named pipe \(FIFO\), not a file"),
        ("missing.json", "not found"),
        ("big.json", "too large"),
    ]:
        with pytest.raises(InputError, match=words):
            read_json_file(tmp_path / name, max_bytes=1000)
    with pytest.raises(InputError, match="is a folder"):
        read_json_file(tmp_path)


NAME_TABLES = {
    "[1, 2]": "is not a mapping of label values to names",
    '{"x": "a"}': "has a key that is not a label value: 'x'",
    '{"1": 5}': "has an invalid entry '1'",
    '{"-1": "a"}': "has an invalid entry '-1'",
    '{"1": ""}': "has an invalid entry '1'",
    '{"1.5": "a"}': "has a key that is not a label value: '1.5'",
    '{"99999999999999999999": "a"}': "has an invalid entry",
    '{"1": "a", "1": "b"}': "appears twice",
    "not json": "is not valid JSON",
}


@pytest.mark.parametrize("table", NAME_TABLES)
def test_malformed_name_tables_exit_2_in_one_line(cli_case, tmp_path, capsys, table):
    """Before: ``internal error: ...`` and exit 1."""
    _, _, path = cli_case
    labels = tmp_path / "labels.nii.gz"
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    sitk.WriteImage(sitk.Cast(image > 0, sitk.sitkUInt8), str(labels))
    (tmp_path / "names.json").write_text(table)
    argv = ["evaluate", str(labels), "--prediction", str(labels), "--no-hd95", "--reference-names"]
    assert cli.main([*argv, str(tmp_path / "names.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the name table names.json") and NAME_TABLES[table] in err
    assert err.count("\n") == 1 and len(err) <= 201


NUMERIC = [
    ("segment", "--overlap", "2", "must be below 1"),
    ("segment", "--overlap", "nan", "must be a finite number"),
    ("segment", "--overlap", "-0.1", "must be at least 0"),
    ("segment", "--batch-size", "0", "must be at least 1"),
    ("segment", "--batch-size", "1.5", "is not a whole number"),
    ("segment", "--device", "gpu", "unknown device 'gpu'"),
    ("segment", "--device", "", "unknown device ''"),  # before: ran on auto ("--device $DEVICE", unset)
    ("segment", "--device", "cuda:-1", "unknown device 'cuda:-1'"),
    ("segment", "--model", "", "argument --model/-m: is empty"),  # before: ran the catalog's default model
    ("segment", "--model", " ", "is empty"),
    ("train", "--device", "cuda:x", "unknown device 'cuda:x'"),  # before: refused only after reading the datalist
    ("train", "--steps", "0", "must be at least 1"),
    ("train", "--lr", "inf", "must be a finite number"),
    ("train", "--max-minutes", "-1", "must be above 0"),
    ("train", "--flip-axes", "5", "must be at most 2"),
    ("train", "--seed", "x", "is not a whole number"),
    ("cka", "--samples", "1", "must be at least 2"),
]


@pytest.mark.parametrize(("command", "option", "value", "words"), NUMERIC)
def test_malformed_numeric_options_exit_2_in_one_line(cli_case, tmp_path, capsys, command, option, value, words):
    _, package, path = cli_case
    required = {
        "segment": [str(path), "--model", str(package), "--out", str(tmp_path / "out")],
        "train": ["d.json", "--config", "c.json", "--out", str(tmp_path / "out")],
        "cka": ["--out", str(tmp_path / "out")],
    }[command]
    code = cli.main([command, *required, option, value])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and words in err and err.count("\n") == 1 and len(err) <= 201
    assert not (tmp_path / "out").exists()


def test_an_internal_error_exits_1_with_a_hint_to_debug(monkeypatch, tmp_path, capsys):
    from TokenUNetSegmentLib.pipeline import models_command

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setenv("TOKENUNET_HOME", str(tmp_path))
    monkeypatch.setattr(models_command, "_listing", broken)
    assert cli.main(["models", "list"]) == 1
    err = capsys.readouterr().err
    assert err == "internal error: KeyError: 'a bug' (run with --debug for the traceback)\n"
    with pytest.raises(KeyError):
        cli.main(["--debug", "models", "list"])


def test_a_long_error_line_keeps_what_to_do_by_shortening_its_paths():
    """Before: a hint past half of the 200-character line was cut ("e.g. /work/data/offline-cases/*/image.ni...)"),
    losing what to do; now long absolute paths are shortened to their last two parts first."""
    from TokenUNetSegmentLib.pipeline.run_contract import MAX_LINE, one_line

    folder = "/home/someone/projects/abdomen-study/data/raw/offline-cases"
    line = one_line(
        "error: ",
        f"the folder {folder} holds no case (no NIfTI, NRRD or MetaImage file, no DICOM subfolder)",
        f"its subfolders hold volume files: give them as cases, e.g. {folder}/*/image.nii.gz",
    )
    assert len(line) <= MAX_LINE and "\n" not in line
    assert line.endswith(
        "(its subfolders hold volume files: give them as cases, e.g. .../offline-cases/*/image.nii.gz)"
    )
    assert "the folder .../raw/offline-cases holds no case" in line
    short = one_line("error: ", f"cannot read {folder}/a.nii.gz", "fix it")
    assert short == f"error: cannot read {folder}/a.nii.gz (fix it)"  # paths stay whole when the line fits


def test_a_line_that_fits_keeps_its_whole_hint():
    """Before: a hint over half the line was cut even when the whole line fitted (batch's case line for a 4D image
    without an order ended "... or keep its dataset....)" at 185 characters); now only a line over the limit is cut."""
    from TokenUNetSegmentLib.pipeline.run_contract import MAX_LINE, one_line

    message = "lone.nii.gz holds 4 volumes (a 4D image), and nothing says which channel each one is"
    hint = 'name its volumes in order, e.g. "channels": ["T1", "T1c", "T2", "FLAIR"], or put its dataset.json beside it'
    assert len(message) + len(hint) + 3 <= MAX_LINE
    assert one_line("", message, hint) == f"{message} ({hint})"
    long_hint = one_line("", message, hint + " " + "x" * 60)
    assert len(long_hint) <= MAX_LINE and long_hint.endswith("...)")  # a line over the limit still fits
