"""The robustness command: variants of a labelled CT (slabs, oblique grid, voxel sizes, thick slices, noise,
mid-liver start) scored against the reference, agreement with the plain result, best-token soft Dice."""

import json
import re

import numpy as np
import pytest
import SimpleITK as sitk
from helpers.packages import ThresholdNet, make_package, tiny_config
from TokenUNetSegmentLib.pipeline import cli, robustness
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing, image_from_array
from TokenUNetSegmentLib.pipeline.package_writer import package_in_memory
from TokenUNetSegmentLib.pipeline.robustness import (
    _oblique_grid,
    evaluate_robustness,
    format_table,
    make_variants,
)
from TokenUNetSegmentLib.pipeline.volumes import Volume

SPACING = (3.0, 3.0, 3.0)


def liver_phantom(shape=(40, 36, 48)):
    """A body (40 HU) with a bright 'liver' (220 HU, label 1) and the reference label map."""
    grid = np.indices(shape, dtype=np.float32)
    centre = np.array(shape) / 2
    body = sum(((g - c) / (0.45 * n)) ** 2 for g, c, n in zip(grid, centre, shape, strict=True)) <= 1
    liver = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre + (-4, 0, 2), (8, 7, 12), strict=True)) <= 1
    image = np.where(body, 40.0, -1000.0).astype(np.float32)
    image[liver] = 220.0
    return image, liver.astype(np.uint8)


def threshold_liver_package():
    config = tiny_config("threshold-liver", labels=1, spacing=SPACING, roi=(32, 32, 32))
    config["labels"][0]["name"] = "liver"
    return package_in_memory(ThresholdNet(), config, "threshold")


def test_variants_keep_the_reference_aligned():
    image, reference = liver_phantom()
    volume = Volume(image, affine_from_spacing(SPACING))
    variants = {v.name: v for v in make_variants(volume, reference.astype(np.int32), {1: "liver"})}
    assert {"plain", "slab 10 @ liver", "slab 40 @ liver", "oblique", "1 mm", "5 mm slices", "noise 40 HU"} <= set(
        variants
    )
    slab = variants["slab 10 @ liver"]
    assert slab.image.array.shape == (40, 36, 10)
    centre = int(round(np.argwhere(reference).mean(0)[2]))
    lo = centre - 5
    np.testing.assert_array_equal(slab.reference, reference[:, :, lo : lo + 10])
    np.testing.assert_array_equal(slab.image.array, image[:, :, lo : lo + 10])
    assert np.allclose(slab.grid.affine[:3, 3], volume.affine[:3, :3] @ [0, 0, lo] + volume.affine[:3, 3])
    mid = variants["mid-liver start"]  # superior half of the liver removed (k grows towards the head here)
    assert mid.image.array.shape[2] == int(round(np.argwhere(reference).mean(0)[2]))
    assert variants["1 mm"].image.array.shape == (120, 108, 144)
    assert variants["5 mm slices"].image.grid.spacing[2] == pytest.approx(5.0)


def test_the_oblique_grid_holds_the_whole_scan():
    volume = Volume(np.zeros((40, 36, 48), np.float32), affine_from_spacing(SPACING, origin=(5, -7, 11)))
    grid = _oblique_grid(volume.grid, (25.0, 10.0))
    inverse = np.linalg.inv(grid.affine)
    corners = np.c_[volume.grid.corners_ras(), np.ones(8)] @ inverse.T
    assert np.all(corners[:, :3] >= -0.51) and np.all(corners[:, :3] <= np.array(grid.shape) - 0.49)
    assert np.allclose(grid.spacing, SPACING)
    assert not np.allclose(grid.direction, np.eye(3))


def test_robustness_of_a_threshold_model_is_near_perfect():
    image, reference = liver_phantom()
    volume = Volume(image, affine_from_spacing(SPACING))
    result = evaluate_robustness(
        threshold_liver_package(), volume, Volume(reference, volume.affine), {1: "liver"}, device="cpu"
    )
    rows = {row["variant"]: row for row in result["variants"]}
    assert rows["plain"]["dice"]["liver"] > 0.99
    assert rows["slab 10 @ liver"]["dice"]["liver"] > 0.95
    assert rows["oblique"]["dice"]["liver"] > 0.85 and rows["oblique"]["agreement_with_plain"]["liver"] > 0.85
    assert rows["5 mm slices"]["dice"]["liver"] > 0.8
    assert rows["plain"]["confidence"]["liver"] > 0.5 and isinstance(rows["plain"]["flags"]["liver"], list)
    assert set(rows["slab 10 @ liver"]["confidence"]) == {"liver"}  # only found labels carry a confidence
    assert result["calibration"]["organs"] == sum(len(r["confidence"]) for r in result["variants"])
    best = result["best_token"]["reference"]["liver"]
    assert best["soft_dice"] > 0.4 and best["token"] == 0  # token 0 follows the bright organ (coarse 24 mm grid)
    table = format_table(result)
    assert "| oblique: agreement with plain |" in table and "best-token soft Dice (vs reference)" in table


def test_robustness_with_test_time_augmentation_runs_every_variant_with_it_and_says_so(monkeypatch):
    from TokenUNetSegmentLib.pipeline import segmentation

    asked = []
    real = segmentation.segment
    monkeypatch.setattr(
        segmentation, "segment", lambda *a, **k: asked.append(k["test_time_augmentation"]) or real(*a, **k)
    )
    image, reference = liver_phantom()
    volume = Volume(image, affine_from_spacing(SPACING))
    package, names = threshold_liver_package(), {1: "liver"}
    result = evaluate_robustness(
        package,
        volume,
        Volume(reference, volume.affine),
        names,
        ["plain", "slabs"],
        "cpu",
        False,
        test_time_augmentation=True,
    )
    assert asked and all(asked) and result["test_time_augmentation"] is True
    assert result["variants"][0]["dice"]["liver"] > 0.99
    assert "test_time_augmentation" not in evaluate_robustness(
        package, volume, Volume(reference, volume.affine), names, ["plain"], "cpu", False
    )
    assert not asked[-1]


def test_robustness_command_writes_json_and_a_table(tmp_path):
    image, reference = liver_phantom((32, 32, 40))
    affine = affine_from_spacing(SPACING)
    sitk.WriteImage(image_from_array(image.astype(np.int16), affine), str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(image_from_array(reference, affine), str(tmp_path / "ref.nii.gz"))
    (tmp_path / "ref.json").write_text(json.dumps({"1": "liver"}))
    config = tiny_config("random-liver", labels=1, spacing=SPACING, roi=(16, 16, 16))
    config["labels"][0]["name"] = "liver"
    path = make_package(tmp_path, config)  # random weights: the command's plumbing, not its figures
    datalist = {
        "training": [],
        "evaluation": [{"patient": "P", "image": "ct.nii.gz", "label": "ref.nii.gz", "labels": {"1": "liver"}}],
    }
    (tmp_path / "list.json").write_text(json.dumps(datalist))
    out = tmp_path / "out"
    code = cli.main(["robustness", "--model", str(path), "--datalist", str(tmp_path / "list.json"), "--patient", "P",
                     "--variants", "plain", "slabs", "noise", "--out", str(out), "--device", "cpu"])  # fmt: skip
    assert code == 0
    (result,) = json.loads((out / "robustness.json").read_text())["results"]
    assert [row["variant"] for row in result["variants"]][:2] == ["plain", "slab 10 @ liver"]
    assert "| variant | liver | mean |" in (out / "robustness.md").read_text()
    assert "| confidence | organs | mean Dice |" in (out / "robustness.md").read_text()
    assert (
        cli.main(["robustness", "--model", str(path), "--image", str(tmp_path / "ct.nii.gz"), "--out", str(out)]) == 2
    )
    bad = [
        "robustness",
        "--model",
        str(path),
        "--datalist",
        str(tmp_path / "list.json"),
        "--patient",
        "Q",
        "--out",
        str(out),
    ]
    assert cli.main(bad) == 2  # no evaluation entry for that patient


def test_robustness_checks_its_output_and_inputs_before_any_work(tmp_path, capsys, monkeypatch):
    """Before: ``--out`` naming a file failed after every variant had run, as ``internal error: FileExistsError``
    (exit 1); a folder holding the user's own robustness.json had it overwritten; a reference of another scan
    (no label inside the image) gave an empty table and exit 0; ``--patient`` without ``--datalist`` was ignored.
    Now each is one line, exit 2, before the model runs, and the output folder is replaced all at once."""
    from TokenUNetSegmentLib.pipeline import robustness

    image, reference = liver_phantom((32, 32, 40))
    affine = affine_from_spacing(SPACING)
    sitk.WriteImage(image_from_array(image.astype(np.int16), affine), str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(image_from_array(reference, affine), str(tmp_path / "ref.nii.gz"))
    far = affine.copy()
    far[:3, 3] = 5000.0
    sitk.WriteImage(image_from_array(reference, far), str(tmp_path / "far.nii.gz"))
    (tmp_path / "names.json").write_text(json.dumps({"1": "liver"}))
    config = tiny_config("random-liver", labels=1, spacing=SPACING, roi=(16, 16, 16))
    config["labels"][0]["name"] = "liver"
    package = make_package(tmp_path, config)
    a_file, theirs = tmp_path / "notes.txt", tmp_path / "theirs"
    a_file.write_text("mine")
    theirs.mkdir()
    (theirs / "robustness.json").write_text("mine")

    def command(reference, out, *extra):
        return ["robustness", "--model", str(package), "--image", str(tmp_path / "ct.nii.gz"), "--reference",
                str(reference), "--reference-names", str(tmp_path / "names.json"), "--variants", "plain",
                "--no-tokens", "--device", "cpu", "--out", str(out), *extra]  # fmt: skip

    real = robustness.evaluate_robustness
    monkeypatch.setattr(robustness, "evaluate_robustness", lambda *a, **k: pytest.fail("ran before the checks"))
    for argv, says in [
        (command(tmp_path / "ref.nii.gz", a_file), "is a file, not a folder"),
        (command(tmp_path / "ref.nii.gz", theirs), "holds files that TokenUNet did not write"),
        (command(tmp_path / "ref.nii.gz", tmp_path / "o", "--patient", "P"), "--patient applies only with --datalist"),
    ]:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, err
    assert a_file.read_text() == "mine" and (theirs / "robustness.json").read_text() == "mine"
    monkeypatch.setattr(robustness, "evaluate_robustness", real)
    assert cli.main(command(tmp_path / "far.nii.gz", tmp_path / "o")) == 2
    assert "has none of the model's labels inside the image" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    for _ in range(2):  # its own earlier result is replaced
        assert cli.main(command(tmp_path / "ref.nii.gz", tmp_path / "o")) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        ".tokenunet-manifest.json", "robustness.json", "robustness.md"
    ]  # fmt: skip


@pytest.mark.parametrize(
    "content, message",
    [
        (b"[]", "is not a JSON object"),
        (b'{"evaluation": {"patient": "P"}}', "'evaluation' must be a list"),
        (b'{"evaluation": [{"patient": "P", "image": "ct.nii.gz"}]}', "needs 'image' and 'label'"),
        (b'{"evaluation": [{"patient": "P", "image": "ct.nii.gz", "label": "r.nii.gz", "labels": [1]}]}', "'labels'"),
        (b'{"dataroot": 5, "evaluation": []}', "dataroot"),
        (b'{"evaluation": [], "evaluation": []}', "evaluation"),
        (b'{"evaluation": [\xe9]}', "not valid JSON"),
    ],
)
def test_a_malformed_datalist_exits_2_in_one_line(tmp_path, capsys, content, message):
    """Before: read without the JSON checks; a list, a misplaced entry or a bad table was an internal error."""
    (tmp_path / "list.json").write_bytes(content)
    args = ["robustness", "--model", "x", "--datalist", str(tmp_path / "list.json"), "--patient", "P"]
    assert cli.main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and message in err, err
    assert not (tmp_path / "out").exists()


def test_a_reference_that_holds_no_labels_is_refused_before_the_model_runs(tmp_path, capsys):
    """A probability map given as the reference (before: rounded at 0.5 without a word, and scored)."""
    image, reference = liver_phantom((32, 32, 40))
    affine = affine_from_spacing(SPACING)
    sitk.WriteImage(image_from_array(image.astype(np.int16), affine), str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(image_from_array(reference * np.float32(0.7), affine), str(tmp_path / "soft.nii.gz"))
    (tmp_path / "names.json").write_text(json.dumps({"1": "liver"}))
    config = tiny_config("random-liver", labels=1, spacing=SPACING, roi=(16, 16, 16))
    config["labels"][0]["name"] = "liver"
    package = make_package(tmp_path, config)
    argv = ["robustness", "--model", str(package), "--image", str(tmp_path / "ct.nii.gz"), "--reference",
            str(tmp_path / "soft.nii.gz"), "--reference-names", str(tmp_path / "names.json"), "--variants", "plain",
            "--no-tokens", "--device", "cpu", "--out", str(tmp_path / "out")]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "soft.nii.gz holds values that are not whole numbers (e.g. 0.7" in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["nan.nii.gz", "nan.nrrd"])
def test_a_nan_in_the_reference_is_refused_in_evaluatings_words(tmp_path, capsys, name):
    """A float reference holding NaN (found by review2; before: the NIfTI "... before segmenting", segment's hint,
    though the reference is scored, not segmented; the NRRD "holds values that are not whole numbers (e.g. nan; a
    probability map, ...)")."""
    image, reference = liver_phantom((32, 32, 40))
    affine = affine_from_spacing(SPACING)
    sitk.WriteImage(image_from_array(image.astype(np.int16), affine), str(tmp_path / "ct.nii.gz"))
    reference = reference.astype(np.float32)
    reference[1, 2, 3] = np.nan
    sitk.WriteImage(image_from_array(reference, affine), str(tmp_path / name))
    (tmp_path / "names.json").write_text(json.dumps({"1": "liver"}))
    config = tiny_config("random-liver", labels=1, spacing=SPACING, roi=(16, 16, 16))
    config["labels"][0]["name"] = "liver"
    package = make_package(tmp_path, config)
    argv = ["robustness", "--model", str(package), "--image", str(tmp_path / "ct.nii.gz"), "--reference",
            str(tmp_path / name), "--reference-names", str(tmp_path / "names.json"), "--variants", "plain",
            "--no-tokens", "--device", "cpu", "--out", str(tmp_path / "out")]  # fmt: skip
    assert cli.main(argv) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"error: {name} has 1 NaN or infinite voxels (replace them (e.g. by the background value) before " \
        "evaluating)", line  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_an_organ_found_where_the_variants_reference_has_none_scores_as_evaluate_scores_it():
    """A slab around the spleen holds no liver, and the model finds 'liver' there (a bright blob): ``evaluate``
    scores such a false find Dice 0 and counts it in the mean, and so does the confidence calibration (before:
    robustness left it out of the row, its table showed '-', and the mean was that of the other organs only).
    An organ absent from both the reference and the result stays unscored ('-'), as in ``evaluate``."""
    from TokenUNetSegmentLib.pipeline.evaluate import label_metrics

    image, liver = liver_phantom()
    reference = liver.copy()
    spleen = np.zeros_like(liver, bool)
    spleen[18:22, 16:20, 4:9] = True
    reference[spleen] = 2
    image[spleen] = -80.0
    image[8:12, 16:20, 5:8] = 220.0  # bright, unlabelled: the threshold model calls it liver
    volume = Volume(image, affine_from_spacing(SPACING))
    result = evaluate_robustness(
        threshold_liver_package(),
        volume,
        Volume(reference, volume.affine),
        {1: "liver", 2: "spleen"},
        wanted=("plain", "slabs"),
        device="cpu",
        tokens=False,
    )
    rows = {row["variant"]: row for row in result["variants"]}
    slab = rows["slab 10 @ spleen"]
    assert slab["confidence"].get("liver") is not None  # found
    assert slab["dice"] == {"liver": 0.0} and slab["mean_dice"] == 0.0
    crop = reference[:, :, 1:11]
    predicted = np.zeros_like(crop)
    predicted[8:12, 16:20, 5:8] = 1
    assert label_metrics(predicted, crop, [(1, 1, "liver")], SPACING, hd95=False)["liver"]["dice"] == 0.0
    assert "| slab 10 @ spleen | 0.000 | 0.000 |" in format_table(result)
    assert rows["plain"]["dice"]["liver"] > 0.99


def test_a_multi_channel_model_or_entry_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    """robustness changes one CT: a four-channel model (before: its weights loaded, the plain variant started, then
    "needs 4 input channel(s) (ch0, ...), got 1") and a datalist entry listing channel files (before: "needs 'image'
    and 'label' paths", though both were there) are refused before the weights are loaded, saying why."""
    from TokenUNetSegmentLib.pipeline import package_loader

    image, reference = liver_phantom((24, 24, 24))
    affine = affine_from_spacing(SPACING)
    sitk.WriteImage(image_from_array(image.astype(np.int16), affine), str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(image_from_array(reference, affine), str(tmp_path / "ref.nii.gz"))
    (tmp_path / "names.json").write_text(json.dumps({"1": "liver"}))
    four = tiny_config("four", in_channels=4, labels=1, roi=(16, 16, 16), intensity={"method": "zscore"})
    four["labels"][0]["name"] = "liver"
    one = tiny_config("one", labels=1, roi=(16, 16, 16))
    one["labels"][0]["name"] = "liver"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    four, one = make_package(tmp_path / "a", four), make_package(tmp_path / "b", one)
    entry = {"patient": "P", "image": ["ct.nii.gz", "ct.nii.gz"], "label": "ref.nii.gz", "labels": {"1": "liver"}}
    (tmp_path / "list.json").write_text(json.dumps({"evaluation": [entry]}))
    monkeypatch.setattr(package_loader, "load_package", lambda *a, **k: pytest.fail("weights loaded"))
    for model, inputs, says in [
        (four, ["--image", str(tmp_path / "ct.nii.gz"), "--reference", str(tmp_path / "ref.nii.gz"),
                "--reference-names", str(tmp_path / "names.json")],
         "robustness changes one scan (--image); model 'four' takes 4 input channels (ch0, ch1, ch2, ch3)"),
        (one, ["--datalist", str(tmp_path / "list.json"), "--patient", "P"],
         "list.json: evaluation[0]: 'image' lists 2 files; robustness changes one scan"),
    ]:  # fmt: skip
        assert cli.main(["robustness", "--model", str(model), *inputs, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, err
        assert not (tmp_path / "o").exists()


def test_a_4d_image_is_refused_from_its_header_before_the_model_loads_as_segment_refuses_it(
    tmp_path, capsys, monkeypatch
):
    """A 4D image (NIfTI, a NRRD list axis, a MetaImage of 4 channels) as robustness's scan: refused from its header,
    before the weights load or a voxel is read, in segment's words (found by review4d; before: the weights loaded,
    the image read, then "x.nrrd has 4 components per voxel" or "x.nii.gz has 4 dimensions")."""
    from helpers.readers import refuse_reading
    from TokenUNetSegmentLib.pipeline import package_loader

    image, reference = liver_phantom((16, 16, 16))
    affine = affine_from_spacing(SPACING)
    volumes = [image_from_array(image.astype(np.int16) + 10 * index, affine) for index in range(4)]
    for name, made in [("x.nii.gz", sitk.JoinSeries(volumes)), ("x.nrrd", sitk.Compose(volumes))]:
        sitk.WriteImage(made, str(tmp_path / name))
    sitk.WriteImage(sitk.Compose(volumes), str(tmp_path / "x.mha"))
    sitk.WriteImage(image_from_array(reference, affine), str(tmp_path / "ref.nii.gz"))
    (tmp_path / "names.json").write_text(json.dumps({"1": "liver"}))
    config = tiny_config("one", labels=1, roi=(16, 16, 16))
    config["labels"][0]["name"] = "liver"
    package = make_package(tmp_path, config)
    monkeypatch.setattr(package_loader, "load_package", lambda *a, **k: pytest.fail("weights loaded"))
    refuse_reading(monkeypatch)
    for name in ("x.nii.gz", "x.nrrd", "x.mha"):
        argv = ["robustness", "--model", str(package), "--image", str(tmp_path / name), "--reference",
                str(tmp_path / "ref.nii.gz"), "--reference-names", str(tmp_path / "names.json"),
                "--out", str(tmp_path / "out")]  # fmt: skip
        assert cli.main(argv) == 2, name
        err = capsys.readouterr().err
        assert err.startswith(f"error: {name} holds 4 volumes (a 4D image); model 'one' takes one 3D volume"), err
        assert err.count("\n") == 1 and not (tmp_path / "out").exists(), err


def test_every_variant_is_checked_against_the_memory_limit_before_any_runs(monkeypatch):
    """The 1 mm variant of a 3 mm scan holds 27 times its voxels. Before: every variant was made at once and each was
    segmented with the memory check off, so ``TOKENUNET_MEMORY_LIMIT`` (or free memory) bounded nothing: a chest CT
    whose ``segment`` run needs 186 MiB ran its oblique variant (492 MiB) under a 300 MiB limit. Now each variant's
    run is estimated from its grid (as ``segment`` estimates a header's) before any runs, and variants are made one
    at a time."""
    from TokenUNetSegmentLib.pipeline import segmentation
    from TokenUNetSegmentLib.pipeline.errors import OutOfMemoryError

    image, reference = liver_phantom()
    volume = Volume(image, affine_from_spacing(SPACING))
    real = segmentation.segment
    monkeypatch.setenv("TOKENUNET_MEMORY_LIMIT", "8M")
    monkeypatch.setattr(segmentation, "segment", lambda *a, **k: pytest.fail("a variant ran before the check"))
    over = r"the oblique variant of volume needs about .* over the limit"
    with pytest.raises(OutOfMemoryError, match=over):
        evaluate_robustness(
            threshold_liver_package(), volume, Volume(reference, volume.affine), {1: "liver"}, device="cpu"
        )
    made = []
    monkeypatch.delenv("TOKENUNET_MEMORY_LIMIT")
    monkeypatch.setattr(segmentation, "segment", lambda inputs, *a, **k: made.append(1) or real(inputs, *a, **k))
    result = evaluate_robustness(
        threshold_liver_package(), volume, Volume(reference, volume.affine), {1: "liver"}, ("plain", "noise"),
        device="cpu", tokens=False,
    )  # fmt: skip
    assert [row["variant"] for row in result["variants"]] == ["plain", "noise 40 HU"]
    assert len(made) == 2


def test_robustness_and_cka_check_free_space_before_any_work(tmp_path, capsys, monkeypatch):
    """On a disk with 40 KiB free (a real tmpfs, by hand: cka computed its matrix for 4 s, then "the disk ... is
    full"; robustness ran every variant, minutes on a real scan, before finding out)."""
    import collections
    import shutil

    from TokenUNetSegmentLib.pipeline import cka, robustness

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(40 << 10, 0, 40 << 10))
    monkeypatch.setattr(cka, "_build", lambda *a, **k: pytest.fail("computed before the free-space check"))
    monkeypatch.setattr(robustness, "evaluate_robustness", lambda *a, **k: pytest.fail("ran before the check"))
    (tmp_path / "ct.nii.gz").write_bytes(b"")
    for argv in [
        ["cka", "--a", "8Token", "--b", "8Token", "--out", str(tmp_path / "c")],
        ["robustness", "--model", "x", "--image", str(tmp_path / "ct.nii.gz"), "--reference",
         str(tmp_path / "ct.nii.gz"), "--reference-names", str(tmp_path / "n.json"), "--out", str(tmp_path / "r")],
    ]:  # fmt: skip
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "needs about 1 MiB but" in err and "40 KiB free" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz"]


def test_an_mr_model_runs_the_variants_that_suit_it_and_says_which_it_left_out(tmp_path, capsys):
    """A one-channel MR model: the noise variant adds 40 HU, a CT's unit, meaningless for MR intensities (before: run
    and tabulated as "noise 40 HU" without a word). Asked for by name it is refused before the weights load; by
    default it is left out with a note, which robustness.json records; the other variants (geometry and anatomy) run."""
    image, reference = liver_phantom((24, 24, 24))
    affine = affine_from_spacing(SPACING)
    sitk.WriteImage(image_from_array(image.astype(np.int16), affine), str(tmp_path / "mr.nii.gz"))
    sitk.WriteImage(image_from_array(reference, affine), str(tmp_path / "ref.nii.gz"))
    (tmp_path / "names.json").write_text(json.dumps({"1": "liver"}))
    config = tiny_config("liver-mr", labels=1, spacing=SPACING, roi=(16, 16, 16), intensity={"method": "zscore"})
    config["labels"][0]["name"], config["inputs"][0]["modality"] = "liver", "MR"
    package = make_package(tmp_path, config)
    files = ["--image", tmp_path / "mr.nii.gz", "--reference", tmp_path / "ref.nii.gz", "--reference-names"]
    given = ["--model", str(package), *map(str, files), str(tmp_path / "names.json"), "--no-tokens"]
    assert cli.main(["robustness", *given, "--variants", "plain", "noise", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    says = "the noise variant adds Gaussian noise of 40 HU, a CT's unit; model 'liver-mr' takes MR"
    assert says in err and "leave noise out of --variants" in err and err.count("\n") == 1, err
    assert not (tmp_path / "a").exists()
    assert cli.main(["robustness", *given, "--out", str(tmp_path / "b")]) == 0
    assert f"note: {says}: left out" in capsys.readouterr().err
    (written,) = json.loads((tmp_path / "b" / "robustness.json").read_text())["results"]
    rows = [row["variant"] for row in written["variants"]]
    assert "plain" in rows and "oblique" in rows and "mid-liver start" in rows  # geometry and anatomy: any modality
    assert not any(row.startswith("noise") for row in rows) and written["left_out"] == [f"{says}: left out"]
    assert robustness.variants_for(None, "CT", "ct") == (list(robustness.ALL_VARIANTS), [])


def test_evaluate_robustness_called_directly_leaves_out_the_hu_noise_for_an_mr_model_as_the_cli_does():
    """``evaluate_robustness(...)`` from Python (as ``scripts/demo-model/build.py`` calls it) chooses the variants as
    the command does (before: only the CLI's ``variants_for`` left the 40 HU noise out for an MR model; the API ran it
    and tabulated "noise 40 HU" for MR intensities)."""
    from TokenUNetSegmentLib.pipeline.errors import InputError

    image, reference = liver_phantom((24, 24, 24))
    volume = Volume(image, affine_from_spacing(SPACING))
    config = tiny_config("liver-mr", labels=1, spacing=SPACING, roi=(16, 16, 16), intensity={"method": "zscore"})
    config["labels"][0]["name"], config["inputs"][0]["modality"] = "liver", "MR"
    package = package_in_memory(ThresholdNet(), config, "threshold")
    labels = Volume(reference, volume.affine)
    result = evaluate_robustness(package, volume, labels, {1: "liver"}, device="cpu", tokens=False)
    rows = [row["variant"] for row in result["variants"]]
    assert "plain" in rows and "oblique" in rows and not any(row.startswith("noise") for row in rows), rows
    says = "the noise variant adds Gaussian noise of 40 HU, a CT's unit; model 'liver-mr' takes MR"
    assert result["left_out"] == [f"{says}: left out"]
    with pytest.raises(InputError, match="leave noise out of --variants"):
        evaluate_robustness(package, volume, labels, {1: "liver"}, ["plain", "noise"], device="cpu", tokens=False)


def test_the_variants_asked_for_through_the_api_are_checked_by_name():
    """``evaluate_robustness(..., wanted)`` from Python: a name that is no variant is refused (before: a typo such as
    "nosie" was skipped without a word), and one name given as a string is that variant (before: since the variants
    are chosen by ``variants_for``, the string "noise" became the letters n, o, i, s, e, and nothing ran)."""
    from TokenUNetSegmentLib.pipeline.errors import InputError

    with pytest.raises(InputError, match="'nosie' is no robustness variant"):
        robustness.variants_for(["plain", "nosie"], "CT", "ct")
    assert robustness.variants_for("noise", "CT", "ct") == (["noise"], [])
    assert robustness.variants_for(("slabs", "plain"), "MR", "mr") == (["slabs", "plain"], [])
    with pytest.raises(InputError, match="leave noise out of --variants"):
        robustness.variants_for("noise", "MR", "mr")


def test_variants_placed_on_organs_the_reference_lacks_are_refused_by_name_and_said_to_be_left_out(tmp_path, capsys):
    """The slabs (around the liver's and the spleen's centres) and the mid-liver start on a reference that labels
    neither (a kidney model's; found by hostile) (before: asked for by name, nothing ran: exit 0, a table of no row,
    "| variant |  | mean |"; by default, they were dropped without a word)."""
    from TokenUNetSegmentLib.pipeline.errors import InputError

    image, reference = liver_phantom((24, 24, 24))
    volume = Volume(image, affine_from_spacing(SPACING))
    config = tiny_config("kidney", labels=1, spacing=SPACING, roi=(16, 16, 16))
    config["labels"][0]["name"] = "kidney"
    package = package_in_memory(ThresholdNet(), config, "threshold")
    labels = Volume(reference, volume.affine, "ref.nii.gz")
    for asked, words in [(["plain", "slabs"], "the slabs are cut around the liver's and the spleen's centres"),
                         (["mid-liver"], "the mid-liver start cuts the scan at the liver's centre")]:  # fmt: skip
        with pytest.raises(InputError, match=re.escape(words)) as caught:
            evaluate_robustness(package, volume, labels, {1: "kidney"}, asked, device="cpu", tokens=False)
        assert "ref.nii.gz" in caught.value.message and "leave" in caught.value.hint
    result = evaluate_robustness(package, volume, labels, {1: "kidney"}, ["plain", "noise"], device="cpu", tokens=False)
    assert [row["variant"] for row in result["variants"]] == ["plain", "noise 40 HU"] and "left_out" not in result
    with pytest.MonkeyPatch.context() as patch:  # every variant but the two: what the default run says of them
        patch.setattr(robustness, "ALL_VARIANTS", ("plain", "slabs", "mid-liver"))
        result = evaluate_robustness(package, volume, labels, {1: "kidney"}, device="cpu", tokens=False)
    assert [row["variant"] for row in result["variants"]] == ["plain"]
    assert len(result["left_out"]) == 2 and all(note.endswith(": left out") for note in result["left_out"])
    assert "no liver" in result["left_out"][1]
    path = make_package(tmp_path, config)
    sitk.WriteImage(image_from_array(image.astype(np.int16), volume.affine), str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(image_from_array(reference, volume.affine), str(tmp_path / "ref.nii.gz"))
    (tmp_path / "ref.json").write_text(json.dumps({"1": "kidney"}))
    code = cli.main(["robustness", "--model", str(path), "--image", str(tmp_path / "ct.nii.gz"), "--reference",
                     str(tmp_path / "ref.nii.gz"), "--variants", "slabs", "--out", str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "the slabs are cut around" in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(robustness, "ALL_VARIANTS", ("plain", "slabs"))
        code = cli.main(["robustness", "--model", str(path), "--image", str(tmp_path / "ct.nii.gz"), "--reference",
                         str(tmp_path / "ref.nii.gz"), "--no-tokens", "--out", str(tmp_path / "out")])  # fmt: skip
    assert code == 0 and "note: ct: the slabs are cut around" in capsys.readouterr().err


def _written_case(tmp_path, name="ct"):
    image, reference = liver_phantom((24, 24, 24))
    affine = affine_from_spacing(SPACING)
    sitk.WriteImage(image_from_array(image.astype(np.int16), affine), str(tmp_path / f"{name}.nii.gz"))
    sitk.WriteImage(image_from_array(reference, affine), str(tmp_path / f"{name}-ref.nii.gz"))
    return {"patient": "P", "name": name, "image": f"{name}.nii.gz", "label": f"{name}-ref.nii.gz",
            "labels": {"1": "liver"}}  # fmt: skip


def test_robustness_json_is_one_versioned_object_for_one_case_or_several(tmp_path):
    """``robustness.json`` (before: one case's result object for one case, a bare list of them for several, so every
    reader guessed; ``build.py``'s baseline and fold comparison read only the object) is always
    ``{"format": "tokenunet-robustness", "version": 2, "results": [...]}``, one result per case."""
    config = tiny_config("random-liver", labels=1, spacing=SPACING, roi=(16, 16, 16))
    config["labels"][0]["name"] = "liver"
    path = make_package(tmp_path, config)
    one, two = _written_case(tmp_path, "a"), _written_case(tmp_path, "b")
    for entries, out in [([one], tmp_path / "one"), ([one, two], tmp_path / "two")]:
        (tmp_path / "list.json").write_text(json.dumps({"training": [], "evaluation": entries}))
        argv = ["robustness", "--model", str(path), "--datalist", str(tmp_path / "list.json"), "--patient", "P",
                "--variants", "plain", "--no-tokens", "--out", str(out), "--device", "cpu"]  # fmt: skip
        assert cli.main(argv) == 0
        written = json.loads((out / "robustness.json").read_text())
        assert {k: written[k] for k in ("format", "version")} == {"format": "tokenunet-robustness", "version": 2}
        assert [r["case"] for r in written["results"]] == [e["name"] for e in entries]
        assert robustness.read_results(out / "robustness.json") == written["results"]


def test_robustness_files_of_earlier_versions_are_still_read(tmp_path):
    """Files written before the versioned shape (one case: the result object; several: a list of them), such as
    ``/work/runs/s23/lopo-A/robustness.json``, read as the same list of results; anything else is refused plainly."""
    from TokenUNetSegmentLib.pipeline.errors import InputError

    result = {"model": "m", "labels": ["liver"], "variants": [{"variant": "plain", "dice": {"liver": 0.9}}],
              "case": "a"}  # fmt: skip
    for name, content in [("object.json", result), ("list.json", [result, result]),
                          ("v2.json", robustness.robustness_document([result]))]:  # fmt: skip
        (tmp_path / name).write_text(json.dumps(content))
        expected = content if isinstance(content, list) else [result]
        assert robustness.read_results(tmp_path / name) == expected, name
    for content, says in [
        ({"format": "tokenunet-robustness", "version": 3, "results": []}, "version 3"),
        ({"format": "something-else", "version": 2, "results": []}, "is no robustness result"),
        ({"cases": []}, "is no robustness result"),
        ([1, 2], "is no robustness result"),
        ({"format": "tokenunet-robustness", "version": 2, "results": {"a": 1}}, "is no robustness result"),
    ]:
        (tmp_path / "bad.json").write_text(json.dumps(content))
        with pytest.raises(InputError, match=says):
            robustness.read_results(tmp_path / "bad.json")
    real = __import__("pathlib").Path("/work/runs/s23/lopo-A/robustness.json")  # on the development machine only
    if real.is_file():
        results = robustness.read_results(real)
        assert len(results) == 1 and results[0]["model"] == "demo-lopo-A" and results[0]["variants"]


def test_the_model_card_builder_reads_both_shapes(tmp_path):
    """``build.py --lopo``'s fold reader and its comparisons with earlier models and folds read the versioned file
    and the earlier shapes alike (before: ``baseline`` and ``lopo_comparison`` indexed the file as one object)."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("demo_build", root / "scripts" / "demo-model" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    result = {"model": "m", "labels": ["liver"], "variants": [{"variant": "plain", "dice": {"liver": 0.5}}]}
    for name, content in [("old", [result]), ("new", robustness.robustness_document([result]))]:
        fold = tmp_path / name / "fold-A" / "robustness"
        fold.mkdir(parents=True)
        (fold / "robustness.json").write_text(json.dumps(content))
        (tmp_path / name / "A").mkdir()
        (tmp_path / name / "A" / "robustness.json").write_text(json.dumps(content))
    now = [{"patient": "A", "variants": [{"variant": "plain", "dice": {"liver": 0.7}}]}]
    rows = build.lopo_comparison({"old": tmp_path / "old", "new": tmp_path / "new"}, now)
    assert rows == [{"patient": "A", "organ": "liver", "before": {"old": 0.5, "new": 0.5}, "after": 0.7}]
    rows = build.baseline({"old": tmp_path / "old", "new": tmp_path / "new"}, now)
    assert rows == [{"patient": "A", "variant": "plain", "organ": "liver", "before": {"old": 0.5, "new": 0.5},
                     "after": 0.7}]  # fmt: skip


def test_the_api_refuses_a_multi_channel_model_before_any_work(monkeypatch):
    """``evaluate_robustness`` with a four-sequence MRI model (before: the reference checked and resampled, the
    variants planned, then ``segment()`` failed on the plain variant with "needs 4 input channel(s) ..., got 1")
    raises InputError at once, as the command refuses it."""
    from TokenUNetSegmentLib.pipeline import segmentation
    from TokenUNetSegmentLib.pipeline.errors import InputError

    image, reference = liver_phantom((24, 24, 24))
    volume = Volume(image, affine_from_spacing(SPACING))
    config = tiny_config("four", in_channels=4, labels=1, roi=(16, 16, 16), intensity={"method": "zscore"})
    config["labels"][0]["name"] = "liver"
    package = package_in_memory(ThresholdNet(), config, "threshold")
    monkeypatch.setattr(robustness, "plan_variants", lambda *a, **k: pytest.fail("variants planned"))
    monkeypatch.setattr(segmentation, "segment", lambda *a, **k: pytest.fail("segmented"))
    says = "robustness changes one scan; model 'four' takes 4 input channels (ch0, ch1, ch2, ch3)"
    with pytest.raises(InputError, match=re.escape(says)):
        evaluate_robustness(package, volume, Volume(reference, volume.affine), {1: "liver"}, device="cpu")


def test_a_robustness_file_of_no_case_is_refused_in_every_shape(tmp_path, capsys):
    """A versioned file whose ``results`` is empty (hand-edited, or cut by a tool) was read as no result, where the
    earlier shape's empty list is refused: ``calibration.py`` summarised nothing with exit 0 and ``build.py``'s
    baseline failed with an IndexError traceback. Both shapes of no case are now refused saying so; and the
    calibration script passes on what to do (before: "update the extension" was dropped from its message)."""
    import importlib.util

    from helpers.paths import SCRIPTS
    from TokenUNetSegmentLib.pipeline.errors import InputError

    for content in (robustness.robustness_document([]), []):
        (tmp_path / "none.json").write_text(json.dumps(content))
        with pytest.raises(InputError, match="holds no case"):
            robustness.read_results(tmp_path / "none.json")
    spec = importlib.util.spec_from_file_location("demo_calibration", SCRIPTS / "demo-model" / "calibration.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([str(tmp_path / "none.json")]) == 2
    assert "holds no case" in capsys.readouterr().err
    (tmp_path / "newer.json").write_text(json.dumps({"format": "tokenunet-robustness", "version": 3, "results": []}))
    assert script.main([str(tmp_path / "newer.json")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "version 3" in line and "update the extension" in line, line


def test_the_model_card_builder_names_the_fold_file_it_cannot_read_and_exits_2(tmp_path):
    """``build.py --lopo`` reads one ``robustness.json`` per fold, all of that name. Before: a fold file from a newer
    version (or a broken one) ended in an InputError traceback that named only "robustness.json", not which fold."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    fold = tmp_path / "folds" / "fold-B"
    (fold / "robustness").mkdir(parents=True)
    (fold / "package" / "configs").mkdir(parents=True)
    (fold / "package" / "configs" / "metadata.json").write_text("{}")
    newer = {"format": "tokenunet-robustness", "version": 3, "results": []}
    (fold / "robustness" / "robustness.json").write_text(json.dumps(newer))
    package = root / "TokenUNetSegment" / "Resources" / "Models" / "abdomen-organs-3mm-demo"
    argv = [sys.executable, str(root / "scripts" / "demo-model" / "build.py"), str(package), "--card-only",
            "--no-install", "--lopo", str(tmp_path / "folds")]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert str(fold / "robustness" / "robustness.json") in done.stderr and "update the extension" in done.stderr
