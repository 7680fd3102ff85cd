"""``batch`` on folders laid out as nnU-Net, MONAI and the Medical Segmentation Decathlon lay them out: one file per
channel (``BRATS_001_0000.nii.gz`` ... ``_0003``) grouped into one case per case id, its channels placed by the
names of its dataset.json (or ``--channels``), never by position; cases with a channel file missing or extra refused
alone; ``--resume`` stamped with every file of a case and the dataset.json that ordered it."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers.channel_files import NNUNET_ORDER, brain_config, channel_files, write_dataset_json, write_volume
from helpers.packages import make_package
from TokenUNetSegmentLib.pipeline import cli

FAST = ["--device", "cpu", "--no-overview", "--no-heatmaps", "--progress", "none"]
OWN = {"FLAIR": "FLAIR", "T1w": "T1", "t1gd": "T1c", "T2w": "T2"}  # dataset names -> the model's channels


@pytest.fixture(scope="module")
def brain_package(tmp_path_factory):
    return make_package(tmp_path_factory.mktemp("brain"), brain_config())


def batch(*arguments) -> int:
    return cli.main(["batch", *map(str, arguments)])


def summary(root: Path) -> dict:
    return json.loads((root / "batch.json").read_text())


def channel_of_each_file(folder: Path) -> dict[str, str]:
    """{model channel: the nnU-Net number of the file it got} from a case's report.json."""
    report = json.loads((folder / "report.json").read_text())
    return {channel: Path(path).name[-11:-7] for channel, path in report["inputs"].items()}


EXPECTED = {OWN[name]: f"{index:04d}" for index, name in enumerate(NNUNET_ORDER)}  # T1: 0001, ..., FLAIR: 0000


def test_a_folder_of_channel_files_is_one_case_per_case_id_placed_by_its_dataset_json(tmp_path, brain_package):
    """imagesTs/ of nnU-Net channel files with dataset.json beside imagesTs/ (before: each file its own case, all 8
    failed "model needs 4 input channel(s)"). Each case id is one case named by it, its files placed in the model's
    channels by the dataset.json's channel_names; the same labels as ``segment`` given the case's files."""
    dataset = tmp_path / "Dataset001_BrainTumour"
    files = channel_files(dataset / "imagesTs")
    write_dataset_json(dataset)
    out = tmp_path / "out"
    assert batch(dataset / "imagesTs", "--model", brain_package, "--out", out, *FAST) == 0
    document = summary(out)
    assert [(case["name"], case["status"]) for case in document["cases"]] == [
        ("BRATS_001", "done"),
        ("BRATS_002", "done"),
    ]
    assert document["cases"][0]["inputs"] == [str(file) for file in files[:4]]
    assert channel_of_each_file(out / "BRATS_001") == EXPECTED
    alone = tmp_path / "alone"
    assert cli.main(["segment", *map(str, files[4:]), "--model", str(brain_package), "--out", str(alone), *FAST]) == 0
    for name in ("segmentation.seg.nrrd",):
        first = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "BRATS_002" / name)))
        np.testing.assert_array_equal(first, sitk.GetArrayFromImage(sitk.ReadImage(str(alone / name))))


def test_a_dataset_json_beside_the_files_names_their_channels_too(tmp_path, brain_package):
    """A folder of any name holding the channel files and the dataset.json (MSD's ``modality``) itself."""
    folder = tmp_path / "to_segment"
    channel_files(folder, cases=("BRATS_007",))
    write_dataset_json(folder, key="modality")
    out = tmp_path / "out"
    assert batch(folder, "--model", brain_package, "--out", out, *FAST) == 0
    assert [case["name"] for case in summary(out)["cases"]] == ["BRATS_007"]
    assert channel_of_each_file(out / "BRATS_007") == EXPECTED


def test_a_case_with_a_channel_file_missing_or_extra_is_refused_alone(tmp_path, brain_package, capsys):
    """A case without its _0003, another with a _0004 the dataset.json does not name: each refused in words that name
    its files; the complete case runs; the batch completed with failures, exit 2."""
    dataset = tmp_path / "Dataset001_BrainTumour"
    channel_files(dataset / "imagesTs", cases=("BRATS_001", "BRATS_002", "BRATS_003"))
    (dataset / "imagesTs" / "BRATS_002_0003.nii.gz").unlink()
    shutil.copy(dataset / "imagesTs" / "BRATS_003_0000.nii.gz", dataset / "imagesTs" / "BRATS_003_0004.nii.gz")
    write_dataset_json(dataset)
    out = tmp_path / "out"
    assert batch(dataset / "imagesTs", "--model", brain_package, "--out", out, *FAST) == 2
    document = summary(out)
    assert document["state"] == "completed_with_failures"
    cases = {case["name"]: case for case in document["cases"]}
    assert [cases[name]["status"] for name in ("BRATS_001", "BRATS_002", "BRATS_003")] == ["done", "failed", "failed"]
    missing = cases["BRATS_002"]["error"]["message"]
    assert "BRATS_002_0003.nii.gz" in missing and "BRATS_002_0000.nii.gz" in missing and "T2w" in missing
    assert cases["BRATS_002"]["error"]["category"] == "user"
    assert "BRATS_003_0004.nii.gz" in cases["BRATS_003"]["error"]["message"]
    assert len(cases["BRATS_003"]["inputs"]) == 5
    printed = capsys.readouterr().out
    assert "BRATS_002: failed: " in printed and "Traceback" not in printed
    assert not (out / "BRATS_002").exists()


def test_channel_files_nothing_names_are_refused_unless_channels_names_them(tmp_path, brain_package, capsys):
    """No dataset.json: nnU-Net's numbers say which channel of the dataset each file is, not which sequence; refused
    before any case runs, saying to add the dataset.json or pass --channels; with --channels, run."""
    folder = tmp_path / "imagesTs"
    channel_files(folder)
    out = tmp_path / "out"
    assert batch(folder, "--model", brain_package, "--out", out, *FAST) == 2
    error = capsys.readouterr().err
    assert "BRATS_001_0000.nii.gz" in error and "dataset.json" in error and "--channels" in error
    assert error.count("\n") == 1 and not out.exists()
    assert batch(folder, "--channels", ",".join(NNUNET_ORDER), "--model", brain_package, "--out", out, *FAST) == 0
    assert [case["name"] for case in summary(out)["cases"]] == ["BRATS_001", "BRATS_002"]
    assert channel_of_each_file(out / "BRATS_002") == EXPECTED
    assert batch(folder, "--channels", "FLAIR,T1", "--model", brain_package, "--out", tmp_path / "o2", *FAST) == 2
    assert "--channels names 2 channels" in capsys.readouterr().err


def test_a_one_channel_model_given_0000_files_names_each_case_by_its_id(tmp_path, cli_case):
    """nnU-Net's single-channel layout (liver_001_0000.nii.gz, no dataset.json, or one naming "CT"): one case per
    case id, written to ``out/liver_001`` (before: ``out/liver_001_0000``); numbered files that are no channels
    (``scan_0001``, ``scan_0002``: scans numbered from 1) stay cases of their own."""
    _, package, ct = cli_case
    folder = tmp_path / "imagesTs"
    folder.mkdir()
    for case in ("liver_001", "liver_002"):
        shutil.copy(ct, folder / f"{case}_0000.nii.gz")
    out = tmp_path / "out"
    assert batch(folder, "--model", package, "--out", out, *FAST) == 0
    assert [case["name"] for case in summary(out)["cases"]] == ["liver_001", "liver_002"]
    write_dataset_json(tmp_path, names=("CT",))
    assert batch(folder, "--model", package, "--out", tmp_path / "o2", *FAST) == 0
    assert [case["name"] for case in summary(tmp_path / "o2")["cases"]] == ["liver_001", "liver_002"]
    numbered = tmp_path / "scans"
    numbered.mkdir()
    for name in ("scan_0001", "scan_0002"):
        shutil.copy(ct, numbered / f"{name}.nii.gz")
    assert batch(numbered, "--model", package, "--out", tmp_path / "o3", *FAST) == 0
    assert [case["name"] for case in summary(tmp_path / "o3")["cases"]] == ["scan_0001", "scan_0002"]


def test_resume_covers_every_file_of_a_grouped_case_and_the_dataset_json_that_ordered_it(tmp_path, brain_package):
    """``--resume``: a grouped case is skipped while its files and its dataset.json are unchanged; a file of it
    replaced, or the dataset.json's channel order changed, runs it again with the new order."""
    dataset = tmp_path / "Dataset001_BrainTumour"
    files = channel_files(dataset / "imagesTs", cases=("BRATS_001",))
    spec = write_dataset_json(dataset)
    out = tmp_path / "out"

    def run() -> str:
        assert batch(dataset / "imagesTs", "--resume", "--model", brain_package, "--out", out, *FAST) == 0
        return summary(out)["cases"][0]["status"]

    assert run() == "done"
    assert run() == "skipped"
    write_volume(np.flip(sitk.GetArrayFromImage(sitk.ReadImage(str(files[3]))), 0).copy(), files[3])
    assert run() == "done"  # the last channel's file replaced
    assert run() == "skipped"
    write_dataset_json(dataset, names=("T2w", "T1w", "t1gd", "FLAIR"))  # corrected: _0000 is T2, _0003 FLAIR
    assert spec.exists() and run() == "done"
    assert channel_of_each_file(out / "BRATS_001") == {"T1": "0001", "T1c": "0002", "T2": "0000", "FLAIR": "0003"}


def test_resume_runs_a_4d_image_again_when_its_dataset_json_orders_its_volumes_otherwise(tmp_path, brain_package):
    """A 4D image (the Decathlon's imagesTr/BRATS_001.nii.gz) whose volumes its dataset.json names (before: the
    result stamped with the image alone, so after the dataset.json's ``modality`` was corrected ``--resume`` skipped
    it, the channels swapped)."""
    dataset = tmp_path / "Task01_BrainTumour"
    volumes = [sitk.ReadImage(str(path)) for path in channel_files(tmp_path / "parts", cases=("BRATS_001",))]
    (dataset / "imagesTr").mkdir(parents=True)
    sitk.WriteImage(sitk.JoinSeries(volumes), str(dataset / "imagesTr" / "BRATS_001.nii.gz"))
    write_dataset_json(dataset, key="modality")
    out = tmp_path / "out"

    def run() -> tuple[str, dict]:
        assert batch(dataset / "imagesTr", "--resume", "--model", brain_package, "--out", out, *FAST) == 0
        status = summary(out)["cases"][0]["status"]
        report = json.loads((out / "BRATS_001" / "report.json").read_text())
        return status, report["channel_order"]["volumes"]

    assert run() == ("done", {"T1": 1, "T1c": 2, "T2": 3, "FLAIR": 0})
    assert run()[0] == "skipped"
    write_dataset_json(dataset, names=("T2w", "T1w", "t1gd", "FLAIR"), key="modality")
    assert run() == ("done", {"T1": 1, "T1c": 2, "T2": 0, "FLAIR": 3})


def test_channel_files_given_one_by_one_are_grouped_as_a_folders_are(tmp_path, brain_package):
    """``batch imagesTs/*.nii.gz`` (the shell lists the files): the same cases as the folder, in the place of their
    first file; a BraTS-named case given beside them stays itself."""
    dataset = tmp_path / "Dataset001_BrainTumour"
    files = channel_files(dataset / "imagesTs")
    write_dataset_json(dataset)
    out = tmp_path / "out"
    assert batch(*files[4:], *files[:4], "--model", brain_package, "--out", out, *FAST) == 0
    cases = summary(out)["cases"]
    assert [(case["name"], len(case["inputs"])) for case in cases] == [("BRATS_002", 4), ("BRATS_001", 4)]
    assert channel_of_each_file(out / "BRATS_001") == EXPECTED


def test_channels_for_a_one_channel_model_or_without_case_files_is_refused(tmp_path, brain_package, cli_case, capsys):
    """``--channels`` names what CASE files hold: refused beside a one-channel model (as ``segment`` refuses it) and
    with only ``--datalist`` (its entries name theirs in "channels"), before anything is written."""
    _, package, ct = cli_case
    out = tmp_path / "out"
    assert batch(ct, "--channels", "CT", "--model", package, "--out", out, *FAST) == 2
    assert "--channels names the channels of a multi-channel model's files" in capsys.readouterr().err
    (tmp_path / "list.json").write_text(json.dumps({"testing": [str(ct)]}))
    assert (
        batch(
            "--datalist",
            tmp_path / "list.json",
            "--channels",
            "T1,T1c,T2,FLAIR",
            "--model",
            brain_package,
            "--out",
            out,
            *FAST,
        )
        == 2
    )
    assert 'a datalist\'s entries name theirs in "channels"' in capsys.readouterr().err
    assert not out.exists()


def test_a_channel_file_given_twice_is_refused_as_any_file_given_twice(tmp_path, cli_case, capsys):
    """Grouping files given one by one does not hide a file given twice (before grouping: "given twice")."""
    _, package, ct = cli_case
    shutil.copy(ct, tmp_path / "liver_001_0000.nii.gz")
    file = tmp_path / "liver_001_0000.nii.gz"
    assert batch(file, file, "--model", package, "--out", tmp_path / "out", *FAST) == 2
    assert "is given twice" in capsys.readouterr().err


def test_4d_images_numbered_one_by_one_stay_cases_of_their_own_with_channels(tmp_path):
    """``--channels`` beside 4D images named ``BraTS_0001.nii.gz`` ... ``BraTS_0006.nii.gz`` (numbered scans, no
    ``_0000``, numbers beyond the 4 channels): each its own case with those names for its volumes, not one case
    "BraTS" refused for lacking channel 0."""
    from TokenUNetSegmentLib.pipeline.batch_cases import cases_from_paths

    for number in range(1, 7):
        (tmp_path / f"BraTS_{number:04d}.nii.gz").write_bytes(b"")
    names = ("FLAIR", "T1w", "t1gd", "T2w")
    cases, _ = cases_from_paths([tmp_path], names, ["T1", "T1c", "T2", "FLAIR"])
    assert [(case.name, case.channels, case.refused) for case in cases] == [
        (f"BraTS_{number:04d}", names, None) for number in range(1, 7)
    ]


def test_batch_help_says_channel_files_of_one_case_id_are_one_case_and_special_files_are_left_out(capsys):
    """``batch --help`` on CASE: it said "each volume file ... in name order" is a case, which is no longer what a
    folder of nnU-Net channel files gives (one case per case id), nor what a FIFO in the folder gets (left out)."""
    assert cli.main(["batch", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "CASE_0000.nii.gz, CASE_0001.nii.gz, ... of one case id are one case" in text, text
    assert "given one by one too" in text and "FIFOs" in text, text
