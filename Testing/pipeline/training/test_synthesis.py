"""Training augmentation and synthesis: tissue maps, CT synthesis with contrast phases, the one-resampling
warp, field-of-view cuts with segment()'s padding convention, and the patch sampler."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers.packages import ball_phantom
from helpers.training_data import train_config, write_dataset
from TokenUNetSegmentLib.pipeline.geometry import affine_from_spacing, image_from_array
from TokenUNetSegmentLib.pipeline.metadata import parse_config
from TokenUNetSegmentLib.pipeline.preprocess import prepare
from TokenUNetSegmentLib.pipeline.training import synthesis
from TokenUNetSegmentLib.pipeline.training.data import load_case, read_datalist
from TokenUNetSegmentLib.pipeline.training.label_tables import TOTALSEGMENTATOR_V2, name_key
from TokenUNetSegmentLib.pipeline.training.sampler import PatchSampler, SamplerSettings
from TokenUNetSegmentLib.pipeline.training.tissues import (
    PHASES,
    TISSUE_ID,
    draw_scan_means,
    threshold_tissues,
    tissue_map,
    tissue_of,
)
from TokenUNetSegmentLib.pipeline.training.warp import (
    FieldOfViewSettings,
    WarpSettings,
    field_of_view_mask,
    random_source_grid,
    sample,
)
from TokenUNetSegmentLib.pipeline.volumes import Volume


def test_structure_names_map_to_tissues():
    assert len(TOTALSEGMENTATOR_V2) == 117 and TOTALSEGMENTATOR_V2[32] == "vertebrae_T12"
    assert TOTALSEGMENTATOR_V2[50] == "vertebrae_C1" and TOTALSEGMENTATOR_V2[117] == "costal_cartilages"
    expected = {
        "liver": "liver", "spleen": "spleen", "kidney_left": "kidney", "kidney_cyst_left": "fluid",
        "portal_vein_and_splenic_vein": "vein", "inferior vena cava": "vein", "aorta": "artery",
        "brachiocephalic_trunk": "artery", "gallbladder": "fluid", "urinary_bladder": "fluid",
        "vertebrae_L1": "bone", "rib_left_3": "bone", "costal_cartilages": "cartilage", "heart": "heart",
        "lung_upper_lobe_left": "lung", "trachea": "airway", "small_bowel": "bowel", "stomach": "bowel",
        "iliopsoas_right": "muscle", "spinal_cord": "nerve", "pulmonary artery": "artery",
    }  # fmt: skip
    assert {name: tissue_of(name) for name in expected} == expected
    assert tissue_of("organ1") is None  # unknown names are left to their HU
    assert name_key("kidney_right") == name_key("Right kidney") and name_key("postcava") == name_key("IVC")


def test_threshold_and_named_tissue_maps():
    hu = np.array([-1000, -700, -100, 40, 250, 900], np.float32).reshape(1, 1, 6)
    names = [TISSUE_ID[t] for t in ("air", "lung", "fat", "soft", "dense", "bone")]
    assert threshold_tissues(hu).ravel().tolist() == names
    structures = np.array([0, 0, 0, 5, 18, 7], np.uint16).reshape(1, 1, 6)
    hu2 = hu.copy()
    hu2[0, 0, 4] = -800  # gas inside a bowel structure stays gas
    tissues = tissue_map(hu2, structures, {5: "liver", 18: "small_bowel", 7: "unknown thing"}).ravel()
    assert tissues[3] == TISSUE_ID["liver"] and tissues[4] == TISSUE_ID["airway"]
    assert tissues[5] == TISSUE_ID["bone"]  # unknown name: the class of its median HU


def test_contrast_phases_move_enhancing_tissues_only():
    rng = np.random.default_rng(0)
    draws = {p: np.mean([draw_scan_means(rng, p)[0] for _ in range(200)], axis=0) for p in range(len(PHASES))}
    artery, liver, fat = TISSUE_ID["artery"], TISSUE_ID["liver"], TISSUE_ID["fat"]
    assert draws[1][artery] > draws[2][artery] + 80 > draws[0][artery] + 80  # arterial > portal > unenhanced
    assert draws[2][liver] > draws[0][liver] + 25  # the liver enhances in the portal venous phase
    assert abs(draws[1][fat] - draws[0][fat]) < 10  # fat does not enhance


def test_synthetic_images_follow_the_tissue_map():
    rng = np.random.default_rng(1)
    tissues = torch.zeros((32, 32, 32), dtype=torch.uint8)
    tissues[4:28, 4:28, 4:28] = TISSUE_ID["fat"]
    tissues[8:20, 8:24, 8:24] = TISSUE_ID["liver"]
    tissues[20:26, 10:20, 10:20] = TISSUE_ID["bone"]
    for _ in range(5):
        image, phase = synthesis.synthesize(tissues, rng)
        assert image.shape == (1, 32, 32, 32) and phase in range(3)
        fat, liver, bone = (image[0][tissues == TISSUE_ID[t]].mean().item() for t in ("fat", "liver", "bone"))
        assert fat < -50 < 0 < liver < 200 < bone
    image = torch.full((1, 32, 32, 32), 50.0)
    with_lesions = synthesis.add_lesions(image.clone(), tissues, (3.0, 3.0, 3.0), rng, count=3)
    changed = (with_lesions - image).abs() > 1
    assert changed.any() and not changed[0][tissues != TISSUE_ID["liver"]].any()  # lesions only inside the organ


def test_large_lesions_reach_metastasis_size_and_the_default_draws_are_unchanged():
    tissues = torch.zeros((48, 48, 48), dtype=torch.uint8)
    tissues[2:46, 2:46, 2:46] = TISSUE_ID["liver"]
    image = torch.full((1, 48, 48, 48), 60.0)

    def lesion_volumes_ml(large_share):
        volumes = []
        for seed in range(12):
            out = synthesis.add_lesions(
                image.clone(), tissues, (3.0, 3.0, 3.0), np.random.default_rng(seed), 1, large_share
            )
            volumes.append(float(((out - image).abs() > 1).sum()) * 27 / 1000)
        return volumes

    small, large = lesion_volumes_ml(0.0), lesion_volumes_ml(1.0)
    assert max(small) < 32  # 6-30 mm across, stretched by up to 30 % per axis: a 39 mm ball at most
    assert np.median(large) > 4 * np.median(small) and max(large) > 100  # metastases of 60 mm and more
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    plain = synthesis.add_lesions(image.clone(), tissues, (3.0, 3.0, 3.0), rng_a, 2)
    assert torch.equal(plain, synthesis.add_lesions(image.clone(), tissues, (3.0, 3.0, 3.0), rng_b, 2, 0.0))
    assert rng_a.random() == rng_b.random()  # the same draws as before the option: old recipes reproduce


def test_remapping_keeps_texture_and_moves_tissue_means():
    rng = np.random.default_rng(2)
    tissues = torch.zeros((16, 16, 16), dtype=torch.uint8)
    tissues[:8] = TISSUE_ID["liver"]
    tissues[8:] = TISSUE_ID["artery"]
    image = torch.where(tissues == TISSUE_ID["liver"], 55.0, 45.0)[None] + torch.randn(1, 16, 16, 16) * 5
    means = np.full(21, np.nan)
    means[TISSUE_ID["liver"]], means[TISSUE_ID["artery"]] = 55.0, 45.0
    out = synthesis.remap(image, tissues, means, rng)
    liver_in, liver_out = image[0][:8], out[0][:8]
    assert torch.corrcoef(torch.stack([liver_in.ravel(), liver_out.ravel()]))[0, 1] > 0.99  # same texture
    assert not torch.allclose(out, image)


def test_identity_warp_is_a_plain_crop_and_scaling_enlarges_anatomy():
    volume = torch.arange(20 * 20 * 20, dtype=torch.float32).reshape(1, 20, 20, 20)
    rng = np.random.default_rng(0)
    plain = WarpSettings(probability=0.0, elastic_probability=0.0)
    source = random_source_grid((8, 8, 8), (10.5, 10.5, 10.5), (1, 1, 1), plain, rng)
    assert torch.equal(sample(volume, source, "nearest"), volume[:, 7:15, 7:15, 7:15])
    zoom = WarpSettings(probability=1.0, rotation_deg=0.0, scale=(2.0, 2.0), anisotropy=0.0, elastic_probability=0.0)
    source = random_source_grid((8, 8, 8), (10, 10, 10), (1, 1, 1), zoom, rng)
    assert float(source[0].max() - source[0].min()) == pytest.approx(3.5)  # half the extent: anatomy twice as big
    outside = sample(volume, source + 100, "bilinear", fill=-7.0)
    assert torch.all(outside == -7.0)  # beyond the case: the padding value


def test_slab_cuts_are_at_least_the_minimum_thickness():
    rng = np.random.default_rng(3)
    settings = FieldOfViewSettings(slab=1.0, min_slab_mm=30.0, side=0.0, oblique_deg=0.0, circle=0.0)
    for _ in range(20):
        keep = field_of_view_mask((48, 48, 48), (3.0, 3.0, 3.0), settings, rng)
        assert keep is not None
        kept_z = np.flatnonzero(keep.any(axis=(0, 1)))
        assert keep[:, :, kept_z].all()  # an axial slab: whole slices kept
        assert len(kept_z) * 3.0 >= 30.0 - 3.0 and np.all(np.diff(kept_z) == 1)


def _phantom_case(tmp_path, shape=(48, 44, 40)):
    image = ball_phantom(shape, np.array(shape) / 2, np.array(shape) * 0.45, value=40, background=-1000)
    label = np.zeros(shape, np.int16)
    organ = ball_phantom(shape, np.array(shape) / 2 + (-6, 0, 0), (7, 7, 9)) > 0
    image[organ], label[organ] = 220, 1
    affine = affine_from_spacing((3.0, 3.0, 3.0))
    sitk.WriteImage(image_from_array(image.astype(np.int16), affine), str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(image_from_array(label, affine), str(tmp_path / "seg.nii.gz"))
    config = train_config()
    config["preprocessing"]["spacing"] = [3.0, 3.0, 3.0]
    config["preprocessing"]["crop_foreground"] = True
    config["labels"] = config["labels"][:1]
    config["labels"][0]["name"] = "liver"
    config["architecture"]["out_channels"] = 2
    datalist = {"labels": {"1": "liver"}, "training": [{"image": "ct.nii.gz", "label": "seg.nii.gz"}]}
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    entry = read_datalist(tmp_path / "datalist.json")["training"][0]
    return image, label, affine, config, load_case(entry, config, 8, (16, 16, 16))


def test_cases_keep_the_hu_image_that_the_window_turns_into_the_network_input(tmp_path):
    _, _, _, config, case = _phantom_case(tmp_path)
    assert case.hu is not None and case.tissues is not None and case.inside.any()
    window = np.clip((case.hu - (-200.0)) / 500.0, 0, 1)
    np.testing.assert_allclose(window, case.image, atol=1e-5)
    assert case.pad == (-1000.0,) and case.source["spacing_mm"] == [3.0, 3.0, 3.0]


def test_a_slab_of_a_training_scan_keeps_its_organs_where_they_were(tmp_path):
    """The slab, preprocessed like segment() does, holds the same labels at the same physical places, and the
    padding around it is the window's low end: the value the sampler's field-of-view cuts use."""
    image, label, affine, config, case = _phantom_case(tmp_path)
    slab = slice(14, 24)  # 10 slices (30 mm) through the organ
    slab_affine = affine.copy()
    slab_affine[:3, 3] = affine[:3, :3] @ np.array([0, 0, slab.start]) + affine[:3, 3]
    sitk.WriteImage(image_from_array(image[:, :, slab].astype(np.int16), slab_affine), str(tmp_path / "slab.nii.gz"))
    sitk.WriteImage(image_from_array(label[:, :, slab], slab_affine), str(tmp_path / "slab_seg.nii.gz"))
    datalist = {"labels": {"1": "liver"}, "training": [{"image": "slab.nii.gz", "label": "slab_seg.nii.gz"}]}
    (tmp_path / "slab.json").write_text(json.dumps(datalist))
    slab_case = load_case(read_datalist(tmp_path / "slab.json")["training"][0], config, 8, (16, 16, 16))
    typed = parse_config(config, "slab test")
    prepared = prepare([Volume(image[:, :, slab], slab_affine)], typed, 8, (16, 16, 16))
    np.testing.assert_allclose(slab_case.image, prepared.image)  # training sees what segment() sees
    # every organ voxel of the slab case sits where the whole case has the organ (same physical point)
    region = prepared.region
    organ = np.argwhere(slab_case.label == 1)
    assert len(organ) == int((label[:, :, slab] == 1).sum())
    whole_index = np.rint(
        (np.c_[organ, np.ones(len(organ))] @ region.affine.T)[:, :3] @ np.linalg.inv(affine[:3, :3]).T
        - np.linalg.inv(affine[:3, :3]) @ affine[:3, 3]
    ).astype(int)
    assert (label[tuple(whole_index.T)] == 1).all()
    outside = ~slab_case.inside
    assert outside.any() and np.all(slab_case.image[0][outside] == 0.0)  # padding: the window's low end
    sampler = PatchSampler([case], 2, SamplerSettings(patch=(16, 16, 16), windows=[(-200.0, 300.0)]))
    sampler.fov = FieldOfViewSettings(slab=1.0, side=0.0, oblique_deg=0.0, circle=0.0)
    rng = np.random.default_rng(0)
    cut = [sampler(rng) for _ in range(10)]
    assert any((img[0] == 0.0).all(dim=(0, 1)).any() for img, _, _ in cut)  # whole padded slices, value 0


def test_sampled_patches_keep_labels_on_their_organ(tmp_path):
    _, _, _, config, case = _phantom_case(tmp_path)
    settings = SamplerSettings(patch=(16, 16, 16), windows=[(-200.0, 300.0)], synthetic_ratio=0.0, remap_ratio=0.0)
    settings.lesion_probability = 0.0
    sampler = PatchSampler([case], 2, settings)
    rng = np.random.default_rng(5)
    inside = []
    for _ in range(30):
        image, label, missing = sampler(rng)
        assert image.shape == (1, 16, 16, 16) and label.shape == (1, 16, 16, 16) and missing.shape == (2,)
        assert set(torch.unique(label).tolist()) <= {0, 1}
        organ = label[0] == 1
        if organ.sum() > 20:
            inside.append(float((image[0][organ] > 0.66).float().mean()))  # 220 HU -> 0.84, body 40 HU -> 0.48
    assert inside and np.median(inside) > 0.85


def test_sampler_synthesises_only_from_cases_that_allow_it(tmp_path):
    _, _, _, _, case = _phantom_case(tmp_path)
    case.synthesis = False
    settings = SamplerSettings(patch=(16, 16, 16), windows=[(-200.0, 300.0)], synthetic_ratio=1.0, remap_ratio=0.0)
    sampler = PatchSampler([case], 2, settings)
    calls = []
    original = synthesis.synthesize
    synthesis.synthesize = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        for _ in range(5):
            sampler(np.random.default_rng(len(calls)))
        assert not calls
        case.synthesis = True
        sampler(np.random.default_rng(0))
        assert calls
    finally:
        synthesis.synthesize = original


def test_datalist_reads_named_tables_and_per_structure_masks(tmp_path):
    root = tmp_path / "data"
    write_dataset(root, cases=1, validation=0)
    label = sitk.ReadImage(str(root / "case0_seg.nii.gz"))
    array = sitk.GetArrayFromImage(label)
    masks = root / "segmentations"
    masks.mkdir()
    for value, name in ((10, "organ1"), (20, "organ2")):
        mask = sitk.GetImageFromArray((array == value).astype(np.uint8))
        mask.CopyInformation(label)
        sitk.WriteImage(mask, str(masks / f"{name}.nii.gz"))
    entries = [
        {"image": "case0.nii.gz", "patient": "P1",
         "label": {"organ1": "segmentations/organ1.nii.gz", "organ2": "segmentations/organ2.nii.gz"}},
        {"image": "case0.nii.gz", "label": "case0_seg.nii.gz", "labels": "btcv", "partial": True, "synthesis": False},
    ]  # fmt: skip
    (root / "list.json").write_text(json.dumps({"training": entries}))
    data = read_datalist(root / "list.json")
    first, second = data["training"]
    assert first["labels"] == {1: "organ1", 2: "organ2"} and first["patient"] == "P1"
    assert second["labels"][6] == "liver" and second["synthesis"] is False and second["patient"] == "case0"
    case = load_case(first, train_config(), 8, (16, 16, 16))
    assert set(np.unique(case.label)) == {0, 1, 2}
    assert "segmentations/organ1.nii.gz" in case.files
