"""Four MRI sequences as four volume nodes on real MRML: each with its own geometry and parent transform, one
selected twice, one removed from the scene after it was selected."""

import numpy as np
import pytest
from helpers.packages import make_package, physical_ball, rotation, threshold_package, tiny_config, voxel_centres
from helpers.scenes import ROTATE_Z_30, add_volume, node_ids
from TokenUNetSegmentLib.mrml.parameters import Parameters
from TokenUNetSegmentLib.mrml.scene_run import SceneRun, request_from_parameters
from TokenUNetSegmentLib.pipeline.errors import InputError
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing
from TokenUNetSegmentLib.pipeline.run_contract import RunState
from TokenUNetSegmentLib.pipeline.segmentation import segment

SEQUENCES = ("T1", "T1c", "T2", "FLAIR")
BALL = np.array([2.0, -5.0, 10.0])  # world RAS
SHIFT = np.array([[1, 0, 0, 15.0], [0, 1, 0, -10.0], [0, 0, 1, 5.0], [0, 0, 0, 1]])
# local grids; under their parent transforms all four cover the same region of the world
GRIDS = {
    "T1": ((50, 50, 40), affine_from_spacing((1, 1, 1), origin=(-23, -30, -10)), None),
    "T1c": (
        (64, 64, 30),
        affine_from_spacing((1.2, 1.2, 2.5), origin=(-35, -40, -30), direction=rotation(0, 20)),
        None,
    ),
    "T2": (
        (150, 150, 14),
        affine_from_spacing((0.5, 0.5, 5), origin=(25, 45, -25), direction=np.diag([-1.0, -1, 1])),
        SHIFT,
    ),
    "FLAIR": (
        (70, 60, 70),
        affine_from_spacing((1, 1, 1), direction=np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0.0]])),
        ROTATE_Z_30,
    ),
}


def sequence_nodes(scene, flair_ball=BALL):
    """The four sequences as volume nodes, each a ball at ``BALL`` in the world (FLAIR's at ``flair_ball``)."""
    nodes = []
    for name, (shape, affine, transform) in GRIDS.items():
        world = affine if transform is None else transform @ affine
        if name == "FLAIR":  # centred on the ball in the world
            world = world.copy()
            world[:3, 3] += flair_ball - world[:3, :3] @ ((np.asarray(shape) - 1) / 2) - world[:3, 3]
            affine = world if transform is None else np.linalg.inv(transform) @ world
        array = physical_ball(shape, world, flair_ball if name == "FLAIR" else BALL, 9.0, value=500.0, background=0.0)
        nodes.append(add_volume(scene, array, affine, name=name, transform=transform))
    return nodes


def parameters(nodes, model=""):
    return Parameters(**{f"inputVolume{i}": node for i, node in enumerate(nodes)}, model=model, device="cpu")


def test_four_sequences_under_their_own_transforms_meet_in_world_space(ctx):
    """The model reads only FLAIR (sagittal, under a rotation): its ball is found where it is in the world, on T1's
    grid, with T1c oblique and T2 axial 0.5 x 0.5 x 5 mm under a translation."""
    flair_ball = BALL + np.array([4.0, -3.0, 2.0])
    nodes = sequence_nodes(ctx.scene, flair_ball)
    request = request_from_parameters(parameters(nodes), 4, ctx.scene)
    result = segment(request.inputs, threshold_package(in_channels=4, channel=3), device="cpu")
    shape, affine, _ = GRIDS["T1"]
    assert result.labels.shape == shape and np.allclose(result.affine, affine)
    centres = voxel_centres(shape, affine)
    assert np.linalg.norm(centres[result.labels == 1].mean(axis=0) - flair_ball) < 1.0
    assert [w for w in result.warnings if "covers only" in w] == []


@pytest.fixture(scope="module")
def mri_package(tmp_path_factory):
    """A tiny random-weight package with the four MR channels."""
    config = tiny_config("mri-scene", in_channels=4, roi=(16, 16, 16), intensity={"method": "zscore"})
    for entry, name in zip(config["inputs"], SEQUENCES, strict=True):
        entry["name"] = name
    return str(make_package(tmp_path_factory.mktemp("mri"), config))


def test_a_four_channel_scene_run_adds_its_segmentation(ctx, mri_package):
    nodes = sequence_nodes(ctx.scene)
    run = SceneRun(ctx.scene, parameters(nodes, mri_package), mode="inprocess")
    assert run.run_now() == RunState.COMPLETED, run.error
    assert run.nodes.segmentation is not None


@pytest.mark.parametrize("mode", ["inprocess", "subprocess"])
def test_one_volume_selected_for_two_inputs_is_refused_by_its_name(ctx, mri_package, mode):
    """In a subprocess run (the panel's default) the volume went out as two files and ran, silently wrong."""
    nodes = sequence_nodes(ctx.scene)
    before = node_ids(ctx.scene)
    with pytest.raises(InputError, match="volume 'T1' is selected as input 1 and input 2"):
        SceneRun(ctx.scene, parameters([nodes[0], nodes[0], nodes[2], nodes[3]], mri_package), mode=mode)
    assert node_ids(ctx.scene) == before


def test_a_volume_removed_from_the_scene_after_it_was_selected_is_refused(ctx, mri_package):
    """Parameters kept from before (the console's ``logic.process``) still hold the removed node: its voxels used to
    be segmented and the result placed beside a volume the scene no longer has."""
    nodes = sequence_nodes(ctx.scene)
    chosen = parameters(nodes, mri_package)
    ctx.scene.RemoveNode(nodes[1])
    with pytest.raises(InputError, match=r"input volume 2 \('T1c'\) is no longer in the scene"):
        SceneRun(ctx.scene, chosen, mode="inprocess")


def test_a_subprocess_runs_warnings_name_the_volumes_not_the_exchange_files(ctx, mri_package):
    """Before: the panel's run (a subprocess fed with channel0.nrrd ... channel3.nrrd) warned "channel 'FLAIR'
    (channel3.nrrd) covers only ..." about a volume the user knows by its node name."""
    nodes = sequence_nodes(ctx.scene, flair_ball=BALL + np.array([45.0, 0.0, 0.0]))  # FLAIR covers part of T1
    nodes[3].SetName("flair sagittal")
    nodes[0].SetName("t1 axial")
    run = SceneRun(ctx.scene, parameters(nodes, mri_package), mode="subprocess")
    run.start()
    assert run.wait(timeout=240) == RunState.COMPLETED, run.error
    covering = [w for w in run.nodes.warnings if "covers only" in w]
    assert covering and "'flair sagittal'" in covering[0] and "'t1 axial'" in covering[0], run.nodes.warnings
    assert not any(".nrrd" in w for w in run.nodes.warnings), run.nodes.warnings
