"""A run on a scene: parameters -> run request; a finished run's result -> nodes (segmentation, heatmaps, ...).

Nothing is added to the scene before a run has completed, so a cancelled or failed run leaves no new nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..pipeline.errors import InputError
from .heatmaps import (
    add_attention_segmentation,
    add_heatmaps,
    add_map_volume,
    choose_grid,
    heat_color_node,
    run_folder,
)
from .parameters import Parameters
from .runner import InProcessRun, RunRequest, RunState, SubprocessRun
from .segmentation import hierarchy_item, subject_hierarchy, write_labels
from .volumes import volume_to_array

PROBABILITY_ATTRIBUTE = "TokenUNet.Probability"


@dataclass
class RunNodes:
    """What a completed run added to (or updated in) the scene."""

    segmentation: object
    folder: int = 0
    heatmaps: list = field(default_factory=list)
    attention: object = None
    probabilities: list = field(default_factory=list)


def model_input_names(model) -> list[str]:
    """The input channel names a model package declares (reads its metadata only)."""
    from ..pipeline.catalog import ModelStore
    from ..pipeline.package import ModelPackage, read_metadata

    if isinstance(model, ModelPackage):
        return list(model.input_names)
    path = ModelStore().resolve(model or None)
    return [entry["name"] for entry in read_metadata(path)["tokenunet"]["inputs"]]


def request_from_parameters(parameters: Parameters, channels: int, model=None) -> RunRequest:
    """A run request with the arrays of the first ``channels`` input volumes (world geometry).

    Raises:
        InputError: an input volume is missing or unusable.
    """
    nodes = parameters.inputs(channels)
    missing = [str(i + 1) for i, node in enumerate(nodes) if node is None]
    if missing:
        raise InputError(f"input volume {', '.join(missing)} of {channels} is not selected")
    return RunRequest(
        inputs=[volume_to_array(node) for node in nodes],
        model=model if model is not None else (parameters.model or None),
        device=parameters.device,
        heatmaps=parameters.heatmaps,
        probabilities=parameters.probabilities,
        largest_component=parameters.largestComponent,
    )


def make_run(request: RunRequest, mode: str = "subprocess", python: str | None = None, temp_dir=None):
    """An unstarted run of the requested kind (``subprocess`` or ``inprocess``)."""
    if mode == "inprocess":
        return InProcessRun(request)
    if mode == "subprocess":
        return SubprocessRun(request, python=python, temp_dir=temp_dir)
    raise ValueError(f"unknown run mode '{mode}'")


def apply_result(scene, result, parameters: Parameters, reference, output=None) -> RunNodes:
    """Add a completed run's nodes to the scene (beside ``reference``, the first input volume).

    ``output`` is the segmentation node to write into (module-made segments replaced, others kept) or None.
    Nodes removed from the scene while the run was going on are treated as absent (the labels are in world
    coordinates, so they still land at the right place).
    """
    if output is not None and output.GetScene() is not scene:
        output = None
    if reference is not None and reference.GetScene() is not scene:
        reference = None
    segmentation = write_labels(
        scene,
        result.labels,
        result.affine,
        result.label_table,
        node=output,
        reference=reference,
        model_id=result.model_id or "TokenUNet",
        show3d=parameters.show3D,
    )
    nodes = RunNodes(segmentation)
    want_maps = parameters.heatmaps and result.heatmaps is not None
    if not (want_maps or result.probabilities):
        return nodes
    hierarchy = subject_hierarchy(scene)
    count = sum(1 for _ in _run_folders(scene))
    name = f"TokenUNet {result.model_id} {reference.GetName() if reference is not None else ''} run {count + 1}"
    nodes.folder = run_folder(scene, reference, " ".join(name.split()), f"{count + 1}")
    if want_maps:
        kinds = [k for k in parameters.kinds if k in result.heatmaps.kinds]
        grid = choose_grid(parameters.heatmapGrid, len(kinds), result.heatmaps.num_tokens, result.labels.size)
        nodes.heatmaps = add_heatmaps(
            scene, result.heatmaps, result.token_matches, result.affine, kinds, reference, nodes.folder, grid
        )
        if parameters.attentionSegments and nodes.heatmaps:
            first_kind = [n for n in nodes.heatmaps if n.GetAttribute("TokenUNet.Kind") == kinds[0]]
            nodes.attention = add_attention_segmentation(
                scene,
                first_kind,
                parameters.attentionThreshold,
                reference,
                nodes.folder,
                f"Token attention ({kinds[0]})",
            )
    for label in result.label_table if result.probabilities else []:
        nodes.probabilities.append(
            add_map_volume(
                scene,
                result.probabilities[label.name],
                result.affine,
                f"{label.name} probability",
                reference,
                nodes.folder,
                {PROBABILITY_ATTRIBUTE: label.name},
                heat_color_node(scene),
            )
        )
    hierarchy.SetItemExpanded(nodes.folder, False)
    return nodes


def _run_folders(scene):
    hierarchy = subject_hierarchy(scene)
    children = _id_list()
    hierarchy.GetItemChildren(hierarchy.GetSceneItemID(), children, True)
    for index in range(children.GetNumberOfIds()):
        item = children.GetId(index)
        if hierarchy.GetItemAttribute(item, "TokenUNet.Run"):
            yield item


def _id_list():
    import vtk

    return vtk.vtkIdList()


class SceneRun:
    """A run bound to a scene: when it completes, :meth:`poll` (or :meth:`wait`) adds its nodes.

    Args:
        scene: the MRML scene.
        parameters: the module parameters (inputs, output, display options).
        mode: ``subprocess`` (default in the GUI) or ``inprocess``.
        model: a model id, package path or loaded ModelPackage (default: ``parameters.model`` or the catalog's).
        python: the interpreter of a subprocess run; temp_dir: where its exchange folder goes.
    """

    def __init__(
        self,
        scene,
        parameters: Parameters,
        mode: str | None = None,
        model=None,
        python: str | None = None,
        channels: int | None = None,
        temp_dir=None,
    ):
        self.scene = scene
        self.parameters = parameters
        chosen = model if model is not None else (parameters.model or None)
        channels = channels or len(model_input_names(chosen))
        self.request = request_from_parameters(parameters, channels, chosen)
        self.reference = parameters.inputs(channels)[0]
        self.run = make_run(self.request, mode or parameters.runMode, python, temp_dir)
        self.nodes: RunNodes | None = None
        self.error = None
        self._observers = []
        self.run.add_observer(self._relay)

    def add_observer(self, callback) -> None:
        self._observers.append(callback)

    def _relay(self, event: dict) -> None:
        if event["type"] == "state" and event["state"] == RunState.COMPLETED:
            try:
                self.nodes = apply_result(
                    self.scene, self.run.result, self.parameters, self.reference, self.parameters.outputSegmentation
                )
            except Exception as error:  # noqa: BLE001 - reported through the state event
                from ..pipeline.errors import TokenUNetError

                self.error = (
                    error
                    if isinstance(error, TokenUNetError)
                    else TokenUNetError(f"cannot add the results to the scene: {type(error).__name__}: {error}")
                )
                event = {**event, "state": RunState.FAILED, "error": self.error}
            self.run.result = None  # release the arrays
        elif event["type"] == "state":
            self.error = event["error"]
        for callback in list(self._observers):
            callback({**event, "nodes": self.nodes} if event["type"] == "state" else event)

    @property
    def state(self) -> RunState:
        if self.run.state == RunState.COMPLETED and self.error is not None:
            return RunState.FAILED
        return self.run.state

    def start(self) -> SceneRun:
        self.run.start()
        return self

    def run_now(self) -> RunState:
        """Run in-process in the calling thread (blocking) and add the nodes."""
        if not isinstance(self.run, InProcessRun):
            self.run.start()
            self.run.wait()
        else:
            self.run.run()
        return self.state

    def poll(self) -> RunState:
        self.run.poll()
        return self.state

    def wait(self, timeout: float | None = None) -> RunState:
        self.run.wait(timeout)
        return self.state

    def cancel(self) -> None:
        self.run.cancel()


__all__ = [
    "RunNodes",
    "SceneRun",
    "apply_result",
    "hierarchy_item",
    "make_run",
    "model_input_names",
    "request_from_parameters",
]
