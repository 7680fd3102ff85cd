"""A vector volume node (vtkMRMLVectorVolumeNode: a color image, or frames or MRI sequences stored as the components
of one volume) selected as the input, on real MRML: for a one-channel CT model and for a four-channel MRI model the
panel disables Segment and says how to split it, and a run asked for (the console's ``logic.process``) is refused
in plain words before it starts. Its components are never taken as channels: nothing says which is which."""

import re

import numpy as np
import pytest
import slicer
from helpers.packages import make_package, physical_ball, tiny_config
from helpers.scenes import add_volume, node_ids
from TokenUNetSegmentLib.mrml.controller import ModelInfo, view_state
from TokenUNetSegmentLib.mrml.parameters import Parameters
from TokenUNetSegmentLib.mrml.scene_run import SceneRun, request_from_parameters
from TokenUNetSegmentLib.pipeline.errors import InputError
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing

CT = ModelInfo("abdomen", "Abdominal organs", input_names=["ct"], input_patterns=[["*ct*"]])
BRATS = ModelInfo("brats", "Brain tumour", input_names=["t1", "t1c", "t2", "flair"])
AFFINE = affine_from_spacing((2.0, 2.0, 2.0), origin=(-10.0, -10.0, -10.0))


def vector_volume(scene, components=4, name="BRATS_001 (4 sequences)"):
    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", name)
    ball = physical_ball((12, 12, 12), AFFINE, (0.0, 0.0, 0.0), 6.0, value=400.0, background=0.0)
    slicer.util.updateVolumeFromArray(node, np.stack([ball.T + c for c in range(components)], axis=-1))
    return node


def test_a_vector_volume_disables_segment_and_says_how_to_split_it(ctx):
    node = vector_volume(ctx.scene)
    state = view_state(Parameters(inputVolume0=node), CT)
    assert not state.button_enabled
    assert state.button_tooltip == (
        "Volume 'BRATS_001 (4 sequences)' has 4 components per voxel: the model takes a scalar volume (extract one "
        "component with the Vector to Scalar Volume module)."
    )
    state = view_state(Parameters(inputVolume0=node), BRATS)  # before: "Select the input volume for: t1c, t2, flair."
    assert not state.button_enabled
    assert state.button_tooltip.endswith(
        "has 4 components per voxel: select one scalar volume per channel (split it with the Vector to Scalar Volume "
        "module)."
    )
    scalar = add_volume(ctx.scene, np.zeros((12, 12, 12), np.float32), AFFINE, name="ct")
    assert view_state(Parameters(inputVolume0=scalar), CT).button_enabled


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    root = tmp_path_factory.mktemp("vector")
    mr = tiny_config("mr-four", in_channels=4, roi=(16, 16, 16), intensity={"method": "zscore"})
    return str(make_package(root, tiny_config(roi=(16, 16, 16)))), str(make_package(root, mr))


@pytest.mark.parametrize("mode", ["inprocess", "subprocess"])
def test_a_run_on_a_vector_volume_is_refused_before_it_starts(ctx, packages, mode):
    ct, mr = packages
    node = vector_volume(ctx.scene)
    one = "volume 'BRATS_001 (4 sequences)' has 4 components per voxel (a color, vector or multi-frame volume); the "
    with pytest.raises(InputError, match=re.escape(f"{one}model takes one scalar volume (extract one component with")):
        SceneRun(ctx.scene, Parameters(inputVolume0=node, model=ct, device="cpu"), mode=mode)
    others = [add_volume(ctx.scene, np.zeros((12, 12, 12), np.float32), AFFINE, name=f"s{i}") for i in range(3)]
    before = node_ids(ctx.scene)
    chosen = Parameters(inputVolume0=node, **{f"inputVolume{i + 1}": s for i, s in enumerate(others)}, model=mr)
    with pytest.raises(InputError, match="the model takes its 4 input channels as 4 scalar volumes .split it into one"):
        SceneRun(ctx.scene, chosen, mode=mode)
    assert node_ids(ctx.scene) == before  # nothing added
    with pytest.raises(InputError, match="has 3 components per voxel"):  # a color image, from the console
        request_from_parameters(Parameters(inputVolume0=vector_volume(ctx.scene, 3, "photo")), 1, ctx.scene)
