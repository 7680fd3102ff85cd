"""macOS's AppleDouble files (``._BRATS_001.nii.gz``: a few bytes of metadata that copies from a Mac leave beside
each file on other disks) in the folders ``datalist`` reads: left out, as ``batch`` leaves hidden entries out of a
folder of cases, never taken for cases."""

import numpy as np
from helpers.channel_files import channel_files, write_dataset_json, write_volume
from TokenUNetSegmentLib.pipeline.training import datasets

APPLE_DOUBLE = b"\x00\x05\x16\x07" + bytes(78)  # its magic number, then its header


def test_apple_double_files_in_a_nnunet_dataset_or_image_folders_are_no_cases(tmp_path):
    """nnU-Net v2 raw with ``labelsTr/._BRATS_001.nii.gz`` and ``imagesTr/._BRATS_001_0000.nii.gz`` (before: refused,
    "labelsTr/._BRATS_001.nii.gz has no image imagesTr/._BRATS_001_0001.nii.gz"); image and label folders with
    ``._img0001.nii.gz`` (before: paired as a case of its own number)."""
    root = tmp_path / "Dataset001_BrainTumour"
    channel_files(root / "imagesTr")
    for case in ("BRATS_001", "BRATS_002"):
        write_volume(np.zeros((16, 16, 16), np.uint8), root / "labelsTr" / f"{case}.nii.gz")
    (root / "labelsTr" / "._BRATS_001.nii.gz").write_bytes(APPLE_DOUBLE)
    (root / "imagesTr" / "._BRATS_001_0000.nii.gz").write_bytes(APPLE_DOUBLE)
    write_dataset_json(root)
    datalist, _ = datasets.decathlon(root)
    assert [entry["label"] for entry in datalist["training"]] == [f"labelsTr/BRATS_00{i}.nii.gz" for i in (1, 2)]
    for folder, name in (("img", "img"), ("label", "label")):
        for index in (1, 2):
            write_volume(np.zeros((16, 16, 16), np.uint8), tmp_path / folder / f"{name}{index:04d}.nii.gz")
        (tmp_path / folder / f"._{name}0003.nii.gz").write_bytes(APPLE_DOUBLE)
    (tmp_path / "img" / "._img0001.nii.gz").write_bytes(APPLE_DOUBLE)
    datalist, report = datasets.folders(tmp_path / "img", tmp_path / "label", "btcv")
    assert [entry["image"] for entry in datalist["training"]] == ["img/img0001.nii.gz", "img/img0002.nii.gz"]
    assert not any("._" in str(entry) for entry in report.get("skipped", []))
