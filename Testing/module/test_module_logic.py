"""The module file's Logic under slicer-core: scripting API (process), model list, device; with stand-ins only
for what the PyPI wheel lacks (ScriptedLoadableModule base classes, the application scene, qt.QTimer)."""

import importlib
import sys
import types

import numpy as np
import pytest
import slicer
from helpers.packages import make_package, physical_ball, tiny_config
from helpers.scenes import add_volume, new_scene
from TokenUNetSegmentLib.mrml.attributes import MODEL_TAG
from TokenUNetSegmentLib.mrml.segmentation_nodes import segment_tag
from TokenUNetSegmentLib.pipeline.run_contract import FinishedEvent, RunState


class _Base:
    def __init__(self, *args, **kwargs):
        pass


@pytest.fixture
def module(monkeypatch, tmp_path):
    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    for name in (
        "ScriptedLoadableModule",
        "ScriptedLoadableModuleLogic",
        "ScriptedLoadableModuleWidget",
        "ScriptedLoadableModuleTest",
    ):
        setattr(scripted, name, type(name, (_Base,), {}))
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", scripted)
    timers = []

    class Timer:
        def __init__(self):
            timers.append(self)
            self.active = False

        def setInterval(self, ms):
            pass

        def connect(self, signal, slot):
            self.slot = slot

        def start(self):
            self.active = True

        def stop(self):
            self.active = False

    monkeypatch.setitem(sys.modules, "qt", types.SimpleNamespace(QTimer=Timer))
    monkeypatch.setenv("TOKENUNET_HOME", str(tmp_path / "home"))
    ctx = new_scene()
    monkeypatch.setattr(slicer, "mrmlScene", ctx.scene, raising=False)
    sys.modules.pop("TokenUNetSegment", None)
    loaded = importlib.import_module("TokenUNetSegment")
    yield types.SimpleNamespace(module=loaded, ctx=ctx, timers=timers, tmp=tmp_path)
    sys.modules.pop("TokenUNetSegment", None)


def ct_volume(scene):
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    array = physical_ball((24, 20, 16), affine, (30.0, 30.0, 24.0), 15.0, value=200.0)
    return add_volume(scene, array, affine, name="abdomen ct")


def test_process_segments_in_process_for_the_python_console(module, tiny_package):
    package = tiny_package
    volume = ct_volume(module.ctx.scene)
    events = []
    nodes = module.module.TokenUNetSegmentLogic().process(
        volume, model=str(package), device="cpu", observer=events.append, heatmapKind="both"
    )
    segmentation = nodes.segmentation.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(2)] == ["organ1", "organ2"]
    assert segment_tag(segmentation.GetNthSegment(0), MODEL_TAG) == "tiny-ct"
    assert len(nodes.heatmap_nodes) == 16 and nodes.attention is not None
    assert isinstance(events[-1], FinishedEvent) and events[-1].state == RunState.COMPLETED
    # writing again into the same node replaces the module's segments
    again = module.module.TokenUNetSegmentLogic().process(
        [volume], nodes.segmentation, model=str(package), device="cpu", heatmaps=False
    )
    assert again.segmentation is nodes.segmentation and segmentation.GetNumberOfSegments() == 2


def test_process_without_waiting_returns_the_running_run(module, tiny_package):
    package = tiny_package
    volume = ct_volume(module.ctx.scene)
    run = module.module.TokenUNetSegmentLogic().process(
        volume, model=str(package), device="cpu", waitForCompletion=False
    )
    assert module.timers[-1].active  # the application's event loop would poll it
    assert run.wait(timeout=120) == RunState.COMPLETED and run.nodes.segmentation is not None


def test_process_reports_failures_as_typed_errors(module):
    from TokenUNetSegmentLib.pipeline.errors import InputError, TokenUNetError

    with pytest.raises(TokenUNetError, match="not found"):
        module.module.TokenUNetSegmentLogic().process(ct_volume(module.ctx.scene), model="/no/such/package.zip")
    package = make_package(module.tmp, tiny_config(roi=(16, 16, 16), in_channels=2))
    with pytest.raises(InputError, match="input volume 2 of 2 is not selected"):
        module.module.TokenUNetSegmentLogic().process(ct_volume(module.ctx.scene), model=str(package))


def test_model_infos_list_cached_packages_with_their_inputs_and_devices(module):
    from TokenUNetSegmentLib.pipeline.catalog import ModelStore

    config = tiny_config("brain", in_channels=2, roi=(16, 16, 16))
    ModelStore().import_package(make_package(module.tmp, config))
    logic = module.module.TokenUNetSegmentLogic()
    infos = {info.id: info for info in logic.modelInfos()}
    assert infos["brain"].input_names == ["ch0", "ch1"] and infos["brain"].input_patterns == [["*ch0*"], ["*ch1*"]]
    assert infos["brain"].description == "tiny random-weight test model" and infos["brain"].available
    assert logic.resolvedDevice("auto") in ("cpu", "cuda", "mps")
    assert logic.resolvedDevice("tpu") is None
