"""What a result was made from, recorded in its ``report.json`` as ``"made_from"``: the options that shape its files,
the order of a 4D image's channels and each input file's size, modification time, change time and inode (a folder: of
every file below it, as of a DICOM file's folder; nnU-Net-numbered files or a NIfTI image named by nothing else: also
their dataset.json's). ``batch --resume`` skips a case only when this and the model's weights (their SHA256) are what
the new run would use; anything else (more outputs asked for, another overlap, a scan replaced under the same name, a
retrained model of the same version) runs the case again.

Torch-free: it is computed before any voxel is read. Options that change only the speed (``--device``,
``--batch-size``) are not part of it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from .batch_cases import BATCH_FILE, is_dicom_file, volume_stem
from .output_folder import MANIFEST

TOKENUNET_TAG = ".tokenunet-"  # in the names of what TokenUNet writes beside or inside a folder (locks, staging)
RESULT_OPTIONS = (
    "overlap",
    "probabilities",
    "no_heatmaps",
    "attention_grid",
    "largest_component",
    "smooth",
    "no_overview",
)
# options recorded only when given, so that results made before they existed keep their record
RESULT_OPTIONS_WHEN_SET = ("tta",)


def input_stamp(path: str | Path) -> list:
    """``[path, size, mtime_ns, ctime_ns, inode]`` of a file; ``[path, files, digest]`` of a folder (the same of every
    file below it but what TokenUNet wrote there, links not followed: a DICOM series with a slice replaced, added or
    removed gets another stamp), and of a DICOM file the stamp of the folder it lies in, a link's own (the series
    ``segment`` reads with it); ``[path]`` when gone.

    Size and modification time alone miss a file replaced by another of the same size whose time was kept (``cp -p``,
    ``rsync -t``, a restored backup): the change time is set by the system on every write, rename or time change and
    cannot be set back, and a file renamed over it has another inode. Only ``stat`` is called: 2.4 ms for a 300-slice
    series, where hashing its 150 MB took 102 ms with the files in memory (43 times; a disk or network share is read
    at its own speed), on every case of every ``--resume``."""
    given, path = Path(os.path.abspath(path)), Path(os.path.realpath(path))
    try:
        info = path.stat()
    except OSError:
        return [str(path)]
    if not path.is_dir():
        if volume_stem(path) is None and is_dicom_file(path):  # one slice stands for its series, read in its folder:
            return [str(path), *input_stamp(given.parent)[1:]]  # a link's own (git-annex), not its target's
        return [str(path), *_identity(info)]
    digest, count = hashlib.sha256(), 0
    for parent, folders, files in os.walk(path):
        folders[:] = sorted(name for name in folders if not _tokenunet_output(Path(parent) / name))
        for name in sorted(name for name in files if TOKENUNET_TAG not in name):
            if name == BATCH_FILE and _batch_summary(Path(parent) / name):  # ``--out`` the input folder itself
                continue
            try:
                found = os.lstat(os.path.join(parent, name))
            except OSError:
                continue
            relative = os.path.relpath(os.path.join(parent, name), path)
            identity = "\0".join(map(str, _identity(found)))
            digest.update(f"{relative}\0{identity}\n".encode("utf-8", "surrogateescape"))
            count += 1
    return [str(path), count, digest.hexdigest()]


def _identity(info: os.stat_result) -> tuple[int, int, int, int]:
    """What tells one version of a file from another without reading it: size, modification and change times,
    inode."""
    return info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino


def _batch_summary(path: Path) -> bool:
    """Whether ``path`` is a batch's batch.json (its mark), not a file of the user's of that name."""
    from .batch_command import BATCH_MARK  # the command line's module: imported only where a batch.json is
    from .output_folder import json_with_keys

    return json_with_keys(BATCH_MARK)(path)


def _tokenunet_output(folder: Path) -> bool:
    """Whether ``folder`` (inside an input folder) is what TokenUNet wrote there: a result (its manifest), a batch's
    root (batch.json with a batch's mark, not a file of the user's of that name), or a staging folder; an output placed
    inside its own input folder does not change its stamp."""
    summary = folder / BATCH_FILE
    return (
        TOKENUNET_TAG in folder.name or (folder / MANIFEST).is_file() or summary.is_file() and _batch_summary(summary)
    )


def made_from(inputs: Sequence[str | Path], channels: Sequence[str] | None, args: argparse.Namespace) -> dict:
    """The record of what a run on ``inputs`` (``channels``: a 4D image's volume names) with ``args`` is made
    from."""
    record = {
        "inputs": [input_stamp(path) for path in inputs],
        "channels": list(channels) if channels else None,
        "options": {
            **{name: getattr(args, name, None) for name in RESULT_OPTIONS},
            **{name: True for name in RESULT_OPTIONS_WHEN_SET if getattr(args, name, False)},
        },
    }
    named_by = _channel_names_file(inputs, channels)
    if named_by is not None:  # the files' channels are what that file says: the result is as valid as it
        record["channel_names_from"] = input_stamp(named_by)
    return record


def _channel_names_file(inputs: Sequence[str | Path], channels: Sequence[str] | None) -> Path | None:
    """The dataset.json (:func:`.channel_stack.dataset_file`) of nnU-Net-numbered files (``case_0000.nii.gz``, ...) or
    of one NIfTI, NRRD or MetaImage file (a 4D image's volumes) that nothing else names: it says which channel each
    file or volume feeds (:func:`.channel_stack.nnunet_file_names`, :func:`.channel_stack.open_stack`), so a result
    made from them stands only while it is unchanged (and a result made before the files were placed by it, in the
    given order, has no such stamp)."""
    from .channel_stack import dataset_file, is_stack_candidate, nnunet_indices

    if channels:
        return None
    if nnunet_indices(list(inputs)) is not None or (len(inputs) == 1 and is_stack_candidate(inputs[0])):
        return dataset_file(inputs[0])
    return None
