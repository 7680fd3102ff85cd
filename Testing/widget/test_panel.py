"""The panel glue driven end to end on real MRML, with stand-ins for the Qt widgets of the .ui file.

The widget objects are minimal fakes (attributes and signals); the scene, the runs and the nodes are real.
"""

import contextlib
import sys
import time
import types

import numpy as np
import pytest
import slicer
from helpers.scenes import add_volume, new_scene, node_ids
from helpers.ui import ui_widgets
from TokenUNetSegmentLib.mrml.attributes import THRESHOLD_ATTRIBUTE, TOKEN_ATTRIBUTE
from TokenUNetSegmentLib.mrml.controller import ModelInfo
from TokenUNetSegmentLib.mrml.parameters import parameter_node, read_parameters
from TokenUNetSegmentLib.mrml.scene_run import SceneRun
from TokenUNetSegmentLib.pipeline.run_contract import LogEvent, RunState


class Signal:
    def __init__(self):
        self.slots = []


class FakeWidget:
    """Any widget: free attributes, ``connect(signal, slot)``, combo box and list behaviour."""

    def __init__(self, name):
        self.name, self.text, self.enabled, self.visible, self.toolTip, self.value = name, "", True, True, "", 0
        self.items, self.currentIndex, self.slots = [], -1, {}

    def connect(self, signal, slot):
        self.slots.setdefault(signal, []).append(slot)

    def emit(self, signal, *args):
        for slot in self.slots.get(signal, []):
            slot(*args)

    def blockSignals(self, block):
        return False

    def clear(self):
        self.items, self.currentIndex = [], -1

    def addItem(self, item):
        self.items.append(item)
        if self.currentIndex < 0 and isinstance(item, str):
            self.currentIndex = 0

    def setCurrentIndex(self, index):
        self.currentIndex = index

    def item(self, row):
        return self.items[row] if 0 <= row < len(self.items) else None

    def itemText(self, index):
        return self.items[index] if 0 <= index < len(self.items) else ""

    def sortFilterProxyModel(self):
        if not hasattr(self, "proxy"):
            self.proxy = types.SimpleNamespace(hiddenNodeIDs=[])
        return self.proxy

    def setSegmentationNode(self, node):
        self.segmentation = node


class FakeItem:
    def __init__(self, text):
        self.text, self.values = text, {}

    def setData(self, role, value):
        self.values[role] = value

    def data(self, role):
        return self.values.get(role)


class FakeTimer:
    def __init__(self):
        self.active, self.slots = False, []

    def setInterval(self, ms):
        self.interval = ms

    def connect(self, signal, slot):
        self.slots.append(slot)

    def start(self):
        self.active = True

    def stop(self):
        self.active = False


DEVICES = ["auto", "cpu", "cuda", "cuda:0", "cuda:1"]


class FakeProbe:
    """Answers like the device probe child (on a computer with two GPUs) on the second poll."""

    def __init__(self, devices):
        self.devices, self.polls = devices, 0
        self.process = None

    def poll(self):
        self.polls += 1
        return self.devices if self.polls > 1 else None


@pytest.fixture
def panel_env(monkeypatch, tiny_package):
    fake_qt = types.SimpleNamespace(QTimer=FakeTimer, Qt=types.SimpleNamespace(UserRole=32), QListWidgetItem=FakeItem)
    monkeypatch.setitem(sys.modules, "qt", fake_qt)
    sys.modules.pop("TokenUNetSegmentLib.widget.panel", None)
    ctx = new_scene()
    monkeypatch.setattr(slicer, "mrmlScene", ctx.scene, raising=False)

    @contextlib.contextmanager
    def try_with_error_display(message, waitCursor=False):
        yield  # errors propagate to the test

    shown, status, editor, modules = {}, [], types.SimpleNamespace(calls=[]), []
    editor.setSegmentationNode = lambda node: editor.calls.append(("segmentation", node))
    editor.setSourceVolumeNode = lambda node: editor.calls.append(("source", node))
    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", try_with_error_display)
    monkeypatch.setattr(slicer.util, "setSliceViewerLayers", lambda **kw: shown.update(kw), raising=False)
    monkeypatch.setattr(slicer.util, "showStatusMessage", lambda text, duration=0: status.append(text), raising=False)
    monkeypatch.setattr(slicer.util, "selectModule", modules.append, raising=False)
    monkeypatch.setattr(
        slicer.util, "getModuleWidget", lambda name: types.SimpleNamespace(editor=editor), raising=False
    )
    from TokenUNetSegmentLib.widget import panel as panel_module

    monkeypatch.setattr(panel_module, "start_device_probe", lambda: FakeProbe(DEVICES))

    package = tiny_package
    ui = types.SimpleNamespace(**{name: FakeWidget(name) for name in ui_widgets()})
    logic = types.SimpleNamespace(
        modelInfos=lambda: [ModelInfo(str(package), "tiny", "Apache-2.0", "1 s", ["ct"], [["*ct*"]])],
        resolvedDevice=lambda device: "cpu",
        ensureDependencies=lambda ask=True: True,
        startRun=lambda parameters, python=None, mode=None: SceneRun(ctx.scene, parameters, mode="inprocess"),
    )
    node = parameter_node(ctx.scene)
    panel = panel_module.Panel(ui, logic, lambda: node)
    yield types.SimpleNamespace(
        ctx=ctx,
        ui=ui,
        panel=panel,
        node=node,
        shown=shown,
        module=panel_module,
        status=status,
        editor=editor,
        modules=modules,
        package=package,
        logic=logic,
    )
    sys.modules.pop("TokenUNetSegmentLib.widget.panel", None)


def noise():
    return np.random.default_rng(1).normal(40.0, 30.0, (20, 18, 12)).astype(np.float32)


def run_panel_until_done(env, limit=120):
    deadline = time.monotonic() + limit
    while env.panel.timer.active and time.monotonic() < deadline:
        env.panel.poll()
        time.sleep(0.02)
    assert not env.panel.timer.active


def test_panel_segments_lists_tokens_shows_maps_and_rethresholds(panel_env):
    env, ui = panel_env, panel_env.ui
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    add_volume(env.ctx.scene, np.zeros((8, 8, 8), np.float32), affine, name="other")
    volume = add_volume(env.ctx.scene, noise(), affine, name="patient ct")
    composite = env.ctx.scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    env.panel.refresh_models()
    # the model is listed and described, its one input auto-assigned by pattern, Segment ready
    assert ui.modelSelector.items == [read_parameters(env.node).model]
    assert "Licence: Apache-2.0" in ui.modelDescriptionLabel.text
    assert read_parameters(env.node).inputVolume0 is volume
    assert ui.segmentButton.text == "Segment" and ui.segmentButton.enabled
    while env.panel.probe is not None:  # the device probe answers (a fake computer with two GPUs)
        env.panel.poll()
    assert not ui.deviceNoteLabel.visible  # auto -> cuda there
    env.panel.devices = ["auto", "cpu"]
    env.panel.update_view()
    assert ui.deviceNoteLabel.visible and "CPU" in ui.deviceNoteLabel.text
    assert [w.visible for w in (ui.inputSelector0, ui.inputSelector1)] == [True, False]

    ui.segmentButton.emit("clicked(bool)", False)
    assert ui.segmentButton.text == "Cancel" and env.panel.timer.active
    run_panel_until_done(env)
    assert env.panel.run.state == RunState.COMPLETED
    assert ui.segmentButton.text == "Segment" and ui.statusLabel.text.startswith("Done in")
    assert "2 segments" in ui.statusLabel.text
    assert len(ui.tokenList.items) == 8 and ui.tokenList.items[0].text.startswith("Token 00 gather - organ")
    assert ui.tokenList.enabled and env.shown["background"] is volume

    ui.tokenList.emit("currentRowChanged(int)", 3)
    selected = read_parameters(env.node).selectedHeatmap
    assert selected is not None and selected.GetAttribute(TOKEN_ATTRIBUTE) == "3"
    assert composite.GetForegroundVolumeID() == selected.GetID()
    ui.heatmapOpacitySlider.emit("valueChanged(double)", 0.3)
    assert composite.GetForegroundOpacity() == pytest.approx(0.3)
    # the result: Show 3D and Segment Editor buttons act on it; the next run reuses the node
    result = env.panel.segmentation_node
    assert ui.show3DButton.segmentation is result and ui.show3DButton.enabled and ui.segmentEditorButton.enabled
    assert read_parameters(env.node).outputSegmentation is result
    ui.segmentEditorButton.emit("clicked(bool)", False)
    assert env.modules == ["SegmentEditor"]
    assert env.editor.calls == [("segmentation", result), ("source", volume)]
    # run outputs never appear in the input selectors
    hidden = set(ui.inputSelector0.sortFilterProxyModel().hiddenNodeIDs)
    assert {n.GetID() for n in env.panel.heatmap_nodes} <= hidden and volume.GetID() not in hidden
    # progress and messages reached the status bar
    assert any("%" in text for text in env.status) and any("done" in text for text in env.status)
    # the threshold is applied once per new value (the slider reports on release), not on repeats
    attention = env.panel.attention_node
    calls = []
    original = env.module.update_attention_segments
    env.module.update_attention_segments = lambda node, value: (calls.append(value), original(node, value))
    try:
        ui.attentionThresholdSlider.emit("valueChanged(double)", 0.95)
        ui.attentionThresholdSlider.emit("valueChanged(double)", 0.95)
    finally:
        env.module.update_attention_segments = original
    assert calls == [0.95] and attention.GetAttribute(THRESHOLD_ATTRIBUTE) == "0.95"

    ui.segmentButton.emit("clicked(bool)", False)  # again: same output node, no segmentation_1
    run_panel_until_done(env)
    assert env.panel.segmentation_node is result
    names = [
        env.ctx.scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode").GetName()
        for i in range(env.ctx.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))
    ]
    results = [n for n in names if not n.startswith("Token attention")]  # each run keeps its own token segments
    assert results == [result.GetName()], names


def test_panel_cancel_adds_nothing(panel_env):
    env, ui = panel_env, panel_env.ui
    volume = add_volume(env.ctx.scene, noise(), np.eye(4), name="ct")
    env.panel.refresh_models()
    env.node.SetNodeReferenceID("inputVolume0", volume.GetID())
    before = node_ids(env.ctx.scene)
    ui.segmentButton.emit("clicked(bool)", False)
    ui.segmentButton.emit("clicked(bool)", False)  # the button is Cancel now
    assert ui.segmentButton.text in ("Cancelling...", "Segment")
    run_panel_until_done(env)
    assert env.panel.run.state == RunState.CANCELLED
    assert ui.statusLabel.text.startswith("Cancelled") and ui.segmentButton.text == "Segment"
    assert node_ids(env.ctx.scene) == before


def test_panel_without_dependencies_offers_to_install_them(panel_env, monkeypatch):
    env, ui = panel_env, panel_env.ui
    from TokenUNetSegmentLib.widget import dependencies

    monkeypatch.setattr(dependencies, "dependencies_ready", lambda: False)
    env.panel.refresh_models()
    assert ui.segmentButton.text == "Install dependencies" and ui.segmentButton.enabled
    assert ui.modelSelector.items == [] and env.panel.probe is None  # no torch: no device probe either
    env.logic.ensureDependencies = lambda ask=True: False  # the user declines
    ui.segmentButton.emit("clicked(bool)", False)
    assert ui.segmentButton.text == "Install dependencies" and ui.segmentButton.enabled
    assert ui.statusLabel.text == dependencies.DECLINED
    monkeypatch.setattr(dependencies, "dependencies_ready", lambda: True)
    env.logic.ensureDependencies = lambda ask=True: True
    ui.segmentButton.emit("clicked(bool)", False)  # installs (stub), then lists the models
    assert ui.segmentButton.text == "Segment" and len(ui.modelSelector.items) == 1


def test_panel_lists_cuda_devices_and_keeps_a_stored_device(panel_env):
    env, ui = panel_env, panel_env.ui
    env.panel.refresh_models()
    assert ui.deviceSelector.items == ["auto", "cpu"]  # until the probe answers
    while env.panel.probe is not None:
        env.panel.poll()
    assert ui.deviceSelector.items == DEVICES and not env.panel.timer.active
    ui.deviceSelector.setCurrentIndex(4)
    ui.deviceSelector.emit("currentIndexChanged(int)", 4)
    assert read_parameters(env.node).device == "cuda:1"
    env.panel.devices = ["auto", "cpu"]  # the scene opened on a computer without that GPU
    env.panel.fill_devices()
    assert ui.deviceSelector.items == ["auto", "cpu", "cuda:1"] and ui.deviceSelector.currentIndex == 2
    assert read_parameters(env.node).device == "cuda:1"


def test_panel_clears_hidden_channels_and_offers_no_run_outputs(panel_env):
    env, ui = panel_env, panel_env.ui
    affine = np.eye(4)
    ct = add_volume(env.ctx.scene, noise(), affine, name="ct")
    heatmap = add_volume(env.ctx.scene, noise(), affine, name="Token 01 gather")
    heatmap.SetAttribute(TOKEN_ATTRIBUTE, "1")
    env.node.SetNodeReferenceID("inputVolume2", ct.GetID())  # left over from a 4-channel model
    env.panel.refresh_models()  # the one-channel model
    parameters = read_parameters(env.node)
    assert parameters.inputVolume0 is ct and parameters.inputVolume2 is None
    env.panel.update_input_filters()
    assert ui.inputSelector1.sortFilterProxyModel().hiddenNodeIDs == [heatmap.GetID()]


def test_panel_forwards_the_child_log_to_slicer_log_and_status_bar(panel_env, caplog):
    import logging

    with caplog.at_level(logging.INFO):
        panel_env.panel.on_run_event(LogEvent("loading model"))
    assert "TokenUNet: loading model" in caplog.text
    assert panel_env.status[-1] == "TokenUNet: loading model"


def test_panel_shows_what_the_result_says_about_itself_and_the_input_warnings(panel_env, caplog):
    import logging

    env, ui = panel_env, panel_env.ui
    volume = add_volume(env.ctx.scene, noise()[:6, :6, :6], np.diag([2.0, 2.0, 2.0, 1.0]), name="tiny ct")
    env.panel.refresh_models()
    env.node.SetNodeReferenceID("inputVolume0", volume.GetID())
    assert not ui.resultWarningLabel.visible
    with caplog.at_level(logging.WARNING):
        ui.segmentButton.emit("clicked(bool)", False)
        run_panel_until_done(env)
    assert env.panel.run.state == RunState.COMPLETED
    notice = env.panel.notice
    assert ui.resultWarningLabel.visible and ui.resultWarningLabel.text == notice.text
    assert "1 input warning(s): the volume is small for this model" in notice.text  # a reader/preprocess warning
    assert ui.resultWarningLabel.toolTip == notice.details and "Input: the volume is small" in notice.details
    assert "TokenUNet: the volume is small for this model" in caplog.text  # and in Slicer's log
    ui.segmentButton.emit("clicked(bool)", False)  # a new run: the old result's warning goes
    assert env.panel.notice is None and not ui.resultWarningLabel.visible
    run_panel_until_done(env)


def test_closing_the_scene_during_a_run_stops_it_and_adds_nothing_to_the_next_scene(panel_env):
    """File > Close Scene while segmenting: the next patient's scene must not receive the previous one's result,
    even when the run finished in the background before the panel noticed (completed, not yet polled)."""
    env, ui = panel_env, panel_env.ui
    volume = add_volume(env.ctx.scene, noise(), np.diag([2.0, 2.0, 2.0, 1.0]), name="first patient")
    env.panel.refresh_models()
    env.node.SetNodeReferenceID("inputVolume0", volume.GetID())
    ui.segmentButton.emit("clicked(bool)", False)
    run_panel_until_done(env)  # a first result, listed in the panel
    assert env.panel.run.state == RunState.COMPLETED and ui.tokenList.items
    ui.segmentButton.emit("clicked(bool)", False)
    env.panel.run.run._thread.join()  # the worker has finished; its result waits for the next poll
    env.panel.on_scene_closing()  # what the widget calls on the scene's StartCloseEvent
    env.ctx.scene.Clear(0)
    parameter_node(env.ctx.scene)
    before = node_ids(env.ctx.scene)
    run_panel_until_done(env)
    assert node_ids(env.ctx.scene) == before  # nothing of the closed scene's patient arrives
    assert env.panel.run.state == RunState.CANCELLED and ui.statusLabel.text.startswith("Cancelled")
    assert ui.tokenList.items == [] and env.panel.heatmap_nodes == [] and env.panel.segmentation_node is None
    assert not ui.show3DButton.enabled and not ui.segmentEditorButton.enabled and not ui.resultWarningLabel.visible


def test_a_new_run_into_a_result_shown_in_3d_keeps_it_in_3d(panel_env):
    """Show 3D (the button builds the closed surfaces), then Segment again: the run writes into the same node and
    the 3D view keeps showing it (the GUI has no other 3D switch; the user's own segments keep theirs too)."""
    env, ui = panel_env, panel_env.ui
    volume = add_volume(env.ctx.scene, noise(), np.diag([2.0, 2.0, 2.0, 1.0]), name="ct")
    env.panel.refresh_models()
    env.node.SetNodeReferenceID("inputVolume0", volume.GetID())
    ui.segmentButton.emit("clicked(bool)", False)
    run_panel_until_done(env)
    result = env.panel.segmentation_node
    assert not result.GetSegmentation().ContainsRepresentation("Closed surface")
    result.CreateClosedSurfaceRepresentation()  # what qMRMLSegmentationShow3DButton does when checked
    ui.segmentButton.emit("clicked(bool)", False)
    run_panel_until_done(env)
    assert env.panel.run.state == RunState.COMPLETED and env.panel.segmentation_node is result
    assert result.GetSegmentation().ContainsRepresentation("Closed surface")


def test_an_input_deleted_during_the_run_is_never_shown_again(panel_env):
    """The user deletes the input while the run goes on: the result still arrives (in world space), but the
    removed volume is not put back into the slice views as their background."""
    env, ui = panel_env, panel_env.ui
    volume = add_volume(env.ctx.scene, noise(), np.eye(4), name="ct")
    composite = env.ctx.scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    env.panel.refresh_models()
    env.node.SetNodeReferenceID("inputVolume0", volume.GetID())
    ui.segmentButton.emit("clicked(bool)", False)
    env.ctx.scene.RemoveNode(volume)
    run_panel_until_done(env)
    assert env.panel.run.state == RunState.COMPLETED
    assert env.panel.segmentation_node.GetScene() is env.ctx.scene
    assert env.shown.get("background") is None
    ui.tokenList.emit("currentRowChanged(int)", 0)
    assert composite.GetForegroundVolumeID() == env.panel.heatmap_nodes[0].GetID()
    assert composite.GetBackgroundVolumeID() != volume.GetID()


def test_panel_takes_a_vector_volume_whose_components_are_named_in_input_channels(panel_env, tmp_path):
    """A 4-channel model and a vector volume of four sequences as the first input: the Input channels field appears
    (bound to ``inputChannels``), the other selectors hide, Segment waits for the names, then runs on the components
    in the model's order (before: the selector did not list vector volumes, and a run refused them)."""
    from helpers.packages import make_package, tiny_config
    from helpers.scenes import add_vector_volume

    env, ui = panel_env, panel_env.ui
    config = tiny_config("mr-four", in_channels=4, roi=(16, 16, 16), intensity={"method": "zscore"})
    for entry, name in zip(config["inputs"], ("T1", "T1c", "T2", "FLAIR"), strict=True):
        entry["name"] = name
    package = make_package(tmp_path, config)
    env.logic.modelInfos = lambda: [ModelInfo(str(package), "four", input_names=["T1", "T1c", "T2", "FLAIR"])]
    volume = add_vector_volume(env.ctx.scene, [noise() + 10 * c for c in range(4)], np.eye(4), "BRATS_001")
    env.panel.refresh_models()
    assert not ui.inputChannelsEdit.visible and not ui.inputChannelsLabel.visible
    env.node.SetNodeReferenceID("inputVolume0", volume.GetID())
    env.panel.update_view()
    assert ui.inputChannelsEdit.visible and ui.inputChannelsLabel.visible and ui.inputChannelsEdit.enabled
    assert [s.visible for s in env.panel.input_selectors] == [True, False, False, False]
    assert not ui.segmentButton.enabled and "name them in order in Input channels" in ui.segmentButton.toolTip
    env.node.SetParameter("inputChannels", "FLAIR,T1w,t1gd,T2w")  # what the bound line edit writes
    env.panel.update_view()
    assert ui.segmentButton.enabled, ui.segmentButton.toolTip
    ui.segmentButton.emit("clicked(bool)", False)
    run_panel_until_done(env)
    assert env.panel.run.state == RunState.COMPLETED, env.panel.run.error
    assert env.panel.run.request.channels == ("FLAIR", "T1w", "t1gd", "T2w") and env.panel.reference is volume


def test_choosing_a_model_fills_no_other_selector_while_the_first_input_holds_every_channel(panel_env):
    """A vector volume holding the four sequences as the first input, and a scalar volume called "T2" loaded too:
    choosing the four-channel model leaves the other selectors empty and hidden (before: "T2" was put in the third
    selector by its name, and Segment refused, "volume 'BRATS_001' holds every channel; input volume 3 ('T2') is
    selected too"). Without a vector volume, the same choice still fills the selectors by name."""
    from helpers.scenes import add_vector_volume

    env, ui = panel_env, panel_env.ui
    patterns = [["*t1*"], ["*t1c*", "*t1ce*"], ["*t2*"], ["*flair*"]]
    four = ModelInfo("four", "four", input_names=["T1", "T1c", "T2", "FLAIR"], input_patterns=patterns)
    env.logic.modelInfos = lambda: [ModelInfo("ct", "ct", input_names=["ct"]), four]
    vector = add_vector_volume(env.ctx.scene, [noise() + 10 * c for c in range(4)], np.eye(4), "BRATS_001")
    t2 = add_volume(env.ctx.scene, noise(), np.eye(4), "T2")
    env.panel.refresh_models()
    env.node.SetNodeReferenceID("inputVolume0", vector.GetID())
    env.node.SetParameter("inputChannels", "FLAIR,T1w,t1gd,T2w")
    ui.modelSelector.currentIndex = 1
    env.panel.on_model_changed(1)
    assert [env.node.GetNodeReferenceID(f"inputVolume{i}") for i in range(4)] == [vector.GetID(), None, None, None]
    assert [s.visible for s in env.panel.input_selectors] == [True, False, False, False]
    assert ui.segmentButton.enabled, ui.segmentButton.toolTip
    env.node.SetNodeReferenceID("inputVolume0", None)
    env.panel.on_model_changed(1)
    assert env.node.GetNodeReferenceID("inputVolume2") == t2.GetID()
