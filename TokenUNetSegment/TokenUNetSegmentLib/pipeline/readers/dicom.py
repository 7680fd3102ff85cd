"""DICOM series folders: the slices' own positions checked before they are stacked into a volume.

ITK's series reader stacks the files it is given with one uniform spacing (first to last slice), so a
missing, duplicated or dropped slice stretches or shifts the anatomy without an error. Here each slice's
header (ImagePositionPatient, ImageOrientationPatient, size, pixel spacing and type) is read first, and
the series is refused when its slices do not make one regular grid: gaps, duplicates, mixed orientations
or sizes, slices offset in plane (gantry tilt). Where a careful reader would go on, it does and says so:
several series in the folder (the largest is read), slightly uneven spacing, DICOM files it cannot read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..geometry import Grid
from ..special_files import special_entries, special_entries_note
from .dicom_meta import (
    ENHANCED_CLASSES,
    TRANSFER_SYNTAX_ELEMENT,
    dicom_file_class,
    dicom_file_meta,
    modality_matches,
    not_a_volume,
)
from .dicom_tilt import in_plane_shift, tilt_step, tilted_grid, untilted
from .header import OpenedImage, check_size
from .itk import itk_error_text, pixel_bytes, quiet_itk

POSITION, ORIENTATION, DESCRIPTION, SOP_CLASS, MODALITY = (
    "0020|0032",
    "0020|0037",
    "0008|103e",
    "0008|0016",
    "0008|0060",
)
PIXEL_SPACING, SLICE_STEP, IMAGE_TYPE = "0028|0030", "0018|0088", "0008|0008"  # ..., SpacingBetweenSlices, ImageType
SERIES_UID = "0020|000e"
UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}  # deflate
PADDING, PADDING_LIMIT, INTERCEPT, SLOPE = "0028|0120", "0028|0121", "0028|1052", "0028|1053"
SAME_ORIENTATION = 1e-4  # direction cosines
SAME_POSITION_MM = 1e-3
EXACT_MM = 1e-2  # slice position errors below this are rounding in the headers
ROUNDING_PIXELS = 0.25  # in-plane offsets between slices up to this share of a pixel: rounding too (a GE MR series'
# positions, written to 0.1 mm, wander in plane by 0.1 of its pixels), read as the regular grid they make, with a
QUIET_PIXELS = 0.01  # warning above this share of a pixel (and EXACT_MM): less is not worth a word
UNEVEN_FRACTION = 0.1  # positions off by up to this share of the spacing: read, with a warning
GAP_FACTOR = 1.5  # a step this much larger than the usual one means missing slices
LOCALIZER_SLICES = 3  # at most this many slices in another orientation than the rest's are a localizer left out
LOCALIZER_DEGREES = 10.0  # ... when their plane lies at least this far from the rest's (scouts are orthogonal views)
SEARCH_DEPTH, SEARCH_FOLDERS = 6, 2000  # subfolders searched for a series when a folder holds none itself


@dataclass
class Slice:
    file: str
    size: tuple[int, ...]
    spacing: tuple[float, float]
    pixel: int
    components: int
    position: np.ndarray
    orientation: np.ndarray  # row and column directions, shape (2, 3)
    sop_class: str = ""  # SOP Class UID (0008,0016): CT Image Storage, MR Image Storage, ...
    modality: str = ""  # Modality (0008,0060): CT, MR, PT, ...
    padding: tuple[float, float, float] | None = None  # PixelPaddingValue (to its range limit) rescaled, and slope
    image_type: str = ""  # ImageType (0008,0008): ORIGINAL\PRIMARY\AXIAL, ...\LOCALIZER
    rescale: tuple[float, float] | None = None  # a frame of a multi-frame file: its own (slope, intercept)
    content: tuple = ()  # a frame: what tells the volumes of a file apart (stack, phase, echo; see .dicom_frames)


def read_series(folder: Path, limit: int | None = None) -> tuple[sitk.Image, list[str]]:
    """The DICOM series in ``folder`` (the one with most files when there are several) and any warnings."""
    return open_series(folder, limit)()


def open_series(folder: Path, limit: int | None = None, chosen: Path | None = None, modality: str = "") -> OpenedImage:
    """:func:`read_series` in two steps: the series is found and its slices' headers checked now; calling the
    returned :class:`.header.OpenedImage` reads and stacks the voxels (one long SimpleITK call, which another thread
    can run).

    A folder without DICOM files of its own is searched below (a CD or PACS export: DICOMDIR beside
    ``PT0/ST0/SE0/...``). ``chosen``: a file of ``folder`` whose series to read (the user's choice among several).
    ``modality``: what the model's input expects (``CT``, ``MR``): among several series, the largest of that
    Modality is read (a PET/CT study: the CT, not the larger PET), and a folder with none of it is refused.
    """
    warnings: list[str] = []
    reader = sitk.ImageSeriesReader()
    series = _series_in(folder)
    if not series and chosen is None:
        series = _series_below(folder)
    if not series and chosen is not None:  # the user's file: what it is, not its folder
        raise InputError(
            f"{chosen.name} is a DICOM file without an image that can be read (damaged or truncated, or no image: a "
            "report, a plan, a structure set)",
            "pass a CT/MR slice, or its series' folder",
        )
    if not series:
        unread = [name for name in _unread_dicom_files(folder, set(), "") if name != "DICOMDIR"]
        if unread:  # DICOM files, none read: truncated or damaged slices, or no image (a report)
            raise InputError(
                f"{folder.name} is a folder without a DICOM series that can be read: {unread[0]}"
                f"{f' and {len(unread) - 1} other file(s)' if len(unread) > 1 else ''} cannot be read (damaged or "
                "truncated, or no image: a report, a plan)",
                "export the series again, or pass a folder of CT/MR slices",
            )
        raise InputError(
            f"{folder} is a folder without a DICOM series", "pass an image file or a folder of DICOM slices"
        )
    if chosen is not None:
        target = os.path.normpath(chosen)
        picked = [s for s in series if target in {os.path.normpath(f) for f in s[1]}]
        if not picked:
            raise InputError(
                f"{chosen.name} is not a slice of a DICOM image series in {folder.name}",
                "pass a CT/MR slice, or the series' folder",
            )
        uid, files = picked[0]
    else:
        uid, files = _largest(series, folder, warnings, modality)
    slices = [_slice_info(file, folder) for file in files]
    kind = not_a_volume(slices[0].sop_class) if slices[0].size[2:] in ((), (1,)) else None  # frames: .dicom_frames
    if kind is not None:  # as a multi-frame one is: screenshots or doses with positions are no scan
        raise InputError(f"the DICOM series in {folder.name} is {kind[0]}", kind[1])
    read = {os.path.normpath(f) for _, names in series for f in names}
    places = {folder} | {Path(f).parent for f in files}
    for place in sorted(places):
        special = special_entries(place)
        if special:
            warnings.append(special_entries_note(special, place.name))
    unread = sorted(name for place in places for name in _unread_dicom_files(place, read, slices[0].sop_class))
    if unread:
        warnings.append(
            f"{len(unread)} DICOM file(s) in {folder.name} could not be read and were left out "
            f"(e.g. {unread[0][:40]}); the volume may be incomplete"
        )
    if len(slices) == 1 and slices[0].size[2:] and slices[0].size[2] > 1:  # one multi-frame file: its frames
        from .dicom_frames import open_multi_frame  # here: it builds on this module's slices and checks

        return open_multi_frame(slices[0], folder, limit, warnings, unread)
    for s in slices:
        if s.position is None:  # frames of several multi-frame files are not stacked
            raise InputError(
                f"the DICOM series in {folder.name} has several multi-frame files ({Path(s.file).name}, ...)",
                "convert it to NRRD in Slicer, or export classic single-frame slices",
            )
    slices, localizer = without_localizer(slices, folder.name)
    if localizer:
        warnings.append(localizer)
    if len(slices) == 1:
        raise InputError(f"the DICOM series in {folder.name} has one slice", "segmentation needs a 3D volume")
    try:
        ordered, uneven = check_slices(slices, folder.name, tilt=True)
    except InputError as error:
        if not unread:
            raise
        raise InputError(  # a damaged slice the DICOM scanner skipped is the likely cause
            f"{error.message}; {len(unread)} damaged file(s) left out, e.g. {unread[0][:40]}",
            "export the series again",
        ) from None
    if uneven:
        warnings.append(uneven)
    files = [s.file for s in ordered]
    step = tilt_step(ordered, folder.name, in_plane_tolerance(ordered[0]))
    grid = None if step is None else tilted_grid(ordered, step)
    if grid is not None and ordered[0].components > 1:  # not resampled: what an untilted one is told once read
        raise InputError(
            f"{folder.name} has {ordered[0].components} components per voxel", "use one scalar volume per channel"
        )
    warnings.extend(placement_warnings(ordered, grid, f"slices in {folder.name}"))
    return OpenedImage(
        _values(ordered[0], len(files)) if grid is None else int(np.prod(grid.size)),  # tilted: the grid resampled
        lambda: (_read_files(reader, files, ordered, folder, limit, grid), warnings),
        ordered[0].modality,
        declared_grid(ordered, grid),
        uid,
        _description(files[0]),
    )


def placement_warnings(ordered: list[Slice], grid, what: str) -> list[str]:
    """The warning that ``what`` (``slices in ct``) were resampled from a gantry tilt onto ``grid``; or, untilted, that
    their positions wander in plane by more than :data:`QUIET_PIXELS` (within :func:`in_plane_tolerance`); else none."""
    if grid is None:
        shift = in_plane_shift(ordered)
        if shift <= max(EXACT_MM, QUIET_PIXELS * min(ordered[0].spacing)):
            return []
        return [
            f"the DICOM {what} are placed up to {shift:.3f} mm off a regular grid in plane (rounding in their "
            "headers): read as that grid"
        ]
    angle = f"{grid.degrees:.1f}" if grid.degrees >= 0.95 else f"{grid.degrees:.2g}"  # 0.03, never 0.0
    return [
        f"the DICOM {what} are tilted by {angle} degrees (a gantry tilt): resampled onto a regular grid of "
        f"{' x '.join(str(n) for n in grid.size)} voxels"
    ]


def declared_grid(ordered: list[Slice], tilted=None) -> Grid:
    """The grid the slices (or frames) in order make, or the :class:`.dicom_tilt.TiltedGrid` they are resampled onto
    (its origin left at 0): what the run's memory check counts before any voxel is read."""
    return _grid(ordered) if tilted is None else Grid(tilted.size, _affine(tilted.direction, tilted.spacing))


def _grid(ordered: list[Slice]) -> Grid:
    """The grid of slices in order along their normal (checked regular), its origin left at 0."""
    first, last = ordered[0], ordered[-1]
    row, column = first.orientation
    normal = np.cross(row, column)
    step = float((last.position - first.position) @ normal) / (len(ordered) - 1)
    axes = np.stack([row, column, normal], axis=1)
    return Grid((first.size[0], first.size[1], len(ordered)), _affine(axes, (*first.spacing, step)))


def _affine(axes: np.ndarray, spacing) -> np.ndarray:
    """The 4 x 4 matrix of a grid with ``axes`` as columns and ``spacing``, its origin at 0."""
    affine = np.eye(4)
    affine[:3, :3] = axes * np.asarray(spacing, dtype=np.float64)
    return affine


def _series_in(folder: Path) -> list[tuple[str, tuple[str, ...]]]:
    """The DICOM series GDCM finds in ``folder`` itself: (series UID, its files). GDCM's scan of a folder stops at a
    file it cannot parse (pydicom's rtdose_1frame.dcm, a real RT dose file: an internal assertion), so the folder is
    then listed file by file, such files left out."""
    if special_entries(folder):  # GDCM's scan stops at a FIFO (or would wait on it): listed here, such entries left out
        return _series_file_by_file(folder)
    reader = sitk.ImageSeriesReader()
    try:
        with quiet_itk():
            return [
                (uid, reader.GetGDCMSeriesFileNames(str(folder), uid)) for uid in reader.GetGDCMSeriesIDs(str(folder))
            ]
    except RuntimeError:
        return _series_file_by_file(folder)


def _series_file_by_file(folder: Path) -> list[tuple[str, tuple[str, ...]]]:
    """The series of the DICOM files (DICM preamble) in ``folder`` by their SeriesInstanceUID, each file's header read
    on its own, those GDCM cannot read left out."""
    found: dict[str, list[str]] = {}
    with os.scandir(folder) as entries:
        paths = sorted(entry.path for entry in entries if entry.is_file())
    for path in paths:
        reader = _header(path) if dicom_file_class(Path(path)) is not None else None
        uid = _text(reader, SERIES_UID) if reader is not None else ""
        if uid:
            found.setdefault(uid, []).append(path)
    return [(uid, tuple(files)) for uid, files in found.items()]


def _series_below(folder: Path) -> list[tuple[str, tuple[str, ...]]]:
    """The DICOM series in the subfolders of ``folder`` (down to :data:`SEARCH_DEPTH`, links not followed), a
    series split over several folders taken whole; refused beyond :data:`SEARCH_FOLDERS` folders."""
    found: dict[str, list[str]] = {}
    for count, (root, dirs, _) in enumerate(os.walk(folder)):
        if count > SEARCH_FOLDERS:
            raise InputError(
                f"{folder.name} holds no DICOM files itself and over {SEARCH_FOLDERS} subfolders to search",
                "pass the folder of the series itself",
            )
        dirs.sort()
        if len(Path(root).relative_to(folder).parts) >= SEARCH_DEPTH:
            dirs.clear()
        if count:
            for uid, files in _series_in(Path(root)):
                found.setdefault(uid, []).extend(files)
    return [(uid, tuple(files)) for uid, files in found.items()]


def _largest(series: list, folder: Path, warnings: list[str], modality: str = "") -> tuple[str, tuple[str, ...]]:
    """The series with most files (of ``modality``, when given and there are several); with several, a warning
    naming it (refused when two are equally large, or when none is of ``modality``)."""
    ranked = sorted(series, key=lambda s: -len(s[1]))
    if len(ranked) == 1:
        return ranked[0]
    why, others, kind_of = "the largest", "", ""
    if modality:
        kinds = [_series_header(files[0])[1] for _, files in ranked]
        fitting = [s for s, kind in zip(ranked, kinds, strict=True) if modality_matches(kind, modality)]
        what = f"the largest {modality} series, as the model's input is {modality}"
        kind_of = f"{modality} "
        if not fitting:  # a series without a Modality may be it
            fitting = [s for s, kind in zip(ranked, kinds, strict=True) if not kind]
            what, kind_of = f"the largest series without a Modality, as none is {modality}", ""
        if not fitting:
            found = ", ".join(_named(s, kind) for s, kind in zip(ranked[:3], kinds, strict=False))
            raise InputError(
                f"{folder.name} holds no {modality} DICOM series, which the model's input needs: {found}",
                f"pass a folder with a {modality} series, or choose a model for {kinds[0]}",
            )
        if len(fitting[0][1]) == 1 and ranked[0] not in fitting:  # a scout: the study's volume is of another kind
            mine = ", ".join(_named(s, kind) for s, kind in zip(ranked, kinds, strict=True) if s in fitting[:3])
            rest = [_named(s, kind) for s, kind in zip(ranked, kinds, strict=True) if s not in fitting]
            raise InputError(
                f"{folder.name} holds no {modality} DICOM series of more than one slice: {mine}; also there: "
                f"{', '.join(rest[:3])}{', ...' if len(rest) > 3 else ''}",
                f"pass a folder with a {modality} volume, or choose a model for {kinds[0] or 'that series'}",
            )
        if len(fitting) < len(ranked) and ranked[0] not in fitting:  # the choice differs from the largest: say why
            why = what
            left = [_named(s, kind) for s, kind in zip(ranked, kinds, strict=True) if s != fitting[0]]
            others = f" (also there: {', '.join(left[:3])}{', ...' if len(left) > 3 else ''})"
        ranked = fitting
    uid, files = ranked[0]
    if len(ranked) > 1 and len(ranked[1][1]) == len(files):
        tied = [f"'{(_description(s[1][0]) or s[0])[:30]}'" for s in ranked if len(s[1]) == len(files)]
        raise InputError(
            f"{folder.name} holds {len(tied)} {kind_of}DICOM series of {len(files)} files each ({', '.join(tied[:3])})",
            "pass one of the series' files, or its own folder, to say which one to segment",
        )
    where = sorted({Path(f).parent for f in files})  # a series split over subfolders: each of them
    place = "" if where == [folder] else f" in {', '.join(p.relative_to(folder).as_posix() or '.' for p in where[:3])}"
    place += ", ..." if len(where) > 3 else ""
    warnings.append(
        f"{folder.name} holds {len(series)} DICOM series; read {'the largest, ' if not others else ''}"
        f"'{(_description(files[0]) or uid)[:60]}' ({len(files)} files{place}){', ' + why if others else ''}"
        f"{others}: to choose another, pass one of its files or its own folder"
    )
    return uid, files


def _named(series: tuple[str, tuple[str, ...]], modality: str) -> str:
    """A series for a message: ``'PET AC' (PT, 20 files)``."""
    uid, files = series
    count = f"{len(files)} file{'s' if len(files) != 1 else ''}"
    return f"'{(_description(files[0]) or uid)[:30]}' ({modality or 'no Modality'}, {count})"


def _values(first: Slice, files: int) -> int:
    """Values a series of ``files`` like ``first`` holds (frames of multi-frame files and components included)."""
    frames = first.size[2] if len(first.size) > 2 else 1
    return first.size[0] * first.size[1] * frames * files * first.components


def _slice_info(file: str, folder: Path) -> Slice:
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    reader.LoadPrivateTagsOff()
    try:
        with quiet_itk():
            reader.ReadImageInformation()
        position = _numbers(reader, POSITION, 3)
        orientation = _numbers(reader, ORIENTATION, 6)
    except RuntimeError as error:
        raise InputError(
            f"the DICOM slice {Path(file).name} in {folder.name} cannot be read: {itk_error_text(error)}",
            "the file is damaged: export the series again",
        ) from None
    slope = _numbers(reader, SLOPE, 1)
    if slope is not None and slope[0] == 0:  # GDCM would read the slice as if it were 1
        raise InputError(
            f"the DICOM slice {Path(file).name} in {folder.name} has RescaleSlope 0: its stored values cannot be "
            "turned into CT numbers or intensities (each would be its intercept)",
            "export the series again",
        )
    size = tuple(int(s) for s in reader.GetSize())
    sop_class = reader.GetMetaData(SOP_CLASS).strip(" \0") if reader.HasMetaDataKey(SOP_CLASS) else ""
    if (position is None or orientation is None) and ((size[2:] and size[2] > 1) or sop_class in ENHANCED_CLASSES):
        position = orientation = None  # an enhanced or multi-frame file: its frames carry their positions
    elif position is None or orientation is None:
        raise InputError(
            f"the DICOM slice {Path(file).name} in {folder.name} has no position or orientation",
            "this is not a volume series (e.g. a screenshot or a report): pick the CT/MR series",
        )
    found = Slice(
        file,
        size,
        tuple(float(s) for s in reader.GetSpacing()[:2]),
        reader.GetPixelID(),
        reader.GetNumberOfComponents(),
        position,
        None if orientation is None else orientation.reshape(2, 3),
        sop_class,
        reader.GetMetaData(MODALITY).strip(" \0").upper() if reader.HasMetaDataKey(MODALITY) else "",
        _padding(reader),
        reader.GetMetaData(IMAGE_TYPE).strip(" \0").upper() if reader.HasMetaDataKey(IMAGE_TYPE) else "",
    )
    if position is None and size[2:] and size[2] == 1:  # one frame of an enhanced file: a series' slice
        from .dicom_frames import single_frame  # here: it builds on this module's slices

        return single_frame(found, folder)
    return found


def _padding(reader: sitk.ImageFileReader) -> tuple[float, float, float] | None:
    """The values PixelPaddingValue (up to PixelPaddingRangeLimit) marks, after the rescale GDCM applies, and the
    slope (values within half of it are the same stored value); None without padding."""
    padding = _numbers(reader, PADDING, 1)
    if padding is None:
        return None
    limit = _numbers(reader, PADDING_LIMIT, 1)
    slope, intercept = _numbers(reader, SLOPE, 1), _numbers(reader, INTERCEPT, 1)
    slope = 1.0 if slope is None or slope[0] == 0 else float(slope[0])
    intercept = 0.0 if intercept is None else float(intercept[0])
    ends = sorted(float(v) * slope + intercept for v in (padding[0], padding[0] if limit is None else limit[0]))
    return ends[0], ends[1], abs(slope)


def _numbers(reader: sitk.ImageFileReader, tag: str, count: int) -> np.ndarray | None:
    if not reader.HasMetaDataKey(tag):
        return None
    try:
        values = np.array([float(v) for v in reader.GetMetaData(tag).strip().split("\\")])
    except ValueError:
        return None
    return values if values.size == count and np.all(np.isfinite(values)) else None


def without_localizer(slices: list[Slice], name: str) -> tuple[list[Slice], str | None]:
    """The slices less a localizer (scout) stored under the series' own UID, and a warning naming what was left out
    (None when nothing was): slices whose ImageType says LOCALIZER, and up to :data:`LOCALIZER_SLICES` slices in
    another plane than the rest's, :data:`LOCALIZER_DEGREES` or more away (more, or slices only slightly off, are a
    series that mixes orientations: :func:`check_slices` refuses it).
    """
    reasons = {id(s): "ImageType LOCALIZER" for s in slices if "LOCALIZER" in s.image_type.split("\\")}
    rest = [s for s in slices if id(s) not in reasons] or slices  # all marked: what the user gave, checked as it is
    if rest is slices:
        reasons = {}
    orientations = np.array([s.orientation.ravel() for s in rest])
    main = rest
    if not np.isclose(orientations, orientations[0], atol=SAME_ORIENTATION).all():  # else one orientation: done
        groups, remaining = [], np.arange(len(rest))
        while remaining.size:  # the slices of each orientation, the largest group kept
            close = np.isclose(orientations[remaining], orientations[remaining[0]], atol=SAME_ORIENTATION).all(axis=1)
            groups.append(remaining[close])
            remaining = remaining[~close]
        main = [rest[i] for i in max(groups, key=len)]
    kept = {id(s) for s in main}
    odd = [s for s in rest if id(s) not in kept]
    if 0 < len(odd) <= LOCALIZER_SLICES and len(main) > 2 * len(odd) and _other_planes(odd, main[0]):
        reasons.update({id(s): "another orientation" for s in odd})
        rest = main
    if not reasons:
        return slices, None
    odd = [s for s in slices if id(s) in reasons]
    return rest, (
        f"left out {len(odd)} localizer slice(s) of the DICOM series in {name} ({Path(odd[0].file).name}: "
        f"{reasons[id(odd[0])]}{', ...' if len(odd) > 1 else ''}); read its {len(rest)} other slices"
    )


def _other_planes(slices: list[Slice], reference: Slice) -> bool:
    """Whether every one of ``slices`` lies in a plane at least :data:`LOCALIZER_DEGREES` from ``reference``'s (a
    slice off by rounding, or by a fraction of a degree, is a real slice of the volume, never a localizer)."""
    normal = np.cross(*reference.orientation)
    normals = np.cross(*np.stack([s.orientation for s in slices], axis=1))
    cosines = np.abs(normals @ normal) / (np.linalg.norm(normals, axis=1) * np.linalg.norm(normal))
    return bool(np.all(cosines < np.cos(np.radians(LOCALIZER_DEGREES))))


def check_slices(slices: list[Slice], name: str, tilt: bool = False) -> tuple[list[Slice], str | None]:
    """The slices in order along their normal, and a warning when their spacing is slightly uneven.

    Raises :class:`InputError` when they do not form one regular grid (``tilt``: in-plane shifts are left to the
    caller's :func:`.dicom_tilt.tilt_step`, which accepts a gantry tilt's).
    """
    first = slices[0]
    for s in slices[1:]:
        if s.size != first.size or s.components != first.components:
            raise InputError(
                f"the DICOM series in {name} mixes slice sizes ({_size(first)} and {_size(s)})",
                "put only one volume's slices in the folder (no localizer or reformats)",
            )
        if not np.allclose(s.orientation, first.orientation, atol=SAME_ORIENTATION):
            raise InputError(
                f"the DICOM series in {name} mixes slice orientations ({Path(first.file).name}, {Path(s.file).name})",
                "put only one volume's slices in the folder (no localizer or reformats)",
            )
        if not np.allclose(s.spacing, first.spacing, rtol=1e-4):
            raise InputError(
                f"the DICOM series in {name} mixes pixel spacings ({_pixel_spacing(first)}, {_pixel_spacing(s)})",
                "put only the slices of one acquisition in the folder",
            )
    row, column = first.orientation
    normal = np.cross(row, column)
    if np.linalg.norm(normal) < 0.5:
        raise InputError(f"the DICOM series in {name} has a degenerate ImageOrientationPatient", "export it again")
    ordered = sorted(slices, key=lambda s: float(s.position @ normal))
    positions = np.array([s.position for s in ordered])
    along = positions @ normal
    if not tilt and in_plane_shift(ordered) > in_plane_tolerance(first):
        raise InputError(
            f"the DICOM slices in {name} are shifted in plane from slice to slice (gantry tilt or a sheared series)",
            "resample it onto a regular grid first (e.g. in Slicer) and save it as NRRD",
        )
    steps = np.diff(along)
    duplicates = int(np.count_nonzero(steps < SAME_POSITION_MM))
    if duplicates:
        at = along[1:][steps < SAME_POSITION_MM][0]
        raise InputError(
            f"the DICOM series in {name} has {duplicates} slice(s) at the same position as another (e.g. {at:.2f} mm)",
            "duplicated files, or several phases or echoes: keep one copy of one acquisition",
        )
    usual = float(np.median(steps))
    step = (along[-1] - along[0]) / (len(along) - 1)
    error = float(np.max(np.abs(along - (along[0] + step * np.arange(len(along))))))
    if error <= EXACT_MM:
        return ordered, None
    widest, wide = int(np.argmax(steps)), steps > GAP_FACTOR * usual
    if np.count_nonzero(wide) > 1:  # a spacing that changes, or several slices missing
        raise InputError(
            f"the DICOM series in {name} has {np.count_nonzero(wide)} gaps of up to {steps[widest]:.2f} mm between "
            f"{usual:.2f} mm slices (the first after {along[:-1][wide][0]:.2f} mm)",
            "export the complete series, or resample it to a regular grid in Slicer",
        )
    if steps[widest] > GAP_FACTOR * usual:
        missing = max(1, round(steps[widest] / usual) - 1)
        raise InputError(
            f"the DICOM series in {name} misses about {missing} slice(s): a {steps[widest]:.2f} mm gap after "
            f"{along[widest]:.2f} mm where slices are {usual:.2f} mm apart",
            "export the complete series again",
        )
    if error > UNEVEN_FRACTION * usual:
        raise InputError(
            f"the DICOM series in {name} has uneven slice spacing ({steps.min():.2f} to {steps.max():.2f} mm)",
            "resample it onto a regular grid first (e.g. in Slicer) and save it as NRRD",
        )
    return ordered, (
        f"the DICOM slices in {name} are unevenly spaced ({steps.min():.3f} to {steps.max():.3f} mm): "
        f"read with a uniform {step:.3f} mm, positions off by up to {error:.3f} mm"
    )


def in_plane_tolerance(first: Slice) -> float:
    """In-plane position differences up to this are rounding in the headers, not a shift (:data:`ROUNDING_PIXELS`)."""
    return max(EXACT_MM, ROUNDING_PIXELS * min(first.spacing))


def _pixel_spacing(s: Slice) -> str:
    return f"{s.spacing[0]:g} x {s.spacing[1]:g} mm in {Path(s.file).name}"


def _size(s: Slice) -> str:
    return " x ".join(str(v) for v in s.size[:2])


def _read_files(
    reader, files: list[str], slices: list[Slice], folder: Path, limit: int | None, tilted=None
) -> sitk.Image:
    """The slices' voxels stacked (``tilted``: the :class:`.dicom_tilt.TiltedGrid` to resample them onto)."""
    first = slices[0]
    sizes = (*first.size[:2], len(files)) + ((first.components,) if first.components > 1 else ())
    # slices whose stored values and rescale give other value types (a rescale or pixel representation that changes
    # from slice to slice): GDCM rescales each slice with its own, into float32 rather than the first slice's type
    pixel_id = first.pixel if all(s.pixel == first.pixel for s in slices) else sitk.sitkFloat32
    pixel = sitk.GetPixelIDValueAsString(pixel_id)
    if tilted is None:
        check_size(sizes, pixel, pixel_bytes(pixel_id), folder.name, limit)
    else:  # the stacked slices and the float32 grid they are resampled onto (and its array) at once; with padding
        # also the float32 values and weights interpolated apart (see .dicom_tilt.untilted)
        extra = 12 if any(s.padding for s in slices) else 4
        check_size(tilted.size, pixel, pixel_bytes(pixel_id) + extra, folder.name, limit)
    reader.SetFileNames(files)
    reader.SetOutputPixelType(pixel_id if pixel_id != first.pixel else sitk.sitkUnknown)
    image = execute(reader, f"the DICOM series in {folder.name}", "series", files[0])
    if tilted is not None:  # GDCM stacks tilted slices as it can; their own positions place them
        if image.GetSize()[2] != len(slices) or not np.allclose(image.GetOrigin(), first.position, atol=1e-3):
            raise InputError(
                f"the DICOM reader stacked the slices of {folder.name} otherwise than their headers say",
                "export the series again, or convert it to NRRD in Slicer",
            )
        padded = _padding_mask(image, slices)  # kept out of the interpolation: no padding smeared into the body
        return untilted(_without_padding(image, padded), tilted, padded)
    if not _placed_as_declared(image, slices):
        raise InputError(
            f"the DICOM reader placed the slices of {folder.name} elsewhere than their headers say",
            "export the series again, or convert it to NRRD in Slicer",
        )
    return _without_padding(image, _padding_mask(image, slices))


def execute(reader, what: str, kind: str, file: str) -> sitk.Image:
    """The voxels ``reader`` reads, GDCM's failure as the user's error naming ``what`` (``the DICOM series in ct``),
    a ``kind`` (series, file) that may be damaged or compressed in a way GDCM cannot decode (the compression of
    ``file``, its first, named)."""
    try:
        with quiet_itk():
            return reader.Execute()
    except RuntimeError as error:
        syntax = dicom_file_meta(Path(file), TRANSFER_SYNTAX_ELEMENT)
        if syntax and syntax not in UNCOMPRESSED:
            raise InputError(
                f"cannot read {what}: the DICOM reader (GDCM) cannot decode its {_syntax_name(syntax)} pixel data",
                "decompress it first (gdcmconv --raw) or convert it to NRRD in Slicer",
            ) from None
        raise InputError(
            f"cannot read {what}: {itk_error_text(error)}",
            f"the {kind} may be damaged or compressed in an unsupported way: export it again",
        ) from None


def _syntax_name(uid: str) -> str:
    """A transfer syntax's name (``JPEG 2000 Image Compression``) where pydicom knows it, else its UID."""
    try:
        from pydicom.uid import UID
    except ImportError:
        return uid
    name = UID(uid).name
    return f"transfer syntax {uid}" if name == uid else name


def _padding_mask(image: sitk.Image, slices: list[Slice]) -> np.ndarray | None:
    """The voxels (k, j, i) its slices' PixelPaddingValue marks (outside the scanner's field of view); None when
    there are none, or nothing else."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        return None
    return padding_mask(sitk.GetArrayViewFromImage(image), slices)


def padding_mask(view: np.ndarray, slices: list[Slice]) -> np.ndarray | None:
    """:func:`_padding_mask` of the values ``view`` (k, j, i), slice k holding ``slices[k]``'s."""
    if not any(s.padding for s in slices):
        return None
    mask = np.zeros(view.shape, bool)
    for k, s in enumerate(slices):
        if s.padding:
            low, high, slope = s.padding
            mask[k] = (view[k] >= low - slope / 2) & (view[k] <= high + slope / 2)
    return None if not mask.any() or mask.all() else mask


def _without_padding(image: sitk.Image, mask: np.ndarray | None) -> sitk.Image:
    """``image`` with the padding voxels ``mask`` marks (:func:`_padding_mask`) set to the lowest other value, where
    padding would read higher than that: GDCM reads padding as a value (e.g. 63536 with intercept -1024 as 62512 HU,
    a bright ring around the body), and a value below the body's is harmless."""
    if mask is None or not _pads_high(sitk.GetArrayViewFromImage(image), mask):
        return image
    array = sitk.GetArrayFromImage(image)
    fill_padding(array, mask)
    cleaned = sitk.GetImageFromArray(array)
    cleaned.CopyInformation(image)
    return cleaned


def _pads_high(view: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the padding ``mask`` marks reads higher than the lowest other value (the only case it harms)."""
    return bool(view[mask].min() > view[~mask].min())


def fill_padding(array: np.ndarray, mask: np.ndarray | None) -> None:
    """Set the padding voxels ``mask`` marks in ``array`` to the lowest other value, where padding reads higher."""
    if mask is not None and _pads_high(array, mask):
        array[mask] = array[~mask].min()


def _placed_as_declared(image: sitk.Image, slices: list[Slice]) -> bool:
    """Whether the stacked volume starts at the first slice and steps to the last one (in plane, within the headers'
    rounding: :func:`in_plane_tolerance`)."""
    first, last = slices[0].position, slices[-1].position
    off = np.array(image.TransformIndexToPhysicalPoint((0, 0, len(slices) - 1))) - last
    normal = np.cross(*slices[0].orientation)
    along = float(off @ normal)
    return (
        np.allclose(image.GetOrigin(), first, atol=1e-3)
        and abs(along) <= EXACT_MM
        and float(np.linalg.norm(off - along * normal)) <= in_plane_tolerance(slices[0])
    )


def _description(file: str) -> str:
    return _series_header(file)[0]


def _series_header(file: str) -> tuple[str, str]:
    """(SeriesDescription, Modality) of a slice file, "" for what it does not say or cannot be read."""
    reader = _header(file)
    return ("", "") if reader is None else (_text(reader, DESCRIPTION), _text(reader, MODALITY))


def _header(file: str) -> sitk.ImageFileReader | None:
    """A reader holding GDCM's reading of ``file``'s header, None where it cannot read it."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    try:
        with quiet_itk():
            reader.ReadImageInformation()
    except RuntimeError:
        return None
    return reader


def _text(reader: sitk.ImageFileReader, tag: str) -> str:
    """The value of ``tag`` (``0020|000e``) in a header, stripped; "" without."""
    return reader.GetMetaData(tag).strip(" \0") if reader.HasMetaDataKey(tag) else ""


def _unread_dicom_files(folder: Path, read: set[str], sop_class: str) -> list[str]:
    """Names of files in ``folder`` that start like DICOM (the DICM preamble) but are in no series, leaving out
    those whose file meta names another SOP class than the series' (``sop_class``): a structured report, a
    DICOMDIR or a presentation state is no damaged slice."""
    unread = []
    with os.scandir(folder) as entries:
        for entry in entries:
            path = os.path.normpath(entry.path)
            if path in read or not entry.is_file():
                continue
            other = dicom_file_class(Path(path))
            if other is not None and not (sop_class and other and other != sop_class):
                unread.append(entry.name)
    return sorted(unread)
