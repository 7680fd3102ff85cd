"""The output folder: its writer and its reader agree (a round trip without Slicer), and the 2 GiB grid rule."""

import json

import numpy as np
import pytest
from helpers.packages import ball_phantom, threshold_package
from TokenUNetSegmentLib.pipeline.errors import InputError
from TokenUNetSegmentLib.pipeline.nrrd import read_nrrd_fields
from TokenUNetSegmentLib.pipeline.outputs import (
    ATTENTION_DIR,
    SCALE_FIELD,
    TOKEN_GRID_LEVELS,
    choose_attention_grid,
    read_outputs,
    token_map_file,
    write_outputs,
)
from TokenUNetSegmentLib.pipeline.segmentation import segment

AFFINE = np.array([[1.5, 0, 0, -10.0], [0, -1.5, 0, 20.0], [0, 0, 2.5, -5.0], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def result():
    image = ball_phantom((40, 36, 24), (20, 18, 12), (9, 8, 6))
    return segment([(image, AFFINE)], threshold_package(), device="cpu", probabilities=True)


def test_the_folder_reads_back_as_the_result_it_was_written_from(result, tmp_path):
    written = write_outputs(result, tmp_path / "out", attention_grid="token", overview=False)
    assert set(written) == {"segmentation", "attention", "probabilities", "report"}
    back = read_outputs(tmp_path / "out", AFFINE)
    np.testing.assert_array_equal(back.labels, result.labels)
    np.testing.assert_array_equal(back.affine, AFFINE)
    assert back.label_table == result.label_table and back.model_id == result.model_id
    assert back.volumes_ml == pytest.approx(result.volumes_ml, abs=1e-3) and back.device == result.device
    assert back.token_matches == result.token_matches and back.warnings == result.warnings
    assert back.assessment == result.assessment and back.assessment.labels["ball"].confidence > 0.5  # confidence, flags
    assert back.token_maps.kinds == result.token_maps.kinds and back.token_maps.num_tokens == 2
    np.testing.assert_allclose(back.token_maps.coarse_grid.affine, result.token_maps.coarse_grid.affine, atol=1e-6)
    step = 1 / TOKEN_GRID_LEVELS
    for kind in result.token_maps.kinds:  # written as uint8 steps of 1/255
        np.testing.assert_allclose(back.token_maps.coarse[kind], result.token_maps.coarse[kind], atol=0.5 * step + 1e-7)
        np.testing.assert_allclose(back.token_maps.get(kind, 0), result.token_maps.get(kind, 0), atol=step)
    for name, array in result.probabilities.items():
        np.testing.assert_allclose(back.probabilities[name], array, atol=1e-6)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {m["file"] for m in report["attention_maps"]} == {
        token_map_file(t, k) for k in ("gather", "broadcast") for t in (0, 1)
    }
    assert sorted(report["files"]) == sorted(["segmentation.seg.nrrd", ATTENTION_DIR, "probabilities", "report.json"])


def test_token_grid_maps_are_uint8_with_their_scale_and_input_grid_maps_float32(result, tmp_path):
    write_outputs(result, tmp_path / "token", overview=False)  # the token grid by default
    write_outputs(result, tmp_path / "input", attention_grid="input", overview=False)
    coarse_file, fine_file = (
        tmp_path / "token" / token_map_file(0, "gather"),
        tmp_path / "input" / token_map_file(0, "gather"),
    )
    coarse_fields, fine_fields = read_nrrd_fields(coarse_file), read_nrrd_fields(fine_file)
    assert coarse_fields["type"] == "uint8" and float(coarse_fields[SCALE_FIELD]) == pytest.approx(1 / 255)
    assert coarse_fields["sizes"] == " ".join(map(str, result.token_maps.coarse_grid.shape))
    assert fine_fields["type"] == "float" and SCALE_FIELD not in fine_fields
    assert coarse_file.stat().st_size * 20 < fine_file.stat().st_size


def test_the_reader_refuses_maps_on_the_input_grid_and_another_geometry(result, tmp_path):
    write_outputs(result, tmp_path / "input", attention_grid="input", overview=False)
    with pytest.raises(InputError, match="not written on the token grid"):
        read_outputs(tmp_path / "input")
    write_outputs(result, tmp_path / "token", attention_grid="token", overview=False)
    moved = AFFINE.copy()
    moved[0, 3] += 5.0
    with pytest.raises(InputError, match="geometry differs"):
        read_outputs(tmp_path / "token", moved)


def test_a_nan_in_a_result_file_is_refused_in_the_words_of_loading_it(result, tmp_path):
    """Before: "... has 1 NaN or infinite voxels (replace them (e.g. by the background value) before segmenting)", the
    words of ``segment``'s input, for a file of a result read back (a subprocess run's folder, Slicer's)."""
    import SimpleITK as sitk
    from TokenUNetSegmentLib.pipeline.outputs import PROBABILITY_DIR

    write_outputs(result, tmp_path / "out", overview=False)
    (path,) = (tmp_path / "out" / PROBABILITY_DIR).iterdir()
    image = sitk.ReadImage(str(path))
    values = sitk.GetArrayFromImage(image)
    values[0, 0, 0] = np.nan
    changed = sitk.GetImageFromArray(values)
    changed.CopyInformation(image)
    sitk.WriteImage(changed, str(path))
    with pytest.raises(InputError, match=f"^{path.name} has 1 NaN or infinite voxels") as refused:
        read_outputs(tmp_path / "out")
    assert refused.value.hint.endswith(" before loading the result"), refused.value.hint


def test_auto_attention_grid_keeps_the_input_grid_until_maps_get_large():
    assert choose_attention_grid("auto", 1, 8, 122 * 101 * 112) == "input"
    assert choose_attention_grid("auto", 2, 32, 512 * 512 * 300) == "token"  # 64 maps of 300 MB each
    assert choose_attention_grid("auto", 2, 32, 512 * 512 * 300, limit=2**40) == "input"
    assert (
        choose_attention_grid("token", 1, 1, 1) == "token" and choose_attention_grid("input", 9, 99, 10**9) == "input"
    )
    with pytest.raises(ValueError, match="unknown attention grid 'coarse'"):
        choose_attention_grid("coarse", 1, 1, 1)


@pytest.mark.parametrize("order", ["C", "F"])
def test_label_extents_are_each_values_index_bounds_whatever_the_values_and_slabs(order):
    from TokenUNetSegmentLib.pipeline.nrrd import label_extents

    rng = np.random.default_rng(4)
    labels = np.zeros((30, 20, 17), np.uint8, order=order)
    labels[3:9, 5:6, 2:16] = 1
    labels[rng.integers(0, 30, 40), rng.integers(0, 20, 40), rng.integers(0, 17, 40)] = 7
    labels[29, 0, 16] = 63  # the widest word's last bit
    labels[12, 13, 4] = 64  # beyond it: the one-label path
    labels[0, 19, 0] = 200  # a value that is not asked for
    values = [1, 2, 7, 63, 64]

    def expected(value):
        hits = np.argwhere(labels == value)
        if not hits.size:
            return "0 -1 0 -1 0 -1"
        return " ".join(f"{lo} {hi}" for lo, hi in zip(hits.min(axis=0), hits.max(axis=0), strict=True))

    for chunk in (1, 600, 1 << 23):  # one k-slice per slab, a few, all at once
        assert label_extents(labels, values, chunk_voxels=chunk) == {v: expected(v) for v in values}
    assert label_extents(labels[:, :, :0], [1]) == {1: "0 -1 0 -1 0 -1"}
    small = np.where(labels < 16, labels, 0).astype(np.uint8)
    assert label_extents(small, [1, 7]) == {1: "3 8 5 5 2 15", 7: label_extents(labels, [7])[7]}  # 16-bit words


def test_the_overview_drawn_next_to_the_other_files_is_in_the_folder_or_nothing_is(result, tmp_path, monkeypatch):
    """The overview is rendered in a thread while the segmentation and maps are written: it lands in the folder
    with them, its error is the write's error, and when another file fails the folder is removed only once the
    drawing has ended (a late overview would otherwise recreate the removed staging folder)."""
    import threading
    import time

    from TokenUNetSegmentLib.pipeline import outputs, overview

    image = ball_phantom((40, 36, 24), (20, 18, 12), (9, 8, 6))
    drawn_in = []

    def slow_overview(path, *args):
        drawn_in.append(threading.current_thread())
        time.sleep(0.3)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"png")
        return path

    monkeypatch.setattr(overview, "render_overview", slow_overview)
    written = write_outputs(result, tmp_path / "out", image=image)
    assert (tmp_path / "out" / "overview.png").read_bytes() == b"png" and "overview" in written
    assert drawn_in and threading.main_thread() not in drawn_in
    assert "overview.png" in json.loads((tmp_path / "out" / "report.json").read_text())["files"]

    def failing_segmentation(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "write_segmentation", failing_segmentation)
    with pytest.raises(Exception, match="is full"):
        write_outputs(result, tmp_path / "failed", image=image)
    time.sleep(0.4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no folder, no staging left behind

    def failing_overview(*args):
        raise ValueError("cannot draw")

    monkeypatch.undo()  # the real segmentation writer
    monkeypatch.setattr(overview, "render_overview", failing_overview)
    with pytest.raises(ValueError, match="cannot draw"):
        write_outputs(result, tmp_path / "again", image=image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_auto_attention_bounds_use_the_packages_token_count_when_known():
    """With the package's token count (read from its configuration before torch is imported) ``auto`` is decided as
    the writer will decide it: a 512 x 512 x 300 CT keeps its 64 maps on the token grid, counted as such on disk
    (before: up to 2 GiB of input-grid maps, 1.07 GiB estimated for about 1 MB written)."""
    from TokenUNetSegmentLib.pipeline.outputs import AUTO_INPUT_GRID_LIMIT, attention_bounds

    ct = 512 * 512 * 300
    assert attention_bounds("auto", 64, ct, exact=True) == (False, ct // 512)
    assert attention_bounds("auto", 64, ct) == (True, AUTO_INPUT_GRID_LIMIT // (4 * 64))  # the count unknown: a bound
    small = 100**3
    assert attention_bounds("auto", 64, small, exact=True) == attention_bounds("input", 64, small) == (True, small)
