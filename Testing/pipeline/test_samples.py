"""Bundled samples by id: ``sample:AbdomenCT`` as an input and as an evaluation reference."""

import numpy as np
import pytest
from TokenUNetSegmentLib.pipeline.errors import InputError
from TokenUNetSegmentLib.pipeline.evaluate import evaluate_files, name_table
from TokenUNetSegmentLib.pipeline.samples import SAMPLES, sample
from TokenUNetSegmentLib.pipeline.volumes import Volume, as_volume, read_volume


def test_sample_files_exist_and_read():
    for item in SAMPLES.values():
        assert item.image.is_file() and item.labels.is_file() and item.names.is_file()
    volume = as_volume("sample:AbdomenCT")
    assert volume.array.shape == (122, 101, 112)
    np.testing.assert_allclose(np.abs(np.diag(volume.affine)[:3]), 3.0)
    assert sample("AbdomenCT") is sample("sample:AbdomenCT")
    with pytest.raises(InputError, match="unknown sample"):
        as_volume("sample:Nope")


def test_sample_reference_names_the_twelve_organs():
    names = name_table(sample("AbdomenCT").labels)
    assert len(names) == 12 and names[1] == "spleen" and names[64] == "portal vein and splenic vein"
    labels = read_volume(sample("AbdomenCT").labels).array
    for value in names:
        assert (labels == value).any(), names[value]


def test_sample_as_evaluation_reference_is_identical_to_itself():
    item = sample("AbdomenCT")
    reference = read_volume(item.labels)
    prediction = (Volume(reference.array, reference.affine), name_table(item.labels))
    result = evaluate_files(prediction, "sample:AbdomenCT", hd95=False)
    assert len(result["labels"]) == 12
    assert all(m["dice"] == pytest.approx(1.0) for m in result["labels"].values())
