"""The model catalog and the per-user cache: listing, resolving without loading, downloads (with progress and
cancel), import and remove."""

import json
import os
from pathlib import Path

import pytest
from helpers.packages import make_package, tiny_config
from TokenUNetSegmentLib.pipeline.catalog import DEFAULT_CATALOG, ModelStore, tokenunet_home
from TokenUNetSegmentLib.pipeline.checksums import sha256_file
from TokenUNetSegmentLib.pipeline.errors import CancelledError, ModelPackageError
from TokenUNetSegmentLib.pipeline.jsonschema_lite import validation_errors
from TokenUNetSegmentLib.pipeline.metadata import load_schema


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory):
    return make_package(tmp_path_factory.mktemp("pkg"))


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


def remote_catalog(tmp_path, inputs=None):
    """A catalog whose one model is downloadable (a file:// URL) and whose default it is."""
    zipped = make_package(tmp_path / "dl", config=tiny_config("remote-model"), as_zip=True)
    entry = {"id": "remote-model", "description": "remote", "url": zipped.as_uri(), "sha256": sha256_file(zipped)}
    if inputs:
        entry["inputs"] = inputs
    catalog = tmp_path / "Models.json"
    catalog.write_text(json.dumps({"default": "remote-model", "models": [entry]}))
    return catalog


def test_input_channels_are_known_without_loading_or_downloading(tmp_path, package_dir):
    store = ModelStore(remote_catalog(tmp_path, inputs=["ct"]), home=tmp_path / "home")
    assert store.input_names(None) == ["ct"]  # from the catalog: nothing is downloaded
    assert store.local_path("remote-model") is None and not store.cache_dir.exists()
    assert ModelStore(remote_catalog(tmp_path / "b"), home=tmp_path / "home").input_names(None) is None
    assert store.input_names(str(package_dir)) == ["ch0"]  # a local package: its metadata
    assert store.local_path(str(package_dir)) == Path(package_dir)


def test_download_reports_progress_and_stops_on_cancel_leaving_nothing(tmp_path, monkeypatch):
    from TokenUNetSegmentLib.pipeline import catalog as catalog_module

    store = ModelStore(remote_catalog(tmp_path), home=tmp_path / "home")
    original = catalog_module._copy_with_progress
    monkeypatch.setattr(  # small chunks, so a tiny package takes several
        catalog_module, "_copy_with_progress", lambda *a, **k: original(*a, **{**k, "chunk": 4096})
    )
    calls = []
    with pytest.raises(CancelledError):
        store.resolve("remote-model", cancel=lambda: len(calls) > 1, progress=calls.append)
    assert 0 < calls[-1] < 1 and not (store.cache_dir / "remote-model").exists()
    assert [p.name for p in store.cache_dir.iterdir()] == []  # the partial download is gone
    fractions = []
    path = store.resolve("remote-model", progress=fractions.append)
    assert path == store.cache_dir / "remote-model" and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert len(fractions) > 2
