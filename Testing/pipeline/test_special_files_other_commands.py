"""Named pipes (FIFOs) given to ``evaluate``, ``robustness`` and ``cka``, or sitting in a DICOM folder they read:
opening a FIFO for reading waits for a writer, forever. Each command runs in a child process with a timeout: a FIFO
given as a file is refused (exit 2, one line that says what it is), one among a DICOM series' slices is left out
unopened."""

import json
import os
from pathlib import Path

import pytest
import SimpleITK as sitk
from helpers.processes import run_cli
from helpers.readers import dicom_array, write_dicom_series

TIMEOUT = 120  # seconds: a child that has not ended by then is blocked (each run here takes a few seconds)

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def refused_in_one_line(done, says: str) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert says in done.stderr, done.stderr


def test_a_fifo_given_to_evaluate_robustness_or_cka_is_refused_without_being_opened(tmp_path, cli_case):
    """Every file argument of the three commands given a FIFO: refused in one line naming it a FIFO, never blocked
    (``cka --a-weights`` before: "weights file not found", which it was not)."""
    _, package, ct = cli_case
    pipe = fifo(tmp_path / "pipe.nii.gz")
    table = fifo(tmp_path / "names.json")
    weights = fifo(tmp_path / "weights.safetensors")
    datalist = fifo(tmp_path / "list.json")
    names = tmp_path / "organs.json"
    names.write_text(json.dumps({"1": "organ1", "2": "organ2"}))
    named = ("--reference-names", names)
    runs = [
        ("evaluate", pipe, "--prediction", ct, "--no-hd95"),
        ("evaluate", ct, "--prediction", pipe, "--no-hd95"),
        ("evaluate", ct, "--model", package, "--image", pipe, "--no-hd95", "--device", "cpu"),
        ("evaluate", ct, "--prediction", ct, "--reference-names", table, "--no-hd95"),
        ("robustness", "--model", package, "--image", pipe, "--reference", ct, *named, "--out", tmp_path / "r1"),
        ("robustness", "--model", package, "--image", ct, "--reference", pipe, *named, "--out", tmp_path / "r2"),
        ("robustness", "--model", package, "--datalist", datalist, "--patient", "p1", "--out", tmp_path / "r3"),
        ("cka", "--a", "MetaUNETR-conv", "--b", "MetaUNETR-conv", "--a-weights", weights, "--out", tmp_path / "c"),
    ]
    for run in runs:
        done = run_cli(*run, timeout=TIMEOUT)
        assert done.returncode == 2, (run, done.stderr)
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, (run, done.stderr)
        assert "a named pipe (FIFO)" in done.stderr, (run, done.stderr)
        assert "Traceback" not in done.stderr


def test_a_dicom_folder_with_a_fifo_given_to_evaluate_and_robustness_reads_its_series(tmp_path, cli_case):
    """``evaluate --image FOLDER`` and ``robustness --image FOLDER`` of a DICOM series holding a FIFO named like a
    slice: the series is read, the FIFO left out unopened and named."""
    _, package, _ = cli_case
    files = write_dicom_series(tmp_path / "series", dicom_array())
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(file) for file in files])
    reference = tmp_path / "reference.nii.gz"
    sitk.WriteImage(sitk.Cast(reader.Execute() > 0, sitk.sitkUInt8), str(reference))
    fifo(tmp_path / "series" / "IM9999.dcm")
    names = tmp_path / "organs.json"
    names.write_text(json.dumps({"1": "organ1", "2": "organ2"}))
    done = run_cli(
        "evaluate", reference, "--model", package, "--image", tmp_path / "series", "--no-hd95", "--device", "cpu",
        timeout=TIMEOUT,
    )  # fmt: skip
    assert "Traceback" not in done.stderr and "IM9999.dcm (a named pipe (FIFO))" in done.stderr, done.stderr
    done = run_cli(
        "robustness", "--model", package, "--image", tmp_path / "series", "--reference", reference,
        "--reference-names", names, "--out", tmp_path / "r", "--no-tokens", timeout=TIMEOUT,
    )  # fmt: skip
    assert "Traceback" not in done.stderr and "IM9999.dcm (a named pipe (FIFO))" in done.stderr, done.stderr


def test_a_fifo_given_as_the_model_package_is_refused_as_such_not_as_missing(tmp_path, cli_case):
    """``--model pipe.zip`` (segment, batch) and ``models import pipe.zip``: exit 2 in one line that says what it is,
    as every other file argument does (before: "model package not found", although it is there)."""
    _, _, ct = cli_case
    pipe = fifo(tmp_path / "pipe.zip")
    runs = [
        ("segment", ct, "--model", pipe, "--out", tmp_path / "s", "--device", "cpu"),
        ("batch", ct, "--model", pipe, "--out", tmp_path / "b", "--device", "cpu"),
        ("models", "import", pipe),
    ]
    for run in runs:
        done = run_cli(*run, timeout=TIMEOUT)
        refused_in_one_line(done, "pipe.zip is a named pipe (FIFO), not a file")
        assert "not found" not in done.stderr, (run, done.stderr)


def test_a_fifo_given_as_an_output_file_is_named_as_such(tmp_path, cli_case):
    """(apiguard) ``evaluate --json FIFO`` and a FIFO at ``batch``'s batch.json: exit 2 in one line that says what it
    is, in the words every input path uses (before: "the output path ... is not a regular file")."""
    _, package, ct = cli_case
    pipe = fifo(tmp_path / "scores.json")
    (tmp_path / "all").mkdir()
    fifo(tmp_path / "all" / "batch.json")
    runs = [
        (("evaluate", ct, "--prediction", ct, "--no-hd95", "--json", pipe), "scores.json"),
        (("batch", ct, "--model", package, "--out", tmp_path / "all", "--device", "cpu"), "batch.json"),
    ]
    for run, name in runs:
        done = run_cli(*run, timeout=TIMEOUT)
        refused_in_one_line(done, f"{name} is a named pipe (FIFO), not a file")
        assert "not a regular file" not in done.stderr, (run, done.stderr)
