"""The GUI's decisions without Qt: button states, labels and messages from the parameters and the run state.

The widget copies a :class:`ViewState` onto its widgets and does nothing else, so every rule here is testable
without the Slicer application.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..pipeline.metadata import InputChannel, match_channels
from ..pipeline.run_contract import RunState
from .parameters import MAX_INPUTS, Parameters

_translate = str


def set_translator(translate) -> None:
    """Translate the controller's strings with ``translate`` (the widget passes ``slicer.i18n.tr``)."""
    global _translate
    _translate = translate or str


def _(text: str) -> str:
    return _translate(text)


@dataclass
class ModelInfo:
    """What the GUI shows about a model: id, description, licence, expected time and input channels."""

    id: str
    description: str = ""
    license: str = ""
    expected_time: str = ""
    input_names: list[str] = field(default_factory=lambda: ["image"])
    input_patterns: list[list[str]] = field(default_factory=list)
    available: bool = True  # False: downloadable, fetched on first use

    @property
    def channels(self) -> list[InputChannel]:
        patterns = self.input_patterns + [[]] * (len(self.input_names) - len(self.input_patterns))
        return [InputChannel(name, patterns=tuple(p)) for name, p in zip(self.input_names, patterns, strict=False)]

    @property
    def summary(self) -> str:
        parts = [self.description or self.id]
        if self.license:
            parts.append(_("Licence: {licence}").format(licence=self.license))
        if self.expected_time:
            parts.append(_("Expected time: {time}").format(time=self.expected_time))
        if not self.available:
            parts.append(_("Downloaded on first use."))
        return "\n".join(parts)


@dataclass
class ViewState:
    """Everything the widget shows that depends on state."""

    button_text: str
    button_enabled: bool
    button_tooltip: str
    input_labels: list[str]
    input_visible: list[bool]
    inputs_enabled: bool
    device_note: str
    progress_visible: bool
    progress_percent: int
    status: str
    heatmaps_enabled: bool
    problems: list[str]


def format_elapsed(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}:{seconds:02d}" if minutes else f"{seconds} s"


def device_note(requested: str, resolved: str | None) -> str:
    """A visible note when the run will use the CPU (``resolved`` is what ``auto`` became, if known)."""
    kind = (resolved or requested or "auto").split(":")[0]
    if kind == "cpu":
        if requested == "cpu":
            return _("Running on the CPU: this takes minutes rather than seconds.")
        return _("No GPU found: running on the CPU, which takes minutes rather than seconds.")
    return ""


def missing_inputs(parameters: Parameters, model: ModelInfo | None) -> list[str]:
    if model is None:
        return []
    nodes = parameters.inputs(len(model.input_names))
    return [name for name, node in zip(model.input_names, nodes, strict=True) if node is None]


def view_state(
    parameters: Parameters,
    model: ModelInfo | None,
    run_state: RunState | str = RunState.IDLE,
    fraction: float = 0.0,
    stage: str = "",
    elapsed: float = 0.0,
    resolved_device: str | None = None,
    cancelling: bool = False,
    message: str = "",
    has_heatmaps: bool = False,
    dependencies_ready: bool = True,
) -> ViewState:
    """The view for the given parameters, model and run state.

    Without its Python dependencies (torch, MONAI, ...) the module cannot list models: the button then offers
    to install them.
    """
    run_state = RunState(run_state)
    running = run_state == RunState.RUNNING
    names = model.input_names if model is not None else ["image"]
    labels = [_("Input volume:")] if len(names) == 1 else [f"{name}:" for name in names]
    labels += [""] * (MAX_INPUTS - len(labels))
    visible = [i < len(names) for i in range(MAX_INPUTS)]
    problems = list(parameters.validate())
    missing = missing_inputs(parameters, model)
    if model is None:
        problems.insert(0, _("Select a model."))
    elif missing:
        problems.insert(0, _("Select the input volume for: {names}.").format(names=", ".join(missing)))

    if running:
        text = _("Cancelling...") if cancelling else _("Cancel")
        enabled, tooltip = not cancelling, _("Stop the running segmentation.")
        status = _("{stage} {percent}% - {elapsed}").format(
            stage=(stage or _("starting")).capitalize(), percent=int(100 * fraction), elapsed=format_elapsed(elapsed)
        )
    elif not dependencies_ready:
        text, enabled = _("Install dependencies"), True
        tooltip = _("Install PyTorch (through the PyTorch extension) and MONAI, einops and safetensors.")
        status = message
    else:
        text = _("Segment")
        enabled = not problems
        tooltip = problems[0] if problems else _("Segment the input volume(s) with the selected model.")
        status = _finished_status(run_state, elapsed, message)
    return ViewState(
        button_text=text,
        button_enabled=enabled,
        button_tooltip=tooltip,
        input_labels=labels,
        input_visible=visible,
        inputs_enabled=not running,
        device_note=device_note(parameters.device, resolved_device),
        progress_visible=running,
        progress_percent=int(round(100 * fraction)) if running else 0,
        status=status,
        heatmaps_enabled=has_heatmaps and not running,
        problems=problems,
    )


def _finished_status(state: RunState, elapsed: float, message: str) -> str:
    if state == RunState.COMPLETED:
        return _("Done in {elapsed}.").format(elapsed=format_elapsed(elapsed)) + (f" {message}" if message else "")
    if state == RunState.CANCELLED:
        return _("Cancelled; nothing was added to the scene.")
    if state == RunState.FAILED:
        return _("Failed: {message}").format(message=message or _("see the log"))
    return ""


def model_infos(store) -> list[ModelInfo]:
    """Every model ``store`` knows, with what the GUI shows; reads metadata only (no torch, no MONAI).

    A package whose metadata is invalid is left out with a warning in the log.
    """
    from ..pipeline.errors import ModelPackageError
    from ..pipeline.package_source import read_metadata

    infos = []
    for entry in store.entries():
        info = ModelInfo(
            entry.id, entry.description, entry.license or "", entry.expected_time or "", available=entry.available
        )
        if entry.input_names:
            info.input_names = list(entry.input_names)
        if entry.available:
            try:
                inputs = read_metadata(entry.path).config.inputs
            except ModelPackageError as error:
                logging.getLogger(__name__).warning(f"TokenUNet: skipping model '{entry.id}': {error}")
                continue
            info.input_names = [channel.name for channel in inputs]
            info.input_patterns = [list(channel.patterns) for channel in inputs]
        infos.append(info)
    return infos


def assign_inputs(volume_names: list[str], model: ModelInfo, current: list[str | None] | None = None) -> list:
    """Volume name per input channel: ``current`` choices kept, empty channels filled by filename pattern.

    The matching itself is the pipeline's (:func:`..pipeline.metadata.match_channels`), given only the empty
    channels and the volumes no channel uses yet.
    """
    chosen: list[str | None] = list(current or [])[: len(model.input_names)]
    chosen += [None] * (len(model.input_names) - len(chosen))
    empty = [i for i, name in enumerate(chosen) if not name]
    free = [name for name in volume_names if name not in chosen]
    if not empty or not free:
        return chosen
    channels = model.channels
    matched = match_channels(free, [channels[i] for i in empty])
    for i in empty:
        chosen[i] = matched.get(model.input_names[i])
    return chosen


def token_rows(entries: list[dict]) -> list[str]:
    """Rows of the token list: ``Token 03 gather - liver (soft Dice 0.62)``, best match first per token."""
    rows = []
    for entry in sorted(entries, key=lambda e: (e.get("kind", ""), int(e["token"]))):
        text = f"Token {int(entry['token']):02d} {entry.get('kind', '')}".rstrip()
        if entry.get("best_label"):
            text += f" - {entry['best_label']}"
        if entry.get("soft_dice") not in (None, ""):
            text += f" (soft Dice {float(entry['soft_dice']):.2f})"
        rows.append(text)
    return rows
