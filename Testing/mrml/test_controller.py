"""The Qt-free controller: button, labels, messages and input auto-assignment from parameters and run state."""

import numpy as np
import pytest
from helpers.packages import blank_network, tiny_config
from TokenUNetSegmentLib.mrml import controller
from TokenUNetSegmentLib.mrml.controller import (
    ModelInfo,
    ResultNotice,
    assign_inputs,
    device_note,
    format_elapsed,
    result_notice,
    token_rows,
    view_state,
)
from TokenUNetSegmentLib.mrml.parameters import Parameters
from TokenUNetSegmentLib.pipeline.confidence import Assessment, Flag, LabelAssessment
from TokenUNetSegmentLib.pipeline.package_writer import package_in_memory
from TokenUNetSegmentLib.pipeline.run_contract import RunState
from TokenUNetSegmentLib.pipeline.segmentation import segment

CT = ModelInfo("abdomen", "Abdominal organs", "CC-BY-4.0", "1 min on a CPU", ["ct"], [["*ct*"]])
BRATS = ModelInfo(
    "brats",
    "Brain tumour",
    input_names=["t1", "t1c", "t2", "flair"],
    input_patterns=[["*t1.*", "*t1n*", "*_t1"], ["*t1c*", "*t1ce*"], ["*t2.*", "*t2w*", "*_t2"], ["*flair*"]],
)
VOLUME = object()  # any non-None value stands for a selected node


def test_ready_to_segment():
    state = view_state(Parameters(inputVolume0=VOLUME), CT)
    assert (state.button_text, state.button_enabled) == ("Segment", True)
    assert state.input_labels == ["Input volume:", "", "", ""] and state.input_visible == [True, False, False, False]
    assert state.inputs_enabled and not state.progress_visible and state.problems == []


def test_missing_inputs_disable_segment_and_say_which():
    state = view_state(Parameters(inputVolume0=VOLUME, inputVolume2=VOLUME), BRATS)
    assert not state.button_enabled
    assert state.button_tooltip == "Select the input volume for: t1c, flair."
    assert state.input_labels == ["t1:", "t1c:", "t2:", "flair:"] and all(state.input_visible)
    assert view_state(Parameters(), CT).button_tooltip == "Select the input volume for: ct."


def test_one_volume_selected_for_two_inputs_disables_segment_and_says_which():
    same = dict(inputVolume0=VOLUME, inputVolume1=VOLUME, inputVolume2=object(), inputVolume3=object())
    state = view_state(Parameters(**same), BRATS)
    assert not state.button_enabled
    assert state.button_tooltip == "One volume is selected for t1, t1c: each needs its own."
    assert view_state(Parameters(**same), CT).button_enabled  # a one-input model uses only the first


class Named:
    def __init__(self, name):
        self.name = name

    def GetName(self):  # noqa: N802 (a volume node's method)
        return self.name


def test_a_volume_named_for_another_channel_disables_segment_and_says_which():
    """As the command line refuses a file in one channel's place named like another (``case_t1`` given for T1c)."""
    t1, t1ce, t2, flair = (Named(f"BraTS-001_{s}") for s in ("t1", "t1ce", "t2", "flair"))
    swapped = Parameters(inputVolume0=t1ce, inputVolume1=t1, inputVolume2=t2, inputVolume3=flair)
    state = view_state(swapped, BRATS)
    assert not state.button_enabled
    assert state.button_tooltip == "Volume 'BraTS-001_t1ce' is selected for t1 but is named like t1c: check the inputs."
    right = Parameters(inputVolume0=t1, inputVolume1=t1ce, inputVolume2=t2, inputVolume3=flair)
    assert view_state(right, BRATS).button_enabled
    renamed = Parameters(inputVolume0=Named("AX 3D"), inputVolume1=Named("post"), inputVolume2=t2, inputVolume3=flair)
    assert view_state(renamed, BRATS).button_enabled  # names that match no channel say nothing


def test_no_model_or_bad_parameters_disable_segment():
    assert view_state(Parameters(inputVolume0=VOLUME), None).button_tooltip == "Select a model."
    state = view_state(Parameters(inputVolume0=VOLUME, attentionThreshold=0.0), CT)
    assert not state.button_enabled and "threshold" in state.button_tooltip


def test_running_turns_segment_into_cancel_with_progress_and_elapsed_time():
    state = view_state(
        Parameters(inputVolume0=VOLUME), CT, RunState.RUNNING, fraction=0.4215, stage="inference", elapsed=75
    )
    assert (state.button_text, state.button_enabled) == ("Cancel", True)
    assert state.progress_visible and state.progress_percent == 42
    assert state.status == "Inference 42% - 1:15"
    assert not state.inputs_enabled and not state.heatmaps_enabled
    cancelling = view_state(Parameters(inputVolume0=VOLUME), CT, "running", cancelling=True)
    assert (cancelling.button_text, cancelling.button_enabled) == ("Cancelling...", False)
    # cancel stays possible even when the parameters became incomplete meanwhile
    assert view_state(Parameters(), CT, RunState.RUNNING).button_enabled


@pytest.mark.parametrize(
    "state, expected",
    [
        (RunState.COMPLETED, "Done in 12 s. 3 segments"),
        (RunState.CANCELLED, "Cancelled; nothing was added"),
        (RunState.FAILED, "Failed: model package not found"),
        (RunState.IDLE, ""),
    ],
)
def test_status_after_a_run(state, expected):
    message = {"completed": "3 segments", "failed": "model package not found"}.get(state.value, "")
    view = view_state(Parameters(inputVolume0=VOLUME), CT, state, elapsed=12.2, message=message, has_heatmaps=True)
    assert view.status.startswith(expected) if expected else view.status == ""
    assert view.button_text == "Segment" and view.heatmaps_enabled and not view.progress_visible


def test_cpu_note_only_when_running_on_the_cpu():
    assert "CPU" in device_note("auto", "cpu") and "No GPU" in device_note("auto", "cpu")
    assert device_note("cpu", None).startswith("Running on the CPU")
    assert device_note("auto", "cuda") == "" and device_note("cuda:1", None) == "" and device_note("mps", "mps") == ""
    assert view_state(Parameters(inputVolume0=VOLUME, device="cpu"), CT).device_note
    assert view_state(Parameters(inputVolume0=VOLUME), CT, resolved_device="cuda").device_note == ""


def test_inputs_are_auto_assigned_by_filename_pattern():
    names = ["BraTS-001_flair", "BraTS-001_t1", "BraTS-001_t1ce", "BraTS-001_t2", "Segmentation"]
    assert assign_inputs(names, BRATS) == ["BraTS-001_t1", "BraTS-001_t1ce", "BraTS-001_t2", "BraTS-001_flair"]
    # a channel the user already chose is kept, and a volume serves one channel only
    kept = assign_inputs(names, BRATS, ["BraTS-001_t2", None, None, None])
    assert kept == ["BraTS-001_t2", "BraTS-001_t1ce", None, "BraTS-001_flair"]
    assert assign_inputs(names, BRATS, kept) == kept
    # one channel: a matching name, or the only volume whatever its name
    assert assign_inputs(["a", "my CT"], CT) == ["my CT"]
    assert assign_inputs(["scan"], CT) == ["scan"]
    assert assign_inputs(["a", "b"], CT) == [None]
    assert assign_inputs([], CT) == [None]


def test_a_t1_pattern_that_also_matches_t1ce_leaves_that_volume_to_t1c():
    naive = ModelInfo("brats", input_names=["t1", "t1c"], input_patterns=[["*t1*"], ["*t1ce*", "*t1c*"]])
    assert assign_inputs(["case_t1ce", "case_t1"], naive) == ["case_t1", "case_t1ce"]
    assert assign_inputs(["case_t1ce", "case_t1"], naive, [None, None]) == ["case_t1", "case_t1ce"]


def test_model_summary_and_token_rows():
    assert CT.summary == "Abdominal organs\nLicence: CC-BY-4.0\nExpected time: 1 min on a CPU"
    assert "Downloaded on first use." in ModelInfo("x", available=False).summary
    rows = token_rows(
        [
            {"token": 1, "kind": "gather", "best_label": "liver", "soft_dice": 0.6249},
            {"token": 0, "kind": "gather", "best_label": "spleen", "soft_dice": 0.1},
            {"token": 0, "kind": "broadcast", "best_label": "", "soft_dice": ""},
        ]
    )
    assert rows == [
        "Token 00 broadcast",
        "Token 00 gather - spleen (soft Dice 0.10)",
        "Token 01 gather - liver (soft Dice 0.62)",
    ]


def test_elapsed_formatting_and_translation_hook():
    assert [format_elapsed(s) for s in (0, 9.6, 61, 3600)] == ["0 s", "10 s", "1:01", "60:00"]
    try:
        controller.set_translator(lambda text: text.upper())
        assert view_state(Parameters(inputVolume0=VOLUME), CT).button_text == "SEGMENT"
    finally:
        controller.set_translator(None)
    assert view_state(Parameters(inputVolume0=VOLUME), CT).button_text == "Segment"


def test_missing_dependencies_turn_segment_into_install():
    state = view_state(Parameters(), None, dependencies_ready=False, message="PyTorch is not installed")
    assert (state.button_text, state.button_enabled) == ("Install dependencies", True)
    assert "PyTorch" in state.button_tooltip and state.status == "PyTorch is not installed"
    # a running run is still cancellable whatever the dependency state says
    assert view_state(Parameters(), None, RunState.RUNNING, dependencies_ready=False).button_text == "Cancel"


# -- the warning line about a result -------------------------------------------------------------------------
def judged(confidence=0.9, *codes):
    return LabelAssessment(confidence, tuple(Flag(code, f"{code} message") for code in codes), {"voxels": 10})


def test_a_clean_result_shows_no_warning_line():
    assessment = Assessment({"liver": judged(0.9), "spleen": judged(0.8)}, (), "2 of 2 labels found.")
    assert result_notice(assessment) == ResultNotice() and result_notice(None) == ResultNotice()
    assert (
        view_state(Parameters(inputVolume0=VOLUME), CT, RunState.COMPLETED, notice=result_notice(assessment)).warning
        == ""
    )


def test_flagged_organs_least_confident_first_with_scan_flags_and_input_warnings():
    missing = LabelAssessment(0.0, (Flag("not_found", "not found in this scan"),), {"voxels": 0})
    assessment = Assessment(
        {
            "liver": judged(0.62, "cut_off"),
            "spleen": judged(0.9),
            "pancreas": judged(0.05, "low_probability", "ambiguous"),
            "aorta": judged(0.3, "fragmented"),
            "stomach": judged(0.4, "volume_small"),
            "gallbladder": missing,
        },
        (Flag("spacing_unlike_training", "voxels of up to 5.0 mm; the coarsest training scan had 3.0 mm"),),
    )
    notice = result_notice(assessment, ["several series in the folder: read the largest"])
    assert notice.text == (
        "Voxels of up to 5.0 mm; the coarsest training scan had 3.0 mm. "
        "Check pancreas (unsure, ambiguous; 0.05), aorta (fragmented; 0.30), stomach (small; 0.40) and 1 more. "
        "1 of 6 not found. 1 input warning(s): several series in the folder: read the largest"
    )
    details = notice.details.splitlines()
    assert details[0].startswith("Voxels of up to 5.0 mm")
    assert "liver (confidence 0.62): cut_off message" in details and "Not found: gallbladder" in details
    assert details[-1] == "Input: several series in the folder: read the largest"
    state = view_state(Parameters(inputVolume0=VOLUME), CT, RunState.COMPLETED, notice=notice)
    assert (state.warning, state.warning_details) == (notice.text, notice.details)
    running = view_state(Parameters(inputVolume0=VOLUME), CT, RunState.RUNNING, notice=notice)
    assert running.warning == ""  # hidden while the next run goes on


def test_reader_warnings_alone_show_the_line():
    notice = result_notice(None, ["a", "b"])
    assert notice.text == "2 input warning(s): a" and notice.details == "Input: a\nInput: b"


def test_an_empty_result_says_nothing_was_found_and_why():
    """The warning line of a real run that found nothing (a network that puts every voxel in the background)."""
    config = tiny_config("finds-nothing", roi=(16, 16, 16), spacing=(3.0, 3.0, 3.0))
    package = package_in_memory(blank_network(config), config)
    image = np.full((20, 20, 20), -1000.0, np.float32)
    image[4:16, 4:16, 4:16] = 40.0
    result = segment([(image, np.diag([3.0, 3.0, 3.0, 1.0]))], package, device="cpu", with_token_maps=False)
    notice = result_notice(Assessment.from_report(result.report()), result.warnings)
    assert notice.text.startswith("No organ found. Possible reasons: nothing this model segments was found")
    assert "Not found: organ1, organ2" in notice.details
    assessment = Assessment({"organ": LabelAssessment(0.0, (Flag("not_found", "not found"),), {})}, ())
    assert result_notice(assessment).text == "No organ found. The scan may not show what this model segments."
