"""The command line, ``segment()`` and ``evaluate --model`` check a run's inputs from their headers with one function
(``run_inputs.open_run_inputs``): the same input is refused by each with the same words, before any voxel is read,
and ``evaluate`` refuses before the package's weights are loaded."""

import pytest
from helpers.packages import make_package, tiny_config
from helpers.readers import dicom_array, refuse_reading, sparse_nrrd, write_dicom_series
from TokenUNetSegmentLib.pipeline import cli, package_loader
from TokenUNetSegmentLib.pipeline.errors import TokenUNetError
from TokenUNetSegmentLib.pipeline.package_loader import load_package
from TokenUNetSegmentLib.pipeline.segmentation import segment


def mr_pair_config():
    config = tiny_config("mr-pair", in_channels=2, labels=2, roi=(16, 16, 16), intensity={"method": "zscore"})
    for entry, name in zip(config["inputs"], ("T1", "T2"), strict=True):
        entry.update(name=name, modality="MR", patterns=[f"*{name.lower()}*"])
    return config


def over_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENUNET_MEMORY_LIMIT", "400M")
    return tiny_config(labels=2, spacing=(3.0, 3.0, 3.0)), [sparse_nrrd(tmp_path / "big.nrrd", (512, 512, 200))]


def mr_series_for_ct(tmp_path, monkeypatch):
    write_dicom_series(tmp_path / "mr", dicom_array(), modality="MR", description="T1 SE")
    return tiny_config(), [tmp_path / "mr"]


def one_series_twice(tmp_path, monkeypatch):
    files = write_dicom_series(tmp_path / "study", dicom_array(), modality="MR", description="T1 SE")
    return mr_pair_config(), [tmp_path / "study", files[3]]


def four_channels_over_memory(tmp_path, monkeypatch):
    config = tiny_config("mr-four", in_channels=4, labels=2, roi=(16, 16, 16), intensity={"method": "zscore"})
    monkeypatch.setenv("TOKENUNET_MEMORY_LIMIT", "3M")  # each 64^3 int16 file alone: 2 MiB to read; as float32 4 MiB
    return config, [sparse_nrrd(tmp_path / f"scan_ch{i}.nrrd", (64, 64, 64)) for i in range(4)]


CASES = {
    "run over the memory limit": over_memory,
    "MR series for a CT model": mr_series_for_ct,
    "one DICOM series for two channels": one_series_twice,
    "channels over the memory limit together": four_channels_over_memory,
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_command_line_and_segment_refuse_the_same_input_with_the_same_words(case, tmp_path, capsys, monkeypatch):
    config, inputs = CASES[case](tmp_path, monkeypatch)
    with monkeypatch.context() as unlimited:  # the network is loaded before any limit
        unlimited.delenv("TOKENUNET_MEMORY_LIMIT", raising=False)
        path = make_package(tmp_path, config)
        package = load_package(path)
    refuse_reading(monkeypatch)  # every refusal comes from the headers
    options = ["--no-overview", "--no-heatmaps", "--progress", "none", "--device", "cpu"]
    assert cli.main(["segment", *map(str, inputs), "--model", str(path), "--out", str(tmp_path / "out"), *options]) == 2
    printed = capsys.readouterr().err
    assert printed.startswith("error: ") and printed.count("\n") == 1, printed
    with pytest.raises(TokenUNetError) as refused:
        segment([str(item) for item in inputs], package, device="cpu", with_token_maps=False)
    assert printed == f"error: {refused.value}\n"


def test_evaluate_refuses_a_run_that_cannot_fit_before_the_weights_are_loaded(tmp_path, capsys, monkeypatch):
    path = make_package(tmp_path, tiny_config(labels=2, spacing=(3.0, 3.0, 3.0)))
    big = sparse_nrrd(tmp_path / "big.nrrd", (512, 512, 200))
    reference = sparse_nrrd(tmp_path / "reference.nrrd", (8, 8, 8))
    loaded = []
    monkeypatch.setattr(package_loader, "load_package", lambda *args, **kwargs: loaded.append(args))
    refuse_reading(monkeypatch)
    monkeypatch.setenv("TOKENUNET_MEMORY_LIMIT", "400M")
    assert cli.main(["evaluate", str(reference), "--model", str(path), "--image", str(big), "--no-hd95"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: this run needs about ") and "TOKENUNET_MEMORY_LIMIT=400M" in error
    assert loaded == []
    # the spy sees a load when nothing is refused (so the assertion above can fail)
    monkeypatch.delenv("TOKENUNET_MEMORY_LIMIT")
    small = sparse_nrrd(tmp_path / "small.nrrd", (20, 20, 20))
    assert cli.main(["evaluate", str(reference), "--model", str(path), "--image", str(small)]) == 1  # no package
    assert loaded and loaded[0][0] == path
