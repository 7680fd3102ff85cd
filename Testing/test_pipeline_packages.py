"""Model packages, safe weights and the catalog/cache."""

import json
import os
import pickle
import zipfile

import pytest
import torch
from pipeline_testlib import TINY, make_package, tiny_config
from TokenUNetSegmentLib.model import build_network
from TokenUNetSegmentLib.pipeline.catalog import DEFAULT_CATALOG, ModelStore, tokenunet_home
from TokenUNetSegmentLib.pipeline.errors import ModelPackageError, UnsafeWeightsError
from TokenUNetSegmentLib.pipeline.jsonschema_lite import validation_errors
from TokenUNetSegmentLib.pipeline.package import (
    load_package,
    load_schema,
    package_from_weights,
    read_metadata,
    validate_metadata,
)
from TokenUNetSegmentLib.pipeline.weights import sha256_file, state_dict_from_bytes


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory):
    return make_package(tmp_path_factory.mktemp("pkg"))


@pytest.mark.parametrize("as_zip", [False, True])
def test_write_and_load_round_trip_gives_the_same_network(tmp_path, as_zip):
    network = build_network("8Token", 1, 3, **TINY).eval()
    path = make_package(tmp_path, network=network, as_zip=as_zip)
    assert path.is_file() if as_zip else (path / "configs/metadata.json").is_file()
    package = load_package(path)
    assert package.id == "tiny-ct" and not package.network.training
    assert [label.name for label in package.labels] == ["organ1", "organ2"]
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(package.network(x), network(x))
    metadata = package.metadata
    for key in ("version", "monai_version", "pytorch_version", "task", "description", "authors", "copyright"):
        assert key in metadata
    assert metadata["network_data_format"]["outputs"]["pred"]["channel_def"] == {
        "0": "background",
        "1": "organ1",
        "2": "organ2",
    }


def test_package_files_and_checksum(package_dir):
    for name in ("configs/metadata.json", "models/model.safetensors", "LICENSE", "docs/README.md"):
        assert (package_dir / name).is_file()
    recorded = json.loads((package_dir / "configs/metadata.json").read_text())["tokenunet"]["weights"]["sha256"]
    assert recorded == sha256_file(package_dir / "models/model.safetensors")


def test_schema_validation_names_the_problem(package_dir):
    metadata = read_metadata(package_dir)
    broken = json.loads(json.dumps(metadata))
    del broken["tokenunet"]["labels"][0]["color"]
    with pytest.raises(ModelPackageError, match=r"labels\[0\].*color"):
        validate_metadata(broken)
    broken = json.loads(json.dumps(metadata))
    broken["tokenunet"]["inputs"].append({"name": "extra", "modality": "MR"})
    with pytest.raises(ModelPackageError, match="2 inputs declared for a network with 1 channels"):
        validate_metadata(broken)
    broken = json.loads(json.dumps(metadata))
    broken["tokenunet"]["preprocessing"]["orientation"] = "RRS"
    with pytest.raises(ModelPackageError, match="orientation"):
        validate_metadata(broken)


def test_json_schema_subset_validator():
    schema = {
        "type": "object",
        "required": ["a"],
        "additionalProperties": False,
        "properties": {"a": {"type": "array", "items": {"type": "integer", "minimum": 0}}},
    }
    assert validation_errors({"a": [1, 2]}, schema) == []
    assert validation_errors({"a": [1, -1]}, schema) == ["$.a[1]: -1 is below the minimum 0"]
    assert validation_errors({"b": 1}, schema) == ["$: missing required key 'a'", "$: unexpected key 'b'"]
    assert validation_errors({"a": [True]}, schema) == ["$.a[0]: expected integer, got bool"]


def test_checksum_mismatch_is_refused(tmp_path):
    path = make_package(tmp_path)
    weights = path / "models/model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelPackageError, match="checksum mismatch"):
        load_package(path)


def test_weights_of_another_architecture_are_refused_naming_keys(tmp_path):
    other = build_network("NoToken", 1, 3, **TINY)
    path = make_package(tmp_path, network=build_network("8Token", 1, 3, **TINY))
    # swap in the weights of another architecture (and fix the checksum so only the fit check can fail)
    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in other.state_dict().items()})
    (path / "models/model.safetensors").write_bytes(data)
    metadata = json.loads((path / "configs/metadata.json").read_text())
    import hashlib

    metadata["tokenunet"]["weights"]["sha256"] = hashlib.sha256(data).hexdigest()
    (path / "configs/metadata.json").write_text(json.dumps(metadata))
    expected = r"do not fit the declared architecture '8Token'.*missing keys: .*token"
    with pytest.raises(ModelPackageError, match=expected):
        load_package(path)


def test_write_refuses_weights_that_do_not_fit(tmp_path):
    from TokenUNetSegmentLib.pipeline.package import make_metadata, write_package

    config = tiny_config()
    metadata = make_metadata(config, description="d", authors="a", copyright="c")
    with pytest.raises(ModelPackageError, match="shape mismatches"):
        write_package(
            tmp_path / "p", build_network("8Token", 1, 5, **TINY), metadata, license_text="x", readme_text="y"
        )
    assert not (tmp_path / "p").exists()


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch exploited-marker",))


def test_code_executing_pickle_is_refused_and_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"state_dict": {"w": _Exploit()}}, protocol=2))
    with pytest.raises(UnsafeWeightsError, match="contains code that would run"):
        state_dict_from_bytes(path.read_bytes(), path.name)
    assert not (tmp_path / "exploited-marker").exists()


def test_unsupported_weights_format_is_refused():
    with pytest.raises(UnsafeWeightsError, match="unsupported weights format"):
        state_dict_from_bytes(b"\x80\x04", "weights.pkl")


def test_plain_pt_state_dict_imports_through_weights_only(tmp_path, package_dir):
    network = build_network("8Token", 1, 3, **TINY)
    torch.save({"state_dict": network.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    new = package_from_weights(tmp_path / "ckpt.pt", load_package(package_dir), "tiny-2", tmp_path / "tiny-2")
    loaded = load_package(new)
    assert loaded.id == "tiny-2"
    torch.testing.assert_close(loaded.network.state_dict(), network.state_dict())


def test_zip_with_unsafe_member_paths_is_refused(tmp_path):
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("../configs/metadata.json", "{}")
    with pytest.raises(ModelPackageError, match="unsafe path"):
        load_package(path)


def test_shipped_catalog_validates():
    data = json.loads(DEFAULT_CATALOG.read_text())
    assert validation_errors(data, load_schema("catalog")) == []
    ModelStore(DEFAULT_CATALOG).entries()  # validates and resolves bundled paths


def test_home_folder_defaults_and_environment_override(monkeypatch, tmp_path):
    monkeypatch.delenv("TOKENUNET_HOME", raising=False)
    assert tokenunet_home() == __import__("pathlib").Path.home() / ".tokenunet"
    monkeypatch.setenv("TOKENUNET_HOME", str(tmp_path / "custom"))
    assert tokenunet_home() == tmp_path / "custom"
    assert ModelStore().cache_dir == tmp_path / "custom" / "models"


def test_catalog_bundled_downloadable_import_and_remove(tmp_path, package_dir):
    zipped = make_package(tmp_path / "dl", config=tiny_config("remote-model"), as_zip=True)
    bundled_root = tmp_path / "Resources"
    bundled_root.mkdir()
    catalog = bundled_root / "Models.json"
    catalog.write_text(
        json.dumps(
            {
                "default": "bundled-model",
                "models": [
                    {
                        "id": "bundled-model",
                        "description": "bundled",
                        "path": os.path.relpath(package_dir, bundled_root),
                    },
                    {
                        "id": "remote-model",
                        "description": "remote",
                        "url": zipped.as_uri(),
                        "sha256": sha256_file(zipped),
                    },
                ],
            }
        )
    )
    store = ModelStore(catalog, home=tmp_path / "home")
    entries = {e.id: e for e in store.entries()}
    assert entries["bundled-model"].source == "bundled" and entries["bundled-model"].available
    assert entries["remote-model"].source == "downloadable" and not entries["remote-model"].available
    assert store.load(None).id == "tiny-ct"  # the default, bundled
    # first use downloads (file:// here), checks the SHA256 and caches
    assert store.load("remote-model").id == "remote-model"
    assert {e.id: e.source for e in store.entries()}["remote-model"] == "cached"
    # import from a local file, then remove
    other = make_package(tmp_path / "imp", config=tiny_config("imported"), as_zip=True)
    cached = store.import_package(other)
    assert cached == store.cache_dir / "imported" and store.load("imported").id == "imported"
    with pytest.raises(ModelPackageError, match="already in the cache"):
        store.import_package(other)
    store.remove("imported")
    assert not cached.exists()
    with pytest.raises(ModelPackageError, match="unknown model id 'imported'"):
        store.load("imported")
    with pytest.raises(ModelPackageError, match="bundled, not in the cache"):
        store.remove("bundled-model")


def test_download_checksum_mismatch_is_refused(tmp_path):
    zipped = make_package(tmp_path / "dl", config=tiny_config("remote-model"), as_zip=True)
    catalog = tmp_path / "Models.json"
    catalog.write_text(
        json.dumps(
            {"models": [{"id": "remote-model", "description": "remote", "url": zipped.as_uri(), "sha256": "0" * 64}]}
        )
    )
    store = ModelStore(catalog, home=tmp_path / "home")
    with pytest.raises(ModelPackageError, match="checksum mismatch for the download"):
        store.load("remote-model")
    assert not (store.cache_dir / "remote-model").exists()


def test_unknown_model_id_lists_known_ones(tmp_path):
    store = ModelStore(tmp_path / "none.json", home=tmp_path / "home")
    with pytest.raises(ModelPackageError, match="unknown model id 'nope'") as info:
        store.load("nope")
    assert "known models" in info.value.hint
    with pytest.raises(ModelPackageError, match="model package not found"):
        store.load(str(tmp_path / "missing.zip"))


def test_inputs_are_assigned_by_filename_pattern():
    from TokenUNetSegmentLib.pipeline.package import assign_inputs

    config = tiny_config(in_channels=4)
    for entry, patterns in zip(
        config["inputs"], [["*t1n*", "*t1.*"], ["*t1c*"], ["*t2w*", "*t2.*"], ["*flair*"]], strict=True
    ):
        entry["patterns"] = patterns
    files = [
        "/data/BraTS-001-FLAIR.nii.gz",
        "/data/BraTS-001-t1c.nii.gz",
        "C:\\data\\BraTS-001-t2w.nii.gz",
        "/data/BraTS-001-t1n.nii.gz",
    ]
    assert assign_inputs(files, config) == {"ch0": files[3], "ch1": files[1], "ch2": files[2], "ch3": files[0]}
    assert assign_inputs(files[:2], config) == {"ch0": None, "ch1": files[1], "ch2": None, "ch3": files[0]}
    assert assign_inputs(["anything.nrrd"], tiny_config()) == {"ch0": "anything.nrrd"}
