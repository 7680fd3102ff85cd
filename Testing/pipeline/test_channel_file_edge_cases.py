"""How ``batch`` groups nnU-Net channel files (``CASE_0000.nii.gz`` ...) at the edges: links named for their channel,
one case's files in two formats, a one-channel model's files beside a ``CASE_0000`` of the same id, numbered scans
beside a one-channel dataset.json, and the words of the refusal when a dataset.json exists but names none of them.
Grouping is torch-free and opens no image: most checks call it directly on empty files."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.channel_files import NNUNET_ORDER, brain_config, channel_files, write_dataset_json
from helpers.packages import make_package
from TokenUNetSegmentLib.pipeline import cli
from TokenUNetSegmentLib.pipeline.batch_cases import cases_from_paths, check_case_names
from TokenUNetSegmentLib.pipeline.errors import InputError

BRAIN = ["T1", "T1c", "T2", "FLAIR"]
FAST = ["--device", "cpu", "--no-overview", "--no-heatmaps", "--progress", "none"]


def empty_files(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


def grouped(paths, model=BRAIN, channels=None) -> list[tuple[str, list[str], str | None]]:
    """(name, its files' names, the start of its refusal) of each case ``batch`` makes of ``paths``, names checked."""
    cases, _ = cases_from_paths(paths, channels, model)
    check_case_names(cases, Path("/nonexistent/out"))
    return [(case.name, [Path(i).name for i in case.inputs], case.refused and case.refused[0]) for case in cases]


def test_a_dataset_json_that_names_no_channels_or_lists_other_images_is_said_to_be_there(tmp_path):
    """The refusal of channel files nothing names, when a dataset.json is there but is not what names them (before:
    "no dataset.json names its nnU-Net channel files", though one was beside imagesTs/): it names the file and what
    is wrong with it."""
    dataset = tmp_path / "Task01_BrainTumour"
    folder = empty_files(dataset / "imagesTs", *[f"X_{i:04d}.nii.gz" for i in range(4)])
    spec = dataset / "dataset.json"
    for data, says in [
        ({"modality": dict(enumerate(NNUNET_ORDER)), "test": ["./imagesTs/Y.nii.gz"]}, "does not list X"),
        ({"labels": {"background": 0}}, "names no channels"),
        ([1, 2], "names no channels"),
    ]:
        spec.write_text(json.dumps(data))
        with pytest.raises(InputError) as refused:
            cases_from_paths([folder], None, BRAIN)
        assert str(spec) in refused.value.message and says in refused.value.message, refused.value.message
        assert "no dataset.json" not in refused.value.message
        assert "--channels" in refused.value.hint
    spec.unlink()
    with pytest.raises(InputError, match="no dataset.json names its nnU-Net channel files"):
        cases_from_paths([folder], None, BRAIN)


def test_a_one_channel_models_case_0000_beside_a_file_named_by_the_same_id_keeps_its_own_name(tmp_path):
    """``x_0000.nii.gz`` and ``x.nii.gz`` for a CT model (before this grouping: the cases ``x_0000`` and ``x``; since
    it: both named ``x``, then both the folder's, and the whole batch refused as two cases writing one folder): the
    grouped case takes its file's own name back, in a folder and given one by one; so does a grouped multi-channel
    case beside a 4D image of its id."""
    folder = empty_files(tmp_path / "h", "x_0000.nii.gz", "x.nii.gz")
    assert grouped([folder], ["CT"]) == [("x", ["x.nii.gz"], None), ("x_0000", ["x_0000.nii.gz"], None)]
    given = [folder / "x_0000.nii.gz", folder / "x.nii.gz"]
    assert grouped(given, ["CT"]) == [("x_0000", ["x_0000.nii.gz"], None), ("x", ["x.nii.gz"], None)]
    dataset = tmp_path / "Dataset001"
    images = empty_files(dataset / "imagesTs", *[f"B_{i:04d}.nii.gz" for i in range(4)], "B.nii.gz")
    write_dataset_json(dataset)
    names = [name for name, _, _ in grouped([images])]
    assert names == ["B", "B_0000"]


def test_scans_numbered_from_0000_beside_a_one_channel_dataset_json_stay_cases_of_their_own(tmp_path):
    """``scan_0000`` ... ``scan_0002`` with a dataset.json naming one channel (CT): each file is a whole case for a
    one-channel model (before: one case "scan" refused for holding channels beyond the one its dataset.json names,
    where without the dataset.json they ran); ``liver_0000`` alone is still the case ``liver``."""
    folder = empty_files(tmp_path / "scans", "scan_0000.nii.gz", "scan_0001.nii.gz", "scan_0002.nii.gz")
    write_dataset_json(folder, names=("CT",))
    assert grouped([folder], ["CT"]) == [(f"scan_000{i}", [f"scan_000{i}.nii.gz"], None) for i in range(3)]
    empty_files(folder, "liver_0000.nii.gz")
    assert ("liver", ["liver_0000.nii.gz"], None) in grouped([folder], ["CT"])


def test_one_cases_channel_files_in_two_formats_are_one_case_refused_saying_so(tmp_path):
    """``x_0000.nii.gz`` ... beside ``x_0000.nii`` ... (the same case saved twice), or one case's files split between
    .nii.gz and .nii (before: two cases, each lacking the other's files, and the whole batch refused as two cases
    writing ``out/imagesTs_x``): one case ``x`` refused alone, naming both formats; the other cases run."""
    dataset = tmp_path / "Dataset001"
    both = [f"x_{i:04d}.nii.gz" for i in range(4)] + [f"x_{i:04d}.nii" for i in range(4)]
    split = ["y_0000.nii.gz", "y_0001.nii", "y_0002.nii.gz", "y_0003.nii.gz"]
    whole = [f"z_{i:04d}.nrrd" for i in range(4)]
    folder = empty_files(dataset / "imagesTs", *both, *split, *whole)
    write_dataset_json(dataset)
    cases = grouped([folder])
    assert [(name, len(files)) for name, files, _ in cases] == [("x", 8), ("y", 4), ("z", 4)]
    assert cases[2][2] is None
    for _, _, refused in cases[:2]:
        assert ".nii.gz" in refused and ".nii" in refused.replace(".nii.gz", ""), refused
        assert "two formats" in refused


def test_links_named_for_their_channel_are_grouped_and_placed_by_their_own_names(tmp_path):
    """``imagesTs/BRATS_001_0000.nii.gz`` ... as links to files named otherwise (a common way to lay out an nnU-Net
    dataset without copying): grouped by the links' names and placed by the dataset.json beside imagesTs, as
    ``segment`` given the links places them (before: grouped by the targets' names: four one-file cases, or the
    targets' own numbers and their own dataset.json, another order than ``segment``'s)."""
    raw = empty_files(tmp_path / "raw", *[f"X_{i:04d}.nii.gz" for i in range(4)], "flair.nii.gz")
    write_dataset_json(raw, names=("T2w", "t1gd", "T1w", "FLAIR"))  # the raw files' own order
    dataset = tmp_path / "Dataset001"
    links = dataset / "imagesTs"
    links.mkdir(parents=True)
    for index in range(4):
        os.symlink(raw / f"X_{3 - index:04d}.nii.gz", links / f"X_{index:04d}.nii.gz")
    os.symlink(raw / "flair.nii.gz", links / "Y_0000.nii.gz")
    write_dataset_json(dataset)
    for paths in ([links], sorted(links.iterdir())):
        cases, _ = cases_from_paths(paths, None, BRAIN)
        x = next(case for case in cases if case.name == "X")
        assert [Path(i).name for i in x.inputs] == [f"X_{i:04d}.nii.gz" for i in range(4)]
        assert [Path(i).parent for i in x.inputs] == [links] * 4
        assert next(case for case in cases if case.name == "Y").refused is not None  # Y lacks _0001 ...


def test_links_to_one_file_are_still_the_same_case_given_twice(tmp_path):
    """Two links to one file given as cases: "given twice", as the file given twice is."""
    folder = empty_files(tmp_path / "f", "liver_0000.nii.gz")
    os.symlink(folder / "liver_0000.nii.gz", tmp_path / "liver_0000.nii.gz")
    with pytest.raises(InputError, match="is given twice"):
        grouped([folder / "liver_0000.nii.gz", tmp_path / "liver_0000.nii.gz"], ["CT"])


@pytest.fixture(scope="module")
def brain_package(tmp_path_factory):
    return make_package(tmp_path_factory.mktemp("brain"), brain_config())


def test_batch_and_segment_place_linked_channel_files_alike(tmp_path, brain_package):
    """The links of the test above, run: ``batch`` on their folder feeds each model channel the file ``segment``
    given the links feeds it."""
    raw = tmp_path / "raw"
    files = channel_files(raw, cases=("X",))
    write_dataset_json(raw)  # the raw files' own numbers name other channels than the links'
    links = tmp_path / "Dataset001" / "imagesTs"
    links.mkdir(parents=True)
    for index in range(4):
        os.symlink(files[3 - index], links / f"X_{index:04d}.nii.gz")
    write_dataset_json(tmp_path / "Dataset001")
    out = tmp_path / "out"
    assert cli.main(["batch", str(links), "--model", str(brain_package), "--out", str(out), *FAST]) == 0
    alone = tmp_path / "alone"
    given = [str(link) for link in sorted(links.iterdir())]
    assert cli.main(["segment", *given, "--model", str(brain_package), "--out", str(alone), *FAST]) == 0
    batch_inputs = json.loads((out / "X" / "report.json").read_text())["inputs"]
    assert batch_inputs == json.loads((alone / "report.json").read_text())["inputs"]
    assert Path(batch_inputs["FLAIR"]).name == "X_0003.nii.gz"  # link X_0000 (FLAIR beside imagesTs) -> raw X_0003
    shutil.rmtree(out)


def test_numbered_channel_files_nothing_names_are_refused_by_segment_its_api_and_batch_as_by_train(
    tmp_path, brain_package, capsys
):
    """``segment BRATS_001_0000.nii.gz ... _0003`` with no dataset.json naming their channels (before: run in the
    order given, while ``train`` and ``batch`` refused them: BraTS conversions number FLAIR first or T1 first, so a
    guess swaps sequences without a word): refused, exit 2, one line, before anything is written; ``segment()`` and a
    ``batch --datalist`` entry without "channels" refuse them in the same words. With the dataset.json they run."""
    from helpers.readers import refuse_reading
    from TokenUNetSegmentLib.pipeline.package_loader import load_package
    from TokenUNetSegmentLib.pipeline.segmentation import segment

    files = [str(file) for file in channel_files(tmp_path / "loose", cases=("BRATS_001",))]
    package = load_package(brain_package)
    says = "nothing says what BRATS_001_0000.nii.gz and its other nnU-Net channel files hold"
    with pytest.MonkeyPatch.context() as patched:
        refuse_reading(patched)  # refused from the names, before any voxel is read
        out = tmp_path / "out"
        assert cli.main(["segment", *files, "--model", str(brain_package), "--out", str(out), *FAST]) == 2
        printed = capsys.readouterr().err
        assert printed.startswith(f"error: {says}") and printed.count("\n") == 1, printed
        assert "dataset.json" in printed and not out.exists()
        with pytest.raises(InputError) as refused:
            segment(files, package, device="cpu", with_token_maps=False)
        assert refused.value.message == printed[len("error: ") :].split(" (")[0]
    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps({"testing": [{"image": files}]}))
    out = tmp_path / "batch"
    assert (
        cli.main(["batch", "--datalist", str(datalist), "--model", str(brain_package), "--out", str(out), *FAST]) == 2
    )
    (case,) = json.loads((out / "batch.json").read_text())["cases"]
    assert case["status"] == "failed" and case["error"]["message"].startswith(says), case
    assert '"channels"' in case["error"]["hint"]
    write_dataset_json(tmp_path / "loose")
    assert cli.main(["segment", *files, "--model", str(brain_package), "--out", str(out / "ran"), *FAST]) == 0


def test_numbered_channel_files_given_to_segment_as_a_dict_run_where_the_dict_puts_them(tmp_path, brain_package):
    """``segment({"FLAIR": "X_0000.nii.gz", "T1": "X_0001.nii.gz", ...})`` with no dataset.json (before: refused with
    "nothing says what X_0000.nii.gz ... hold (..., or pass {'T1': ..., ...})", the very dict given): the dict names
    every file's channel, so each goes where it says, as the same files in the channel order do beside a
    dataset.json."""
    from TokenUNetSegmentLib.pipeline.package_loader import load_package
    from TokenUNetSegmentLib.pipeline.segmentation import segment

    files = [str(file) for file in channel_files(tmp_path / "loose", cases=("BRATS_001",))]
    package = load_package(brain_package)
    by_name = dict(zip(NNUNET_ORDER, files, strict=True))  # FLAIR = _0000, T1w = _0001, t1gd = _0002, T2w = _0003
    result = segment(by_name, package, device="cpu", with_token_maps=False)
    write_dataset_json(tmp_path / "loose")
    named = segment(files, package, device="cpu", with_token_maps=False)
    assert np.array_equal(result.labels, named.labels)
    swapped = dict(zip(NNUNET_ORDER, [files[1], files[0], *files[2:]], strict=True))  # FLAIR and T1w swapped
    assert not np.array_equal(segment(swapped, package, device="cpu", with_token_maps=False).labels, result.labels)


def test_a_one_channel_models_batch_runs_beside_a_dataset_json_it_cannot_read(tmp_path, cli_case):
    """A CT model's ``imagesTs/liver_001_0000.nii.gz`` beside a malformed dataset.json, or a FIFO named dataset.json:
    a one-channel model needs no channel names (``segment`` never reads it), so the batch runs, in a child process that
    must end (before: the whole batch refused, "fix it, or pass --channels", an option batch refuses for a
    one-channel model); a multi-channel model's batch is refused saying what the file is, without blocking."""
    from helpers.processes import run_cli

    _, package, ct = cli_case
    dataset = tmp_path / "Task03_Liver"
    (dataset / "imagesTs").mkdir(parents=True)
    for case in ("liver_001", "liver_002"):
        shutil.copy(ct, dataset / "imagesTs" / f"{case}_0000.nii.gz")
    (dataset / "dataset.json").write_text("{not json")
    assert grouped([dataset / "imagesTs"], ["CT"]) == [
        ("liver_001", ["liver_001_0000.nii.gz"], None),
        ("liver_002", ["liver_002_0000.nii.gz"], None),
    ]
    (dataset / "dataset.json").unlink()
    os.mkfifo(dataset / "dataset.json")
    out = tmp_path / "out"
    done = run_cli("batch", dataset / "imagesTs", "--resume", "--model", package, "--out", out, *FAST, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [case["name"] for case in json.loads((out / "batch.json").read_text())["cases"]] == [
        "liver_001",
        "liver_002",
    ]
    with pytest.raises(InputError) as refused:
        cases_from_paths([dataset / "imagesTs"], None, BRAIN)
    assert "dataset.json is a named pipe (FIFO), not a file" in refused.value.message


def test_a_macos_metadata_file_given_as_a_case_is_refused_saying_what_it_is(tmp_path):
    """``find imagesTs -name '*.nii.gz' | xargs tokenunet batch`` on a copy from a Mac lists ``._BRATS_001_0000.nii.gz``
    too (before: refused as "would be written to a folder named '._BRATS_001' (rename it ...)"): said to be macOS's
    metadata, to be left out; in a folder such files are left out as every hidden entry is."""
    folder = empty_files(tmp_path / "imagesTs", "liver_001_0000.nii.gz", "._liver_001_0000.nii.gz")
    with pytest.raises(InputError) as refused:
        grouped(sorted(folder.iterdir()), ["CT"])
    assert "._liver_001_0000.nii.gz is macOS's metadata of liver_001_0000.nii.gz" in refused.value.message
    assert "._" in refused.value.hint
    assert grouped([folder], ["CT"]) == [("liver_001", ["liver_001_0000.nii.gz"], None)]


def test_links_to_a_fifo_are_left_out_of_a_folder_and_refused_as_a_case(tmp_path):
    """A link named ``c_0000.nii.gz`` (or ``b.nii.gz``) to a named pipe: judged by what it points to, never opened
    (grouping looks at names and ``stat`` only)."""
    folder = empty_files(tmp_path / "cases", "a.nii.gz")
    os.mkfifo(tmp_path / "pipe")
    for name in ("b.nii.gz", "c_0000.nii.gz"):
        os.symlink(tmp_path / "pipe", folder / name)
    cases, notes = cases_from_paths([folder], None, ["CT"])
    assert [case.name for case in cases] == ["a"]
    assert "b.nii.gz (a named pipe (FIFO)), c_0000.nii.gz (a named pipe (FIFO))" in " ".join(notes)
    with pytest.raises(InputError, match="is a named pipe"):
        cases_from_paths([folder / "c_0000.nii.gz"], None, ["CT"])


def test_a_malformed_dataset_json_of_files_given_to_segment_is_refused_with_a_way_that_works(tmp_path, capsys):
    """``segment X_0000 ... X_0003`` beside a malformed dataset.json (before: "fix it, or pass --channels naming its
    volumes in order", and ``segment --channels`` refuses several files): the hint names what takes such files."""
    from TokenUNetSegmentLib.pipeline.channel_stack import nnunet_file_names

    files = [
        str(path) for path in empty_files(tmp_path / "imagesTs", *[f"X_{i:04d}.nii.gz" for i in range(4)]).iterdir()
    ]
    (tmp_path / "dataset.json").write_text("{not json")
    for option, way in [("--channels", "run batch on them with --channels"), ("channels=", "{channel name: file}")]:
        with pytest.raises(InputError) as refused:
            nnunet_file_names(sorted(files), option)
        assert "is not valid JSON" in refused.value.message and way in refused.value.hint, refused.value.hint


def test_segment_help_says_numbered_channel_files_go_by_their_dataset_json_not_the_order_given(capsys):
    """``segment --help`` on INPUT said files are taken "in the model's channel order"; nnU-Net's numbered files
    (``X_0000.nii.gz`` ...) are placed by their dataset.json's names instead, and refused when nothing names them."""
    assert cli.main(["segment", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "nnU-Net's numbered files (CASE_0000.nii.gz, ...) by their dataset.json's channel names" in text, text
    assert "refused when nothing names them" in text, text


def test_segment_and_evaluate_refuse_numbered_files_nothing_names_with_a_whole_hint_a_command_line_takes(
    tmp_path, brain_package, capsys
):
    """``segment`` and ``evaluate REF --model M --image`` given ``BRATS_001_0000.nii.gz ... _0003`` that nothing names,
    or beside a malformed dataset.json: the one line printed holds the whole hint, and it names ways a command line
    takes. Before: the hint was longer than the half line a hint may take, so both printed "(add the dataset.json
    that names their channels beside their imagesTs/ folder (or in their fold...)", the alternative cut off; and
    evaluate's was "or pass {'FLAIR': ..., ...}", the Python API's dict, which no option of evaluate takes."""
    from helpers.channel_files import write_volume

    files = [str(file) for file in channel_files(tmp_path / "imagesTs", cases=("BRATS_001",))]
    reference = write_volume(np.zeros((16, 16, 16), np.uint8), tmp_path / "ref.nii.gz")
    runs = [
        ["segment", *files, "--model", str(brain_package), "--out", str(tmp_path / "out"), *FAST],
        ["evaluate", str(reference), "--model", str(brain_package), "--image", *files, "--device", "cpu"],
    ]
    for argv in runs:
        assert cli.main(argv) == 2, argv
        printed = capsys.readouterr().err
        assert "nothing says what BRATS_001_0000.nii.gz and its other nnU-Net channel files hold" in printed, printed
        assert printed.count("\n") == 1 and "...)" not in printed and "{" not in printed, printed
        assert printed.endswith("(add a dataset.json naming their channels beside them, or run batch on them with "
                                "--channels)\n"), printed  # fmt: skip
    (tmp_path / "dataset.json").write_text("{not json")
    for argv in runs:
        assert cli.main(argv) == 2, argv
        printed = capsys.readouterr().err
        assert "...)" not in printed and printed.endswith("(fix it, or run batch on them with --channels)\n"), printed
