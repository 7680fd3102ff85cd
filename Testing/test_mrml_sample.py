"""The bundled sample CT through the MRML adapter, loaded the way Slicer loads it (volumes logic).

With a tiny random-weight package always; with the bundled default model once the catalog names one.
"""

from pathlib import Path

import numpy as np
import pytest
from mrml_testlib import new_scene, node_ids
from pipeline_testlib import make_package, tiny_config
from TokenUNetSegmentLib.mrml.logic import SceneRun
from TokenUNetSegmentLib.mrml.parameters import Parameters
from TokenUNetSegmentLib.mrml.runner import RunState
from TokenUNetSegmentLib.mrml.segmentation import MADE_TAG, segment_mask_world, segment_tag, subject_hierarchy
from TokenUNetSegmentLib.mrml.volumes import ijk_to_world, volume_to_array
from TokenUNetSegmentLib.pipeline.catalog import ModelStore
from TokenUNetSegmentLib.pipeline.package import read_metadata

SAMPLE = Path(__file__).resolve().parents[1] / "TokenUNetSegment" / "Resources" / "Samples" / "AbdomenCT.nii.gz"


def load_sample(ctx):
    node = ctx.volumes_logic.AddArchetypeVolume(str(SAMPLE), "AbdomenCT", 0)
    assert node is not None and volume_to_array(node)[0].shape == (122, 101, 112)
    return node


def check_run_nodes(ctx, volume, run, label_names, tokens):
    nodes = run.nodes
    segmentation = nodes.segmentation.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert names == label_names
    world = ijk_to_world(volume)
    total = 0
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        assert segment_tag(segment, MADE_TAG) and segment.GetTerminology().count("~") == 6
        mask, affine, _ = segment_mask_world(nodes.segmentation, segmentation.GetNthSegmentID(index))
        np.testing.assert_allclose(affine, world, atol=1e-4)
        total += int(mask.sum())
    assert total > 0
    assert len(nodes.heatmaps) == tokens
    for heatmap in nodes.heatmaps:
        array, affine = volume_to_array(heatmap)
        assert array.shape == (122, 101, 112) and 0.0 <= array.min() <= array.max() <= 1.0
        np.testing.assert_allclose(affine, world, atol=1e-4)
    assert nodes.attention.GetSegmentation().GetNumberOfSegments() == tokens
    hierarchy = subject_hierarchy(ctx.scene)
    assert hierarchy.GetItemParent(nodes.folder) == hierarchy.GetItemParent(hierarchy.GetItemByDataNode(volume))


def test_sample_ct_with_a_tiny_package_in_process(tmp_path):
    package = make_package(tmp_path, tiny_config(labels=3, roi=(32, 32, 32), spacing=(6.0, 6.0, 6.0)))
    ctx = new_scene()
    volume = load_sample(ctx)
    run = SceneRun(
        ctx.scene, Parameters(inputVolume0=volume, model=str(package), device="cpu", show3D=True), mode="inprocess"
    )
    assert run.run_now() == RunState.COMPLETED, run.error
    check_run_nodes(ctx, volume, run, ["organ1", "organ2", "organ3"], 8)
    assert run.nodes.segmentation.GetSegmentation().ContainsRepresentation("Closed surface")


def bundled_default():
    store = ModelStore()
    default = store.default_id()
    return (store, default) if default else (store, None)


@pytest.mark.parametrize("mode", ["inprocess", "subprocess"])
def test_sample_ct_with_the_bundled_model(mode):
    store, default = bundled_default()
    if default is None:
        pytest.skip("the catalog names no bundled default model yet (issue 5)")
    metadata = read_metadata(store.resolve(default))
    labels = [label["name"] for label in metadata["tokenunet"]["labels"]]
    ctx = new_scene()
    volume = load_sample(ctx)
    before = node_ids(ctx.scene)
    run = SceneRun(ctx.scene, Parameters(inputVolume0=volume, device="cpu"), mode=mode)
    assert run.run_now() == RunState.COMPLETED, run.error
    assert node_ids(ctx.scene) > before
    tokens = len(run.nodes.heatmaps)
    assert tokens > 0
    check_run_nodes(ctx, volume, run, labels, tokens)
