"""The typed package configuration: JSON + schema -> frozen dataclasses, the semantic rules, channel matching."""

import dataclasses
import json

import pytest
from helpers.packages import make_package, tiny_config, training_statistics
from TokenUNetSegmentLib.pipeline.errors import ModelPackageError
from TokenUNetSegmentLib.pipeline.jsonschema_lite import validation_errors
from TokenUNetSegmentLib.pipeline.metadata import parse_config, parse_metadata, validate_metadata
from TokenUNetSegmentLib.pipeline.package_source import read_metadata
from TokenUNetSegmentLib.pipeline.package_writer import make_metadata


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory):
    return make_package(tmp_path_factory.mktemp("pkg"))


def test_schema_validation_names_the_problem(package_dir):
    metadata = read_metadata(package_dir).to_dict()
    broken = json.loads(json.dumps(metadata))
    del broken["tokenunet"]["labels"][0]["color"]
    with pytest.raises(ModelPackageError, match=r"labels\[0\].*color"):
        validate_metadata(broken)
    broken = json.loads(json.dumps(metadata))
    broken["tokenunet"]["inputs"].append({"name": "extra", "modality": "MR"})
    with pytest.raises(ModelPackageError, match="2 inputs declared for a network with 1 channels"):
        validate_metadata(broken)
    broken = json.loads(json.dumps(metadata))
    broken["tokenunet"]["preprocessing"]["orientation"] = "RRS"
    with pytest.raises(ModelPackageError, match="orientation"):
        validate_metadata(broken)


def test_json_schema_subset_validator():
    schema = {
        "type": "object",
        "required": ["a"],
        "additionalProperties": False,
        "properties": {"a": {"type": "array", "items": {"type": "integer", "minimum": 0}}},
    }
    assert validation_errors({"a": [1, 2]}, schema) == []
    assert validation_errors({"a": [1, -1]}, schema) == ["$.a[1]: -1 is below the minimum 0"]
    assert validation_errors({"b": 1}, schema) == ["$: missing required key 'a'", "$: unexpected key 'b'"]
    assert validation_errors({"a": [True]}, schema) == ["$.a[0]: expected integer, got bool"]


def test_item_counts_in_schema_errors_agree_with_their_number():
    """Before: an empty ``inputs`` list of a catalog entry (``minItems: 1``) was told "needs at least 1 items"."""
    for bound, given, said in (
        ({"minItems": 1}, [], "$: needs at least 1 item"),
        ({"minItems": 2}, [1], "$: needs at least 2 items"),
        ({"maxItems": 1}, [1, 2], "$: allows at most 1 item"),
        ({"maxItems": 2}, [1, 2, 3], "$: allows at most 2 items"),
    ):
        assert validation_errors(given, {"type": "array", **bound}) == [said]


def test_inputs_are_assigned_by_filename_pattern():
    from TokenUNetSegmentLib.pipeline.metadata import assign_inputs

    section = tiny_config(in_channels=4)
    for entry, patterns in zip(
        section["inputs"], [["*t1n*", "*t1.*"], ["*t1c*"], ["*t2w*", "*t2.*"], ["*flair*"]], strict=True
    ):
        entry["patterns"] = patterns
    config = parse_config(section)
    files = [
        "/data/BraTS-001-FLAIR.nii.gz",
        "/data/BraTS-001-t1c.nii.gz",
        "C:\\data\\BraTS-001-t2w.nii.gz",
        "/data/BraTS-001-t1n.nii.gz",
    ]
    assert assign_inputs(files, config) == {"ch0": files[3], "ch1": files[1], "ch2": files[2], "ch3": files[0]}
    assert assign_inputs(files[:2], config) == {"ch0": None, "ch1": files[1], "ch2": None, "ch3": files[0]}
    assert assign_inputs(["anything.nrrd"], parse_config(tiny_config())) == {"ch0": "anything.nrrd"}


def test_metadata_is_parsed_once_into_frozen_typed_parts(package_dir):
    metadata = read_metadata(package_dir)
    config = metadata.config
    assert (metadata.id, metadata.version, metadata.description) == (
        "tiny-ct",
        "0.1.0",
        "tiny random-weight test model",
    )
    assert config.architecture.name == "8Token" and config.architecture.build_arguments() == {
        "channels": (4, 8, 16, 32)
    }
    assert config.input_names == ["ch0"] and config.inputs[0].patterns == ("*ch0*",)
    assert config.preprocessing.spacing == (2.0, 2.0, 2.0) and config.preprocessing.orientation == "RAS"
    assert config.preprocessing.intensity[0].window == (-100.0, 300.0) and config.display_window == (-100.0, 300.0)
    assert config.inference.roi_size == (16, 16, 16) and config.inference.activation == "softmax"
    assert [(label.value, label.name, label.output_channel) for label in config.labels] == [
        (1, "organ1", 1),
        (2, "organ2", 2),
    ]
    assert config.labels[0].color == (40, 200, 215) and config.labels[0].terminology["type"][1] == "78961009"
    assert config.weights.file == "models/model.safetensors" and len(config.weights.sha256) == 64
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.id = "other"
    # the typed config writes back what was read
    assert config.to_dict() == metadata.to_dict()["tokenunet"]
    assert parse_metadata(metadata.to_dict()).config == config


def test_one_intensity_setting_applies_to_every_channel_and_a_list_gives_one_each():
    shared = parse_config(tiny_config(in_channels=2, intensity={"method": "zscore"}))
    assert [i.method for i in shared.preprocessing.intensity] == ["zscore", "zscore"] and shared.display_window is None
    section = tiny_config(in_channels=2)
    section["preprocessing"]["intensity"] = [{"method": "zscore"}, {"method": "ct_window", "window": [0, 80]}]
    assert parse_config(section).preprocessing.intensity[1].window == (0.0, 80.0)
    section["preprocessing"]["intensity"] = [{"method": "zscore"}]
    with pytest.raises(ModelPackageError, match="one entry per input channel"):
        parse_config(section)


def test_sigmoid_regions_and_largest_component_settings_are_typed():
    section = tiny_config(labels=2, activation="sigmoid")
    section["inference"]["threshold"] = 0.4
    section["postprocessing"] = {"largest_component": ["organ2"]}
    config = parse_config(section)
    assert [(r.channel, r.label) for r in config.inference.regions] == [(0, 1), (1, 2)]
    assert config.inference.threshold == 0.4 and config.largest_component == ("organ2",)
    assert config.largest_component_labels() == ["organ2"] and config.largest_component_labels(True) == [
        "organ1",
        "organ2",
    ]
    assert config.largest_component_labels(False) == []
    section["inference"]["regions"] = [{"channel": 5, "label": 1}]
    with pytest.raises(ModelPackageError, match="region channel 5 >= out_channels 2"):
        parse_config(section)


def test_a_configuration_needs_no_weights_but_a_package_does():
    section = tiny_config()
    assert parse_config(section).weights is None
    with pytest.raises(ModelPackageError, match="missing required key 'weights'"):
        parse_config(section, require_weights=True)
    document = make_metadata(section, description="d", authors="a", copyright="c")
    with pytest.raises(ModelPackageError, match="weights"):
        validate_metadata(document)
    assert parse_metadata(document, require_weights=False).config.weights is None


def test_training_statistics_are_kept_as_written_and_typed_when_a_package_has_them(tmp_path):
    config = tiny_config()
    config["training_statistics"] = training_statistics({"organ1": ((8.0, 16.0), None)})
    read = read_metadata(make_package(tmp_path, config)).config
    assert read.training_statistics == config["training_statistics"]  # the section as the training tool wrote it
    stats = read.statistics
    assert stats.cases == 2 and stats.labels["organ1"].volume_ml.min == 8.0 and stats.min_slab_mm == 30.0
    assert stats.labels["organ1"].volume_ml_complete is None  # null: the organ always touched the scan's edge
    assert stats.source_extent_mm == ((300.0, 250.0, 180.0), (400.0, 320.0, 340.0))
    older = parse_config(tiny_config())  # older and third-party packages
    assert older.training_statistics is None and older.statistics is None
    config["training_statistics"]["cases"] = -1
    with pytest.raises(ModelPackageError, match="training_statistics"):
        parse_config(config)
