"""The evaluate command: Dice, HD95 and volume difference per label, labels matched by name."""

import json
import os
import re
import sys
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
from helpers.packages import ball_phantom, make_package, tiny_config
from helpers.readers import refuse_reading, sparse_nrrd
from TokenUNetSegmentLib.pipeline import cli, evaluate, surface_distance
from TokenUNetSegmentLib.pipeline.errors import InputError
from TokenUNetSegmentLib.pipeline.evaluate import evaluate_files, label_metrics, match_labels, name_table
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing, image_from_array
from TokenUNetSegmentLib.pipeline.metadata import Label
from TokenUNetSegmentLib.pipeline.nrrd import write_segmentation
from TokenUNetSegmentLib.pipeline.surface_distance import hausdorff95

AFFINE = affine_from_spacing((2.0, 2.0, 3.0))
SHAPE = (30, 30, 20)


def two_balls():
    labels = np.zeros(SHAPE, np.uint8)
    labels[ball_phantom(SHAPE, (9, 15, 10), (5, 5, 4)) > 0] = 1
    labels[ball_phantom(SHAPE, (21, 15, 10), (4, 6, 4)) > 0] = 2
    return labels


def write(path, array, names=None):
    sitk.WriteImage(image_from_array(array, AFFINE), str(path))
    if names is not None:
        stem = path.name[: -len(".nii.gz")]
        path.with_name(stem + ".json").write_text(json.dumps(names))
    return path


def test_identical_gives_dice_one_and_zero_distance():
    labels = two_balls()
    metrics = label_metrics(labels, labels, [(1, 1, "a"), (2, 2, "b")], (2.0, 2.0, 3.0))
    for m in metrics.values():
        assert m["dice"] == pytest.approx(1.0)
        assert m["hd95_mm"] == pytest.approx(0.0)
        assert m["volume_difference_ml"] == 0.0
    assert metrics["a"]["volume_ml"] == pytest.approx((labels == 1).sum() * 12 / 1000, abs=1e-3)


def test_disjoint_gives_dice_zero_and_the_distance_apart():
    labels = two_balls()
    metrics = label_metrics(labels, labels, [(1, 2, "swapped")], (2.0, 2.0, 3.0))
    assert metrics["swapped"]["dice"] == 0.0
    assert 10.0 < metrics["swapped"]["hd95_mm"] < 40.0
    empty = label_metrics(np.zeros(SHAPE, np.uint8), labels, [(1, 1, "a"), (3, 3, "none")], (1, 1, 1))
    assert empty["a"]["dice"] == 0.0 and empty["a"]["hd95_mm"] is None
    assert empty["none"]["dice"] is None and empty["a"]["volume_difference_percent"] == -100.0


def test_shifted_ball_has_known_dice():
    a = np.zeros(SHAPE, np.uint8)
    b = np.zeros(SHAPE, np.uint8)
    a[5:15, 5:15, 5:15] = 1
    b[10:20, 5:15, 5:15] = 1  # half overlap
    assert label_metrics(a, b, [(1, 1, "cube")], (1, 1, 1), hd95=False)["cube"]["dice"] == pytest.approx(0.5)


def test_labels_are_matched_by_name_not_value(tmp_path):
    labels = two_balls()
    swapped = np.zeros_like(labels)
    swapped[labels == 1], swapped[labels == 2] = 7, 3
    reference = write(tmp_path / "ref.nii.gz", swapped, {"7": "Left Kidney", "3": "spleen", "9": "liver"})
    prediction = tmp_path / "pred.seg.nrrd"
    table = [Label(1, "left kidney", (1, 2, 3)), Label(2, "Spleen", (3, 2, 1)), Label(3, "aorta", (0, 0, 0))]
    write_segmentation(prediction, labels, AFFINE, table)
    assert name_table(prediction) == {1: "left kidney", 2: "Spleen", 3: "aorta"}
    result = evaluate_files(prediction, reference)
    assert result["labels"]["left kidney"]["dice"] == pytest.approx(1.0)
    assert result["labels"]["Spleen"]["dice"] == pytest.approx(1.0)
    assert result["unmatched"] == {"prediction_only": ["aorta"], "reference_only": ["liver"]}
    pairs, _ = match_labels({1: "inferior-vena cava"}, {5: "Inferior vena_cava"})
    assert pairs == [(1, 5, "inferior-vena cava")]


def test_prediction_on_another_grid_is_resampled(tmp_path):
    labels = two_balls()
    reference = write(tmp_path / "ref.nii.gz", labels, {"1": "a", "2": "b"})
    fine = np.repeat(labels, 2, axis=0)  # 1 mm along i, same physical extent
    fine_affine = affine_from_spacing((1.0, 2.0, 3.0), origin=(-0.5, 0, 0))
    sitk.WriteImage(image_from_array(fine, fine_affine), str(tmp_path / "pred.nii.gz"))
    result = evaluate_files(tmp_path / "pred.nii.gz", reference, prediction_names={"1": "a", "2": "b"})
    assert result["labels"]["a"]["dice"] > 0.95 and result["labels"]["b"]["dice"] > 0.95


def test_missing_name_table_is_an_error(tmp_path):
    labels = two_balls()
    reference = write(tmp_path / "ref.nii.gz", labels, {"1": "a"})
    prediction = write(tmp_path / "pred.nii.gz", labels)
    with pytest.raises(InputError, match="no name table"):
        evaluate_files(prediction, reference)


def test_evaluate_command_writes_json_and_a_table(tmp_path, capsys):
    labels = two_balls()
    reference = write(tmp_path / "ref.nii.gz", labels, {"1": "organ1", "2": "organ2"})
    damaged = labels.copy()
    damaged[damaged == 2] = 0
    prediction = write(tmp_path / "pred.nii.gz", damaged, {"1": "organ1", "2": "organ2"})
    out = tmp_path / "metrics.json"
    assert cli.main(["evaluate", str(reference), "--prediction", str(prediction), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "organ1" in printed and "1.000" in printed and "mean" in printed
    result = json.loads(out.read_text())
    assert result["labels"]["organ1"]["dice"] == pytest.approx(1.0)
    assert result["labels"]["organ2"]["dice"] == 0.0
    assert result["mean_dice"] == pytest.approx(0.5)


def test_evaluate_names_the_file_it_wrote_with_the_home_folder_expanded(tmp_path, capsys, monkeypatch):
    """``--json '~/m.json'`` (a tilde the shell left, as a quoted path or a program's argument list has it) writes
    into the home folder; before, the command printed "wrote ~/m.json" as typed, not where the file is."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    labels = two_balls()
    reference = write(tmp_path / "ref.nii.gz", labels, {"1": "organ1", "2": "organ2"})
    assert cli.main(["evaluate", str(reference), "--prediction", str(reference), "--json", "~/m.json"]) == 0
    written = (tmp_path / "home" / "m.json").resolve()
    assert written.is_file() and not (tmp_path / "~").exists()
    assert f"wrote {written}" in capsys.readouterr().err.splitlines()


def test_nan_in_a_map_to_evaluate_is_refused_in_evaluates_words(tmp_path, capsys):
    """A NaN in the reference or the prediction is refused with what to do before evaluating (before: segment's hint,
    "... before segmenting", shared by the readers); a volume given to segment keeps segment's words. A NaN in an NRRD
    or MetaImage map (read as it is) is refused in the same words (before smallfix: numpy's "invalid value encountered
    in cast" warning came first; before review2: "holds values that are not whole numbers (e.g. nan; ...)")."""
    labels = two_balls().astype(np.float32)
    good = write(tmp_path / "good.nii.gz", labels)
    labels[3, 4, 5] = np.nan
    bad = write(tmp_path / "bad.nii.gz", labels)
    for reference, prediction in ((bad, good), (good, bad)):
        assert cli.main(["evaluate", str(reference), "--prediction", str(prediction)]) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line == "error: bad.nii.gz has 1 NaN or infinite voxels (replace them (e.g. by the background value) " \
            "before evaluating)", line  # fmt: skip
    assert cli.main(["segment", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().endswith("before segmenting)") and not (tmp_path / "out").exists()
    for name in ("bad.nrrd", "bad.mha"):  # read as they are (found by review2; before: "bad.nrrd holds values that are
        # not whole numbers (e.g. nan; a probability map, or linear interpolation?) (resample label maps with nearest
        # neighbour; ...)", where the NIfTI said what it is)
        sitk.WriteImage(image_from_array(labels, AFFINE), str(tmp_path / name))
        assert cli.main(["evaluate", str(tmp_path / name), "--prediction", str(good)]) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line == f"error: {name} has 1 NaN or infinite voxels (replace them (e.g. by the background value) " \
            "before evaluating)", line  # fmt: skip


def test_evaluate_replaces_only_an_earlier_evaluation_unless_told(tmp_path, capsys):
    """`--json config.json` by mistake: the user's file is kept (exit 2, before anything is computed); an earlier
    evaluation at that path is replaced, and any file with --overwrite."""
    labels = two_balls()
    reference = write(tmp_path / "ref.nii.gz", labels, {"1": "organ1", "2": "organ2"})
    command = ["evaluate", str(reference), "--prediction", str(reference), "--json"]
    mine = tmp_path / "config.json"
    mine.write_text('{"labels": [1, 2]}')
    assert cli.main([*command, str(mine)]) == 2
    assert mine.read_text() == '{"labels": [1, 2]}' and "--overwrite" in capsys.readouterr().err
    earlier = tmp_path / "metrics.json"
    assert cli.main([*command, str(earlier)]) == 0
    earlier.write_text(earlier.read_text().replace('"mean_dice": 1.0', '"mean_dice": 0.5'))
    assert cli.main([*command, str(earlier)]) == 0 and json.loads(earlier.read_text())["mean_dice"] == 1.0
    assert cli.main([*command, str(mine), "--overwrite"]) == 0 and json.loads(mine.read_text())["mean_dice"] == 1.0


def test_evaluate_command_runs_a_model(tmp_path):
    package = make_package(tmp_path, tiny_config(labels=2, spacing=(2.0, 2.0, 3.0)))
    image = ball_phantom(SHAPE, (15, 15, 10), (8, 8, 6), value=200, background=-1000)
    write(tmp_path / "ct.nii.gz", image.astype(np.int16))
    reference = write(tmp_path / "ref.nii.gz", two_balls(), {"1": "organ1", "2": "organ2"})
    out = tmp_path / "metrics.json"
    code = cli.main(
        ["evaluate", str(reference), "--model", str(package), "--image", str(tmp_path / "ct.nii.gz")]
        + ["--json", str(out), "--no-hd95"]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result["labels"]) == {"organ1", "organ2"} and result["segment_seconds"] > 0
    assert cli.main(["evaluate", str(reference), "--model", str(package)]) == 2  # --image missing


def test_evaluate_command_opens_each_input_once(tmp_path, monkeypatch):
    """The inputs' headers (a DICOM series': every slice's) are read once: checked before the weights load, then
    segmented as opened (before: segment() opened and checked them all again)."""
    from TokenUNetSegmentLib.pipeline import volumes

    package = make_package(tmp_path, tiny_config(labels=2, spacing=(2.0, 2.0, 3.0)))
    image = ball_phantom(SHAPE, (15, 15, 10), (8, 8, 6), value=200, background=-1000)
    write(tmp_path / "ct.nii.gz", image.astype(np.int16))
    reference = write(tmp_path / "ref.nii.gz", two_balls(), {"1": "organ1", "2": "organ2"})
    opened = []
    open_volume = volumes.open_volume
    monkeypatch.setattr(volumes, "open_volume", lambda path, *a, **k: opened.append(path) or open_volume(path, *a, **k))
    command = ["evaluate", str(reference), "--model", str(package), "--image", str(tmp_path / "ct.nii.gz")]
    assert cli.main([*command, "--no-hd95"]) == 0
    assert [str(path) for path in opened].count(str(tmp_path / "ct.nii.gz")) == 1, opened


@pytest.mark.parametrize("method", ["chosen", "all pairs", "distance map"])
def test_hd95_matches_a_brute_force_computation(method, monkeypatch):
    """HD95 equals the definition's brute force, whichever way it is computed: all pairs of edge voxels (few edges
    for their box) or a distance map (many), and the choice between them; overlapping masks and masks far apart."""
    threshold = {"chosen": surface_distance.ALL_PAIRS_PER_BOX_VOXEL, "all pairs": 10**12, "distance map": -1}[method]
    monkeypatch.setattr(surface_distance, "ALL_PAIRS_PER_BOX_VOXEL", threshold)
    monkeypatch.setattr(surface_distance, "PAIR_DISTANCES", 1000)  # several chunks
    rng = np.random.default_rng(3)
    a = ball_phantom(SHAPE, (14, 15, 10), (6, 5, 4)) > 0
    b = (ball_phantom(SHAPE, (17, 13, 9), (5, 7, 4)) > 0) | (rng.random(SHAPE) > 0.999)
    far = [np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)]
    far[0][0:3, 1:4, 0:2], far[1][26:30, 25:29, 17:20] = True, True
    spacing = np.array([2.0, 1.5, 3.0])

    def edges(mask):  # a voxel with any 6-neighbour outside (outside the array counts as outside)
        out = np.zeros_like(mask)
        for i, j, k in np.argwhere(mask):
            for d in np.vstack([np.eye(3, dtype=int), -np.eye(3, dtype=int)]):
                n = np.array([i, j, k]) + d
                if np.any(n < 0) or np.any(n >= SHAPE) or not mask[tuple(n)]:
                    out[i, j, k] = True
        return out

    for first, second in [(a, b), far, (far[0], a)]:
        pa, pb = np.argwhere(edges(first)) * spacing, np.argwhere(edges(second)) * spacing
        d = np.linalg.norm(pa[:, None] - pb[None], axis=-1)
        expected = max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))
        assert hausdorff95(first, second, spacing) == pytest.approx(expected, rel=1e-5)  # float32 distances
    assert hausdorff95(a, a, spacing) == 0.0


def test_hd95_of_small_masks_far_apart_makes_no_array_of_the_scans_size():
    """Two small masks at opposite corners of a large grid (before: a distance map over the box around both, which
    is the whole grid, and the edges found over the whole grid: 3.7-4.2 s and 1.08 GB on 512x512x300, against
    2.06 s and 0.54 GB for the older all-pairs code). numpy's arrays are traced by tracemalloc."""
    import tracemalloc

    a, b = np.zeros((200, 200, 200), bool), np.zeros((200, 200, 200), bool)
    a[2:8, 3:9, 1:7], b[190:196, 189:195, 192:198] = True, True
    tracemalloc.start()
    try:
        distance = hausdorff95(a, b, (0.8, 0.8, 1.0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert distance == pytest.approx(np.linalg.norm(np.array([188, 186, 191]) * (0.8, 0.8, 1.0)), rel=0.02)
    assert peak < a.size / 8, peak


def test_options_of_model_runs_are_refused_with_a_prediction(tmp_path, capsys):
    """Before: ``--image`` and ``--device cuda:7`` beside ``--prediction`` were ignored (exit 0): the user who
    thought they had evaluated a run on the GPU had not."""
    reference = write(tmp_path / "ref.nii.gz", two_balls(), {"1": "organ1", "2": "organ2"})
    command = ["evaluate", str(reference), "--prediction", str(reference)]
    for extra, named in [
        (["--device", "cuda:7"], "--device applies only with --model"),
        (["--image", str(reference)], "--image applies only with --model"),
        (["--image", str(reference), "--device", "cpu"], "--image and --device apply only with --model"),
    ]:
        assert cli.main([*command, *extra, "--json", str(tmp_path / "m.json")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {named}") and err.count("\n") == 1
    assert not (tmp_path / "m.json").exists()


def test_a_model_runs_warnings_are_printed_once_on_one_line(tmp_path, capsys, monkeypatch):
    """Before: segment()'s warning came as Python's two lines (the file, line number and source line) and then
    again as ``warning: ...`` after the table."""
    package = make_package(tmp_path, tiny_config(labels=2, spacing=(2.0, 2.0, 3.0), roi=(128, 128, 128)))
    image = ball_phantom(SHAPE, (15, 15, 10), (8, 8, 6), value=200, background=-1000)
    write(tmp_path / "ct.nii.gz", image.astype(np.int16))
    reference = write(tmp_path / "ref.nii.gz", two_balls(), {"1": "organ1", "2": "organ2"})
    command = ["evaluate", str(reference), "--model", str(package), "--image", str(tmp_path / "ct.nii.gz")]
    monkeypatch.setattr(warnings, "showwarning", python_shows_warning)  # as outside pytest, which records them
    assert cli.main([*command, "--no-hd95"]) == 0
    lines = capsys.readouterr().err.splitlines()
    small = [line for line in lines if "small for this model" in line]
    assert len(small) == 1 and small[0].startswith("warning: the volume is small"), lines
    assert not any("UserWarning" in line or "segment(" in line for line in lines), lines


def test_a_model_run_that_cannot_fit_is_refused_from_the_image_header_before_it_is_read(tmp_path, capsys, monkeypatch):
    """``evaluate --model`` runs segment(): a 512 x 512 x 200 int16 image under TOKENUNET_MEMORY_LIMIT=400M is refused
    from its header, on one line with exit code 2 (before: its voxels were read first)."""
    package = make_package(tmp_path, tiny_config(labels=2, spacing=(3.0, 3.0, 3.0)))
    big = sparse_nrrd(tmp_path / "big.nrrd", (512, 512, 200))
    reference = write(tmp_path / "ref.nii.gz", two_balls(), {"1": "organ1", "2": "organ2"})
    refuse_reading(monkeypatch)
    monkeypatch.setenv("TOKENUNET_MEMORY_LIMIT", "400M")
    assert cli.main(["evaluate", str(reference), "--model", str(package), "--image", str(big), "--no-hd95"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: this run needs about ") and "TOKENUNET_MEMORY_LIMIT=400M" in error
    assert error.count("\n") == 1


def python_shows_warning(message, category, filename, lineno, file=None, line=None):
    """What Python does with a warning outside pytest: two lines on stderr."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def test_label_maps_that_hold_no_labels_are_refused_on_either_side(tmp_path, capsys):
    """A probability map, a linearly resampled label map or negative values given as a reference or prediction
    (before: rounded without a word, so a soft reference at 0.4 scored half its organ; the same soft prediction
    scored Dice 0.667 on the reference's grid and 0.0 on another, where it was cast to integers before resampling;
    -1 wrapped to 65535 when resampled)."""
    cube = np.zeros(SHAPE, np.uint8)
    cube[5:25, 5:25, 5:15] = 1
    names = {"1": "a"}
    reference = write(tmp_path / "ref.nii.gz", cube, names)
    soft = cube * np.float32(0.4)
    soft[5:25, 5:25, 5:10] = 0.6
    mirrored = AFFINE.copy()
    mirrored[:3, 0] *= -1
    mirrored[:3, 3] = AFFINE[:3, :3] @ np.array([SHAPE[0] - 1, 0, 0]) + AFFINE[:3, 3]
    write(tmp_path / "soft.nii.gz", soft, names)
    sitk.WriteImage(image_from_array(soft[::-1].copy(), mirrored), str(tmp_path / "soft_other_grid.nii.gz"))
    (tmp_path / "soft_other_grid.json").write_text(json.dumps(names))
    write(tmp_path / "negative.nii.gz", cube.astype(np.int16) - 1, names)
    for prediction, ref, says in [
        ("soft.nii.gz", "ref.nii.gz", "soft.nii.gz holds values that are not whole numbers (e.g. 0.6"),
        ("soft_other_grid.nii.gz", "ref.nii.gz", "soft_other_grid.nii.gz holds values that are not whole numbers"),
        ("ref.nii.gz", "soft.nii.gz", "soft.nii.gz holds values that are not whole numbers"),
        ("negative.nii.gz", "ref.nii.gz", "negative.nii.gz holds negative values (down to -1)"),
    ]:
        with pytest.raises(InputError, match=re.escape(says)):
            evaluate_files(tmp_path / prediction, tmp_path / ref)
        assert cli.main(["evaluate", str(tmp_path / ref), "--prediction", str(tmp_path / prediction)]) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, err
    whole = write(tmp_path / "whole.nii.gz", cube.astype(np.float32), names)  # whole values in floats are labels
    assert evaluate_files(whole, reference)["labels"]["a"]["dice"] == pytest.approx(1.0)


def test_without_name_tables_a_value_only_the_prediction_holds_is_listed_not_dropped(tmp_path):
    """Two plain label maps, no names: labels are their values. A value the reference lacks was dropped without a
    word (before: the table and JSON showed label 1 only); now it is listed as unmatched, as a name only the
    prediction has is. A value the prediction misses still scores Dice 0."""
    reference = two_balls()
    prediction = reference.copy()
    prediction[prediction == 2] = 0
    prediction[0:3, 0:3, 0:3] = 5
    result = evaluate_files(write(tmp_path / "p.nii.gz", prediction), write(tmp_path / "r.nii.gz", reference))
    assert result["labels"]["label 1"]["dice"] == pytest.approx(1.0) and result["labels"]["label 2"]["dice"] == 0.0
    assert result["unmatched"] == {"prediction_only": ["label 5"], "reference_only": []}


def test_json_naming_one_of_the_evaluations_own_inputs_is_refused_even_with_overwrite(tmp_path, capsys):
    """``--json`` naming the reference, the prediction, a name table or an image, with ``--overwrite`` (before: the
    metrics were computed, then written over the reference label map, which was lost; a link to it as well)."""
    labels = two_balls()
    reference = write(tmp_path / "ref.nii.gz", labels, {"1": "a", "2": "b"})
    prediction = write(tmp_path / "pred.nii.gz", labels)
    table = tmp_path / "names.json"
    table.write_text(json.dumps({"1": "a", "2": "b"}))
    (tmp_path / "link.nii.gz").symlink_to(reference)
    before = {path: path.read_bytes() for path in (reference, prediction, table, tmp_path / "ref.json")}
    args = ["evaluate", str(reference), "--prediction", str(prediction), "--prediction-names", str(table)]
    for target, what in [
        (reference, "the reference"),
        (prediction, "the prediction"),
        (table, "the prediction's name table"),
        (tmp_path / "ref.json", "the reference's name table"),
        (tmp_path / "link.nii.gz", "the reference"),
    ]:
        assert cli.main([*args, "--json", str(target), "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert f"--json {target.name} is {what}" in err and err.count("\n") == 1, err
    assert {path: path.read_bytes() for path in before} == before and (tmp_path / "link.nii.gz").is_symlink()
    assert cli.main([*args, "--json", str(tmp_path / "metrics.json")]) == 0


def test_json_at_the_place_of_a_name_table_not_yet_there_is_refused(tmp_path, capsys):
    """``--json ref.json`` beside ``ref.nii.gz`` (or ``pred.json`` beside the prediction) where neither has a name
    table yet (before: written there, so every later evaluation of that label map read the metrics as its name table:
    "the name table ref.json has a key that is not a label value: 'reference'")."""
    labels = two_balls()
    reference = write(tmp_path / "ref.nii.gz", labels)
    prediction = write(tmp_path / "pred.nii.gz", labels)
    args = ["evaluate", str(reference), "--prediction", str(prediction), "--no-hd95"]
    for target, what in [("ref.json", "the reference"), ("pred.json", "the prediction")]:
        assert cli.main([*args, "--json", str(tmp_path / target)]) == 2
        err = capsys.readouterr().err
        assert f"--json {target} is where {what}'s name table is looked for" in err and err.count("\n") == 1, err
        assert not (tmp_path / target).exists()
    assert cli.main([*args, "--json", str(tmp_path / "metrics.json")]) == 0
    assert cli.main(args) == 0  # the label maps still evaluate as before


def test_a_segment_result_folder_given_for_a_label_map_points_to_its_file(tmp_path, capsys):
    """``evaluate REF --prediction result/`` (the folder ``segment --out`` wrote; found by hostile) (before: "result
    is a folder without a DICOM series (pass an image file or a folder of DICOM slices)")."""
    from TokenUNetSegmentLib.pipeline.output_folder import OutputFolder

    reference = write(tmp_path / "ref.nii.gz", two_balls(), {"1": "a", "2": "b"})
    folder = OutputFolder(tmp_path / "result", "segment", reserved=("segmentation.seg.nrrd",))
    with folder:
        write(folder.staging / "segmentation.seg.nrrd", two_balls())
        folder.commit()
    result = str(tmp_path / "result")
    for reference_map, prediction in ((str(reference), result), (result, str(reference))):
        assert cli.main(["evaluate", reference_map, "--prediction", prediction]) == 2
        err = capsys.readouterr().err
        assert "result is the folder of a segmentation (give " in err and "result/segmentation.seg.nrrd)" in err, err
        assert err.count("\n") == 1


def test_an_empty_reference_is_scored_with_a_warning_saying_so(tmp_path, capsys):
    """A reference without a voxel of any label compared (an empty label map, or another scan's labels elsewhere in
    the grid; before: Dice 0 for every label found, mean 0.000, exit 0 without a word): scored as before, for a
    negative case is a real case, with a warning in the result, on stderr and in ``--json``. Both empty: no Dice."""
    names = {"1": "a", "2": "b"}
    empty = write(tmp_path / "empty.nii.gz", np.zeros(SHAPE, np.uint8), names)
    found = write(tmp_path / "found.nii.gz", two_balls(), names)
    result = evaluate_files(found, empty)
    assert result["labels"]["a"]["dice"] == 0.0 and result["mean_dice"] == 0.0
    says = "the reference empty.nii.gz holds none of the labels compared (a, b)"
    assert any(says in warning for warning in result["warnings"]), result["warnings"]
    assert cli.main(["evaluate", str(empty), "--prediction", str(found), "--json", str(tmp_path / "m.json")]) == 0
    assert says in capsys.readouterr().err
    assert any(says in warning for warning in json.loads((tmp_path / "m.json").read_text())["warnings"])
    both = evaluate_files(empty, empty)
    assert both["mean_dice"] is None and all(m["dice"] is None for m in both["labels"].values())


def test_reference_labels_outside_the_predictions_box_are_said_to_count_as_missed(tmp_path, capsys):
    """A prediction of a slab (e.g. ``segment`` on 10 slices) against the whole scan's reference: the reference's
    labels outside the slab count as missed (Dice falls), as they must, but before this nothing said why."""
    labels = two_balls()
    reference = write(tmp_path / "ref.nii.gz", labels, {"1": "a", "2": "b"})
    slab = np.ascontiguousarray(labels[:, :, 8:12])
    slab_affine = AFFINE.copy()
    slab_affine[:3, 3] = AFFINE[:3, :3] @ np.array([0, 0, 8]) + AFFINE[:3, 3]
    sitk.WriteImage(image_from_array(slab, slab_affine), str(tmp_path / "slab.nii.gz"))
    (tmp_path / "slab.json").write_text(json.dumps({"1": "a", "2": "b"}))
    result = evaluate_files(tmp_path / "slab.nii.gz", reference)
    outside = np.isin(labels, (1, 2)).copy()
    outside[:, :, 8:12] = False
    share = 100 * outside.sum() / np.isin(labels, (1, 2)).sum()
    says = f"{share:.0f}% of the reference's labelled voxels lie outside slab.nii.gz's box"
    assert any(says in warning for warning in result["warnings"]), result["warnings"]
    assert result["labels"]["a"]["dice"] < 0.9  # the ball beyond the slab: missed
    assert not evaluate_files(write(tmp_path / "same.nii.gz", labels, {"1": "a", "2": "b"}), reference)["warnings"]


def test_a_sliver_of_reference_labels_outside_the_predictions_box_is_not_said_to_be_0_percent(tmp_path):
    """Under 1 % of the labelled voxels outside the prediction's box (one edge slice of a long organ): the warning
    says "under 1%" (before: "0% of the reference's labelled voxels lie outside ...", though some do)."""
    labels = np.zeros((12, 12, 240), np.uint8)
    labels[1:11, 1:11, :] = 1  # 100 voxels a slice, 24 000 in all
    reference = write(tmp_path / "ref.nii.gz", labels, {"1": "a"})
    sitk.WriteImage(image_from_array(np.ascontiguousarray(labels[:, :, :239]), AFFINE), str(tmp_path / "p.nii.gz"))
    (tmp_path / "p.json").write_text(json.dumps({"1": "a"}))
    warnings = evaluate_files(tmp_path / "p.nii.gz", reference, hd95=False)["warnings"]
    assert any(w.startswith("under 1% of the reference's labelled voxels lie outside p.nii.gz") for w in warnings), (
        warnings
    )


def test_a_name_table_naming_two_values_alike_is_refused(tmp_path, capsys):
    """Labels are matched by name (case, spaces and dashes ignored): a table naming values 1 and 2 'kidney' and
    'Kidney' (or a .seg.nrrd with two segments of one name) (before: the last value kept for the name, so the
    prediction's label 1 was scored against the reference's label 2: Dice 0 for a perfect match, exit 0)."""
    labels = two_balls()
    names = {"1": "kidney", "2": "Kidney"}
    reference = write(tmp_path / "ref.nii.gz", labels, names)
    prediction = write(tmp_path / "pred.nii.gz", labels, {"1": "kidney", "2": "spleen"})
    says = "the reference's name table names label values 1 and 2 alike ('kidney', 'Kidney')"
    with pytest.raises(InputError, match=re.escape(says)):
        evaluate_files(prediction, reference)
    seg = tmp_path / "pred.seg.nrrd"
    write_segmentation(seg, labels, AFFINE, [Label(1, "liver", (1, 2, 3)), Label(2, "Liver ", (3, 2, 1))])
    (tmp_path / "ref.json").write_text(json.dumps({"1": "liver", "2": "spleen"}))
    assert cli.main(["evaluate", str(reference), "--prediction", str(seg)]) == 2
    err = capsys.readouterr().err
    assert "the prediction's name table names label values 1 and 2 alike ('liver', 'Liver ')" in err, err


class _ClosedPipe:
    """A stdout whose reader went away (``| head -1`` after its line)."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        pass

    def fileno(self):
        return sys.__stdout__.fileno()


def test_output_files_are_written_when_the_printed_table_has_no_reader(tmp_path, monkeypatch):
    """``evaluate ... --json m.json | head -1`` and ``cka ... | head -3`` (before: the table or matrix was printed
    first, the closed pipe ended the command with exit 0, and m.json, cka.json and cka.png were never written)."""
    import os

    labels = two_balls()
    reference = write(tmp_path / "ref.nii.gz", labels, {"1": "a", "2": "b"})
    prediction = write(tmp_path / "pred.nii.gz", labels, {"1": "a", "2": "b"})
    saved = os.dup(1)
    try:
        monkeypatch.setattr(sys, "stdout", _ClosedPipe())
        assert (
            cli.main(["evaluate", str(reference), "--prediction", str(prediction), "--json", str(tmp_path / "m.json")])
            == 0
        )
        cka = ["cka", "--a", "8Token", "--b", "8Token", "--size", "32", "--samples", "2", "--out", str(tmp_path / "c")]
        assert cli.main(cka) == 0
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    assert json.loads((tmp_path / "m.json").read_text())["labels"]["a"]["dice"] == pytest.approx(1.0)
    assert (tmp_path / "c" / "cka.json").is_file()


def monai_label_metrics(predicted, reference, pairs, spacing):
    """Dice and volumes as ``label_metrics`` computed them before: MONAI's ``compute_dice`` per label, on float32
    masks (the reference the counting must equal)."""
    import torch
    from monai.metrics import compute_dice

    voxel_ml = float(np.prod(spacing)) / 1000.0
    out = {}
    for pred_value, ref_value, name in pairs:
        p = torch.from_numpy(np.asarray(predicted == pred_value))[None, None].float()
        r = torch.from_numpy(np.asarray(reference == ref_value))[None, None].float()
        p_sum, r_sum = float(p.sum()), float(r.sum())
        dice = float(compute_dice(p, r, include_background=True, ignore_empty=False)[0, 0]) if p_sum + r_sum else None
        out[name] = {"dice": dice, "volume_ml": round(p_sum * voxel_ml, 3), "reference_ml": round(r_sum * voxel_ml, 3)}
    return out


@pytest.mark.parametrize("table_cells", [evaluate.TABLE_CELLS, 0], ids=["one table", "per value and pair"])
def test_dice_from_voxel_counts_equals_monais_compute_dice(table_cells, monkeypatch):
    """Dice comes from one count of (reference, prediction) value pairs, not from MONAI's ``compute_dice`` per
    label (before: 27 of 38 s of ``evaluate`` for 12 labels on 52 M voxels), with the same values to the last bit:
    random maps, organ-like maps with a layout in memory of either order, values the pairs do not name, negative
    and large values, a label empty on one side (Dice 0), empty on both (None); counted in one table of every value
    pair, and per value and compared pair (as for thousands of labels)."""
    import monai.metrics

    monkeypatch.setattr(evaluate, "TABLE_CELLS", table_cells)

    rng = np.random.default_rng(7)
    cases = []
    for shape, values in [((17, 9, 5), 3), ((30, 30, 20), 13), ((2, 3, 1), 2)]:
        cases.append((rng.integers(0, values, shape), rng.integers(0, values, shape)))
    organs = np.zeros((64, 56, 48), np.int32)
    for value in range(1, 13):
        organs[ball_phantom(organs.shape, rng.uniform(8, 40, 3), rng.uniform(3, 9, 3)) > 0] = value
    noisy = np.where(rng.random(organs.shape) > 0.97, rng.integers(0, 14, organs.shape), organs)
    cases += [(noisy, organs), (np.asfortranarray(organs), noisy[::-1].copy())]
    cases.append((np.full((8, 8, 8), -3), np.where(rng.random((8, 8, 8)) > 0.5, 70000, -3)))
    cases.append((np.where(rng.random((9, 7, 5)) > 0.5, 2**40, 1), organs[:9, 20:27, 20:25].astype(np.float32)))
    cases.append((organs[::2] == 3, (organs[::2] == 3)[:, ::-1]))  # masks, and a map seen through strides
    spacing = (0.8, 0.8, 1.5)
    expected = []
    for predicted, reference in cases:
        found = set(np.unique(predicted)) | set(np.unique(reference)) | {99}  # 99: in neither map
        pairs = [(int(p), int(r), f"{p}-{r}") for p in sorted(found) for r in sorted(found) if rng.random() < 0.5]
        pairs += [(int(v), int(v), f"v{v}") for v in sorted(found)]
        expected.append((pairs, monai_label_metrics(predicted, reference, pairs, spacing)))
    assert any(m["dice"] is None for _, e in expected for m in e.values())  # empty on both sides
    assert any(m["dice"] == 0.0 for _, e in expected for m in e.values())

    def refused(*args, **kwargs):
        raise AssertionError("compute_dice called")

    monkeypatch.setattr(monai.metrics, "compute_dice", refused)
    for (predicted, reference), (pairs, wanted) in zip(cases, expected, strict=True):
        metrics = label_metrics(predicted, reference, pairs, spacing, hd95=False)
        for name, values in wanted.items():
            assert {key: metrics[name][key] for key in values} == values, name
    assert label_metrics(organs.astype(np.float32), organs, [], spacing) == {}  # nothing to compare


def test_dice_of_many_labels_needs_no_table_of_every_value_pair():
    """A label map of thousands of values (instances, or values as labels when there is no name table: up to 65535)
    is counted in memory that grows with the labels, not their square (before: a table of every (reference,
    prediction) pair, 145 MB for 3000 labels on 40**3 voxels, 34 GB for 65535). numpy's arrays are traced by
    tracemalloc."""
    import tracemalloc

    rng = np.random.default_rng(3)
    labels = 3000
    predicted = rng.integers(0, labels + 1, (40, 40, 40)).astype(np.int32)
    reference = predicted.copy()
    reference[::2] = rng.integers(0, labels + 1, reference[::2].shape)
    pairs = [(value, value, f"label {value}") for value in range(1, labels + 1)]
    tracemalloc.start()
    try:
        metrics = label_metrics(predicted, reference, pairs, (1.0, 1.0, 1.0), hd95=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    for value in (1, 7, labels):
        found, wanted = predicted == value, reference == value
        dice = 2 * np.count_nonzero(found & wanted) / (np.count_nonzero(found) + np.count_nonzero(wanted))
        assert metrics[f"label {value}"]["dice"] == pytest.approx(dice, rel=1e-6)
        assert metrics[f"label {value}"]["volume_ml"] == round(np.count_nonzero(found) / 1000, 3)
    assert peak < 16 << 20, peak


def _random_label_maps(rng, shape):
    """Two label maps of a few blobs each (values 1-5): some at the array's border, some on one side only."""
    maps = []
    for _ in range(2):
        labels = np.zeros(shape, np.int32)
        for value in rng.choice(np.arange(1, 6), size=rng.integers(1, 5), replace=False):
            low = rng.integers(-3, np.array(shape) - 1)  # below 0: cut by the border
            size = rng.integers(1, np.maximum(2, np.array(shape) // 2))
            box = tuple(slice(max(0, lo), max(0, lo + n)) for lo, n in zip(low, size, strict=True))
            labels[box] = np.where(rng.random(labels[box].shape) < 0.9, value, labels[box])
        maps.append(labels)
    return maps


def test_hd95_per_label_on_the_box_around_both_masks_equals_the_full_size_masks():
    """``label_metrics`` computes each label's HD95 on the box around both its masks with a one-voxel margin
    (before: two boolean masks of the whole scan per label: 10 000 labels of a 1024^3 scan, 2 GB and a full pass per
    label). The result is the same to the last bit as from the full-size masks, on random cases with labels at the
    border and labels on one side only (no HD95 there)."""
    rng = np.random.default_rng(7)
    compared = 0
    for _ in range(200):
        shape = tuple(int(n) for n in rng.integers(3, 24, size=3))
        predicted, reference = _random_label_maps(rng, shape)
        spacing = tuple(float(s) for s in rng.uniform(0.3, 4.0, size=3))
        pairs = [(v, v, f"label {v}") for v in range(1, 6)]
        metrics = label_metrics(predicted, reference, pairs, spacing)
        for value, _, name in pairs:
            if (predicted == value).any() and (reference == value).any():
                assert metrics[name]["hd95_mm"] == hausdorff95(predicted == value, reference == value, spacing)
                compared += 1
            else:
                assert metrics[name]["hd95_mm"] is None
    assert compared > 80, compared


def test_hd95_of_many_labels_makes_no_mask_of_the_scans_size(monkeypatch):
    """Many labels in a large scan: each label's masks are made on the box around it, and the boxes are found in
    slabs of ``surface_distance.BOX_SLAB_VOXELS`` (numpy's arrays are traced by tracemalloc)."""
    import tracemalloc

    monkeypatch.setattr(surface_distance, "BOX_SLAB_VOXELS", 1 << 18)
    shape = (160, 160, 160)
    predicted, reference = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
    pairs = []
    for value in range(1, 41):
        corner = (np.array([value * 37, value * 53, value * 71]) % 150).astype(int)
        box = tuple(slice(c, c + 6) for c in corner)
        predicted[box] = value
        reference[tuple(slice(c + 1, c + 7) for c in corner)] = value
        pairs.append((value, value, f"label {value}"))
    reference[:3, :3, :3], predicted[-2:, -2:, -2:] = 41, 41  # at the borders, far apart
    pairs.append((41, 41, "corners"))
    tracemalloc.start()
    try:
        distances = surface_distance.label_hd95(predicted, reference, pairs, (1.0, 1.0, 1.0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < predicted.size / 4, peak  # a full-size boolean mask is predicted.size bytes
    for value, _, _ in pairs:
        assert distances[value - 1] == hausdorff95(predicted == value, reference == value, (1.0, 1.0, 1.0))


def test_the_mean_hd95_says_how_many_labels_it_covers(tmp_path, capsys):
    """A missed organ has no HD95 (MONAI's ``compute_hausdorff_distance`` gives nan or inf for it): the mean HD95 is
    over the labels found in both maps only. Before: the table's "mean" row and ``mean_hd95_mm`` gave that mean
    without a word, so a result that missed half the organs looked better. Now the JSON says which labels it covers
    (``mean_hd95_labels``, ``labels_without_hd95``) and the table says "mean HD95 over 1 of 2 labels"."""
    both = two_balls()
    missed = both.copy()
    missed[missed == 2] = 0
    names = {"1": "organ1", "2": "organ2"}
    reference = write(tmp_path / "ref.nii.gz", both, names)
    prediction = write(tmp_path / "pred.nii.gz", missed, names)
    argv = ["evaluate", str(reference), "--prediction", str(prediction), "--json", str(tmp_path / "m.json")]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["mean_hd95_labels"] == ["organ1"] and result["labels_without_hd95"] == ["organ2"]
    assert result["labels"]["organ2"]["hd95_mm"] is None and result["mean_hd95_mm"] == 0.0
    says = "mean HD95 over 1 of 2 labels; no HD95 for organ2 (in one map only: missed, or found where the reference "
    assert says + "has none)" in out, out
    assert cli.main([*argv, "--no-hd95"]) == 0
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["mean_hd95_labels"] == [] and result["labels_without_hd95"] == []
    assert "mean HD95 over" not in capsys.readouterr().out


def test_hd95_of_a_label_value_0_named_on_both_sides_is_measured_not_said_to_be_in_one_map_only(tmp_path, capsys):
    """Name tables that name value 0 (MSD's ``"labels": {"0": "background", ...}``) pair it like any label. Before:
    the boxes came from SimpleITK's label statistics, whose background value 0 is never a label, so value 0 had no
    HD95 (before the boxes it had one), and the table said it was "in one map only". Found in both maps, it is
    measured, to the last bit as from the full-size masks."""
    both = two_balls()
    shifted = np.roll(both, 1, axis=0)
    pairs = [(0, 0, "background"), (1, 1, "organ1"), (2, 2, "organ2")]
    metrics = label_metrics(shifted, both, pairs, (1.0, 1.0, 2.0))
    for value, _, name in pairs:
        assert metrics[name]["hd95_mm"] == hausdorff95(shifted == value, both == value, (1.0, 1.0, 2.0)), name
    names = {"0": "background", "1": "organ1", "2": "organ2"}
    reference = write(tmp_path / "ref.nii.gz", both, names)
    prediction = write(tmp_path / "pred.nii.gz", shifted, names)
    argv = ["evaluate", str(reference), "--prediction", str(prediction), "--json", str(tmp_path / "m.json")]
    assert cli.main(argv) == 0
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["labels_without_hd95"] == [], result["labels_without_hd95"]
    assert result["mean_hd95_labels"] == ["background", "organ1", "organ2"]
    assert "mean HD95 over" not in capsys.readouterr().out


def test_json_named_in_another_case_or_spelling_of_an_input_is_refused_as_the_file_system_sees_it(
    tmp_path, capsys, monkeypatch
):
    """``--json REF.json`` beside ``ref.nii.gz`` on a file system that ignores case (macOS, Windows), where no name
    table is there yet (before: the names compared exactly, so the metrics were written where every later evaluation
    reads ref.nii.gz's name table); the same file named otherwise (a hard link, ``sub/../``) is refused as itself.
    The file system's way is probed (:func:`.output_folder.names_ignore_case`): simulated here, as this machine's
    (ext4) tells case apart, where ``REF.json`` is another file and is written."""
    from TokenUNetSegmentLib.pipeline import output_folder

    labels = two_balls()
    reference = write(tmp_path / "ref.nii.gz", labels)
    prediction = write(tmp_path / "pred.nii.gz", labels)
    args = ["evaluate", str(reference), "--prediction", str(prediction), "--no-hd95"]
    assert not output_folder.names_ignore_case(tmp_path)  # what this machine's temporary folder does
    with monkeypatch.context() as simulated:
        simulated.setattr(output_folder, "names_ignore_case", lambda folder: True)
        for target, says in [
            ("REF.json", "--json REF.json is where the reference's name table is looked for (ref.nii.gz's)"),
            ("Pred.JSON", "--json Pred.JSON is where the prediction's name table is looked for (pred.nii.gz's)"),
            ("REF.nii.gz", "--json REF.nii.gz is the reference, which this evaluation reads"),
        ]:
            assert cli.main([*args, "--json", str(tmp_path / target), "--overwrite"]) == 2
            err = capsys.readouterr().err
            assert says in err and err.count("\n") == 1, err
            assert not (tmp_path / target).exists()
    (tmp_path / "sub").mkdir()
    os.link(reference, tmp_path / "hard.nii.gz")
    before = reference.read_bytes()
    for target in (tmp_path / "hard.nii.gz", tmp_path / "sub" / ".." / "ref.nii.gz"):
        assert cli.main([*args, "--json", str(target), "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert f"--json {target.name} is the reference, which this evaluation reads" in err, err
    assert reference.read_bytes() == before
    assert cli.main([*args, "--json", str(tmp_path / "REF.json")]) == 0  # told apart here: another file
    assert json.loads((tmp_path / "REF.json").read_text())["labels"] and not (tmp_path / "ref.json").exists()
