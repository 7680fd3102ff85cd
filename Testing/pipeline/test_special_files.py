"""Named pipes (FIFOs), sockets and devices in the folders ``batch``, ``segment`` (a DICOM folder) and ``datalist``
(imagesTr/labelsTr, image and label folders, TotalSegmentator cases) read: opening a FIFO for reading waits for a
writer, forever. Each command runs in a child process with a timeout: such entries are left out unopened and named,
and one given as the input itself is refused (exit 2) without being opened."""

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers.processes import run_cli, run_python
from helpers.readers import dicom_array, write_dicom_series

TIMEOUT = 120  # seconds: a child that has not ended by then is blocked (each run here takes a few seconds)
FAST = ["--device", "cpu", "--no-overview", "--no-heatmaps", "--progress", "none"]

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def unix_socket(path: Path) -> socket.socket:
    """A socket file at ``path`` (bound; the caller closes it)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    return sock


def test_a_folder_of_cases_with_a_fifo_and_a_socket_runs_its_cases_and_names_them_left_out(tmp_path, cli_case):
    """Before: ``batch`` on the folder never ended (the FIFO named .dcm was opened to see whether the folder holds a
    DICOM series)."""
    _, package, ct = cli_case
    folder = tmp_path / "cases"
    folder.mkdir()
    shutil.copy(ct, folder / "ct.nii.gz")
    fifo(folder / "pipe.nii.gz")
    fifo(folder / "slice.dcm")
    sock = unix_socket(folder / "sock")
    try:
        done = run_cli("batch", folder, "--model", package, "--out", tmp_path / "out", *FAST, timeout=TIMEOUT)
    finally:
        sock.close()
    assert done.returncode == 0, done.stderr
    document = json.loads((tmp_path / "out" / "batch.json").read_text())
    assert [case["name"] for case in document["cases"]] == ["ct"]
    assert "pipe.nii.gz (a named pipe (FIFO))" in done.stderr and "sock (a socket)" in done.stderr
    assert "slice.dcm (a named pipe (FIFO))" in done.stderr and "Traceback" not in done.stderr


def test_a_fifo_given_as_the_input_is_refused_without_being_opened(tmp_path, cli_case):
    """``segment pipe.nii.gz`` and ``batch pipe.nii.gz``: exit 2 in one line that says what it is, nothing written
    (before, batch ran it as a case and recorded it failed)."""
    _, package, _ = cli_case
    pipe = fifo(tmp_path / "pipe.nii.gz")
    for command in ("segment", "batch"):
        out = tmp_path / f"out_{command}"
        done = run_cli(command, pipe, "--model", package, "--out", out, *FAST, timeout=TIMEOUT)
        assert done.returncode == 2, done.stderr
        assert "pipe.nii.gz is a named pipe (FIFO), not a file" in done.stderr, command
        assert done.stderr.count("\n") == 1 and not out.exists()


def test_a_dicom_series_folder_with_a_fifo_reads_its_series_and_says_what_was_left_out(tmp_path):
    """Before: GDCM's scan of the folder stopped at the FIFO, and the series was refused as missing slices ("16
    damaged file(s) left out")."""
    array = dicom_array()
    write_dicom_series(tmp_path / "series", array)
    fifo(tmp_path / "series" / "pipe")
    fifo(tmp_path / "series" / "IM9999.dcm")
    code = (
        "import SimpleITK as sitk, json\n"
        "from TokenUNetSegmentLib.pipeline.readers import read_image\n"
        f"image, warnings = read_image({str(tmp_path / 'series')!r})\n"
        "print(json.dumps([sitk.GetArrayFromImage(image).tolist(), warnings]))\n"
    )
    voxels, warnings = json.loads(run_python(code, timeout=TIMEOUT))
    np.testing.assert_array_equal(np.asarray(voxels), array)
    assert any("IM9999.dcm (a named pipe (FIFO))" in warning and "pipe (a named" in warning for warning in warnings)


def test_batch_names_the_case_once_in_what_its_dicom_folder_left_out(tmp_path, cli_case):
    """A DICOM series folder of a batch that holds a FIFO: its note named the case twice ("warning: series: series:
    left out pipe ..."), as the reader's words start with the folder, which is the case's name."""
    _, package, _ = cli_case
    write_dicom_series(tmp_path / "cases" / "series", dicom_array())
    fifo(tmp_path / "cases" / "series" / "pipe")
    done = run_cli("batch", tmp_path / "cases", "--model", package, "--out", tmp_path / "out", *FAST, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert "warning: series: left out pipe (a named pipe (FIFO))" in done.stderr, done.stderr
    assert "series: series:" not in done.stderr
    (case,) = json.loads((tmp_path / "out" / "batch.json").read_text())["cases"]
    assert any(warning.startswith("series: left out pipe") for warning in case["warnings"]), case["warnings"]


def test_datalist_layouts_leave_special_files_out_and_name_them(tmp_path):
    """``datalist decathlon``: a FIFO among labelsTr left out with a warning (before: "labelsTr/b.nii.gz has no image
    imagesTr/b_0000.nii.gz", the image there); a case whose image is a FIFO refused naming it. ``datalist folders``
    and ``totalsegmentator``: FIFO images, labels and masks named among those left out (before: left out without a
    word); a FIFO meta.csv refused (before: ignored, its splits lost)."""
    image = sitk.GetImageFromArray(dicom_array().astype(np.float32))
    label = sitk.GetImageFromArray((dicom_array() > 250).astype(np.uint8))
    task = tmp_path / "Dataset002_Liver"
    for folder in ("imagesTr", "labelsTr"):
        (task / folder).mkdir(parents=True)
    sitk.WriteImage(image, str(task / "imagesTr" / "a_0000.nii.gz"))
    sitk.WriteImage(label, str(task / "labelsTr" / "a.nii.gz"))
    fifo(task / "labelsTr" / "b.nii.gz")
    fifo(task / "imagesTr" / "b_0000.nii.gz")
    spec = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}, "file_ending": ".nii.gz"}
    (task / "dataset.json").write_text(json.dumps(spec))
    done = run_cli("datalist", "decathlon", task, "--out", tmp_path / "d1.json", timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert "labelsTr/b.nii.gz (a named pipe (FIFO))" in done.stderr
    assert [entry["name"] for entry in json.loads((tmp_path / "d1.json").read_text())["training"]] == ["a"]
    sitk.WriteImage(label, str(task / "labelsTr" / "c.nii.gz"))
    fifo(task / "imagesTr" / "c_0000.nii.gz")
    done = run_cli("datalist", "decathlon", task, "--out", tmp_path / "d2.json", timeout=TIMEOUT)
    assert done.returncode == 2 and "imagesTr/c_0000.nii.gz is a named pipe (FIFO), not a file" in done.stderr
    assert done.stderr.count("\n") == 1 and not (tmp_path / "d2.json").exists()

    images, labels = tmp_path / "img", tmp_path / "lab"
    for folder in (images, labels):
        folder.mkdir()
    sitk.WriteImage(image, str(images / "img0001.nii.gz"))
    sitk.WriteImage(label, str(labels / "label0001.nii.gz"))
    fifo(images / "img0002.nii.gz")
    fifo(labels / "label0002.nii.gz")
    done = run_cli("datalist", "folders", "--images", images, "--labels", labels, "--out", tmp_path / "d3.json")
    assert done.returncode == 0, done.stderr
    assert "img0002.nii.gz (a named pipe (FIFO))" in done.stderr and "label0002.nii.gz (a named pipe" in done.stderr

    cases = tmp_path / "totalseg"
    (cases / "s0001" / "segmentations").mkdir(parents=True)
    sitk.WriteImage(image, str(cases / "s0001" / "ct.nii.gz"))
    sitk.WriteImage(label, str(cases / "s0001" / "segmentations" / "liver.nii.gz"))
    fifo(cases / "s0001" / "segmentations" / "spleen.nii.gz")
    done = run_cli("datalist", "totalsegmentator", cases, "--out", tmp_path / "d4.json", timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert "spleen.nii.gz (a named pipe (FIFO))" in done.stderr
    fifo(cases / "meta.csv")
    done = run_cli("datalist", "totalsegmentator", cases, "--out", tmp_path / "d5.json", timeout=TIMEOUT)
    assert done.returncode == 2 and "meta.csv is a named pipe (FIFO), not a file" in done.stderr
