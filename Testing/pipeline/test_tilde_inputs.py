"""A ``~`` the shell left alone (the path quoted, or coming from a script or a GUI field) in a file the command reads
is the home folder, as it already was for ``--out``, ``--model`` and ``batch``'s CASEs. Before, ``segment
'~/ct.nii.gz' --out '~/result'`` wrote into the home folder but refused its input as "not found: ~/ct.nii.gz", and
``models import '~/package'`` refused what ``--model '~/package'`` used."""

import json
import shutil

import numpy as np
import SimpleITK as sitk
from TokenUNetSegmentLib.pipeline import cli

FAST = ["--device", "cpu", "--no-overview", "--no-heatmaps", "--progress", "none"]


def test_a_tilde_in_the_files_a_command_reads_is_the_home_folder(tmp_path, monkeypatch, capsys, cli_case):
    _, package, ct = cli_case
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TOKENUNET_HOME", str(tmp_path / "cache"))
    shutil.copy(ct, home / "ct.nii.gz")
    shutil.copytree(package, home / "package")
    (home / "names.json").write_text(json.dumps({"1": "organ1", "2": "organ2"}))

    assert cli.main(["segment", "~/ct.nii.gz", "--model", str(package), "--out", str(tmp_path / "s"), *FAST]) == 0
    shutil.copy(tmp_path / "s" / "segmentation.seg.nrrd", home / "seg.seg.nrrd")
    assert cli.main(["evaluate", "~/seg.seg.nrrd", "--prediction", "~/seg.seg.nrrd", "--no-hd95"]) == 0
    assert cli.main(["models", "import", "~/package"]) == 0
    capsys.readouterr()

    missing = [  # each names the expanded path of what it did not find, never "~/"
        ["robustness", "--model", str(package), "--image", "~/gone.nii.gz", "--reference", "~/seg.seg.nrrd",
         "--out", str(tmp_path / "r")],
        ["cka", "--a", "MetaUNETR-conv", "--b", "MetaUNETR-conv", "--a-weights", "~/gone.safetensors",
         "--out", str(tmp_path / "c")],
        ["train", "~/gone.json", "--config", str(package), "--out", str(tmp_path / "t")],
        ["datalist", "decathlon", "~/gone", "--out", str(tmp_path / "d.json")],
        ["batch", "--datalist", "~/gone.json", "--model", str(package), "--out", str(tmp_path / "b")],
    ]  # fmt: skip
    for argv in missing:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "gone" in err and "~/" not in err, (argv, err)


def test_every_command_names_what_it_wrote_with_the_home_folder_expanded(tmp_path, monkeypatch, capsys, cli_case):
    """The last line of each writing command names where its output is, not the ``~`` as typed (before: ``evaluate
    --json '~/m.json'`` said "wrote ~/m.json"; the others, checked here, already named the expanded path)."""
    _, package, ct = cli_case
    home = (tmp_path / "home").resolve()
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TOKENUNET_HOME", "~/cache")
    shutil.copy(ct, home / "ct.nii.gz")
    shutil.copytree(package, home / "package")
    for folder in ("images", "labels"):
        (home / folder).mkdir()
    shutil.copy(ct, home / "images" / "c1.nii.gz")
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[2:6, 2:6, 2:6] = 1
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(home / "labels" / "c1.nii.gz"))
    tiny = [
        "--a",
        "NoToken",
        "--a-option",
        "channels=(4, 8, 16, 32)",
        "--b",
        "NoToken",
        "--b-option",
        "channels=(4, 8, 16, 32)",
    ]
    commands = [  # the command, the text its line names
        (["segment", "~/ct.nii.gz", "--model", "~/package", "--out", "~/s", *FAST], f"wrote {home}/s/"),
        (["evaluate", "~/s/segmentation.seg.nrrd", "--prediction", "~/s/segmentation.seg.nrrd", "--no-hd95",
          "--json", "~/m.json"], f"wrote {home}/m.json"),
        (["batch", "~/ct.nii.gz", "--model", "~/package", "--out", "~/b", *FAST], f"see {home}/b/batch.json"),
        (["robustness", "--model", "~/package", "--image", "~/ct.nii.gz", "--reference", "~/s/segmentation.seg.nrrd",
          "--variants", "plain", "--no-tokens", "--out", "~/r"], f"wrote {home}/r/robustness.json"),
        (["cka", *tiny, "--size", "32", "--samples", "2", "--out", "~/c"], f"wrote {home}/c/cka.json"),
        (["datalist", "folders", "--images", "~/images", "--labels", "~/labels", "--out", "~/d.json"],
         f"wrote {home}/d.json"),
        (["models", "import", "~/package"], f"into {home}/cache/models/"),
    ]  # fmt: skip
    for argv, names in commands:
        code = cli.main(argv)
        captured = capsys.readouterr()
        assert code == 0, (argv, captured.err)
        printed = captured.out + captured.err
        assert names in printed and "~/" not in printed, (argv, printed)


def test_segment_takes_a_tilde_in_its_inputs_and_model_as_the_home_folder(tmp_path, monkeypatch, cli_case):
    """``segment("~/ct.nii.gz", "~/package")`` from Python (a path from a notebook's text field, a config file), as
    the command line takes them (before: "input not found: ~/ct.nii.gz")."""
    from pathlib import Path

    from TokenUNetSegmentLib.pipeline.segmentation import segment

    _, package, ct = cli_case
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    shutil.copy(ct, home / "ct.nii.gz")
    shutil.copytree(package, home / "package")
    expected = segment(str(ct), str(package), device="cpu", with_token_maps=False).labels
    for inputs, model in (("~/ct.nii.gz", "~/package"), ([Path("~/ct.nii.gz")], Path("~/package"))):
        result = segment(inputs, model, device="cpu", with_token_maps=False)
        assert np.array_equal(result.labels, expected), (inputs, model)
    (channel,) = json.loads((package / "configs" / "metadata.json").read_text())["tokenunet"]["inputs"]
    result = segment({channel["name"]: "~/ct.nii.gz"}, "~/package", device="cpu", with_token_maps=False)
    assert np.array_equal(result.labels, expected)
