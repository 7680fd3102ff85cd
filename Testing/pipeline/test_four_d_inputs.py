"""One 4D NIfTI image holding a multi-channel model's channels (the Medical Segmentation Decathlon's Task01 layout:
``imagesTr/BRATS_001.nii.gz`` of X x Y x Z x 4, ``dataset.json`` naming the volumes FLAIR, T1w, t1gd, T2w), through
the command line and ``segment()``: the channel order comes from ``--channels``/``channels=`` or the dataset.json,
never from a guess; the result is the one of the four 3D files, voxel for voxel; bad 4D images are refused from their
headers. The same volumes as a NRRD (a ``list`` or ``vector`` axis, ITK's 4th domain axis) or a MetaImage (a 4th axis,
or channels per voxel) are read alike."""

import gzip
import json
import re
import struct

import numpy as np
import pytest
import SimpleITK as sitk
from helpers.packages import ThresholdNet, make_package, physical_ball, rotation, tiny_config, voxel_centres
from helpers.readers import refuse_reading
from TokenUNetSegmentLib.pipeline import cli
from TokenUNetSegmentLib.pipeline.errors import InputError
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing, image_from_array
from TokenUNetSegmentLib.pipeline.package_writer import package_in_memory
from TokenUNetSegmentLib.pipeline.segmentation import segment

# runs of the 4D image and of its 3D files are compared voxel for voxel: on one thread, whatever the machine's load
# (a random-weight model's near-tied voxels moved with the thread count: evaluate's Dice 1.0 failed 2 of 5 times)
pytestmark = pytest.mark.usefixtures("one_inference_thread")

SEQUENCES = ("T1", "T1c", "T2", "FLAIR")  # the package's order
MSD_ORDER = ("FLAIR", "T1w", "t1gd", "T2w")  # Task01_BrainTumour's dataset.json "modality"
SHAPE = (16, 16, 16)
AFFINE = affine_from_spacing((2.0, 2.0, 2.5), origin=(-14.0, 12.0, -20.0), direction=rotation(2, 25) @ rotation(0, 10))
CENTRES = {  # each sequence's ball at its own place: a swapped channel shows
    "T1": (-2.0, 24.0, -2.0),
    "T1c": (4.0, 26.0, -4.0),
    "T2": (-4.0, 20.0, 2.0),
    "FLAIR": (-6.0, 28.0, 0.0),
}


def mr_config(model_id="brats-4d"):
    config = tiny_config(model_id, in_channels=4, labels=2, roi=(16, 16, 16))
    for entry, name in zip(config["inputs"], SEQUENCES, strict=True):
        entry.update(name=name, modality="MR", patterns=[f"*_{name.lower()}.*"])
    return config


def flair_threshold():
    """A package that labels where FLAIR (its 4th channel) is bright: the label is FLAIR's ball only when FLAIR went
    to its channel."""
    config = mr_config("flair-threshold")
    config["labels"] = config["labels"][:1]
    config["architecture"]["out_channels"] = 2
    return package_in_memory(ThresholdNet(4, 3), config, "threshold")


def write_4d(path, images, xyzt_units=None, pixdim4=None, intent=None):
    """A 4D NIfTI of 3D SimpleITK images (ITK writes xyzt_units mm and s, pixdim[4] 1); header fields edited after."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.JoinSeries(images), str(path))
    if xyzt_units is not None or pixdim4 is not None or intent is not None:
        image = sitk.ReadImage(str(path))
        sitk.WriteImage(image, str(path.with_suffix("")), useCompression=False)  # .nii to edit in place
        raw = bytearray(path.with_suffix("").read_bytes())
        if xyzt_units is not None:
            raw[123] = xyzt_units
        if pixdim4 is not None:
            struct.pack_into("<f", raw, 76 + 4 * 4, pixdim4)
        if intent is not None:
            struct.pack_into("<h", raw, 68, intent)
        path.with_suffix("").write_bytes(bytes(raw))
        path.unlink()
        return path.with_suffix("")
    return path


@pytest.fixture(scope="module")
def task01(tmp_path_factory):
    """(root, the four 3D files in the package's order, the 4D image in MSD order, package path)."""
    root = tmp_path_factory.mktemp("task01")
    images = {}
    files = []
    for value, name in enumerate(SEQUENCES):
        array = physical_ball(SHAPE, AFFINE, CENTRES[name], 6.0, value=300 + 100 * value, background=0)
        images[name] = image_from_array(array.astype(np.int16), AFFINE)
        files.append(root / f"BRATS_001_{name.lower()}.nii.gz")
        sitk.WriteImage(images[name], str(files[-1]))
    msd = ("FLAIR", "T1", "T1c", "T2")
    four_d = write_4d(root / "Task01_BrainTumour" / "imagesTr" / "BRATS_001.nii.gz", [images[n] for n in msd])
    (root / "Task01_BrainTumour" / "dataset.json").write_text(
        json.dumps({"name": "BRATS", "modality": dict(enumerate(MSD_ORDER)), "labels": {"0": "background"}})
    )
    package = make_package(root, mr_config())
    return root, files, four_d, package, images


def run_cli(package, out, *inputs, options=()) -> int:
    fixed = ["--no-overview", "--no-heatmaps", "--progress", "none", "--device", "cpu"]
    return cli.main(["segment", *map(str, inputs), "--model", str(package), "--out", str(out), *fixed, *options])


def read_labels(folder):
    image = sitk.ReadImage(str(folder / "segmentation.seg.nrrd"))
    return sitk.GetArrayFromImage(image), np.array([*image.GetOrigin(), *image.GetSpacing(), *image.GetDirection()])


def test_the_command_segments_a_4d_image_in_its_dataset_json_order_as_its_four_3d_files(task01, tmp_path, capsys):
    root, files, four_d, package, _ = task01
    assert run_cli(package, tmp_path / "three", *files) == 0
    assert run_cli(package, tmp_path / "four", four_d) == 0
    note = capsys.readouterr().err
    order = "T1 = volume 1, T1c = volume 2, T2 = volume 3, FLAIR = volume 0"
    assert f"note: BRATS_001.nii.gz holds the channels in 4D: {order} (order from " in note
    assert "dataset.json" in note
    three, four = read_labels(tmp_path / "three"), read_labels(tmp_path / "four")
    assert np.array_equal(three[0], four[0]) and np.allclose(three[1], four[1])
    report = json.loads((tmp_path / "four" / "report.json").read_text())
    assert report["channel_order"]["source"].endswith("dataset.json")
    assert report["channel_order"]["volumes"] == {"T1": 1, "T1c": 2, "T2": 3, "FLAIR": 0}
    # --channels overrides the dataset.json (here with the package's own names, in other cases)
    assert run_cli(package, tmp_path / "given", four_d, options=["--channels", "flair,T1,T1ce,t2"]) == 0
    assert "(order from --channels)" in capsys.readouterr().err
    assert np.array_equal(read_labels(tmp_path / "given")[0], three[0])


def test_segment_takes_a_4d_image_and_puts_each_sequence_in_its_channel(task01, tmp_path):
    """FLAIR's ball is found where FLAIR is, on the 4D image's 3D grid, exactly as from the 3D files."""
    root, files, four_d, _, images = task01
    package = flair_threshold()
    from_files = segment([str(f) for f in files], package, device="cpu")
    from_4d = segment(str(four_d), package, device="cpu")
    assert np.array_equal(from_files.labels, from_4d.labels) and np.allclose(from_files.affine, from_4d.affine)
    assert from_4d.labels.shape == SHAPE and np.allclose(from_4d.affine, AFFINE, atol=1e-4)
    centres = voxel_centres(SHAPE, from_4d.affine)
    assert np.linalg.norm(centres[from_4d.labels == 1].mean(axis=0) - CENTRES["FLAIR"]) < 1.0
    # an order given wrongly by the user is theirs: the label follows the volume named FLAIR
    wrong = segment(str(four_d), package, device="cpu", channels=["T1", "FLAIR", "T1c", "T2"])
    assert np.linalg.norm(centres[wrong.labels == 1].mean(axis=0) - CENTRES["T1"]) < 1.0
    # without a dataset.json and without channels=: refused, saying what to pass
    alone = tmp_path / "BRATS_001.nii.gz"
    alone.write_bytes(four_d.read_bytes())
    expected = r"nothing says which channel each one is \(name its volumes in order, e.g. channels=\['T1'"
    with pytest.raises(InputError, match=expected):
        segment(str(alone), package, device="cpu")


def test_a_4d_image_without_an_order_is_refused_saying_what_to_pass(task01, tmp_path, capsys, monkeypatch):
    root, files, four_d, package, _ = task01
    alone = tmp_path / "BRATS_001.nii.gz"
    alone.write_bytes(four_d.read_bytes())
    refuse_reading(monkeypatch)
    assert run_cli(package, tmp_path / "out", alone) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: BRATS_001.nii.gz holds 4 volumes (a 4D image), and nothing says which channel")
    assert "(name its volumes in order, e.g. --channels T1,T1c,T2,FLAIR, or put its dataset.json beside imagesTr/)" in (
        error
    )
    assert error.count("\n") == 1 and not (tmp_path / "out").exists()


def refusals(task01, tmp_path):
    """(what, inputs, options, the message's start) of 4D inputs refused from their headers."""
    root, files, four_d, package, images = task01
    three = write_4d(tmp_path / "imagesTr" / "three.nii.gz", [images[n] for n in SEQUENCES[:3]])
    fmri = write_4d(tmp_path / "fmri.nii.gz", [images[n] for n in SEQUENCES], xyzt_units=2 | 8, pixdim4=2.0)
    series = write_4d(tmp_path / "series.nii.gz", [images[n] for n in SEQUENCES], intent=2001)
    five = tmp_path / "five.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([sitk.JoinSeries([images[n] for n in SEQUENCES])] * 2), str(five))
    return {
        "three volumes": ([three], ["--channels", "T1,T1c,T2"], "three.nii.gz holds 3 volumes along its 4th axis"),
        "a name twice": (
            [four_d],
            ["--channels", "FLAIR,T1,t1ce,T1c"],
            "'t1ce' (volume 2 in --channels) and 'T1c' (volume 3 in --channels) both name channel T1c",
        ),
        "an unknown name": (
            [four_d],
            ["--channels", "FLAIR,T1,T1c,DWI"],
            "'DWI' (volume 3 in --channels) names no channel of model 'brats-4d' (use T1, T1c, T2, FLAIR;",
        ),
        "too few names": ([four_d], ["--channels", "FLAIR,T1"], "--channels names 2 volumes; BRATS_001.nii.gz holds 4"),
        "time": ([fmri], ["--channels", "T1,T1c,T2,FLAIR"], "fmri.nii is a 4D image whose 4th axis is time"),
        "time series intent": ([series], [], "series.nii is a 4D image whose 4th axis is a time series"),
        "5D": ([five], ["--channels", "T1,T1c,T2,FLAIR"], "five.nii.gz has 5 dimensions"),
        "a 4D among 3D files": (
            [four_d, *files[1:]],
            [],
            "BRATS_001.nii.gz is a 4D image of 4 volumes, given for channel T1 (give one",
        ),
        "channels for 3D files": (
            files,
            ["--channels", "T1,T1c,T2,FLAIR"],
            "--channels names the volumes of one 4D image, but 4 inputs are given",
        ),
    }


def test_bad_4d_inputs_are_refused_from_their_headers_in_one_line(task01, tmp_path, capsys, monkeypatch):
    package = task01[3]
    cases = refusals(task01, tmp_path)
    refuse_reading(monkeypatch)
    for what, (inputs, options, start) in cases.items():
        assert run_cli(package, tmp_path / "out", *inputs, options=options) == 2, what
        error = capsys.readouterr().err
        assert error.startswith(f"error: {start}"), (what, error)
        assert error.count("\n") == 1 and "Traceback" not in error, what


def test_a_4d_image_for_a_one_channel_model_is_refused_before_reading(task01, tmp_path, capsys, monkeypatch):
    root, files, four_d, _, _ = task01
    ct = make_package(tmp_path, tiny_config())
    refuse_reading(monkeypatch)
    assert run_cli(ct, tmp_path / "out", four_d) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: BRATS_001.nii.gz holds 4 volumes (a 4D image); model 'tiny-ct' takes one 3D volume")
    with pytest.raises(InputError, match="holds 4 volumes"):
        segment(str(four_d), ct, device="cpu")


def test_a_4d_read_is_checked_against_the_memory_limit_from_its_header(task01, tmp_path, capsys, monkeypatch):
    """Reading a 4D image holds all its channels at once: the limit is checked on the whole image, before reading."""
    root, files, four_d, package, _ = task01
    refuse_reading(monkeypatch)
    monkeypatch.setenv("TOKENUNET_MEMORY_LIMIT", "40K")  # one 16^3 int16 volume read: 16 KiB; the four: 64 KiB
    assert run_cli(package, tmp_path / "out", four_d) == 2
    error = capsys.readouterr().err
    assert "BRATS_001.nii.gz declares 16 x 16 x 16 x 4 voxels of int16" in error and "TOKENUNET_MEMORY_LIMIT" in error


def test_a_dict_names_channels_in_any_case_and_with_synonyms(task01):
    root, files, four_d, _, _ = task01
    package = flair_threshold()
    by_name = dict(zip(("t1", "T1CE", "t2w", "flair"), map(str, files), strict=True))
    result = segment(by_name, package, device="cpu")
    assert np.array_equal(result.labels, segment([str(f) for f in files], package, device="cpu").labels)
    with pytest.raises(InputError, match=r"missing: T1c; given twice: T1 \(as t1, T1w\)"):
        segment({"t1": files[0], "T1w": files[1], "t2": files[2], "flair": files[3]}, package, device="cpu")
    with pytest.raises(InputError, match="unknown: dwi"):
        segment({"t1": files[0], "t1c": files[1], "t2": files[2], "dwi": files[3]}, package, device="cpu")


def test_evaluate_runs_a_model_on_a_4d_image(task01, tmp_path, capsys):
    root, files, four_d, package, _ = task01
    assert run_cli(package, tmp_path / "three", *files) == 0
    reference = tmp_path / "three" / "segmentation.seg.nrrd"
    out = tmp_path / "evaluation.json"
    assert (
        cli.main(["evaluate", str(reference), "--model", str(package), "--image", str(four_d), "--json", str(out)]) == 0
    )
    result = json.loads(out.read_text())
    dices = [m["dice"] for m in result["labels"].values()]
    assert 1.0 in dices and set(dices) <= {1.0, None}  # the same labels as from the 3D files
    options = ["--image", str(four_d), "--channels", "FLAIR,T1"]
    assert cli.main(["evaluate", str(reference), "--model", str(package), *options]) == 2
    assert "error: --channels names 2 volumes; BRATS_001.nii.gz holds 4" in capsys.readouterr().err


def hostile_dataset_jsons():
    """(what, dataset.json bytes or a maker, the message's start after 'error: ') of dataset.json files that must be
    refused in one line, from the JSON, before any voxel is read."""
    good = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
    return {
        "nested": (b"[" * 100_000 + b"]" * 100_000, "{json} nests 100000 levels deep"),
        "too large": (b" " * (16 * 2**20 + 1) + b"{}", "{json} is too large for a JSON file"),
        "two 'modality' keys": (
            f'{{"modality": {json.dumps(good)}, "modality": {json.dumps(dict(enumerate(reversed(MSD_ORDER))))}}}',
            "{json} is not valid JSON: the key 'modality' appears twice",
        ),
        "one number twice": (
            '{"modality": {"0": "FLAIR", "1": "T1w", "1": "t1gd", "2": "T1w", "3": "T2w"}}',
            "{json} is not valid JSON: the key '1' appears twice",
        ),
        "modality and channel_names disagree": (
            json.dumps({"modality": good, "channel_names": dict(enumerate(reversed(MSD_ORDER)))}),
            "{json} names its channels twice, differently, in 'modality' and 'channel_names'",
        ),
        "a folder": (None, "{json} is a folder, not a JSON file"),
    }


def test_a_hostile_dataset_json_is_refused_in_one_line_saying_to_pass_channels(task01, tmp_path, capsys, monkeypatch):
    root, files, four_d, package, _ = task01
    refuse_reading(monkeypatch)
    for what, (content, start) in hostile_dataset_jsons().items():
        dataset = tmp_path / what.replace(" ", "_").replace("'", "")
        image = dataset / "imagesTs" / "BRATS_485.nii.gz"
        image.parent.mkdir(parents=True)
        image.write_bytes(four_d.read_bytes())
        if content is None:
            (dataset / "dataset.json").mkdir()
        else:
            (dataset / "dataset.json").write_bytes(content if isinstance(content, bytes) else content.encode())
        assert run_cli(package, tmp_path / "out", image) == 2, what
        error = capsys.readouterr().err  # one line (a long path may be cut in its middle)
        assert error.startswith("error: ") and error.endswith("pass --channels naming its volumes in order)\n"), what
        assert error.count("\n") == 1 and "Traceback" not in error, what
        with pytest.raises(InputError) as refused:
            segment(str(image), package, device="cpu")
        assert str(refused.value).startswith(start.format(json=dataset / "dataset.json")), (what, str(refused.value))
        assert refused.value.hint == "fix it, or pass channels= naming its volumes in order", what


def test_dataset_json_names_that_name_no_sequence_say_to_pass_channels(task01, tmp_path, capsys):
    """nnU-Net v2's channel_names may hold normalisation schemes (noNorm, zscore), which say nothing of the sequence:
    refused, and the hint says how to name the volumes instead of the dataset.json."""
    root, files, four_d, package, _ = task01
    image = tmp_path / "Dataset001" / "imagesTs" / "BRATS_485.nii.gz"
    image.parent.mkdir(parents=True)
    image.write_bytes(four_d.read_bytes())
    schemes = {"0": "noNorm", "1": "zscore", "2": "zscore", "3": "zscore"}
    (image.parent.parent / "dataset.json").write_text(json.dumps({"channel_names": schemes}))
    assert run_cli(package, tmp_path / "out", image) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: 'noNorm' (volume 0 in dataset.json) names no channel of model 'brats-4d'")
    assert "pass --channels naming its volumes in order" in error and error.count("\n") == 1


def test_dataset_json_numbers_past_nine_are_read_in_numeric_order(tmp_path):
    from TokenUNetSegmentLib.pipeline.channel_stack import dataset_names

    image = tmp_path / "imagesTr" / "case.nii.gz"
    image.parent.mkdir()
    names = [f"sequence{i}" for i in range(12)]
    (tmp_path / "dataset.json").write_text(json.dumps({"modality": {str(i): n for i, n in enumerate(names)}}))
    assert dataset_names(image) == (names, tmp_path / "dataset.json")


def test_a_vector_nifti_to_a_ct_model_is_refused_as_volumes_and_a_displacement_field_as_components(
    task01, tmp_path, capsys
):
    """A NIfTI of vectors (intent VECTOR, the values in dim[5], dim[4] 1: what ITK writes for a multi-component image,
    e.g. sequences joined with SimpleITK's Compose) holds volumes as a NRRD vector axis does: a CT model refuses it
    from its header in those words (before: "has 3 components per voxel", and a four-channel model refused the four
    sequences it holds). A displacement field (intent DISPVECT) stays one quantity per voxel."""
    root, files, four_d, package, images = task01
    vector = tmp_path / "vector.nii.gz"
    sitk.WriteImage(sitk.Compose([images[name] for name in SEQUENCES[:3]]), str(vector))
    ct = make_package(tmp_path, tiny_config())
    assert run_cli(ct, tmp_path / "out", vector) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: vector.nii.gz holds 3 volumes (a 4D image); model 'tiny-ct' takes one 3D volume")
    assert error.count("\n") == 1
    field, floats = tmp_path / "field.nii", tmp_path / "floats.nii.gz"  # ITK turns displacements to RAS: floats only
    sitk.WriteImage(sitk.Compose([sitk.Cast(images[name], sitk.sitkFloat32) for name in SEQUENCES[:3]]), str(floats))
    data = bytearray(gzip.decompress(floats.read_bytes()))
    data[68:70] = (1006).to_bytes(2, "little")  # NIFTI_INTENT_DISPVECT
    field.write_bytes(bytes(data))
    assert run_cli(ct, tmp_path / "out", field) == 2
    expected = "error: field.nii has 3 components per voxel (use one scalar volume per channel)\n"
    assert capsys.readouterr().err == expected


def test_channel_names_given_where_no_4d_image_can_take_them_are_refused_saying_what_is_given(task01, tmp_path, capsys):
    """--channels with the 4D image twice, with a numpy file, with a one-channel model; channels= with a 4D array, and a
    4D array without it: each refusal says what is wrong with what was given (before: "the input is no 4D NIfTI image"
    for a 4D NIfTI given twice, "needs 1 channels ... a 4D image of 1 volumes" for a CT model, "got 1" for an array of
    four channels)."""
    root, files, four_d, package, images = task01
    other = tmp_path / "BRATS_001.npy"
    np.save(other, np.stack([sitk.GetArrayFromImage(images[name]) for name in SEQUENCES]))
    ct = make_package(tmp_path, tiny_config())
    names = ["--channels", "FLAIR,T1,T1c,T2"]
    cases = [
        (package, [four_d, four_d], "--channels names the volumes of one 4D image, but 2 inputs are given"),
        (package, [other], "--channels names the volumes of a 4D image; BRATS_001.npy is no NIfTI, NRRD or MetaImage"),
        (ct, [four_d], "--channels names the volumes of a multi-channel 4D image; model 'tiny-ct' takes one 3D volume"),
    ]
    for model, inputs, start in cases:
        assert run_cli(model, tmp_path / "out", *inputs, options=names) == 2, start
        error = capsys.readouterr().err
        assert error.startswith(f"error: {start}") and error.count("\n") == 1, error
    stacked = np.stack([sitk.GetArrayFromImage(images[name]).T for name in SEQUENCES], axis=-1)
    with pytest.raises(InputError, match=r"channels= names the volumes of a 4D image file, not of an array"):
        segment((stacked, AFFINE), package, device="cpu", channels=list(SEQUENCES))
    expected = (
        r"got 1 \(an array of 4 dimensions: pass one \(array, ijk_to_ras\) pair per channel: T1, T1c, T2, FLAIR\)"
    )
    with pytest.raises(InputError, match=expected):
        segment((stacked, AFFINE), package, device="cpu")


def test_a_hand_edited_datalist_channels_entry_is_refused_with_an_example_in_json(task01):
    """A datalist's "channels" of the wrong length: the example is the JSON to write (before: "e.g. the datalist's
    'channels' T1,T1c,T2,FLAIR", a command-line form for a JSON file)."""
    from TokenUNetSegmentLib.pipeline.channel_stack import open_stack
    from TokenUNetSegmentLib.pipeline.metadata import parse_config

    four_d = task01[2]
    config = parse_config(mr_config(), "test")
    with pytest.raises(InputError) as refused:
        open_stack(four_d, config, "brats-4d", ["FLAIR", "T1w", "t1gd"], "the datalist's 'channels'")
    assert str(refused.value) == (
        "the datalist's 'channels' names 3 volumes; BRATS_001.nii.gz holds 4 "
        '(name each of its 4 volumes in order, e.g. "channels": ["T1", "T1c", "T2", "FLAIR"])'
    )


def scaled_nifti(path, images, slope, inter):
    """3D ``images`` written as one uncompressed NIfTI (4D for several) whose int16 values are (value - inter) /
    slope, with that scl_slope and scl_inter."""
    stored = [sitk.Cast((sitk.Cast(image, sitk.sitkFloat32) - inter) / slope, sitk.sitkInt16) for image in images]
    sitk.WriteImage(stored[0] if len(stored) == 1 else sitk.JoinSeries(stored), str(path))
    raw = bytearray(path.read_bytes())
    struct.pack_into("<ff", raw, 112, slope, inter)  # scl_slope, scl_inter
    path.write_bytes(bytes(raw))
    return path


def test_a_4d_nifti_with_a_flipped_oblique_affine_and_scaled_values_lands_where_its_3d_files_do(tmp_path):
    """An LPS-flipped (negative determinant), oblique, anisotropic 4D NIfTI of int16 values with scl_slope/scl_inter:
    the labels of the four 3D files written the same way, voxel for voxel, on the same grid, and FLAIR's ball at its
    place in physical space (scl_slope applies to every volume)."""
    flip = np.diag([-1.0, -1.0, -1.0])
    affine = affine_from_spacing((1.5, 2.0, 2.5), origin=(30.0, -12.0, 40.0), direction=rotation(2, 25) @ flip)
    assert np.linalg.det(affine[:3, :3]) < 0
    shape, centre = (20, 18, 16), np.array([10.0, 9.0, 8.0, 1.0])
    places = {name: (affine @ centre)[:3] + (index - 1.5) * 4.0 for index, name in enumerate(SEQUENCES)}
    images = {
        name: image_from_array(physical_ball(shape, affine, places[name], 7.0, 300 + 100 * i, 0), affine)
        for i, name in enumerate(SEQUENCES)
    }
    files = [str(scaled_nifti(tmp_path / f"case_{n.lower()}.nii", [images[n]], 2.0, -100.0)) for n in SEQUENCES]
    four_d = scaled_nifti(tmp_path / "case.nii", [images[n] for n in SEQUENCES], 2.0, -100.0)
    package = flair_threshold()
    from_files = segment(files, package, device="cpu")
    from_4d = segment(str(four_d), package, device="cpu", channels=list(SEQUENCES))
    assert from_4d.labels.sum() > 0 and np.array_equal(from_files.labels, from_4d.labels)
    assert np.allclose(from_4d.affine, from_files.affine, atol=1e-5)
    assert np.allclose(from_4d.affine, affine, atol=1e-4)
    found = voxel_centres(from_4d.labels.shape, from_4d.affine)[from_4d.labels == 1].mean(axis=0)
    assert np.linalg.norm(found - places["FLAIR"]) < 1.0


def test_a_dataset_json_that_lists_its_images_names_only_those(task01, tmp_path, capsys, monkeypatch):
    """An MSD dataset.json lists its images ("training" and "test"): an image it does not list (a case from another
    dataset copied into imagesTs) may hold its volumes in another order, so the dataset.json does not name them
    (before: its order taken without a word)."""
    root, files, four_d, package, _ = task01
    dataset = tmp_path / "Task01_BrainTumour"
    for name in ("BRATS_485.nii.gz", "other_001.nii.gz"):
        (dataset / "imagesTs").mkdir(parents=True, exist_ok=True)
        (dataset / "imagesTs" / name).write_bytes(four_d.read_bytes())
    spec = {
        "modality": dict(enumerate(MSD_ORDER)),
        "training": [{"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}],
        "test": ["./imagesTs/BRATS_485.nii.gz"],
    }
    (dataset / "dataset.json").write_text(json.dumps(spec))
    assert run_cli(package, tmp_path / "listed", dataset / "imagesTs" / "BRATS_485.nii.gz") == 0
    capsys.readouterr()
    refuse_reading(monkeypatch)
    assert run_cli(package, tmp_path / "unlisted", dataset / "imagesTs" / "other_001.nii.gz") == 2
    error = capsys.readouterr().err  # one line (the long path cut in its middle)
    assert error.endswith("(pass --channels naming its volumes in order)\n") and error.count("\n") == 1
    expected = f"{dataset / 'dataset.json'} does not list imagesTs/other_001.nii.gz among its images, so its channel"
    with pytest.raises(InputError, match=re.escape(expected)):
        segment(str(dataset / "imagesTs" / "other_001.nii.gz"), package, device="cpu")


def test_nan_and_infinite_values_of_a_4d_image_to_train_on_are_refused_in_trainings_words(task01, tmp_path):
    """A datalist case whose 4D image holds a NaN (counted by the NIfTI reader) or values its scl_slope makes infinite
    (counted once read). Before: both said "... before segmenting", segment's hint, when training."""
    from TokenUNetSegmentLib.pipeline.training.data import load_case, read_datalist

    images = task01[4]
    floats = [sitk.Cast(images[name], sitk.sitkFloat32) for name in SEQUENCES]
    values = sitk.GetArrayFromImage(floats[2])
    values[3, 4, 5] = np.nan
    floats[2] = image_from_array(values.transpose(2, 1, 0), AFFINE)
    nan_image = write_4d(tmp_path / "nan.nii.gz", floats)
    huge_image = tmp_path / "huge.nii"  # stored 300 to 600, scl_slope 1e36: from 400 on past float32's 3.4e38
    sitk.WriteImage(sitk.JoinSeries([images[name] for name in SEQUENCES]), str(huge_image))
    raw = bytearray(huge_image.read_bytes())
    struct.pack_into("<ff", raw, 112, 1e36, 0.0)
    huge_image.write_bytes(bytes(raw))
    sitk.WriteImage(sitk.Cast(images["T1"] > 0, sitk.sitkUInt8), str(tmp_path / "label.nii.gz"))
    for image, says in ((nan_image, "nan.nii.gz has 1 NaN"), (huge_image, "huge.nii, volume 1 has ")):
        entry = {"image": image.name, "label": "label.nii.gz", "channels": list(SEQUENCES), "labels": {"1": "organ1"}}
        (tmp_path / "list.json").write_text(json.dumps({"training": [entry]}))
        case = read_datalist(tmp_path / "list.json")["training"][0]
        with pytest.raises(InputError, match=re.escape(says)) as refused:
            load_case(case, mr_config(), 8, (16, 16, 16))
        assert refused.value.hint.endswith(" before training"), refused.value.hint


def nrrd_vector(values) -> str:
    return "(" + ",".join(f"{value:.17g}" for value in values) + ")"


def write_nrrd(path, images, first=True, kind="list", space="left-posterior-superior", fields=""):
    """The 3D SimpleITK ``images`` (int16, one grid) as one NRRD whose axis of volumes, of ``kind``, is first (Slicer's
    layout: ``sizes: 4 X Y Z``, ``space directions: none (..) (..) (..)``) or last (``X Y Z 4``, ``... none``), in LPS
    as ITK and Slicer write it; ``fields``: more header lines."""
    arrays = [sitk.GetArrayFromImage(image) for image in images]  # (k, j, i)
    scaled = np.asarray(images[0].GetDirection()).reshape(3, 3) * np.asarray(images[0].GetSpacing())
    axes = [nrrd_vector(scaled[:, axis]) for axis in range(3)]
    x, y, z = images[0].GetSize()
    if first:
        data, sizes, kinds, directions = np.stack(arrays, axis=-1), f"{len(arrays)} {x} {y} {z}", f"{kind} ", ["none"]
        directions += axes
    else:
        data, sizes, kinds, directions = np.stack(arrays), f"{x} {y} {z} {len(arrays)}", "", [*axes, "none"]
    kinds = f"{kinds}domain domain domain" + ("" if first else f" {kind}")
    header = (
        f"NRRD0005\ntype: short\ndimension: 4\nspace: {space}\nsizes: {sizes}\n"
        f"space directions: {' '.join(directions)}\nkinds: {kinds}\nendian: little\nencoding: raw\n"
        f"space origin: {nrrd_vector(images[0].GetOrigin())}\n{fields}\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.encode() + data.astype("<i2").tobytes())
    return path


FOUR_D_LAYOUTS = {
    "NRRD, list axis first (Slicer)": ("nrrd", lambda path, images: write_nrrd(path, images)),
    "NRRD, list axis last (teem)": ("nrrd", lambda path, images: write_nrrd(path, images, first=False)),
    "NRRD, vector axis (SimpleITK Compose)": ("nrrd", lambda path, images: sitk.WriteImage(sitk.Compose(images), path)),
    "NRRD, 4th domain axis (SimpleITK JoinSeries)": (
        "nrrd",
        lambda path, ims: sitk.WriteImage(sitk.JoinSeries(ims), path),
    ),
    "MetaImage, NDims 4": ("mha", lambda path, images: sitk.WriteImage(sitk.JoinSeries(images), path)),
    "MetaImage, 4 channels": ("mha", lambda path, images: sitk.WriteImage(sitk.Compose(images), path)),
    "NRRD, JoinSeries of one 4-channel image (a vector axis, a 4th domain axis of 1)": (
        "nrrd",
        lambda path, images: sitk.WriteImage(sitk.JoinSeries([sitk.Compose(images)]), path),
    ),
    "MetaImage, JoinSeries of one 4-channel image (NDims 4 of 1, 4 channels)": (
        "mha",
        lambda path, images: sitk.WriteImage(sitk.JoinSeries([sitk.Compose(images)]), path),
    ),
    "NIfTI, intent VECTOR (SimpleITK Compose)": (
        "nii.gz",
        lambda path, images: sitk.WriteImage(sitk.Compose(images), path),
    ),
}


def msd_case(root, layout, images):
    """The MSD Task01 case written in ``layout`` (:data:`FOUR_D_LAYOUTS`) as ``imagesTr/BRATS_001.<ext>``, its volumes
    in the dataset.json's order (FLAIR, T1w, t1gd, T2w)."""
    suffix, write = FOUR_D_LAYOUTS[layout]
    path = root / "imagesTr" / f"BRATS_001.{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, [images[name] for name in ("FLAIR", "T1", "T1c", "T2")])
    (root / "dataset.json").write_text(json.dumps({"name": "BRATS", "modality": dict(enumerate(MSD_ORDER))}))
    return path


@pytest.fixture(scope="module")
def labels_of_3d_files(task01, tmp_path_factory):
    """The labels (and their geometry) the brats-4d package gives the four 3D files through the command line."""
    root, files, four_d, package, _ = task01
    out = tmp_path_factory.mktemp("three")
    assert run_cli(package, out / "run", *files) == 0
    return read_labels(out / "run")


@pytest.mark.parametrize("layout", FOUR_D_LAYOUTS)
def test_a_4d_nrrd_or_metaimage_gives_the_labels_of_its_four_3d_files(task01, labels_of_3d_files, tmp_path, layout):
    """The same four volumes as a NRRD (a list or vector axis first or last, or ITK's 4th domain axis) or a MetaImage (a
    4th axis, or 4 channels per voxel) on the oblique 2 x 2 x 2.5 mm grid: the labels of the four 3D files, voxel for
    voxel, on the same grid, the order from the dataset.json (before: refused, "needs 4 input channel(s) ..., got 1");
    through segment(), FLAIR's ball where FLAIR is."""
    root, files, four_d, package, images = task01
    path = msd_case(tmp_path / "Task01_BrainTumour", layout, images)
    assert run_cli(package, tmp_path / "out", path) == 0
    labels, geometry = read_labels(tmp_path / "out")
    assert np.array_equal(labels, labels_of_3d_files[0]) and np.allclose(geometry, labels_of_3d_files[1], atol=1e-6)
    order = json.loads((tmp_path / "out" / "report.json").read_text())["channel_order"]
    assert order["volumes"] == {"T1": 1, "T1c": 2, "T2": 3, "FLAIR": 0} and order["source"].endswith("dataset.json")
    result = segment(str(path), flair_threshold(), device="cpu", channels=list(MSD_ORDER))
    assert result.labels.shape == SHAPE and np.allclose(result.affine, AFFINE, atol=1e-4)
    found = voxel_centres(SHAPE, result.affine)[result.labels == 1].mean(axis=0)
    assert np.linalg.norm(found - CENTRES["FLAIR"]) < 1.0


def bad_nrrd_and_metaimage_inputs(task01, tmp_path):
    """(what, input, options, model: "mr" or "ct", the message's start) of 4D NRRD and MetaImage inputs refused from
    their headers."""
    images = task01[4]
    four = [images[name] for name in SEQUENCES]
    alone = tmp_path / "alone"
    nrrd, mha = write_nrrd(alone / "BRATS_001.nrrd", four), alone / "BRATS_001.mha"
    sitk.WriteImage(sitk.Compose(four), mha)
    joined = sitk.JoinSeries(four)
    sitk.WriteImage(joined, tmp_path / "spacetime.nrrd")
    text = (
        (tmp_path / "spacetime.nrrd")
        .read_bytes()
        .replace(b"space dimension: 4", b"space: right-anterior-superior-time")
    )
    (tmp_path / "spacetime.nrrd").write_bytes(text)
    mixed = sitk.Image(joined)
    turn = np.eye(4)
    turn[2:, 2:] = [[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]]  # the 4th axis turned into the 3rd
    mixed.SetDirection((np.asarray(joined.GetDirection()).reshape(4, 4) @ turn).ravel())
    sitk.WriteImage(mixed, tmp_path / "mixed.mha")
    sequence = 'labels: "time" "" "" ""\nDataNodeClassName:=vtkMRMLScalarVolumeNode\naxis 0 index values:=0 1 2 3\n'
    dce = sitk.Compose(four)  # a DCE series as Slicer's MultiVolume (and DICOM converters for it) store it
    for key, value in [("FrameIdentifyingDICOMTagName", "TriggerTime"), ("FrameLabels", "0,60,120,180")]:
        dce.SetMetaData(f"MultiVolume.{key}", value)
    sitk.WriteImage(dce, tmp_path / "dce.nrrd")
    fields = ["--channels", "T1,T1c,T2,FLAIR"]
    return {
        "a NRRD without an order": ([nrrd], [], "mr", "BRATS_001.nrrd holds 4 volumes (a 4D image), and nothing says"),
        "a MetaImage without an order": ([mha], [], "mr", "BRATS_001.mha holds 4 volumes (a 4D image), and nothing"),
        "a NRRD for a CT model": ([nrrd], [], "ct", "BRATS_001.nrrd holds 4 volumes (a 4D image); model 'tiny-ct'"),
        "a MetaImage for a CT model": ([mha], [], "ct", "BRATS_001.mha holds 4 volumes (a 4D image); model 'tiny-ct'"),
        "a time axis": (
            [write_nrrd(tmp_path / "time.nrrd", four, first=False, kind="time")],
            fields,
            "mr",
            "time.nrrd is a 4D image whose 4th axis is time (NRRD kind 'time'), not channels",
        ),
        "a space-time": (
            [tmp_path / "spacetime.nrrd"],
            fields,
            "mr",
            "spacetime.nrrd is a 4D image whose 4th axis is time (NRRD space 'right-anterior-superior-time')",
        ),
        "a Slicer sequence": (
            [write_nrrd(tmp_path / "cine.seq.nrrd", four, fields=sequence)],
            fields,
            "mr",
            "cine.seq.nrrd is a 4D image whose 4th axis is the items of a Slicer sequence or series (labelled 'time')",
        ),
        "a Slicer MultiVolume": (
            [tmp_path / "dce.nrrd"],
            fields,
            "mr",
            "dce.nrrd is a 4D image whose 4th axis is the items of a Slicer sequence or series (MultiVolume frames by "
            "TriggerTime), not channels",
        ),
        "a DWI": (
            [
                write_nrrd(
                    tmp_path / "dwi.nhdr.nrrd", four, first=False, fields="modality:=DWMRI\nDWMRI_b-value:=1000\n"
                )
            ],
            fields,
            "mr",
            "dwi.nhdr.nrrd is a 4D image whose 4th axis is diffusion gradient directions (modality:=DWMRI)",
        ),
        "four domain axes in a 3D space": (
            [write_nrrd(tmp_path / "domains.nrrd", four, first=False, kind="domain")],
            fields,
            "mr",
            "domains.nrrd has 4 domain axes in a 3D space, which the image reader (ITK) cannot read",
        ),
        "a 4th axis turned in space": (
            [tmp_path / "mixed.mha"],
            fields,
            "mr",
            "mixed.mha is a 4D image whose 4th axis is not apart from its spatial axes",
        ),
    }


def test_bad_4d_nrrd_and_metaimage_inputs_are_refused_from_their_headers_in_one_line(
    task01, tmp_path, capsys, monkeypatch
):
    """As a 4D NIfTI is: no order, a one-channel model, a time axis (NRRD kind ``time``, a space-time), a Slicer
    sequence, a DWI's gradients; and what ITK could not split into one 3D grid. MetaImage has no field saying a 4th
    axis is time (MetaIO's fields), so none is taken for it."""
    models = {"mr": task01[3], "ct": make_package(tmp_path, tiny_config())}
    cases = bad_nrrd_and_metaimage_inputs(task01, tmp_path)
    refuse_reading(monkeypatch)
    for what, (inputs, options, model, start) in cases.items():
        assert run_cli(models[model], tmp_path / "out", *inputs, options=options) == 2, what
        error = capsys.readouterr().err
        assert error.startswith(f"error: {start}"), (what, error)
        assert error.count("\n") == 1 and "Traceback" not in error and not (tmp_path / "out").exists(), what
    with pytest.raises(InputError, match="holds 4 volumes"):
        segment(str(cases["a MetaImage for a CT model"][0][0]), models["ct"], device="cpu")


@pytest.mark.parametrize("suffix", ["nrrd", "mha"])
def test_a_4d_nrrd_or_metaimage_read_is_checked_against_the_memory_limit_from_its_header(
    task01, tmp_path, capsys, monkeypatch, suffix
):
    root, files, four_d, package, images = task01
    path = msd_case(tmp_path, "MetaImage, 4 channels" if suffix == "mha" else "NRRD, list axis first (Slicer)", images)
    refuse_reading(monkeypatch)
    monkeypatch.setenv("TOKENUNET_MEMORY_LIMIT", "40K")  # one 16^3 int16 volume read: 16 KiB; the four: 64 KiB
    assert run_cli(package, tmp_path / "out", path) == 2
    error = capsys.readouterr().err
    assert (
        f"BRATS_001.{suffix} declares 16 x 16 x 16 x 4 voxels of short" in error and "TOKENUNET_MEMORY_LIMIT" in error
    )


def test_colour_geometric_vectors_and_segmentation_layers_stay_refused_as_what_they_are(task01, tmp_path, capsys):
    """Only ``list`` and ``vector`` axes hold volumes: an ``RGB-color`` axis is a colour, a ``3-vector`` (or
    ``covariant-vector``, ``point``...) axis a geometric vector's coordinates, both refused per voxel as before; a
    Slicer .seg.nrrd's ``list`` axis holds layers of overlapping segments, refused as layers as before."""
    images = task01[4]
    three = [images[name] for name in SEQUENCES[:3]]
    ct = make_package(tmp_path, tiny_config())
    labels = [
        image_from_array((sitk.GetArrayFromImage(images[name]).T > 0).astype(np.int16), AFFINE) for name in ("T1", "T2")
    ]
    cases = {
        "RGB-color": (
            write_nrrd(tmp_path / "rgb.nrrd", three, kind="RGB-color"),
            "rgb.nrrd has 3 components per voxel",
        ),
        "3-vector": (write_nrrd(tmp_path / "v.nrrd", three, kind="3-vector"), "v.nrrd has 3 components per voxel"),
        "covariant-vector": (
            write_nrrd(tmp_path / "g.nrrd", three, kind="covariant-vector"),
            "g.nrrd has 3 components per voxel",
        ),
        "layers": (
            write_nrrd(tmp_path / "layers.seg.nrrd", labels, fields="Segment0_ID:=organ\n"),
            "layers.seg.nrrd has 2 layers (Slicer stores overlapping segments so)",
        ),
    }
    for what, (path, start) in cases.items():
        assert run_cli(ct, tmp_path / "out", path) == 2, what
        error = capsys.readouterr().err
        assert error.startswith(f"error: {start}") and error.count("\n") == 1, (what, error)


def assert_refused_with_channels(package, tmp_path, capsys, name: str, start: str) -> None:
    """``segment tmp_path/name --channels T1,T1c,T2,FLAIR`` exits 2 with one line starting ``error: start``, nothing
    written."""
    assert run_cli(package, tmp_path / "out", tmp_path / name, options=["--channels", "T1,T1c,T2,FLAIR"]) == 2, name
    error = capsys.readouterr().err
    assert error.startswith(f"error: {start}"), error
    assert error.count("\n") == 1 and not (tmp_path / "out").exists(), error


def test_a_4d_image_whose_4th_axis_has_no_step_is_refused_from_its_header_in_plain_words(
    task01, tmp_path, capsys, monkeypatch
):
    """ITK's 4D NRRD and MetaImage with a 4th spacing of 0 (or NaN, which MetaIO reads as 0) or a zero 4th axis
    direction: the header passed as 4 volumes, then ITK refused the file once its data had been checked, in its own
    words (found by review4d; before: "cannot read x.mha: Refusing to change spacing from [1, 1, 1, 1] to [2, 2,
    2.5, 0]", "cannot read x.mha: 0 0 0 0"). Refused from the header, before any voxel is read."""
    import re as regex

    images = task01[4]
    joined = sitk.JoinSeries([images[name] for name in SEQUENCES])
    edits = {
        "spacing.mha": (rb"(ElementSpacing = \S+ \S+ \S+) 1\n", rb"\1 0\n"),
        "nan.mha": (rb"(ElementSpacing = \S+ \S+ \S+) 1\n", rb"\1 nan\n"),
        "direction.mha": (rb"(TransformMatrix = (?:\S+ ){15})1\n", rb"\g<1>0\n"),
        "direction.nrrd": (rb"\(0,0,0,1\)", rb"(0,0,0,0)"),
    }
    for name, (pattern, replacement) in edits.items():
        sitk.WriteImage(joined, tmp_path / name)
        data = (tmp_path / name).read_bytes()
        assert regex.search(pattern, data), name
        (tmp_path / name).write_bytes(regex.sub(pattern, replacement, data, count=1))
    refuse_reading(monkeypatch)
    for name in edits:
        assert_refused_with_channels(
            task01[3], tmp_path, capsys, name, f"{name} is a 4D image whose 4th axis has a zero or invalid step"
        )


def test_multi_channel_images_joined_into_a_4d_image_of_two_are_refused_from_the_header_as_5d(
    task01, tmp_path, capsys, monkeypatch
):
    """SimpleITK's ``JoinSeries`` of two 4-channel images (ITK's NRRD: a ``vector`` axis and a 4th domain axis of 2;
    MetaImage: NDims 4 of 2, 4 channels), which ITK reads as a 4D image of 4 components: refused from the header as 5
    dimensions in both formats (found by review4d). One such image (a 4th axis of 1) is read as its 4 channels, as a
    4th axis of 1 is read as the 3D volume it is (:data:`FOUR_D_LAYOUTS`; reviewsmall4)."""
    images = task01[4]
    one = sitk.Compose([images[name] for name in SEQUENCES])
    joined = sitk.JoinSeries([one, one])
    refuse_reading(monkeypatch)
    for name in ("two.nrrd", "two.mha"):
        sitk.WriteImage(joined, tmp_path / name)
        assert_refused_with_channels(
            task01[3], tmp_path, capsys, name, f"{name} has 5 dimensions (2 x 4 after the spatial ones)"
        )


def test_a_nrrd_whose_space_has_more_dimensions_than_its_domain_axes_is_refused_from_its_header(
    task01, tmp_path, capsys, monkeypatch
):
    """A list axis and three domain axes placed in a 4D space (``space dimension: 4``, or a space-time such as
    ``right-anterior-superior-time``, with 4-component directions), which ITK cannot read (found by review4d; before:
    the header passed as 4 volumes, the data were checked, then ITK's words: "cannot read x.nrrd: ReadImageInformation:
    number of domain axes in the NRRD file (3) doesn't match dimension of space in"). Refused from the header."""
    images = task01[4]
    base = write_nrrd(tmp_path / "base.nrrd", [images[name] for name in SEQUENCES]).read_bytes()
    header, data = base.split(b"\n\n", 1)
    header = re.sub(rb"\(([^)]*)\)", rb"(\1,0)", header)  # 4-component directions and origin
    spaces = {"dimension.nrrd": b"space dimension: 4", "spacetime.nrrd": b"space: right-anterior-superior-time"}
    for name, space in spaces.items():
        edited = header.replace(b"space: left-posterior-superior", space)
        (tmp_path / name).write_bytes(edited + b"\n\n" + data)
    refuse_reading(monkeypatch)
    for name in ("dimension.nrrd", "spacetime.nrrd"):
        assert_refused_with_channels(
            task01[3], tmp_path, capsys, name, f"{name} has 3 domain axes in a 4D space, which the image reader (ITK)"
        )
