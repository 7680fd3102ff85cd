"""A vector volume node (vtkMRMLVectorVolumeNode) selected as the input, on real MRML.

Slicer loads a 4D NIfTI, or a NRRD whose values per voxel lie on a ``list`` axis, as one vector volume: the Medical
Segmentation Decathlon's BRATS_001.nii.gz holds FLAIR, T1w, t1gd and T2w so. Its components become a multi-channel
model's channels when the user names them in order (the panel's "Input channels", ``logic.process``'s ``channels=``),
matched by name with the command line's synonyms, never by position, in both run modes; the outputs lie on the
vector volume's grid. Components nobody named, a colour image or a vector field (what Slicer's readers set in the
node's VoxelVectorType), and a vector volume for a one-channel model are refused in plain words before a run starts.
"""

import re

import numpy as np
import pytest
import slicer
from helpers.packages import (
    ThresholdNet,
    make_package,
    physical_ball,
    rotation,
    tiny_config,
    voxel_centres,
)
from helpers.scenes import add_vector_volume, add_volume, assert_same_labels_but_near_ties, made_labels, node_ids
from TokenUNetSegmentLib.mrml.controller import ModelInfo, view_state
from TokenUNetSegmentLib.mrml.parameters import Parameters
from TokenUNetSegmentLib.mrml.scene_run import SceneRun, request_from_parameters
from TokenUNetSegmentLib.mrml.segmentation_nodes import segment_mask_world
from TokenUNetSegmentLib.pipeline.errors import InputError
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing
from TokenUNetSegmentLib.pipeline.package_writer import package_in_memory
from TokenUNetSegmentLib.pipeline.run_contract import RunState
from TokenUNetSegmentLib.pipeline.segmentation import segment

CT = ModelInfo("abdomen", "Abdominal organs", input_names=["ct"], input_patterns=[["*ct*"]])
SEQUENCES = ("T1", "T1c", "T2", "FLAIR")  # the model's channel order
BRATS = ModelInfo("brats", "Brain tumour", input_names=list(SEQUENCES))
STORED = "FLAIR,T1w,t1gd,T2w"  # the Decathlon's order and names: components 0..3
AFFINE = affine_from_spacing((2.0, 2.0, 2.0), origin=(-10.0, -10.0, -10.0))
# oblique (20 degrees about S) and flipped (i runs right to left): files and arrays must neither move nor mirror it
OBLIQUE = affine_from_spacing(
    (1.5, 1.25, 2.0), origin=(30.0, -12.0, -20.0), direction=rotation(2, 20) @ np.diag([-1.0, 1.0, 1.0])
)
SHAPE = (26, 24, 16)
BALLS = {  # world RAS: each stored sequence has its ball elsewhere, so a swapped channel moves the label
    "FLAIR": np.array([12.0, 4.0, -6.0]),
    "T1w": np.array([24.0, 10.0, -10.0]),
    "t1gd": np.array([8.0, 16.0, -14.0]),
    "T2w": np.array([18.0, -2.0, -12.0]),
}


def vector_volume(scene, components=4, name="BRATS_001 (4 sequences)", voxel_vector_type=None):
    ball = physical_ball((12, 12, 12), AFFINE, (0.0, 0.0, 0.0), 6.0, value=400.0, background=0.0)
    return add_vector_volume(scene, [ball + c for c in range(components)], AFFINE, name, voxel_vector_type)


def brats_volume(scene):
    """The four sequences of one case as the components of a vector volume on :data:`OBLIQUE`, in the stored order."""
    centres = voxel_centres(SHAPE, OBLIQUE)
    assert np.linalg.det(OBLIQUE[:3, :3]) < 0
    components = []
    for index, centre in enumerate(BALLS.values()):
        noise = np.random.default_rng(index).normal(0.0, 20.0, SHAPE)
        ball = np.linalg.norm(centres - centre, axis=-1) <= 5.0
        components.append(np.where(ball, 500.0, 40.0 + noise).astype(np.float32))
    return add_vector_volume(scene, components, OBLIQUE, "BRATS_001")


def test_a_vector_volume_is_segment_ready_only_when_its_components_are_named(ctx):
    node = vector_volume(ctx.scene)
    state = view_state(Parameters(inputVolume0=node), CT)
    assert not state.button_enabled and not state.channels_visible
    assert state.button_tooltip == (
        "Volume 'BRATS_001 (4 sequences)' has 4 components per voxel: the model takes a scalar volume (extract one "
        "component with the Vector to Scalar Volume module)."
    )
    # before: "... has 4 components per voxel: select one scalar volume per channel (split it ...)."
    state = view_state(Parameters(inputVolume0=node), BRATS)
    assert not state.button_enabled and state.channels_visible
    assert state.input_visible == [True, False, False, False] and state.input_labels[0] == "Input volume:"
    assert state.button_tooltip == (
        "Nothing says which channel each of the 4 components of volume 'BRATS_001 (4 sequences)' holds (name them "
        "in order in Input channels, e.g. T1,T1c,T2,FLAIR)."
    )
    state = view_state(Parameters(inputVolume0=node, inputChannels=" flair, T1w ,t1gd,T2w"), BRATS)
    assert state.button_enabled and state.channels_visible, state.button_tooltip
    for text, problem in [
        ("FLAIR,T1,T1c", "Input channels name 3 components; volume 'BRATS_001 (4 sequences)' has 4 (name each"),
        ("FLAIR,T1,,T2", "'FLAIR,T1,,T2' is no comma-separated list of channel names (e.g. FLAIR,T1,T1c,T2)"),
        ("FLAIR,T1,T1,T2", "'T1' (component 1 in Input channels) and 'T1' (component 2 in Input channels) both"),
        ("FLAIR,T1,PD,T2", "'PD' (component 2 in Input channels) names no channel of model 'brats' (use T1, T1c"),
    ]:
        state = view_state(Parameters(inputVolume0=node, inputChannels=text), BRATS)
        assert not state.button_enabled and state.button_tooltip.startswith(problem), state.button_tooltip
    other = add_volume(ctx.scene, np.zeros((12, 12, 12), np.float32), AFFINE, name="t2 axial")
    state = view_state(Parameters(inputVolume0=node, inputVolume2=other, inputChannels=STORED), BRATS)
    assert not state.button_enabled and state.input_visible == [True, False, True, False]  # shown, to be cleared
    assert state.button_tooltip.startswith("Volume 'BRATS_001 (4 sequences)' holds every channel; input volume 3")
    scalar = add_volume(ctx.scene, np.zeros((12, 12, 12), np.float32), AFFINE, name="ct")
    assert view_state(Parameters(inputVolume0=scalar), CT).button_enabled
    assert not view_state(Parameters(inputVolume0=scalar), BRATS).channels_visible


COLOUR = slicer.vtkMRMLVolumeNode.VoxelVectorTypeColorRGB
COLOUR_ALPHA = slicer.vtkMRMLVolumeNode.VoxelVectorTypeColorRGBA
SPATIAL = slicer.vtkMRMLVolumeNode.VoxelVectorTypeSpatial


@pytest.mark.parametrize(
    ("components", "voxel_vector_type", "what"),
    [
        (4, COLOUR_ALPHA, "a colour image (RGBA)"),
        (3, COLOUR, "a colour image (RGB)"),
        (3, SPATIAL, "a vector field (a direction per voxel, e.g. a displacement field)"),
    ],
)
def test_a_colour_image_or_a_vector_field_is_never_taken_as_channels(ctx, components, voxel_vector_type, what):
    """Slicer's readers mark them in the node's VoxelVectorType; named components change nothing."""
    node = vector_volume(ctx.scene, components, "photo", voxel_vector_type)
    model = ModelInfo("three", input_names=list(SEQUENCES[:components]))
    names = ",".join(SEQUENCES[:components])
    expected = f"volume 'photo' holds {what}, not the model's channels"
    state = view_state(Parameters(inputVolume0=node, inputChannels=names), model)
    assert not state.button_enabled and state.button_tooltip.startswith(expected[0].upper() + expected[1:])
    with pytest.raises(InputError, match=re.escape(expected)):
        request_from_parameters(Parameters(inputVolume0=node, inputChannels=names), components, ctx.scene)


def test_the_several_values_of_a_volume_that_is_no_vector_volume_are_never_taken_as_channels(ctx):
    """A diffusion-weighted volume (one image per gradient direction) is a scalar volume node of several values."""
    node = ctx.scene.AddNewNodeByClass("vtkMRMLDiffusionWeightedVolumeNode", "dwi")
    slicer.util.updateVolumeFromArray(node, np.ones((8, 8, 8, 4), np.float32))
    with pytest.raises(InputError, match=re.escape("volume 'dwi' holds diffusion-weighted images (one per gradient")):
        request_from_parameters(Parameters(inputVolume0=node, inputChannels=",".join(SEQUENCES)), 4, ctx.scene)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("axis 3 index values", "0 30 60 90"),  # Sequences' volume sequence NRRD (vtkMRMLVolumeSequenceStorageNode)
        ("axis 0 index values", "0 30 60 90"),
        ("MultiVolume.FrameLabels", "0,30,60,90"),  # MultiVolumeExplorer's NRRD
    ],
)
def test_the_frames_of_a_time_series_are_never_taken_as_channels(ctx, key, value):
    """A DCE series saved by Slicer's Sequences or MultiVolumeExplorer and loaded as a plain volume is one vector
    volume whose NRRD key/value pairs Slicer keeps as node attributes (``vtkMRMLNRRDStorageNode``): its components
    are frames, whatever names are typed (before: four frames named FLAIR,T1w,t1gd,T2w were segmented)."""
    node = vector_volume(ctx.scene, name="DCE")
    node.SetAttribute(key, value)
    expected = "volume 'DCE' holds the frames of a time series (its attribute '"
    state = view_state(Parameters(inputVolume0=node, inputChannels=STORED), BRATS)
    assert not state.button_enabled and state.button_tooltip.startswith(expected[0].upper() + expected[1:])
    with pytest.raises(InputError, match=re.escape(expected)):
        request_from_parameters(Parameters(inputVolume0=node, inputChannels=STORED), 4, ctx.scene)


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    root = tmp_path_factory.mktemp("vector")
    mr = tiny_config("mr-four", in_channels=4, roi=(16, 16, 16), intensity={"method": "zscore"})
    for entry, name in zip(mr["inputs"], SEQUENCES, strict=True):
        entry["name"] = name
    return str(make_package(root, tiny_config(roi=(16, 16, 16)))), str(make_package(root, mr))


@pytest.mark.parametrize("mode", ["inprocess", "subprocess"])
def test_a_run_on_a_vector_volume_nothing_names_is_refused_before_it_starts(ctx, packages, mode):
    ct, mr = packages
    node = vector_volume(ctx.scene)
    one = "volume 'BRATS_001 (4 sequences)' has 4 components per voxel (a color, vector or multi-frame volume); the "
    with pytest.raises(InputError, match=re.escape(f"{one}model takes one scalar volume (extract one component with")):
        SceneRun(ctx.scene, Parameters(inputVolume0=node, model=ct, device="cpu", inputChannels=STORED), mode=mode)
    before = node_ids(ctx.scene)
    unnamed = "nothing says which channel each of the 4 components of volume 'BRATS_001 (4 sequences)' holds"
    with pytest.raises(InputError, match=re.escape(unnamed)):
        SceneRun(ctx.scene, Parameters(inputVolume0=node, model=mr), mode=mode)
    others = [add_volume(ctx.scene, np.zeros((12, 12, 12), np.float32), AFFINE, name=f"s{i}") for i in range(3)]
    before = node_ids(ctx.scene)
    chosen = Parameters(
        inputVolume0=node, **{f"inputVolume{i + 1}": s for i, s in enumerate(others)}, model=mr, inputChannels=STORED
    )
    # before: "the model takes its 4 input channels as 4 scalar volumes (split it ...)", whatever was named
    with pytest.raises(InputError, match=r"holds every channel; input volume 2 \('s0'\) is selected too"):
        SceneRun(ctx.scene, chosen, mode=mode)
    with pytest.raises(InputError, match=r"'PD' \(component 3 in Input channels\) names no channel of model"):
        SceneRun(ctx.scene, Parameters(inputVolume0=node, model=mr, inputChannels="FLAIR,T1,T1c,PD"), mode=mode)
    assert node_ids(ctx.scene) == before  # nothing added
    with pytest.raises(InputError, match="has 3 components per voxel"):  # a color image, from the console
        request_from_parameters(Parameters(inputVolume0=vector_volume(ctx.scene, 3, "photo")), 1, ctx.scene)


def test_named_components_go_to_their_channels_in_physical_space(ctx):
    """A package that labels where its FLAIR channel is bright, on an oblique, mirrored vector volume whose stored
    order (FLAIR, T1w, t1gd, T2w) is not the model's (T1, T1c, T2, FLAIR): the label is FLAIR's ball, on the vector
    volume's grid, where the ball is in the world (position would have given it T2w's)."""
    node = brats_volume(ctx.scene)
    config = tiny_config("flair-threshold", in_channels=4, labels=1, spacing=(2.0, 2.0, 2.0), roi=(32, 32, 32))
    for entry, name in zip(config["inputs"], SEQUENCES, strict=True):
        entry["name"] = name
    config["labels"][0]["name"] = "ball"
    package = package_in_memory(ThresholdNet(4, 3), config, "threshold")
    request = request_from_parameters(Parameters(inputVolume0=node, inputChannels=STORED), 4, ctx.scene)
    assert request.channels == ("FLAIR", "T1w", "t1gd", "T2w") and request.names == ("BRATS_001",)
    request.device = "cpu"
    result = segment(request.segment_inputs(), package, **request.segment_options())
    assert result.labels.shape == SHAPE and np.allclose(result.affine, OBLIQUE)
    found = voxel_centres(SHAPE, OBLIQUE)[result.labels == 1]
    assert len(found) > 20 and np.linalg.norm(found.mean(axis=0) - BALLS["FLAIR"]) < 1.0


@pytest.mark.parametrize("mode", ["inprocess", "subprocess"])
def test_a_named_vector_volume_runs_as_its_components_would_in_the_models_order(ctx, packages, mode):
    """The subprocess run sends the vector volume as one NRRD file with --channels; both runs give what the four
    components give as four scalar volumes in the model's order, on the vector volume's grid (and the stored order
    taken as the model's would not)."""
    mr = packages[1]
    node = brats_volume(ctx.scene)
    array = slicer.util.arrayFromVolume(node).transpose(2, 1, 0, 3)
    stored = [array[..., c] for c in range(4)]
    run = SceneRun(ctx.scene, Parameters(inputVolume0=node, model=mr, device="cpu", inputChannels=STORED), mode=mode)
    if mode == "subprocess":
        assert run.request.command_arguments([], "out")[-2:] == ["--channels", "FLAIR,T1w,t1gd,T2w"]
    assert run.run_now() == RunState.COMPLETED, run.error
    in_order = [stored[1], stored[2], stored[3], stored[0]]  # T1w, t1gd, T2w, FLAIR
    expected = segment([(values, OBLIQUE) for values in in_order], mr, device="cpu", probabilities=True)
    assert_same_labels_but_near_ties(made_labels(run.nodes.segmentation, SHAPE), expected)
    segmentation = run.nodes.segmentation.GetSegmentation()
    _, placed, start = segment_mask_world(run.nodes.segmentation, segmentation.GetNthSegmentID(0))
    shift = np.eye(4)
    shift[:3, 3] = start
    np.testing.assert_allclose(placed, OBLIQUE @ shift, atol=1e-6)  # on the vector volume's grid in the world
    by_position = segment([(values, OBLIQUE) for values in stored], mr, device="cpu").labels
    assert np.count_nonzero(by_position != expected.labels) > 50  # the test would see a swapped channel
