"""Defects of the ``batch`` cases reviewbatch added (BraTS case folders, the slices of one series, links), found by
reviewbatch2: what a real folder of scans, kept by git-annex or DVC or as BraTS ships it, does to them."""

import json
import os

import pytest
from helpers.channel_files import brain_config, sequence, write_volume
from helpers.packages import make_package, tiny_config
from helpers.readers import dicom_array, write_dicom_series
from TokenUNetSegmentLib.pipeline import cli
from TokenUNetSegmentLib.pipeline.batch_cases import cases_from_paths
from TokenUNetSegmentLib.pipeline.errors import ModelPackageError
from TokenUNetSegmentLib.pipeline.package_source import read_metadata

FAST = ["--device", "cpu", "--no-overview", "--progress", "none", "--no-heatmaps"]


def _annexed_series(tmp_path):
    """A DICOM series as git-annex keeps it: ``p1/IM0001.dcm`` ... links, each to its own object folder named by a
    hash key (``.git/annex/objects/KEY/KEY``)."""
    write_dicom_series(tmp_path / "exported", dicom_array(slices=3))
    series = tmp_path / "dicom" / "p1"
    series.mkdir(parents=True)
    for index, file in enumerate(sorted((tmp_path / "exported").iterdir())):
        _annex(tmp_path, file.read_bytes(), series / file.name, f"SHA256E-s{index}--k{index}.dcm")
    return series


def _annex(tmp_path, data: bytes, link, key: str) -> None:
    """``link`` to a new annex object ``key`` holding ``data`` (the object's own folder, as git-annex lays it out)."""
    objects = tmp_path / ".git" / "annex" / "objects" / key
    objects.mkdir(parents=True)
    (objects / key).write_bytes(data)
    os.symlink(objects / key, link)


def test_the_slices_of_an_annexed_series_are_a_case_named_by_their_folder(tmp_path):
    """``batch dicom/p1/*`` where every slice is a link into git-annex's store (before: the case was named by the
    first link's target folder, ``out/SHA256E-s0--k0.dcm/``, where ``batch dicom/p1`` names it ``p1``)."""
    series = _annexed_series(tmp_path)
    cases, _ = cases_from_paths(sorted(series.iterdir()))
    assert [case.name for case in cases] == ["p1"]
    assert [case.name for case in cases_from_paths([series / "IM0002.dcm"])[0]] == ["p1"]


def test_resume_reruns_an_annexed_slice_case_whose_series_got_a_new_slice_version(tmp_path):
    """``segment`` given a link to a slice reads the series of the link's folder; the stamp covered the folder of
    the link's target, an annex object folder holding that one slice (before: after ``git annex`` pointed another
    slice at a new version, ``--resume`` skipped the case, its result that of the old series)."""
    from TokenUNetSegmentLib.pipeline.result_key import input_stamp

    series = _annexed_series(tmp_path)
    before = input_stamp(series / "IM0001.dcm")
    data = (series / "IM0003.dcm").read_bytes()
    (series / "IM0003.dcm").unlink()
    _annex(tmp_path, data + b"\0\0", series / "IM0003.dcm", "SHA256E-s9--new.dcm")
    assert input_stamp(series / "IM0001.dcm") != before


def _brats_training_folder(tmp_path):
    """``BraTS/BraTS_00{1,2}/``, each with its four sequences and its label map ``_seg``, as BraTS's training data."""
    folder = tmp_path / "BraTS"
    for case in (1, 2):
        for index, name in enumerate(("t1", "t1c", "t2", "flair", "seg")):
            path = folder / f"BraTS_{case:03d}" / f"BraTS_{case:03d}_{name}.nii.gz"
            write_volume(sequence(min(index, 3), case - 1), path)
    return folder


def test_brats_training_case_folders_with_their_seg_file_run_on_the_four_sequences(tmp_path, capsys):
    """BraTS's training data, the layout users validate on: each case folder holds its label map beside the four
    sequences (``BraTS_001_seg.nii.gz``) (before: every case failed "model ... needs 4 input channel(s) ..., got 5",
    exit 2: the documented layout never ran). The files the patterns place one way only run; a file no channel's
    pattern matches is left out with a note, and batch.json lists the files that ran."""
    package, folder = make_package(tmp_path, brain_config()), _brats_training_folder(tmp_path)
    out = tmp_path / "out"
    options = ["--model", str(package), "--out", str(out), *FAST]
    assert cli.main(["batch", str(folder), *options]) == 0
    records = json.loads((out / "batch.json").read_text())["cases"]
    assert [(record["status"], len(record["inputs"])) for record in records] == [("done", 4), ("done", 4)]
    assert not any(path.endswith("_seg.nii.gz") for record in records for path in record["inputs"])
    assert "left out BraTS_001_seg.nii.gz" in capsys.readouterr().err
    assert cli.main(["batch", str(folder), *options, "--resume"]) == 0
    records = json.loads((out / "batch.json").read_text())["cases"]
    assert [record["status"] for record in records] == ["skipped", "skipped"]


def test_a_case_folder_with_two_files_for_one_channel_is_refused_alone(tmp_path):
    """``BraTS_001_t1.nii.gz`` and a second ``BraTS_001_t1.nrrd`` beside the other sequences: which is T1 is no one's
    choice, so the case is recorded failed, never run on either."""
    package = make_package(tmp_path, brain_config())
    folder = tmp_path / "BraTS"
    for index, name in enumerate(("t1", "t1c", "t2", "flair")):
        write_volume(sequence(index, 0), folder / "BraTS_001" / f"BraTS_001_{name}.nii.gz")
    write_volume(sequence(3, 0), folder / "BraTS_001" / "BraTS_001_t1.nrrd")
    out = tmp_path / "out"
    assert cli.main(["batch", str(folder), "--model", str(package), "--out", str(out), *FAST]) == 2
    record = json.loads((out / "batch.json").read_text())["cases"][0]
    assert record["status"] == "failed" and not (out / "BraTS_001").exists()


def _package_with_label(tmp_path, name: str):
    package = make_package(tmp_path, tiny_config())
    path = package / "configs" / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata["tokenunet"]["labels"][0]["name"] = name
    path.write_text(json.dumps(metadata))
    return package


@pytest.mark.parametrize(
    "name", ["\x1b]0;pwned\x07liver", "line\nbreak", "left:kidney", "liver?", "liver.", "CON", "nul.left", "x" * 251]
)
def test_a_package_whose_label_name_no_system_can_name_a_file_by_is_refused(tmp_path, name):
    """A package from elsewhere whose label name holds a terminal escape, a line break, what Windows cannot hold in a
    file name (``left:kidney`` writes the stream ``kidney.nrrd`` of a file ``left`` on NTFS) or reads as a device
    (``CON``), or too many bytes for a file name (before: accepted; the escape went raw to the terminal in the summary
    and into ``probabilities/``' file names; a 251-byte name failed only after the whole run, "cannot write the output
    ... File name too long (choose a shorter path)", a hint about the path, not the package)."""
    with pytest.raises(ModelPackageError) as refused:
        read_metadata(_package_with_label(tmp_path, name))
    assert "cannot name a file" in str(refused.value)


@pytest.mark.parametrize("name", ["left kidney", "vertebrae_L1", "côte (rib) 1", "Liver-2.5"])
def test_label_names_that_name_files_everywhere_are_kept(tmp_path, name):
    assert read_metadata(_package_with_label(tmp_path, name)).config.labels[0].name == name


@pytest.mark.parametrize("layout", ["Task01_BrainTumour", "Dataset001_BraTS"])
def test_a_datasets_root_given_to_a_multichannel_model_is_refused_with_its_images_folder(tmp_path, capsys, layout):
    """``batch Task01_BrainTumour/`` (the Decathlon's or nnU-Net's dataset root: imagesTr/, imagesTs/, labelsTr/,
    dataset.json) with a 4-channel model (before: imagesTr, imagesTs and labelsTr each taken as one BraTS case
    folder: three cases, every one failed "the names of BRATS_001.nii.gz, BRATS_002.nii.gz, ... do not say which
    channel (T1, T1c, T2, FLAIR) each holds (name each file for its channel ...)", a batch.json written and label
    maps offered as scans). Refused before anything is written, the hint naming the folder of cases to give."""
    package = make_package(tmp_path, brain_config())
    root = tmp_path / layout
    channels = ["_0000", "_0001", "_0002", "_0003"] if layout.startswith("Dataset") else [""]  # nnU-Net's: 3D files
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        for case in (1, 2, 3):
            for channel in channels if folder.startswith("images") else [""]:
                write_volume(sequence(0, 0), root / folder / f"BRATS_{case:03d}{channel}.nii.gz")
    (root / "dataset.json").write_text("{}")
    out = tmp_path / "out"
    assert cli.main(["batch", str(root), "--model", str(package), "--out", str(out), *FAST]) == 2
    error = capsys.readouterr().err
    assert "it is a dataset's root: give the folder of its images" in error and error.endswith("/imagesTs)\n")
    assert not out.exists()


def test_brats_case_folders_given_one_by_one_are_one_case_each(tmp_path, capsys):
    """``batch BraTS/BraTS_00*`` (the shell lists the case folders; a few cases picked from a dataset), as
    ``batch dicom/*`` lists series folders (before: each given folder was a folder of cases, each sequence its own
    case: every one failed "needs 4 input channel(s) ..., got 1 (... or one 4D image of them all with --channels)",
    where ``batch BraTS`` ran them). A given folder whose volume files the model's patterns place one way only is one
    case; a folder of 4D images (the Decathlon's imagesTs) stays a folder of cases."""
    package, folder = make_package(tmp_path, brain_config()), _brats_training_folder(tmp_path)
    out = tmp_path / "out"
    given = sorted(map(str, folder.iterdir()))
    assert cli.main(["batch", *given, "--model", str(package), "--out", str(out), *FAST]) == 0
    records = json.loads((out / "batch.json").read_text())["cases"]
    assert [(record["name"], record["status"], len(record["inputs"])) for record in records] == [
        ("BraTS_001", "done", 4),
        ("BraTS_002", "done", 4),
    ]
    images = tmp_path / "imagesTs"
    for case in range(1, 5):
        write_volume(sequence(0, 0), images / f"BRATS_{case:03d}.nii.gz")
    channels = read_metadata(package).config.inputs
    cases, _ = cases_from_paths([images], None, [channel.name for channel in channels], channels)
    assert [case.name for case in cases] == ["BRATS_001", "BRATS_002", "BRATS_003", "BRATS_004"]


def test_a_series_subfolder_holding_a_batch_json_of_the_users_stays_in_the_stamp(tmp_path):
    """A study folder whose series subfolder holds a ``batch.json`` the user wrote (a PACS tool's, a script's: no
    batch's mark) beside its slices (before: any subfolder holding a file of that name counted as TokenUNet's output
    and was left out of the folder's stamp: a slice replaced there, ``--resume`` skipped the case, exit 0, the result
    that of the old series)."""
    from TokenUNetSegmentLib.pipeline.result_key import input_stamp

    series = tmp_path / "study" / "SE1"
    write_dicom_series(series, dicom_array(slices=3))
    (series / "batch.json").write_text(json.dumps({"exported": "2024-05-01"}))
    before = input_stamp(tmp_path / "study")
    (series / "IM0002.dcm").write_bytes((series / "IM0002.dcm").read_bytes() + b"\0\0")
    assert input_stamp(tmp_path / "study") != before


def test_label_names_that_differ_only_in_case_are_refused(tmp_path):
    """Labels ``Liver`` and ``liver`` (before: accepted; ``--probabilities`` writes ``probabilities/Liver.nrrd`` and
    ``liver.nrrd``, one file on macOS's and Windows' file systems: one label's map silently replaced the other's)."""
    package = make_package(tmp_path, tiny_config())
    path = package / "configs" / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata["tokenunet"]["labels"][0]["name"], metadata["tokenunet"]["labels"][1]["name"] = "Liver", "liver"
    path.write_text(json.dumps(metadata))
    with pytest.raises(ModelPackageError) as refused:
        read_metadata(package)
    assert "label names must be unique" in str(refused.value)
