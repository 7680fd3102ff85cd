"""The module panel: Qt glue between the .ui widgets, the parameter node, the controller and the runs.

Decisions (button states, labels, messages) come from :mod:`TokenUNetSegmentLib.mrml.controller`; node work
from the MRML adapter. This file only moves values between them and the widgets.
"""

from __future__ import annotations

import logging

import qt
import slicer

from ..mrml import controller
from ..mrml.attributes import (
    BEST_LABEL_ATTRIBUTE,
    KIND_ATTRIBUTE,
    PROBABILITY_ATTRIBUTE,
    SOFT_DICE_ATTRIBUTE,
    TOKEN_ATTRIBUTE,
)
from ..mrml.component_channels import takes_components
from ..mrml.heatmap_nodes import show_in_slice_views, update_attention_segments
from ..mrml.parameters import MAX_INPUTS, Parameters
from ..mrml.scene_run import SceneRunFinished
from ..mrml.segmentation_nodes import shows_closed_surfaces
from ..pipeline.device_probe import DeviceProbe, resolved
from ..pipeline.run_contract import LogEvent, ProgressEvent, RunState
from ..pipeline.subprocess_run import python_executable
from . import dependencies
from .i18n import tr as _

POLL_MS = 100
LIST_ROLE = qt.Qt.UserRole
OUTPUT_ATTRIBUTES = (TOKEN_ATTRIBUTE, PROBABILITY_ATTRIBUTE)  # run outputs: never offered as inputs
STATUS_MS = 5000


def is_run_output(node) -> bool:
    """Whether a volume node is a run's heatmap or probability map (kept out of the input selectors)."""
    return any(node.GetAttribute(name) for name in OUTPUT_ATTRIBUTES)


def start_device_probe():
    """Ask a child interpreter which devices exist (torch stays out of Slicer's process until a run)."""
    return DeviceProbe(python_executable())


class Panel:
    """Owns the widgets of one module panel."""

    def __init__(self, ui, logic, parameter_node_getter):
        self.ui = ui
        self.logic = logic
        self.get_parameter_node = parameter_node_getter
        self.models: list[controller.ModelInfo] = []
        self.run = None
        self.cancelling = False
        self.message = ""
        self.last_state = RunState.IDLE
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_MS)
        self.timer.connect("timeout()", self.poll)
        self.input_selectors = [getattr(ui, f"inputSelector{i}") for i in range(4)]
        self.input_labels = [getattr(ui, f"inputLabel{i}") for i in range(4)]
        ui.segmentButton.connect("clicked(bool)", self.on_segment_clicked)
        ui.modelSelector.connect("currentIndexChanged(int)", self.on_model_changed)
        ui.tokenList.connect("currentRowChanged(int)", self.on_token_selected)
        ui.heatmapOpacitySlider.connect("valueChanged(double)", self.on_opacity_changed)
        ui.attentionThresholdSlider.connect("valueChanged(double)", self.on_threshold_changed)
        ui.deviceSelector.connect("currentIndexChanged(int)", self.on_device_changed)
        ui.segmentEditorButton.connect("clicked(bool)", self.on_show_in_segment_editor)
        ui.openCacheButton.connect("clicked(bool)", self.on_open_cache)
        ui.importPackageButton.connect("clicked(bool)", self.on_import_package)
        ui.deleteModelButton.connect("clicked(bool)", self.on_delete_model)
        self.attention_node = None
        self.segmentation_node = None
        self.heatmap_nodes = []
        self.reference = None
        self.dependencies_ready = False
        self.devices: list[str] | None = None  # None until the device probe has answered
        self.probe = None
        self.applied_threshold = None
        self.notice = None  # what the last completed run said about its result (controller.ResultNotice)

    # -- parameters ------------------------------------------------------------------------------------
    def parameters(self) -> Parameters:
        from ..mrml.parameters import read_parameters

        node = self.get_parameter_node()
        return read_parameters(node) if node is not None else Parameters()

    def model_info(self) -> controller.ModelInfo | None:
        index = self.ui.modelSelector.currentIndex
        return self.models[index] if 0 <= index < len(self.models) else None

    # -- models ----------------------------------------------------------------------------------------
    def refresh_models(self) -> None:
        """Fill the model selector from the catalog and the cache."""
        self.dependencies_ready = dependencies.dependencies_ready()
        self.models = []
        if self.dependencies_ready:
            try:
                self.models = self.logic.modelInfos()
            except Exception as error:  # noqa: BLE001 - shown, the panel stays usable
                self.message = str(error)
            if self.devices is None and self.probe is None:
                self.probe = start_device_probe()
                self.timer.start()
        else:
            self.message = _("TokenUNet needs PyTorch, MONAI, einops and safetensors: click Install dependencies.")
        self.fill_devices()
        selector = self.ui.modelSelector
        wanted = self.parameters().model
        was = selector.blockSignals(True)
        selector.clear()
        for info in self.models:
            selector.addItem(info.id)
        index = next((i for i, info in enumerate(self.models) if info.id == wanted), 0)
        selector.setCurrentIndex(index if self.models else -1)
        selector.blockSignals(was)
        self.on_model_changed(selector.currentIndex)

    def on_model_changed(self, index: int) -> None:
        info = self.model_info()
        node = self.get_parameter_node()
        if node is not None and info is not None:
            was = node.StartModify()
            node.SetParameter("model", info.id)
            for channel in range(len(info.input_names), MAX_INPUTS):  # hidden selectors hold nothing
                node.SetNodeReferenceID(f"inputVolume{channel}", None)
            self.auto_assign_inputs(info)
            node.EndModify(was)
        self.ui.modelDescriptionLabel.text = info.summary if info is not None else ""
        self.update_view()

    def auto_assign_inputs(self, info: controller.ModelInfo) -> None:
        scene = slicer.mrmlScene
        volumes = [
            scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
            for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))
        ]
        volumes = [v for v in volumes if not is_run_output(v) and not v.GetHideFromEditors()]
        parameters = self.parameters()
        if takes_components(parameters.inputVolume0, len(info.input_names)):
            return  # the first input holds every channel: another volume selected would only be refused
        current = [n.GetName() if n is not None else None for n in parameters.inputs(len(info.input_names))]
        chosen = controller.assign_inputs([v.GetName() for v in volumes], info, current)
        node = self.get_parameter_node()
        for channel, name in enumerate(chosen):
            if name and current[channel] is None:
                match = next(v for v in volumes if v.GetName() == name)
                node.SetNodeReferenceID(f"inputVolume{channel}", match.GetID())

    def update_input_filters(self) -> None:
        """Hide run outputs (heatmaps, probability maps) from the input selectors."""
        scene = slicer.mrmlScene
        hidden = [
            node.GetID()
            for node in (
                scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
                for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))
            )
            if is_run_output(node)
        ]
        for selector in self.input_selectors:
            selector.sortFilterProxyModel().hiddenNodeIDs = hidden

    def on_scene_closing(self) -> None:
        """The scene is closing: stop a run (its result belongs to the closed scene's patient, never to the next
        scene) and forget the closed scene's result nodes."""
        if self.run is not None and self.run.state == RunState.RUNNING:
            self.run.cancel(discard=True)
        self.segmentation_node = self.attention_node = self.reference = None
        self.heatmap_nodes, self.notice, self.applied_threshold = [], None, None
        self.ui.tokenList.clear()
        self.update_view()

    def enter(self) -> None:
        self.update_input_filters()
        self.update_view()

    # -- devices ---------------------------------------------------------------------------------------
    def fill_devices(self) -> None:
        """The devices this computer has (``cuda:N`` per GPU) plus the stored choice, even if absent here."""
        stored = self.parameters().device
        items = list(self.devices or ["auto", "cpu"])
        if stored not in items:
            items.append(stored)  # e.g. cuda:1 from a scene saved on another computer: shown, not lost
        selector = self.ui.deviceSelector
        was = selector.blockSignals(True)
        selector.clear()
        for item in items:
            selector.addItem(item)
        selector.setCurrentIndex(items.index(stored))
        selector.blockSignals(was)

    def on_device_changed(self, index: int) -> None:
        node = self.get_parameter_node()
        text = self.ui.deviceSelector.itemText(index) if index >= 0 else ""
        if node is not None and text:
            node.SetParameter("device", text)
        self.update_view()

    def resolved_device(self, device: str):
        if not self.dependencies_ready or self.devices is None:
            return None
        return resolved(self.devices, device)

    def on_open_cache(self, *_args) -> None:
        folder = self.logic.modelStore().cache_dir
        folder.mkdir(parents=True, exist_ok=True)
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(folder)))

    def on_import_package(self, *_args) -> None:
        path = qt.QFileDialog.getOpenFileName(
            None, _("Import model package"), "", _("Model packages (*.zip);;All files (*)")
        )
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to import the model package."), waitCursor=True):
            self.logic.modelStore().import_package(path)
            self.refresh_models()

    def on_delete_model(self, *_args) -> None:
        info = self.model_info()
        if info is None or not slicer.util.confirmYesNoDisplay(
            _("Delete the cached model '{model}'?").format(model=info.id)
        ):
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to delete the model."), waitCursor=True):
            self.logic.modelStore().remove(info.id)
            self.refresh_models()

    # -- runs ------------------------------------------------------------------------------------------
    def on_segment_clicked(self, *_args) -> None:
        if self.run is not None and self.run.state == RunState.RUNNING:
            self.cancelling = True
            self.run.cancel()
            self.update_view()
            return
        if not self.dependencies_ready:
            self.install_dependencies()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the segmentation."), waitCursor=True):
            self.cancelling, self.message, self.notice = False, "", None
            parameters = self.parameters()
            # the GUI's 3D switch is the Show 3D button: a result it shows in 3D stays in 3D when rewritten
            parameters.show3D = parameters.show3D or shows_closed_surfaces(parameters.outputSegmentation)
            self.run = self.logic.startRun(parameters, python=python_executable())
            self.run.add_observer(self.on_run_event)
            self.run.start()
            self.timer.start()
            slicer.util.showStatusMessage(_("TokenUNet: segmentation started."), STATUS_MS)
        self.update_view()

    def install_dependencies(self) -> None:
        """Offer to install the dependencies; a refusal leaves the panel usable and says what is missing."""
        installed = False
        with slicer.util.tryWithErrorDisplay(_("Failed to install the dependencies."), waitCursor=True):
            installed = self.logic.ensureDependencies()
        if installed:
            self.message = ""
            self.refresh_models()
        elif not dependencies.dependencies_ready():
            self.message = _(dependencies.DECLINED)
        self.update_view()

    def poll(self) -> None:
        if self.probe is not None and self.probe.poll() is not None:
            self.devices, self.probe = self.probe.poll(), None
            self.fill_devices()
            self.update_view()
        if self.run is not None and self.run.state == RunState.RUNNING:
            self.run.poll()
            self.update_view()
        if self.probe is None and (self.run is None or self.run.state != RunState.RUNNING):
            self.timer.stop()

    def on_run_event(self, event) -> None:
        if isinstance(event, LogEvent):  # the child's output: Slicer's log and the status bar
            logging.info(f"TokenUNet: {event.message}")
            slicer.util.showStatusMessage(f"TokenUNet: {event.message}", STATUS_MS)
            return
        if isinstance(event, ProgressEvent):
            text = _("TokenUNet: {stage} {percent}%").format(stage=event.stage, percent=int(100 * event.fraction))
            slicer.util.showStatusMessage(text, STATUS_MS)
            return
        if not isinstance(event, SceneRunFinished):
            return
        self.last_state = event.state
        error = event.error
        if event.state == RunState.COMPLETED and event.nodes is not None:
            nodes = event.nodes
            count = nodes.segmentation.GetSegmentation().GetNumberOfSegments()
            self.message = _("{count} segments in '{name}'.").format(count=count, name=nodes.segmentation.GetName())
            self.notice = controller.result_notice(nodes.assessment, nodes.warnings)
            for warning in nodes.warnings:
                logging.warning(f"TokenUNet: {warning}")
            if self.notice.text:
                logging.warning(f"TokenUNet: {self.notice.text}")
            self.show_run(nodes)
            slicer.util.showStatusMessage(_("TokenUNet: done. ") + self.message, STATUS_MS)
        elif event.state == RunState.FAILED:
            self.message = str(error) if error else ""
            slicer.util.showStatusMessage(_("TokenUNet: failed: ") + self.message, STATUS_MS)
            if (
                error is not None
                and getattr(error, "restart_required", False)
                and slicer.util.confirmYesNoDisplay(_("{error}\n\nRestart Slicer now?").format(error=error))
            ):
                slicer.util.restart()

    def show_run(self, nodes) -> None:
        """Show the new segmentation over the input and list the run's tokens."""
        reference = self.run.reference if self.run is not None else None
        # an input deleted during the run stays deleted: never shown again as the views' background
        self.reference = reference if reference is not None and reference.GetScene() is slicer.mrmlScene else None
        self.heatmap_nodes, self.attention_node = list(nodes.heatmap_nodes), nodes.attention
        self.segmentation_node = nodes.segmentation
        parameter_node = self.get_parameter_node()
        if parameter_node is not None and parameter_node.GetNodeReference("outputSegmentation") is None:
            # the next run writes into this node again (no segmentation_1, _2...)
            parameter_node.SetNodeReferenceID("outputSegmentation", nodes.segmentation.GetID())
        self.ui.show3DButton.setSegmentationNode(nodes.segmentation)
        self.applied_threshold = self.parameters().attentionThreshold
        self.update_input_filters()
        entries = [
            {
                "token": n.GetAttribute(TOKEN_ATTRIBUTE),
                "kind": n.GetAttribute(KIND_ATTRIBUTE),
                "best_label": n.GetAttribute(BEST_LABEL_ATTRIBUTE),
                "soft_dice": n.GetAttribute(SOFT_DICE_ATTRIBUTE),
            }
            for n in self.heatmap_nodes
        ]
        rows = controller.token_rows(entries)
        order = sorted(range(len(entries)), key=lambda i: (entries[i]["kind"], int(entries[i]["token"])))
        self.ui.tokenList.clear()
        for row, index in zip(rows, order, strict=True):
            item = qt.QListWidgetItem(row)
            item.setData(LIST_ROLE, self.heatmap_nodes[index].GetID())
            self.ui.tokenList.addItem(item)
        if self.reference is not None:
            slicer.util.setSliceViewerLayers(background=self.reference, fit=False)

    def on_show_in_segment_editor(self, *_args) -> None:
        """Open the result in the Segment Editor, with the input as its source volume."""
        segmentation = self.segmentation_node
        if segmentation is None or segmentation.GetScene() is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to open the Segment Editor."), waitCursor=True):
            slicer.util.selectModule("SegmentEditor")
            editor = slicer.util.getModuleWidget("SegmentEditor").editor
            editor.setSegmentationNode(segmentation)
            if self.reference is not None and self.reference.GetScene() is not None:
                editor.setSourceVolumeNode(self.reference)

    def on_token_selected(self, row: int) -> None:
        item = self.ui.tokenList.item(row) if row >= 0 else None
        node = slicer.mrmlScene.GetNodeByID(item.data(LIST_ROLE)) if item is not None else None
        parameter_node = self.get_parameter_node()
        if parameter_node is not None:
            parameter_node.SetNodeReferenceID("selectedHeatmap", node.GetID() if node is not None else None)
        show_in_slice_views(slicer.mrmlScene, node, self.parameters().heatmapOpacity, self.reference)

    def on_opacity_changed(self, value: float) -> None:
        selected = self.parameters().selectedHeatmap
        if selected is not None:
            show_in_slice_views(slicer.mrmlScene, selected, value)

    def on_threshold_changed(self, value: float) -> None:
        """Rebuild the token segments at the new level (the slider reports it on release: tracking is off)."""
        if self.attention_node is None or self.attention_node.GetScene() is None or value <= 0:
            return
        if self.applied_threshold is not None and abs(value - self.applied_threshold) < 1e-9:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to update the token attention segments."), waitCursor=True):
            update_attention_segments(self.attention_node, value)
            self.applied_threshold = value

    # -- view ------------------------------------------------------------------------------------------
    def update_view(self, *_args) -> None:
        run = self.run
        running = run is not None and run.state == RunState.RUNNING
        state = run.state if run is not None else RunState.IDLE
        view = controller.view_state(
            self.parameters(),
            self.model_info(),
            state,
            fraction=run.run.fraction if run else 0.0,
            stage=run.run.stage if run else "",
            elapsed=run.run.elapsed if run else 0.0,
            resolved_device=self.resolved_device(self.parameters().device),
            cancelling=self.cancelling and running,
            message=self.message,
            has_heatmaps=bool(self.heatmap_nodes),
            dependencies_ready=self.dependencies_ready,
            notice=self.notice,
        )
        ui = self.ui
        ui.segmentButton.text = view.button_text
        ui.segmentButton.enabled = view.button_enabled
        ui.segmentButton.toolTip = view.button_tooltip
        for label, selector, text, visible in zip(
            self.input_labels, self.input_selectors, view.input_labels, view.input_visible, strict=True
        ):
            label.text, label.visible, selector.visible = text, visible, visible
            selector.enabled = view.inputs_enabled
        ui.modelSelector.enabled = view.inputs_enabled
        ui.inputChannelsLabel.visible = ui.inputChannelsEdit.visible = view.channels_visible
        ui.inputChannelsEdit.enabled = view.inputs_enabled
        ui.deviceNoteLabel.text = view.device_note
        ui.deviceNoteLabel.visible = bool(view.device_note)
        ui.progressBar.visible = view.progress_visible
        ui.progressBar.value = view.progress_percent
        ui.statusLabel.text = view.status
        ui.resultWarningLabel.text = view.warning
        ui.resultWarningLabel.toolTip = view.warning_details
        ui.resultWarningLabel.visible = bool(view.warning)
        ui.tokenList.enabled = view.heatmaps_enabled
        ui.attentionThresholdSlider.enabled = view.heatmaps_enabled and self.attention_node is not None
        has_result = self.segmentation_node is not None and self.segmentation_node.GetScene() is not None
        ui.show3DButton.enabled = has_result and not running
        ui.segmentEditorButton.enabled = has_result and not running
        ui.deviceSelector.enabled = view.inputs_enabled

    def cleanup(self) -> None:
        self.timer.stop()
        if self.probe is not None and self.probe.process is not None:
            from ..pipeline.process_tree import stop_tree

            stop_tree(self.probe.process, grace=0)
        if self.run is not None and self.run.state == RunState.RUNNING:
            self.run.cancel()
            self.run.wait(timeout=10)
