"""De-identification: a DICOM full of identifying values goes through the CLI import, and none of
those values appears in the store (SQL and raw bytes), in any file the import wrote, or in the
command's stdout/stderr, on success and on failure."""
from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest

from cli import main
from core.io.display import display_image
from core.store.schema import TABLE_COLUMNS
from core.store import open_store
from tests.test_import_dicom import make_dicom

PHI = {
    "PatientName": "Zyxquorra^Wilhelmina",
    "PatientID": "MRN77413355",
    "PatientBirthDate": "19470315",
    "AccessionNumber": "ACC90871234",
    "InstitutionName": "Quixotic Saint Bartholomew Infirmary",
    "InstitutionAddress": "17 Quarantine Lane Hexham",
    "ReferringPhysicianName": "Vandermolen^Kasimir",
    "PerformingPhysicianName": "Ostrowska^Jadwiga",
    "OperatorsName": "Tech^Brunhilda",
    "StationName": "MAMMO-ROOM-QX9",
    "StudyID": "STY4455661",
    "OtherPatientIDs": "OTHER-ID-3141592",
    "PatientAddress": "221B Baker Street Quillworth",
    "StudyDescription": "Screening Zyxquorra",
}
STUDY_UID = "1.2.826.0.1.3680043.8.498.90817263544"
NEEDLES = [v for v in PHI.values()] + ["Zyxquorra", "Wilhelmina", "Vandermolen", "Ostrowska",
                                       "Brunhilda", STUDY_UID]


def _phi_dicom(path, **overrides):
    extra = dict(PHI, StudyDate="20210604", Manufacturer="ControlVendorQ", **overrides)
    return make_dicom(path, study=STUDY_UID, extra=extra, window=(2000, 4000))


def _assert_clean(blob: bytes, where: str) -> None:
    lowered = blob.lower()
    for needle in NEEDLES:
        for form in {needle, needle.replace("^", " "), needle.upper()}:
            assert form.encode().lower() not in lowered, f"{needle!r} found in {where}"


def test_identifiers_appear_nowhere(tmp_path, capsys):
    _phi_dicom(tmp_path / "scans" / "img1.dcm")
    _phi_dicom(tmp_path / "scans" / "img2.dcm", ImageLaterality="R")
    db = tmp_path / "store.duckdb"
    for extra in (["--json"], []):  # both output modes, and a re-import (all skipped)
        assert main(["import", "dicom", str(tmp_path / "scans"), "--db", str(db), *extra]) == 0
        out, err = capsys.readouterr()
        _assert_clean(out.encode() + err.encode(), "CLI output")
    store = open_store(db)
    # what is kept: a pseudonym, an age, the study date, the manufacturer
    exams = store.exams()
    assert len(exams) == 1 and exams["patient"].iloc[0] == store.pseudonym(PHI["PatientID"])
    assert exams["age"].iloc[0] == 74.0 and str(exams["exam_date"].iloc[0])[:10] == "2021-06-04"
    assert STUDY_UID not in exams["exam_key"].iloc[0]
    # SQL view of every table
    with store.connection():
        text = "\n".join(store._df(f"SELECT * FROM {t}").to_csv() for t in TABLE_COLUMNS)
    _assert_clean(text.encode(), "store tables")
    assert "ControlVendorQ" in text  # the control: kept values are found this way
    # raw bytes of the store file(s) after a checkpoint
    store.checkpoint()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("store.duckdb*") if p.is_file())
    _assert_clean(raw, "the .duckdb file")
    assert b"ControlVendorQ" in raw  # the control: kept strings are visible in the bytes
    display_image(store.files_dir, store.images().iloc[0].to_dict(), long_side=64)   # a first view
    written = [p for p in store.files_dir.rglob("*") if p.is_file()]
    assert written  # the first view's screen copy
    for path in written:
        _assert_clean(path.read_bytes(), str(path.relative_to(store.files_dir)))
        _assert_clean(str(path).encode(), "a file name")


def test_failures_do_not_leak_identifiers(tmp_path, capsys):
    bad = tmp_path / "scans" / "broken.dcm"
    _phi_dicom(bad)
    bad.write_bytes(bad.read_bytes()[:-700])  # pixel data cut short
    db = tmp_path / "store.duckdb"
    assert main(["import", "dicom", str(tmp_path / "scans"), "--db", str(db), "--json"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["counts"]["failed"] == 1 and "broken.dcm" in err
    _assert_clean(out.encode() + err.encode(), "CLI output of a failed import")
    assert open_store(db).counts()["images"] == 0


@pytest.mark.parametrize("field, value, age", [("PatientBirthDate", "BORN-Zyxquorra", None),
                                               ("PatientAge", "Zyxquorra", 74.0)])
def test_invalid_identifying_values_raise_no_warnings_that_quote_them(tmp_path, capsys, caplog,
                                                                      field, value, age):
    """Invalid values make pydicom warn (warnings module and its logger; when writing, it quotes
    them); on the command line both would reach stderr, so the import must emit nothing that
    quotes a header value."""
    import pydicom.config as config

    mode = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE  # write the invalid value anyway
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _phi_dicom(tmp_path / "scans" / "x.dcm", **{field: value})
    finally:
        config.settings.writing_validation_mode = mode
    db = tmp_path / "store.duckdb"
    caplog.set_level(logging.DEBUG)
    caplog.clear()  # the writer above logged the value too
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["import", "dicom", str(tmp_path / "scans"), "--db", str(db)]) == 0
    out, err = capsys.readouterr()
    _assert_clean(out.encode() + err.encode(), "CLI output")
    _assert_clean("\n".join(str(w.message) for w in caught).encode(), "warnings")
    _assert_clean(caplog.text.encode(), "log records")
    stored = open_store(db).exams()["age"].iloc[0]
    # an unusable birth date gives no age; an unusable PatientAge falls back to the dates
    assert np.isnan(stored) if age is None else stored == age
