"""Confidence and flags: every flag provoked through ``segment()`` (a thresholding 'segmenter' on CT-like phantoms,
with and without training statistics), the score's range and order, and the measures it is made of."""

import re

import numpy as np
import pytest
import torch
from helpers.packages import ThresholdNet, rotation, tiny_config, training_statistics
from hypothesis import given, settings
from hypothesis import strategies as st
from TokenUNetSegmentLib.pipeline import confidence
from TokenUNetSegmentLib.pipeline.confidence import Assessment, Flag, assess, label_confidence, label_flags
from TokenUNetSegmentLib.pipeline.geometry import Grid, affine_from_spacing
from TokenUNetSegmentLib.pipeline.metadata import Inference, Region, TrainingStatistics
from TokenUNetSegmentLib.pipeline.package_writer import package_in_memory
from TokenUNetSegmentLib.pipeline.postprocess import component_pieces, label_certainty
from TokenUNetSegmentLib.pipeline.scan_summary import field_of_view, summarise_intensities
from TokenUNetSegmentLib.pipeline.segmentation import segment
from TokenUNetSegmentLib.pipeline.surface_distance import surface_voxels

SPACING = (2.0, 2.0, 2.5)
SHAPE = (48, 44, 40)  # 96 x 88 x 100 mm


def ct_phantom(shape=SHAPE, spacing=SPACING, balls=(((0.5, 0.5, 0.5), 14.0, 250.0),), body=0.0, seed=0):
    """(array (i, j, k), ijk_to_ras): air, a body of soft tissue (``body`` HU, noise SD 15) with a fat rim, and
    balls ((centre as a fraction of the extent, radius mm, HU), ...) that the threshold net labels (> 100 HU)."""
    affine = affine_from_spacing(spacing)
    extent = np.asarray(shape) * spacing
    mm = np.stack(np.indices(shape, dtype=np.float32), -1) * np.asarray(spacing, np.float32)
    radii = extent * [0.45, 0.45, 0.6]
    r = np.sqrt((((mm - extent / 2) / radii) ** 2).sum(-1))
    rng = np.random.default_rng(seed)
    image = np.where(r <= 1.0, body + rng.normal(0, 15, shape), -1000.0).astype(np.float32)
    image[(r > 0.85) & (r <= 1.0)] = -150.0  # fat
    for centre, radius, value in balls:
        inside = np.linalg.norm(mm - np.asarray(centre) * extent, axis=-1) <= radius
        image[inside] = value
    return image, affine


def threshold_ct_package(statistics=None, largest_component=False):
    """The threshold net (label 'ball' above 100 HU) at 2 mm, with ``statistics`` as its training_statistics."""
    config = tiny_config("threshold", labels=1, spacing=(2.0, 2.0, 2.0), roi=(32, 32, 32))
    config["labels"][0]["name"] = "ball"
    config["postprocessing"] = {"largest_component": largest_component}
    if statistics is not None:
        config["training_statistics"] = statistics
    return package_in_memory(ThresholdNet(), config, "threshold")


BALL_ML = 4 / 3 * np.pi * 14.0**3 / 1000  # 11.5 mL
STATISTICS = training_statistics({"ball": ((8.0, 16.0), (8.0, 16.0))})


def run(image_affine, statistics=STATISTICS, **options):
    result = segment([image_affine], threshold_ct_package(statistics), device="cpu", with_token_maps=False, **options)
    return result.assessment


def codes(flags):
    return {flag.code for flag in flags}


# -- the scores' order and range -------------------------------------------------------------------------------
def test_a_clear_organ_is_confident_and_unflagged_and_noise_is_not():
    clear = run(ct_phantom())
    ball = clear.labels["ball"]
    assert ball.flags == () and clear.flags == () and ball.confidence > 0.9
    assert ball.measures["volume_ml"] == pytest.approx(BALL_ML, rel=0.25) and ball.measures["pieces"] == 1
    image, affine = ct_phantom(balls=())
    rng = np.random.default_rng(3)
    inside = image > -50
    image[inside] = rng.normal(100.0, 8.0, int(inside.sum()))  # soft tissue at the threshold: a coin toss
    for statistics in (STATISTICS, None):
        noisy = run((image, affine), statistics=statistics).labels["ball"]
        assert {"ambiguous", "low_probability"} <= codes(noisy.flags)
        assert 0.0 <= noisy.confidence < 0.4 < 0.9 < ball.confidence <= 1.0


def test_a_faint_organ_is_less_sure_than_a_clear_one():
    faint = run(ct_phantom(balls=(((0.5, 0.5, 0.5), 14.0, 106.0),))).labels["ball"]
    clear = run(ct_phantom()).labels["ball"]
    assert {"low_probability", "ambiguous"} <= codes(faint.flags)
    assert faint.measures["mean_probability"] < 0.7 < clear.measures["mean_probability"]
    assert faint.confidence < clear.confidence


# -- every label flag ------------------------------------------------------------------------------------------
def test_an_organ_in_pieces_is_fragmented():
    balls = (((0.3, 0.5, 0.5), 12.0, 250.0), ((0.7, 0.5, 0.5), 12.0, 250.0))
    ball = run(ct_phantom(balls=balls), statistics=None).labels["ball"]
    assert "fragmented" in codes(ball.flags) and ball.measures["pieces"] == 2
    assert ball.measures["outside_largest_share"] == pytest.approx(0.5, abs=0.05)
    kept = segment([ct_phantom(balls=balls)], threshold_ct_package(None, True), device="cpu", with_token_maps=False)
    ball = kept.assessment.labels["ball"]  # the largest piece kept: the share removed is still told
    assert "fragmented" in codes(ball.flags) and ball.measures["outside_largest_share"] == pytest.approx(0.5, abs=0.05)
    assert kept.volumes_ml["ball"] == pytest.approx(ball.measures["volume_ml"], rel=0.2)


def test_an_organ_at_the_edge_of_the_scan_is_cut_off_and_not_called_small():
    larger = training_statistics({"ball": ((20.0, 30.0), (20.0, 30.0))})
    ball = run(ct_phantom(balls=(((0.5, 0.5, 0.02), 14.0, 250.0),)), statistics=larger).labels["ball"]
    assert "cut_off" in codes(ball.flags) and ball.measures["edge_share"] > 0
    assert ball.measures["volume_ml"] < 20.0 / confidence.VOLUME_FACTOR  # half a ball: small, but cut off
    assert "volume_small" not in codes(ball.flags)
    whole = run(ct_phantom(balls=(((0.5, 0.5, 0.5), 8.0, 250.0),)), statistics=larger).labels["ball"]
    assert "volume_small" in codes(whole.flags) and "cut_off" not in codes(whole.flags)


def test_the_edge_of_an_oblique_scan_is_its_own_not_the_model_grids():
    """The model grid of a tilted scan holds corners outside it: an organ is cut off where it meets the scan's
    faces, not the model grid's."""
    image, affine = ct_phantom(balls=(((0.5, 0.5, 0.5), 14.0, 250.0),))
    tilted = affine.copy()
    tilted[:3, :3] = rotation(2, 30) @ rotation(0, 20) @ affine[:3, :3]
    inside = run((image, tilted)).labels["ball"]
    assert "cut_off" not in codes(inside.flags)
    image, affine = ct_phantom(balls=(((0.98, 0.5, 0.5), 14.0, 250.0),))
    tilted[:3, :3] = rotation(2, 30) @ rotation(0, 20) @ affine[:3, :3]
    assert "cut_off" in codes(run((image, tilted)).labels["ball"].flags)


@pytest.mark.parametrize(
    ("radius", "code"), [(6.0, "volume_small"), (30.0, "volume_large"), (14.0, None)], ids=["small", "large", "ok"]
)
def test_volumes_outside_the_training_range_are_flagged(radius, code):
    ball = run(ct_phantom(balls=(((0.5, 0.5, 0.5), radius, 250.0),))).labels["ball"]
    volume_codes = codes(ball.flags) & {"volume_small", "volume_large"}
    assert volume_codes == ({code} if code else set())
    if code:
        assert "mL" in next(f.message for f in ball.flags if f.code == code)


def test_packages_without_training_statistics_get_a_confidence_but_no_volume_flags():
    for radius in (6.0, 30.0):
        ball = run(ct_phantom(balls=(((0.5, 0.5, 0.5), radius, 250.0),)), statistics=None).labels["ball"]
        assert not codes(ball.flags) & {"volume_small", "volume_large"} and ball.confidence > 0.9


# -- every scan flag and the empty result ----------------------------------------------------------------------
def test_an_mri_is_not_ct():
    image, affine = ct_phantom()
    mri = np.where(image > -500, 300.0 + image / 2, 0.0).astype(np.float32)  # no negative values at all
    assessment = run((mri, affine), statistics=None)
    assert "not_ct" in codes(assessment.flags)
    assert all(label.confidence <= confidence.RUN_PENALTY["not_ct"] for label in assessment.labels.values())
    assert "Hounsfield" in assessment.summary


def test_intensities_unlike_the_training_inputs_are_flagged():
    image, affine = ct_phantom(body=900.0)  # a body of bone-like values (a CT in other units, or a head)
    assessment = run((image, affine))
    assert "intensities_unlike_training" in codes(assessment.flags) and "not_ct" not in codes(assessment.flags)
    assert "intensities_unlike_training" not in codes(run(ct_phantom()).flags)
    assert "intensities_unlike_training" not in codes(run((image, affine), statistics=None).flags)


def test_voxels_coarser_than_any_training_scan_are_flagged():
    image, affine = ct_phantom(shape=(48, 44, 20), spacing=(2.0, 2.0, 5.0))
    assessment = run((image, affine))
    assert "spacing_unlike_training" in codes(assessment.flags)
    assert "5.0 mm" in next(f.message for f in assessment.flags if f.code == "spacing_unlike_training")


def test_a_slab_thinner_than_training_covered_is_flagged():
    image, affine = ct_phantom(shape=(48, 44, 8), balls=(((0.5, 0.5, 0.5), 14.0, 250.0),))  # 20 mm thick
    flags = codes(run((image, affine)).flags)
    assert "field_of_view_small" in flags
    assert "field_of_view_small" not in codes(run(ct_phantom()).flags)


def test_a_scan_with_little_or_nothing_the_model_knows_is_flagged():
    big = ct_phantom(shape=(96, 88, 80), balls=(((0.5, 0.5, 0.5), 5.0, 250.0),))  # a tiny find in a large scan
    assert "no_known_anatomy" in codes(run(big, statistics=training_statistics()).flags)
    faint = ct_phantom(balls=(((0.5, 0.5, 0.5), 14.0, 104.0),))  # found, but nowhere with confidence
    assessment = run(faint, statistics=None)
    assert "no_known_anatomy" in codes(assessment.flags)
    # the message names no figure above the confidences the run reports (before: "best 0.33" beside a table whose
    # best was 0.17, the flag's own factor applied)
    message = next(f.message for f in assessment.flags if f.code == "no_known_anatomy")
    best = max(label.confidence for label in assessment.labels.values())
    named = [float(x) for x in re.findall(r"best (\d\.\d+)", message)]
    assert all(abs(value - best) < 0.006 for value in named), (message, best)
    assert "no_known_anatomy" not in codes(run(ct_phantom(), statistics=None).flags)


def test_an_empty_result_says_so_and_why():
    assessment = run(ct_phantom(balls=()))
    assert codes(assessment.flags) == {"no_known_anatomy", "no_organ_found"}
    assert assessment.labels["ball"].confidence == 0.0 and codes(assessment.labels["ball"].flags) == {"not_found"}
    assert assessment.found == [] and assessment.summary.startswith("No organ found. Possible reasons:")
    assert "may not show the body region" in assessment.summary


# -- the score and the flags as functions ----------------------------------------------------------------------
MEASURES = {
    "voxels": 1000,
    "volume_ml": 12.0,
    "mean_probability": 0.9,
    "low_margin_share": 0.1,
    "pieces": 1,
    "outside_largest_share": 0.0,
    "edge_share": 0.0,
}
measure_values = st.fixed_dictionaries(
    {
        "voxels": st.integers(0, 10**6),
        "volume_ml": st.floats(0, 5000),
        "mean_probability": st.floats(0, 1),
        "low_margin_share": st.floats(0, 1),
        "pieces": st.integers(1, 50),
        "outside_largest_share": st.floats(0, 1),
        "edge_share": st.floats(0, 1),
    }
)
run_flag_lists = st.lists(st.sampled_from(confidence.RUN_FLAGS), max_size=3)


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(measure_values, run_flag_lists, st.floats(0, 1), st.floats(0, 1))
def test_the_score_is_in_zero_one_and_monotone(measures, run_codes, more, less):
    stats = TrainingStatistics.parse(training_statistics({"organ": ((10.0, 20.0), (10.0, 20.0))}))
    run_flags = [Flag(code, "") for code in run_codes]

    def score(values, extra=()):
        return label_confidence(values, label_flags("organ", values, stats), [*run_flags, *extra])

    base = score(measures)
    assert 0.0 <= base <= 1.0
    up = dict(measures, mean_probability=measures["mean_probability"] + (1 - measures["mean_probability"]) * more)
    clearer = dict(measures, low_margin_share=measures["low_margin_share"] * less)
    assert score(up) >= base and score(clearer) >= base  # (those flags only name what the score already has)
    for code in confidence.RUN_FLAGS:
        assert score(measures, [Flag(code, "")]) <= base
    if not measures["voxels"]:
        assert base == 0.0


def test_each_label_flag_lowers_or_keeps_the_score():
    plain = label_confidence(MEASURES, label_flags("organ", MEASURES, None), ())
    changes = {
        "low_probability": {"mean_probability": 0.5},
        "ambiguous": {"low_margin_share": 0.8},
        "fragmented": {"pieces": 3, "outside_largest_share": 0.4},
        "cut_off": {"edge_share": 0.1},
    }
    for code, change in changes.items():
        values = dict(MEASURES, **change)
        flags = label_flags("organ", values, None)
        assert code in codes(flags) and all(flag.message for flag in flags)
        assert label_confidence(values, flags, ()) < plain
    absent = dict(MEASURES, voxels=0)
    assert codes(label_flags("organ", absent, None)) == {"not_found"} and label_confidence(absent, [], ()) == 0.0


def test_the_assessment_round_trips_through_a_report():
    measures = {"ball": dict(MEASURES, edge_share=0.05), "other": dict(MEASURES, voxels=0)}
    grid = Grid((40, 40, 40), affine_from_spacing((3.0, 3.0, 3.0)))
    stats = TrainingStatistics.parse(training_statistics())
    summary = summarise_intensities(np.full((4, 4, 4), 40.0, np.float32), np.ones((4, 4, 4), bool))
    assessment = assess(measures, stats, summary, True, grid, 64000)
    report = {
        "labels": [{"name": name, **assessment.label_entry(name)} for name in measures],
        "flags": [flag.to_dict() for flag in assessment.flags],
        "summary": assessment.summary,
        "scan": assessment.scan,
    }
    assert Assessment.from_report(report) == assessment
    assert Assessment.from_report({"labels": [{"name": "ball", "volume_ml": 1.0}]}) is None  # an older report
    assert assessment.flagged == ["ball"] and assessment.found == ["ball"]


# -- the measures ----------------------------------------------------------------------------------------------
def test_label_certainty_is_the_top_probability_and_its_lead():
    logits = torch.randn(4, 5, 6, 7).numpy()
    labels = np.random.default_rng(0).integers(0, 4, (5, 6, 7)).astype(np.uint8)
    probability, margin = label_certainty(logits, labels, Inference(roi_size=(8, 8, 8)))
    soft = np.sort(torch.softmax(torch.from_numpy(logits), 0).numpy(), axis=0)
    np.testing.assert_allclose(probability, soft[-1][labels > 0], atol=1e-6)
    np.testing.assert_allclose(margin, (soft[-1] - soft[-2])[labels > 0], atol=1e-6)
    sigmoid = Inference(roi_size=(8, 8, 8), activation="sigmoid", threshold=0.5, regions=(Region(0, 1), Region(1, 2)))
    region_labels = np.where(logits[1] > 0, 2, np.where(logits[0] > 0, 1, 0)).astype(np.uint8)
    probability, margin = label_certainty(logits, region_labels, sigmoid)
    expected = torch.sigmoid(torch.from_numpy(np.where(region_labels == 2, logits[1], logits[0]))).numpy()
    np.testing.assert_allclose(probability, expected[region_labels > 0], atol=1e-6)
    np.testing.assert_allclose(margin, 2 * expected[region_labels > 0] - 1, atol=1e-5)


def test_component_pieces_counts_and_keeps_the_largest():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[1:3, 1:3, 1:3] = 1  # 8 voxels
    labels[6, 6, 6] = 1  # 1 voxel apart
    labels[8:10, 0:2, 0:1] = 2
    pieces = component_pieces(labels, [1, 2, 3], keep_largest=[1])
    assert pieces[1] == (2, pytest.approx(1 / 9)) and pieces[2] == (1, 0.0) and 3 not in pieces
    assert labels[6, 6, 6] == 0 and (labels == 1).sum() == 8 and (labels == 2).sum() == 4


def test_field_of_view_and_its_edge_follow_a_tilted_scan():
    source = Grid((20, 16, 12), affine_from_spacing((2.0, 2.0, 3.0), (5.0, -3.0, 8.0), rotation(2, 25)))
    target = Grid((40, 40, 30), affine_from_spacing((1.5, 1.5, 1.5), (-20.0, -20.0, -10.0)))
    inside = field_of_view(source, target)
    centres = np.stack(np.indices(target.shape), -1) @ target.affine[:3, :3].T + target.affine[:3, 3]
    index = (centres - source.affine[:3, 3]) @ np.linalg.inv(source.affine[:3, :3]).T
    expected = np.all((index >= -0.5) & (index <= np.asarray(source.shape) - 0.5), axis=-1)
    assert (inside != expected).sum() <= 0.001 * inside.size and inside.sum() > 1000
    edge = surface_voxels(inside)
    assert edge.any() and not (edge & ~inside).any()
    assert surface_voxels(np.ones((4, 4, 4), bool)).sum() == 64 - 8  # a box's faces


def test_intensity_summary_of_the_body():
    values = np.concatenate([np.full(600, -1000.0), np.linspace(-100, 100, 400)]).astype(np.float32)
    summary = summarise_intensities(values.reshape(10, 10, 10), np.ones((10, 10, 10), bool))
    assert summary.below_share == pytest.approx(0.6) and summary.minimum == -1000.0
    assert summary.body["p50"] == pytest.approx(0.0, abs=1) and set(summary.body) == {
        "p01",
        "p05",
        "p25",
        "p50",
        "p75",
        "p95",
        "p99",
    }
    assert summarise_intensities(values.reshape(10, 10, 10), np.zeros((10, 10, 10), bool)) is None


def test_intensity_summary_is_the_same_whether_every_voxel_or_some_are_inside_and_in_any_memory_order():
    rng = np.random.default_rng(3)
    volume = rng.normal(0, 400, (60, 50, 40)).astype(np.float32)
    everything = np.ones(volume.shape, bool)
    almost = everything.copy()
    almost[0, 0, 0] = False  # the gathering path, nearly the same voxels
    summaries = [
        summarise_intensities(array, inside)
        for array in (volume, np.asfortranarray(volume))
        for inside in (everything, almost)
    ]
    for summary in summaries:
        assert summary.minimum <= volume.min() + 1e-3 and summary.maximum >= volume.max() - 1e-3
        assert summary.below_share == pytest.approx(np.mean(volume <= -500), abs=0.01)
        for key, value in summary.body.items():
            assert value == pytest.approx(np.percentile(volume[volume > -500], int(key[1:])), abs=25)


def test_training_statistics_are_read_tolerantly():
    stats = TrainingStatistics.parse(training_statistics({"ball": ((8.0, 16.0), None)}))
    assert stats.labels["ball"].volume_ml.max == 16.0 and stats.labels["ball"].volume_ml_complete is None
    assert stats.min_slab_mm == 30.0 and stats.source_spacing_mm[1] == (3.0, 3.0, 3.0)
    assert stats.intensity_hu["p50"] == -21.0 and stats.labelled_fraction.min == 0.01
    assert TrainingStatistics.parse(None) is None
    bare = TrainingStatistics.parse({"cases": 1, "labels": {"ball": {"cases": 0}}, "source_spacing_mm": None})
    assert bare.labels["ball"].volume_ml is None and bare.source_spacing_mm is None and bare.min_slab_mm is None
    assert label_flags("ball", dict(MEASURES, volume_ml=1e6), bare) == []


def test_label_measures_counted_in_chunks_are_those_of_one_pass(monkeypatch):
    from TokenUNetSegmentLib.pipeline import confidence

    rng = np.random.default_rng(5)
    labels = rng.integers(1, 6, 1000).astype(np.uint8)
    labels[::97] = 9  # a value the table does not ask for
    certainty, margin = rng.random(1000).astype(np.float32), rng.random(1000).astype(np.float32)
    edge = rng.random(1000) < 0.1
    pieces = {2: (3, 0.25)}
    whole = confidence.measure_labels(labels, certainty, margin, edge, pieces, [1, 2, 3, 4, 5, 7], 0.02)
    monkeypatch.setattr(confidence, "MEASURE_CHUNK", 7)
    assert confidence.measure_labels(labels, certainty, margin, edge, pieces, [1, 2, 3, 4, 5, 7], 0.02) == whole
    value = 3
    count = int(np.count_nonzero(labels == value))
    assert whole[value]["voxels"] == count and whole[7]["voxels"] == 0 and whole[2]["pieces"] == 3
    assert whole[value]["mean_probability"] == round(float(certainty[labels == value].mean()), 4)
    assert whole[value]["low_margin_share"] == round(float(np.mean(margin[labels == value] < confidence.LOW_MARGIN)), 4)
    assert whole[value]["edge_share"] == round(float(np.mean(edge[labels == value])), 4)


def test_the_summary_writes_each_scan_flag_as_its_own_sentence():
    """Before: scan flags were joined by "; " though each starts with a capital ("... this model expects CT; The scan
    is 13 mm thin ..."); now each is a sentence."""
    found = confidence.LabelAssessment(0.4, (confidence.Flag("cut_off", "cut"),))
    flags = (
        confidence.Flag("not_ct", "the image has no value below -200; this model expects CT"),
        confidence.Flag("field_of_view_small", "the scan is 13 mm thin along one axis"),
    )
    text = confidence.summarise(confidence.Assessment({"liver": found}, flags))
    assert text.endswith(
        "cut off by the scan's edge: liver. The image has no value below -200; this model expects CT. "
        "The scan is 13 mm thin along one axis."
    )


def test_a_ct_cropped_inside_the_body_is_ct_and_an_mri_with_ringing_is_not():
    """A CT cropped inside the body (Slicer's Crop Volume around the liver: fat at -150 HU is its lowest value)
    (before: flagged ``not_ct``, "no air or fat", every confidence cut, the threshold -200 being below fat) is a CT;
    an MRI resampled with overshoot below 0 (lowest -30) is not."""
    image, affine = ct_phantom()
    assert "not_ct" not in codes(run((np.maximum(image, -150.0).astype(np.float32), affine), statistics=None).flags)
    mri = np.where(image > -500, 300.0 + image / 2, -30.0).astype(np.float32)
    assert "not_ct" in codes(run((mri, affine), statistics=None).flags)
