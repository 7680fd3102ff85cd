"""The command line end to end: files Slicer reads, report, overview, exit codes, models, cancel."""

import json
import os
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pipeline_testlib import ball_phantom, make_package, tiny_config
from TokenUNetSegmentLib.pipeline import cli
from TokenUNetSegmentLib.pipeline.errors import CancelledError
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing, affine_of_image, image_from_array
from TokenUNetSegmentLib.pipeline.nrrd import read_nrrd_fields
from TokenUNetSegmentLib.pipeline.package import load_package
from TokenUNetSegmentLib.pipeline.segmentation import segment

MODULE_DIR = Path(__file__).resolve().parents[1] / "TokenUNetSegment"
AFFINE = affine_from_spacing((1.4, 1.2, 2.5), origin=(80, 60, -40), direction=np.diag([-1.0, -1.0, 1.0]))


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    package = make_package(root, tiny_config(roi=(32, 32, 32), spacing=(3.0, 3.0, 3.0), crop=True))
    # a CT-like phantom: body (soft tissue) in air with two 'organs'
    image = ball_phantom((90, 80, 40), (45, 40, 20), (38, 30, 19), value=40, background=-1000)
    image[ball_phantom((90, 80, 40), (35, 35, 20), (10, 10, 5)) > 0] = 200
    image[ball_phantom((90, 80, 40), (60, 45, 22), (8, 8, 5)) > 0] = -60
    path = root / "ct.nii.gz"
    sitk.WriteImage(image_from_array(image.astype(np.int16), AFFINE), str(path))
    return root, package, path


def run_cli(*args, env=None, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "TokenUNetSegmentLib.pipeline", *map(str, args)],
        cwd=MODULE_DIR,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
        **kwargs,
    )


def png_size(path):
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    idat, position = b"", 8
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        if kind == b"IDAT":
            idat += data[position + 8 : position + 8 + length]
        position += 12 + length
    assert len(zlib.decompress(idat)) == height * (3 * width + 1)
    return width, height


def test_segment_end_to_end_writes_what_slicer_reads(case, tmp_path):
    root, package, path = case
    out = tmp_path / "out"
    done = run_cli("segment", path, "--model", package, "--out", out, "--device", "cpu", "--overlap", "0.25")
    assert done.returncode == 0, done.stderr
    assert "segmentation.seg.nrrd" in done.stdout
    # the segmentation: geometry of the input, labels equal to the in-process result
    seg_path = out / "segmentation.seg.nrrd"
    seg = sitk.ReadImage(str(seg_path))
    np.testing.assert_allclose(affine_of_image(seg), AFFINE, atol=1e-6)
    labels = sitk.GetArrayFromImage(seg).transpose(2, 1, 0)
    expected = segment(path, load_package(package), device="cpu", overlap=0.25).labels
    np.testing.assert_array_equal(labels, expected)
    fields = read_nrrd_fields(seg_path)
    for index, name in enumerate(["organ1", "organ2"]):
        assert fields[f"Segment{index}_Name"] == name and fields[f"Segment{index}_ID"] == name
        assert fields[f"Segment{index}_LabelValue"] == str(index + 1) and fields[f"Segment{index}_Layer"] == "0"
        assert len(fields[f"Segment{index}_Color"].split()) == 3
        tags = fields[f"Segment{index}_Tags"]
        entry = tags.split("TerminologyEntry:")[1].split("|")[0]
        assert entry.split("~")[1:3] == ["SCT^123037004^Anatomical Structure", "SCT^78961009^Spleen"]
        assert len(entry.split("~")) == 7
        mask = labels == index + 1
        if mask.any():
            hits = np.argwhere(mask)
            extent = [int(v) for v in fields[f"Segment{index}_Extent"].split()]
            assert extent == [v for a in range(3) for v in (hits[:, a].min(), hits[:, a].max())]
    assert fields["space"] == "left-posterior-superior"
    # token maps on the input grid, in [0, 1]
    maps = sorted((out / "attention").glob("*.nrrd"))
    assert len(maps) == 16
    heat = sitk.ReadImage(str(maps[0]))
    np.testing.assert_allclose(affine_of_image(heat), AFFINE, atol=1e-6)
    values = sitk.GetArrayFromImage(heat)
    assert values.shape == labels.shape[::-1] and values.min() >= 0 and values.max() <= 1
    assert read_nrrd_fields(maps[0])["TokenUNet_BestLabel"] in ("organ1", "organ2")
    # the report
    report = json.loads((out / "report.json").read_text())
    assert report["device"] == "cpu" and report["model"] == "tiny-ct"
    assert {"load", "preprocess", "inference", "postprocess", "map back", "total"} <= set(report["timings_s"])
    assert [label["name"] for label in report["labels"]] == ["organ1", "organ2"]
    voxel_ml = 1.4 * 1.2 * 2.5 / 1000
    assert report["labels"][0]["volume_ml"] == pytest.approx((labels == 1).sum() * voxel_ml, abs=1e-3)
    assert len(report["token_matches"]) == 16 and len(report["attention_maps"]) == 16
    # the overview: 3 views per row, labels + 3 token rows
    width, height = png_size(out / "overview.png")
    assert width == 3 * 220 and height == 4 * 220


def segment_cli(path, package, out, *options) -> int:
    """Exit code of ``segment PATH --model PACKAGE --out OUT OPTIONS...`` through the CLI."""
    return cli.main(["segment", str(path), "--model", str(package), "--out", str(out), *options])


def test_progress_json_lines_are_monotonic_and_cover_writing(case, tmp_path, capsys):
    root, package, path = case
    assert segment_cli(path, package, tmp_path, "--no-overview", "--progress", "json") == 0
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    fractions = [e["fraction"] for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert (
        events[-1]["stage"] == "write"
        and max(f for e, f in zip(events, fractions, strict=True) if e["stage"] != "write") <= 0.9
    )


def test_token_grid_attention_and_probabilities(case, tmp_path):
    root, package, path = case
    options = ["--device", "cpu", "--attention-grid", "token", "--probabilities", "--smooth", "--no-overview"]
    assert segment_cli(path, package, tmp_path, *options, "--progress", "none") == 0
    heat = sitk.ReadImage(str(tmp_path / "attention" / "token00_gather.nrrd"))
    assert heat.GetSpacing() == pytest.approx((24.0, 24.0, 24.0))  # 8 x the 3 mm model spacing
    assert sorted(p.name for p in (tmp_path / "probabilities").iterdir()) == ["organ1.nrrd", "organ2.nrrd"]
    assert not (tmp_path / "overview.png").exists()


def test_auto_attention_grid_keeps_large_maps_on_the_token_grid(case, tmp_path, monkeypatch):
    from TokenUNetSegmentLib.pipeline import outputs

    root, package, path = case
    monkeypatch.setattr(outputs, "AUTO_INPUT_GRID_LIMIT", 1000)
    assert cli.main(["segment", str(path), "--model", str(package), "--out", str(tmp_path), "--no-overview"]) == 0
    assert json.loads((tmp_path / "report.json").read_text())["attention_grid"] == "token"
    assert sitk.ReadImage(str(tmp_path / "attention" / "token03_broadcast.nrrd")).GetSpacing() == pytest.approx(
        (24.0, 24.0, 24.0)
    )


def test_user_errors_exit_2_with_one_line(case, tmp_path, capsys):
    root, package, path = case
    for argv, message in [
        (
            ["segment", str(tmp_path / "missing.nii.gz"), "--model", str(package), "--out", str(tmp_path / "o")],
            "input not found",
        ),
        (["segment", str(path), "--model", "no-such-model", "--out", str(tmp_path / "o")], "unknown model id"),
        (
            ["segment", str(path), str(path), "--model", str(package), "--out", str(tmp_path / "o")],
            "needs 1 input channel",
        ),
        (["models", "remove", "no-such-model"], "unknown model id"),
    ]:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
    with pytest.raises(Exception, match="input not found"):
        cli.main(
            [
                "--debug",
                "segment",
                str(tmp_path / "missing.nii.gz"),
                "--model",
                str(package),
                "--out",
                str(tmp_path / "o"),
            ]
        )


def test_checksum_mismatch_through_the_cli(tmp_path, capsys):
    package = make_package(tmp_path)
    weights = package / "models/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    assert cli.main(["models", "info", str(package)]) == 0  # metadata alone is fine
    capsys.readouterr()
    assert cli.main(["segment", str(tmp_path / "x.nii.gz"), "--model", str(package), "--out", str(tmp_path)]) == 2
    assert "checksum mismatch" in capsys.readouterr().err


def test_models_list_info_import_remove(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TOKENUNET_HOME", str(tmp_path / "home"))
    catalog = tmp_path / "Models.json"
    catalog.write_text(json.dumps({"models": []}))
    base = ["--catalog", str(catalog), "models"]
    zipped = make_package(tmp_path, tiny_config("zipped-model"), as_zip=True)
    assert cli.main([*base, "import", str(zipped)]) == 0
    assert (tmp_path / "home/models/zipped-model/configs/metadata.json").is_file()
    assert cli.main([*base, "list"]) == 0
    assert "zipped-model" in capsys.readouterr().out
    assert cli.main([*base, "info", "zipped-model"]) == 0
    assert "8Token (1 -> 3 channels)" in capsys.readouterr().out
    # weights from a .pt file in the configuration of an existing model
    import torch
    from TokenUNetSegmentLib.model import build_network

    torch.save(build_network("8Token", 1, 3, channels=(4, 8, 16, 32)).state_dict(), tmp_path / "w.pt")
    assert cli.main([*base, "import", str(tmp_path / "w.pt"), "--like", "zipped-model", "--id", "from-pt"]) == 0
    capsys.readouterr()
    assert cli.main([*base, "list", "--json"]) == 0
    listed = {e["id"]: e["source"] for e in json.loads(capsys.readouterr().out)}
    assert listed == {"zipped-model": "cached", "from-pt": "cached"}
    assert cli.main([*base, "remove", "from-pt"]) == 0
    assert not (tmp_path / "home/models/from-pt").exists()
    capsys.readouterr()
    assert cli.main([*base, "import", str(tmp_path / "w.pt")]) == 2
    assert "--like" in capsys.readouterr().err


def test_cancelled_run_leaves_no_output(case, tmp_path):
    root, package, path = case
    out = tmp_path / "out"
    args = cli.build_parser().parse_args(
        ["segment", str(path), "--model", str(package), "--out", str(out), "--progress", "none", "--overlap", "0.5"]
    )
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 12  # after a few windows

    with pytest.raises(CancelledError):
        cli.run_segment(args, cancel=cancel)
    assert not out.exists()
    # an existing folder keeps its content and gets nothing new
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    calls.clear()
    with pytest.raises(CancelledError):
        cli.run_segment(args, cancel=cancel)
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_cancels_between_windows_and_exits_130(case, tmp_path):
    root, _, path = case
    package = make_package(tmp_path, tiny_config(roi=(16, 16, 16), spacing=(3.0, 3.0, 3.0)))  # many windows
    out = tmp_path / "out"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "TokenUNetSegmentLib.pipeline",
            "segment",
            str(path),
            "--model",
            str(package),
            "--out",
            str(out),
            "--progress",
            "json",
            "--overlap",
            "0.75",
        ],
        cwd=MODULE_DIR,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    for line in process.stderr:
        if json.loads(line)["stage"] == "inference":
            process.send_signal(signal.SIGTERM)
            break
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 130, stderr
    assert "cancelled" in stderr and not out.exists()


def test_multichannel_files_are_assigned_by_name(tmp_path):
    config = tiny_config("two-channel", in_channels=2, intensity={"method": "zscore"}, roi=(32, 32, 32))
    config["inputs"][0]["patterns"], config["inputs"][1]["patterns"] = ["*t1c*"], ["*flair*"]
    package = make_package(tmp_path, config)
    t1c = ball_phantom((30, 30, 30), (12, 15, 15), (6, 6, 6), value=300, background=10)
    flair = ball_phantom((30, 30, 30), (18, 15, 15), (8, 8, 8), value=500, background=20)
    paths = []
    for name, image in (("case_t1c.nii.gz", t1c), ("case_flair.nii.gz", flair)):
        sitk.WriteImage(image_from_array(image, np.eye(4)), str(tmp_path / name))
        paths.append(str(tmp_path / name))
    common = ["--model", str(package), "--no-overview", "--no-heatmaps", "--progress", "none"]
    assert cli.main(["segment", *paths, "--out", str(tmp_path / "a"), *common]) == 0
    assert cli.main(["segment", *paths[::-1], "--out", str(tmp_path / "b"), *common]) == 0
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a/segmentation.seg.nrrd")))
    b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "b/segmentation.seg.nrrd")))
    np.testing.assert_array_equal(a, b)
    report = json.loads((tmp_path / "b/report.json").read_text())
    assert report["inputs"] == {"ch0": paths[0], "ch1": paths[1]}


def test_progress_printer_bar_on_a_terminal_and_silent_otherwise():
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    printer = cli.ProgressPrinter("auto", terminal)
    printer("inference", 0.5)
    printer("write", 1.0)
    printer.close()
    text = terminal.getvalue()
    assert text.count("\r") == 2 and "[###############...............]  50.0% inference" in text
    assert "100.0% write" in text and text.endswith("\n")
    pipe = io.StringIO()
    silent = cli.ProgressPrinter("auto", pipe)
    silent("inference", 0.5)
    silent.close()
    assert pipe.getvalue() == ""


SAMPLE_CT = MODULE_DIR / "Resources" / "Samples" / "AbdomenCT.nii.gz"


def test_segment_the_bundled_real_ct_end_to_end(tmp_path):
    """A real abdominal CT file (LPS-flipped direction, int32 voxels) through the CLI with a test package."""
    package = make_package(
        tmp_path / "pkg", tiny_config(labels=3, spacing=(3.0, 3.0, 3.0), roi=(64, 64, 64), crop=True)
    )
    out = tmp_path / "out"
    done = run_cli("segment", SAMPLE_CT, "--model", package, "--out", out, "--device", "cpu")
    assert done.returncode == 0, done.stderr
    source = sitk.ReadImage(str(SAMPLE_CT))
    seg = sitk.ReadImage(str(out / "segmentation.seg.nrrd"))
    np.testing.assert_allclose(affine_of_image(seg), affine_of_image(source), atol=1e-4)
    assert seg.GetSize() == source.GetSize()
    report = json.loads((out / "report.json").read_text())
    assert [label["name"] for label in report["labels"]] == ["organ1", "organ2", "organ3"]
    assert len(list((out / "attention").glob("*.nrrd"))) == 2 * 8
    assert png_size(out / "overview.png")[0] > 0


def test_cka_is_a_subcommand_of_the_pipeline_cli(tmp_path, capsys):
    argv = [
        "cka",
        "--a",
        "NoToken",
        "--a-option",
        "channels=(4, 8, 16, 32)",
        "--b",
        "8Token",
        "--b-option",
        "channels=(4, 8, 16, 32)",
        "--size",
        "16",
        "--samples",
        "2",
        "--out",
        str(tmp_path),
    ]
    assert cli.main(argv) == 0
    assert (tmp_path / "cka.json").is_file()
    assert cli.main(["cka", "--a", "Nope", "--b", "NoToken", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown network 'Nope'") and len(err.strip().splitlines()) == 1
