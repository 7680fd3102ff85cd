"""Fetch the second training patient of the demo model: the chest CT of TotalSegmentator's aorta-report
test (another patient, 1.5 mm, T12 to neck) with a partial label map built from that test's reference
masks (model-generated, like the sample's). Only the aorta is one of the demo model's labels; the heart,
pulmonary artery, aortic branches and T12 are named too, so training learns they are none of the
model's organs. The files are generated, not committed.

It also writes the upper part of that scan, from about 2 cm above the diaphragm domes (slice 65, checked on
coronal views) to the neck, as a *complete* case: there, none of the twelve organs but the aorta can lie,
so every voxel outside the aorta is background. Training on it (rather than on the partial whole scan,
whose unlabelled liver dome, spleen and stomach let the marginal loss drift towards background) teaches
the thoracic aorta and that the heart, lungs and neck hold none of the organs.

    .venv/bin/python scripts/demo-model/fetch_second_patient.py [OUT_FOLDER]   (default: demo-model-data)
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]
SDIST = "totalsegmentator==2.18.0"
SDIST_SHA256 = "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03"

PREFIX = "totalsegmentator-2.18.0/tests/reference_files/"
IMAGE = "aorta_report/example_ct.nii.gz"
UPPER_CHEST_FIRST_SLICE = 65  # 97.5 mm above the scan's first slice, about 2 cm above the diaphragm domes
# label file value -> (structure name, mask in the sdist); earlier entries win where masks overlap
STRUCTURES = {
    1: ("aorta", "aorta_report/test_result/models/aorta.nii.gz"),
    2: ("heart", "pulmonary_report/models/heart.nii.gz"),
    3: ("pulmonary artery", "pulmonary_report/models/pulmonary_artery.nii.gz"),
    4: ("brachiocephalic trunk", "aorta_report/test_result/models/brachiocephalic_trunk.nii.gz"),
    5: ("left common carotid artery", "aorta_report/test_result/models/common_carotid_artery_left.nii.gz"),
    6: ("left subclavian artery", "aorta_report/test_result/models/subclavian_artery_left.nii.gz"),
    7: ("celiac trunk", "aorta_report/test_result/models/celiac_trunk.nii.gz"),
    8: ("superior mesenteric artery", "aorta_report/test_result/models/superior_mesenteric_artery.nii.gz"),
    9: ("T12 vertebra", "aorta_report/test_result/models/vertebrae_T12.nii.gz"),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def download(folder: Path) -> Path:
    found = sorted(folder.glob("totalsegmentator-2.18.0.tar.gz"))
    if not found:
        from fetch_liver_patient import pip_download_into  # beside this script

        pip_download_into(["--no-binary", ":all:", SDIST], folder)
        found = sorted(folder.glob("totalsegmentator-2.18.0.tar.gz"))
    return found[0]


def main(out: Path) -> None:
    archive = download(out)
    if sha256(archive) != SDIST_SHA256:
        raise SystemExit(f"{archive.name}: SHA256 {sha256(archive)}, expected {SDIST_SHA256}")
    with tempfile.TemporaryDirectory() as temp, tarfile.open(archive) as tar:
        wanted = [IMAGE, *(mask for _, mask in STRUCTURES.values())]
        for name in wanted:
            tar.extract(PREFIX + name, temp, filter="data")
        source = Path(temp) / PREFIX
        image = sitk.ReadImage(str(source / IMAGE))
        labels = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
        for value in sorted(STRUCTURES, reverse=True):
            mask = sitk.ReadImage(str(source / STRUCTURES[value][1]))
            on_grid = sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
            labels[sitk.GetArrayViewFromImage(on_grid) > 0] = value
        label_image = sitk.GetImageFromArray(labels)
        label_image.CopyInformation(image)
        sitk.WriteImage(image, str(out / "ChestCT.nii.gz"), useCompression=True)
        sitk.WriteImage(label_image, str(out / "ChestCT.PartialLabels.nii.gz"), useCompression=True)
        upper = (slice(0, image.GetSize()[0]), slice(0, image.GetSize()[1]), slice(UPPER_CHEST_FIRST_SLICE, None))
        sitk.WriteImage(image[upper], str(out / "UpperChestCT.nii.gz"), useCompression=True)
        sitk.WriteImage(label_image[upper], str(out / "UpperChestCT.Labels.nii.gz"), useCompression=True)
    names = {str(value): name for value, (name, _) in STRUCTURES.items()}
    provenance = {
        "source": f"{SDIST} source distribution on PyPI (Apache-2.0), sha256 {sha256(archive)}",
        "image": PREFIX + IMAGE,
        "labels": {name: PREFIX + mask for name, mask in STRUCTURES.values()},
        "label_names": names,
        "note": "labels are TotalSegmentator model outputs, not drawn by hand; image from the TotalSegmentator "
        "dataset (CC BY 4.0, Wasserthal et al. 2023)",
    }
    (out / "ChestCT.PartialLabels.names.json").write_text(json.dumps(names, indent=2) + "\n", encoding="utf-8")
    (out / "ChestCT.provenance.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    print(f"wrote ChestCT and UpperChestCT images and labels to {out}")


if __name__ == "__main__":
    from fetch_liver_patient import parse_folder  # beside this script

    main(parse_folder(__doc__))
