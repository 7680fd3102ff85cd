"""Property-based tests of the package importer (hypothesis, issue 11 part 5): damaged zips, hostile extra members
and random metadata edits. Each example: the import gives a complete cached package or a ``TokenUNetError``
(nothing else), writes nothing outside the cache, and leaves no partial package, staging folder or lock there."""

import itertools
import json
import os
import stat
import zipfile

import pytest
from helpers.fuzz import bounded
from helpers.packages import make_package, tiny_config
from hypothesis import given
from hypothesis import strategies as st
from TokenUNetSegmentLib.pipeline.catalog import ModelStore
from TokenUNetSegmentLib.pipeline.errors import TokenUNetError
from TokenUNetSegmentLib.pipeline.package_source import METADATA_FILE, TEXT_FILES, WEIGHTS_FILE

BOUNDED = bounded(40)
PACKAGE_FILES = sorted((*TEXT_FILES, WEIGHTS_FILE))
_counter = itertools.count()
pytestmark = pytest.mark.filterwarnings("ignore:Duplicate name")  # a zip listing a name twice is one of the inputs


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("packages-fuzz")
    zipped = make_package(root, tiny_config("fuzz"), as_zip=True)
    catalog = root / "Models.json"
    catalog.write_text('{"models": []}')
    with zipfile.ZipFile(zipped) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    return root, catalog, zipped.read_bytes(), members


def import_and_check(root, catalog, write_package_file):
    """Import the package ``write_package_file(folder)`` writes into a fresh folder; check the properties."""
    example = root / f"example-{next(_counter)}"
    example.mkdir()
    source = write_package_file(example)
    outside = sorted(os.listdir(example))
    store = ModelStore(catalog, example / "home")
    try:
        cached = store.import_package(source)
    except TokenUNetError as error:
        assert str(error) and "\n" not in error.message
        cached = None
    assert sorted(os.listdir(example)) == sorted({*outside, "home"} if (example / "home").exists() else outside)
    names = sorted(os.listdir(store.cache_dir)) if store.cache_dir.exists() else []
    if cached is None:
        assert names == []  # no partial package, staging folder or lock
        return None
    assert names == [cached.name]
    files = sorted(p.relative_to(cached).as_posix() for p in cached.rglob("*") if p.is_file())
    assert files == sorted([*PACKAGE_FILES, ".tokenunet-manifest.json"])  # only the package's own files
    assert store.load(cached.name).id == cached.name
    return cached


@BOUNDED
@given(data=st.data())
def test_damaged_zip_bytes(base, data):
    root, catalog, original, _ = base
    damaged = bytearray(original)
    kind = data.draw(st.sampled_from(["flip", "truncate", "zero run"]))
    at = data.draw(st.integers(0, len(damaged) - 1))
    if kind == "flip":
        damaged[at] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        del damaged[at:]
    else:
        damaged[at : at + data.draw(st.integers(1, 4096))] = bytes(min(4096, len(damaged) - at))

    def write(folder):
        (folder / "fuzz.zip").write_bytes(bytes(damaged))
        return folder / "fuzz.zip"

    cached = import_and_check(root, catalog, write)
    if cached is not None:  # the damage missed everything the package uses: what was installed is the original
        _, _, _, members = base
        for name in PACKAGE_FILES:
            assert (cached / name).read_bytes() == members[name]


MODES = {
    "file": stat.S_IFREG | 0o644,
    "no mode": 0,
    "link": stat.S_IFLNK | 0o777,
    "fifo": stat.S_IFIFO | 0o644,
    "device": stat.S_IFCHR | 0o644,
    "socket": stat.S_IFSOCK | 0o644,
}
NAME_PARTS = st.sampled_from(["docs", "..", ".", "", "models", "configs", "x", "LICENSE", "a\\b", "c:", "é", "/"])


@BOUNDED
@given(
    extras=st.lists(
        st.tuples(st.lists(NAME_PARTS, min_size=1, max_size=4), st.sampled_from(sorted(MODES)), st.binary(max_size=64)),
        min_size=1,
        max_size=4,
    ),
    prefix=st.sampled_from(["", "pkg/", "a/b/"]),
)
def test_hostile_extra_members(base, extras, prefix):
    root, catalog, _, members = base
    safe = True

    def write(folder):
        nonlocal safe
        path = folder / "fuzz.zip"
        with zipfile.ZipFile(path, "w") as archive:
            for name, content in members.items():
                archive.writestr(prefix + name, content)
            for parts, mode, content in extras:
                name = "/".join(parts)
                if not name.strip("/"):
                    continue
                info = zipfile.ZipInfo(name)
                info.external_attr = MODES[mode] << 16
                archive.writestr(info, content)
                plain = mode in ("file", "no mode") and not name.endswith("/")
                clean = not (name.startswith("/") or ".." in name.split("/") or "\\" in name or ":" in name)
                safe = safe and plain and clean and name not in (prefix + m for m in members)
        return path

    cached = import_and_check(root, catalog, write)
    if not safe:
        assert cached is None


LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8))
NESTED = st.lists(LEAF, max_size=3) | st.dictionaries(st.text(max_size=6), LEAF, max_size=3)
JSON = LEAF | NESTED | st.lists(NESTED, max_size=2) | st.dictionaries(st.text(max_size=6), NESTED, max_size=2)


def _paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


@BOUNDED
@given(data=st.data())
def test_random_metadata_edits(base, data):
    root, catalog, _, members = base
    document = json.loads(members[METADATA_FILE])
    paths = [p for p in _paths(document["tokenunet"], ("tokenunet",)) if len(p) > 1]
    edits = data.draw(st.lists(st.tuples(st.sampled_from(paths), JSON | st.just("DELETE")), min_size=1, max_size=3))
    for path, value in edits:
        parent = document
        try:
            for key in path[:-1]:
                parent = parent[key]
            if value == "DELETE":
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):  # an earlier edit removed or replaced the way there
            continue

    def write(folder):
        path = folder / "fuzz.zip"
        with zipfile.ZipFile(path, "w") as archive:
            for name, content in members.items():
                archive.writestr(name, json.dumps(document).encode() if name == METADATA_FILE else content)
        return path

    import_and_check(root, catalog, write)
