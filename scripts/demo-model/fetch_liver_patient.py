"""Fetch the third patient: a manually labelled liver crop of LiTS case 117, shipped as test data in the PyPI
wheel ``liver-ct-segmentation-package==1.1.0`` (``data/img_117.pt``, ``data/lab_117.pt``: 128^3 voxels in HU,
liver = 1, tumour = 2, no voxel size stored). Writes NIfTI files (not committed):

- ``LiverCT.nii.gz``: the image, with an assumed voxel size of 1.5 mm and LPS-aligned axes (axis 0 patient
  right -> left, axis 1 anterior -> posterior, axis 2 inferior -> superior; read from the anatomy: liver on the
  right, spine posterior, lung bases above). No size is stored; 1.5 mm follows from the vertebral bodies
  (28-29 voxels wide, 25 deep, 22.5 voxels from one vertebra to the next), the suprarenal aorta (10-12 voxels)
  against typical adult sizes, and from the HU values being multiples of 1/8 (a 2x2x2 average of a finer scan).
  It may be off by about 0.2 mm per axis (the project's dataset inventory, notes/datasets.md of the data survey).
- ``LiverCT.Labels.nii.gz``: liver including its tumours = 1 (the model's "liver"); ``LiverCT.Tumour.nii.gz``.

The crop is the liver's bounding box resized to 128^3: the liver touches every face, so every other organ is
cut. LiTS data is licensed for non-commercial research: this project uses the case for evaluation and for
leave-one-patient-out folds, not for the shipped weights.

    .venv/bin/python scripts/demo-model/fetch_liver_patient.py [OUT_FOLDER]   (default: demo-model-data)

The .pt files are pickles; they are read with an unpickler that accepts nothing but numpy arrays.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]
WHEEL = "liver-ct-segmentation-package==1.1.0"
WHEEL_FILE = "liver_ct_segmentation_package-1.1.0-py2.py3-none-any.whl"
WHEEL_SHA256 = "3e65fbe24a469cba197a1fb91ae1e02555375c4f7e7ced6c5fcb7845fca4cf90"
SPACING_MM = (1.5, 1.5, 1.5)
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds numpy arrays and refuses every other global (no code can run)."""

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refused {module}.{name} in a data file")
        if module == "_codecs":
            import codecs

            return codecs.encode
        if module == "numpy.core.multiarray":
            from numpy._core import multiarray

            return multiarray._reconstruct
        return getattr(np, name)


def read_array(wheel: zipfile.ZipFile, member: str) -> np.ndarray:
    with zipfile.ZipFile(io.BytesIO(wheel.read(member))) as archive:
        name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        array = _ArraysOnly(io.BytesIO(archive.read(name))).load()
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{member} does not hold an array")
    return array


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pip_download(arguments: list[str], folder: Path) -> None:
    """``pip download`` of ``arguments`` (without dependencies) into ``folder``. A failure (no network, the package
    index out of reach) ends the script with one line saying what failed and what to do, pip's last words in it
    (before: a CalledProcessError traceback under pip's lines). Shared with fetch_second_patient.py."""
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *arguments, "-d", str(folder)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        said = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        reason = said[-1].removeprefix("ERROR: ")[:200] if said else f"pip ended with exit status {done.returncode}"
        raise SystemExit(
            f"error: could not download {arguments[-1]} from the package index: {reason} (check the network "
            "connection and pip's index settings, e.g. PIP_INDEX_URL, then run again)"
        )


def pip_download_into(arguments: list[str], out: Path) -> None:
    """:func:`pip_download` into ``out``, made if needed; a folder it made is removed again when nothing came (the
    script leaves no trace of a failed download). Shared with fetch_second_patient.py."""
    made = [folder for folder in (out, *out.parents) if not folder.exists()]
    out.mkdir(parents=True, exist_ok=True)
    try:
        pip_download(arguments, out)
    except BaseException:
        for folder in made:  # deepest first, each only if still empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def main(out: Path) -> None:
    wheel_path = out / WHEEL_FILE
    if not wheel_path.exists():
        pip_download_into([WHEEL], out)
    digest = sha256(wheel_path)
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{wheel_path.name}: SHA256 {digest}, expected {WHEEL_SHA256}")
    with zipfile.ZipFile(wheel_path) as wheel:
        image = read_array(wheel, "liver_ct_segmentation_package/data/img_117.pt").astype(np.float32)
        labels = read_array(wheel, "liver_ct_segmentation_package/data/lab_117.pt").astype(np.uint8)

    def write(array: np.ndarray, name: str, dtype) -> None:
        volume = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)).astype(dtype))
        volume.SetSpacing(SPACING_MM)  # ITK axes are LPS: identity direction = right->left, ant->post, inf->sup
        sitk.WriteImage(volume, str(out / name), useCompression=True)

    write(np.rint(image), "LiverCT.nii.gz", np.int16)
    write((labels > 0).astype(np.uint8), "LiverCT.Labels.nii.gz", np.uint8)
    write((labels == 2).astype(np.uint8), "LiverCT.Tumour.nii.gz", np.uint8)
    (out / "LiverCT.Labels.names.json").write_text(json.dumps({"1": "liver"}, indent=2) + "\n", encoding="utf-8")
    provenance = {
        "source": f"{WHEEL} wheel on PyPI, sha256 {digest}",
        "files": ["liver_ct_segmentation_package/data/img_117.pt", "liver_ct_segmentation_package/data/lab_117.pt"],
        "case": "LiTS (Liver Tumor Segmentation Benchmark) training case 117, cropped to the liver, 128^3",
        "assumed_spacing_mm": list(SPACING_MM),
        "licence": "LiTS data: non-commercial research use; used here for evaluation and "
        "leave-one-patient-out folds only",
        "labels": "liver and tumour merged into liver = 1; the tumour alone in LiverCT.Tumour.nii.gz",
    }
    (out / "LiverCT.provenance.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    print(f"wrote LiverCT image and labels to {out}")


def parse_folder(doc: str, argv=None) -> Path:
    """The output folder of a fetcher described by ``doc`` from its command line (``--help`` prints the usage;
    anything more is refused). Shared with fetch_second_patient.py."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument(
        "out", metavar="OUT_FOLDER", nargs="?", type=Path, default=ROOT / "demo-model-data",
        help="where to write the files (default: the repository's demo-model-data)",
    )  # fmt: skip
    return parser.parse_args(argv).out


if __name__ == "__main__":
    main(parse_folder(__doc__))
