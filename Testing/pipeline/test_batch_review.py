"""Defects of ``batch`` and of the outputs every run writes, found by reviewbatch: what a user with a folder of real
scans sees in its case names, batch.json and output folders."""

import json
import os
import shutil

import pytest
import SimpleITK as sitk
from helpers.channel_files import brain_config, channel_files, sequence, write_dataset_json, write_volume
from helpers.packages import make_package
from helpers.readers import dicom_array, write_dicom_series
from TokenUNetSegmentLib.pipeline import cli
from TokenUNetSegmentLib.pipeline.batch_cases import cases_from_datalist, cases_from_paths
from TokenUNetSegmentLib.pipeline.errors import InputError

FAST = ["--device", "cpu", "--no-overview", "--progress", "none"]


def test_datalist_entries_that_are_links_are_named_by_the_links_as_a_folder_of_them_is(tmp_path):
    """git-annex, DVC and hand-made link farms name each scan by a link into a store of files named by their hashes
    (before: the datalist's cases were named by the targets, ``out/SHA256E-s1--aaa/``, and batch.json's inputs held
    the targets only: nothing said which patient a result was; the same links as CASE were named by the links)."""
    store, cases = tmp_path / ".store", tmp_path / "cases"
    store.mkdir()
    cases.mkdir()
    for number in (1, 2):
        sitk.WriteImage(sitk.Image(4, 4, 4, sitk.sitkInt16), str(store / f"SHA256E-s{number}--abc{number}.nii.gz"))
        os.symlink(store / f"SHA256E-s{number}--abc{number}.nii.gz", cases / f"patient{number}.nii.gz")
    write_dicom_series(store / "1.2.840.99", dicom_array())
    os.symlink(store / "1.2.840.99", cases / "patient3")
    images = ["cases/patient1.nii.gz", "cases/patient2.nii.gz", "cases/patient3"]
    (tmp_path / "list.json").write_text(json.dumps({"testing": [{"image": image} for image in images]}))
    from_datalist = cases_from_datalist(tmp_path / "list.json")
    assert [case.name for case in from_datalist] == ["patient1", "patient2", "patient3"]
    from_folder, _ = cases_from_paths([cases])
    assert [case.name for case in from_folder] == ["patient1", "patient2", "patient3"]


def test_a_folder_of_links_to_4d_images_is_read_as_segment_reads_each_link(tmp_path):
    """The Decathlon's ``imagesTr/BRATS_001.nii.gz`` as git-annex keeps it: a link into ``.git/annex/objects``, the
    dataset.json naming its volumes beside ``imagesTr/`` (before: the batch read the link's target, so it looked for a
    dataset.json beside the target: every case failed "nothing says which channel each one is ... put its dataset.json
    beside imagesTr/", where ``segment`` given the same link read it and found the order)."""
    package = make_package(tmp_path, brain_config())
    volumes = [sitk.ReadImage(str(path)) for path in channel_files(tmp_path / "parts", cases=("BRATS_001",))]
    store = tmp_path / ".git" / "annex" / "objects" / "Xx" / "Yy" / "SHA256E-s1--h.nii.gz"
    store.mkdir(parents=True)
    sitk.WriteImage(sitk.JoinSeries(volumes), str(store / "SHA256E-s1--h.nii.gz"))
    dataset = tmp_path / "Task01_BrainTumour"
    (dataset / "imagesTr").mkdir(parents=True)
    os.symlink(store / "SHA256E-s1--h.nii.gz", dataset / "imagesTr" / "BRATS_001.nii.gz")
    write_dataset_json(dataset, key="modality")
    out = tmp_path / "out"
    options = ["--model", str(package), "--out", str(out), *FAST, "--no-heatmaps"]
    assert cli.main(["batch", str(dataset / "imagesTr"), *options]) == 0
    record = json.loads((out / "batch.json").read_text())["cases"][0]
    assert record["name"] == "BRATS_001" and record["status"] == "done"
    assert record["inputs"] == [str(dataset / "imagesTr" / "BRATS_001.nii.gz")]
    report = json.loads((out / "BRATS_001" / "report.json").read_text())
    assert report["channel_order"]["volumes"] == {"T1": 1, "T1c": 2, "T2": 3, "FLAIR": 0}
    options[3] = str(tmp_path / "given")  # the link given as CASE itself
    assert cli.main(["batch", str(dataset / "imagesTr" / "BRATS_001.nii.gz"), *options]) == 0


def test_resume_keeps_the_warnings_of_the_cases_it_skips_in_batch_json(cli_case, tmp_path, capsys):
    """batch.json is rewritten by ``--resume``: a skipped case's record comes from its report.json (before: without
    its warnings, so a scan warned about, e.g. too small for the model, read as clean in the new batch.json)."""
    _, package, ct = cli_case
    thin = tmp_path / "in" / "thin.nii.gz"
    thin.parent.mkdir()
    sitk.WriteImage(sitk.ReadImage(str(ct))[:, :, :3], str(thin))
    out = tmp_path / "out"
    assert cli.main(["batch", str(thin), "--model", str(package), "--out", str(out), *FAST]) == 0
    first = json.loads((out / "batch.json").read_text())["cases"][0]
    assert first["status"] == "done" and first["warnings"]
    assert cli.main(["batch", str(thin), "--model", str(package), "--out", str(out), "--resume", *FAST]) == 0
    again = json.loads((out / "batch.json").read_text())["cases"][0]
    assert again["status"] == "skipped"
    assert again["warnings"] == first["warnings"]
    assert {key: again[key] for key in ("labels", "labels_found", "flags", "summary")} == {
        key: first[key] for key in ("labels", "labels_found", "flags", "summary")
    }


def test_a_rerun_over_a_glob_that_now_holds_the_batchs_own_output_leaves_that_output_out(cli_case, tmp_path, capsys):
    """``batch data/* --out data/out``, run again (``--resume``, after new scans came): the shell now lists data/out
    (before: the whole batch refused, "the folder .../out holds no case ... (its subfolders hold volume files: give
    them as cases, e.g. .../out/*/segmentation.seg.nrrd)": a hint to segment its own label maps; so for a folder of
    ``segment``'s results)."""
    _, package, ct = cli_case
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a", "b"):
        (data / f"{name}.nii.gz").write_bytes(ct.read_bytes())
    out = data / "out"
    options = ["--model", str(package), "--out", str(out), *FAST, "--resume"]
    assert cli.main(["batch", *map(str, sorted(data.iterdir())), *options]) == 0
    capsys.readouterr()
    assert cli.main(["batch", *map(str, sorted(data.iterdir())), *options]) == 0
    printed = capsys.readouterr()
    assert [case["status"] for case in json.loads((out / "batch.json").read_text())["cases"]] == ["skipped"] * 2
    assert f"left out {out}: it holds the results of a batch" in printed.err
    assert cli.main(["batch", str(out), *options]) == 2
    error = capsys.readouterr().err
    assert "the results of a batch" in error and "segmentation.seg.nrrd" not in error
    segmented = tmp_path / "segmented"  # segment's results, one folder per scan: no scans either
    assert (
        cli.main(["segment", str(data / "a.nii.gz"), "--model", str(package), "--out", str(segmented / "a"), *FAST])
        == 0
    )
    with pytest.raises(InputError) as refused:
        cases_from_paths([segmented])
    assert "segmentation.seg.nrrd" not in refused.value.hint


@pytest.mark.parametrize("name", ["../../escaped", "left/kidney", ".."])
def test_a_package_whose_label_name_is_a_path_is_refused_before_anything_is_written(cli_case, tmp_path, capsys, name):
    """A model package from elsewhere whose label is named ``../../escaped`` or ``left/kidney`` (``--probabilities``
    writes ``probabilities/<label name>.nrrd``; before: ``escaped.nrrd`` written beside the output folder, outside
    every place the user named, and left there when the run then failed on ``left/kidney``: "cannot write the output
    ... No such file or directory (choose another folder)", exit 2)."""
    _, package, ct = cli_case
    edited = tmp_path / "package"
    shutil.copytree(package, edited)
    metadata = json.loads((edited / "configs" / "metadata.json").read_text())
    metadata["tokenunet"]["labels"][0]["name"] = name
    (edited / "configs" / "metadata.json").write_text(json.dumps(metadata))
    place = tmp_path / "place"
    place.mkdir()
    arguments = ["segment", str(ct), "--model", str(edited), "--out", str(place / "out"), *FAST, "--probabilities"]
    assert cli.main(arguments) == 2
    assert "cannot name a file" in capsys.readouterr().err
    assert list(place.iterdir()) == [] and not (tmp_path / "escaped.nrrd").exists()


def test_a_folder_of_brats_case_folders_is_one_case_per_folder_for_a_multichannel_model(tmp_path, capsys):
    """BraTS 2021's layout: ``BraTS/BraTS_001/BraTS_001_t1.nii.gz``, ``_t1c``, ``_t2``, ``_flair``, one folder per case
    (before: "the folder BraTS holds no case ... (its subfolders hold volume files: give them as cases, e.g.
    BraTS/*/BraTS_001_flair.nii.gz)", a glob naming one file of one case, and given so every file was its own case,
    all failing "needs 4 input channel(s)"). For a multi-channel model each subfolder of volume files is one case,
    its files placed by the model's patterns as ``segment`` given them places them."""
    package = make_package(tmp_path, brain_config())
    folder = tmp_path / "BraTS"
    for case in (1, 2):
        for index, name in enumerate(("t1", "t1c", "t2", "flair")):
            write_volume(sequence(index, case - 1), folder / f"BraTS_{case:03d}" / f"BraTS_{case:03d}_{name}.nii.gz")
    out = tmp_path / "out"
    assert cli.main(["batch", str(folder), "--model", str(package), "--out", str(out), *FAST, "--no-heatmaps"]) == 0
    records = json.loads((out / "batch.json").read_text())["cases"]
    assert [(record["name"], record["status"], len(record["inputs"])) for record in records] == [
        ("BraTS_001", "done", 4),
        ("BraTS_002", "done", 4),
    ]
    alone = tmp_path / "alone"
    files = sorted(map(str, (folder / "BraTS_002").iterdir()))
    assert cli.main(["segment", *files, "--model", str(package), "--out", str(alone), *FAST, "--no-heatmaps"]) == 0
    labels = [
        sitk.GetArrayFromImage(sitk.ReadImage(str(place / "segmentation.seg.nrrd")))
        for place in (out / "BraTS_002", alone)
    ]
    assert (labels[0] == labels[1]).all()
    with pytest.raises(InputError) as refused:  # a one-channel model: no case there, and a glob of every file
        cases_from_paths([folder], model_inputs=["CT"])
    assert refused.value.hint.endswith(f"e.g. {folder / '*' / '*.nii.gz'}")


def test_a_dicom_folders_stamp_leaves_out_the_batch_json_of_a_batch_rooted_in_it(tmp_path):
    """``batch dicom/p1 --out dicom/p1``: the batch's root is the series folder itself, so its batch.json lies among
    the slices (before: part of the folder's stamp, rewritten after every case, so ``--resume`` ran the case again on
    every run). A batch.json of the user's (no batch's mark) still counts."""
    from TokenUNetSegmentLib.pipeline.batch_command import BATCH_MARK
    from TokenUNetSegmentLib.pipeline.result_key import input_stamp

    series = tmp_path / "SE1"
    write_dicom_series(series, dicom_array(slices=3))
    before = input_stamp(series)
    (series / "batch.json").write_text(json.dumps({BATCH_MARK: 1, "state": "running"}))
    assert input_stamp(series) == before
    (series / "batch.json").write_text(json.dumps({BATCH_MARK: 1, "state": "completed"}))
    assert input_stamp(series) == before
    (series / "batch.json").write_text(json.dumps({"mine": 1}))
    assert input_stamp(series) != before


def test_a_case_folder_whose_file_names_do_not_place_its_channels_is_refused_alone(tmp_path, capsys):
    """A multi-channel case folder is placed by the model's patterns only where they place every file one way only:
    ``scan1.nii.gz`` ... ``scan4.nii.gz`` would otherwise run in name order, as ``segment`` runs files whose names say
    nothing in the order the user typed them (an order no one chose: a wrong result with exit 0)."""
    package = make_package(tmp_path, brain_config())
    folder = tmp_path / "cases"
    for index in range(4):
        write_volume(sequence(index, 0), folder / "anon" / f"scan{index + 1}.nii.gz")
    for index, name in enumerate(("t1", "t1c", "t2", "flair")):
        write_volume(sequence(index, 1), folder / "named" / f"named_{name}.nii.gz")
    out = tmp_path / "out"
    assert cli.main(["batch", str(folder), "--model", str(package), "--out", str(out), *FAST, "--no-heatmaps"]) == 2
    records = json.loads((out / "batch.json").read_text())["cases"]
    assert [(record["name"], record["status"]) for record in records] == [("anon", "failed"), ("named", "done")]
    assert "scan1.nii.gz" in records[0]["error"]["message"] and "--datalist" in records[0]["error"]["hint"]
    assert not (out / "anon").exists()


def test_the_slices_of_one_dicom_series_given_one_by_one_are_one_case(tmp_path):
    """``batch dicom/p1/*`` (the shell lists the slices; ``find -name '*.dcm'`` likewise): ``segment`` given one slice
    reads its series, so every slice is that one case (before: refused, "two cases would both be written to
    .../out/p1_p1: .../p1/IM0001.dcm and .../p1/IM0002.dcm (rename one ...)"). Slices of two series are two cases."""
    for name in ("p1", "p2"):
        write_dicom_series(tmp_path / "dicom" / name, dicom_array(slices=3))
    slices = sorted((tmp_path / "dicom" / "p1").iterdir()) + sorted((tmp_path / "dicom" / "p2").iterdir())
    cases, notes = cases_from_paths(slices)
    assert [(case.name, case.inputs) for case in cases] == [
        ("p1", (str(tmp_path / "dicom" / "p1" / "IM0001.dcm"),)),
        ("p2", (str(tmp_path / "dicom" / "p2" / "IM0001.dcm"),)),
    ]
    assert any("3 files of one DICOM series" in note for note in notes)


def test_a_dicom_file_given_as_its_case_is_stamped_with_its_series_folder(tmp_path):
    """``batch p1/IM0001.dcm`` reads the whole series of that file (before: ``--resume``'s stamp held that one file,
    so after another slice of the series was replaced the case was skipped, its result that of the old series)."""
    from TokenUNetSegmentLib.pipeline.result_key import input_stamp

    series = tmp_path / "p1"
    write_dicom_series(series, dicom_array(slices=3))
    before = input_stamp(series / "IM0001.dcm")
    (series / "IM0003.dcm").write_bytes((series / "IM0003.dcm").read_bytes() + b"\0\0")
    assert input_stamp(series / "IM0001.dcm") != before
