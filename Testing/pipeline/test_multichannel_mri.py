"""Brain-tumour MRI as users feed it: four sequences (T1, T1c, T2, FLAIR) as one multi-channel input, through the
command line and ``segment()``: BraTS file names, hospital grids, a file given twice, channels that do not cover
each other, a CT given to an MR model, and the memory of all channels counted before any is read."""

import json
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
from helpers.packages import make_package, physical_ball, rotation, threshold_package, tiny_config, voxel_centres
from helpers.readers import refuse_reading, sparse_nrrd
from TokenUNetSegmentLib.pipeline import cli, segmentation, volumes
from TokenUNetSegmentLib.pipeline.errors import InputError, OutOfMemoryError
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing, image_from_array
from TokenUNetSegmentLib.pipeline.metadata import assign_inputs, parse_config
from TokenUNetSegmentLib.pipeline.package_loader import load_package
from TokenUNetSegmentLib.pipeline.segmentation import segment

SEQUENCES = ("T1", "T1c", "T2", "FLAIR")
# patterns as a package author would first write them: '*t1*' also matches 't1ce'
NAIVE_PATTERNS = (["*t1*"], ["*t1ce*", "*t1c*"], ["*t2*"], ["*flair*"])
BRATS = ("case_t1.nii.gz", "case_t1ce.nii.gz", "case_t2.nii.gz", "case_flair.nii.gz")
CENTER = np.array([2.0, -5.0, 10.0])


def mr_config(model_id="brats-tiny", patterns=NAIVE_PATTERNS):
    config = tiny_config(model_id, in_channels=4, labels=2, roi=(16, 16, 16), intensity={"method": "zscore"})
    for entry, name, names in zip(config["inputs"], SEQUENCES, patterns, strict=True):
        entry.update(name=name, modality="MR", patterns=list(names))
    return config


@pytest.fixture(scope="module")
def brats_case(tmp_path_factory):
    """(folder, a tiny 4-channel MR package, the four BraTS-named files on one 2 mm grid)."""
    root = tmp_path_factory.mktemp("brats")
    package = make_package(root, mr_config())
    affine = affine_from_spacing((2.0, 2.0, 2.0), origin=(-30, -30, -20))
    paths = []
    for index, name in enumerate(BRATS):
        image = physical_ball((30, 30, 24), affine, CENTER, 12.0, value=300 + 200 * index, background=0)
        sitk.WriteImage(image_from_array(image.astype(np.int16), affine), str(root / name))
        paths.append(str(root / name))
    return root, package, paths


def run_cli(package, out, *inputs) -> int:
    options = ["--no-overview", "--no-heatmaps", "--progress", "none", "--device", "cpu"]
    return cli.main(["segment", *map(str, inputs), "--model", str(package), "--out", str(out), *options])


def test_a_t1_pattern_that_also_matches_t1ce_leaves_that_file_to_t1c():
    config = parse_config(mr_config())
    for order in ([1, 0, 2, 3], [3, 1, 2, 0], [0, 1, 2, 3]):
        files = [f"/data/{BRATS[i]}" for i in order]
        assert assign_inputs(files, config) == {
            name: f"/data/{file}" for name, file in zip(SEQUENCES, BRATS, strict=True)
        }
    # DICOM series folders named by sequence, in the order a file browser lists them
    folders = ["flair", "t1ce", "t2", "t1"]
    assert list(assign_inputs(folders, config).values()) == ["t1", "t1ce", "t2", "flair"]


def test_the_command_puts_brats_files_in_channel_order_whatever_their_order(brats_case, tmp_path):
    root, package, paths = brats_case
    shuffled = [paths[1], paths[0], paths[3], paths[2]]  # t1ce first: '*t1*' used to take it for T1
    assert run_cli(package, tmp_path / "out", *shuffled) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["inputs"] == dict(zip(SEQUENCES, paths, strict=True))


def test_an_order_the_file_names_contradict_is_refused(brats_case, tmp_path, capsys):
    """T1c missing, a second T1 in its place: the names cannot be matched one to one, and the second T1 would be
    taken as T1c by its place: refused (it used to run, silently wrong)."""
    root, package, paths = brats_case
    second = root / "case_t1_repeat.nii.gz"
    second.write_bytes((root / BRATS[0]).read_bytes())
    assert run_cli(package, tmp_path / "out", paths[0], second, paths[2], paths[3]) == 2
    message = capsys.readouterr().err
    assert "case_t1_repeat.nii.gz is in channel T1c's place but is named like channel T1" in message
    assert "Traceback" not in message and not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="case_t1.nii.gz is in channel T1c's place but is named like channel T1 "):
        segment([paths[1], paths[0], paths[2], paths[3]], package, device="cpu")  # a list is in the channel order
    # names that match no channel keep the order given (the model's channel order)
    plain = []
    for index, path in enumerate(paths):
        plain.append(tmp_path / f"series{index}.nii.gz")
        plain[-1].write_bytes(open(path, "rb").read())
    assert run_cli(package, tmp_path / "plain", *plain) == 0
    report = json.loads((tmp_path / "plain" / "report.json").read_text())
    assert list(report["inputs"].values()) == [str(p) for p in plain]


def test_one_file_for_two_channels_is_refused(brats_case, tmp_path, capsys):
    root, package, paths = brats_case
    assert run_cli(package, tmp_path / "out", paths[0], paths[0], paths[2], paths[3]) == 2
    assert "case_t1.nii.gz is given for both channel 'T1' and channel 'T1c'" in capsys.readouterr().err
    # a DICOM folder given for every channel would read its largest series four times
    folder = tmp_path / "study"
    folder.mkdir()
    assert run_cli(package, tmp_path / "out", folder, f"{folder}/", folder / ".", folder) == 2
    assert "study is given for both channel 'T1' and channel 'T1c'" in capsys.readouterr().err
    with pytest.raises(InputError, match="given for both channel 'T2' and channel 'FLAIR'"):
        segment([paths[0], paths[1], paths[2], paths[2]], package, device="cpu")
    image, affine = physical_ball((20, 20, 20), np.eye(4), (10, 10, 10), 5.0, background=0), np.eye(4)
    with pytest.raises(InputError, match="the same array is given for both channel 'T1' and channel 'T1c'"):
        segment([(image, affine), (image, affine), (image + 1, affine), (image + 2, affine)], package, device="cpu")
    # the four channels of one 4D array, each its own view, are four images
    stacked = np.stack([image + i for i in range(4)], axis=-1)
    result = segment([(stacked[..., i], affine) for i in range(4)], package, device="cpu")
    assert result.labels.shape == image.shape


def test_the_channel_count_is_checked_before_any_file_is_opened(brats_case, tmp_path, capsys, monkeypatch):
    root, package, paths = brats_case

    def no_opening(*args, **kwargs):
        raise AssertionError("a file was opened before the channel count was checked")

    monkeypatch.setattr(volumes, "open_input", no_opening)
    assert run_cli(package, tmp_path / "out", *paths[:3]) == 2
    assert "needs 4 input channel(s) (T1, T1c, T2, FLAIR), got 3" in capsys.readouterr().err
    assert run_cli(package, tmp_path / "out", root) == 2  # a study folder holding the four series
    hint = "got 1 (one file or DICOM series per channel, or one 4D image of them all with --channels)"
    assert hint in capsys.readouterr().err
    # `segment case/*.nii.gz` on a BraTS training case takes its label map too
    assert run_cli(package, tmp_path / "out", *paths, root / "case_seg.nii.gz") == 2
    assert "got 5 (case_seg.nii.gz matches no channel; one file per channel)" in capsys.readouterr().err


def test_the_run_memory_estimate_counts_every_channel_s_own_array(brats_case, monkeypatch):
    """Channels on other grids stay in memory beside their copies on the first channel's grid."""
    estimates = []
    monkeypatch.setattr(segmentation, "check_memory", lambda estimate, device: estimates.append(estimate["host"]))
    first_affine = affine_from_spacing((2, 2, 2), origin=(-30, -30, -20))
    first = physical_ball((30, 30, 24), first_affine, CENTER, 12.0, value=400, background=0)
    for spacing in (2.0, 0.5):  # T2 at 0.5 mm: 64 times the voxels of the first channel, in the same box
        affine = affine_from_spacing((spacing,) * 3, origin=(-30, -30, -20))
        shape = tuple(int(n * 2 / spacing) for n in first.shape)
        other = physical_ball(shape, affine, CENTER, 12.0, value=300, background=0)
        inputs = [(first, first_affine), (first + 1, first_affine), (other, affine), (first + 3, first_affine)]
        segment(inputs, brats_case[1], device="cpu", with_token_maps=False)
    fine = 64 * first.size * 4  # float32
    assert estimates[1] - estimates[0] == fine - first.size * 4


def test_all_channels_are_counted_against_the_memory_limit_before_any_is_read(
    brats_case, tmp_path, capsys, monkeypatch
):
    """Each 30 x 30 x 24 int16 file alone fits 300 KB (its header check: 2 copies, 86 KB); the four as float32 (346
    KB) do not: refused from the headers, before any voxel is read."""
    root, package, paths = brats_case
    opened = volumes.open_input
    reads = []

    def counting(item, name=None, modality=""):
        header = opened(item, name, modality)
        return replace(header, read=lambda: reads.append(item) or header.read())

    loaded = load_package(package)  # before the limit, which its network alone would exceed
    monkeypatch.setattr(volumes, "open_input", counting)
    monkeypatch.setenv("TOKENUNET_MEMORY_LIMIT", "300K")
    assert run_cli(package, tmp_path / "out", *paths) == 2
    message = capsys.readouterr().err
    assert "the 4 input channels need about 338 KiB together" in message and "TOKENUNET_MEMORY_LIMIT" in message
    assert reads == []
    with pytest.raises(InputError, match="the 4 input channels need about 338 KiB together"):
        segment(paths, loaded, device="cpu")  # the Python API: the same check, before reading
    assert reads == []


def test_channels_that_fit_together_in_a_run_that_does_not_are_refused_before_any_is_read(
    brats_case, tmp_path, monkeypatch
):
    """Four 64^3 int16 files as float32 take 4 MiB together (check_channels_fit lets them pass under 4.5M); the run
    needs more (about 6.4 MiB): segment() with a dict or a list of paths refuses it from the headers, as the command
    does, before any voxel is read."""
    package = load_package(brats_case[1])  # before the limit
    paths = {name: sparse_nrrd(tmp_path / f"case_{name.lower()}.nrrd", (64, 64, 64)) for name in SEQUENCES}
    refuse_reading(monkeypatch)
    monkeypatch.setenv("TOKENUNET_MEMORY_LIMIT", "4.5M")
    for inputs in (paths, list(paths.values())):
        with pytest.raises(OutOfMemoryError, match=r"this run needs about .* TOKENUNET_MEMORY_LIMIT=4.5M"):
            segment(inputs, package, device="cpu", with_token_maps=False)


def test_hospital_grids_are_combined_in_physical_space_on_the_t1_grid():
    """T1 1 mm RAS-stored, T1c oblique, T2 axial 0.5 x 0.5 x 5 mm (LPS), FLAIR sagittal 1 mm (PSR): the model
    reading only FLAIR finds its ball at the same place in space, on T1's grid (the first channel's)."""
    grids = {
        "T1": ((50, 50, 40), affine_from_spacing((1, 1, 1), origin=(-23, -30, -10))),
        "T1c": ((64, 64, 30), affine_from_spacing((1.2, 1.2, 2.5), origin=(-35, -40, -30), direction=rotation(0, 20))),
        "T2": (
            (150, 150, 14),
            affine_from_spacing((0.5, 0.5, 5), origin=(40, 35, -20), direction=np.diag([-1.0, -1.0, 1.0])),
        ),
        "FLAIR": (
            (70, 60, 70),
            affine_from_spacing(
                (1, 1, 1), origin=(-35, 35, 45), direction=np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0.0]])
            ),
        ),
    }
    flair_ball = CENTER + np.array([4.0, -3.0, 2.0])
    channels = [
        (physical_ball(shape, affine, flair_ball if name == "FLAIR" else CENTER, 9.0, background=0), affine)
        for name, (shape, affine) in grids.items()
    ]
    package = threshold_package(in_channels=4, channel=3)
    result = segment(channels, package, device="cpu")
    shape, affine = grids["T1"]
    assert result.labels.shape == shape and np.allclose(result.affine, affine)
    centres = voxel_centres(shape, affine)
    assert np.linalg.norm(centres[result.labels == 1].mean(axis=0) - flair_ball) < 1.0
    assert result.warnings == []  # each sequence covers T1's box: nothing to report


def test_a_channel_covering_only_part_of_the_first_is_reported():
    affine = affine_from_spacing((2, 2, 2), origin=(-30, -30, -24))
    image = physical_ball((30, 30, 24), affine, CENTER, 12.0, value=400, background=0)
    shifted = affine_from_spacing((2, 2, 2), origin=(-30, -30, 8))  # 32 mm up: covers a third of T1's box
    flair = physical_ball((30, 30, 24), shifted, CENTER, 12.0, value=400, background=0)
    channels = [(image, affine), (image + 1, affine), (image + 2, affine), (flair, shifted)]
    with pytest.warns(UserWarning, match="covers only"):
        result = segment(channels, threshold_package(in_channels=4), device="cpu")
    (warning,) = [w for w in result.warnings if "covers only" in w]
    assert "channel 'ch3' covers only 33% of channel 'ch0', whose grid" in warning


def test_a_ct_given_to_an_mr_channel_is_reported_and_mr_values_are_not(brats_case):
    """By its values (a NIfTI has no Modality; a DICOM CT series is refused, test_dicom.py); the CT checks of CT
    models (``not_ct``) stay silent for an MR model."""
    package = brats_case[1]
    affine = affine_from_spacing((2, 2, 2))
    mr = physical_ball((30, 30, 24), affine, (30, 30, 24), 20.0, value=400, background=0)
    ct = physical_ball((30, 30, 24), affine, (30, 30, 24), 20.0, value=40, background=-1000)
    with pytest.warns(UserWarning, match="looks like a CT"):
        result = segment([(mr, affine), (mr + 1, affine), (ct, affine), (mr + 3, affine)], package, device="cpu")
    assert [w for w in result.warnings if "channel 'T2' looks like a CT, not an MRI" in w]
    # MRI values of every kind: uint16 to 65535, scaled floats in [0, 1], negative values after processing
    uint16 = (mr * 160).astype(np.uint16)
    scaled = (mr / 400).astype(np.float32)
    negative = mr - 50
    result = segment([(uint16, affine), (scaled, affine), (negative, affine), (mr, affine)], package, device="cpu")
    assert not [w for w in result.warnings if "CT" in w]
    assert result.assessment is not None and "not_ct" not in [f.code for f in result.assessment.flags]


def test_mr_dicom_series_in_one_folder_are_chosen_by_a_file_each_and_a_ct_series_is_refused(
    brats_case, tmp_path, capsys
):
    """Four MR series in one flat folder (as a PACS export writes them): one file of each chooses it, in the
    model's channel order (the file names say nothing of the sequence); a CT series given for T1 is refused."""
    from helpers.readers import write_dicom_series

    package = brats_case[1]
    pixels = (physical_ball((24, 20, 16), np.eye(4), (12, 10, 8), 6.0, value=400, background=0)).transpose(2, 1, 0)
    study = tmp_path / "study"
    for index, name in enumerate(SEQUENCES):
        uid = f"1.2.826.0.1.3680043.2.1125.5.{index}"
        thin = index == 0  # T1 in 1 mm slices: the largest series, the one its folder stands for
        slices, spacing = (np.repeat(pixels, 2, axis=0), (2, 2, 1)) if thin else (pixels, (2, 2, 2))
        write_dicom_series(
            study, slices + index, spacing=spacing, series=uid, description=name, prefix=f"S{index}_", modality="MR"
        )
    firsts = [study / f"S{index}_0001.dcm" for index in range(4)]
    assert run_cli(package, tmp_path / "out", *firsts) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert list(report["inputs"]) == list(SEQUENCES) and report["warnings"] == []
    # the folder (its largest series, T1) and a file of T1: one series for two channels, through two paths
    assert run_cli(package, tmp_path / "out1", firsts[0], study, *firsts[2:]) == 2
    assert "the DICOM series 'T1' is given for both channel 'T1' and channel 'T1c'" in capsys.readouterr().err
    # FLAIR and T1 swapped: their descriptions say so (a warning: descriptions are free text)
    assert run_cli(package, tmp_path / "swapped", firsts[3], *firsts[1:3], firsts[0]) == 0
    warnings = json.loads((tmp_path / "swapped" / "report.json").read_text())["warnings"]
    assert "the DICOM series given for channel 'T1' is described 'FLAIR', like channel 'FLAIR'" in warnings[0]
    assert "the DICOM series given for channel 'FLAIR' is described 'T1', like channel 'T1'" in warnings[1]
    # hospital descriptions: 'T1 +C' for T1c matches T1's pattern '*t1*', but T1 has its own T1 series: no warning
    for index, description in enumerate(["T1 SE AX", "T1 SE AX +C", "T2 TSE AX", "FLAIR 3D"]):
        write_dicom_series(
            tmp_path / "hospital" / str(index),
            pixels,
            spacing=(2, 2, 2),
            description=description,
            modality="MR",
            series=f"1.2.826.0.1.3680043.2.1125.6.{index}",
        )
    folders = [tmp_path / "hospital" / str(index) for index in range(4)]
    assert run_cli(package, tmp_path / "hospital-out", *folders) == 0
    assert json.loads((tmp_path / "hospital-out" / "report.json").read_text())["warnings"] == []
    write_dicom_series(tmp_path / "ct", pixels - 1000, spacing=(2, 2, 2), modality="CT")
    assert run_cli(package, tmp_path / "out2", tmp_path / "ct", *firsts[1:]) == 2
    assert "the DICOM series ct is CT (its Modality); model 'brats-tiny' expects MR for its input T1" in (
        capsys.readouterr().err
    )
