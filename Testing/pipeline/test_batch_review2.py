"""Defects of the ``batch`` cases reviewbatch added (BraTS case folders, the slices of one series, links), found by
reviewbatch2: what a real folder of scans, kept by git-annex or DVC or as BraTS ships it, does to them."""

import json
import os

import pytest
from helpers.channel_files import brain_config, sequence, write_volume
from helpers.packages import make_package
from helpers.readers import dicom_array, write_dicom_series
from TokenUNetSegmentLib.pipeline import cli
from TokenUNetSegmentLib.pipeline.batch_cases import cases_from_paths
from TokenUNetSegmentLib.pipeline.metadata import PackageConfig, semantic_problems

FAST = ["--device", "cpu", "--no-overview", "--progress", "none", "--no-heatmaps"]


def _annexed_series(tmp_path):
    """A DICOM series as git-annex keeps it: ``p1/IM0001.dcm`` ... links, each to its own object folder named by a
    hash key (``.git/annex/objects/KEY/KEY``)."""
    write_dicom_series(tmp_path / "exported", dicom_array(slices=3))
    series = tmp_path / "dicom" / "p1"
    series.mkdir(parents=True)
    for index, file in enumerate(sorted((tmp_path / "exported").iterdir())):
        _annex(tmp_path, file.read_bytes(), series / file.name, f"SHA256E-s{index}--k{index}.dcm")
    return series


def _annex(tmp_path, data: bytes, link, key: str) -> None:
    """``link`` to a new annex object ``key`` holding ``data`` (the object's own folder, as git-annex lays it out)."""
    objects = tmp_path / ".git" / "annex" / "objects" / key
    objects.mkdir(parents=True)
    (objects / key).write_bytes(data)
    os.symlink(objects / key, link)


def test_the_slices_of_an_annexed_series_are_a_case_named_by_their_folder(tmp_path):
    """``batch dicom/p1/*`` where every slice is a link into git-annex's store (before: the case was named by the
    first link's target folder, ``out/SHA256E-s0--k0.dcm/``, where ``batch dicom/p1`` names it ``p1``)."""
    series = _annexed_series(tmp_path)
    cases, _ = cases_from_paths(sorted(series.iterdir()))
    assert [case.name for case in cases] == ["p1"]
    assert [case.name for case in cases_from_paths([series / "IM0002.dcm"])[0]] == ["p1"]


def test_resume_reruns_an_annexed_slice_case_whose_series_got_a_new_slice_version(tmp_path):
    """``segment`` given a link to a slice reads the series of the link's folder; the stamp covered the folder of
    the link's target, an annex object folder holding that one slice (before: after ``git annex`` pointed another
    slice at a new version, ``--resume`` skipped the case, its result that of the old series)."""
    from TokenUNetSegmentLib.pipeline.result_key import input_stamp

    series = _annexed_series(tmp_path)
    before = input_stamp(series / "IM0001.dcm")
    data = (series / "IM0003.dcm").read_bytes()
    (series / "IM0003.dcm").unlink()
    _annex(tmp_path, data + b"\0\0", series / "IM0003.dcm", "SHA256E-s9--new.dcm")
    assert input_stamp(series / "IM0001.dcm") != before
