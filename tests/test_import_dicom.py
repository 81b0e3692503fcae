"""DICOM importer: tags, pixels (12/16-bit, MONOCHROME1, JPEG 2000, RLE), the header's display
window, idempotence, and malformed files that fail alone and leave the store unchanged."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cli import main
from core.importers.dicom import dicom_pixels, import_dicom
from core.io.display import display_image
from core.store.schema import TABLE_COLUMNS
from core.store import open_store

STUDY = "1.2.826.0.1.3680043.8.498.1"


def make_dicom(path: Path, *, pixels: np.ndarray | None = None, laterality: str | None = "L",
               view: str | None = "CC", study: str = STUDY, photometric: str = "MONOCHROME2",
               bits: int = 12, syntax: str = "explicit", window: tuple[float, float] | None = None,
               view_code: str | None = None, extra: dict | None = None) -> np.ndarray:
    """Write a small mammogram-like DICOM; returns the stored pixel array."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless,
                             generate_uid)

    if pixels is None:
        rng = np.random.default_rng(len(str(path)))
        pixels = rng.integers(0, 2 ** bits, (40, 32), dtype=np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study
    ds.Modality = "MG"
    if laterality:
        ds.ImageLaterality = laterality
    if view:
        ds.ViewPosition = view
    if view_code:
        item = Dataset()
        item.CodeMeaning = view_code
        ds.ViewCodeSequence = [item]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation = 0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    if syntax == "j2k":
        ds.compress(JPEG2000Lossless, pixels)
    elif syntax == "rle":
        ds.compress(RLELossless, pixels)
    else:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return pixels


def linear_window(stored: np.ndarray, center: float, width: float, *, bits: int) -> np.ndarray:
    """DICOM's linear VOI window (PS3.3 C.11.2.1.2.1) by hand, to 8 bits: the reference the
    screen's grey levels are checked against."""
    x, top = stored.astype(np.float64), 2.0 ** bits - 1
    with np.errstate(divide="ignore", invalid="ignore"):   # width 1: a step, no ramp
        ramp = ((x - (center - 0.5)) / (width - 1) + 0.5) * top
    y = np.where(x <= center - 0.5 - (width - 1) / 2, 0.0,
                 np.where(x > center - 0.5 + (width - 1) / 2, top, ramp))
    return np.round(y / top * 255).astype(np.uint8)


def dump(store) -> dict:
    """Every table's rows, sorted: equal dumps mean an unchanged store."""
    out = {}
    with store.connection():
        for table in TABLE_COLUMNS:
            rows = store._df(f"SELECT * FROM {table} ORDER BY ALL").astype(object)
            out[table] = rows.where(rows.notna(), None).to_dict("records")
    return out


def test_import_reads_tags_pixels_and_groups_exams(tmp_path):
    root = tmp_path / "scans"
    cc = make_dicom(root / "a.dcm", extra={"PatientID": "X1", "PatientAge": "052Y",
                                            "StudyDate": "20190102", "Manufacturer": "ACME",
                                            "ImagerPixelSpacing": [0.085, 0.085]})
    mlo = make_dicom(root / "sub" / "b.dcm", laterality=None, view=None, bits=16,
                     view_code="medio-lateral oblique", photometric="MONOCHROME1",
                     syntax="j2k", extra={"Laterality": "R", "PatientID": "X1",
                                          "PatientBirthDate": "19600615",
                                          "StudyDate": "20190102", "PixelSpacing": [0.1, 0.1]})
    other = make_dicom(root / "c.dcm", study="1.2.3.4", syntax="rle")
    (root / "README.txt").write_text("not an image")
    store = open_store(tmp_path / "s.duckdb")
    report = import_dicom(store, root, dataset="hosp")
    assert report.counts() == {"imported": 3, "skipped": 1, "failed": 0}
    images = store.images(dataset="hosp").set_index("path")
    assert images.loc["a.dcm", ["laterality", "view", "laterality_source"]].tolist() == \
        ["L", "CC", "dicom-tag"]
    assert images.loc["sub/b.dcm", ["laterality", "view"]].tolist() == ["R", "MLO"]
    assert images.loc["a.dcm", "spacing_mm"] == pytest.approx(0.085)
    assert images.loc["sub/b.dcm", "spacing_mm"] == pytest.approx(0.1)  # PixelSpacing first
    assert images.loc["a.dcm", "bit_depth"] == 12 and images.loc["sub/b.dcm", "bit_depth"] == 16
    assert images.loc["sub/b.dcm", "photometric"] == "MONOCHROME1"
    assert images.loc["a.dcm", "exam_id"] == images.loc["sub/b.dcm", "exam_id"]
    assert images.loc["c.dcm", "exam_id"] != images.loc["a.dcm", "exam_id"]
    exams = store.exams(dataset="hosp").set_index("exam_id")
    exam = exams.loc[images.loc["a.dcm", "exam_id"]]
    assert exam["exam_key"].startswith("S") and STUDY not in exam["exam_key"]
    assert exam["patient"] == store.pseudonym("X1")
    assert exam["age"] == 58.0  # the second file (birth 1960-06-15, study 2019-01-02) wrote last
    assert str(exam["exam_date"])[:10] == "2019-01-02"
    # pixels: stored values, MONOCHROME1 inverted (brighter = denser), J2K and RLE lossless
    np.testing.assert_array_equal(dicom_pixels(root / "a.dcm"), cc)
    np.testing.assert_array_equal(dicom_pixels(root / "sub" / "b.dcm"), 65535 - mlo)
    np.testing.assert_array_equal(dicom_pixels(root / "c.dcm"), other)
    # no display copy at import: the screen makes its own on first view (core.io.display)
    assert images["display_path"].isna().all()
    assert not [p for p in store.files_dir.rglob("*") if p.is_file()]
    # no labels yet: breasts exist so the images are cases, histology unknown
    cases = store.cases(level="image", test_set="hosp")
    assert len(cases) == 3 and set(cases["histology"]) == {"unknown"}


def test_window_is_applied_on_the_screen(tmp_path):
    pixels = np.tile(np.arange(0, 4000, 100, dtype=np.uint16), (32, 1)).T.copy()  # (40, 32)
    make_dicom(tmp_path / "d" / "w.dcm", pixels=pixels, window=(2000, 1001))
    store = open_store(tmp_path / "s.duckdb")
    import_dicom(store, tmp_path / "d")
    shown = display_image(store.files_dir, store.images().iloc[0].to_dict(), long_side=64)
    display = shown.pixels
    assert shown.source == "DICOM window" and shown.factor == 1 and display.shape == (40, 32)
    reference = linear_window(pixels, 2000, 1001, bits=12)
    assert np.abs(display.astype(int) - reference).max() <= 1   # float rounding at most
    # DICOM linear window (PS3.3 C.11.2.1.2.1): below c - 0.5 - (w-1)/2 -> 0, above -> max
    assert display[14, 0] == 0 and display[25, 0] == 255  # 1400 and 2500
    expected = ((2000 - (2000 - 0.5)) / 1000 + 0.5) * 255  # pixel value 2000 mid-window
    assert abs(int(display[20, 0]) - expected) <= 1


def test_reimport_skips_unchanged_files_and_keeps_labels(tmp_path):
    root = tmp_path / "d"
    make_dicom(root / "a.dcm")
    store = open_store(tmp_path / "s.duckdb")
    import_dicom(store, root)
    exam_id = store.exams()["exam_id"].iloc[0]
    store.write_tables({"breasts": pd.DataFrame([{
        "exam_id": exam_id, "laterality": "L", "cancer": 1, "histology": "ILC"}])})
    before = dump(store)
    report = import_dicom(store, root)
    assert report.counts() == {"imported": 0, "skipped": 1, "failed": 0}
    assert dump(store) == before  # labels survive, nothing duplicated


def test_laterality_and_view_from_the_file_name(tmp_path):
    make_dicom(tmp_path / "d" / "case7_R_MLO.dcm", laterality=None, view=None)
    store = open_store(tmp_path / "s.duckdb")
    import_dicom(store, tmp_path / "d")
    row = store.images().iloc[0]
    assert (row["laterality"], row["view"], row["laterality_source"]) == \
        ("R", "MLO", "file-name")


@pytest.mark.parametrize("problem, match", [
    ("truncated", "truncated"),
    ("magic", "not a DICOM file"),
    ("dimensions", "impossible image size"),
    ("no laterality", "no laterality"),
    ("colour", "MONOCHROME1/2"),
])
def test_malformed_file_fails_alone_and_stores_nothing(tmp_path, problem, match):
    root = tmp_path / "d"
    good = make_dicom(root / "good.dcm")
    bad = root / "bad.dcm"
    if problem == "truncated":
        make_dicom(bad, study="1.2.3.9")
        bad.write_bytes(bad.read_bytes()[:-500])
    elif problem == "magic":
        bad.write_bytes(b"\x00" * 128 + b"NOPE" + b"\x00" * 100)
    elif problem == "dimensions":
        make_dicom(bad, pixels=np.zeros((4, 4), np.uint16), study="1.2.3.9")
    elif problem == "no laterality":
        make_dicom(bad, laterality=None, study="1.2.3.9")
    else:
        make_dicom(bad, photometric="RGB", study="1.2.3.9")
    store = open_store(tmp_path / "s.duckdb")
    assert good is not None
    report = import_dicom(store, root)
    outcome = {o.file: o for o in report.outcomes}
    assert outcome["bad.dcm"].status == "failed" and match in outcome["bad.dcm"].reason
    assert "\n" not in outcome["bad.dcm"].reason
    assert outcome["good.dcm"].status == "imported"
    assert store.counts()["images"] == 1  # the good file only
    # the bad file alone: the store does not change at all
    before = dump(store)
    files_before = sorted(store.files_dir.rglob("*"))
    (root / "good.dcm").unlink()
    report = import_dicom(store, root)
    assert report.failed and dump(store) == before
    assert sorted(store.files_dir.rglob("*")) == files_before


def test_a_cut_inside_the_file_meta_group_fails_in_one_line(tmp_path):
    """pydicom raises its own BytesLengthException for a value cut short there (found by the
    truncation test below, one seed in many)."""
    make_dicom(tmp_path / "x.dcm")
    data = (tmp_path / "x.dcm").read_bytes()
    store = open_store(tmp_path / "s.duckdb")
    for cut in range(133, 160):   # the group length (0002,0000) and the next elements
        folder = tmp_path / f"cut{cut}"
        folder.mkdir()
        (folder / "x.dcm").write_bytes(data[:cut])
        (outcome,) = import_dicom(store, folder).outcomes
        assert outcome.status == "failed" and "\n" not in outcome.reason, (cut, outcome)
    assert store.counts()["images"] == 0


@pytest.fixture(scope="module")
def truncation_case(tmp_path_factory):
    base = tmp_path_factory.mktemp("trunc")
    pixels = make_dicom(base / "src" / "x.dcm", syntax="j2k")
    return base, (base / "src" / "x.dcm").read_bytes(), pixels, open_store(base / "s.duckdb")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fraction=st.floats(0.0, 0.999))
def test_truncation_never_stores_a_damaged_image(truncation_case, fraction):
    """A cut file fails and changes nothing, unless the cut spares every pixel byte (only the
    trailing sequence delimiter is shortened): then the stored image is the intact original."""
    base, data, pixels, store = truncation_case
    folder = base / "cut"
    folder.mkdir(exist_ok=True)
    (folder / "x.dcm").write_bytes(data[: int(len(data) * fraction)])
    before = dump(store)
    report = import_dicom(store, folder, dataset="cut")
    (outcome,) = report.outcomes
    if outcome.status == "failed":
        assert dump(store) == before
    else:
        assert len(data) - int(len(data) * fraction) < 8  # inside the 8-byte delimiter
        np.testing.assert_array_equal(dicom_pixels(folder / "x.dcm"), pixels)


def test_cli_imports_and_reports_json(tmp_path, capsys):
    make_dicom(tmp_path / "d" / "a.dcm")
    db = tmp_path / "cli.duckdb"
    assert main(["import", "dicom", str(tmp_path / "d"), "--db", str(db), "--json",
                 "--dataset", "site1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["counts"] == {"imported": 1, "skipped": 0, "failed": 0}
    assert open_store(db).images(dataset="site1")["path"].tolist() == ["a.dcm"]
    (tmp_path / "d" / "bad.dcm").write_bytes(b"garbage")
    assert main(["import", "dicom", str(tmp_path / "d"), "--db", str(db), "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["counts"]["failed"] == 1
    assert "failed: bad.dcm" in captured.err
    assert main(["import", "dicom", str(tmp_path / "missing"), "--db", str(db)]) == 2
    assert "error:" in capsys.readouterr().err
