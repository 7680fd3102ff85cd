"""The bundled sample CT through the MRML adapter: the session's one segmentation of it (the command line with
the catalog's default model, see conftest.py), read back from its output folder and turned into nodes beside the
sample loaded the way Slicer loads it (volumes logic). Geometry is compared in physical space, never as raw
arrays: Slicer's readers may order the voxels of a file differently (they flip K for a negative determinant)."""

import numpy as np
from helpers.paths import SAMPLE_CT
from helpers.scenes import node_ids
from TokenUNetSegmentLib.model import TOKEN_UNET_VARIANTS
from TokenUNetSegmentLib.mrml.attributes import MODEL_TAG
from TokenUNetSegmentLib.mrml.parameters import Parameters
from TokenUNetSegmentLib.mrml.result_nodes import apply_result
from TokenUNetSegmentLib.mrml.segmentation_nodes import segment_mask_world, segment_tag, subject_hierarchy
from TokenUNetSegmentLib.mrml.volume_nodes import ijk_to_world, volume_to_array
from TokenUNetSegmentLib.pipeline.catalog import ModelStore
from TokenUNetSegmentLib.pipeline.package_source import read_metadata

SHAPE = (122, 101, 112)


def load_sample(ctx):
    node = ctx.volumes_logic.AddArchetypeVolume(str(SAMPLE_CT), "AbdomenCT", 0)
    assert node is not None and volume_to_array(node)[0].shape == SHAPE
    return node


def voxel_centres_coincide(affine_a, shape_a, affine_b, shape_b) -> bool:
    """Whether two grids have the same voxel centres in space (their index axes may run in opposite directions)."""
    corners = np.array([[i, j, k, 1.0] for i in (0, 1) for j in (0, 1) for k in (0, 1)])

    def points(affine, shape):
        return np.sort((corners * [*(np.asarray(shape) - 1), 1.0]) @ np.asarray(affine).T, axis=0)

    same_steps = np.allclose(np.abs(affine_a[:3, :3]), np.abs(affine_b[:3, :3]), atol=1e-4)
    return same_steps and np.allclose(points(affine_a, shape_a), points(affine_b, shape_b), atol=1e-3)


def tokens_of(config) -> int:
    """Tokens per kind of map, from the package's architecture alone (registry variant and its overrides)."""
    arch = config.architecture
    return int(arch.parameters.get("num_tokens", TOKEN_UNET_VARIANTS[arch.name]["num_tokens"]))


def test_grid_comparison_sees_flips_as_the_same_grid_and_shifts_as_different():
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    flipped = affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, 3], [0, 0, 0, 1.0]])
    assert voxel_centres_coincide(affine, (4, 4, 4), flipped, (4, 4, 4))
    shifted = affine.copy()
    shifted[0, 3] = 1.5
    assert not voxel_centres_coincide(affine, (4, 4, 4), shifted, (4, 4, 4))


def test_the_sample_result_becomes_nodes_beside_the_slicer_loaded_volume(ctx, sample_result, tmp_path):
    config = read_metadata(ModelStore(home=tmp_path).resolve(sample_result.model_id)).config
    volume = load_sample(ctx)
    world = ijk_to_world(volume)
    assert voxel_centres_coincide(sample_result.affine, sample_result.labels.shape, world, SHAPE)
    before = node_ids(ctx.scene)
    nodes = apply_result(ctx.scene, sample_result, Parameters(inputVolume0=volume, show3D=True), volume)
    assert node_ids(ctx.scene) > before
    segmentation = nodes.segmentation.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert names == [label.name for label in config.labels]
    total = 0
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        assert segment_tag(segment, MODEL_TAG) == config.id and segment.GetTerminology().count("~") == 6
        mask, affine, _ = segment_mask_world(nodes.segmentation, segmentation.GetNthSegmentID(index))
        assert voxel_centres_coincide(affine, SHAPE, world, SHAPE)
        total += int(mask.sum())
    assert total == int(np.count_nonzero(sample_result.labels)) > 0
    assert segmentation.ContainsRepresentation("Closed surface")
    # one heatmap per token of the model's architecture (gather maps by default), on the token grid by default
    tokens = tokens_of(config)
    assert tokens > 0 and len(nodes.heatmap_nodes) == tokens == sample_result.token_maps.num_tokens
    coarse = sample_result.token_maps.coarse_grid
    for heatmap in nodes.heatmap_nodes:
        array, affine = volume_to_array(heatmap)
        assert array.shape == coarse.shape and 0.0 <= array.min() <= array.max() <= 1.0
        np.testing.assert_allclose(affine, coarse.affine, atol=1e-4)
    assert nodes.attention.GetSegmentation().GetNumberOfSegments() == tokens
    hierarchy = subject_hierarchy(ctx.scene)
    assert hierarchy.GetItemParent(nodes.folder) == hierarchy.GetItemParent(hierarchy.GetItemByDataNode(volume))
