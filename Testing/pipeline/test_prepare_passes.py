"""``prepare``'s field of view in one pass over the model grid and its foreground crop without a zeroed mask give what
the plain computations gave: the same mask bit for bit on parallel, flipped, permuted and tilted grids, and a crop
that holds every channel's foreground."""

import numpy as np
import pytest
from helpers.packages import ball_phantom, tiny_config
from TokenUNetSegmentLib.pipeline.geometry import Grid, affine_from_spacing
from TokenUNetSegmentLib.pipeline.metadata import parse_config
from TokenUNetSegmentLib.pipeline.preprocess import prepare
from TokenUNetSegmentLib.pipeline.scan_summary import field_of_view
from TokenUNetSegmentLib.pipeline.volumes import Volume


def field_of_view_axis_by_axis(source: Grid, target: Grid) -> np.ndarray:
    """The plain computation: each source axis's test broadcast over the whole target and AND-ed into it in turn."""
    to_source = np.linalg.inv(source.affine) @ target.affine
    axes = [np.arange(n, dtype=np.float32) for n in target.shape]
    inside = np.ones(target.shape, bool)
    for axis in range(3):
        index = np.float32(to_source[axis, 3])
        for column in range(3):
            weight = np.float32(to_source[axis, column])
            if weight != 0:
                shape = [1, 1, 1]
                shape[column] = -1
                index = index + weight * axes[column].reshape(shape)
        inside &= np.broadcast_to((index >= -0.5) & (index <= source.shape[axis] - 0.5), target.shape)
    return inside


def grids(seed: int) -> tuple[Grid, Grid]:
    rng = np.random.default_rng(seed)
    linear = np.diag(rng.uniform(0.4, 2.5, 3) * rng.choice([-1.0, 1.0], 3))
    if seed % 3 == 1:
        linear = linear[:, rng.permutation(3)]  # axes in another order (a sagittal or coronal series)
    if seed % 3 == 2:
        linear = linear @ np.linalg.qr(rng.normal(size=(3, 3)))[0]  # tilted
    source = np.eye(4)
    source[:3, :3], source[:3, 3] = linear, rng.normal(size=3) * 8
    target = np.eye(4)
    target[:3, :3], target[:3, 3] = np.diag(rng.uniform(0.5, 2.0, 3)), rng.normal(size=3) * 8
    return Grid(tuple(int(n) for n in rng.integers(2, 30, 3)), source), Grid(
        tuple(int(n) for n in rng.integers(2, 40, 3)), target
    )


@pytest.mark.parametrize("seed", range(12))
def test_field_of_view_in_one_pass_is_the_axis_by_axis_mask(seed):
    source, target = grids(seed)
    inside = field_of_view(source, target)
    expected = field_of_view_axis_by_axis(source, target)
    assert inside.dtype == bool and inside.shape == target.shape and inside.flags.c_contiguous
    np.testing.assert_array_equal(inside, expected)


def test_a_scan_and_its_grid_give_a_whole_field_of_view():
    grid = Grid((7, 5, 3), affine_from_spacing((0.8, 0.8, 1.5), (1.0, 2.0, 3.0)))
    assert field_of_view(grid, grid).all()


def test_the_crop_holds_every_channels_foreground():
    """Two channels whose foregrounds lie apart: the crop spans both (the union of their masks)."""
    config = parse_config(tiny_config(spacing=(2.0, 2.0, 2.0), roi=(16, 16, 16), crop=True, in_channels=2))
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    shape = (60, 60, 40)
    first = ball_phantom(shape, (12, 12, 10), (4, 4, 4), value=40.0, background=-1000.0)
    second = ball_phantom(shape, (45, 46, 30), (4, 4, 4), value=40.0, background=-1000.0)
    volumes = [Volume(first, affine, "a"), Volume(second, affine, "b")]
    prepared = prepare(volumes, config, 8, (16, 16, 16))
    start, stop = prepared.start, prepared.start + np.asarray(prepared.region.shape)
    for centre in ((12, 12, 10), (45, 46, 30)):
        assert np.all(start <= np.subtract(centre, 4)) and np.all(np.add(centre, 5) <= stop), (start, stop)
    alone = prepare(volumes[:1] * 2, config, 8, (16, 16, 16))
    assert np.all(np.asarray(alone.region.shape) < np.asarray(prepared.region.shape))
