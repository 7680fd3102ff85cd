"""The run contract (pipeline layer, no Slicer): requests, typed events on the wire, exit codes, error classes."""

from pathlib import Path

import pytest
from TokenUNetSegmentLib.pipeline import errors
from TokenUNetSegmentLib.pipeline.cli import parse_arguments
from TokenUNetSegmentLib.pipeline.run_contract import (
    ErrorEvent,
    ExitCode,
    LogEvent,
    ProgressEvent,
    ResultEvent,
    RunRequest,
    decode_event,
    encode_event,
    split_event,
)


@pytest.mark.parametrize(
    "event",
    [
        ProgressEvent("inference", 0.5, 12.25),
        LogEvent("channel 'ct' is constant", "warning"),
        ResultEvent("/out", {"segmentation": "segmentation.seg.nrrd", "report": "report.json"}, ("a warning",), 3.5),
        ErrorEvent("model package not found: x.zip", "user", None, "ModelPackageError"),
        ErrorEvent("cancelled", "cancelled", error_type="CancelledError"),
    ],
)
def test_events_survive_the_wire_unchanged(event):
    line = encode_event(event)
    assert "\n" not in line and decode_event(line) == event


def test_lines_that_are_not_events_are_log_output():
    for line in ["error: looks like an error", "{not json", '{"event": "unknown"}', '{"stage": "x"}', "", "  "]:
        assert decode_event(line) is None


def test_a_partial_line_written_just_before_an_event_line_is_split_from_it():
    """A C library's line start (or unbuffered stdout's text before its newline) then an event, on one pipe."""
    event = ProgressEvent("read", 0.25, 1.0)
    assert split_event(encode_event(event)) == ("", event)
    assert split_event("Marker handler function " + encode_event(event)) == ("Marker handler function ", event)
    assert split_event('plain {"event": not json') == ('plain {"event": not json', None)
    assert split_event("plain text") == ("plain text", None)


def test_error_events_carry_the_typed_error_and_its_exit_code():
    cases = [
        (errors.InputError("bad input", "fix it"), "user", ExitCode.USER_ERROR, errors.InputError),
        (errors.OutOfMemoryError("too big"), "user", 2, errors.OutOfMemoryError),
        (errors.TokenUNetError("restart", restart_required=True), "user", 2, errors.TokenUNetError),
        (errors.CancelledError(), "cancelled", ExitCode.CANCELLED, errors.CancelledError),
        (KeyboardInterrupt(), "cancelled", 130, errors.CancelledError),
        (ValueError("bug"), "internal", ExitCode.INTERNAL_ERROR, errors.TokenUNetError),
    ]
    for error, category, code, cls in cases:
        event = decode_event(encode_event(ErrorEvent.from_error(error)))
        assert (event.category, event.exit_code) == (category, code)
        back = event.to_error()
        assert type(back) is cls
        if isinstance(error, errors.TokenUNetError) and not isinstance(error, errors.CancelledError):
            assert (back.message, back.hint, back.restart_required) == (
                error.message,
                error.hint,
                error.restart_required,
            )
    assert ErrorEvent.from_error(ValueError("bug")).line().endswith("(run with --debug for the traceback)")
    assert ErrorEvent.from_error(errors.InputError("bad", "fix")).line() == "error: bad (fix)"
    assert ErrorEvent("x", "user", error_type="NotAnError").to_error().__class__ is errors.TokenUNetError
    assert [int(code) for code in ExitCode] == [0, 1, 2, 130]


def test_a_request_is_the_same_run_in_process_and_on_the_command_line():
    request = RunRequest(inputs=[], model=Path("pkg.zip"), device="cpu", with_token_maps=False, probabilities=True)
    assert request.model == "pkg.zip" and RunRequest(inputs=[], model="").model is None
    options = request.segment_options()
    assert options == {
        "device": "cpu",
        "with_token_maps": False,
        "probabilities": True,
        "largest_component": None,
        "test_time_augmentation": False,
    }
    arguments = request.command_arguments([Path("in/channel0.nrrd")], Path("out"))
    args = parse_arguments(arguments)  # what the child parses is what segment() gets in-process
    assert (args.inputs, args.out, args.model, args.device) == (["in/channel0.nrrd"], "out", "pkg.zip", "cpu")
    assert (not args.no_heatmaps, args.probabilities, args.largest_component) == (False, True, False)
    assert (args.progress, args.attention_grid, args.no_overview) == ("json", "token", True)
    default = parse_arguments(RunRequest(inputs=[], largest_component=True).command_arguments([], Path("o")) + ["x"])
    assert default.model is None and default.largest_component and not default.no_heatmaps
