"""The ``batch`` command: many cases with one model loaded once, each case's folder exactly as ``segment`` writes
it, batch.json, failures recorded and the batch going on, collisions and users' folders refused up front, cancel,
exit codes, datalists (multi-channel), folders of cases, typed progress events."""

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers.disks import LINUX_MOUNT, tmpfs
from helpers.packages import make_package
from helpers.processes import start_cli
from helpers.readers import dicom_array, write_dicom_series
from TokenUNetSegmentLib.pipeline import batch_command, cli, segment_command
from TokenUNetSegmentLib.pipeline.batch_cases import cases_from_paths
from TokenUNetSegmentLib.pipeline.errors import InputError
from TokenUNetSegmentLib.pipeline.outputs import read_outputs
from TokenUNetSegmentLib.pipeline.run_contract import CaseEvent, ErrorEvent, ProgressEvent, ResultEvent, decode_event

FAST = ["--device", "cpu", "--no-overview", "--progress", "none"]


def shifted_case(source: Path, path: Path, shift: int) -> Path:
    """The phantom CT without its first ``shift`` slices along i (another case: another grid, other labels)."""
    image = sitk.ReadImage(str(source))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image[shift:, :, :], str(path))
    return path


def truncated(source: Path, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(source.read_bytes()[:600])
    return path


@pytest.fixture(autouse=True)
def _same_threads(one_inference_thread):
    """Labels of a batch and of segment compared voxel for voxel: the same thread count in both."""


def batch(*arguments) -> int:
    return cli.main(["batch", *map(str, arguments)])


def labels_of(folder: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "segmentation.seg.nrrd")))


def files_of(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def summary(root: Path) -> dict:
    return json.loads((root / "batch.json").read_text())


def after_the_first_case(monkeypatch, action) -> None:
    """``action()`` once, as soon as batch.json records the first case done (what another program, a user or a
    signal does to the batch there)."""
    real = batch_command.Batch.save

    def save_then_act(self):
        real(self)
        if self.records[0]["status"] == "done" and not getattr(self, "acted", False):
            self.acted = True
            action()

    monkeypatch.setattr(batch_command.Batch, "save", save_then_act)


@pytest.fixture(scope="module")
def two_cases(cli_case, tmp_path_factory):
    """(package, [first, second] CT files with different contents)."""
    _, package, ct = cli_case
    folder = tmp_path_factory.mktemp("cases")
    return package, [shifted_case(ct, folder / "first.nii.gz", 0), shifted_case(ct, folder / "second.nii.gz", 9)]


def test_each_case_folder_is_what_segment_writes(two_cases, tmp_path, capsys):
    """Same files, voxel-identical labels, the same report (but for timings) as one ``segment`` per case."""
    package, cases = two_cases
    options = ["--device", "cpu", "--progress", "none"]
    assert batch(*cases, "--model", package, "--out", tmp_path / "batch", *options) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("[1/2] first: done") and printed[1].startswith("[2/2] second: done")
    assert printed[2].startswith("batch completed: 2 done of 2 cases")
    for case in cases:
        name = case.name.split(".")[0]
        alone = tmp_path / "alone" / name
        assert cli.main(["segment", str(case), "--model", str(package), "--out", str(alone), *options]) == 0
        mine = tmp_path / "batch" / name
        assert files_of(mine) == files_of(alone)
        np.testing.assert_array_equal(labels_of(mine), labels_of(alone))
        reports = [json.loads((folder / "report.json").read_text()) for folder in (mine, alone)]
        for report in reports:
            report.pop("timings_s", None)
        assert reports[0] == reports[1]
    first, second = (labels_of(tmp_path / "batch" / name) for name in ("first", "second"))
    assert not np.array_equal(first, second)  # two cases, not one written twice
    document = summary(tmp_path / "batch")
    assert document["state"] == "completed" and document["counts"]["done"] == 2
    assert document["model"]["id"] == "tiny-ct" and document["options"]["device"] == "cpu"
    record = document["cases"][0]
    assert record["inputs"] == [str(cases[0].resolve())] and record["status"] == "done"
    assert record["labels_found"] == len(record["labels"]) and record["seconds"] > 0 and "total" in record["timings"]
    assert record["files"]["segmentation"] == "segmentation.seg.nrrd"


def test_a_bad_case_in_the_middle_is_recorded_and_the_others_done(two_cases, tmp_path, capsys):
    package, (first, second) = two_cases
    bad = truncated(first, tmp_path / "in" / "damaged.nii.gz")
    out = tmp_path / "out"
    assert batch(first, bad, second, "--model", package, "--out", out, *FAST) == 2
    captured = capsys.readouterr()
    # segment's own message for that file
    with pytest.raises(InputError) as refused:
        cli_args = cli.parse_arguments(["segment", str(bad), "--model", str(package), "--out", str(tmp_path / "x")])
        segment_command.run_segment(cli_args)
    assert f"[2/3] damaged: failed: {refused.value.message}" in captured.out
    assert "error: 1 of 3 cases failed" in captured.err
    document = summary(out)
    assert [case["status"] for case in document["cases"]] == ["done", "failed", "done"]
    failure = document["cases"][1]["error"]
    assert failure["message"] == refused.value.message and failure["category"] == "user"
    assert failure["hint"] == refused.value.hint
    assert sorted(p.name for p in out.iterdir()) == ["batch.json", "first", "second"]  # nothing left of the bad one


def test_an_internal_error_in_a_case_exits_1_after_the_other_cases(two_cases, tmp_path, monkeypatch):
    package, cases = two_cases
    real = segment_command.segment_case

    def broken(case, *rest):
        if "first" in case.paths[0]:
            raise RuntimeError("a bug")
        return real(case, *rest)

    monkeypatch.setattr(segment_command, "segment_case", broken)
    assert batch(*cases, "--model", package, "--out", tmp_path / "out", *FAST) == 1
    document = summary(tmp_path / "out")
    assert [case["status"] for case in document["cases"]] == ["failed", "done"]
    assert document["cases"][0]["error"]["category"] == "internal"
    assert "RuntimeError: a bug" in document["cases"][0]["error"]["message"]
    assert not (tmp_path / "out" / "first").exists()


def test_cases_that_would_share_a_folder_are_refused_before_anything_is_written(two_cases, tmp_path, capsys):
    package, (first, _) = two_cases
    first = shifted_case(first, tmp_path / "a" / "same" / "first.nii.gz", 0)  # file and folder names alike
    again = shifted_case(first, tmp_path / "b" / "same" / "FIRST.nii.gz", 3)
    out = tmp_path / "out"
    assert batch(first, again, "--model", package, "--out", out, *FAST) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "would both be written to" in error and "distinct" in error
    assert not out.exists()


def test_a_users_folder_at_a_cases_place_is_refused_untouched_before_any_case_runs(two_cases, tmp_path, capsys):
    package, cases = two_cases
    out = tmp_path / "out"
    (out / "second").mkdir(parents=True)
    (out / "second" / "notes.txt").write_text("mine")
    assert batch(*cases, "--model", package, "--out", out, *FAST) == 2
    assert "TokenUNet did not write" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["second"]  # the first case did not run either
    assert [p.name for p in (out / "second").iterdir()] == ["notes.txt"]
    assert (out / "second" / "notes.txt").read_text() == "mine"


def test_a_file_of_the_users_named_batch_json_is_refused(two_cases, tmp_path, capsys):
    package, cases = two_cases
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "batch.json").write_text("{}")
    assert batch(cases[0], "--model", package, "--out", tmp_path / "out", *FAST) == 2
    assert "not an earlier output" in capsys.readouterr().err
    assert (tmp_path / "out" / "batch.json").read_text() == "{}"


def test_a_second_batch_replaces_earlier_results_and_resume_skips_finished_cases(two_cases, tmp_path, capsys):
    package, cases = two_cases
    out = tmp_path / "out"
    assert batch(*cases, "--model", package, "--out", out, *FAST) == 0
    (out / "first" / "mine.txt").write_text("kept")
    before = labels_of(out / "second")
    assert batch(*cases, "--model", package, "--out", out, *FAST) == 0  # replaced, the user's file kept
    assert (out / "first" / "mine.txt").read_text() == "kept"
    capsys.readouterr()
    (out / "second" / "segmentation.seg.nrrd").unlink()  # no longer a finished result
    assert batch(*cases, "--model", package, "--out", out, "--resume", *FAST) == 0
    assert "[1/2] first: skipped" in capsys.readouterr().out
    assert [case["status"] for case in summary(out)["cases"]] == ["skipped", "done"]
    np.testing.assert_array_equal(labels_of(out / "second"), before)


def test_a_cancel_between_cases_keeps_finished_cases_and_a_consistent_batch_json(two_cases, tmp_path, monkeypatch):
    package, (first, second) = two_cases
    third = shifted_case(first, tmp_path / "in" / "third.nii.gz", 5)
    cancel = threading.Event()
    after_the_first_case(monkeypatch, cancel.set)  # the first case is written, then a cancel request comes
    out = tmp_path / "out"
    args = cli.parse_arguments(
        ["batch", str(first), str(second), str(third), "--model", str(package), "--out", str(out), *FAST]
    )
    assert batch_command.run_batch(args, cancel) == 130
    document = summary(out)
    assert document["state"] == "cancelled"
    assert [case["status"] for case in document["cases"]] == ["done", "pending", "pending"]
    assert document["counts"] == {"done": 1, "failed": 0, "skipped": 0, "cancelled": 0, "pending": 2}
    assert sorted(p.name for p in out.iterdir()) == ["batch.json", "first"]  # no lock, no staging folder left
    assert labels_of(out / "first").any()


def test_a_cancel_during_a_case_drops_it(two_cases, tmp_path, monkeypatch):
    package, cases = two_cases
    cancel = threading.Event()
    real = segment_command.segment_case

    def cancelled_inside(case, volumes, package, folder, args, printer, progress, cancel_event):
        if "second" in case.paths[0]:
            cancel.set()
        return real(case, volumes, package, folder, args, printer, progress, cancel_event)

    monkeypatch.setattr(segment_command, "segment_case", cancelled_inside)
    out = tmp_path / "out"
    args = cli.parse_arguments(["batch", *map(str, cases), "--model", str(package), "--out", str(out), *FAST])
    assert batch_command.run_batch(args, cancel) == 130
    assert [case["status"] for case in summary(out)["cases"]] == ["done", "cancelled"]
    assert sorted(p.name for p in out.iterdir()) == ["batch.json", "first"]


@pytest.mark.slow
def test_sigterm_cancels_a_batch_process_with_exit_130(two_cases, tmp_path):
    package, cases = two_cases
    out = tmp_path / "out"
    folder = tmp_path / "many"
    for index in range(4):
        shifted_case(cases[0], folder / f"case{index}.nii.gz", index)
    process = start_cli("batch", folder, "--model", package, "--out", out, "--device", "cpu", "--progress", "json")
    for line in process.stderr:
        event = decode_event(line)
        if isinstance(event, CaseEvent) and event.status == "done":
            process.send_signal(signal.SIGTERM)
            break
    stdout, _ = process.communicate(timeout=120)
    assert process.returncode == 130, stdout
    document = summary(out)
    assert document["state"] == "cancelled" and document["cases"][0]["status"] == "done"
    assert {case["status"] for case in document["cases"][1:]} <= {"done", "cancelled", "pending"}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["batch.json", *(case["name"] for case in document["cases"] if case["status"] == "done")]
    )


def test_exit_codes_and_one_line_errors_for_the_batch_itself(two_cases, tmp_path, capsys):
    package, cases = two_cases
    out = tmp_path / "out"
    assert batch("--model", package, "--out", out) == 2  # no cases
    assert batch(tmp_path / "missing.nii.gz", "--model", package, "--out", out) == 2
    assert batch(cases[0], "--model", tmp_path / "no-package", "--out", out) == 2
    assert batch(cases[0], "--section", "testing", "--model", package, "--out", out) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 4 and all(line.startswith("error: ") for line in errors)
    assert "no cases" in errors[0] and "missing.nii.gz does not exist" in errors[1] and "--datalist" in errors[3]
    assert not out.exists()


def test_a_root_that_holds_another_commands_result_is_refused(two_cases, tmp_path, capsys):
    """``batch ... --out result`` where ``result`` is a ``segment`` (or ``cka``, ``robustness``) result (found by
    hostile) (before: batch.json and the case folders written into it, unlisted in its manifest: a later ``segment``
    there carried them into its result as files of the user's)."""
    from TokenUNetSegmentLib.pipeline.output_folder import OutputFolder

    package, cases = two_cases
    for command, what in (("segment", "a segmentation"), ("cka", "a CKA comparison")):
        result = tmp_path / command
        folder = OutputFolder(result, command, reserved=("report.json",))
        with folder:
            (folder.staging / "report.json").write_text("{}")
            folder.commit()
        before = sorted(p.name for p in result.iterdir())
        assert batch(cases[0], "--model", package, "--out", result) == 2
        err = capsys.readouterr().err
        assert f"the output root {result} holds {what}" in err and err.count("\n") == 1, err
        assert sorted(p.name for p in result.iterdir()) == before


def test_a_datalist_of_multichannel_cases(tmp_path, capsys):
    """A tiny 4-channel MR package; the datalist's 'testing' entries list each case's channels (labels ignored)."""
    from helpers.packages import physical_ball, tiny_config
    from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing, image_from_array

    config = tiny_config("mr-tiny", in_channels=4, labels=2, roi=(16, 16, 16), intensity={"method": "zscore"})
    for entry, name in zip(config["inputs"], ("T1", "T1c", "T2", "FLAIR"), strict=True):
        entry.update(name=name, modality="MR", patterns=[f"*_{name.lower()}.*"])
    package = make_package(tmp_path, config)
    affine = affine_from_spacing((2.0, 2.0, 2.0), origin=(-30, -30, -20))
    entries = []
    for case, radius in (("one", 10.0), ("two", 13.0)):
        files = []
        for index, name in enumerate(("t1", "t1c", "t2", "flair")):
            image = physical_ball(
                (30, 30, 24), affine, (2.0, -5.0, 10.0), radius, value=300 + 200 * index, background=0
            )
            path = tmp_path / "data" / case / f"{case}_{name}.nii.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(image_from_array(image.astype(np.int16), affine), str(path))
            files.append(str(path.relative_to(tmp_path / "data")))
        entries.append({"image": files, "label": "not/read.nii.gz"})
    datalist = tmp_path / "data" / "datalist.json"
    datalist.write_text(json.dumps({"training": entries[:1], "testing": entries}))
    out = tmp_path / "out"
    options = ["--model", package, "--out", out, *FAST, "--no-heatmaps"]
    assert batch("--datalist", datalist, *options) == 2  # two lists: which one?
    assert "has several lists of cases: training, testing" in capsys.readouterr().err
    assert batch("--datalist", datalist, "--section", "testing", *options) == 0
    document = summary(out)
    assert [case["name"] for case in document["cases"]] == ["one", "two"]  # what the channel files share
    for case, entry in zip(document["cases"], entries, strict=True):
        assert case["inputs"] == [str(tmp_path / "data" / file) for file in entry["image"]]
        alone = tmp_path / "alone" / case["name"]
        segment_options = [*FAST, "--no-heatmaps", "--model", str(package), "--out", str(alone)]
        assert cli.main(["segment", *case["inputs"], *segment_options]) == 0
        np.testing.assert_array_equal(labels_of(out / case["name"]), labels_of(alone))


def test_a_datalist_entry_of_one_4d_image_with_its_channels_as_its_3d_files(tmp_path, capsys):
    """An MSD-style entry: one 4D image, its volumes named by the entry's "channels" (FLAIR first), segmented as its
    four 3D files in the package's order are; a wrong count is that case's failure, in the datalist's words."""
    from helpers.packages import physical_ball, tiny_config
    from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing, image_from_array

    sequences = ("T1", "T1c", "T2", "FLAIR")
    config = tiny_config("mr-4d", in_channels=4, labels=2, roi=(16, 16, 16), intensity={"method": "zscore"})
    for entry, name in zip(config["inputs"], sequences, strict=True):
        entry.update(name=name, modality="MR", patterns=[f"*_{name.lower()}.*"])
    package = make_package(tmp_path, config)
    affine = affine_from_spacing((2.0, 2.0, 2.5), origin=(-14.0, 12.0, -20.0))
    images = {}
    for index, (name, centre) in enumerate(
        zip(sequences, ((-2, 24, -2), (4, 26, -4), (-4, 20, 2), (-6, 28, 0)), strict=True)
    ):
        array = physical_ball((16, 16, 16), affine, np.array(centre, float), 6.0, value=300 + 100 * index, background=0)
        images[name] = image_from_array(array.astype(np.int16), affine)
        sitk.WriteImage(images[name], str(tmp_path / f"case_{name.lower()}.nii.gz"))
    sitk.WriteImage(
        sitk.JoinSeries([images[name] for name in ("FLAIR", "T1", "T1c", "T2")]), str(tmp_path / "BRATS_001.nii.gz")
    )
    entries = [
        {"image": "BRATS_001.nii.gz", "channels": ["FLAIR", "T1w", "t1gd", "T2w"]},
        {"image": "BRATS_001.nii.gz", "channels": ["FLAIR", "T1w", "t1gd"], "name": "short"},
    ]
    (tmp_path / "list.json").write_text(json.dumps({"testing": entries}))
    out = tmp_path / "out"
    assert batch("--datalist", tmp_path / "list.json", "--model", package, "--out", out, *FAST, "--no-heatmaps") == 2
    assert "the datalist's 'channels'" in capsys.readouterr().out
    document = summary(out)
    assert [(case["name"], case["status"]) for case in document["cases"]] == [
        ("BRATS_001", "done"),
        ("short", "failed"),
    ]
    files = [str(tmp_path / f"case_{name.lower()}.nii.gz") for name in sequences]
    alone = tmp_path / "alone"
    assert cli.main(["segment", *files, "--model", str(package), "--out", str(alone), *FAST, "--no-heatmaps"]) == 0
    np.testing.assert_array_equal(labels_of(out / "BRATS_001"), labels_of(alone))


def test_a_datalist_entry_is_named_by_what_its_channel_files_share(tmp_path):
    from TokenUNetSegmentLib.pipeline.batch_cases import cases_from_datalist

    groups = {
        "BraTS2021_00001": ["BraTS2021_00001_t1.nii.gz", "BraTS2021_00001_t1ce.nii.gz", "BraTS2021_00001_flair.nii.gz"],
        "la_007": ["la_007_0000.nii.gz", "la_007_0001.nii.gz"],  # nnU-Net's channel suffixes
        "x": ["x.nii.gz"],
        "ab": ["ab.nii.gz", "abc.nii.gz"],  # one name is the other's start
        "t1": ["t1.nii.gz", "flair.nii.gz"],  # nothing shared: the first file's
    }
    for files in groups.values():
        for file in files:
            (tmp_path / file).write_bytes(b"")
    entries = [{"image": files} for files in groups.values()] + [{"image": "x.nii.gz", "name": "named"}]
    (tmp_path / "list.json").write_text(json.dumps({"validation": entries}))
    cases = cases_from_datalist(tmp_path / "list.json")
    assert [case.name for case in cases] == [*groups, "named"]
    assert cases[1].inputs == tuple(str(tmp_path / file) for file in groups["la_007"])


def test_a_folder_of_cases_holds_volume_files_and_dicom_series_subfolders(tmp_path):
    folder = tmp_path / "cases"
    write_dicom_series(folder / "patient_b" / "series1", dicom_array())  # DICOM below a subfolder (a CD export)
    write_dicom_series(folder / "patient_c", dicom_array())
    for name in ("a.nii.gz", "d.nrrd", "e.mha"):
        sitk.WriteImage(sitk.Image(4, 4, 4, sitk.sitkInt16), str(folder / name))
    (folder / "notes.txt").write_text("not a case")
    (folder / "empty").mkdir()
    cases, notes = cases_from_paths([folder])
    assert [case.name for case in cases] == ["a", "d", "e", "patient_b", "patient_c"]
    assert cases[3].inputs == (str((folder / "patient_b").resolve()),)
    assert notes == [f"{folder}: left out 2 entries that hold no case (empty, notes.txt)"]
    # a folder that holds DICOM files itself is one case; so is a volume file given alone
    series, _ = cases_from_paths([folder / "patient_c", folder / "a.nii.gz"])
    assert [(case.name, case.inputs) for case in series] == [
        ("patient_c", (str(folder / "patient_c"),)),
        ("a", (str(folder / "a.nii.gz"),)),
    ]
    with pytest.raises(InputError, match="holds no case"):
        cases_from_paths([folder / "empty"])


def test_volume_files_beside_dicom_files_are_named_as_left_out(tmp_path):
    """A folder that holds DICOM files itself is one series; before, the volume files beside them were dropped
    without a word (a folder of cases with one stray .dcm became one failed case)."""
    folder = tmp_path / "mixed"
    write_dicom_series(folder, dicom_array())
    for name in ("a.nii.gz", "b.nrrd"):
        sitk.WriteImage(sitk.Image(4, 4, 4, sitk.sitkInt16), str(folder / name))
    cases, notes = cases_from_paths([folder])
    assert [case.name for case in cases] == ["mixed"]
    assert notes == [
        f"{folder}: holds DICOM files, so it is one DICOM series; left out the volume files in it (a.nii.gz, b.nrrd): "
        "give them as cases of their own"
    ]
    assert cases_from_paths([tmp_path / "mixed"])[0] == cases and cases_from_paths([folder / "a.nii.gz"])[1] == []


def test_a_folder_of_dicom_and_nifti_cases_end_to_end(cli_case, tmp_path):
    _, package, ct = cli_case
    folder = tmp_path / "cases"
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(ct)))  # (k, j, i)
    write_dicom_series(folder / "dicom_case", array, spacing=(2.0, 2.0, 3.0))
    shifted_case(ct, folder / "nifti_case.nii.gz", 4)
    out = tmp_path / "out"
    assert batch(folder, "--model", package, "--out", out, *FAST) == 0
    document = summary(out)
    assert [(case["name"], case["status"]) for case in document["cases"]] == [
        ("dicom_case", "done"),
        ("nifti_case", "done"),
    ]
    alone = tmp_path / "alone"
    assert cli.main(["segment", str(folder / "dicom_case"), "--model", str(package), "--out", str(alone), *FAST]) == 0
    np.testing.assert_array_equal(labels_of(out / "dicom_case"), labels_of(alone))


def test_json_progress_names_each_case_and_ends_with_a_result(two_cases, tmp_path, capsys):
    package, cases = two_cases
    bad = truncated(cases[0], tmp_path / "in" / "bad.nii.gz")
    options = ["--device", "cpu", "--no-overview", "--progress", "json"]
    out = tmp_path / "out"
    assert batch(cases[0], bad, "--model", package, "--out", out, *options) == 2
    events = [decode_event(line) for line in capsys.readouterr().err.splitlines()]
    assert None not in events
    steps = [(e.index, e.status) for e in events if isinstance(e, CaseEvent)]
    assert steps == [(1, "started"), (1, "done"), (2, "started"), (2, "failed")]
    failed = [e for e in events if isinstance(e, CaseEvent) and e.status == "failed"][0]
    assert failed.category == "user" and "truncated" in failed.message and failed.count == 2
    fractions = [e.fraction for e in events if isinstance(e, ProgressEvent)]
    assert fractions == sorted(fractions) and 0.0 <= fractions[0] and fractions[-1] <= 1.0
    started = events.index(next(e for e in events if isinstance(e, CaseEvent) and e.index == 2))
    assert all(e.fraction >= 0.5 for e in events[started:] if isinstance(e, ProgressEvent))
    assert isinstance(events[-1], ErrorEvent) and events[-1].category == "user" and "1 of 2" in events[-1].message
    assert batch(cases[0], "--model", package, "--out", tmp_path / "ok", *options) == 0
    events = [decode_event(line) for line in capsys.readouterr().err.splitlines()]
    assert isinstance(events[-1], ResultEvent) and events[-1].files["batch"] == "batch.json"
    assert events[-1].folder == str((tmp_path / "ok").resolve())


def test_the_model_is_loaded_once(two_cases, tmp_path, monkeypatch):
    package, cases = two_cases
    loads = []
    real = segment_command.load_package_at
    monkeypatch.setattr(segment_command, "load_package_at", lambda path: (loads.append(path), real(path))[1])
    assert batch(*cases, "--model", package, "--out", tmp_path / "out", *FAST) == 0
    assert len(loads) == 1


def test_resume_runs_a_case_again_when_anything_that_shapes_its_outputs_changed(two_cases, tmp_path, capsys):
    """--resume skips a case only when its earlier result came from the same weights, the same options that shape
    the outputs and the same input files (size and time): a result without probability maps is no result of a run
    that asks for them (before: skipped, as only the model's id and version and the input paths were compared)."""
    from helpers.packages import tiny_config

    package, (first, _) = two_cases
    case = tmp_path / "in" / "case.nii.gz"
    case.parent.mkdir()
    case.write_bytes(first.read_bytes())
    out = tmp_path / "out"

    def status(*options) -> str:
        capsys.readouterr()
        assert batch(case, "--model", package, "--out", out, "--resume", *FAST, *options) == 0
        return summary(out)["cases"][0]["status"]

    assert status() == "done"
    done = summary(out)["cases"][0]
    assert status() == "skipped"
    skipped = summary(out)["cases"][0]  # what the earlier result found, from its report.json
    assert [skipped[key] for key in ("labels_found", "labels", "flags")] == [
        done[key] for key in ("labels_found", "labels", "flags")
    ]
    assert status("--probabilities") == "done" and (out / "case" / "probabilities").is_dir()
    assert status("--probabilities") == "skipped"
    changes = (["--largest-component"], ["--smooth"], ["--overlap", "0.5"], ["--tta"], ["--attention-grid", "input"])
    for changed in changes:
        assert status("--probabilities", *changed) == "done", changed
    assert status("--probabilities", "--attention-grid", "input") == "skipped"
    made = json.loads((out / "case" / "report.json").read_text())["made_from"]
    assert "tta" not in made["options"]  # results made before --tta existed keep their record
    assert status("--probabilities", "--attention-grid", "input", "--device", "cpu", "--batch-size", "3") == "skipped"
    case.write_bytes(shifted_case(first, tmp_path / "other.nii.gz", 2).read_bytes())  # same name, new scan
    assert status("--probabilities", "--attention-grid", "input") == "done"
    retrained = make_package(tmp_path / "retrained", tiny_config(roi=(32, 32, 32), spacing=(3.0, 3.0, 3.0), crop=True))
    capsys.readouterr()
    assert batch(case, "--model", retrained, "--out", out, "--resume", *FAST, "--probabilities") == 0
    assert summary(out)["cases"][0]["status"] == "done"  # same id and version, other weights
    assert "[1/1] case: done" in capsys.readouterr().out


def test_a_second_batch_on_a_root_in_use_is_refused_and_leaves_no_folder_it_made(
    two_cases, tmp_path, monkeypatch, capsys
):
    from TokenUNetSegmentLib.pipeline.errors import OutputError
    from TokenUNetSegmentLib.pipeline.locks import DestinationLock

    package, cases = two_cases
    out = tmp_path / "out"
    assert batch(cases[0], "--model", package, "--out", out, *FAST) == 0
    before = summary(out)
    with DestinationLock(out / "batch.json", "batch"):  # a batch running on this root
        assert batch(*cases, "--model", package, "--out", out, *FAST) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "in use by another TokenUNet run (batch, pid" in error
    assert summary(out) == before and sorted(p.name for p in out.iterdir()) == ["batch.json", "first"]

    def refused(self):
        raise OutputError("in use")

    monkeypatch.setattr(DestinationLock, "acquire", refused)
    assert batch(cases[0], "--model", package, "--out", tmp_path / "new" / "root", *FAST) == 2
    assert not (tmp_path / "new").exists()  # before: the root (and its parents) made for the lock stayed


def test_a_segment_into_a_case_folder_of_a_running_batch_is_told_the_batch_holds_it(
    two_cases, tmp_path, monkeypatch, capsys
):
    """While a batch writes a case, a ``segment --out ROOT/case`` is refused naming the batch (found by hostile)
    (before: "in use by another TokenUNet run (segment, pid N)", N the batch's pid)."""
    package, (first, second) = two_cases
    out = tmp_path / "out"
    real, told = segment_command.segment_case, []

    def segment_meanwhile(case, *rest):
        capsys.readouterr()
        code = cli.main(["segment", str(second), "--model", str(package), "--out", str(out / "first"), *FAST])
        told.append((code, capsys.readouterr().err.strip()))
        return real(case, *rest)

    monkeypatch.setattr(segment_command, "segment_case", segment_meanwhile)
    assert batch(first, "--model", package, "--out", out, *FAST) == 0
    [(code, error)] = told
    assert code == 2 and error.count("\n") == 0, error
    assert f"first is in use by another TokenUNet run (batch, pid {os.getpid()}" in error, error


def test_links_in_the_root_to_elsewhere_are_refused_before_any_case_runs(two_cases, tmp_path, capsys):
    """ROOT/batch.json or a case's folder that is a symbolic link would have the batch write outside the root the
    user named (before: written through, batch.json's lock and temporary file beside the link's target)."""
    package, cases = two_cases
    elsewhere = tmp_path / "elsewhere"
    assert batch(*cases, "--model", package, "--out", elsewhere, *FAST) == 0
    kept = {path: path.read_bytes() for path in elsewhere.rglob("*") if path.is_file()}
    for link, target in (("batch.json", elsewhere / "batch.json"), ("second", elsewhere / "second")):
        out = tmp_path / f"out-{link}"
        out.mkdir()
        (out / link).symlink_to(target)
        assert batch(*cases, "--model", package, "--out", out, *FAST) == 2
        error = capsys.readouterr().err.strip()
        assert error.count("\n") == 0 and f"{out.name}/{link} is a link" in error and "--out" in error, error
        assert [p.name for p in out.iterdir()] == [link]
    assert {path: path.read_bytes() for path in elsewhere.rglob("*") if path.is_file()} == kept


def test_case_names_a_file_system_cannot_hold_apart_or_at_all_are_refused_up_front(two_cases, tmp_path, capsys):
    """A datalist 'name' over 255 bytes (before: each such case 'internal error: OSError: File name too long', exit
    1), names equal but for Unicode normalisation (one folder on macOS; before: two), a file given twice (before:
    'rename one')."""
    package, (first, second) = two_cases
    lists = {
        "long": [{"image": str(first), "name": "é" * 128}],
        "composed": [{"image": str(first), "name": "Caf\u00e9"}, {"image": str(second), "name": "Cafe\u0301"}],
        "twice": [{"image": str(first)}, {"image": str(first), "name": "again"}],
    }
    expected = {
        "long": "is 256 bytes long",
        "composed": "would both be written to",
        "twice": f"{first.name} is given twice",
    }
    for name, entries in lists.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({"testing": entries}))
        out = tmp_path / name
        assert batch("--datalist", tmp_path / f"{name}.json", "--model", package, "--out", out, *FAST) == 2, name
        error = capsys.readouterr().err.strip()
        assert error.count("\n") == 0 and expected[name] in error, error
        assert not out.exists()
    assert batch(first, first, "--model", package, "--out", tmp_path / "out", *FAST) == 2
    assert f"{first.name} is given twice" in capsys.readouterr().err


def test_every_missing_file_of_a_datalist_is_named_in_one_refusal(tmp_path):
    """A datalist whose entries name missing files is refused before any case runs (as a missing CASE is), with the
    count and the first of them (before: the first only, so a user fixed them one run at a time)."""
    from TokenUNetSegmentLib.pipeline.batch_cases import cases_from_datalist

    (tmp_path / "here.nii.gz").write_bytes(b"")
    entries = [{"image": "here.nii.gz"}, {"image": "gone1.nii.gz"}, {"image": ["here.nii.gz", "gone2.nii.gz"]}]
    (tmp_path / "list.json").write_text(json.dumps({"testing": entries}))
    with pytest.raises(InputError) as refused:
        cases_from_datalist(tmp_path / "list.json")
    message = refused.value.message
    assert "2 of 3 entries" in message and "testing[1]" in message and "gone1.nii.gz" in message
    assert "testing[2]" in message and "gone2.nii.gz" in message


def test_a_datalist_name_that_is_no_text_or_empty_is_refused_naming_its_entry(two_cases, tmp_path, capsys):
    """A datalist entry's "name" that is a number or empty (found by hostile) is refused before any case runs, naming
    the entry (before: ignored without a word, the case named by its file)."""
    package, (first, second) = two_cases
    for name, shown in ((5, "5"), ("", '""'), (["a"], '["a"]')):
        entries = [{"image": str(first), "name": "kept"}, {"image": str(second), "name": name}]
        (tmp_path / "list.json").write_text(json.dumps({"testing": entries}))
        out = tmp_path / "out"
        assert batch("--datalist", tmp_path / "list.json", "--model", package, "--out", out, *FAST) == 2
        error = capsys.readouterr().err.strip()
        assert error.count("\n") == 0 and error.startswith("error: list.json testing[1]: 'name'"), error
        assert f"got {shown}" in error and not out.exists()


def test_a_cases_warnings_name_it_and_stay_with_it_in_batch_json(two_cases, tmp_path, monkeypatch, capsys):
    """Before: a warning line named no case (only its place before the case's line told which), and a failed case's
    warnings were not kept in batch.json."""
    package, cases = two_cases
    real = segment_command.segment_case

    def warned(case, volumes, package, folder, args, printer, progress, cancel):
        printer.warning(f"odd scan {Path(case.paths[0]).name}")
        if "second" in case.paths[0]:
            raise InputError("the second case is broken")
        return real(case, volumes, package, folder, args, printer, progress, cancel)

    monkeypatch.setattr(segment_command, "segment_case", warned)
    out = tmp_path / "out"
    assert batch(*cases, "--model", package, "--out", out, *FAST) == 2
    assert capsys.readouterr().err.splitlines()[:2] == [
        "warning: first: odd scan first.nii.gz",
        "warning: second: odd scan second.nii.gz",
    ]
    records = summary(out)["cases"]
    assert records[0]["warnings"] == ["odd scan first.nii.gz"]
    assert records[1]["status"] == "failed" and records[1]["warnings"] == ["odd scan second.nii.gz"]


def test_a_folder_whose_dicom_subfolders_hold_one_study_is_one_case(tmp_path):
    """A CD or PACS export of one patient's study (its series in subfolders, no DICOM on top) is one case, read as
    segment reads that folder, with a note that says so (before: one case per series, each segmented apart, a CT model
    run on the scout and the MR); subfolders of several studies stay a folder of cases."""
    export = tmp_path / "patient7"
    write_dicom_series(export / "DICOM" / "SE1", dicom_array(), series="1.2.3.1", description="abdomen")
    write_dicom_series(export / "DICOM" / "SE2", dicom_array(slices=3), series="1.2.3.2", description="scout")
    write_dicom_series(export / "SE3", dicom_array(slices=4), series="1.2.3.3", description="other")
    (export / "README.TXT").write_text("viewer")
    cases, notes = cases_from_paths([export])
    assert [(case.name, case.inputs) for case in cases] == [("patient7", (str(export),))]
    assert len(notes) == 1 and "one study" in notes[0] and "one case" in notes[0] and "give the subfolders" in notes[0]
    scans = tmp_path / "scans"
    for index in (1, 2):  # two patients (two studies): two cases
        study = {"0020|000d": f"1.2.9.{index}"}
        write_dicom_series(scans / f"p{index}" / "SE1", dicom_array(), series=f"1.2.9.{index}.1", extra_tags=study)
    cases, notes = cases_from_paths([scans])
    assert [case.name for case in cases] == ["p1", "p2"] and notes == []


def test_batch_json_is_rewritten_after_each_case_without_encoding_every_case_again(tmp_path, monkeypatch):
    """Each save encodes only the cases that changed: a finished case's text is kept (before: every case encoded
    again after each one, 25 ms a save at 1000 cases, 25 s over the batch; quadratic in the number of cases). The
    file is still exactly ``json.dumps(document, indent=2)``."""
    import types

    from TokenUNetSegmentLib.pipeline.batch_cases import BatchCase

    count = 300
    cases = [BatchCase(f"case{i}", (f"/in/case{i}.nii.gz",), f"case{i}.nii.gz") for i in range(count)]
    args = cli.parse_arguments(["batch", "x", "--out", str(tmp_path), "--device", "cpu"])
    metadata = types.SimpleNamespace(id="m", version="1")
    run = batch_command.Batch(args, cases, tmp_path, tmp_path / "batch.json", metadata, "p", None, threading.Event())
    encoded = []
    real = json.dumps

    def counting(value, *rest, **options):
        encoded.append(sum(1 for record in run.records if record is value) or len(value.get("cases", ())))
        return real(value, *rest, **options)

    monkeypatch.setattr(json, "dumps", counting)
    for index, record in enumerate(run.records):
        record.update(status="done" if index % 3 else "failed", labels=["liver", "spleen"], seconds=1.5)
        run.save()
        if index in (0, count // 2, count - 1):
            assert (tmp_path / "batch.json").read_text() == real(run.document, indent=2) + "\n"
    assert sum(encoded) < 4 * count  # each case a few times, not count times


@pytest.mark.skipif(not LINUX_MOUNT, reason="Linux tmpfs")
def test_a_disk_that_fills_in_the_middle_of_a_batch(two_cases, tmp_path, monkeypatch, capsys):
    """A real 3 MiB tmpfs that another program fills after the first case: the next cases fail (not enough free
    space, checked before they run), and when batch.json itself cannot be written the batch stops in one line that
    says how far batch.json goes (before: it stopped with the disk's message only, batch.json 'running')."""
    package, (first, second) = two_cases
    third = shifted_case(first, tmp_path / "in" / "third.nii.gz", 5)
    with tmpfs(tmp_path / "disk", size="3m") as disk:
        out = disk / "out"

        def fill() -> None:
            with open(disk / "filler", "wb") as stream:  # another program fills the disk
                with contextlib.suppress(OSError):
                    while True:
                        stream.write(b"\0" * 65536)
                        stream.flush()

        after_the_first_case(monkeypatch, fill)
        assert batch(first, second, third, "--model", package, "--out", out, *FAST, "--no-heatmaps") == 2
        captured = capsys.readouterr()
        error = captured.err.strip().splitlines()[-1]
        assert error.startswith("error: ") and "full" in error and "batch.json" in error, captured
        document = summary(out)
        assert document["cases"][0]["status"] == "done" and document["state"] == "failed", document
        assert sorted(p.name for p in out.iterdir()) == ["batch.json", "first"]  # no lock, no staging folder
        assert labels_of(out / "first").any()


def test_ctrl_c_as_the_batch_takes_its_root_leaves_neither_root_nor_lock(two_cases, tmp_path, monkeypatch, capsys):
    """Ctrl-C (or SIGTERM) after the lock is taken, before the first batch.json is written: exit 130, no folder made
    for the batch and no lock left (before: the root and the lock file stayed)."""
    package, cases = two_cases

    def interrupted(event):
        raise KeyboardInterrupt

    monkeypatch.setattr(segment_command, "install_cancel_handlers", interrupted)
    assert batch(*cases, "--model", package, "--out", tmp_path / "new" / "out", *FAST) == 130
    assert "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_folders_stamp_leaves_out_what_tokenunet_writes_inside_it(tmp_path):
    """A DICOM folder's stamp (for --resume) changes with its slices, not with a batch or segment output written
    inside it (before: --out inside the case's folder made --resume run that case again every time)."""
    from TokenUNetSegmentLib.pipeline.result_key import input_stamp

    series = tmp_path / "SE1"
    write_dicom_series(series, dicom_array(slices=3))
    before = input_stamp(series)
    (series / "out" / "SE1").mkdir(parents=True)
    (series / "out" / "batch.json").write_text('{"tokenunet_batch": 1}')  # a batch's: its mark
    (series / "out" / "SE1" / ".tokenunet-manifest.json").write_text("{}")
    (series / "out" / "SE1" / "report.json").write_text("{}")
    (series / "out" / ".SE1.tokenunet-lock").write_text("{}")
    (series / "seg").mkdir()
    (series / "seg" / ".tokenunet-manifest.json").write_text("{}")
    assert input_stamp(series) == before
    (series / "IM0001.dcm").write_bytes((series / "IM0001.dcm").read_bytes() + b"\0\0")
    assert input_stamp(series) != before


def test_files_of_one_name_in_one_folder_per_case_are_named_by_their_folders(tmp_path):
    """TotalSegmentator's layout (``s0001/ct.nii.gz``, ``s0002/ct.nii.gz``): before, refused as two cases written to
    one folder; the folder given alone said only that it holds no case."""
    root = tmp_path / "dataset"
    for case in ("s0001", "s0002"):
        (root / case / "segmentations").mkdir(parents=True)
        sitk.WriteImage(sitk.Image(4, 4, 4, sitk.sitkInt16), str(root / case / "ct.nii.gz"))
        sitk.WriteImage(sitk.Image(4, 4, 4, sitk.sitkUInt8), str(root / case / "segmentations" / "liver.nii.gz"))
    sitk.WriteImage(sitk.Image(4, 4, 4, sitk.sitkInt16), str(tmp_path / "ct.nii.gz"))
    cases, _ = cases_from_paths([root / "s0001" / "ct.nii.gz", root / "s0002" / "ct.nii.gz", tmp_path / "ct.nii.gz"])
    assert [case.name for case in cases] == ["s0001", "s0002", tmp_path.name]
    assert cases[1].inputs == (str((root / "s0002" / "ct.nii.gz").resolve()),)
    with pytest.raises(InputError, match="holds no case") as refused:
        cases_from_paths([root])
    assert (
        refused.value.hint == f"its subfolders hold volume files: give them as cases, e.g. {root / '*' / 'ct.nii.gz'}"
    )


def replaced_keeping_size_and_time(path: Path, data: bytes, in_place: bool) -> None:
    """``path``'s content replaced by ``data`` of the same size, its modification time put back: ``cp -p`` over it
    (in place), or ``rsync -t`` and a restored backup (a new file renamed over it)."""
    assert len(data) == path.stat().st_size
    before = path.stat()
    time.sleep(0.01)  # another clock reading than the file's
    if in_place:
        path.write_bytes(data)
    else:
        fresh = path.with_name(".rsync-tmp")
        fresh.write_bytes(data)
        os.replace(fresh, path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_a_batch_with_test_time_augmentation_says_so_and_resumes_only_its_own_results(two_cases, tmp_path, capsys):
    """batch.json's options and each case's report.json say that --tta was used (before: neither did, but for the
    report's resume record); --resume skips a --tta result for --tta only, and a plain one for a plain run only."""
    package, (first, _) = two_cases
    out = tmp_path / "out"

    def status(*options) -> str:
        capsys.readouterr()
        assert batch(first, "--model", package, "--out", out, "--resume", "--no-heatmaps", *FAST, *options) == 0
        return summary(out)["cases"][0]["status"]

    assert status("--tta") == "done"
    assert summary(out)["options"]["tta"] is True
    assert json.loads((out / "first" / "report.json").read_text())["test_time_augmentation"] is True
    assert read_outputs(out / "first").test_time_augmentation
    assert status("--tta") == "skipped"
    assert status() == "done" and summary(out)["options"]["tta"] is False
    assert "test_time_augmentation" not in json.loads((out / "first" / "report.json").read_text())
    assert status() == "skipped"
    assert status("--tta") == "done"


def test_resume_runs_a_case_again_whose_input_was_replaced_with_its_size_and_time_kept(two_cases, tmp_path, capsys):
    """Before: --resume compared each input file's size and modification time only, so a scan replaced by another of
    the same size with its time kept (``cp -p``, ``rsync -t``, a restored backup) was skipped as done, its result that
    of the old scan. Now the stamp has the file's change time and inode too (the system sets them; copies cannot keep
    them): the case runs again. A file left alone is still skipped."""
    package, (first, _) = two_cases
    cases = tmp_path / "in"
    cases.mkdir()
    kept, copied, synced = (cases / f"{name}.nii.gz" for name in ("kept", "copied", "synced"))
    for path in (kept, copied, synced):
        path.write_bytes(first.read_bytes())
    series = cases / "series"
    write_dicom_series(series, dicom_array(slices=3))
    out = tmp_path / "out"

    def statuses() -> dict:
        capsys.readouterr()
        assert batch(kept, copied, synced, series, "--model", package, "--out", out, "--resume", *FAST) in (0, 2)
        return {case["name"]: case["status"] for case in summary(out)["cases"]}

    first_run = statuses()
    assert statuses() == dict.fromkeys(first_run, "skipped")
    data = bytearray(first.read_bytes())
    data[-16] ^= 0xFF  # another scan's bytes, the same size
    replaced_keeping_size_and_time(copied, bytes(data), in_place=True)
    replaced_keeping_size_and_time(synced, bytes(data), in_place=False)
    slice_file = sorted(series.iterdir())[1]
    replaced_keeping_size_and_time(slice_file, bytes(reversed(slice_file.read_bytes())), in_place=True)
    again = statuses()
    assert again["kept"] == "skipped"
    assert again["copied"] != "skipped" and again["synced"] != "skipped" and again["series"] != "skipped", again


def test_a_batch_whose_every_case_failed_says_so_and_some_failed_is_told_apart(two_cases, tmp_path, capsys):
    """Before: a batch in which every case failed wrote ``state: completed`` and printed "batch completed: 2 failed of
    2 cases", as a batch with one failure among successes did: read by a script or a user, a success. Now: every case
    failed is ``state: failed`` and "batch failed: all 2 cases failed", some failed is ``completed_with_failures`` and
    "batch completed with failures: ...", all done stays ``completed``; the exit codes stay 2 (or 1) and 0."""
    package, (first, second) = two_cases
    bad = [truncated(first, tmp_path / "in" / f"damaged{index}.nii.gz") for index in (1, 2)]
    runs = {"all failed": bad, "some failed": [first, bad[0]], "all done": [first, second]}
    seen = {}
    for name, cases in runs.items():
        out = tmp_path / name.replace(" ", "-")
        capsys.readouterr()
        code = batch(*cases, "--model", package, "--out", out, *FAST)
        captured = capsys.readouterr()
        summary_line = captured.out.strip().splitlines()[-1]
        seen[name] = (code, summary(out)["state"], summary_line, captured.err.strip())
    code, state, line, err = seen["all failed"]
    assert (code, state) == (2, "failed")
    assert line.startswith("batch failed: all 2 cases failed"), line
    assert err.splitlines()[-1].startswith("error: all 2 cases failed, none done"), err
    code, state, line, err = seen["some failed"]
    assert (code, state) == (2, "completed_with_failures")
    assert line.startswith("batch completed with failures: 1 done, 1 failed of 2 cases"), line
    assert err.splitlines()[-1].startswith("error: 1 of 2 cases failed"), err
    code, state, line, err = seen["all done"]
    assert (code, state, err) == (0, "completed", "") and line.startswith("batch completed: 2 done of 2 cases")


def test_a_batch_of_one_case_that_failed_says_so_in_words_for_one(two_cases, tmp_path, capsys):
    """A batch of one case that failed (before: "batch failed: all 1 cases failed in ...", above "error: the batch's
    one case failed")."""
    package, (first, _) = two_cases
    bad = truncated(first, tmp_path / "in" / "damaged.nii.gz")
    assert batch(bad, "--model", package, "--out", tmp_path / "out", *FAST) == 2
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1].startswith("batch failed: its one case failed in "), captured.out
    assert captured.err.strip().splitlines()[-1].startswith("error: the batch's one case failed"), captured.err


@pytest.mark.skipif(not LINUX_MOUNT, reason="Linux tmpfs")
def test_an_output_root_that_turns_read_only_half_way_stops_the_batch_saying_what_stays(
    two_cases, tmp_path, monkeypatch, capsys
):
    """A real tmpfs remounted read-only after the first case (a disk error, a share that went away). Before: the next
    case failed, then the batch stopped with "error: cannot write .../batch.json: its file system is read-only", which
    said neither that the first case's folder stays nor that batch.json (which cannot be rewritten) still says
    'running'. Now the line says both and how to go on."""
    package, (first, second) = two_cases
    third = shifted_case(first, tmp_path / "in" / "third.nii.gz", 5)
    with tmpfs(tmp_path / "disk", size="50m") as disk:
        out = disk / "out"
        after_the_first_case(monkeypatch, lambda: subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True))
        assert batch(first, second, third, "--model", package, "--out", out, *FAST, "--no-heatmaps") == 2
        captured = capsys.readouterr()
        error = captured.err.strip().splitlines()[-1]
        assert error.startswith("error: ") and "read-only" in error, captured
        assert "stopped after case 2 of 3 with 1 finished case kept" in error, error
        assert "'running'" in error and "--resume" in error, error
        document = summary(out)
        assert document["state"] == "running" and document["cases"][0]["status"] == "done"
        assert labels_of(out / "first").any()


@pytest.mark.parametrize("removed", ["root", "batch.json"])
def test_a_root_removed_or_moved_while_the_batch_runs_stops_it_without_making_it_again(
    two_cases, tmp_path, monkeypatch, capsys, removed
):
    """The user deletes (or moves away) the output root, or its batch.json, after the first case. Before: the batch
    made the root again and went on: the new root held the later cases and a batch.json that called the first case
    done, whose folder was gone (or elsewhere), and without its lock file a second batch could start on it. Now the
    batch stops before its next case, in one line, and writes nothing more there."""
    package, (first, second) = two_cases
    third = shifted_case(first, tmp_path / "in" / "third.nii.gz", 5)
    out = tmp_path / "out"
    if removed == "root":
        after_the_first_case(monkeypatch, lambda: out.rename(tmp_path / "moved"))
    else:
        after_the_first_case(monkeypatch, (out / "batch.json").unlink)
    assert batch(first, second, third, "--model", package, "--out", out, *FAST) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and "was removed while the batch ran" in error, error
    assert "stopped before case 2 of 3" in error, error
    if removed == "root":
        assert not out.exists()
        moved = sorted(p.name for p in (tmp_path / "moved").iterdir())  # the lock and reserve went with it (stale)
        assert moved == [".batch.json.tokenunet-lock", ".batch.json.tokenunet-reserve", "batch.json", "first"]
    else:
        assert sorted(p.name for p in out.iterdir()) == ["first"]


def test_a_model_that_fails_to_load_stops_the_batch_as_failed_with_its_reason(two_cases, tmp_path, monkeypatch, capsys):
    """The package's weights fail to load with the first case (checked before: only its metadata): the batch stops,
    exit 2 with the loader's line, batch.json ``state: failed`` and ``error`` saying why, no case charged with it,
    no result event, nothing but batch.json in the root (before this change: batch.json had no ``error``)."""
    from TokenUNetSegmentLib.pipeline.errors import ModelPackageError

    package, cases = two_cases

    def broken(path):
        raise ModelPackageError("the weights of tiny-ct are damaged", "import the package again")

    monkeypatch.setattr(segment_command, "load_package_at", broken)
    out = tmp_path / "out"
    assert batch(*cases, "--model", package, "--out", out, *FAST[:-2], "--progress", "json") == 2
    events = [decode_event(line) for line in capsys.readouterr().err.strip().splitlines()]
    assert isinstance(events[-1], ErrorEvent) and "damaged" in events[-1].message
    assert not any(isinstance(event, ResultEvent) for event in events)
    document = summary(out)
    assert document["state"] == "failed" and "the model failed to load" in document["error"]
    assert "damaged" in document["error"]
    assert {case["status"] for case in document["cases"]} == {"pending"}
    assert sorted(p.name for p in out.iterdir()) == ["batch.json"]
