"""Uploads: saved safely, then routed to the path and options their importer reads."""
from __future__ import annotations

import io
import zipfile

import pytest

from core.errors import InputError
from core.importers.uploads import route_upload, save_uploads


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def test_a_folder_importer_reads_the_batch_folder(tmp_path):
    routed = route_upload([("a.pgm", b"P5"), ("Info.txt", b"x")], tmp_path, "mias")
    assert routed.path.is_dir() and routed.path.parent == tmp_path
    assert sorted(p.name for p in routed.path.iterdir()) == ["Info.txt", "a.pgm"]


def test_a_file_importer_reads_the_one_file_even_inside_a_zip(tmp_path):
    routed = route_upload([("preds.zip", _zip({"sub/preds.csv": b"id,score\n1,0.5\n"}))],
                          tmp_path, "predictions", {"model": "m"})
    assert routed.path.name == "preds.csv" and routed.path.read_bytes() == b"id,score\n1,0.5\n"
    assert routed.options == {"model": "m"}
    two = route_upload([("a.csv", b"x"), ("b.csv", b"y")], tmp_path, "predictions")
    assert two.path.is_dir()          # several files: the importer gets the folder (and says why)


def test_a_bare_png_manifest_name_is_found_in_the_upload(tmp_path):
    options = {"manifest": "labels.csv", "dataset": "d"}
    routed = route_upload([("labels.csv", b"exam\n"), ("0_L_CC.png", b"")], tmp_path, "png",
                          options)
    assert routed.options == {"manifest": routed.path / "labels.csv", "dataset": "d"}
    assert options["manifest"] == "labels.csv"                     # the caller's dict unchanged
    elsewhere = route_upload([("0_L_CC.png", b"")], tmp_path, "png",
                             {"manifest": "/data/labels.csv"})
    assert elsewhere.options["manifest"] == "/data/labels.csv"     # a path stays a path


def test_an_unknown_kind_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(InputError, match="kind 'tiff' is not one of dicom, png.*; kind must be one"):
        route_upload([("a.tif", b"")], tmp_path / "uploads", "tiff")
    assert not (tmp_path / "uploads").exists()


def test_zip_slip_is_refused_and_leaves_nothing(tmp_path):
    with pytest.raises(InputError, match="outside the archive"):
        save_uploads([("evil.zip", _zip({"../escape.txt": b"x"}))], tmp_path)
    assert list(tmp_path.iterdir()) == []
