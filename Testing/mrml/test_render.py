"""Offscreen pictures of a run: slice views through MRML's slice logic and a 3D view of the surfaces."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers.packages import make_package, threshold_package, tiny_config
from helpers.paths import SCRIPTS
from helpers.processes import run_python, with_file_size_limit
from helpers.scenes import ball_volume, new_scene, node_ids
from TokenUNetSegmentLib.mrml.parameters import Parameters
from TokenUNetSegmentLib.mrml.render import image_array, render_run
from TokenUNetSegmentLib.mrml.result_nodes import apply_result
from TokenUNetSegmentLib.mrml.volume_nodes import volume_to_array
from TokenUNetSegmentLib.pipeline import segment


def test_render_run_shows_ct_heatmap_segments_and_surfaces(tmp_path):
    ctx = new_scene()
    volume = ball_volume(ctx.scene)
    result = segment(
        [volume_to_array(volume)], threshold_package(spacing=(2.0, 2.0, 2.0), roi=(16, 16, 16)), device="cpu"
    )
    nodes = apply_result(ctx.scene, result, Parameters(inputVolume0=volume), volume)
    segment_color = np.array(nodes.segmentation.GetSegmentation().GetNthSegment(0).GetColor()) * 255
    before = node_ids(ctx.scene)
    path = tmp_path / "shot.png"
    image = render_run(
        ctx.application_logic,
        ctx.scene,
        volume,
        nodes.segmentation,
        nodes.heatmap_nodes[0],
        path,
        panel=120,
        window_level=(1000.0, 0.0),
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = image_array(image)
    assert pixels.shape == (120, 480, 3)
    slices, surfaces = pixels[:, :360].astype(int), pixels[:, 360:].astype(int)
    # heat overlay: reddish pixels (the heat scale has more red than blue) inside the slice views
    assert ((slices[..., 0] - slices[..., 2]) > 60).sum() > 50
    # the ball segment shows in its color in the slices (blended) and in the 3D view (shaded)
    distance = np.abs(surfaces - segment_color).sum(-1)
    hue = surfaces / np.maximum(1, surfaces.max(-1, keepdims=True))
    expected_hue = segment_color / segment_color.max()
    assert (np.abs(hue - expected_hue).sum(-1) < 0.15).sum() > 100 or (distance < 60).sum() > 100
    # the nodes made for the picture (labelmap, colors, slice views) are gone again
    assert node_ids(ctx.scene) == before


def screenshot_tool():
    """scripts/render_screenshot.py as a module."""
    spec = importlib.util.spec_from_file_location("render_screenshot", SCRIPTS / "render_screenshot.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


@pytest.fixture(scope="module")
def shot_package(tmp_path_factory):
    return make_package(tmp_path_factory.mktemp("shot"), tiny_config(roi=(32, 32, 32), spacing=(6.0, 6.0, 6.0)))


def test_screenshot_script_renders_a_given_model_and_refuses_without_one(shot_package, tmp_path, capsys):
    tool = screenshot_tool()
    out = tmp_path / "shot.png"
    assert tool.main(["--model", str(shot_package), "--out", str(out), "--panel", "96"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "wrote" in capsys.readouterr().out
    assert int.from_bytes(out.read_bytes()[16:20], "big") == 4 * 96
    assert tool.main(["--model", str(tmp_path / "nope.zip"), "--out", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists() and "model package not found" in capsys.readouterr().err


def test_screenshot_script_checks_its_options_and_output_before_the_run(shot_package, tmp_path, capsys, monkeypatch):
    """``--token`` the model does not have, ``--panel 0`` or negative, ``--out`` a folder or a user's file that is
    no picture (found by hostile) (before: each only after the 5-20 s run: a StopIteration traceback, a libpng or
    std::bad_alloc abort (exit 134), an OutputError traceback; the user's file replaced by the PNG without a word)."""
    from TokenUNetSegmentLib.mrml import scene_run

    tool = screenshot_tool()
    monkeypatch.setattr(scene_run.SceneRun, "run_now", lambda self: pytest.fail("the model ran"))
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    (tmp_path / "folder").mkdir()
    for options, words in [
        (["--token", "8"], "--token 8: model 'tiny-ct' has tokens 0 to 7"),
        (["--token", "-1"], "--token -1: model 'tiny-ct' has tokens 0 to 7"),
        (["--out", str(tmp_path / "folder")], "is a folder"),
        (["--out", str(notes)], "notes.txt already exists and is not an earlier output"),
    ]:
        argv = ["--model", str(shot_package), "--out", str(tmp_path / "shot.png"), *options]
        assert tool.main(argv) == 2, options
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
    for panel in ("0", "-5"):
        with pytest.raises(SystemExit) as stopped:
            tool.main(["--model", str(shot_package), "--panel", panel])
        assert stopped.value.code == 2 and "--panel" in capsys.readouterr().err
    assert notes.read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["folder", "notes.txt"]


def test_screenshot_script_replaces_an_earlier_picture_and_a_file_of_the_users_only_when_told(
    shot_package, tmp_path, capsys
):
    tool = screenshot_tool()
    picture, notes = tmp_path / "shot.png", tmp_path / "notes.txt"
    picture.write_bytes(b"\x89PNG\r\n\x1a\nan earlier picture")
    notes.write_text("mine")
    assert tool.main(["--model", str(shot_package), "--out", str(picture), "--panel", "64"]) == 0
    assert tool.main(["--model", str(shot_package), "--out", str(notes), "--panel", "64", "--overwrite"]) == 0
    assert picture.read_bytes()[:8] == notes.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert picture.stat().st_size > 100 and "wrote" in capsys.readouterr().out


STOPPED_SCREENSHOT = """
import importlib.util, os, signal, sys
spec = importlib.util.spec_from_file_location("render_screenshot", sys.argv[1])
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)
from TokenUNetSegmentLib.mrml import render, scene_run
signum, when = getattr(signal, sys.argv[2]), sys.argv[3]
def stop():
    os.kill(os.getpid(), signum)
def stopped_run(self):
    stop()
    raise AssertionError("the stop was not raised")
real_write = render.write_file_atomically
def stopped_write(path, data):  # half the picture written, then the stop
    def write(stream):
        stream.write(data[: len(data) // 2])
        stream.flush()
        stop()
        stream.write(data[len(data) // 2 :])
    return real_write(path, write)
if when == "run":
    scene_run.SceneRun.run_now = stopped_run
else:
    render.write_file_atomically = stopped_write
sys.exit(tool.main(sys.argv[4:]))
"""


@pytest.mark.parametrize(("signal_name", "when"), [("SIGINT", "run"), ("SIGTERM", "write")])
def test_a_stop_of_the_screenshot_script_ends_it_as_the_command_line_with_the_picture_whole_or_absent(
    signal_name, when, shot_package, tmp_path
):
    """Ctrl-C or SIGTERM while the sample is segmented or while the picture is written (found by hostile) (before:
    Ctrl-C printed Python's KeyboardInterrupt traceback, exit 1; SIGTERM ended the process at once, exit -15): one
    "interrupted" line, exit 130, an earlier picture at ``--out`` kept as it was and nothing else left."""
    out = tmp_path / "shots" / "shot.png"
    out.parent.mkdir()
    out.write_bytes(b"\x89PNG\r\n\x1a\nan earlier picture")
    argv = [str(SCRIPTS / "render_screenshot.py"), signal_name, when, "--model", str(shot_package), "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-c", STOPPED_SCREENSHOT, *argv, "--panel", "64"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 130, (done.returncode, done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()  # after the scene's own log lines (VTK's colour files)
    assert lines[-1] == "interrupted; no output was written" and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert out.read_bytes() == b"\x89PNG\r\n\x1a\nan earlier picture" and os.listdir(out.parent) == ["shot.png"]


@pytest.mark.slow
def test_screenshot_script_runs_as_a_command(shot_package, tmp_path):
    out = tmp_path / "shot.png"
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "render_screenshot.py"), "--model", str(shot_package), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int.from_bytes(out.read_bytes()[16:20], "big") == 4 * 480 and "wrote" in done.stdout


def test_views_centre_on_the_hottest_point_inside_the_scan_not_in_the_padding_around_it():
    from helpers.scenes import BALL_AFFINE, add_volume
    from TokenUNetSegmentLib.mrml.render import hottest_point_inside

    ctx = new_scene()
    volume = ball_volume(ctx.scene)
    coarse = BALL_AFFINE.copy()
    coarse[:3, :3] *= 8.0
    coarse[:3, 3] -= BALL_AFFINE[:3, :3] @ [12.0, 12.0, 12.0]  # voxel (1, 1, 1) lies 4 voxels outside the scan
    values = np.zeros((5, 5, 5), np.float32)
    values[1, 1, 1], values[3, 3, 2] = 1.0, 0.8
    heatmap = add_volume(ctx.scene, values, coarse, name="coarse map")
    np.testing.assert_allclose(hottest_point_inside(heatmap, volume), (coarse @ [3, 3, 2, 1.0])[:3])
    values[3, 3, 2] = 0.0
    values[:, :, 2] = 0.0  # nothing inside the scan: its centre
    heatmap = add_volume(ctx.scene, values[:, :, :2], coarse, name="coarse map 2")
    np.testing.assert_allclose(hottest_point_inside(heatmap, volume), (BALL_AFFINE @ [9.5, 8.5, 5.5, 1.0])[:3])


def test_a_picture_cut_short_by_a_full_disk_leaves_the_previous_file_and_nothing_else(tmp_path):
    """``render_run(path=...)`` and scripts/render_screenshot.py --out: a write that fails part-way. Before: VTK's PNG
    writer left the picture's first 4 KiB under its final name, the previous picture gone, and raised nothing (an
    error on stderr only)."""
    path = tmp_path / "shot.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\nthe previous picture")
    code = (
        "import numpy as np, vtk\n"
        "from vtk.util import numpy_support\n"
        "from TokenUNetSegmentLib.mrml.render import write_png\n"
        "from TokenUNetSegmentLib.pipeline.errors import OutputError\n"
        "noise = np.random.default_rng(0).integers(0, 256, (120 * 120, 3), np.uint8)\n"
        "image = vtk.vtkImageData()\n"
        "image.SetDimensions(120, 120, 1)\n"
        "image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(noise, deep=True))\n"
        f"try: write_png(image, {str(path)!r})\n"
        "except OutputError as error: print(error)\n"
    )
    line = run_python(with_file_size_limit(code, 4096)).strip()
    assert "nothing was changed" in line, line
    assert path.read_bytes() == b"\x89PNG\r\n\x1a\nthe previous picture" and os.listdir(tmp_path) == ["shot.png"]
