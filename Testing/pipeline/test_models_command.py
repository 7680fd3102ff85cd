"""The ``models`` command: list, info, import (packages and weights files), remove."""

import json

import torch
from helpers.packages import make_package, tiny_config
from TokenUNetSegmentLib.model import build_network
from TokenUNetSegmentLib.pipeline import cli


def test_models_list_info_import_remove(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TOKENUNET_HOME", str(tmp_path / "home"))
    catalog = tmp_path / "Models.json"
    catalog.write_text(json.dumps({"models": []}))
    base = ["--catalog", str(catalog), "models"]
    zipped = make_package(tmp_path, tiny_config("zipped-model"), as_zip=True)
    assert cli.main([*base, "import", str(zipped)]) == 0
    assert (tmp_path / "home/models/zipped-model/configs/metadata.json").is_file()
    assert cli.main([*base, "list"]) == 0
    assert "zipped-model" in capsys.readouterr().out
    assert cli.main([*base, "info", "zipped-model"]) == 0
    assert "8Token (1 -> 3 channels)" in capsys.readouterr().out
    # weights from a .pt file in the configuration of an existing model
    torch.save(build_network("8Token", 1, 3, channels=(4, 8, 16, 32)).state_dict(), tmp_path / "w.pt")
    assert cli.main([*base, "import", str(tmp_path / "w.pt"), "--like", "zipped-model", "--id", "from-pt"]) == 0
    capsys.readouterr()
    assert cli.main([*base, "list", "--json"]) == 0
    listed = {e["id"]: e["source"] for e in json.loads(capsys.readouterr().out)}
    assert listed == {"zipped-model": "cached", "from-pt": "cached"}
    assert cli.main([*base, "remove", "from-pt"]) == 0
    assert not (tmp_path / "home/models/from-pt").exists()
    capsys.readouterr()
    assert cli.main([*base, "import", str(tmp_path / "w.pt")]) == 2
    assert "--like" in capsys.readouterr().err


def test_weights_options_with_a_package_are_refused_not_ignored(tmp_path, monkeypatch, capsys):
    """Before: ``models import pkg.zip --id my-name`` imported the package under its own id, exit 0."""
    monkeypatch.setenv("TOKENUNET_HOME", str(tmp_path / "home"))
    catalog = tmp_path / "Models.json"
    catalog.write_text(json.dumps({"models": []}))
    zipped = make_package(tmp_path, tiny_config("zipped-model"), as_zip=True)
    assert cli.main(["--catalog", str(catalog), "models", "import", str(zipped), "--id", "my-name"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --id applies only to a weights file") and err.count("\n") == 1, err
    assert not (tmp_path / "home/models/zipped-model").exists()


def test_a_folder_given_as_the_weights_file_is_named_as_a_folder(tmp_path, monkeypatch, capsys):
    """``models import dir.pt --like M --id X`` where ``dir.pt`` is a folder (found by hostile) (before: "weights file
    not found: dir.pt", though it is there); a missing file is still "not found"."""
    monkeypatch.setenv("TOKENUNET_HOME", str(tmp_path / "home"))
    catalog = tmp_path / "Models.json"
    catalog.write_text(json.dumps({"models": []}))
    base = ["--catalog", str(catalog), "models", "import"]
    assert cli.main([*base, str(make_package(tmp_path, tiny_config("zipped-model"), as_zip=True))]) == 0
    (tmp_path / "dir.pt").mkdir()
    capsys.readouterr()
    for name, words in (("dir.pt", "dir.pt is a folder (give the state dict's file)"), ("gone.pt", "not found")):
        assert cli.main([*base, str(tmp_path / name), "--like", "zipped-model", "--id", "from-pt"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: weights file") and words in err and err.count("\n") == 1, err
    assert not (tmp_path / "home/models/from-pt").exists()
