"""Geometry: labels and heatmaps land at the right physical place for any input grid."""

import numpy as np
import pytest
import SimpleITK as sitk
from helpers.packages import dice, physical_ball, rotation, threshold_package, voxel_centres
from TokenUNetSegmentLib.pipeline.geometry import (
    Grid,
    affine_from_spacing,
    affine_of_image,
    image_from_array,
    model_grid,
    resample,
    resample_image,
    resample_nearest,
)
from TokenUNetSegmentLib.pipeline.map_back import label_counts
from TokenUNetSegmentLib.pipeline.segmentation import segment

CENTER = np.array([12.0, -20.0, 31.0])  # off-centre on purpose: a flipped axis moves the ball away


def oblique_mirrored_affine():
    direction = rotation(2, 30) @ rotation(0, 20) @ np.diag([1.0, -1.0, 1.0])  # oblique and mirrored (det < 0)
    affine = affine_from_spacing((0.9, 1.3, 2.1), direction=direction)
    # place the grid so that its centre is near (0, 0, 25)
    shape = np.array([70, 60, 40])
    affine[:3, 3] = np.array([0.0, 0.0, 25.0]) - affine[:3, :3] @ ((shape - 1) / 2)
    return tuple(int(s) for s in shape), affine


GRIDS = {
    "axis-aligned isotropic": ((48, 48, 48), affine_from_spacing((1.5, 1.5, 1.5), origin=(-36, -56, -5))),
    "LPS-like flips, anisotropic": (
        (64, 50, 30),
        affine_from_spacing((1.0, 1.4, 2.5), origin=(40, 20, -10), direction=np.diag([-1.0, -1.0, 1.0])),
    ),
    "permuted axes (sagittal)": (
        (30, 60, 56),
        affine_from_spacing(
            (2.2, 1.1, 1.2), origin=(-20, 20, 60), direction=np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)
        ),
    ),
    "oblique mirrored anisotropic": oblique_mirrored_affine(),
}


def test_sitk_conversion_round_trips_ras_affines():
    shape, affine = oblique_mirrored_affine()
    image = image_from_array(np.zeros(shape, np.float32), affine)
    assert image.GetSize() == shape
    np.testing.assert_allclose(affine_of_image(image), affine, atol=1e-9)
    # SimpleITK's own index->point (LPS) agrees with our RAS affine
    point = np.array(image.TransformIndexToPhysicalPoint((3, 5, 7)))
    np.testing.assert_allclose(point * [-1, -1, 1], affine[:3, :3] @ [3, 5, 7] + affine[:3, 3], atol=1e-9)


def test_model_grid_covers_the_input_box_and_is_axis_aligned():
    shape, affine = oblique_mirrored_affine()
    source = Grid(shape, affine)
    grid = model_grid(source, "RAS", (2.0, 2.0, 2.0))
    np.testing.assert_allclose(grid.affine[:3, :3], np.eye(3) * 2.0)
    inverse = np.linalg.inv(grid.affine)
    corners = source.corners_ras() @ inverse[:3, :3].T + inverse[:3, 3]
    assert np.all(corners >= -0.5 - 1e-6) and np.all(corners <= np.array(grid.shape) - 0.5 + 1e-6)
    lps = model_grid(source, "LPS", None)
    np.testing.assert_allclose(np.sign(np.diag(lps.affine[:3, :3])), [-1, -1, 1])


def test_resample_is_physical():
    shape, affine = oblique_mirrored_affine()
    ball = physical_ball(shape, affine, CENTER, 9.0)
    target = Grid((40, 40, 40), affine_from_spacing((1.5, 1.5, 1.5), origin=CENTER - 19.5 * 1.5))
    out = resample(ball, Grid(shape, affine), target, "nearest", -1000)
    expected = physical_ball(target.shape, target.affine, CENTER, 9.0)
    assert dice(out > 0, expected > 0) > 0.9


@pytest.mark.parametrize("name", list(GRIDS))
def test_phantom_labels_and_heatmaps_land_at_the_right_physical_place(name):
    shape, affine = GRIDS[name]
    image = physical_ball(shape, affine, CENTER, 11.0)
    truth = image > 0
    result = segment((image, affine), threshold_package(), device="cpu")
    assert result.labels.shape == shape
    np.testing.assert_allclose(result.affine, affine)
    assert dice(result.labels == 1, truth) > 0.85
    centres = voxel_centres(shape, affine)
    centroid = centres[result.labels == 1].mean(axis=0)
    assert np.linalg.norm(centroid - CENTER) < 1.5
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000
    assert result.volumes_ml["ball"] == pytest.approx((result.labels == 1).sum() * voxel_ml)
    assert result.volumes_ml["ball"] == pytest.approx(4 / 3 * np.pi * 11.0**3 / 1000, rel=0.2)
    # token 0 of ThresholdNet is the pooled ball: its heatmap peaks over the ball, on the input grid
    heat = result.token_maps.get("gather", 0)
    assert heat.shape == shape and heat.min() >= 0 and heat.max() <= 1
    heat_centroid = (centres * heat[..., None]).sum(axis=(0, 1, 2)) / heat.sum()
    assert np.linalg.norm(heat_centroid - CENTER) < 1.5
    assert heat[truth].mean() > 3 * heat[~truth].mean()
    match = next(m for m in result.token_matches if m["token"] == 0 and m["kind"] == "gather")
    assert match["best_label"] == "ball" and match["soft_dice"] > 0.3


def test_extra_channels_on_other_grids_are_resampled_in_physical_space():
    shape0, affine0 = GRIDS["axis-aligned isotropic"]
    shape1, affine1 = GRIDS["oblique mirrored anisotropic"]
    other = CENTER + np.array([0.0, 10.0, -8.0])
    channel0 = physical_ball(shape0, affine0, CENTER, 10.0)  # ignored by the network
    channel1 = physical_ball(shape1, affine1, other, 10.0)
    package = threshold_package(in_channels=2, channel=1)
    result = segment([(channel0, affine0), (channel1, affine1)], package, device="cpu")
    assert result.labels.shape == shape0  # the first channel's grid
    centres = voxel_centres(shape0, affine0)
    assert dice(result.labels == 1, np.linalg.norm(centres - other, axis=-1) <= 10.0) > 0.8
    assert np.linalg.norm(centres[result.labels == 1].mean(axis=0) - other) < 1.5


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_files_give_the_same_physical_result_as_arrays(tmp_path, suffix):
    shape, affine = GRIDS["oblique mirrored anisotropic"]
    image = physical_ball(shape, affine, CENTER, 11.0)
    path = tmp_path / f"ball{suffix}"
    sitk.WriteImage(image_from_array(image.astype(np.int16), affine), str(path))
    from_file = segment(path, threshold_package(), device="cpu")
    from_array = segment((image, affine), threshold_package(), device="cpu")
    np.testing.assert_allclose(from_file.affine, affine, atol=1e-4)
    assert dice(from_file.labels == 1, from_array.labels == 1) > 0.98


def test_dicom_series_folder(tmp_path):
    shape, affine = GRIDS["LPS-like flips, anisotropic"]
    image = physical_ball(shape, affine, CENTER, 11.0).astype(np.int16)
    volume = image_from_array(image, affine)
    folder = tmp_path / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = volume.GetDirection()
    series = "1.2.826.0.1.3680043.2.1125.1"
    for k in range(volume.GetDepth()):
        slice_ = volume[:, :, k]
        origin = volume.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in {
            "0008|0060": "CT",
            "0020|000d": series + ".1",
            "0020|000e": series + ".2",
            "0020|0032": "\\".join(f"{v:.6f}" for v in origin),
            "0020|0013": str(k + 1),
            "0020|0037": "\\".join(
                f"{v:.6f}" for v in (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7])
            ),
            "0028|0030": f"{volume.GetSpacing()[1]:.6f}\\{volume.GetSpacing()[0]:.6f}",
            "0018|0050": f"{volume.GetSpacing()[2]:.6f}",
        }.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(slice_)
    result = segment(folder, threshold_package(), device="cpu")
    np.testing.assert_allclose(result.affine, affine, atol=1e-3)
    centres = voxel_centres(result.labels.shape, result.affine)
    assert np.linalg.norm(centres[result.labels == 1].mean(axis=0) - CENTER) < 1.5


def test_linear_label_interpolation_is_smoother_and_in_the_same_place():
    shape, affine = GRIDS["oblique mirrored anisotropic"]
    image = physical_ball(shape, affine, CENTER, 11.0)
    truth = image > 0
    coarse = threshold_package(spacing=(4.0, 4.0, 4.0))
    nearest = segment((image, affine), coarse, device="cpu")
    smooth = segment((image, affine), coarse, device="cpu", label_interpolation="linear")
    centres = voxel_centres(shape, affine)
    assert np.linalg.norm(centres[smooth.labels == 1].mean(axis=0) - CENTER) < 1.5
    assert dice(smooth.labels == 1, truth) > dice(nearest.labels == 1, truth)
    assert dice(smooth.labels == 1, truth) > 0.85


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "PIR"])
def test_any_model_orientation_maps_back_to_the_same_place(orientation):
    shape, affine = GRIDS["oblique mirrored anisotropic"]
    image = physical_ball(shape, affine, CENTER, 11.0)
    result = segment((image, affine), threshold_package(orientation=orientation), device="cpu")
    centres = voxel_centres(shape, affine)
    assert dice(result.labels == 1, image > 0) > 0.85
    assert np.linalg.norm(centres[result.labels == 1].mean(axis=0) - CENTER) < 1.5
    heat = result.token_maps.get("broadcast", 0)
    assert np.linalg.norm((centres * heat[..., None]).sum(axis=(0, 1, 2)) / heat.sum() - CENTER) < 1.5
    # ThresholdNet returns one tensor as both maps: stitching must not let them share storage
    np.testing.assert_array_equal(result.token_maps.coarse["gather"], result.token_maps.coarse["broadcast"])


def test_label_counts_match_bincount_in_any_memory_order_and_chunking():
    labels = np.random.default_rng(0).integers(0, 7, (33, 20, 17), dtype=np.uint8)
    expected = np.bincount(labels.ravel(), minlength=256)
    for array in (labels, np.asfortranarray(labels), labels.transpose(2, 0, 1)):
        np.testing.assert_array_equal(label_counts(array, chunk=1000), expected)


def test_resampled_arrays_keep_simpleitk_memory_order_and_their_values():
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    values = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    out = resample_image(image_from_array(values, affine), Grid(values.shape, affine), "nearest")
    assert out.flags.f_contiguous and out.flags.writeable  # i fastest: no copy on either side
    np.testing.assert_array_equal(out, values)


def _axis_aligned_case(rng):
    """Random source and target grids with parallel axes (any order and signs), spacings and origins chosen so
    that voxel centres often fall exactly halfway between two source voxels."""
    direction = np.zeros((3, 3))
    direction[rng.permutation(3), np.arange(3)] = rng.choice([-1.0, 1.0], 3)
    source = Grid(
        tuple(int(n) for n in rng.integers(4, 25, 3)),
        affine_from_spacing(rng.choice([0.5, 0.8, 1.0, 1.5, 3.0], 3), origin=0.25 * rng.integers(-6, 7, 3)),
    )
    target = Grid(
        tuple(int(n) for n in rng.integers(4, 35, 3)),
        affine_from_spacing(rng.choice([0.5, 0.75, 1.0, 1.5, 3.0], 3), 0.25 * rng.integers(-6, 7, 3), direction),
    )
    return source, target


def test_nearest_on_parallel_axes_is_simpleitks_but_where_a_centre_lies_halfway():
    rng = np.random.default_rng(7)
    ties = 0
    for _ in range(80):
        source, target = _axis_aligned_case(rng)
        labels = rng.integers(1, 250, source.shape).astype(np.uint8)
        ours = resample_nearest(labels, source, target)
        theirs = resample(labels, source, target, "nearest", 0, np.uint8)
        assert ours.shape == target.shape and ours.flags.f_contiguous  # SimpleITK's memory order
        differ = np.argwhere(ours != theirs)
        if differ.size:  # only at exact ties, where both neighbours are as near
            to_source = np.linalg.solve(source.affine, target.affine)
            centres = differ @ to_source[:3, :3].T + to_source[:3, 3]
            assert np.all(np.any(np.abs(centres - np.floor(centres) - 0.5) < 1e-6, axis=1))
            ties += len(differ)
    assert ties  # the cases did include ties


def test_nearest_rounds_halfway_centres_up_and_leaves_oblique_grids_to_simpleitk():
    source = Grid((4, 1, 1), affine_from_spacing((2.0, 1.0, 1.0)))
    target = Grid((3, 1, 1), affine_from_spacing((2.0, 1.0, 1.0), origin=(1.0, 0.0, 0.0)))  # source index 0.5 ...
    labels = np.array([1, 2, 3, 4], np.uint8).reshape(4, 1, 1)
    np.testing.assert_array_equal(resample_nearest(labels, source, target)[:, 0, 0], [2, 3, 4])
    beyond = Grid((3, 1, 1), affine_from_spacing((8.0, 1.0, 1.0), origin=(-8.0, 0.0, 0.0)))  # -4, 0 and 4 voxels
    np.testing.assert_array_equal(resample_nearest(labels, source, beyond)[:, 0, 0], [0, 1, 0])
    tilted_affine = affine_from_spacing((1.2, 1.1, 1.5), origin=(-3, 2, 1))
    tilted_affine[:3, :3] = rotation(2, 25) @ rotation(0, 10) @ tilted_affine[:3, :3]
    tilted = Grid((20, 18, 16), tilted_affine)
    labels = np.random.default_rng(0).integers(0, 9, (12, 14, 10)).astype(np.uint8)
    coarse = Grid(labels.shape, affine_from_spacing((2.0, 1.5, 2.0), origin=(-8, -6, -5)))
    np.testing.assert_array_equal(
        resample_nearest(labels, coarse, tilted), resample(labels, coarse, tilted, "nearest", 0, np.uint8)
    )


def test_nearest_treats_float32_rounding_of_the_axes_as_parallel(monkeypatch):
    from TokenUNetSegmentLib.pipeline import geometry

    rng = np.random.default_rng(11)
    source = Grid((30, 28, 26), affine_from_spacing((3.0, 3.0, 3.0), origin=(-40.0, -35.0, -30.0)))
    noisy = affine_from_spacing((0.8, 0.8, 1.5), origin=(35.0, 30.0, -28.0), direction=np.diag([-1.0, -1.0, 1.0]))
    noisy[:3, :3] += rng.uniform(-1, 1, (3, 3)) * 1e-7 * (np.abs(noisy[:3, :3]) == 0)  # float32 header noise
    target = Grid((100, 110, 55), noisy)
    labels = rng.integers(1, 250, source.shape).astype(np.uint8)
    theirs = resample(labels, source, target, "nearest", 0, np.uint8)
    monkeypatch.setattr(geometry, "resample_image", None)  # the index lookups, not SimpleITK
    ours = resample_nearest(labels, source, target)
    differ = np.argwhere(ours != theirs)
    if differ.size:  # only within a hair of halfway
        to_source = np.linalg.solve(source.affine, target.affine)
        centres = differ @ to_source[:3, :3].T + to_source[:3, 3]
        assert np.all(np.any(np.abs(centres - np.floor(centres) - 0.5) < 1e-3, axis=1))
    assert len(differ) < 1e-3 * ours.size


def test_float32_rounding_of_a_header_leaves_the_model_grid_on_the_scans_voxels():
    """A box longer than whole model voxels by a rounding error got one more voxel, which moved the whole grid half
    a voxel off the scan's own voxels (every value interpolated, labels halfway between two model voxels)."""
    plain = Grid((122, 101, 112), affine_from_spacing((3.0, 3.0, 3.0), origin=(-180.0, -150.0, -160.0)))
    noisy_affine = plain.affine.copy()
    noisy_affine[:3, :3] += np.array([[0, 3e-8, 0], [-2e-8, 0, 1e-8], [0, 0, 0]])  # a float32 direction
    for spacing in [(3.0, 3.0, 3.0), (1.5, 1.5, 1.5)]:
        expected = model_grid(plain, "RAS", spacing)
        grid = model_grid(Grid(plain.shape, noisy_affine), "RAS", spacing)
        assert grid.shape == expected.shape
        np.testing.assert_allclose(grid.affine, expected.affine, atol=1e-4)
    wider = Grid((122, 101, 112), affine_from_spacing((3.0, 3.0, 3.003), origin=(-180.0, -150.0, -160.0)))
    assert model_grid(wider, "RAS", (3.0, 3.0, 3.0)).shape[2] == 113  # a real 0.1-voxel excess still gets its voxel
