"""``overview.png``: the three planes it resamples are those of the whole display grid, centred on the labels."""

import os

import numpy as np
import pytest
from helpers.packages import ball_phantom, threshold_package
from helpers.processes import run_python, with_file_size_limit
from TokenUNetSegmentLib.pipeline.geometry import Grid, model_grid, resample
from TokenUNetSegmentLib.pipeline.overview import (
    TILE,
    _oriented,
    display_window,
    label_centre,
    plane_views,
    render_overview,
    write_png,
)
from TokenUNetSegmentLib.pipeline.segmentation import segment


def oblique_grid(shape=(40, 36, 24)) -> Grid:
    affine = np.eye(4)
    a, b = np.radians(25), np.radians(10)
    about_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine[:3, :3] = about_z @ about_x @ np.diag([1.5, -1.2, 2.5])
    affine[:3, 3] = (-10.0, 20.0, -5.0)
    return Grid(shape, affine)


def display_grid(source: Grid) -> Grid:
    spacing = max(float(source.spacing.min()), float(np.max(np.ptp(source.corners_ras(), axis=0))) / 200)
    return model_grid(source, "RAS", (spacing,) * 3)


@pytest.mark.parametrize("interpolation, dtype", [("linear", np.float32), ("nearest", np.uint8)])
def test_the_planes_equal_the_same_planes_of_the_whole_resampled_volume(interpolation, dtype):
    source = oblique_grid()
    rng = np.random.default_rng(0)
    array = (rng.random(source.shape) * 200).astype(dtype)
    grid = display_grid(source)
    whole = resample(array, source, grid, interpolation, 3, dtype)
    for point in [(0, 0, 0), tuple(np.array(grid.shape) // 2), tuple(np.array(grid.shape) - 1), (5, 40, 17)]:
        point = tuple(min(p, n - 1) for p, n in zip(point, grid.shape, strict=True))
        for plane, expected in zip(
            plane_views(array, source, grid, point, interpolation, 3, dtype), _slices(whole, point), strict=True
        ):
            assert plane.dtype == expected.dtype
            np.testing.assert_array_equal(plane, expected)


def _slices(volume, point):
    x, y, z = point
    return _oriented([volume[:, :, z], volume[:, y, :], volume[x, :, :]])


def test_the_views_centre_on_the_labels_centroid_in_space():
    source = oblique_grid()
    labels = np.zeros(source.shape, np.uint8)
    labels[25:33, 5:12, 15:20] = 2
    grid = display_grid(source)
    on_display = resample(labels, source, grid, "nearest", 0, np.uint8)
    expected = np.argwhere(on_display > 0).mean(axis=0)
    assert np.all(np.abs(label_centre(labels, source, grid) - expected) <= 1.0)
    np.testing.assert_array_equal(label_centre(np.zeros_like(labels), source, grid), np.array(grid.shape) // 2)


def test_a_large_map_centres_on_a_subsample_and_still_finds_a_single_voxel():
    source = oblique_grid((96, 80, 70))
    grid = display_grid(source)
    labels = np.zeros(source.shape, np.uint8)
    labels[20:61, 10:33, 30:47] = 3
    exact = np.argwhere(labels > 0).mean(axis=0)
    expected = np.linalg.solve(grid.affine, source.affine @ np.array([*exact, 1.0]))[:3]
    assert np.all(np.abs(label_centre(labels, source, grid) - expected) <= 1.0)
    dot = np.zeros(source.shape, np.uint8)
    dot[51, 33, 21] = 1  # odd indices: between the sampled voxels
    expected = np.linalg.solve(grid.affine, source.affine @ np.array([51, 33, 21, 1.0]))[:3]
    assert np.all(np.abs(label_centre(dot, source, grid) - expected) <= 0.5)


def test_the_display_window_is_the_volumes_1st_and_99th_percentile():
    rng = np.random.default_rng(1)
    image = rng.normal(40, 300, (200, 180, 90)).astype(np.float32)
    low, high = display_window(image, most=200_000)  # a subsample of a 3.2 M voxel volume
    expected = np.percentile(image, [1, 99])
    assert low == pytest.approx(expected[0], abs=15) and high == pytest.approx(expected[1], abs=15)
    assert display_window(image[:4, :4, :4]) == pytest.approx(tuple(np.percentile(image[:4, :4, :4], [1, 99])))


def test_the_overview_shows_the_labels_in_their_colour_on_every_view(tmp_path):
    affine = oblique_grid().affine
    image = ball_phantom((40, 36, 24), (20, 18, 12), (9, 8, 6))
    result = segment([(image, affine)], threshold_package(), device="cpu")
    path = render_overview(tmp_path / "overview.png", image, result)
    pixels = read_png(path)
    assert pixels.shape[1] == 3 * TILE and pixels.shape[0] % TILE == 0
    colour = 0.55 * np.asarray(result.label_table[0].color)  # on black at least; the CT adds 0.45 x gray
    for view in range(3):
        tile = pixels[:TILE, view * TILE : (view + 1) * TILE].astype(float)
        tinted = np.all(tile >= colour - 1, axis=-1) & (np.ptp(tile, axis=-1) > 20)
        assert tinted.sum() > 50, f"view {view} shows no label"


def read_png(path) -> np.ndarray:
    """The RGB pixels of a PNG written by ``write_png`` (one IDAT chunk, filter 0 on every row)."""
    import struct
    import zlib

    data = path.read_bytes()
    width, height = struct.unpack(">II", data[16:24])
    at, chunks = 8, b""
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        if data[at + 4 : at + 8] == b"IDAT":
            chunks += data[at + 8 : at + 8 + length]
        at += 12 + length
    rows = np.frombuffer(zlib.decompress(chunks), np.uint8).reshape(height, 1 + 3 * width)
    assert not rows[:, 0].any()
    return rows[:, 1:].reshape(height, width, 3)


def test_an_overview_cut_short_by_a_full_disk_leaves_the_previous_file_and_nothing_else(tmp_path):
    """A write that fails part-way (a disk that fills up, a file-size limit; a kill likewise). Before: the PNG's first
    4 KiB under its final name, the previous picture gone, and an OSError with a traceback."""
    path = tmp_path / "overview.png"
    write_png(path, np.zeros((8, 8, 3), np.uint8))
    previous = path.read_bytes()
    code = (
        "import numpy as np\n"
        "from TokenUNetSegmentLib.pipeline.errors import OutputError\n"
        "from TokenUNetSegmentLib.pipeline.overview import write_png\n"
        "noise = np.random.default_rng(0).integers(0, 256, (120, 120, 3), np.uint8)  # 43 KB as PNG\n"
        f"try: write_png({str(path)!r}, noise)\n"
        "except OutputError as error: print(error)\n"
    )
    line = run_python(with_file_size_limit(code, 4096)).strip()
    assert "nothing was changed" in line, line
    assert path.read_bytes() == previous and os.listdir(tmp_path) == ["overview.png"]
