"""A run's result -> nodes on real MRML: segmentation, heatmap volumes, the attention segmentation and
probability volumes, each at the right place and in its run's folder."""

import numpy as np
import pytest
import slicer
from helpers.packages import dice, physical_ball, threshold_package
from helpers.scenes import BALL_AFFINE, BALL_SHAPE, ROTATE_Z_30, add_volume, ball_volume
from TokenUNetSegmentLib.mrml import attributes as keys
from TokenUNetSegmentLib.mrml.controller import result_notice
from TokenUNetSegmentLib.mrml.heatmap_nodes import HEAT_TABLE_TAG, show_in_slice_views, update_attention_segments
from TokenUNetSegmentLib.mrml.parameters import Parameters
from TokenUNetSegmentLib.mrml.result_nodes import apply_result
from TokenUNetSegmentLib.mrml.segmentation_nodes import segment_mask_world, segment_tag, subject_hierarchy
from TokenUNetSegmentLib.mrml.volume_nodes import ijk_to_world, oriented_image, oriented_image_to_array, volume_to_array
from TokenUNetSegmentLib.pipeline import segment

SHAPE = BALL_SHAPE


def test_threshold_model_run_creates_every_node_at_the_right_place(ctx):
    volume = ball_volume(ctx.scene, transform=ROTATE_Z_30)
    parameters = Parameters(inputVolume0=volume, heatmapKind="both", heatmapGrid="input", probabilities=True)
    package = threshold_package(spacing=(2.0, 2.0, 2.0), roi=(16, 16, 16))
    result = segment([volume_to_array(volume)], package, device="cpu", probabilities=True)
    nodes = apply_result(ctx.scene, result, parameters, volume)
    world = ijk_to_world(volume)
    ball = volume_to_array(volume)[0] > 0
    # the segmentation: the ball, where the input's ball is
    segmentation = nodes.segmentation.GetSegmentation()
    mask, affine, _ = segment_mask_world(nodes.segmentation, segmentation.GetSegmentIdBySegmentName("ball"))
    np.testing.assert_allclose(affine, world, atol=1e-6)
    np.testing.assert_array_equal(mask, result.labels == 1)
    assert dice(mask, ball) > 0.85  # resampling a rotated 4.5-voxel ball to the model grid erodes its rim
    np.testing.assert_allclose(np.argwhere(mask).mean(0), np.argwhere(ball).mean(0), atol=0.2)
    # heatmaps: tokens x kinds float volumes in [0, 1] on the input grid, heat colors, window 0..1, named
    assert len(nodes.heatmap_nodes) == 2 * 2
    heat = ctx.scene.GetSingletonNode(HEAT_TABLE_TAG, "vtkMRMLColorTableNode")
    for node in nodes.heatmap_nodes:
        array, node_affine = volume_to_array(node)
        assert array.dtype == np.float32 and array.shape == SHAPE and 0.0 <= array.min() <= array.max() <= 1.0
        np.testing.assert_allclose(node_affine, world, atol=1e-6)
        display = node.GetDisplayNode()
        assert display.GetColorNodeID() == heat.GetID()
        assert not display.GetAutoWindowLevel()
        assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 1.0)
        token, kind = int(node.GetAttribute(keys.TOKEN_ATTRIBUTE)), node.GetAttribute(keys.KIND_ATTRIBUTE)
        assert node.GetName() == f"Token {token:02d} {kind} - {node.GetAttribute(keys.BEST_LABEL_ATTRIBUTE)}"
        assert (
            node.GetAttribute(keys.BEST_LABEL_ATTRIBUTE) == "ball"
            and float(node.GetAttribute(keys.SOFT_DICE_ATTRIBUTE)) >= 0
        )
    token0 = next(n for n in nodes.heatmap_nodes if n.GetAttribute(keys.TOKEN_ATTRIBUTE) == "0")
    token0_map = volume_to_array(token0)[0]
    token1_map = volume_to_array(next(n for n in nodes.heatmap_nodes if n.GetAttribute(keys.TOKEN_ATTRIBUTE) == "1"))[0]
    assert token0_map[ball].mean() > 1.5 * token0_map[~ball].mean()  # token 0 looks at the ball (1/8 grid)
    assert token1_map[ball].mean() < token1_map[~ball].mean()  # token 1 at its complement
    for node in nodes.heatmap_nodes:
        expected = result.token_maps.get(
            node.GetAttribute(keys.KIND_ATTRIBUTE), int(node.GetAttribute(keys.TOKEN_ATTRIBUTE))
        )
        np.testing.assert_array_equal(volume_to_array(node)[0], expected)
    # one folder per run, beside the input, holding maps, attention segmentation and probabilities
    hierarchy = subject_hierarchy(ctx.scene)
    assert hierarchy.GetItemAttribute(nodes.folder, keys.RUN_ATTRIBUTE) == "1"
    assert hierarchy.GetItemParent(nodes.folder) == hierarchy.GetItemParent(hierarchy.GetItemByDataNode(volume))
    in_folder = {
        hierarchy.GetItemDataNode(hierarchy.GetItemByPositionUnderParent(nodes.folder, i)).GetID()
        for i in range(hierarchy.GetNumberOfItemChildren(nodes.folder))
    }
    assert in_folder == {n.GetID() for n in [*nodes.heatmap_nodes, nodes.attention, *nodes.probabilities]}
    # attention segmentation: one segment per token of the first kind, the map thresholded at 0.5
    attention = nodes.attention.GetSegmentation()
    assert attention.GetNumberOfSegments() == 2
    assert nodes.attention.GetAttribute(keys.THRESHOLD_ATTRIBUTE) == "0.5"
    first = attention.GetNthSegmentID(0)
    mask, affine, _ = segment_mask_world(nodes.attention, first)
    full = np.zeros(SHAPE, bool)
    start = np.round(np.linalg.solve(world, affine @ [0, 0, 0, 1.0])[:3]).astype(int)
    full[
        start[0] : start[0] + mask.shape[0], start[1] : start[1] + mask.shape[1], start[2] : start[2] + mask.shape[2]
    ] = mask
    np.testing.assert_array_equal(full, token0_map >= 0.5)
    assert attention.GetSegment(first).GetName() == "Token 00 - ball"
    # a new threshold rebuilds the segments from the heatmap nodes alone
    update_attention_segments(nodes.attention, 0.9)
    mask, _, _ = segment_mask_world(nodes.attention, nodes.attention.GetSegmentation().GetNthSegmentID(0))
    assert mask.sum() == (token0_map >= 0.9).sum() < full.sum()
    assert nodes.attention.GetNumberOfNodeReferences(keys.HEATMAP_ROLE) == 2
    with pytest.raises(ValueError):
        update_attention_segments(nodes.attention, 0.0)
    # probabilities: one map per label
    assert [n.GetName() for n in nodes.probabilities] == ["ball probability"]
    probability = volume_to_array(nodes.probabilities[0])[0]
    np.testing.assert_array_equal(probability, result.probabilities["ball"])
    assert probability[ball].mean() > 0.5 > 0.1 > probability[~ball].mean()
    # a second run gets its own folder
    again = apply_result(ctx.scene, result, Parameters(inputVolume0=volume, attentionSegments=False), volume)
    assert again.folder != nodes.folder and hierarchy.GetItemAttribute(again.folder, keys.RUN_ATTRIBUTE) == "2"
    assert again.attention is None and len(again.heatmap_nodes) == 2


def test_heatmap_shown_as_foreground_of_every_slice_view(ctx):
    volume = ball_volume(ctx.scene)
    composites = [ctx.scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for _ in range(3)]
    heatmap = ctx.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "map")
    show_in_slice_views(ctx.scene, heatmap, 0.4, background=volume)
    for composite in composites:
        assert composite.GetForegroundVolumeID() == heatmap.GetID()
        assert composite.GetBackgroundVolumeID() == volume.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.4)


def test_heatmaps_on_the_token_grid_sit_at_the_same_place_with_little_memory(ctx):
    volume = ball_volume(ctx.scene, transform=ROTATE_Z_30)
    package = threshold_package(spacing=(2.0, 2.0, 2.0), roi=(16, 16, 16))
    result = segment([volume_to_array(volume)], package, device="cpu")
    nodes = apply_result(ctx.scene, result, Parameters(inputVolume0=volume), volume)  # the token grid by default
    coarse = result.token_maps.coarse_grid
    for node in nodes.heatmap_nodes:
        array, affine = volume_to_array(node)
        token = int(node.GetAttribute(keys.TOKEN_ATTRIBUTE))
        assert array.shape == coarse.shape and array.size < np.prod(SHAPE)
        np.testing.assert_allclose(affine, coarse.affine, atol=1e-6)  # world geometry of the token grid
        np.testing.assert_array_equal(array, result.token_maps.coarse["gather"][token])
        assert node.GetParentTransformNode() is volume.GetParentTransformNode()
    # token 0's segment: cut on a grid finer than the token grid (test_attention_segments_of_coarse_maps...)
    mask, affine, _ = segment_mask_world(nodes.attention, nodes.attention.GetSegmentation().GetNthSegmentID(0))
    assert np.all(np.linalg.norm(affine[:3, :3], axis=0) < coarse.spacing) and mask.sum() > 0


def test_attention_segments_of_coarse_maps_follow_their_interpolation(ctx):
    """A 16 mm map of a ball thresholded on a finer grid: the trilinear interpolation SimpleITK computes there."""
    from TokenUNetSegmentLib.mrml.heatmap_nodes import refinement, threshold_image
    from TokenUNetSegmentLib.mrml.volume_nodes import oriented_image_to_array
    from TokenUNetSegmentLib.pipeline.geometry import Grid, resample

    coarse = Grid((9, 8, 7), np.array([[16.0, 0, 0, -60], [0, 0, -16.0, 40], [0, 16.0, 0, -50], [0, 0, 0, 1]]))
    centre = np.array([4.2, 3.6, 3.1])
    index = np.stack(np.meshgrid(*[np.arange(n) for n in coarse.shape], indexing="ij"), -1)
    values = np.exp(-(((index - centre) ** 2).sum(-1)) / 4.0).astype(np.float32)
    factor = refinement(coarse.affine)
    assert factor == 6 and refinement(np.diag([0.8, 0.8, 1.5, 1.0])) == 1  # 16 mm -> 2.7 mm; input grids as they are
    array, image_affine, start = oriented_image_to_array(threshold_image(values, 0.5, coarse.affine))
    # the fine grid of the whole map, where SimpleITK interpolates the same map
    to_map = np.diag([1 / factor] * 3 + [1.0])
    to_map[:3, 3] = 0.5 / factor - 0.5
    fine = Grid(tuple(n * factor for n in coarse.shape), coarse.affine @ to_map)
    np.testing.assert_allclose(image_affine, fine.affine, atol=1e-9)
    expected = resample(values, coarse, fine, "linear", 0.0) >= 0.5
    got = np.zeros(fine.shape, bool)
    got[tuple(slice(s, s + n) for s, n in zip(start, array.shape, strict=True))] = array > 0
    assert got.sum() > 1000 and (got != expected).sum() <= 0.01 * expected.sum()  # float rounding at the rim


def test_nodes_removed_during_a_run_do_not_break_the_result(ctx):
    volume = ball_volume(ctx.scene, transform=ROTATE_Z_30)
    output = ctx.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "chosen output")
    package = threshold_package(spacing=(2.0, 2.0, 2.0), roi=(16, 16, 16))
    result = segment([volume_to_array(volume)], package, device="cpu")
    world = ijk_to_world(volume)
    ctx.scene.RemoveNode(output)
    ctx.scene.RemoveNode(volume)
    nodes = apply_result(ctx.scene, result, Parameters(heatmaps=False), volume, output)
    assert nodes.segmentation is not output and nodes.segmentation.GetScene() is ctx.scene
    segmentation = nodes.segmentation.GetSegmentation()
    mask, affine, _ = segment_mask_world(nodes.segmentation, segmentation.GetSegmentIdBySegmentName("ball"))
    np.testing.assert_allclose(affine, world, atol=1e-6)
    np.testing.assert_array_equal(mask, result.labels == 1)


def test_segments_carry_their_confidence_and_flags_and_keep_them_when_saved(ctx, tmp_path):
    """Each made segment is tagged with its confidence and flags; an organ found with flags gets Slicer's
    "flagged" status (the flag icon in the Segment Editor's list); the node holds the run's flags and summary."""
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    centre = BALL_AFFINE[:3, :3] @ [10, 9, 0] + BALL_AFFINE[:3, 3]  # a ball cut by the scan's first slice
    edge = add_volume(ctx.scene, physical_ball(SHAPE, BALL_AFFINE, centre, 9.0, value=250.0), BALL_AFFINE, "edge")
    package = threshold_package(spacing=(2.0, 2.0, 2.0), roi=(16, 16, 16))
    result = segment([volume_to_array(edge)], package, device="cpu", with_token_maps=False)
    nodes = apply_result(ctx.scene, result, Parameters(heatmaps=False), edge)
    assert nodes.assessment is result.assessment and nodes.warnings == result.warnings
    judged = result.assessment.labels["ball"]
    segmentation = nodes.segmentation.GetSegmentation()
    ball = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("ball"))
    assert segment_tag(ball, keys.CONFIDENCE_TAG) == f"{judged.confidence:.3f}"
    assert "cut_off" in segment_tag(ball, keys.FLAGS_TAG).split(",")
    assert "edge of the scan" in segment_tag(ball, keys.FLAG_MESSAGES_TAG)
    assert logic.GetSegmentStatus(ball) == logic.Flagged
    assert nodes.segmentation.GetAttribute(keys.SUMMARY_ATTRIBUTE) == result.assessment.summary
    notice = result_notice(nodes.assessment, nodes.warnings)  # the module's warning line about this result
    assert f"Check ball (cut off; {judged.confidence:.2f})." in notice.text
    assert f"ball (confidence {judged.confidence:.2f}): " in notice.details and "edge of the scan" in notice.details
    # saved and read back (tags are part of the .seg.nrrd file)
    storage = nodes.segmentation.CreateDefaultStorageNode()
    ctx.scene.AddNode(storage)
    storage.SetFileName(str(tmp_path / "result.seg.nrrd"))
    assert storage.WriteData(nodes.segmentation)
    loaded = ctx.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "loaded")
    reader = loaded.CreateDefaultStorageNode()
    reader.SetFileName(str(tmp_path / "result.seg.nrrd"))
    assert reader.ReadData(loaded)
    again = loaded.GetSegmentation().GetSegment(loaded.GetSegmentation().GetNthSegmentID(0))
    assert segment_tag(again, keys.CONFIDENCE_TAG) == f"{judged.confidence:.3f}"
    assert logic.GetSegmentStatus(again) == logic.Flagged
    # a later run into the same node replaces the tags: a whole ball, nothing to flag
    volume = ball_volume(ctx.scene)
    clean = segment([volume_to_array(volume)], package, device="cpu", with_token_maps=False)
    assert clean.assessment.labels["ball"].flags == ()
    apply_result(ctx.scene, clean, Parameters(heatmaps=False), volume, nodes.segmentation)
    ball = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("ball"))
    assert segment_tag(ball, keys.FLAGS_TAG) == "" and logic.GetSegmentStatus(ball) == logic.NotStarted
    assert float(segment_tag(ball, keys.CONFIDENCE_TAG)) == clean.assessment.labels["ball"].confidence > 0.5
    assert nodes.segmentation.GetAttribute(keys.RUN_FLAGS_ATTRIBUTE) == ""


def test_a_rerun_keeps_the_segments_the_user_edited_and_says_so(ctx):
    volume = ball_volume(ctx.scene)
    package = threshold_package(spacing=(2.0, 2.0, 2.0), roi=(16, 16, 16))
    result = segment([volume_to_array(volume)], package, device="cpu", with_token_maps=False)
    first = apply_result(ctx.scene, result, Parameters(heatmaps=False), volume)
    node = first.segmentation
    ball_id = node.GetSegmentation().GetSegmentIdBySegmentName("ball")
    layer = node.GetSegmentation().GetSegment(ball_id).GetRepresentation("Binary labelmap")
    edited, _, _ = oriented_image_to_array(layer)
    edited[0, 0, 0] = 1  # the user's correction
    layer.Modified()
    again = apply_result(ctx.scene, result, Parameters(heatmaps=False), volume, node)
    assert again.segmentation is node and node.GetSegmentation().GetNumberOfSegments() == 2
    assert segment_mask_world(node, ball_id)[0][0, 0, 0]
    assert "your edited segment 'ball' is kept; the new result is beside it" in again.warnings
    third = apply_result(ctx.scene, result, Parameters(heatmaps=False), volume, node)  # nothing edited since
    assert node.GetSegmentation().GetNumberOfSegments() == 2 and not any("edited" in w for w in third.warnings)


def test_a_new_attention_threshold_keeps_what_the_user_added_to_the_attention_segmentation(ctx):
    volume = ball_volume(ctx.scene)
    package = threshold_package(spacing=(2.0, 2.0, 2.0), roi=(16, 16, 16))
    result = segment([volume_to_array(volume)], package, device="cpu")
    nodes = apply_result(ctx.scene, result, Parameters(inputVolume0=volume, heatmapGrid="input"), volume)
    attention = nodes.attention.GetSegmentation()
    tokens = attention.GetNumberOfSegments()
    mine = slicer.vtkSegment()
    mine.SetName("my note")
    mine.AddRepresentation("Binary labelmap", oriented_image(np.ones((2, 2, 2), np.uint8), BALL_AFFINE))
    attention.AddSegment(mine, "mine")
    update_attention_segments(nodes.attention, 0.9)
    assert attention.GetNumberOfSegments() == tokens + 1
    assert attention.GetSegment("mine").GetName() == "my note"
    assert segment_mask_world(nodes.attention, "mine")[0].sum() == 8
