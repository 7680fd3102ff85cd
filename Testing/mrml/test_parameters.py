"""Parameters: a plain dataclass in a vtkMRMLScriptedModuleNode, surviving a saved and reloaded scene."""

import dataclasses

import numpy as np
import pytest
import slicer
from helpers.scenes import add_volume, new_scene
from TokenUNetSegmentLib.mrml.parameters import (
    Parameters,
    node_fields,
    parameter_node,
    read_parameters,
    value_fields,
    write_parameters,
)


def test_defaults_are_valid_and_typed():
    parameters = Parameters()
    assert parameters.validate() == []
    assert parameters.device == "auto" and parameters.runMode == "subprocess"
    assert parameters.attentionThreshold == 0.5 and parameters.kinds == ["gather"]
    assert set(node_fields()) == {
        "inputVolume0",
        "inputVolume1",
        "inputVolume2",
        "inputVolume3",
        "outputSegmentation",
        "selectedHeatmap",
    }
    assert value_fields()["show3D"] is bool and value_fields()["attentionThreshold"] is float
    assert Parameters(heatmapKind="both").kinds == ["gather", "broadcast"]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("device", "tpu", "device"),
        ("runMode", "cloud", "run mode"),
        ("heatmapKind", "all", "heatmap kind"),
        ("attentionThreshold", 0.0, "threshold"),
        ("heatmapOpacity", 1.5, "opacity"),
    ],
)
def test_bad_values_are_reported(field, value, message):
    problems = Parameters(**{field: value}).validate()
    assert len(problems) == 1 and message in problems[0]


def test_round_trip_through_a_saved_and_reloaded_scene(tmp_path):
    ctx = new_scene()
    volume = add_volume(ctx.scene, np.zeros((4, 4, 4), np.int16), np.eye(4), name="t1")
    second = add_volume(ctx.scene, np.zeros((4, 4, 4), np.int16), np.eye(4), name="flair")
    output = ctx.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "result")
    for node in (volume, second):
        storage = node.CreateDefaultStorageNode()
        ctx.scene.AddNode(storage)
        storage.SetFileName(str(tmp_path / f"{node.GetName()}.nrrd"))
        node.SetAndObserveStorageNodeID(storage.GetID())
        assert storage.WriteData(node)
    saved = Parameters(
        inputVolume0=volume,
        inputVolume1=second,
        outputSegmentation=output,
        model="brats-demo",
        device="cpu",
        runMode="inprocess",
        show3D=True,
        heatmapKind="broadcast",
        attentionThreshold=0.35,
        heatmapGrid="token",
        heatmapOpacity=0.25,
        probabilities=True,
        largestComponent=True,
    )
    node = parameter_node(ctx.scene)
    write_parameters(node, saved)
    assert parameter_node(ctx.scene) is node  # a singleton
    ctx.scene.SetURL(str(tmp_path / "scene.mrml"))
    assert ctx.scene.Commit()

    loaded_ctx = new_scene()
    loaded_ctx.scene.SetURL(str(tmp_path / "scene.mrml"))
    assert loaded_ctx.scene.Connect()
    reloaded = read_parameters(parameter_node(loaded_ctx.scene, create=False))
    for field in dataclasses.fields(Parameters):
        before, after = getattr(saved, field.name), getattr(reloaded, field.name)
        if field.name in node_fields():
            assert (before is None and after is None) or (
                after.GetName() == before.GetName() and after.GetScene() is loaded_ctx.scene
            ), field.name
        else:
            assert after == before and type(after) is type(before), field.name
    assert reloaded.inputs() == [reloaded.inputVolume0, reloaded.inputVolume1]
    assert slicer.util.arrayFromVolume(reloaded.inputVolume0).shape == (4, 4, 4)


def test_values_are_stored_as_slicer_parameter_node_wrapper_stores_them():
    ctx = new_scene()
    volume = add_volume(ctx.scene, np.zeros((2, 2, 2), np.int16), np.eye(4))
    node = parameter_node(ctx.scene)
    write_parameters(node, Parameters(inputVolume0=volume, show3D=True, attentionThreshold=0.25, model="x"))
    assert node.GetParameter("show3D") == "True" and node.GetParameter("probabilities") == "False"
    assert node.GetParameter("attentionThreshold") == "0.25" and node.GetParameter("model") == "x"
    assert node.GetParameter("inputVolume0") == "" and node.GetNodeReferenceID("inputVolume0") == volume.GetID()
    assert node.GetNodeReferenceID("inputVolume1") is None


def test_unparsable_or_missing_values_keep_defaults_and_wrong_node_types_are_dropped():
    ctx = new_scene()
    node = parameter_node(ctx.scene)
    node.SetParameter("attentionThreshold", "not a number")
    node.UnsetParameter("device")
    segmentation = ctx.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    node.SetNodeReferenceID("inputVolume0", segmentation.GetID())
    parameters = read_parameters(node)
    assert parameters.attentionThreshold == 0.5 and parameters.device == "auto"
    assert parameters.inputVolume0 is None
