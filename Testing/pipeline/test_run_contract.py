"""The run contract (pipeline layer, no Slicer): requests, typed events on the wire, exit codes, error classes."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from TokenUNetSegmentLib.pipeline import errors
from TokenUNetSegmentLib.pipeline.cli import parse_arguments
from TokenUNetSegmentLib.pipeline.errors import ArgumentError
from TokenUNetSegmentLib.pipeline.geometry import affine_of_image
from TokenUNetSegmentLib.pipeline.nrrd import write_nrrd
from TokenUNetSegmentLib.pipeline.readers import open_image
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


def test_a_request_for_one_array_holding_every_channel_names_its_components_both_ways(tmp_path):
    """A Slicer vector volume's components named in order: in-process, segment() gets {name: component} (its
    channels= names the volumes of a 4D file only); the child gets the array as one NRRD of a list axis, which the
    readers split into the named volumes, and --channels naming them."""
    affine = np.array([[0, -1.5, 0, 10], [1.2, 0, 0, -4], [0, 0, -2, 7], [0, 0, 0, 1]])
    stacked = np.random.default_rng(0).normal(size=(5, 6, 7, 3)).astype(np.float32)
    request = RunRequest(inputs=[(stacked, affine)], channels=("FLAIR", "t1gd", "T2w"), names=("BRATS_001",))
    assert "channels" not in request.segment_options()
    split = request.segment_inputs()
    assert list(split) == ["FLAIR", "t1gd", "T2w"]
    for index, volume in enumerate(split.values()):  # named as the child names the volumes of the file it reads
        assert np.shares_memory(volume.array, stacked) and np.array_equal(volume.array, stacked[..., index])
        assert np.array_equal(volume.affine, affine) and volume.name == f"'BRATS_001', volume {index}"
    args = parse_arguments(request.command_arguments([tmp_path / "channel0.nrrd"], tmp_path / "out"))
    assert args.channels == ["FLAIR", "t1gd", "T2w"]
    path = write_nrrd(tmp_path / "channel0.nrrd", stacked, affine, compression=0)
    opened = open_image(path)
    assert opened.stacked == (3,) and not opened.stacked_axis
    image, _ = opened()
    assert image.GetNumberOfComponentsPerPixel() == 3
    read = sitk.GetArrayFromImage(image).transpose(2, 1, 0, 3)
    np.testing.assert_array_equal(read, stacked)
    np.testing.assert_allclose(affine_of_image(image), affine, atol=1e-6)
    file_request = RunRequest(inputs=[str(path)], channels=("FLAIR", "t1gd", "T2w"))
    assert file_request.segment_inputs() == [str(path)]
    assert file_request.segment_options()["channels"] == ["FLAIR", "t1gd", "T2w"]
    for inputs, names in [([(stacked, affine)], ("FLAIR", "T1")), ([(stacked, affine)] * 2, ("a", "b", "c"))]:
        with pytest.raises(ArgumentError, match="a run's channels name the"):
            RunRequest(inputs=inputs, channels=names)
    with pytest.raises(ArgumentError, match="without commas"):
        RunRequest(inputs=[(stacked, affine)], channels=("FLAIR,T1", "T1c", "T2"))
