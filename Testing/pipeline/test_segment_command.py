"""The ``segment`` command end to end: files Slicer reads, report, overview, typed progress events, cancel."""

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
from helpers.packages import PHANTOM_AFFINE, ball_phantom, blank_network, make_package, tiny_config
from helpers.paths import MODULE_DIR, SAMPLE_CT
from helpers.processes import run_python, start_cli
from helpers.readers import sparse_nrrd
from TokenUNetSegmentLib.pipeline import cli, segment_command
from TokenUNetSegmentLib.pipeline.background import BackgroundCall
from TokenUNetSegmentLib.pipeline.confidence import Assessment
from TokenUNetSegmentLib.pipeline.errors import CancelledError
from TokenUNetSegmentLib.pipeline.geometry import affine_of_image, image_from_array
from TokenUNetSegmentLib.pipeline.nrrd import read_nrrd_fields
from TokenUNetSegmentLib.pipeline.outputs import read_map
from TokenUNetSegmentLib.pipeline.package_loader import load_package
from TokenUNetSegmentLib.pipeline.package_source import read_metadata
from TokenUNetSegmentLib.pipeline.run_contract import ErrorEvent, ProgressEvent, ResultEvent, decode_event
from TokenUNetSegmentLib.pipeline.segmentation import segment


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


def test_segment_end_to_end_writes_what_slicer_reads(cli_case, tmp_path, capsys):
    """The command in this process (the ``python -m`` entry and its own process are the session's sample run's)."""
    root, package, path = cli_case
    out = tmp_path / "out"
    assert segment_cli(path, package, out, "--device", "cpu", "--overlap", "0.25") == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'segmentation.seg.nrrd'}" in printed
    # the segmentation: geometry of the input, labels equal to the in-process result
    seg_path = out / "segmentation.seg.nrrd"
    seg = sitk.ReadImage(str(seg_path))
    np.testing.assert_allclose(affine_of_image(seg), PHANTOM_AFFINE, atol=1e-6)
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
    # token maps on their own token grid by default (uint8 steps of 1/255), where the in-process maps are
    maps = sorted((out / "attention").glob("*.nrrd"))
    assert len(maps) == 16
    token_maps = segment(path, load_package(package), device="cpu", overlap=0.25).token_maps
    heat = sitk.ReadImage(str(maps[0]))
    np.testing.assert_allclose(affine_of_image(heat), token_maps.coarse_grid.affine, atol=1e-5)
    values, _ = read_map(maps[0])
    assert values.shape == token_maps.coarse_grid.shape and values.min() >= 0 and values.max() <= 1
    assert sitk.GetArrayViewFromImage(heat).dtype == np.uint8
    assert read_nrrd_fields(maps[0])["TokenUNet_BestLabel"] in ("organ1", "organ2")
    # the report
    report = json.loads((out / "report.json").read_text())
    assert report["device"] == "cpu" and report["model"] == "tiny-ct"
    assert {"load", "preprocess", "inference", "postprocess", "map back", "total"} <= set(report["timings_s"])
    assert [label["name"] for label in report["labels"]] == ["organ1", "organ2"]
    voxel_ml = 1.4 * 1.2 * 2.5 / 1000
    assert report["labels"][0]["volume_ml"] == pytest.approx((labels == 1).sum() * voxel_ml, abs=1e-3)
    assert len(report["token_matches"]) == 16 and len(report["attention_maps"]) == 16
    # confidence and flags per label, the run's flags and summary; the table after the "wrote" line
    for label in report["labels"]:
        assert 0.0 <= label["confidence"] <= 1.0 and all({"code", "message"} == set(f) for f in label["flags"])
    assert isinstance(report["flags"], list) and report["summary"]
    table = printed.split("wrote ", 1)[1].splitlines()[1:]
    assert table[0].split() == ["label", "volume", "mL", "confidence", "flags"]
    for line, label in zip(table[1:3], report["labels"], strict=True):
        assert line.split()[:3] == [label["name"], f"{label['volume_ml']:.1f}", f"{label['confidence']:.2f}"]
        assert line.endswith(", ".join(f["code"] for f in label["flags"]))
    assert table[3].endswith(report["summary"])
    # the overview: 3 views per row, labels + 3 token rows
    width, height = png_size(out / "overview.png")
    assert width == 3 * 220 and height == 4 * 220


def test_an_empty_result_is_reported_as_such(cli_case, tmp_path, capsys):
    """A model that finds nothing: the command still writes its result, and its table and report.json say that
    nothing was found and why that may be."""
    root, _, path = cli_case
    config = tiny_config("finds-nothing", roi=(32, 32, 32), spacing=(3.0, 3.0, 3.0), crop=True)
    package = make_package(tmp_path, config, network=blank_network(config))
    out = tmp_path / "out"
    assert segment_cli(path, package, out, "--device", "cpu", "--no-heatmaps", "--no-overview") == 0
    printed = capsys.readouterr().out.split("wrote ", 1)[1].splitlines()
    assert [line.split()[-1] for line in printed[2:4]] == ["not_found", "not_found"]
    assert printed[-1].startswith("warning: No organ found. Possible reasons:")
    report = json.loads((out / "report.json").read_text())
    assert {f["code"] for f in report["flags"]} >= {"no_organ_found", "no_known_anatomy"}
    assert report["summary"].startswith("No organ found.") and all(e["confidence"] == 0 for e in report["labels"])
    assert Assessment.from_report(report).found == []  # the module's warning line: Testing/mrml/test_controller.py


def segment_cli(path, package, out, *options) -> int:
    """Exit code of ``segment PATH --model PACKAGE --out OUT OPTIONS...`` through the CLI."""
    return cli.main(["segment", str(path), "--model", str(package), "--out", str(out), *options])


def test_inputs_are_read_while_torch_is_imported_and_the_package_loaded(cli_case, tmp_path, monkeypatch):
    """The input voxels are read and resampled onto the model grid in their own thread next to the package loading
    (which imports torch): here the reader waits until the loading has begun, which would never happen if the two
    ran one after the other. Meanwhile threads hand over the GIL every millisecond, then as before."""
    import threading

    from TokenUNetSegmentLib.pipeline import package_loader, preprocess, volumes

    _, package, path = cli_case
    loading, threads, resampled_in, intervals = threading.Event(), [], [], [sys.getswitchinterval()]
    real_open, real_load_package, real_resample = volumes.open_input, package_loader.load_package, preprocess.resample

    def open_input(item, *args, **kwargs):
        read = real_open(item, *args, **kwargs)
        if isinstance(item, volumes.Volume):  # segment() taking the volumes read
            return read

        def read_when_loading():
            threads.append(threading.current_thread())
            assert loading.wait(30), "the package was not loaded while the input was read"
            return read()

        return volumes.OpenedVolume(read.values, read_when_loading, read.modality, read.grid)

    def load_package(*args, **kwargs):
        intervals.append(sys.getswitchinterval())
        loading.set()
        return real_load_package(*args, **kwargs)

    def resample(*args, **kwargs):
        resampled_in.append(threading.current_thread())
        assert kwargs.get("threads") == max(1, (os.cpu_count() or 2) - 1)  # one core left to torch's import
        return real_resample(*args, **kwargs)

    monkeypatch.setattr(volumes, "open_input", open_input)
    monkeypatch.setattr(package_loader, "load_package", load_package)
    monkeypatch.setattr(preprocess, "resample", resample)
    out = tmp_path / "out"
    assert segment_cli(path, package, out, "--device", "cpu", "--no-heatmaps", "--no-overview") == 0
    assert threads and threading.main_thread() not in threads and (out / "segmentation.seg.nrrd").exists()
    assert resampled_in == threads[:1]  # once, ahead, in the reading thread: prepare() took its result
    assert intervals[1] == segment_command.READ_SWITCH_INTERVAL_S and sys.getswitchinterval() == intervals[0]


def test_damaged_voxel_data_found_while_torch_is_imported_exits_2_in_one_line_and_writes_nothing(
    cli_case, tmp_path, capsys
):
    _, package, _ = cli_case
    path = tmp_path / "short.nii"
    ct = sitk.ReadImage(str(cli_case[2]))
    sitk.WriteImage(ct, str(path))
    path.write_bytes(path.read_bytes()[:-5000])  # the header is whole, the voxels are not
    assert segment_cli(path, package, tmp_path / "out", "--device", "cpu") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: short.nii is truncated") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_bad_header_or_dicom_series_or_a_full_disk_is_reported_before_torch_is_imported(cli_case, tmp_path):
    from helpers.readers import write_dicom_series

    _, package, ct = cli_case
    series = tmp_path / "series"
    write_dicom_series(series, np.zeros((12, 16, 16), np.int16))
    (series / "IM0006.dcm").unlink()
    (tmp_path / "text.nii").write_text("not an image")
    full_disk = (
        "import collections, shutil\n"
        "usage = collections.namedtuple('usage', 'total used free')\n"
        "shutil.disk_usage = lambda folder: usage(10**6, 10**6 - 4096, 4096)\n"
    )
    results = []
    for path, setup in [
        (tmp_path / "missing.nii.gz", ""),
        (tmp_path / "text.nii", ""),
        (series, ""),
        (ct, full_disk),  # the outputs its header implies do not fit
    ]:
        code = (
            "import json, sys\n" + setup + "from TokenUNetSegmentLib.pipeline import cli\n"
            f"code = cli.main(['segment', {str(path)!r}, '--model', {str(package)!r}, "
            f"'--out', {str(tmp_path / 'out')!r}])\n"
            "print(json.dumps([code, 'torch' in sys.modules]))\n"
        )
        results.append(json.loads(run_python(code).strip().splitlines()[-1]))
    assert results == [[2, False]] * 4


def test_a_background_call_returns_its_value_or_raises_its_error_in_the_caller():
    call = BackgroundCall(lambda: 42)
    assert call.result() == 42

    def fail():
        raise ValueError("bad input")

    call = BackgroundCall(fail)
    call.wait()  # ended: the error waits for the caller
    with pytest.raises(ValueError, match="bad input"):
        call.result()


def test_progress_json_lines_are_monotonic_and_cover_writing(cli_case, tmp_path, capsys):
    root, package, path = cli_case
    assert segment_cli(path, package, tmp_path / "out", "--no-overview", "--progress", "json") == 0
    events = [decode_event(line) for line in capsys.readouterr().err.splitlines()]
    assert None not in events  # stderr carries typed events only
    progress = [e for e in events if isinstance(e, ProgressEvent)]
    assert events[0] == progress[0] and (progress[0].stage, progress[0].fraction) == ("start", 0.0)  # at once
    fractions = [e.fraction for e in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert progress[-1].stage == "write" and max(e.fraction for e in progress if e.stage != "write") <= 0.9
    assert [e.elapsed for e in progress] == sorted(e.elapsed for e in progress)
    result = events[-1]  # the last event says what was written
    assert isinstance(result, ResultEvent) and Path(result.folder) == (tmp_path / "out").resolve()
    assert result.files["segmentation"] == "segmentation.seg.nrrd" and result.files["report"] == "report.json"
    assert all((tmp_path / "out" / name).exists() for name in result.files.values())


def test_token_grid_attention_and_probabilities(cli_case, tmp_path):
    root, package, path = cli_case
    options = ["--device", "cpu", "--attention-grid", "token", "--probabilities", "--smooth", "--no-overview"]
    assert segment_cli(path, package, tmp_path, *options, "--progress", "none") == 0
    heat = sitk.ReadImage(str(tmp_path / "attention" / "token00_gather.nrrd"))
    assert heat.GetSpacing() == pytest.approx((24.0, 24.0, 24.0))  # 8 x the 3 mm model spacing
    assert sorted(p.name for p in (tmp_path / "probabilities").iterdir()) == ["organ1.nrrd", "organ2.nrrd"]
    assert not (tmp_path / "overview.png").exists()


def test_auto_attention_grid_keeps_large_maps_on_the_token_grid(cli_case, tmp_path, monkeypatch):
    from TokenUNetSegmentLib.pipeline import outputs

    root, package, path = cli_case
    monkeypatch.setattr(outputs, "AUTO_INPUT_GRID_LIMIT", 1000)
    assert cli.main(["segment", str(path), "--model", str(package), "--out", str(tmp_path), "--no-overview"]) == 0
    assert json.loads((tmp_path / "report.json").read_text())["attention_grid"] == "token"
    assert sitk.ReadImage(str(tmp_path / "attention" / "token03_broadcast.nrrd")).GetSpacing() == pytest.approx(
        (24.0, 24.0, 24.0)
    )


def test_cancelled_run_leaves_no_output(cli_case, tmp_path):
    root, package, path = cli_case
    out = tmp_path / "out"
    args = cli.parse_arguments(
        ["segment", str(path), "--model", str(package), "--out", str(out), "--progress", "none", "--overlap", "0.5"]
    )
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 12  # after a few windows

    with pytest.raises(CancelledError):
        segment_command.run_segment(args, cancel=cancel)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []  # no staging folder, no lock
    # a previous result (with a file of the user's) keeps its content and gets nothing new
    assert segment_command.run_segment(args) == 0
    (out / "mine.txt").write_text("keep")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    calls.clear()
    with pytest.raises(CancelledError):
        segment_command.run_segment(args, cancel=cancel)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_cancels_between_windows_and_exits_130(cli_case, tmp_path):
    root, _, path = cli_case
    package = make_package(tmp_path, tiny_config(roi=(16, 16, 16), spacing=(3.0, 3.0, 3.0)))  # many windows
    out = tmp_path / "out"
    arguments = ["segment", str(path), "--model", str(package), "--out", str(out), "--progress", "json"]
    process = start_cli(*arguments, "--overlap", "0.75")
    for line in process.stderr:
        if getattr(decode_event(line), "stage", None) == "inference":  # warnings may come before
            process.send_signal(signal.SIGTERM)
            break
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 130, stderr
    last = decode_event(stderr.splitlines()[-1])  # a typed error event, not an "error:" line
    assert isinstance(last, ErrorEvent) and last.category == "cancelled" and last.exit_code == 130
    assert not out.exists()


def test_multichannel_files_are_assigned_by_name(tmp_path, one_inference_thread):
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


def test_segment_the_bundled_real_ct_end_to_end(sample_cli_run):
    """The real abdominal CT file (LPS-flipped direction, int32 voxels) through the CLI with the catalog's default
    model (the session's one run of the sample; see conftest.py)."""
    out = sample_cli_run.folder
    source = sitk.ReadImage(str(SAMPLE_CT))
    seg = sitk.ReadImage(str(out / "segmentation.seg.nrrd"))
    np.testing.assert_allclose(affine_of_image(seg), affine_of_image(source), atol=1e-4)
    assert seg.GetSize() == source.GetSize()
    report = json.loads((out / "report.json").read_text())
    config = read_metadata(report["package"]["path"]).config
    assert report["model"] == config.id and [label["name"] for label in report["labels"]] == [
        label.name for label in config.labels
    ]
    assert report["attention_grid"] == "token"
    tokens = report["token_matches"][-1]["token"] + 1
    assert len(list((out / "attention").glob("*.nrrd"))) == 2 * tokens == len(report["attention_maps"])
    assert png_size(out / "overview.png") == (3 * 220, 4 * 220)
    events = [decode_event(line) for line in sample_cli_run.stderr.splitlines()]
    assert None not in events and isinstance(events[-1], ResultEvent)
    fractions = [e.fraction for e in events if isinstance(e, ProgressEvent)]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert f"wrote {out / 'segmentation.seg.nrrd'}" in sample_cli_run.stdout
    table = sample_cli_run.stdout.split("wrote ", 1)[1].splitlines()[2:]
    for label in report["labels"]:  # every organ with its confidence
        assert 0.0 <= label["confidence"] <= 1.0
        assert any(line.startswith(label["name"] + " ") and f" {label['confidence']:.2f}" in line for line in table)
    # the bundled model records its training statistics, and the sample (its training patient) is judged by them:
    # a CT like its training scans (no scan flag), its well-found organs confident and not all flagged
    statistics = config.statistics
    assert statistics is not None and set(statistics.labels) == {label.name for label in config.labels}
    assert report["flags"] == [] and not report["summary"].startswith("No organ found")
    trusted = [e for e in report["labels"] if e["confidence"] >= 0.6 and {f["code"] for f in e["flags"]} <= {"cut_off"}]
    assert "liver" in {e["name"] for e in trusted}, report["summary"]


def test_a_run_that_fails_while_the_voxels_are_read_still_exits_with_its_own_code(tmp_path):
    """The process waits for the reading thread: exiting while SimpleITK reads a series in another thread crashed
    the interpreter (a segmentation fault or an abort instead of exit code 2)."""
    from helpers.readers import write_dicom_series

    write_dicom_series(tmp_path / "series", np.zeros((120, 256, 256), np.int16))
    code = (
        "import sys\n"
        "from TokenUNetSegmentLib.pipeline.background import BackgroundCall\n"
        "from TokenUNetSegmentLib.pipeline.volumes import open_input\n"
        f"BackgroundCall(open_input({str(tmp_path / 'series')!r}))\n"
        "sys.exit(2)  # e.g. a damaged model package found meanwhile\n"
    )
    for _ in range(4):
        done = subprocess.run([sys.executable, "-c", code], cwd=MODULE_DIR, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr[-500:]


def test_maps_on_the_input_grid_count_in_the_memory_and_disk_estimates(cli_case, tmp_path, monkeypatch):
    """``--attention-grid input`` adds two float32 maps being written at a time (with SimpleITK's copies) to the
    memory estimate (before: left out; 512 x 512 x 100 CT: peak RSS 1.10 GB against 0.64 GB on the token grid, the
    estimate unchanged); ``auto`` is estimated on the grid it will choose (before: always the input grid on disk,
    so a large CT that ``auto`` keeps on the token grid needed 10 GB free instead of a few MB)."""
    from TokenUNetSegmentLib.pipeline import outputs, segmentation

    root, package, path = cli_case
    voxels = sitk.ReadImage(str(path)).GetNumberOfPixels()
    memory, disk = {}, {}
    monkeypatch.setattr(segmentation, "check_memory", lambda estimate, device: memory.update({grid: estimate["host"]}))
    real_disk = outputs.estimate_output_bytes
    monkeypatch.setattr(outputs, "estimate_output_bytes", lambda *a, **k: disk.setdefault(grid, real_disk(*a, **k)))
    for grid in ("token", "input"):
        assert segment_cli(path, package, tmp_path / grid, "--attention-grid", grid, "--no-overview") == 0
    assert memory["input"] - memory["token"] >= 16 * voxels
    monkeypatch.setattr(outputs, "AUTO_INPUT_GRID_LIMIT", 1000)  # auto keeps these maps on the token grid
    grid = "auto"
    assert segment_cli(path, package, tmp_path / grid, "--attention-grid", grid, "--no-overview") == 0
    assert memory["auto"] == memory["token"] and disk["auto"] == disk["token"] < disk["input"]


def test_a_run_that_cannot_fit_is_refused_from_the_header_before_any_voxel_is_read(cli_case, tmp_path):
    """A 512 x 512 x 200 int16 header under TOKENUNET_MEMORY_LIMIT=400M: reading fits (210 MB), the run does not
    (about 0.6 GB). Before: refused only once the voxels were read and resampled next to torch's import (the audit's
    1024 x 1024 x 400 case: 2.09 GB peak RSS before 'needs about 4.49 GiB')."""
    _, package, _ = cli_case
    big = sparse_nrrd(tmp_path / "big.nrrd", (512, 512, 200))
    code = (
        "import json, os, sys\n"
        "os.environ['TOKENUNET_MEMORY_LIMIT'] = '400M'\n"
        "from TokenUNetSegmentLib.pipeline import cli\n"
        f"code = cli.main(['segment', {str(big)!r}, '--model', {str(package)!r}, '--out', {str(tmp_path / 'out')!r}])\n"
        "print(json.dumps([code, 'torch' in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=MODULE_DIR, capture_output=True, text=True, timeout=120)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [2, False], done.stderr[-500:]
    assert done.stderr.startswith("error: this run needs about ") and "TOKENUNET_MEMORY_LIMIT=400M" in done.stderr
    assert done.stderr.count("\n") == 1 and not (tmp_path / "out").exists()


def test_the_header_estimate_is_the_host_part_of_the_exact_one(cli_case, monkeypatch):
    """The check before reading counts what the exact check counts for the data (same model grid, tokens and
    channels), so it refuses nothing the exact check lets run."""
    from TokenUNetSegmentLib.pipeline import segmentation
    from TokenUNetSegmentLib.pipeline.run_memory import check_header_fits
    from TokenUNetSegmentLib.pipeline.volumes import open_input

    _, package_path, path = cli_case
    package = load_package(package_path)
    opened = open_input(path)
    exact = {}
    monkeypatch.setattr(segmentation, "check_memory", lambda estimate, device: exact.update(estimate))
    segment(str(path), package, device="cpu", probabilities=True, maps_on_input_grid=True)
    tokens = package.network.num_tokens
    assert tokens == 8
    header = check_header_fits(opened.values, opened.grid, package.config, tokens, path.name, True, True)
    assert header == exact["host"]
    segment(str(path), package, device="cpu", probabilities=True, maps_on_input_grid=True, test_time_augmentation=True)
    averaged = check_header_fits(opened.values, opened.grid, package.config, tokens, path.name, True, True, True)
    assert header < averaged <= exact["host"]  # the window's rounding to the network's multiple: known only after
