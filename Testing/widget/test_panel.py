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
from TokenUNetSegmentLib.pipeline.run_contract import RunState


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

    shown = {}
    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", try_with_error_display)
    monkeypatch.setattr(slicer.util, "setSliceViewerLayers", lambda **kw: shown.update(kw))
    from TokenUNetSegmentLib.widget import panel as panel_module

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
    yield types.SimpleNamespace(ctx=ctx, ui=ui, panel=panel, node=node, shown=shown, module=panel_module)
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
    segmentation = env.panel.segmentation_node.GetSegmentation()
    ui.show3DCheckBox.emit("toggled(bool)", True)
    assert segmentation.ContainsRepresentation("Closed surface")
    ui.show3DCheckBox.emit("toggled(bool)", False)
    assert not segmentation.ContainsRepresentation("Closed surface")
    attention = env.panel.attention_node
    ui.attentionThresholdSlider.emit("valueChanged(double)", 0.95)
    assert attention.GetAttribute(THRESHOLD_ATTRIBUTE) == "0.95"


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

    monkeypatch.setattr(dependencies, "torch_available", lambda: False)
    env.panel.refresh_models()
    assert ui.segmentButton.text == "Install dependencies" and ui.segmentButton.enabled
    assert ui.modelSelector.items == []
    monkeypatch.setattr(dependencies, "torch_available", lambda: True)
    ui.segmentButton.emit("clicked(bool)", False)  # installs (stub), then lists the models
    assert ui.segmentButton.text == "Segment" and len(ui.modelSelector.items) == 1
