"""A run bound to a scene: the module parameters -> a pipeline run request; when the run completes, its result
-> nodes (:func:`.result_nodes.apply_result`).

``Parameters.model`` is the only source of the model: the run resolves it (and downloads it if needed) in its
worker thread or child process. Building the request reads at most the model's metadata, to know how many input
volumes to send (a model whose channels cannot be known before its download gets every selected volume, and the
run checks the count). Nothing is added to the scene before a run has completed, so a cancelled or failed run
leaves no new nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..pipeline.errors import InputError, ModelPackageError, TokenUNetError
from ..pipeline.run_contract import FinishedEvent, RunRequest, RunState
from ..pipeline.runs import InProcessRun, make_run
from ..pipeline.volumes import Volume, check_volume
from .component_channels import check_component_input, parse_names, takes_components
from .parameters import MAX_INPUTS, Parameters
from .result_nodes import RunNodes, apply_result
from .segmentation_nodes import check_output
from .volume_nodes import components_refusal, scalar_components, volume_to_array


@dataclass(frozen=True)
class SceneRunFinished(FinishedEvent):
    """A scene run ended; ``nodes`` holds what a completed run added to the scene."""

    nodes: RunNodes | None = None


def model_inputs(parameters: Parameters, store=None) -> list[str] | None:
    """The input channel names of the model of ``parameters``, from its metadata (or the catalog for a model not
    downloaded yet); None when they cannot be known here."""
    from ..pipeline.catalog import ModelStore

    try:
        return (store or ModelStore()).input_names(parameters.model or None) or None
    except ModelPackageError:
        return None  # the run reports the model's problem


def channel_count(parameters: Parameters, store=None, names: list[str] | None = None) -> int:
    """How many input channels the model of ``parameters`` takes (``names``: its :func:`model_inputs`, when known
    already); when that cannot be known here, the named components of a vector volume, else the selected volumes up
    to the first empty selector."""
    names = names or model_inputs(parameters, store)
    if names:
        return len(names)
    if scalar_components(parameters.inputVolume0) > 1 and parameters.inputChannels.strip():
        return len(parse_names(parameters.inputChannels))
    nodes = parameters.inputs(MAX_INPUTS)
    return next((index for index, node in enumerate(nodes) if node is None), MAX_INPUTS) or 1


def check_volume_count(count: int, parameters: Parameters, store=None) -> None:
    """Refuse a list of ``count`` input volumes (``logic.process``) longer than the model of ``parameters`` takes:
    the extra ones would be left out without a word (one missing is reported when the run is asked for)."""
    takes = channel_count(parameters, store) if count <= MAX_INPUTS else MAX_INPUTS
    if count > takes:
        raise InputError(
            f"{count} input volumes given; the model takes {takes}",
            "pass one volume per model input channel, in the model's channel order",
        )


def request_from_parameters(
    parameters: Parameters, channels: int, scene=None, inputs: list[str] | None = None
) -> RunRequest:
    """A run request with the arrays of the first ``channels`` input volumes (world geometry), or of the first
    alone when it holds every channel as its components (named in ``parameters.inputChannels``, checked against the
    model's channel names ``inputs`` when they are known: :mod:`.component_channels`).

    Raises:
        InputError: an input volume is missing, no longer in ``scene``, selected twice, or unusable (what the
            pipeline would refuse in it included); a vector volume's components unnamed or unfit to be channels.
    """
    first = parameters.inputVolume0
    named: tuple[str, ...] = ()
    if takes_components(first, channels):
        named = check_component_input(parameters, inputs, parameters.model or "default")
    nodes = [first] if named else parameters.inputs(channels)
    missing = [str(i + 1) for i, node in enumerate(nodes) if node is None]
    if missing:
        raise InputError(f"input volume {', '.join(missing)} of {channels} is not selected")
    for index, node in enumerate(nodes):
        if scene is not None and not scene.IsNodePresent(node):
            raise InputError(
                f"input volume {index + 1} ('{node.GetName()}') is no longer in the scene", "select another volume"
            )
        first = nodes.index(node)
        if first != index:  # a subprocess run would get two copies and run; in-process it says 'the same array'
            raise InputError(
                f"volume '{node.GetName()}' is selected as input {first + 1} and input {index + 1}",
                "each input needs its own volume (e.g. one MRI sequence each)",
            )
    for node in nodes:  # components are channels only when named (above): their order is unknown
        components = scalar_components(node)
        if components > 1 and not named:
            raise components_refusal(node.GetName(), components, channels)
    arrays = [volume_to_array(node, len(named) or 1) for node in nodes]
    for node, (array, affine) in zip(nodes, arrays, strict=True):  # now, and named by the node (not 'ch0' later)
        for index, values in enumerate(np.moveaxis(array, 3, 0) if named else [array]):
            part = f", component {index}" if named else ""
            check_volume(Volume(values, affine, f"volume '{node.GetName()}'{part}"))
    return RunRequest(
        inputs=arrays,
        model=parameters.model or None,
        device=parameters.device,
        with_token_maps=parameters.heatmaps,
        probabilities=parameters.probabilities,
        largest_component=parameters.largestComponent,
        test_time_augmentation=parameters.testTimeAugmentation,
        names=tuple(node.GetName() for node in nodes),
        channels=named,
    )


class SceneRun:
    """A run bound to a scene: when it completes, :meth:`poll` (or :meth:`wait`) adds its nodes.

    Observers get the run's typed events; the last one is a :class:`SceneRunFinished` with the nodes.

    Args:
        scene: the MRML scene.
        parameters: the module parameters (model, inputs, output, display options).
        mode: ``subprocess`` (default in the GUI) or ``inprocess`` (default: ``parameters.runMode``).
        python: the interpreter of a subprocess run; temp_dir: where its exchange folder goes.
        store: the model store that tells the model's input channels (default: catalog + per-user cache).
    """

    def __init__(
        self,
        scene,
        parameters: Parameters,
        mode: str | None = None,
        python: str | None = None,
        temp_dir=None,
        store=None,
    ):
        self.scene = scene
        self.parameters = parameters
        if parameters.outputSegmentation is not None:
            check_output(parameters.outputSegmentation)  # before minutes of inference, not after
        inputs = model_inputs(parameters, store)
        channels = channel_count(parameters, store, inputs)
        self.request = request_from_parameters(parameters, channels, scene, inputs)
        self.reference = parameters.inputs(channels)[0]
        self.run = make_run(self.request, mode or parameters.runMode, python, temp_dir)
        self.nodes: RunNodes | None = None
        self.error = None
        self.discarded = False  # the scene was closed: the result is never added, the run ends as cancelled
        self._close_tag = None  # the scene observer of _watch_scene_close while the run goes on
        self._observers = []
        self.run.add_observer(self._relay)

    def add_observer(self, callback) -> None:
        self._observers.append(callback)

    def _watch_scene_close(self) -> None:
        """A scene closed while the run goes on cancels it and discards its result, however the run was started
        (the panel's button or ``logic.process(waitForCompletion=False)`` from the console)."""
        if self._close_tag is None and hasattr(self.scene, "AddObserver"):
            self._close_tag = self.scene.AddObserver(
                self.scene.StartCloseEvent, lambda caller, event: self.cancel(discard=True)
            )

    def _stop_watching(self) -> None:
        if self._close_tag is not None:
            self.scene.RemoveObserver(self._close_tag)
            self._close_tag = None

    def _relay(self, event) -> None:
        if isinstance(event, FinishedEvent):
            self._stop_watching()
            state, self.error = event.state, event.error
            if state == RunState.COMPLETED and self.discarded:
                state, self.run.result = RunState.CANCELLED, None
            elif state == RunState.COMPLETED:
                self._add_nodes()
                state = RunState.FAILED if self.error is not None else state
            event = SceneRunFinished(state, self.error, self.nodes)
        for callback in list(self._observers):
            callback(event)

    def _add_nodes(self) -> None:
        try:
            self.nodes = apply_result(
                self.scene, self.run.result, self.parameters, self.reference, self.parameters.outputSegmentation
            )
        except Exception as error:  # noqa: BLE001 - reported through the finished event
            self.error = (
                error
                if isinstance(error, TokenUNetError)
                else TokenUNetError(f"cannot add the results to the scene: {type(error).__name__}: {error}")
            )
        self.run.result = None  # release the arrays

    @property
    def state(self) -> RunState:
        if self.run.state == RunState.COMPLETED and self.discarded:
            return RunState.CANCELLED
        if self.run.state == RunState.COMPLETED and self.error is not None:
            return RunState.FAILED
        return self.run.state

    def start(self) -> SceneRun:
        self._watch_scene_close()
        self.run.start()
        return self

    def run_now(self) -> RunState:
        """Run in the calling thread (blocking) and add the nodes."""
        if isinstance(self.run, InProcessRun):
            self.run.run()
        else:
            self.run.start()
            self.run.wait()
        return self.state

    def poll(self) -> RunState:
        self.run.poll()
        return self.state

    def wait(self, timeout: float | None = None) -> RunState:
        self.run.wait(timeout)
        return self.state

    def cancel(self, discard: bool = False) -> None:
        """Stop the run; with ``discard`` its result is never added to the scene, even if the run has already
        completed and only waits for its next poll (the scene was closed: its inputs are gone)."""
        self.discarded = self.discarded or discard
        self.run.cancel()
