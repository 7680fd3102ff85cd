"""Scene runs on real MRML: in-process (blocking and worker thread) and subprocess runs bound to a scene,
their typed events, cancel and failures; nothing is added to the scene unless a run completes."""

import json
import sys

import numpy as np
import pytest
import slicer
from helpers.packages import blank_network, make_package, tiny_config
from helpers.processes import alive, child_pids
from helpers.scenes import (
    BALL_AFFINE,
    BALL_SHAPE,
    ROTATE_Z_30,
    assert_same_labels_but_near_ties,
    ball_volume,
    made_labels,
    node_ids,
)
from TokenUNetSegmentLib.mrml.attributes import (
    CONFIDENCE_TAG,
    FLAG_MESSAGES_TAG,
    FLAGS_TAG,
    KIND_ATTRIBUTE,
    RUN_FLAGS_ATTRIBUTE,
    SUMMARY_ATTRIBUTE,
    TOKEN_ATTRIBUTE,
)
from TokenUNetSegmentLib.mrml.controller import result_notice
from TokenUNetSegmentLib.mrml.parameters import Parameters
from TokenUNetSegmentLib.mrml.scene_run import SceneRun, SceneRunFinished
from TokenUNetSegmentLib.mrml.segmentation_nodes import segment_tag
from TokenUNetSegmentLib.mrml.volume_nodes import ijk_to_world, volume_to_array
from TokenUNetSegmentLib.pipeline import segment
from TokenUNetSegmentLib.pipeline.checksums import sha256_file
from TokenUNetSegmentLib.pipeline.errors import ModelPackageError
from TokenUNetSegmentLib.pipeline.run_contract import ProgressEvent, RunState

SHAPE = BALL_SHAPE


def test_in_process_scene_run_with_progress(ctx, tiny_package):
    volume = ball_volume(ctx.scene)
    events = []
    run = SceneRun(ctx.scene, Parameters(inputVolume0=volume, model=str(tiny_package), device="cpu"), mode="inprocess")
    run.add_observer(events.append)
    assert run.run_now() == RunState.COMPLETED
    fractions = [e.fraction for e in events if isinstance(e, ProgressEvent)]
    assert fractions[-1] == 1.0 and fractions == sorted(fractions) and len(fractions) > 3
    assert isinstance(events[-1], SceneRunFinished) and events[-1].nodes is run.nodes
    expected = segment([volume_to_array(volume)], str(tiny_package), device="cpu", probabilities=True)
    assert_same_labels_but_near_ties(made_labels(run.nodes.segmentation, SHAPE), expected)
    assert len(run.nodes.heatmap_nodes) == 8  # 8 tokens, gather maps by default
    assert run.nodes.attention.GetSegmentation().GetNumberOfSegments() == 8


def test_in_process_worker_thread_run_and_cancel(ctx, tiny_package):
    volume = ball_volume(ctx.scene)
    before = node_ids(ctx.scene)
    run = SceneRun(ctx.scene, Parameters(inputVolume0=volume, model=str(tiny_package), device="cpu"), mode="inprocess")
    run.run.add_observer(lambda e: run.cancel() if isinstance(e, ProgressEvent) else None)
    run.start()
    assert run.wait(timeout=120) == RunState.CANCELLED
    assert node_ids(ctx.scene) == before


def test_a_background_run_started_from_the_console_is_discarded_when_the_scene_closes(ctx, tiny_package):
    """``logic.process(waitForCompletion=False)`` then File > Close Scene: the closed scene's result never reaches
    the next scene, even when the worker had finished and only the next poll would add it."""
    volume = ball_volume(ctx.scene)
    run = SceneRun(ctx.scene, Parameters(inputVolume0=volume, model=str(tiny_package), device="cpu"), mode="inprocess")
    run.start()
    run.run._thread.join()  # the worker has finished; its result waits for the next poll
    ctx.scene.Clear(0)
    before = node_ids(ctx.scene)
    assert run.wait(timeout=120) == RunState.CANCELLED and run.nodes is None
    assert node_ids(ctx.scene) == before
    again = Parameters(inputVolume0=ball_volume(ctx.scene), model=str(tiny_package), device="cpu")
    finished = SceneRun(ctx.scene, again, mode="inprocess")
    finished.start()
    assert finished.wait(timeout=120) == RunState.COMPLETED and finished._close_tag is None  # no longer watching
    ctx.scene.Clear(0)
    assert finished.state == RunState.COMPLETED


@pytest.mark.skipif(sys.platform != "linux", reason="checks the process table in /proc")
def test_subprocess_run_matches_in_process_and_cleans_up(ctx, tiny_package):
    # a mirrored grid (negative determinant) under a rotation: files must not flip or move anything
    volume = ball_volume(ctx.scene, transform=ROTATE_Z_30, affine=BALL_AFFINE @ np.diag([1.0, 1.0, -1.0, 1.0]))
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
    fractions = [e.fraction for e in events if isinstance(e, ProgressEvent)]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) > 3
    expected = segment([volume_to_array(volume)], str(tiny_package), device="cpu", probabilities=True)
    assert_same_labels_but_near_ties(made_labels(run.nodes.segmentation, SHAPE), expected)
    assert len(run.nodes.heatmap_nodes) == 16
    for node in run.nodes.heatmap_nodes:
        kind, token = node.GetAttribute(KIND_ATTRIBUTE), int(node.GetAttribute(TOKEN_ATTRIBUTE))
        # the CLI writes token maps on the token grid in uint8 steps of 1/255, at the same place in space; the
        # run's own sums (another thread count) may move a value by float noise across a rounding boundary
        array, affine = volume_to_array(node)
        np.testing.assert_allclose(array, expected.token_maps.coarse[kind][token], atol=0.5 / 255 + 1e-3)
        np.testing.assert_allclose(affine, expected.token_maps.coarse_grid.affine, atol=1e-5)
    for node, label in zip(run.nodes.probabilities, expected.label_table, strict=True):
        # another thread count sums the windows in another order: about 1e-5 apart under load (seen on 6 % of voxels)
        np.testing.assert_allclose(volume_to_array(node)[0], expected.probabilities[label.name], atol=1e-4)


@pytest.mark.skipif(sys.platform != "linux", reason="checks the process table in /proc")
def test_subprocess_cancel_leaves_no_nodes_no_process_no_files(ctx, tiny_package):
    volume = ball_volume(ctx.scene)
    before = node_ids(ctx.scene)
    run = SceneRun(ctx.scene, Parameters(inputVolume0=volume, model=str(tiny_package), device="cpu"), mode="subprocess")
    run.run.grace = 1.0
    cancelled_at = []

    def on_event(event):
        if isinstance(event, ProgressEvent) and not cancelled_at:
            cancelled_at.append(event.fraction)
            run.cancel()

    run.add_observer(on_event)
    run.start()
    folder, pid = run.run.folder, run.run.process.pid
    assert run.wait(timeout=240) == RunState.CANCELLED
    assert cancelled_at and cancelled_at[0] < 1.0
    assert node_ids(ctx.scene) == before
    assert not alive(pid) and child_pids(pid) == []
    assert not folder.exists()


def test_failed_subprocess_run_reports_the_cli_message_and_adds_nothing(ctx, tmp_path):
    volume = ball_volume(ctx.scene)
    before = node_ids(ctx.scene)
    parameters = Parameters(inputVolume0=volume, device="cpu", model=str(tmp_path / "missing.zip"))
    run = SceneRun(ctx.scene, parameters, mode="subprocess")
    run.start()
    assert run.wait(timeout=240) == RunState.FAILED
    # the child's typed error event, not a parsed "error:" line: the same error class as in-process
    assert isinstance(run.error, ModelPackageError) and "model package not found" in str(run.error)
    assert node_ids(ctx.scene) == before and not run.run.folder.exists()


def test_the_model_is_resolved_inside_the_run_and_downloaded_there_with_progress(ctx, tmp_path, monkeypatch):
    """``Parameters.model`` ("": the catalog default) goes into the request unresolved: building the run reads at
    most the catalog (the channel names of a model not downloaded yet); the run's worker thread downloads it."""
    from TokenUNetSegmentLib.pipeline import catalog

    zipped = make_package(
        tmp_path / "dl", tiny_config("remote-model", roi=(16, 16, 16), spacing=(3.0, 3.0, 3.0)), as_zip=True
    )
    entry = {"id": "remote-model", "description": "remote", "url": zipped.as_uri(), "sha256": sha256_file(zipped)}
    models = tmp_path / "Models.json"
    models.write_text(json.dumps({"default": "remote-model", "models": [{**entry, "inputs": ["ct"]}]}))
    monkeypatch.setattr(catalog, "DEFAULT_CATALOG", models)
    monkeypatch.setenv("TOKENUNET_HOME", str(tmp_path / "home"))
    run = SceneRun(ctx.scene, Parameters(inputVolume0=ball_volume(ctx.scene), device="cpu"), mode="inprocess")
    assert run.request.model is None and not (tmp_path / "home" / "models").exists()
    events = []
    run.add_observer(events.append)
    run.start()
    assert run.wait(timeout=120) == RunState.COMPLETED, run.error
    stages = [e.stage for e in events if isinstance(e, ProgressEvent)]
    assert "download" in stages and stages.index("download") < stages.index("inference")
    assert (tmp_path / "home" / "models" / "remote-model" / "configs" / "metadata.json").is_file()
    assert len(run.nodes.heatmap_nodes) == 8


@pytest.mark.skipif(sys.platform != "linux", reason="checks the process table in /proc")
def test_a_run_that_finds_nothing_says_so_on_its_segments_node_and_warning_line(ctx, tmp_path):
    """The module's path (a child process, report.json read back): a network that puts every voxel in the
    background leaves segments tagged "not found" with confidence 0, the node's summary and flags, and a warning
    line that says nothing was found and why."""
    config = tiny_config("finds-nothing", roi=(16, 16, 16), spacing=(3.0, 3.0, 3.0))
    package = make_package(tmp_path, config, network=blank_network(config))
    volume = ball_volume(ctx.scene)
    run = SceneRun(ctx.scene, Parameters(inputVolume0=volume, model=str(package), device="cpu"), mode="subprocess")
    run.start()
    assert run.wait(timeout=240) == RunState.COMPLETED, run.error
    nodes = run.nodes
    assert nodes.assessment is not None and nodes.assessment.found == []
    segmentation = nodes.segmentation.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2
    for index in range(2):
        segment = segmentation.GetNthSegment(index)
        assert segment_tag(segment, CONFIDENCE_TAG) == "0.000" and segment_tag(segment, FLAGS_TAG) == "not_found"
        assert segment_tag(segment, FLAG_MESSAGES_TAG) == "not found in this scan"
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        assert logic.GetSegmentStatus(segment) != logic.Flagged  # nothing there to review
    assert "no_organ_found" in nodes.segmentation.GetAttribute(RUN_FLAGS_ATTRIBUTE).split(",")
    summary = nodes.segmentation.GetAttribute(SUMMARY_ATTRIBUTE)
    assert summary == nodes.assessment.summary and summary.startswith("No organ found. Possible reasons: ")
    notice = result_notice(nodes.assessment, nodes.warnings)
    assert notice.text.startswith("No organ found. Possible reasons: nothing this model segments was found")
    assert "Not found: organ1, organ2" in notice.details.splitlines()


def test_an_output_segmentation_that_cannot_take_the_result_is_refused_before_the_run(ctx, tiny_package):
    """A chosen output that the result could not be written into (the user's closed-surface segments, a warping
    transform) is refused when the run is asked for, not after minutes of inference; the user's node is kept."""
    import vtk
    from TokenUNetSegmentLib.pipeline.errors import InputError

    volume = ball_volume(ctx.scene, transform=ROTATE_Z_30)
    surfaces = ctx.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my surfaces")
    surfaces.GetSegmentation().SetSourceRepresentationName("Closed surface")
    sphere = vtk.vtkSphereSource()
    sphere.Update()
    mine = slicer.vtkSegment()
    mine.SetName("my tumour")
    mine.AddRepresentation("Closed surface", sphere.GetOutput())
    surfaces.GetSegmentation().AddSegment(mine, "mine")
    warped = ctx.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "warped")
    warp = ctx.scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    warped.SetAndObserveTransformNodeID(warp.GetID())
    before = node_ids(ctx.scene)
    for output, problem in ((surfaces, "Closed surface"), (warped, "non-linear")):
        parameters = Parameters(inputVolume0=volume, outputSegmentation=output, model=str(tiny_package), device="cpu")
        with pytest.raises(InputError, match=problem):
            SceneRun(ctx.scene, parameters, mode="inprocess")
    assert node_ids(ctx.scene) == before
    assert surfaces.GetSegmentation().GetNumberOfSegments() == 1
    assert surfaces.GetSegmentation().GetSegment("mine").GetRepresentation("Closed surface").GetNumberOfPoints() > 0


def test_an_input_the_pipeline_would_refuse_is_refused_by_its_node_name_before_the_run(ctx, tiny_package):
    """Not 'ch0 ...' or 'channel0.nrrd is a 2D image' once the run has started: the node's own name, at once."""
    from helpers.scenes import add_volume
    from TokenUNetSegmentLib.pipeline.errors import InputError

    holes = np.zeros((4, 5, 6), np.float32)
    holes[1, 2, 3] = np.nan
    for volume, problem in (
        (add_volume(ctx.scene, np.zeros((40, 30, 1), np.int16), BALL_AFFINE, name="one slice"), "'one slice' is a 2D"),
        (add_volume(ctx.scene, holes, BALL_AFFINE, name="with holes"), "'with holes' has 1 NaN"),
    ):
        before = node_ids(ctx.scene)
        with pytest.raises(InputError, match=problem):
            SceneRun(ctx.scene, Parameters(inputVolume0=volume, model=str(tiny_package)), mode="subprocess")
        assert node_ids(ctx.scene) == before
