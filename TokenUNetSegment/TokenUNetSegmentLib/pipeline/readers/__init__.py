"""Image readers that check what a file claims before trusting it.

:func:`read_image` reads a NIfTI, NRRD or MetaImage file, or a DICOM series folder, into a SimpleITK image.
Before any voxel is read, the header is parsed here and refused when its volume would not fit in memory,
its spacing is zero, negative or not finite, or its axes are degenerate; the voxel data is checked to be
all there (a short file, a broken gzip stream, a missing detached data file are refused). DICOM slices are
checked to form one regular grid. What a careful reader would go on with comes back as warnings.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import SimpleITK as sitk

from ..errors import InputError, OutOfMemoryError
from ..special_files import not_a_file, special_kind
from .dicom import open_series
from .dicom_meta import DICOMDIR_CLASS, dicom_file_class
from .header import OpenedImage, check_header, check_size, header_grid
from .itk import itk_error_text, pixel_bytes, quiet_itk
from .metaimage import parse_metaimage
from .nifti import parse_nifti
from .nrrd import parse_nrrd
from .payload import verify_payloads

FORMATS = {
    ".nii": (parse_nifti, "NiftiImageIO"),
    ".nii.gz": (parse_nifti, "NiftiImageIO"),
    ".nrrd": (parse_nrrd, "NrrdImageIO"),
    ".nhdr": (parse_nrrd, "NrrdImageIO"),
    ".mha": (parse_metaimage, "MetaImageIO"),
    ".mhd": (parse_metaimage, "MetaImageIO"),
}
SUPPORTED_SUFFIXES = tuple(FORMATS)


def file_suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def read_image(path: str | Path, limit: int | None = None) -> tuple[sitk.Image, list[str]]:
    """A checked SimpleITK image from a supported file or a DICOM folder, and the reader's warnings.

    Args:
        path: a .nii, .nii.gz, .nrrd, .nhdr, .mha or .mhd file, a folder holding a DICOM series (or holding it
            in subfolders), or one DICOM file of a series (its series is read from the file's folder).
        limit: bytes the voxels may take while read (default: free memory, or ``TOKENUNET_MEMORY_LIMIT``).

    Raises:
        InputError: the file is missing, unsupported, truncated, damaged, too large or badly formed.
    """
    return open_image(path, limit)()


def open_image(
    path: str | Path, limit: int | None = None, modality: str = "", purpose: str = "segmenting"
) -> OpenedImage:
    """:func:`read_image` in two steps: the file's header (a DICOM series' slice headers) is read and checked now;
    the :class:`.header.OpenedImage` returned says how many values it declares, and calling it checks the voxel data
    is all there and reads it (long C++ calls that release the GIL: the command line runs them in a thread while
    torch is imported). Both steps raise as :func:`read_image`. ``modality``: what the model's input expects, which
    chooses among the series of a DICOM folder (see :func:`.dicom.open_series`); ``purpose``: what the volume is read
    for, as the hint of an error about its values says ("segmenting", "evaluating")."""
    path = Path(path)
    name = path.name
    with _read_errors(name):
        if path.is_dir():
            series = open_series(path, limit, modality=modality)
            return replace(series, read=lambda: _guarded(name, series.read))
        if not path.exists():
            raise InputError(f"input not found: {path}")
        if not path.is_file():  # a FIFO or a device would block or never end
            raise InputError(f"{name} {not_a_file(special_kind(path))}", "pass an image file or a DICOM series folder")
        suffix = file_suffix(path)
        if suffix not in FORMATS:
            kind = dicom_file_class(path)
            if kind is not None:  # one file of a series: the user's choice among the series of its folder; a DICOMDIR
                series = open_series(  # its folder
                    path.parent, limit, None if kind == DICOMDIR_CLASS else path, modality
                )
                return replace(series, read=lambda: _guarded(name, series.read))
            raise InputError(
                f"unsupported file type '{suffix or path.name}' for {path.name}",
                f"use one of {', '.join(SUPPORTED_SUFFIXES)}, a DICOM series folder or one of its files",
            )
        parse, image_io = FORMATS[suffix]
        header = parse(path, name)
        check_header(header, name, limit)

    def read_file() -> tuple[sitk.Image, list[str]]:
        verify_payloads(header.payloads, name, purpose)
        image = _read_file(path, image_io, name, limit)
        read = image.GetNumberOfPixels() * image.GetNumberOfComponentsPerPixel()
        if read != header.values:
            raise InputError(f"{name}: read {read} values where its header declares {header.values}", "export it again")
        return image, list(header.warnings)

    return OpenedImage(
        header.values,
        lambda: _guarded(name, read_file),
        grid=header_grid(header),
        stacked=header.stacked,
        stacked_axis=header.stacked_axis,
        finite_checked=header.finite_checked,
    )


def _guarded(name: str, read):
    with _read_errors(name):
        return read()


@contextlib.contextmanager
def _read_errors(name: str):
    """The operating system's errors while reading ``name`` as the user's errors."""
    try:
        yield
    except OSError as error:
        raise InputError(f"cannot read {name}: {error.strerror or error}", "check that the file is readable") from None
    except MemoryError:
        raise OutOfMemoryError(f"out of memory while reading {name}", "free memory or crop the volume") from None


@contextlib.contextmanager
def _name_for_itk(path: Path, image_io: str, name: str):
    """The name under which ITK reads ``path``: itself, or for a ``.nii.gz`` with a ``.nii`` of its stem beside it
    (which ITK's NIfTI library opens in its place), a link to it alone in a temporary folder."""
    stem = path.name[: -len(".nii.gz")]
    namesakes = [path.with_name(stem + suffix) for suffix in (".nii", ".NII")]
    if image_io != "NiftiImageIO" or not path.name.lower().endswith(".nii.gz") or not any(map(Path.exists, namesakes)):
        yield path
        return
    scratch = None
    try:
        scratch = tempfile.TemporaryDirectory(prefix="tokenunet-read-")
        link = Path(scratch.name) / "image.nii.gz"
        os.symlink(os.path.abspath(path), link)
    except OSError:  # no links here (Windows without the privilege), or no temporary folder
        if scratch is not None:
            scratch.cleanup()
        raise InputError(
            f"{name} has {stem}.nii beside it, which the image reader (ITK) would read in its place",
            "move or rename one of them",
        ) from None
    with scratch:
        yield link


def _read_file(path: Path, image_io: str, name: str, limit: int | None) -> sitk.Image:
    reader = sitk.ImageFileReader()
    reader.SetImageIO(image_io)
    try:
        with quiet_itk(), _name_for_itk(path, image_io, name) as itk_name:
            reader.SetFileName(str(itk_name))
            reader.ReadImageInformation()  # the header as ITK sees it: the voxel type it will allocate
            components = reader.GetNumberOfComponents()
            sizes = (*reader.GetSize(),) + ((components,) if components > 1 else ())
            pixel = reader.GetPixelID()
            check_size(sizes, sitk.GetPixelIDValueAsString(pixel), pixel_bytes(pixel), name, limit)
            return reader.Execute()
    except RuntimeError as error:
        raise InputError(f"cannot read {name}: {itk_error_text(error)}", "check the file, or export it again") from None
