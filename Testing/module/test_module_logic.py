"""The module file's Logic under slicer-core: scripting API (process), model list, device; with stand-ins only
for what the PyPI wheel lacks (ScriptedLoadableModule base classes, the application scene, qt.QTimer)."""

import importlib
import os
import sys
import types
import unittest

import numpy as np
import pytest
import slicer
from helpers.packages import make_package, physical_ball, tiny_config
from helpers.scenes import add_vector_volume, add_volume, new_scene
from TokenUNetSegmentLib.mrml.attributes import MODEL_TAG
from TokenUNetSegmentLib.mrml.segmentation_nodes import segment_tag
from TokenUNetSegmentLib.pipeline.run_contract import FinishedEvent, RunState


class _Base:
    def __init__(self, *args, **kwargs):
        pass


@pytest.fixture
def module(monkeypatch, tmp_path):
    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleWidget"):
        setattr(scripted, name, type(name, (_Base,), {"onReload": lambda self: reloads.append(self)}))
    scripted.ScriptedLoadableModuleTest = type(
        "ScriptedLoadableModuleTest", (unittest.TestCase,), {"delayDisplay": lambda self, message: None}
    )
    reloads = []
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
    yield types.SimpleNamespace(module=loaded, ctx=ctx, timers=timers, tmp=tmp_path, reloads=reloads)
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
    # more volumes than the model takes (before: the extra ones left out without a word)
    volumes = [ct_volume(module.ctx.scene) for _ in range(3)]
    with pytest.raises(InputError, match="3 input volumes given; the model takes 2"):
        module.module.TokenUNetSegmentLogic().process(volumes, model=str(package))
    with pytest.raises(InputError, match="5 input volumes given; the model takes 4"):
        module.module.TokenUNetSegmentLogic().process(volumes + volumes[:2], model=str(package))


def test_process_takes_a_vector_volume_whose_channels_are_named(module):
    """``logic.process(vector, channels=...)``: one vector volume holding a two-channel model's channels in another
    order, named by a list or a text (before: refused, "has 2 components per voxel ... split it")."""
    from TokenUNetSegmentLib.pipeline.errors import InputError

    config = tiny_config("mr-two", in_channels=2, roi=(16, 16, 16), intensity={"method": "zscore"})
    config["inputs"][0]["name"], config["inputs"][1]["name"] = "T1", "FLAIR"
    package = make_package(module.tmp, config)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    values = physical_ball((24, 20, 16), affine, (30.0, 30.0, 24.0), 15.0, value=400.0, background=20.0)
    vector = add_vector_volume(module.ctx.scene, [values * 0.5, values], affine, "BRATS_001 (FLAIR, T1)")
    logic = module.module.TokenUNetSegmentLogic()
    with pytest.raises(InputError, match=r"nothing says which channel each of the 2 components .* \(name them"):
        logic.process(vector, model=str(package), device="cpu")
    with pytest.raises(InputError, match="channel name 'FLAIR,T1' holds a comma"):
        logic.process(vector, model=str(package), device="cpu", channels=["FLAIR,T1"])
    for channels in (["flair", "T1w"], "FLAIR, T1"):
        nodes = logic.process(vector, model=str(package), device="cpu", heatmaps=False, channels=channels)
        assert nodes.segmentation.GetSegmentation().GetNumberOfSegments() == 2


def test_process_refuses_channel_names_for_scalar_volumes_it_would_take_in_the_model_order(module):
    """``channels=`` names the components of one vector volume; given with one scalar volume per channel it was
    ignored (before: the volumes ran in the model's order, T1 given FLAIR's voxels, whatever the names said)."""
    from TokenUNetSegmentLib.pipeline.errors import InputError

    config = tiny_config("mr-two", in_channels=2, roi=(16, 16, 16), intensity={"method": "zscore"})
    config["inputs"][0]["name"], config["inputs"][1]["name"] = "T1", "FLAIR"
    package = make_package(module.tmp, config)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    values = physical_ball((24, 20, 16), affine, (30.0, 30.0, 24.0), 15.0, value=400.0, background=20.0)
    flair = add_volume(module.ctx.scene, values, affine, "FLAIR")
    t1 = add_volume(module.ctx.scene, values * 0.5, affine, "T1")
    logic = module.module.TokenUNetSegmentLogic()
    with pytest.raises(InputError, match=r"channels= names the components of one vector volume.*\(pass the scalar"):
        logic.process([flair, t1], model=str(package), device="cpu", channels=["FLAIR", "T1"])


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


def test_slicer_older_than_5_10_is_refused_with_a_clear_message(module):
    problem = module.module.slicerVersionProblem(5, 8)
    assert "requires 3D Slicer 5.10 or newer" in problem and "this is Slicer 5.8" in problem
    assert module.module.slicerVersionProblem(5, 10) == module.module.slicerVersionProblem(6, 0) == ""
    assert "Requires 3D Slicer {version} or newer" in (module.module.__file__ and open(module.module.__file__).read())


def test_models_go_to_slicers_cache_folder_unless_tokenunet_home_is_set(module, monkeypatch, tmp_path):
    app = types.SimpleNamespace(cachePath=str(tmp_path / "cache"), temporaryPath=str(tmp_path / "tmp"))
    monkeypatch.setattr(slicer, "app", app, raising=False)
    monkeypatch.delenv("TOKENUNET_HOME")
    module.module.useSlicerCacheByDefault()
    assert os.environ["TOKENUNET_HOME"] == os.path.join(app.cachePath, "TokenUNet")
    monkeypatch.setenv("TOKENUNET_HOME", "/elsewhere")
    module.module.useSlicerCacheByDefault()
    assert os.environ["TOKENUNET_HOME"] == "/elsewhere"
    assert module.module.temporaryFolder() == app.temporaryPath


def test_reload_also_reloads_the_helper_package(module, monkeypatch):
    monkeypatch.setattr(module.module, "LIBRARY", "TokenUNetReloadProbe")
    for name in ("TokenUNetReloadProbe", "TokenUNetReloadProbe.widget", "TokenUNetReloadProbeOther"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    widget = module.module.TokenUNetSegmentWidget()
    widget.onReload()
    assert "TokenUNetReloadProbe" not in sys.modules and "TokenUNetReloadProbe.widget" not in sys.modules
    assert "TokenUNetReloadProbeOther" in sys.modules and module.reloads == [widget]


def test_self_test_skips_without_dependencies_and_fails_without_the_bundled_model(module, monkeypatch, tmp_path):
    from TokenUNetSegmentLib.pipeline.catalog import ModelEntry, ModelStore
    from TokenUNetSegmentLib.widget import dependencies

    test = module.module.TokenUNetSegmentTest("test_sample_with_bundled_model")
    monkeypatch.setattr(dependencies, "dependencies_ready", lambda: False)
    with pytest.raises(unittest.SkipTest, match="not installed"):
        test.test_sample_with_bundled_model()
    monkeypatch.setattr(dependencies, "dependencies_ready", lambda: True)
    missing = ModelEntry("abdomen-organs-3mm-demo", "demo", "bundled", tmp_path / "gone")
    monkeypatch.setattr(ModelStore, "entry", lambda self, model_id: missing)
    with pytest.raises(AssertionError, match="bundled model is missing"):
        test.test_sample_with_bundled_model()


def test_self_test_is_reported_skipped_by_unittest_and_quiet_in_reload_and_test(module, monkeypatch):
    from TokenUNetSegmentLib.widget import dependencies

    monkeypatch.setattr(dependencies, "dependencies_ready", lambda: False)
    monkeypatch.setattr(module.module.TokenUNetSegmentTest, "setUp", lambda self: None)
    result = unittest.TestResult()
    module.module.TokenUNetSegmentTest().run(result)  # as Slicer's ctest driver runs it
    assert len(result.skipped) == 1 and not result.errors and not result.failures
    module.module.TokenUNetSegmentTest().runTest()  # as Reload and Test calls it: no exception


def test_closing_the_scene_tells_the_panel(module):
    widget = module.module.TokenUNetSegmentWidget()
    calls = []
    widget.panel = types.SimpleNamespace(on_scene_closing=lambda: calls.append("closing"))
    widget.onSceneStartClose(None, None)
    assert calls == ["closing"]
