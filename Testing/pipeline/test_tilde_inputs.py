"""A ``~`` the shell left alone (the path quoted, or coming from a script or a GUI field) in a file the command reads
is the home folder, as it already was for ``--out``, ``--model`` and ``batch``'s CASEs. Before, ``segment
'~/ct.nii.gz' --out '~/result'`` wrote into the home folder but refused its input as "not found: ~/ct.nii.gz", and
``models import '~/package'`` refused what ``--model '~/package'`` used."""

import json
import shutil

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
