"""Model packages: writing, loading (folder or zip), checksums and safe weights."""

import json
import os
import pickle
import zipfile

import pytest
import torch
from helpers.packages import TINY, make_package, tiny_config
from TokenUNetSegmentLib.model import build_network
from TokenUNetSegmentLib.pipeline.checksums import sha256_file
from TokenUNetSegmentLib.pipeline.errors import ModelPackageError, UnsafeWeightsError
from TokenUNetSegmentLib.pipeline.package_loader import load_package
from TokenUNetSegmentLib.pipeline.package_writer import package_from_weights
from TokenUNetSegmentLib.pipeline.weights import state_dict_from_bytes


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
    metadata = package.metadata.to_dict()
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
    from TokenUNetSegmentLib.pipeline.package_writer import make_metadata, write_package

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
