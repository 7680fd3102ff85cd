"""Runs on real MRML: in-process and subprocess, heatmap and attention nodes, probabilities, cancel, failures."""

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mrml_testlib import ROTATE_Z_30, add_volume, new_scene, node_ids
from pipeline_testlib import dice, make_package, physical_ball, threshold_package, tiny_config
from TokenUNetSegmentLib.mrml.heatmaps import (
    DICE_ATTRIBUTE,
    HEAT_TABLE_TAG,
    HEATMAP_ROLE,
    KIND_ATTRIBUTE,
    LABEL_ATTRIBUTE,
    RUN_ATTRIBUTE,
    THRESHOLD_ATTRIBUTE,
    TOKEN_ATTRIBUTE,
    show_in_slice_views,
    update_attention_segments,
)
from TokenUNetSegmentLib.mrml.logic import SceneRun, apply_result
from TokenUNetSegmentLib.mrml.parameters import Parameters
from TokenUNetSegmentLib.mrml.runner import RunRequest, RunState, SubprocessRun, kill_process_tree
from TokenUNetSegmentLib.mrml.segmentation import segment_mask_world, subject_hierarchy
from TokenUNetSegmentLib.mrml.volumes import ijk_to_world, volume_to_array
from TokenUNetSegmentLib.pipeline import segment

AFFINE = np.array([[2.0, 0, 0, -20.0], [0, 2.0, 0, -18.0], [0, 0, 2.0, -10.0], [0, 0, 0, 1]])
SHAPE = (20, 18, 12)


@pytest.fixture(scope="module")
def tiny_package(tmp_path_factory):
    return make_package(tmp_path_factory.mktemp("pkg"), tiny_config(roi=(16, 16, 16), spacing=(3.0, 3.0, 3.0)))


@pytest.fixture
def ctx():
    return new_scene()


def ball_volume(scene, transform=None, name="ct", affine=AFFINE):
    array = physical_ball(SHAPE, affine, affine[:3, :3] @ [10, 9, 6] + affine[:3, 3], 9.0, value=250.0)
    return add_volume(scene, array, affine, name=name, transform=transform)


def made_labels(node, shape):
    """The made segments' masks combined into a label array on the input grid (value from the segment)."""
    segmentation = node.GetSegmentation()
    labels = np.zeros(shape, np.uint8)
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        mask, _, _ = segment_mask_world(node, segment_id)
        labels[mask] = segmentation.GetSegment(segment_id).GetLabelValue()
    return labels


def test_threshold_model_run_creates_every_node_at_the_right_place(ctx):
    volume = ball_volume(ctx.scene, transform=ROTATE_Z_30)
    parameters = Parameters(inputVolume0=volume, heatmapKind="both", probabilities=True)
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
    assert len(nodes.heatmaps) == 2 * 2
    heat = ctx.scene.GetSingletonNode(HEAT_TABLE_TAG, "vtkMRMLColorTableNode")
    for node in nodes.heatmaps:
        array, node_affine = volume_to_array(node)
        assert array.dtype == np.float32 and array.shape == SHAPE and 0.0 <= array.min() <= array.max() <= 1.0
        np.testing.assert_allclose(node_affine, world, atol=1e-6)
        display = node.GetDisplayNode()
        assert display.GetColorNodeID() == heat.GetID()
        assert not display.GetAutoWindowLevel()
        assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 1.0)
        token, kind = int(node.GetAttribute(TOKEN_ATTRIBUTE)), node.GetAttribute(KIND_ATTRIBUTE)
        assert node.GetName() == f"Token {token:02d} {kind} - {node.GetAttribute(LABEL_ATTRIBUTE)}"
        assert node.GetAttribute(LABEL_ATTRIBUTE) == "ball" and float(node.GetAttribute(DICE_ATTRIBUTE)) >= 0
    token0 = next(n for n in nodes.heatmaps if n.GetAttribute(TOKEN_ATTRIBUTE) == "0")
    token0_map = volume_to_array(token0)[0]
    token1_map = volume_to_array(next(n for n in nodes.heatmaps if n.GetAttribute(TOKEN_ATTRIBUTE) == "1"))[0]
    assert token0_map[ball].mean() > 1.5 * token0_map[~ball].mean()  # token 0 looks at the ball (1/8 grid)
    assert token1_map[ball].mean() < token1_map[~ball].mean()  # token 1 at its complement
    for node in nodes.heatmaps:
        expected = result.heatmaps.get(node.GetAttribute(KIND_ATTRIBUTE), int(node.GetAttribute(TOKEN_ATTRIBUTE)))
        np.testing.assert_array_equal(volume_to_array(node)[0], expected)
    # one folder per run, beside the input, holding maps, attention segmentation and probabilities
    hierarchy = subject_hierarchy(ctx.scene)
    assert hierarchy.GetItemAttribute(nodes.folder, RUN_ATTRIBUTE) == "1"
    assert hierarchy.GetItemParent(nodes.folder) == hierarchy.GetItemParent(hierarchy.GetItemByDataNode(volume))
    in_folder = {
        hierarchy.GetItemDataNode(hierarchy.GetItemByPositionUnderParent(nodes.folder, i)).GetID()
        for i in range(hierarchy.GetNumberOfItemChildren(nodes.folder))
    }
    assert in_folder == {n.GetID() for n in [*nodes.heatmaps, nodes.attention, *nodes.probabilities]}
    # attention segmentation: one segment per token of the first kind, the map thresholded at 0.5
    attention = nodes.attention.GetSegmentation()
    assert attention.GetNumberOfSegments() == 2
    assert nodes.attention.GetAttribute(THRESHOLD_ATTRIBUTE) == "0.5"
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
    assert nodes.attention.GetNumberOfNodeReferences(HEATMAP_ROLE) == 2
    with pytest.raises(ValueError):
        update_attention_segments(nodes.attention, 0.0)
    # probabilities: one map per label
    assert [n.GetName() for n in nodes.probabilities] == ["ball probability"]
    probability = volume_to_array(nodes.probabilities[0])[0]
    np.testing.assert_array_equal(probability, result.probabilities["ball"])
    assert probability[ball].mean() > 0.5 > 0.1 > probability[~ball].mean()
    # a second run gets its own folder
    again = apply_result(ctx.scene, result, Parameters(inputVolume0=volume, attentionSegments=False), volume)
    assert again.folder != nodes.folder and hierarchy.GetItemAttribute(again.folder, RUN_ATTRIBUTE) == "2"
    assert again.attention is None and len(again.heatmaps) == 2


def test_heatmap_shown_as_foreground_of_every_slice_view(ctx):
    volume = ball_volume(ctx.scene)
    composites = [ctx.scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for _ in range(3)]
    heatmap = ctx.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "map")
    show_in_slice_views(ctx.scene, heatmap, 0.4, background=volume)
    for composite in composites:
        assert composite.GetForegroundVolumeID() == heatmap.GetID()
        assert composite.GetBackgroundVolumeID() == volume.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.4)


def test_in_process_scene_run_with_progress(ctx, tiny_package):
    volume = ball_volume(ctx.scene)
    events = []
    run = SceneRun(ctx.scene, Parameters(inputVolume0=volume, model=str(tiny_package), device="cpu"), mode="inprocess")
    run.add_observer(events.append)
    assert run.run_now() == RunState.COMPLETED
    fractions = [e["fraction"] for e in events if e["type"] == "progress"]
    assert fractions[-1] == 1.0 and fractions == sorted(fractions) and len(fractions) > 3
    assert events[-1]["type"] == "state" and events[-1]["nodes"] is run.nodes
    expected = segment([volume_to_array(volume)], str(tiny_package), device="cpu")
    np.testing.assert_array_equal(made_labels(run.nodes.segmentation, SHAPE), expected.labels)
    assert len(run.nodes.heatmaps) == 8  # 8 tokens, gather maps by default
    assert run.nodes.attention.GetSegmentation().GetNumberOfSegments() == 8


def test_in_process_worker_thread_run_and_cancel(ctx, tiny_package):
    volume = ball_volume(ctx.scene)
    before = node_ids(ctx.scene)
    run = SceneRun(ctx.scene, Parameters(inputVolume0=volume, model=str(tiny_package), device="cpu"), mode="inprocess")
    run.run.add_observer(lambda e: run.cancel() if e["type"] == "progress" else None)
    run.start()
    assert run.wait(timeout=120) == RunState.CANCELLED
    assert node_ids(ctx.scene) == before


def child_pids(pid):
    """Processes whose parent or process group is ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and (int(fields[1]) == pid or int(fields[2]) == pid):
                found.append(int(entry.name))
    return found


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] if Path(f"/proc/{pid}").exists() else "X"
    return state != "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="checks the process table in /proc")
def test_subprocess_run_matches_in_process_and_cleans_up(ctx, tiny_package):
    # a mirrored grid (negative determinant) under a rotation: files must not flip or move anything
    volume = ball_volume(ctx.scene, transform=ROTATE_Z_30, affine=AFFINE @ np.diag([1.0, 1.0, -1.0, 1.0]))
    assert np.linalg.det(ijk_to_world(volume)[:3, :3]) < 0
    events = []
    parameters = Parameters(
        inputVolume0=volume, model=str(tiny_package), device="cpu", heatmapKind="both", probabilities=True
    )
    run = SceneRun(ctx.scene, parameters, mode="subprocess")
    run.add_observer(events.append)
    run.start()
    folder = run.run.folder
    assert folder.is_dir() and (folder / "inputs" / "channel0.nrrd").is_file()
    assert run.wait(timeout=240) == RunState.COMPLETED, run.error
    assert not folder.exists()
    assert not alive(run.run.process.pid)
    fractions = [e["fraction"] for e in events if e["type"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) > 3
    expected = segment([volume_to_array(volume)], str(tiny_package), device="cpu", probabilities=True)
    np.testing.assert_array_equal(made_labels(run.nodes.segmentation, SHAPE), expected.labels)
    assert len(run.nodes.heatmaps) == 16
    for node in run.nodes.heatmaps:
        kind, token = node.GetAttribute(KIND_ATTRIBUTE), int(node.GetAttribute(TOKEN_ATTRIBUTE))
        # the CLI writes token maps in steps of 1/1024
        np.testing.assert_allclose(volume_to_array(node)[0], expected.heatmaps.get(kind, token), atol=1 / 1024)
        np.testing.assert_allclose(volume_to_array(node)[1], ijk_to_world(volume), atol=1e-6)
    for node, label in zip(run.nodes.probabilities, expected.label_table, strict=True):
        np.testing.assert_allclose(volume_to_array(node)[0], expected.probabilities[label.name], atol=1e-5)


@pytest.mark.skipif(sys.platform != "linux", reason="checks the process table in /proc")
def test_subprocess_cancel_leaves_no_nodes_no_process_no_files(ctx, tiny_package):
    volume = ball_volume(ctx.scene)
    before = node_ids(ctx.scene)
    run = SceneRun(ctx.scene, Parameters(inputVolume0=volume, model=str(tiny_package), device="cpu"), mode="subprocess")
    run.run.grace = 1.0
    cancelled_at = []

    def on_event(event):
        if event["type"] == "progress" and not cancelled_at:
            cancelled_at.append(event["fraction"])
            run.cancel()

    run.add_observer(on_event)
    run.start()
    folder, pid = run.run.folder, run.run.process.pid
    assert run.wait(timeout=240) == RunState.CANCELLED
    assert cancelled_at and cancelled_at[0] < 1.0
    assert node_ids(ctx.scene) == before
    assert not alive(pid) and child_pids(pid) == []
    assert not folder.exists()


@pytest.mark.skipif(sys.platform != "linux", reason="checks the process table in /proc")
def test_cancel_kills_the_whole_process_tree_even_when_it_ignores_sigterm(tmp_path):
    script = tmp_path / "stubborn.py"
    script.write_text(
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    lines = []
    run = SubprocessRun(
        RunRequest(inputs=[(np.zeros((2, 2, 2), np.float32), np.eye(4))]),
        grace=0.5,
        command=[sys.executable, str(script)],
    )
    run.add_observer(lambda e: lines.append(e["line"]) if e["type"] == "log" else None)
    run.start()
    limit = time.monotonic() + 30
    while not lines and time.monotonic() < limit:
        run.poll()
        time.sleep(0.05)
    grandchild = int(lines[0])
    assert alive(grandchild)
    started = time.monotonic()
    run.cancel()
    assert run.wait(timeout=30) == RunState.CANCELLED
    assert time.monotonic() - started < 10
    time.sleep(0.2)
    assert not alive(run.process.pid) and not alive(grandchild)


def test_kill_process_tree_of_a_finished_process_is_harmless():
    import subprocess

    process = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    process.wait()
    kill_process_tree(process, 0.1)
    assert process.returncode == 0
    assert signal.SIGKILL  # the POSIX path was taken on this platform


def test_failed_subprocess_run_reports_the_cli_message_and_adds_nothing(ctx, tmp_path):
    volume = ball_volume(ctx.scene)
    before = node_ids(ctx.scene)
    run = SceneRun(
        ctx.scene,
        Parameters(inputVolume0=volume, device="cpu"),
        mode="subprocess",
        channels=1,
        model=str(tmp_path / "missing.zip"),
    )
    run.start()
    assert run.wait(timeout=240) == RunState.FAILED
    assert "model package not found" in str(run.error)
    assert node_ids(ctx.scene) == before and not run.run.folder.exists()


def test_heatmaps_on_the_token_grid_sit_at_the_same_place_with_little_memory(ctx):
    volume = ball_volume(ctx.scene, transform=ROTATE_Z_30)
    package = threshold_package(spacing=(2.0, 2.0, 2.0), roi=(16, 16, 16))
    result = segment([volume_to_array(volume)], package, device="cpu")
    nodes = apply_result(ctx.scene, result, Parameters(inputVolume0=volume, heatmapGrid="token"), volume)
    coarse = result.heatmaps.coarse_grid
    for node in nodes.heatmaps:
        array, affine = volume_to_array(node)
        token = int(node.GetAttribute(TOKEN_ATTRIBUTE))
        assert array.shape == coarse.shape and array.size < np.prod(SHAPE)
        np.testing.assert_allclose(affine, coarse.affine, atol=1e-6)  # world geometry of the token grid
        np.testing.assert_array_equal(array, result.heatmaps.coarse["gather"][token])
        assert node.GetParentTransformNode() is volume.GetParentTransformNode()
    mask, affine, _ = segment_mask_world(nodes.attention, nodes.attention.GetSegmentation().GetNthSegmentID(0))
    assert mask.sum() == (result.heatmaps.coarse["gather"][0] >= 0.5).sum() > 0


def test_auto_heatmap_grid_keeps_the_input_grid_until_maps_get_large():
    from TokenUNetSegmentLib.mrml.heatmaps import choose_grid

    assert choose_grid("auto", 1, 8, 122 * 101 * 112) == "input"
    assert choose_grid("auto", 2, 32, 512 * 512 * 300) == "token"
    assert choose_grid("token", 1, 1, 1) == "token" and choose_grid("input", 9, 99, 10**9) == "input"
    with pytest.raises(ValueError):
        choose_grid("coarse", 1, 1, 1)


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
