"""The module panel: Qt glue between the .ui widgets, the parameter node, the controller and the runs.

Decisions (button states, labels, messages) come from :mod:`TokenUNetSegmentLib.mrml.controller`; node work
from the MRML adapter. This file only moves values between them and the widgets.
"""

from __future__ import annotations

import qt
import slicer

from ..mrml import controller
from ..mrml.attributes import BEST_LABEL_ATTRIBUTE, KIND_ATTRIBUTE, SOFT_DICE_ATTRIBUTE, TOKEN_ATTRIBUTE
from ..mrml.heatmap_nodes import show_in_slice_views, update_attention_segments
from ..mrml.parameters import Parameters
from ..mrml.scene_run import SceneRunFinished
from ..mrml.segmentation_nodes import set_closed_surface
from ..pipeline.run_contract import RunState
from ..pipeline.subprocess_run import python_executable

POLL_MS = 100
LIST_ROLE = qt.Qt.UserRole


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
        ui.show3DCheckBox.connect("toggled(bool)", self.on_show3d_toggled)
        ui.openCacheButton.connect("clicked(bool)", self.on_open_cache)
        ui.importPackageButton.connect("clicked(bool)", self.on_import_package)
        ui.deleteModelButton.connect("clicked(bool)", self.on_delete_model)
        self.attention_node = None
        self.segmentation_node = None
        self.heatmap_nodes = []
        self.reference = None
        self.dependencies_ready = False
        self.devices = {}

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
        from .dependencies import missing_requirements, read_requirements, torch_available

        self.dependencies_ready = torch_available() and not missing_requirements(read_requirements())
        self.models = []
        if self.dependencies_ready:
            try:
                self.models = self.logic.modelInfos()
            except Exception as error:  # noqa: BLE001 - shown, the panel stays usable
                self.message = str(error)
        else:
            self.message = "TokenUNet needs PyTorch, MONAI, einops and safetensors."
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
            node.SetParameter("model", info.id)
            self.auto_assign_inputs(info)
        self.ui.modelDescriptionLabel.text = info.summary if info is not None else ""
        self.update_view()

    def auto_assign_inputs(self, info: controller.ModelInfo) -> None:
        scene = slicer.mrmlScene
        volumes = [
            scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
            for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))
        ]
        volumes = [v for v in volumes if not v.GetAttribute(TOKEN_ATTRIBUTE) and not v.GetHideFromEditors()]
        parameters = self.parameters()
        current = [n.GetName() if n is not None else None for n in parameters.inputs(len(info.input_names))]
        chosen = controller.assign_inputs([v.GetName() for v in volumes], info, current)
        node = self.get_parameter_node()
        for channel, name in enumerate(chosen):
            if name and current[channel] is None:
                match = next(v for v in volumes if v.GetName() == name)
                node.SetNodeReferenceID(f"inputVolume{channel}", match.GetID())

    def on_open_cache(self, *_args) -> None:
        folder = self.logic.modelStore().cache_dir
        folder.mkdir(parents=True, exist_ok=True)
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(folder)))

    def on_import_package(self, *_args) -> None:
        path = qt.QFileDialog.getOpenFileName(None, "Import model package", "", "Model packages (*.zip);;All files (*)")
        if not path:
            return
        with slicer.util.tryWithErrorDisplay("Failed to import the model package.", waitCursor=True):
            self.logic.modelStore().import_package(path)
            self.refresh_models()

    def on_delete_model(self, *_args) -> None:
        info = self.model_info()
        if info is None or not slicer.util.confirmYesNoDisplay(f"Delete the cached model '{info.id}'?"):
            return
        with slicer.util.tryWithErrorDisplay("Failed to delete the model.", waitCursor=True):
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
            with slicer.util.tryWithErrorDisplay("Failed to install the dependencies.", waitCursor=True):
                if self.logic.ensureDependencies():
                    self.message = ""
                    self.refresh_models()
            self.update_view()
            return
        with slicer.util.tryWithErrorDisplay("Failed to start the segmentation.", waitCursor=True):
            self.cancelling, self.message = False, ""
            self.run = self.logic.startRun(self.parameters(), python=python_executable())
            self.run.add_observer(self.on_run_event)
            self.run.start()
            self.timer.start()
        self.update_view()

    def poll(self) -> None:
        if self.run is None:
            self.timer.stop()
            return
        self.run.poll()
        self.update_view()
        if self.run.state != RunState.RUNNING:
            self.timer.stop()

    def on_run_event(self, event) -> None:
        if not isinstance(event, SceneRunFinished):
            return
        self.last_state = event.state
        error = event.error
        if event.state == RunState.COMPLETED and event.nodes is not None:
            nodes = event.nodes
            count = nodes.segmentation.GetSegmentation().GetNumberOfSegments()
            self.message = f"{count} segments in '{nodes.segmentation.GetName()}'."
            self.show_run(nodes)
        elif event.state == RunState.FAILED:
            self.message = str(error) if error else ""
            if (
                error is not None
                and getattr(error, "restart_required", False)
                and slicer.util.confirmYesNoDisplay(f"{error}\n\nRestart Slicer now?")
            ):
                slicer.util.restart()

    def show_run(self, nodes) -> None:
        """Show the new segmentation over the input and list the run's tokens."""
        self.reference = self.run.reference if self.run is not None else None
        self.heatmap_nodes, self.attention_node = list(nodes.heatmap_nodes), nodes.attention
        self.segmentation_node = nodes.segmentation
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

    def on_show3d_toggled(self, checked: bool) -> None:
        """Build or drop the surfaces of the last run's segmentation when Show 3D changes."""
        segmentation = self.segmentation_node
        if segmentation is not None and segmentation.GetScene() is not None:
            with slicer.util.tryWithErrorDisplay("Failed to update the 3D view.", waitCursor=True):
                set_closed_surface(segmentation, bool(checked))

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
        if self.attention_node is not None and self.attention_node.GetScene() is not None and value > 0:
            with slicer.util.tryWithErrorDisplay("Failed to update the token attention segments.", waitCursor=True):
                update_attention_segments(self.attention_node, value)

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
        ui.deviceNoteLabel.text = view.device_note
        ui.deviceNoteLabel.visible = bool(view.device_note)
        ui.progressBar.visible = view.progress_visible
        ui.progressBar.value = view.progress_percent
        ui.statusLabel.text = view.status
        ui.tokenList.enabled = view.heatmaps_enabled
        ui.attentionThresholdSlider.enabled = view.heatmaps_enabled and self.attention_node is not None

    def resolved_device(self, device: str):
        if not self.dependencies_ready:
            return None
        if device not in self.devices:
            self.devices[device] = self.logic.resolvedDevice(device)
        return self.devices[device]

    def cleanup(self) -> None:
        self.timer.stop()
        if self.run is not None and self.run.state == RunState.RUNNING:
            self.run.cancel()
            self.run.wait(timeout=10)
