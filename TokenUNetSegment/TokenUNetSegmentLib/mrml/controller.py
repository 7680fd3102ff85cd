"""The GUI's decisions without Qt: button states, labels and messages from the parameters and the run state.

The widget copies a :class:`ViewState` onto its widgets and does nothing else, so every rule here is testable
without the Slicer application.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..pipeline.channels import match_channels
from ..pipeline.errors import InputError
from ..pipeline.metadata import InputChannel
from ..pipeline.run_contract import RunState
from .component_channels import check_component_input, takes_components
from .parameters import MAX_INPUTS, Parameters
from .volume_nodes import scalar_components

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
    warning: str = ""  # the warning line about the last result ("" hides it)
    warning_details: str = ""  # its tooltip: every flag and warning in full
    channels_visible: bool = False  # the Input channels field: the first input holds every channel as components


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


def repeated_inputs(parameters: Parameters, model: ModelInfo | None) -> list[str]:
    """The channel names of the first volume selected for more than one of the model's inputs (empty if none)."""
    if model is None:
        return []
    nodes = parameters.inputs(len(model.input_names))
    for node in nodes:
        names = [
            name for name, other in zip(model.input_names, nodes, strict=True) if node is not None and other is node
        ]
        if len(names) > 1:
            return names
    return []


def misplaced_input(parameters: Parameters, model: ModelInfo | None) -> tuple[str, str, str] | None:
    """(volume name, its channel, the channel its name matches) for the first volume whose name matches another
    channel's patterns and not its own (``case_t1`` selected for T1c), else None."""
    if model is None or len(model.input_names) < 2:
        return None
    channels = model.channels
    for node, channel in zip(parameters.inputs(len(channels)), channels, strict=True):
        name = node.GetName() if hasattr(node, "GetName") else None
        if not name or channel.matches(name):
            continue
        others = [other.name for other in channels if other is not channel and other.matches(name)]
        if others:
            return name, channel.name, others[0]
    return None


def component_channels_problem(parameters: Parameters, model: ModelInfo) -> str:
    """What keeps the first input, a volume holding every channel of ``model`` as its components, from being
    segmented ("" when nothing does): what a run would refuse (:func:`.component_channels.check_component_input`)."""
    try:
        check_component_input(parameters, model.input_names, model.id)
    except InputError as error:
        text = str(error)
        return text[:1].upper() + text[1:] + "."
    return ""


def multi_component_input(parameters: Parameters, model: ModelInfo | None) -> tuple[str, int] | None:
    """(volume name, its components per voxel) of the first selected input volume with more than one value per
    voxel (a color, vector or multi-frame volume), else None."""
    if model is None:
        return None
    for node in parameters.inputs(len(model.input_names)):
        components = scalar_components(node)
        if components > 1:
            return node.GetName(), components
    return None


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
    notice: ResultNotice | None = None,
) -> ViewState:
    """The view for the given parameters, model and run state (``notice``: what the last result said about
    itself, shown while no run is going on).

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
    components = model is not None and takes_components(parameters.inputVolume0, len(names))
    if components:  # one volume holds every channel: the others are shown only while they hold a volume to clear
        labels[0] = _("Input volume:")
        visible = [i == 0 or node is not None for i, node in enumerate(parameters.inputs(MAX_INPUTS))]
    if model is None:
        problems.insert(0, _("Select a model."))
    elif components:
        if problem := component_channels_problem(parameters, model):
            problems.insert(0, problem)
    elif vector := multi_component_input(parameters, model):
        advice = (
            _("the model takes a scalar volume (extract one component with the Vector to Scalar Volume module).")
            if len(names) == 1
            else _("select one scalar volume per channel (split it with the Vector to Scalar Volume module).")
        )
        problems.insert(
            0,
            _("Volume '{volume}' has {count} components per voxel: {advice}").format(
                volume=vector[0], count=vector[1], advice=advice
            ),
        )
    elif missing:
        problems.insert(0, _("Select the input volume for: {names}.").format(names=", ".join(missing)))
    elif repeated := repeated_inputs(parameters, model):
        problems.insert(
            0, _("One volume is selected for {names}: each needs its own.").format(names=", ".join(repeated))
        )
    elif misplaced := misplaced_input(parameters, model):
        problems.insert(
            0,
            _("Volume '{volume}' is selected for {channel} but is named like {other}: check the inputs.").format(
                volume=misplaced[0], channel=misplaced[1], other=misplaced[2]
            ),
        )

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
        warning=notice.text if notice is not None and not running else "",
        warning_details=notice.details if notice is not None and not running else "",
        channels_visible=components,
    )


@dataclass
class ResultNotice:
    """The warning line about a result (``text``, "" when there is nothing to warn about) and its tooltip."""

    text: str = ""
    details: str = ""


FLAG_WORDS = {  # how the warning line names each label flag (the tooltip has the full messages)
    "low_probability": "unsure",
    "ambiguous": "ambiguous",
    "fragmented": "fragmented",
    "cut_off": "cut off",
    "volume_small": "small",
    "volume_large": "large",
}
SHOWN_ORGANS = 3  # organs named on the line; the rest are counted


def result_notice(assessment, warnings: list[str] | tuple = ()) -> ResultNotice:
    """What the module says about a completed run's result (an :class:`..pipeline.confidence.Assessment`, or
    None for a result without one) and the warnings of reading its input.

    The line says, in this order: that nothing was found (and the possible reasons), the flags about the scan,
    the organs found with flags (the least confident first, with the words of :data:`FLAG_WORDS`), how many
    organs were not found (when some were), and how many input warnings there were. Every flag message and
    warning is in the details.
    """
    parts, details = [], []
    if assessment is not None:
        scan = [flag for flag in assessment.flags if flag.code != "no_organ_found"]
        if not assessment.found:
            parts.append(_("No organ found."))
            if scan:
                parts.append(_("Possible reasons: {reasons}.").format(reasons="; ".join(f.message for f in scan)))
            else:
                parts.append(_("The scan may not show what this model segments."))
        else:
            parts += [_sentence(flag.message) for flag in scan]
        details += [_sentence(flag.message) for flag in scan]
        flagged = sorted(assessment.flagged, key=lambda name: assessment.labels[name].confidence)
        if flagged:
            named = [_organ_words(name, assessment.labels[name]) for name in flagged[:SHOWN_ORGANS]]
            more = len(flagged) - SHOWN_ORGANS
            text = _("Check {organs}").format(organs=", ".join(named))
            parts.append(text + (_(" and {count} more.").format(count=more) if more > 0 else "."))
        missing = [name for name, judged in assessment.labels.items() if not judged.found]
        if missing and assessment.found:
            parts.append(_("{count} of {total} not found.").format(count=len(missing), total=len(assessment.labels)))
        for name in flagged:
            judged = assessment.labels[name]
            messages = "; ".join(flag.message for flag in judged.flags)
            details.append(
                _("{name} (confidence {confidence:.2f}): {messages}").format(
                    name=name, confidence=judged.confidence, messages=messages
                )
            )
        if missing:
            details.append(_("Not found: {names}").format(names=", ".join(missing)))
    if warnings:
        parts.append(_("{count} input warning(s): {first}").format(count=len(warnings), first=warnings[0]))
        details += [_("Input: {warning}").format(warning=w) for w in warnings]
    if not parts:
        return ResultNotice()
    return ResultNotice(" ".join(parts), "\n".join(details))


def _sentence(text: str) -> str:
    text = text.strip()
    return (text[:1].upper() + text[1:]).rstrip(".") + "." if text else text


def _organ_words(name: str, judged) -> str:
    words = [FLAG_WORDS.get(flag.code, flag.code) for flag in judged.flags]
    return f"{name} ({', '.join(words)}; {judged.confidence:.2f})"


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

    The matching itself is the pipeline's (:func:`..pipeline.channels.match_channels`), given only the empty
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
