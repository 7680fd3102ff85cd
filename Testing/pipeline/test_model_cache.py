"""The model cache and packages under hostile input (issue 11, part 1), through the command line: ids that are
paths, the bundled model, existing ids, links and special files, oversized files, deep JSON, a network edited to
an absurd size, a full disk. Each time: exit 2 with one short line, nothing outside the cache read or changed,
the cache holding complete packages only."""

import json
import os
import shutil
import stat
import struct
import zipfile
from collections import namedtuple

import pytest
import torch
from helpers.disks import LINUX_MOUNT, tmpfs
from helpers.packages import make_package, tiny_config
from TokenUNetSegmentLib.pipeline import cli
from TokenUNetSegmentLib.pipeline.catalog import ModelStore
from TokenUNetSegmentLib.pipeline.package_source import MAX_ENTRIES, MAX_FILE_BYTES

BUNDLED = "bundled-model"


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A catalog with one bundled model, an empty cache, a victim folder outside both; returns a namespace."""
    resources = tmp_path / "Resources"
    bundled = make_package(resources / "Models", tiny_config(BUNDLED))
    catalog = resources / "Models.json"
    catalog.write_text(
        json.dumps({"default": BUNDLED, "models": [{"id": BUNDLED, "description": "b", "path": f"Models/{BUNDLED}"}]})
    )
    home = tmp_path / "home"
    monkeypatch.setenv("TOKENUNET_HOME", str(home))
    victim = tmp_path / "victim"
    (victim / "configs").mkdir(parents=True)
    (victim / "configs" / "metadata.json").write_text("{}")
    (victim / "private.txt").write_text("secret")

    class World:
        pass

    w = World()
    w.root, w.catalog, w.home, w.cache, w.bundled, w.victim = tmp_path, catalog, home, home / "models", bundled, victim
    w.store = ModelStore(catalog, home)
    return w


def run(world, capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["--catalog", str(world.catalog), "models", *argv])
    err = capsys.readouterr().err
    if code == 2:
        lines = err.strip().splitlines()
        assert lines and lines[-1].startswith("error: ") and len(lines[-1]) <= 200 and "Traceback" not in err
    return code, err


def tree(folder) -> dict:
    if not folder.exists():
        return {}
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def with_id(package, model_id, folder):
    """A copy of the package folder whose metadata names ``model_id``."""
    shutil.copytree(package, folder)
    metadata = folder / "configs" / "metadata.json"
    data = json.loads(metadata.read_text())
    data["tokenunet"]["id"] = model_id
    metadata.write_text(json.dumps(data))
    return folder


def assert_cache_clean(world, *ids):
    """The cache holds exactly the packages ``ids`` (complete) and no staging, lock or temporary leftovers."""
    names = sorted(os.listdir(world.cache)) if world.cache.exists() else []
    assert names == sorted(ids)
    for model_id in ids:
        assert world.store.load(model_id).id == model_id


@pytest.mark.parametrize("given", ["../../victim", "ABSOLUTE", "a/b", "..", ".", "x\n", "", "con", "-rf"])
def test_remove_never_acts_outside_the_cache(world, capsys, given):
    """Before: ``models remove ../../some/dir`` or an absolute path deleted that folder."""
    given = str(world.victim) if given == "ABSOLUTE" else given
    world.cache.mkdir(parents=True)
    os.chdir(world.cache)  # relative paths would reach the victim from here
    before = tree(world.root)
    code, err = run(world, capsys, "remove", given)
    assert code == 2 and ("not a valid model id" in err or "unknown model id" in err or "arguments are required" in err)
    assert tree(world.root) == before


def test_the_bundled_model_can_be_neither_removed_nor_shadowed(world, capsys, tmp_path, caplog):
    before = tree(world.bundled)
    code, err = run(world, capsys, "remove", BUNDLED)
    assert code == 2 and "is bundled, not in the cache" in err
    for model_id in (BUNDLED, BUNDLED.upper()):  # before: an import with the bundled id replaced the default
        package = with_id(world.bundled, model_id, tmp_path / f"copy-{model_id}")
        for extra in ([], ["--overwrite"]):
            code, err = run(world, capsys, "import", str(package), *extra)
            assert code == 2 and f"belongs to the bundled model '{BUNDLED}'" in err
    weights = tmp_path / "weights.pt"  # weights imported under the bundled id
    torch.save(world.store.load(BUNDLED).network.state_dict(), weights)
    code, err = run(world, capsys, "import", str(weights), "--like", BUNDLED, "--id", BUNDLED.upper())
    assert code == 2 and f"belongs to the catalog's model '{BUNDLED}' (choose another --id)" in err
    assert tree(world.bundled) == before and not world.cache.exists()
    # a folder put into the cache by hand under the bundled id is ignored, never used instead of the bundled model
    shutil.copytree(world.bundled, world.cache / BUNDLED)
    assert world.store.resolve(BUNDLED) == world.bundled.resolve()
    assert "named like the bundled model" in caplog.text
    # removing it (e.g. what an older version's import left) cleans the cache and leaves the bundled model
    assert run(world, capsys, "remove", BUNDLED)[0] == 0
    assert not (world.cache / BUNDLED).exists() and tree(world.bundled) == before
    code, err = run(world, capsys, "remove", BUNDLED)
    assert code == 2 and "is bundled, not in the cache" in err


def test_an_existing_cached_id_needs_overwrite(world, capsys, tmp_path):
    first = make_package(tmp_path / "a", tiny_config("mine"))
    assert run(world, capsys, "import", str(first))[0] == 0
    installed = tree(world.cache / "mine")
    second = make_package(tmp_path / "b", tiny_config("mine", labels=3))  # other weights and labels
    code, err = run(world, capsys, "import", str(second))
    assert code == 2 and "already in the cache" in err and "--overwrite" in err
    assert tree(world.cache / "mine") == installed
    code, err = run(world, capsys, "import", str(with_id(second, "MINE", tmp_path / "upper")), "--overwrite")
    assert code == 2 and "differs from 'MINE' only in case" in err
    assert run(world, capsys, "import", str(second), "--overwrite")[0] == 0
    assert world.store.load("mine").config.labels[-1].value == 3
    assert_cache_clean(world, "mine")


def test_remove_deletes_only_the_files_the_tool_wrote(world, capsys, tmp_path, caplog):
    assert run(world, capsys, "import", str(make_package(tmp_path, tiny_config("mine"))))[0] == 0
    (world.cache / "mine" / "docs" / "my-notes.txt").write_text("mine")
    assert run(world, capsys, "remove", "mine")[0] == 0
    assert tree(world.cache / "mine") == {"docs/my-notes.txt": b"mine"}
    assert "TokenUNet did not write" in caplog.text


def test_a_link_in_the_cache_is_removed_never_followed(world, capsys):
    world.cache.mkdir(parents=True)
    (world.cache / "linked").symlink_to(world.victim, target_is_directory=True)
    before = tree(world.victim)
    assert "linked" not in {e.id for e in world.store.entries()}
    assert run(world, capsys, "remove", "linked")[0] == 0
    assert not os.path.lexists(world.cache / "linked") and tree(world.victim) == before


def _folder_with(kind, package, root):
    folder = with_id(package, "hostile", root / f"pkg-{kind}")
    if kind == "linked licence":  # before: a private file was copied into the cache as a world-readable LICENSE
        (folder / "LICENSE").unlink()
        (folder / "LICENSE").symlink_to(root / "victim" / "private.txt")
    elif kind == "linked folder":
        shutil.rmtree(folder / "docs")
        (folder / "docs").symlink_to(root / "victim", target_is_directory=True)
    elif kind == "linked metadata":
        shutil.move(folder / "configs" / "metadata.json", root / "meta.json")
        (folder / "configs" / "metadata.json").symlink_to(root / "meta.json")
    elif kind == "fifo":
        os.mkfifo(folder / "docs" / "pipe")
    elif kind == "hard link":
        os.link(root / "victim" / "private.txt", folder / "docs" / "extra.txt")
    elif kind == "oversized file":
        with open(folder / "docs" / "big.bin", "wb") as stream:
            stream.truncate(MAX_FILE_BYTES + 1)  # sparse: nothing is written
    elif kind == "too many files":
        for index in range(MAX_ENTRIES + 1):
            (folder / "docs" / f"{index}.txt").touch()
    elif kind == "deep JSON":
        metadata = folder / "configs" / "metadata.json"
        text = metadata.read_text().rstrip()
        metadata.write_text(text[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}")
    return folder


FOLDER_FAULTS = {
    "linked licence": "contains a symbolic link (LICENSE)",
    "linked folder": "contains a symbolic link (docs)",
    "linked metadata": "as a link or special file",
    "fifo": "contains docs/pipe, which is a named pipe (FIFO), not a file",
    "hard link": "contains a hard-linked file (docs/extra.txt)",
    "oversized file": "has a file too large for a package: docs/big.bin",
    "too many files": f"holds more than {MAX_ENTRIES} files and folders",
    "deep JSON": "nests 100001 levels deep",
}


@pytest.mark.parametrize("kind", FOLDER_FAULTS)
def test_links_special_files_and_oversized_contents_of_a_package_folder_are_refused(world, capsys, kind, monkeypatch):
    package = _folder_with(kind, world.bundled, world.root)
    from TokenUNetSegmentLib.pipeline import package_source

    real_read = package_source.PackageSource.read
    monkeypatch.setattr(  # nothing is read whole beyond the metadata before the refusal
        package_source.PackageSource,
        "read",
        lambda self, name: real_read(self, name) if name.startswith("configs") else pytest.fail(name),
    )
    code, err = run(world, capsys, "import", str(package))
    assert code == 2 and FOLDER_FAULTS[kind] in err
    assert not world.cache.exists() or os.listdir(world.cache) == []


def _zip_with(kind, package, path):
    def member(name, data=b"", mode=None):
        info = zipfile.ZipInfo(name)
        if mode is not None:
            info.external_attr = mode << 16
        archive.writestr(info, data)

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(package.rglob("*")):
            if file.is_file():
                archive.write(file, "pkg/" + file.relative_to(package).as_posix())
        if kind == "symbolic link":
            member("pkg/docs/evil", b"/etc/passwd", stat.S_IFLNK | 0o777)
        elif kind == "fifo":
            member("pkg/docs/pipe", b"", stat.S_IFIFO | 0o644)
        elif kind == "device":
            member("pkg/docs/disk", b"", stat.S_IFBLK | 0o644)
        elif kind == "parent path":
            member("pkg/../../evil.txt", b"x")
        elif kind == "absolute path":
            member("/tmp/evil.txt", b"x")
        elif kind == "duplicate":
            member("pkg/LICENSE", b"again")
        elif kind == "oversized member":
            member("pkg/docs/big.bin", b"\0" * (MAX_FILE_BYTES + 1))
    if kind == "lying licence":  # declares 100 bytes, inflates to 20 MiB
        _rewrite_declared_size(path, "pkg/LICENSE", 100, b"L" * (20 * 2**20))
    return path


def _rewrite_declared_size(path, name, declared, content):
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist() if info.filename != name}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member_name, data in members.items():
            archive.writestr(member_name, data)
        archive.writestr(name, content)
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at != -1:  # the central directory entry, and the local header it points to
        length = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46 : at + 46 + length] == name.encode():
            struct.pack_into("<I", data, at + 24, declared)
            struct.pack_into("<I", data, struct.unpack_from("<I", data, at + 42)[0] + 22, declared)
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))


ZIP_FAULTS = {
    "symbolic link": "contains a symbolic link (pkg/docs/evil)",
    "fifo": "contains pkg/docs/pipe, which is a named pipe (FIFO), not a file",
    "device": "contains pkg/docs/disk, which is a block device, not a file",
    "parent path": "contains an unsafe path 'pkg/../../evil.txt'",
    "absolute path": "contains an unsafe path '/tmp/evil.txt'",
    "duplicate": "lists 'pkg/LICENSE' twice",
    "oversized member": "has a file too large for a package: docs/big.bin",
    "lying licence": "LICENSE",
}


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("kind", ZIP_FAULTS)
def test_hostile_zip_packages_are_refused(world, capsys, kind, tmp_path):
    package = _zip_with(kind, with_id(world.bundled, "hostile", tmp_path / "src"), tmp_path / "hostile.zip")
    code, err = run(world, capsys, "import", str(package))
    assert code == 2 and ZIP_FAULTS[kind] in err
    assert not world.cache.exists() or os.listdir(world.cache) == []
    assert not (tmp_path.parent / "evil.txt").exists()


def test_a_network_edited_to_an_absurd_size_is_refused_before_it_is_built(world, capsys, tmp_path, monkeypatch):
    """Before: a metadata edit of the channel counts allocated 4.3 GB in the network's constructor."""
    from TokenUNetSegmentLib.model import token_unet

    package = with_id(world.bundled, "huge", tmp_path / "huge")
    metadata = package / "configs" / "metadata.json"
    data = json.loads(metadata.read_text())
    data["tokenunet"]["architecture"]["parameters"]["channels"] = [8192, 16384, 32768, 65536]
    metadata.write_text(json.dumps(data))
    monkeypatch.setattr(token_unet.TokenUNet, "__init__", lambda *a, **k: pytest.fail("the network was built"))
    code, err = run(world, capsys, "import", str(package))
    assert code == 2 and "parameters) needs about" in err and "roi_size (16x16x16)" in err
    code, err = run(world, capsys, "info", str(package))  # metadata only: still readable
    assert code == 0
    data["tokenunet"]["architecture"]["parameters"]["channels"] = [64, 128, 256, 512]  # fits in memory, not the file
    metadata.write_text(json.dumps(data))
    code, err = run(world, capsys, "import", str(package))
    assert code == 2 and "cannot hold the declared network" in err
    data["tokenunet"]["architecture"]["parameters"] = {"channels": [4, 8, 16, 32], "no_such_option": 1}
    metadata.write_text(json.dumps(data))
    code, err = run(world, capsys, "import", str(package))
    assert code == 2 and "unexpected keyword argument 'no_such_option'" in err and "_size()" not in err


def test_free_space_is_checked_before_an_import_copies_anything(world, capsys, tmp_path, monkeypatch):
    package = make_package(tmp_path, tiny_config("mine"))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(10**9, 10**9 - 1000, 1000))
    code, err = run(world, capsys, "import", str(package))
    assert code == 2 and "needs about" in err and "free" in err
    assert os.listdir(world.cache) == []


@pytest.mark.skipif(not LINUX_MOUNT, reason="Linux tmpfs")
def test_a_cache_on_a_full_disk_keeps_what_it_had(world, capsys, tmp_path, monkeypatch):
    """A real 4 MiB tmpfs, then nearly filled: a second package (and an --overwrite of the first) is refused by the
    free-space check, and, with that check off, by the disk itself half way through the copy."""
    from TokenUNetSegmentLib.pipeline.output_folder import OutputFolder

    small = make_package(tmp_path / "a", tiny_config("small"))
    with tmpfs(tmp_path / "disk", "4m") as disk:
        monkeypatch.setenv("TOKENUNET_HOME", str(disk / "home"))
        world.cache, world.store = disk / "home" / "models", ModelStore(world.catalog, disk / "home")
        assert run(world, capsys, "import", str(small))[0] == 0
        installed = tree(world.cache / "small")
        (disk / "filler").write_bytes(b"\0" * (shutil.disk_usage(disk).free - 60_000))
        other = with_id(small, "other", tmp_path / "other")
        for check in ("on", "off"):
            if check == "off":
                monkeypatch.setattr(OutputFolder, "check_space", lambda self, expected: None)
            for argv in (["import", str(other)], ["import", str(small), "--overwrite"]):
                code, err = run(world, capsys, *argv)
                assert code == 2 and ("free" if check == "on" else "is full") in err
                assert tree(world.cache / "small") == installed
        assert_cache_clean(world, "small")
