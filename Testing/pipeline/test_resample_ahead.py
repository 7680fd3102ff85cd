"""Resampling onto the model grid ahead of :func:`prepare` (the command line does it while torch is imported)."""

import numpy as np
import pytest
from helpers.packages import PHANTOM_AFFINE, ball_phantom, tiny_config
from TokenUNetSegmentLib.pipeline import preprocess
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing
from TokenUNetSegmentLib.pipeline.metadata import parse_config
from TokenUNetSegmentLib.pipeline.preprocess import prepare, resample_ahead
from TokenUNetSegmentLib.pipeline.volumes import Volume


def ct_volume(affine=PHANTOM_AFFINE, shape=(90, 80, 40), name="ct"):
    image = ball_phantom(shape, tuple(n // 2 for n in shape), tuple(n // 3 for n in shape), value=40, background=-1000)
    return Volume(image.astype(np.int16), affine, name)


def config(spacing=(3.0, 3.0, 3.0), channels=1):
    return parse_config(tiny_config(spacing=spacing, roi=(32, 32, 32), crop=True, in_channels=channels))


def prepared_image(volumes, package_config):
    return prepare(volumes, package_config, 16, (32, 32, 32)).image


def test_prepare_takes_the_array_resampled_ahead_and_gets_the_same_image(monkeypatch):
    package_config = config()
    plain = prepared_image([ct_volume()], package_config)
    volume = ct_volume()
    resample_ahead([volume], package_config)
    assert volume.on_model_grid is not None
    monkeypatch.setattr(preprocess, "resample", None)  # prepare must not resample again
    np.testing.assert_array_equal(prepared_image([volume], package_config), plain)
    assert volume.on_model_grid is None  # handed over, not kept alive through the run


def test_resampling_on_one_thread_gives_the_same_values():
    from TokenUNetSegmentLib.pipeline.geometry import model_grid, resample

    volume = ct_volume()
    target = model_grid(volume.grid, "RAS", (1.7, 2.3, 1.1))
    for interpolation in ("linear", "nearest"):
        everywhere = resample(volume.array, volume.grid, target, interpolation, -1000.0)
        np.testing.assert_array_equal(
            resample(volume.array, volume.grid, target, interpolation, -1000.0, threads=1), everywhere
        )


def test_an_array_resampled_for_another_grid_is_dropped_not_used():
    volume = ct_volume()
    resample_ahead([volume], config(spacing=(4.0, 4.0, 4.0)))
    np.testing.assert_array_equal(prepared_image([volume], config()), prepared_image([ct_volume()], config()))
    assert volume.on_model_grid is None


def test_nothing_is_resampled_ahead_when_it_would_take_more_memory_than_the_voxels_or_is_not_needed():
    fine = config(spacing=(0.7, 0.6, 1.25))  # 8 x the voxels, as float32: 16 x the int16 input's bytes
    volume = ct_volume()
    resample_ahead([volume], fine)
    assert volume.on_model_grid is None
    on_its_grid = ct_volume(affine_from_spacing((3.0, 3.0, 3.0)))
    resample_ahead([on_its_grid], config())
    assert on_its_grid.on_model_grid is None


def test_a_channel_on_another_grid_is_left_to_prepare():
    package_config = config(channels=2)
    other = affine_from_spacing((1.0, 1.0, 2.0), origin=(-50.0, -40.0, -40.0))
    volumes = [ct_volume(), ct_volume(other, (100, 90, 40), "t2")]
    resample_ahead(volumes, package_config)
    assert volumes[0].on_model_grid is not None and volumes[1].on_model_grid is None
    expected = prepared_image([ct_volume(), ct_volume(other, (100, 90, 40), "t2")], package_config)
    np.testing.assert_array_equal(prepared_image(volumes, package_config), expected)


def test_switch_interval_is_restored_after_the_block_even_on_error():
    import sys

    from TokenUNetSegmentLib.pipeline.background import switch_interval

    before = sys.getswitchinterval()
    with pytest.raises(RuntimeError), switch_interval(0.001):
        assert sys.getswitchinterval() == pytest.approx(0.001)
        raise RuntimeError("inside")
    assert sys.getswitchinterval() == before
