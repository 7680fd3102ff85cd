"""TokenUNetSegment: efficient, interpretable transformer segmentation for 3D Slicer.

Only the standard library and Slicer-bundled modules are imported at file scope: torch, MONAI and the helper
package are imported on first use, after their installation has been offered. Nothing runs at import time.
"""

import logging
import os

import slicer
import vtk
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

try:
    from slicer.i18n import tr as _  # context "TokenUNetSegment": this file's name
except ImportError:  # outside the application (PyPI's slicer-core has no translation helper)

    def _(text):
        return text


MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
LIBRARY = "TokenUNetSegmentLib"
MINIMUM_SLICER_VERSION = (5, 10)  # Python 3.12; vtkSegment.SetTerminology; the API checked in Testing/
SAMPLE_FILE = "AbdomenCT.nii.gz"
SAMPLE_SHA256 = "dbd3ae6d614d1d7ef3a46925c30c70038ed52da6b37fdd6afdc7b9b71387e3e1"
SAMPLE_NAME = "TokenUNetAbdomenCT"


class TokenUNetSegment(ScriptedLoadableModule):
    """Module description shown in Slicer's module list and Help & Acknowledgement panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("TokenUNet Segment")
        self.parent.categories = [_("Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["TokenUNet developers"]
        self.parent.helpText = _(
            "Segment CT or brain MRI volumes with Token-UNet networks, on the GPU or the CPU, "
            "and see where each learned token looked as a heatmap. "
            "Requires 3D Slicer {version} or newer. "
            "See the <a href='https://github.com/tokenunet/SlicerTokenUNet'>project page</a> for details."
        ).format(version="{}.{}".format(*MINIMUM_SLICER_VERSION))
        self.parent.acknowledgementText = _(
            "Token-UNet: Tshimanga, Zanola, Del Pup, Atzori, arXiv 2602.20008 (2026). "
            "Built on PyTorch, MONAI and SimpleITK. The sample CT comes from the TotalSegmentator dataset "
            "(Wasserthal et al. 2023, CC BY 4.0)."
        )
        if hasattr(slicer, "app") and slicer.app is not None:  # only inside the Slicer application
            slicer.app.connect("startupCompleted()", registerSampleData)


def slicerVersionProblem(major, minor):
    """A message when Slicer ``major.minor`` is older than the supported minimum, else an empty string."""
    if (int(major), int(minor)) >= MINIMUM_SLICER_VERSION:
        return ""
    return _(
        "TokenUNet Segment requires 3D Slicer {minimum} or newer; this is Slicer {version}. "
        "Install a recent Slicer from download.slicer.org to use it."
    ).format(minimum="{}.{}".format(*MINIMUM_SLICER_VERSION), version=f"{major}.{minor}")


def useSlicerCacheByDefault():
    """Keep models under Slicer's cache folder unless TOKENUNET_HOME says otherwise (child runs inherit it)."""
    app = getattr(slicer, "app", None)
    if app is not None and not os.environ.get("TOKENUNET_HOME"):
        os.environ["TOKENUNET_HOME"] = os.path.join(app.cachePath, "TokenUNet")


def temporaryFolder():
    """Slicer's temporary folder (None outside the application: the system's is used)."""
    app = getattr(slicer, "app", None)
    return app.temporaryPath if app is not None else None


def registerSampleData():
    """Offer the bundled abdominal CT in the Sample Data module (checked by its SHA256)."""
    import SampleData

    path = os.path.join(MODULE_DIR, "Resources", "Samples", SAMPLE_FILE)
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="TokenUNet",
        sampleName=SAMPLE_NAME,
        thumbnailFileName=os.path.join(MODULE_DIR, "Resources", "Icons", "TokenUNetSegment.png"),
        uris="file:///" + path.replace("\\", "/").lstrip("/"),
        fileNames=SAMPLE_FILE,
        nodeNames=SAMPLE_NAME,
        checksums=f"SHA256:{SAMPLE_SHA256}",
    )


class TokenUNetSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin widget: loads the .ui, binds it to the parameter node and hands the rest to the panel glue."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.panel = None
        self._parameterNode = None
        self._guiConnection = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        problem = slicerVersionProblem(slicer.app.majorVersion, slicer.app.minorVersion)
        if problem:  # refuse before the library (Python 3.12 code, 5.10 API) is imported
            import qt

            label = qt.QLabel(problem)
            label.wordWrap = True
            self.layout.addWidget(label)
            self.layout.addStretch(1)
            logging.error(problem)
            return
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/TokenUNetSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = TokenUNetSegmentLogic()

        from TokenUNetSegmentLib.mrml import controller
        from TokenUNetSegmentLib.widget.i18n import tr
        from TokenUNetSegmentLib.widget.panel import Panel

        controller.set_translator(tr)
        self.panel = Panel(
            self.ui, self.logic, lambda: self._parameterNode.parameterNode if self._parameterNode else None
        )
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)
        self.initializeParameterNode()
        self.panel.refresh_models()

    def cleanup(self):
        self.removeObservers()
        if self.panel is not None:
            self.panel.cleanup()

    def onReload(self):
        """Reload the helper package too (Slicer's reload re-executes only this file)."""
        import sys

        for name in [n for n in sys.modules if n == LIBRARY or n.startswith(LIBRARY + ".")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self):
        if self.panel is None:
            return
        self.initializeParameterNode()
        self.panel.enter()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._guiConnection)
            self._guiConnection = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameters)

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)
        if self.panel is not None:
            self.panel.on_scene_closing()

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onSceneEndImport(self, caller, event):
        if self.panel is not None:
            self.panel.update_input_filters()

    def initializeParameterNode(self):
        from TokenUNetSegmentLib.mrml.parameters import parameter_node

        self.setParameterNode(self.logic.wrapParameterNode(parameter_node(slicer.mrmlScene)))

    def setParameterNode(self, wrapped):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._guiConnection)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameters)
        self._parameterNode = wrapped
        if self._parameterNode:
            from TokenUNetSegmentLib.widget.parameter_binding import connect_gui

            self._guiConnection = connect_gui(self._parameterNode, self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameters)
            self.onParameters()

    def onParameters(self, caller=None, event=None):
        if self.panel is not None:
            self.panel.update_view()


class TokenUNetSegmentLogic(ScriptedLoadableModuleLogic):
    """Thin logic over the helper package, usable from Slicer's Python console.

    Example::

        logic = slicer.util.getModuleLogic("TokenUNetSegment")
        nodes = logic.process([getNode("CT")], None, model="abdomen-demo", device="auto")
        nodes.segmentation, nodes.heatmap_nodes, nodes.attention
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self._wrapperClass = None
        useSlicerCacheByDefault()

    # -- parameters and models ---------------------------------------------------------------------
    def wrapParameterNode(self, node):
        """The parameter node wrapped for GUI binding (``SlicerParameterName``)."""
        if self._wrapperClass is None:
            from TokenUNetSegmentLib.widget.parameter_binding import parameter_wrapper_class

            self._wrapperClass = parameter_wrapper_class()
        return self._wrapperClass(node)

    def ensureDependencies(self, ask=True):
        """Install torch (PyTorch extension) and the packages of Resources/requirements.txt if missing.

        Returns False when the user declined (or in Slicer's testing mode); raises TokenUNetError on failure.
        """
        from TokenUNetSegmentLib.widget.dependencies import ensure_dependencies

        return ensure_dependencies(ask=ask, temp_dir=temporaryFolder())

    @staticmethod
    def dependenciesReady():
        """Whether torch and the required packages are installed (read from package metadata, no import)."""
        from TokenUNetSegmentLib.widget.dependencies import dependencies_ready

        return dependencies_ready()

    def modelStore(self):
        from TokenUNetSegmentLib.pipeline.catalog import ModelStore

        return ModelStore()

    def modelInfos(self):
        """Every known model with description, licence, expected time and input channels (metadata only)."""
        from TokenUNetSegmentLib.mrml.controller import model_infos

        return model_infos(self.modelStore())

    def resolvedDevice(self, device="auto"):
        """What ``device`` becomes on this computer (None if torch is not available yet)."""
        try:
            from TokenUNetSegmentLib.pipeline.device import resolve_device
        except ImportError:
            return None
        try:
            return str(resolve_device(device))
        except Exception:  # noqa: BLE001 - an unavailable device is reported when running
            return None

    # -- runs --------------------------------------------------------------------------------------
    def startRun(self, parameters, python=None, mode=None):
        """A run of ``parameters`` (``parameters.model`` names the model) on the application scene, not started."""
        from TokenUNetSegmentLib.mrml.scene_run import SceneRun

        return SceneRun(slicer.mrmlScene, parameters, mode=mode, python=python, temp_dir=temporaryFolder())

    def process(
        self,
        inputVolumes,
        outputSegmentation=None,
        model=None,
        device="auto",
        waitForCompletion=True,
        heatmaps=True,
        heatmapKind="gather",
        attentionThreshold=0.5,
        probabilities=False,
        show3D=False,
        largestComponent=False,
        runMode="inprocess",
        testTimeAugmentation=False,
        observer=None,
        channels=None,
    ):
        """Segment ``inputVolumes`` (one volume node per model input channel) with ``model``.

        Args:
            inputVolumes: a volume node or a list of them, in the model's channel order; or one vector volume holding
                every channel of a multi-channel model as its components (``channels`` names them).
            outputSegmentation: a segmentation node to write into (only segments this module made and nobody edited
                since are replaced), or None for a new one beside the input.
            model: model id, package path or None for the catalog's default.
            device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
            waitForCompletion: block until done (returns the nodes); otherwise returns the started run, which a
                timer polls in the background (``run.nodes`` is set once it completes).
            runMode: ``inprocess`` (default for scripting) or ``subprocess``.
            testTimeAugmentation: average five passes of the network (the scan as it is, turned and scaled
                in-plane): about five times the network's time.
            observer: optional callable receiving the run's typed events (``ProgressEvent``, ..., and a final
                ``SceneRunFinished``).
            channels: what each component of a vector volume input holds, in order (``["FLAIR", "T1", "T1c",
                "T2"]`` or ``"FLAIR,T1,T1c,T2"``; any case, synonyms such as ``t1gd``): matched to the model's
                channels by name, as the panel's Input channels field and the command line's ``--channels``.

        Returns:
            RunNodes (segmentation, heatmap_nodes, attention, probabilities, folder, and the run's assessment and
            warnings) or, without waiting, the run.
        """
        from TokenUNetSegmentLib.mrml.component_channels import check_channels_given_for, names_text
        from TokenUNetSegmentLib.mrml.parameters import Parameters
        from TokenUNetSegmentLib.mrml.scene_run import check_volume_count
        from TokenUNetSegmentLib.pipeline.run_contract import RunState

        volumes = list(inputVolumes) if isinstance(inputVolumes, (list, tuple)) else [inputVolumes]
        parameters = Parameters(
            outputSegmentation=outputSegmentation,
            model=str(model) if model else "",
            device=device,
            runMode=runMode,
            show3D=show3D,
            largestComponent=largestComponent,
            heatmaps=heatmaps,
            heatmapKind=heatmapKind,
            attentionThreshold=attentionThreshold,
            probabilities=probabilities,
            testTimeAugmentation=testTimeAugmentation,
            inputChannels=names_text(channels),
        )
        check_volume_count(len(volumes), parameters)
        check_channels_given_for(volumes, parameters.inputChannels)
        for index, volume in enumerate(volumes):
            setattr(parameters, f"inputVolume{index}", volume)
        run = self.startRun(parameters, mode=runMode, python=self._python() if runMode == "subprocess" else None)
        if observer is not None:
            run.add_observer(observer)
        if waitForCompletion:
            state = run.run_now()
            if state != RunState.COMPLETED:
                raise run.error or RuntimeError(f"segmentation {state.value}")
            return run.nodes
        import qt

        run.start()
        timer = qt.QTimer()
        timer.setInterval(100)

        def poll():
            if run.poll() != RunState.RUNNING:
                timer.stop()

        timer.connect("timeout()", poll)
        timer.start()
        run.timer = timer  # keep the timer alive as long as the run
        return run

    @staticmethod
    def _python():
        from TokenUNetSegmentLib.pipeline.subprocess_run import python_executable

        return python_executable()


class TokenUNetSegmentTest(ScriptedLoadableModuleTest):
    """In-Slicer tests (Reload & Test, or Slicer's test driver): the bundled sample through the bundled model."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        import unittest

        self.setUp()
        try:
            self.test_sample_with_bundled_model()
        except unittest.SkipTest as skipped:
            if getattr(self, "_outcome", None) is not None:
                raise  # run by unittest (Slicer's ctest driver): reported as skipped
            self.delayDisplay(f"Test skipped: {skipped}")  # Reload and Test calls runTest directly

    def test_sample_with_bundled_model(self):
        """Skips when the Python dependencies are not installed; fails when the bundled model is missing."""
        logic = TokenUNetSegmentLogic()
        if not logic.dependenciesReady():
            self.skipTest("PyTorch, MONAI, einops or safetensors is not installed (the module offers to install them)")
        store = logic.modelStore()
        default = store.default_id()
        self.assertIsNotNone(default, "the model catalog names no default model")
        entry = store.entry(default)
        self.assertEqual(entry.source, "bundled", f"the default model '{default}' should be bundled")
        self.assertTrue(entry.available, f"the bundled model is missing at {entry.path}: reinstall the extension")
        self.delayDisplay("Loading the bundled sample CT")
        volume = slicer.util.loadVolume(os.path.join(MODULE_DIR, "Resources", "Samples", SAMPLE_FILE))
        self.delayDisplay("Segmenting with the bundled model")
        fractions = []
        nodes = logic.process(volume, device="cpu", observer=lambda e: fractions.append(getattr(e, "fraction", 0.0)))
        segmentation = nodes.segmentation.GetSegmentation()
        self.assertGreater(segmentation.GetNumberOfSegments(), 0)
        names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
        self.assertIn("liver", names)
        self.assertEqual(max(fractions), 1.0)
        self.assertGreater(len(nodes.heatmaps), 0)
        array = slicer.util.arrayFromVolume(nodes.heatmaps[0])
        self.assertEqual(array.shape, slicer.util.arrayFromVolume(volume).shape)
        self.assertTrue(0.0 <= array.min() <= array.max() <= 1.0)
        self.assertIsNotNone(nodes.attention)
        self.delayDisplay("Test passed")
