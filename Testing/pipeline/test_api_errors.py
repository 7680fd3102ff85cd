"""The Python API's errors (issue 11, part 4): a wrong argument to a public function is a ``TokenUNetError``
subclass (``ArgumentError`` for the wrong kind of value) with a plain-language message, never a ``TypeError``,
``KeyError`` or ``ValueError`` from deep inside. Named cases first, then any value (hypothesis)."""

import os

import numpy as np
import pytest
from helpers.fuzz import bounded
from hypothesis import given
from hypothesis import strategies as st
from TokenUNetSegmentLib.pipeline import evaluate, metadata, outputs, segmentation, volumes
from TokenUNetSegmentLib.pipeline.catalog import ModelStore
from TokenUNetSegmentLib.pipeline.errors import ArgumentError, InputError, ModelPackageError, TokenUNetError
from TokenUNetSegmentLib.pipeline.package_loader import load_package
from TokenUNetSegmentLib.pipeline.package_writer import write_package

BOUNDED = bounded(40)


@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_package):
    """The loaded tiny package, a store with an empty cache, and an empty working folder (so that random text is
    never an existing path)."""
    root = tmp_path_factory.mktemp("api")
    (root / "cwd").mkdir()
    catalog = root / "Models.json"
    catalog.write_text('{"models": []}')
    return load_package(tiny_package), ModelStore(catalog, root / "home"), root


CASES = {
    "segment(None)": (lambda p, s, r: segmentation.segment(None, p), ArgumentError, "the inputs are a path"),
    "segment([123])": (lambda p, s, r: segmentation.segment([123], p), InputError, "unsupported input int"),
    "segment(2D array)": (
        lambda p, s, r: segmentation.segment([(np.zeros((4, 4)), np.eye(4))], p),
        InputError,
        "2D image",
    ),
    "segment(NaN matrix)": (
        lambda p, s, r: segmentation.segment([(np.zeros((8, 8, 8), np.float32), np.full((4, 4), np.nan))], p),
        InputError,
        "finite 4x4",
    ),
    "segment(device=5)": (
        lambda p, s, r: segmentation.segment([(np.zeros((8, 8, 8), np.float32), np.eye(4))], p, device=5),
        TokenUNetError,
        "a device is a name",
    ),
    "segment(overlap=2)": (
        lambda p, s, r: segmentation.segment([(np.zeros((8, 8, 8), np.float32), np.eye(4))], p, overlap=2),
        InputError,
        "overlap must be in [0, 1)",
    ),
    "segment(two channels)": (
        lambda p, s, r: segmentation.segment([(np.zeros((8, 8, 8)), np.eye(4))] * 2, p),
        InputError,
        "needs 1 input channel(s)",
    ),
    "load_package(None)": (lambda p, s, r: load_package(None), ArgumentError, "must be a file or folder path"),
    "ModelStore(5)": (lambda p, s, r: ModelStore(5), ArgumentError, "the catalog must be a file or folder path"),
    "import_package(5)": (lambda p, s, r: s.import_package(5), ArgumentError, "must be a file or folder path"),
    "remove(None)": (lambda p, s, r: s.remove(None), ModelPackageError, "a model id must be text"),
    "entry(5)": (lambda p, s, r: s.entry(5), ModelPackageError, "a model id must be text"),
    "resolve(5)": (lambda p, s, r: s.resolve(5), ModelPackageError, "a model is an id or a package path"),
    "read_volume(5)": (lambda p, s, r: volumes.read_volume(5), ArgumentError, "must be a file or folder path"),
    "evaluate_files(None)": (lambda p, s, r: evaluate.evaluate_files(None, None), ArgumentError, "file or folder"),
    "write_outputs(None)": (
        lambda p, s, r: outputs.write_outputs(None, r / "out"),
        ArgumentError,
        "needs a SegmentationResult",
    ),
    "parse_config(5)": (lambda p, s, r: metadata.parse_config(5), ModelPackageError, "expected object"),
    "write_package(None)": (
        lambda p, s, r: write_package(r / "pkg", None, {}, license_text="", readme_text=""),
        ArgumentError,
        "needs a torch network",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_wrong_arguments_raise_typed_errors(api, case):
    call, kind, words = CASES[case]
    with pytest.raises(kind) as raised:
        call(*api)
    assert words in str(raised.value) and len(str(raised.value)) < 300


ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(alphabet=st.characters(blacklist_characters="/\\.~", blacklist_categories=("Cs",)), max_size=20),
    st.binary(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.tuples(st.integers(), st.text(max_size=3)),
)


@BOUNDED
@given(value=ANYTHING, target=st.sampled_from(["segment", "read_volume", "load_package", "store", "evaluate"]))
def test_any_value_gives_a_result_or_a_typed_error(api, value, target):
    package, store, root = api
    calls = {
        "segment": lambda: segmentation.segment(value, package, device="cpu"),
        "read_volume": lambda: volumes.read_volume(value),
        "load_package": lambda: load_package(value),
        "store": lambda: (store.entry(value), store.remove(value)),
        "evaluate": lambda: evaluate.evaluate_files(value, value),
    }
    before = os.getcwd()
    os.chdir(root / "cwd")
    try:
        calls[target]()
    except TokenUNetError as error:
        assert str(error) and "Traceback" not in str(error)
    finally:
        os.chdir(before)
    assert os.listdir(root / "cwd") == []
