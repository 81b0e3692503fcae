"""Pulling from a PACS over DICOMweb, against a real Orthanc (tests/orthanc.py).

The PACS holds mammograms full of identifying values (every tag the DICOM importer's tests
plant, plus a private tag and a sequence); a pull must import the right images, with the
right laterality and view, and none of those values may reach the store, its files folder,
the temporary folder, logs or the command's output. Failures (wrong password, no server, a
server that never answers, a study deleted between search and retrieval, a cancel) each give
one clear error and leave the store consistent.
"""
from __future__ import annotations

import json
import logging
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cli import main
from core.errors import InputError
from core.importers.dicomweb import Filters, pull, search
from core.io.dicomweb import PacsError, Server, clean_url
from core.io.display import display_image
from core.io.images import read_pixels
from core.io.pixels import to_display
from core.store import open_store
from core.store.schema import TABLE_COLUMNS
from tests.orthanc import PASSWORD, USER, Orthanc, free_port
from tests.test_deidentification import NEEDLES as FILE_NEEDLES, PHI
from tests.test_import_dicom import dump, linear_window, make_dicom

PW_ENV = "ILCSCOPE_TEST_PACS_PASSWORD"
PRIVATE_VALUE = "Hiddenprivate^Gundersdottir"
SEQUENCE_VALUE = "Sequenced^Oyelaran-Whitby"
# (study, series, laterality, view, how the view is written, modality, body part)
LAYOUT = [
    ("A", "1", "L", "CC", "position", "MG", None),
    ("A", "1", "L", "MLO", "position", "MG", None),
    ("A", "2", "R", "CC", "code", "MG", "BREAST"),
    ("A", "2", "R", "MLO", "position", "MG", "BREAST"),
    ("A", "3", "L", "CC", "position", "OT", None),        # not MG: not pulled
    ("A", "4", "R", "CC", "position", "MG", "CHEST"),     # not breast: not pulled
    ("B", "1", "R", "CC", "position", "MG", None),
    ("B", "1", "L", "MLO", "laterality-tag", "MG", None),
]
PULLED = [row for row in LAYOUT if row[5] == "MG" and row[6] in (None, "BREAST")]
WINDOW = (2000, 1001)   # the first instance's WindowCenter, WindowWidth


def _uid(*parts: str) -> str:
    return "1.2.826.0.1.3680043.8.498.7731." + ".".join(str(ord(p) if p.isalpha() else p)
                                                       for p in parts)


@pytest.fixture(scope="module")
def orthanc():
    with Orthanc() as server:
        yield server


@pytest.fixture
def pacs(orthanc, tmp_path):
    """The PACS emptied and filled with LAYOUT; returns what each pulled instance should be."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    orthanc.clear()
    expected, needles = {}, list(FILE_NEEDLES)
    for n, (study, series, side, view, how, modality, body) in enumerate(LAYOUT):
        uids = {"StudyInstanceUID": _uid("1", study), "SeriesInstanceUID": _uid("2", study, series),
                "SOPInstanceUID": _uid("3", str(n))}
        extra = dict(PHI, PatientID=PHI["PatientID"] + study, StudyDate="20210604",
                     Manufacturer="ControlVendorQ", Modality=modality, **uids)
        extra["PatientName"] = PHI["PatientName"] + study
        if body:
            extra["BodyPartExamined"] = body
        item = Dataset()
        item.PatientName = SEQUENCE_VALUE
        item.AccessionNumber = PHI["AccessionNumber"]
        extra["RequestAttributesSequence"] = Sequence([item])
        if how == "laterality-tag":
            extra["Laterality"] = side
        path = tmp_path / "upload" / f"{n}.dcm"
        pixels = make_dicom(path, laterality=None if how == "laterality-tag" else side,
                            view=None if how == "code" else view, study=uids["StudyInstanceUID"],
                            view_code="cranio-caudal" if how == "code" else None,
                            pixels=np.random.default_rng(n).integers(0, 4096, (48, 36),
                                                                     dtype=np.uint16),
                            window=WINDOW if n == 0 else None, extra=extra)
        _add_private(path)
        orthanc.upload(path.read_bytes())
        path.unlink()
        needles += [uids["SeriesInstanceUID"], uids["SOPInstanceUID"], uids["StudyInstanceUID"],
                    extra["PatientID"]]
        if modality == "MG" and body in (None, "BREAST"):
            expected[uids["SOPInstanceUID"]] = (uids["StudyInstanceUID"], side, view, pixels,
                                                WINDOW if n == 0 else None)
    needles += [PRIVATE_VALUE, SEQUENCE_VALUE, "Gundersdottir", "Oyelaran", PASSWORD]
    return {"server": orthanc, "expected": expected, "needles": needles}


def _add_private(path: Path) -> None:
    import pydicom

    ds = pydicom.dcmread(path)
    block = ds.private_block(0x0011, "ILCSCOPE TEST PHI", create=True)
    block.add_new(0x01, "LO", PRIVATE_VALUE)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)


def _clean(blob: bytes, needles, where: str) -> None:
    lowered = blob.lower()
    for needle in needles:
        for form in {needle, needle.replace("^", " ")}:
            assert form.encode().lower() not in lowered, f"{needle!r} found in {where}"


def _cli(pacs, db, *extra, password=PASSWORD, monkeypatch):
    monkeypatch.setenv(PW_ENV, password)
    return main(["import", "dicomweb", pacs["server"].dicomweb, "--user", USER,
                 "--password-env", PW_ENV, "--db", str(db), "--timeout", "10", *extra])


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """The system temporary folder, watched: a pull must leave nothing in it."""
    folder = tmp_path / "systmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_pull_imports_views_and_leaks_nothing(pacs, tmp_path, capsys, caplog, monkeypatch,
                                              private_tmp):
    caplog.set_level(logging.DEBUG)
    db = tmp_path / "store.duckdb"
    assert _cli(pacs, db, "--dataset", "hosp", "--json", monkeypatch=monkeypatch) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["counts"] == {"imported": len(PULLED), "skipped": 0, "failed": 0}
    assert result["url"] == pacs["server"].dicomweb
    store = open_store(db)
    images = store.images(dataset="hosp")
    assert len(images) == len(PULLED)
    for sop, (study, side, view, pixels, window) in pacs["expected"].items():
        exam_id = "hosp/S" + store.pseudonym("study:" + study)[1:]
        key = f"{side}-{view}-{store.pseudonym('sop:' + sop)[1:9]}"
        row = images.set_index("image_id").loc[f"{exam_id}/{key}"]
        assert row["laterality_source"] == "dicom-tag"
        assert row["photometric"] == "MONOCHROME2" and row["bit_depth"] == 12
        np.testing.assert_array_equal(read_pixels(row["abs_path"]), pixels)  # the kept copy
        shown = display_image(store.files_dir, row.to_dict(), long_side=64)  # a first view
        if window is None:
            assert shown.source == "percentile window"
            np.testing.assert_array_equal(shown.pixels, to_display(pixels))
        else:   # the header's window travelled with the copy
            assert shown.source == "DICOM window"
            reference = linear_window(pixels, *window, bits=12)
            assert np.abs(shown.pixels.astype(int) - reference).max() <= 1
    exams = store.exams(dataset="hosp")
    assert sorted(exams["patient"]) == sorted(store.pseudonym(PHI["PatientID"] + s)
                                              for s in "AB")
    assert store.select("datasets", dataset="hosp")["notes"].iloc[0].endswith(
        pacs["server"].dicomweb)
    # nowhere: output, logs, tables, store bytes, files (contents and names), temp folder
    needles = pacs["needles"]
    _clean(out.encode() + err.encode(), needles, "CLI output")
    _clean("\n".join(r.getMessage() for r in caplog.records).encode(), needles, "log records")
    with store.connection():
        text = "\n".join(store._df(f"SELECT * FROM {t}").to_csv() for t in TABLE_COLUMNS)
    _clean(text.encode(), needles, "store tables")
    assert "ControlVendorQ" in text  # the control: kept values are found this way
    store.checkpoint()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("store.duckdb*") if p.is_file())
    _clean(raw, needles, "the store file")
    written = [p for p in store.files_dir.rglob("*") if p.is_file()]
    assert len(written) == 2 * len(PULLED)  # a pixel copy each, and the first view's screen copy
    for path in written:
        _clean(path.read_bytes() + str(path).encode(), needles, str(path))
    assert list(private_tmp.iterdir()) == []
    # a second pull imports nothing and changes nothing
    before = dump(store)
    assert _cli(pacs, db, "--dataset", "hosp", "--json", monkeypatch=monkeypatch) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["counts"] == {"imported": 0, "skipped": len(PULLED), "failed": 0}
    assert dump(store) == before


def test_a_retrieved_again_instance_is_compared_and_skipped(pacs, tmp_path):
    """Lost files make a re-pull retrieve again; unchanged rows are then skipped by sha256."""
    store = open_store(tmp_path / "s.duckdb")
    server = Server(pacs["server"].dicomweb, user=USER, password=PASSWORD)
    plan = search(store, server)
    assert pull(store, server, plan).counts()["imported"] == len(PULLED)
    before = dump(store)
    copies = sorted((store.files_dir / "pixels").rglob("*.pgm"))
    kept = {p: p.read_bytes() for p in copies}
    assert len(copies) == len(PULLED)
    for path in copies:
        path.unlink()
    assert pull(store, server, plan).counts() == {"imported": len(PULLED), "skipped": 0,
                                                  "failed": 0}
    assert dump(store) == before   # same rows, same sha256: only the pixel copies came back
    assert {p: p.read_bytes() for p in copies} == kept


def test_dry_run_shows_pseudonyms_only(pacs, tmp_path, capsys, monkeypatch, private_tmp):
    db = tmp_path / "store.duckdb"
    assert _cli(pacs, db, "--dry-run", "--json", monkeypatch=monkeypatch) == 0
    out, err = capsys.readouterr()
    _clean(out.encode() + err.encode(), pacs["needles"], "dry-run output")
    result = json.loads(out)
    store = open_store(db)
    studies = {s["exam_key"]: s for s in result["studies"]}
    for study, name in ((_uid("1", "A"), "A"), (_uid("1", "B"), "B")):
        row = studies["S" + store.pseudonym("study:" + study)[1:]]
        assert row["patient"] == store.pseudonym(PHI["PatientID"] + name)
    a = studies["S" + store.pseudonym("study:" + _uid("1", "A"))[1:]]
    assert (a["series"], a["instances"]) == (2, 4)  # OT and CHEST series left out
    assert result["n_instances"] == len(PULLED) and "counts" not in result
    assert store.counts()["images"] == 0
    assert not any(p.is_file() for p in store.files_dir.rglob("*"))
    assert list(private_tmp.iterdir()) == []


def test_filters_narrow_the_search(pacs, tmp_path):
    store = open_store(tmp_path / "s.duckdb")
    server = Server(pacs["server"].dicomweb, user=USER, password=PASSWORD)
    plan = search(store, server, Filters(patient=PHI["PatientID"] + "B"))
    assert [s["instances"] for s in plan.table().to_dict("records")] == [2]
    assert search(store, server, Filters(study_date="20220101-")).studies == ()
    assert len(search(store, server, Filters(study_date="20210101-20211231")).studies) == 2
    assert len(search(store, server, Filters(limit=1)).studies) == 1


def test_wrong_password_is_one_error_and_changes_nothing(pacs, tmp_path, capsys, monkeypatch):
    db = tmp_path / "store.duckdb"
    before = dump(open_store(db))
    assert _cli(pacs, db, password="wrong", monkeypatch=monkeypatch) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and "HTTP 401" in lines[0]
    assert lines[0].startswith("error: search studies: the PACS refused the credentials")
    assert "wrong" not in err
    assert dump(open_store(db)) == before


def test_unreachable_server_is_one_error(tmp_path, capsys, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}/dicom-web"  # nothing listens there
    monkeypatch.setenv(PW_ENV, "x")
    db = tmp_path / "store.duckdb"
    assert main(["import", "dicomweb", url, "--user", "u", "--password-env", PW_ENV,
                 "--db", str(db), "--retries", "1"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: search studies: cannot reach the "
                                                   f"PACS at {url} (2 tries")
    assert open_store(db).counts()["images"] == 0


def test_a_server_that_never_answers_times_out(tmp_path, capsys, monkeypatch):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held = []
    stop = threading.Event()

    def accept():  # accept every connection and never answer
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/dicom-web"
    monkeypatch.setenv(PW_ENV, "x")
    try:
        start = time.monotonic()
        assert main(["import", "dicomweb", url, "--user", "u", "--password-env", PW_ENV,
                     "--db", str(tmp_path / "s.duckdb"), "--timeout", "0.5",
                     "--retries", "1"]) == 2
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "did not answer within 0.5 s (2 tries)" in lines[0]
    assert len(held) == 2 and elapsed < 10  # bounded: two tries of 0.5 s and one back-off


def test_study_deleted_between_search_and_retrieval(pacs, tmp_path, private_tmp):
    store = open_store(tmp_path / "s.duckdb")
    server = Server(pacs["server"].dicomweb, user=USER, password=PASSWORD, retries=0)
    plan = search(store, server)
    gone = "S" + store.pseudonym("study:" + _uid("1", "A"))[1:]
    orthanc = pacs["server"]
    study_id = orthanc.rest("POST", "/tools/lookup", data=_uid("1", "A")).json()[0]["ID"]
    orthanc.rest("DELETE", f"/studies/{study_id}")
    report = pull(store, server, plan)
    failed = [o for o in report.outcomes if o.status == "failed"]
    assert report.counts() == {"imported": 2, "skipped": 0, "failed": 4}
    assert {o.file.split("/")[0] for o in failed} == {gone}
    for outcome in failed:
        assert outcome.reason == (f"retrieve {outcome.file}: not found on the PACS (HTTP 404): "
                                  "deleted since the search, or the URL is not a DICOMweb root "
                                  "(e.g. http://host:8042/dicom-web)")
    images = store.images()
    assert len(images) == 2 and set(images["laterality"] + images["view"]) == {"RCC", "LMLO"}
    assert all(Path(p).is_file() for p in images["abs_path"])
    assert len(list(store.files_dir.rglob("*.*"))) == 2  # only the imported ones' pixel copies
    assert list(private_tmp.iterdir()) == []


def test_cancel_keeps_what_was_imported_and_a_re_pull_completes(pacs, tmp_path, private_tmp):
    store = open_store(tmp_path / "s.duckdb")
    server = Server(pacs["server"].dicomweb, user=USER, password=PASSWORD)
    plan = search(store, server)
    calls = []
    report = pull(store, server, plan, cancel=lambda: calls.append(1) or len(calls) > 2)
    assert report.counts() == {"imported": 2, "skipped": 0, "failed": len(PULLED) - 2}
    assert all("not retrieved: cancelled" in o.reason for o in report.outcomes[2:])
    assert len(store.images()) == 2 and list(private_tmp.iterdir()) == []
    assert pull(store, server, plan).counts() == {"imported": len(PULLED) - 2, "skipped": 2,
                                                  "failed": 0}


def test_server_that_stops_answering_mid_pull_stops_the_pull(pacs, tmp_path):
    """After the first instance the PACS is gone: one failure says why, the rest are not tried."""
    store = open_store(tmp_path / "s.duckdb")
    server = Server(pacs["server"].dicomweb, user=USER, password=PASSWORD, retries=0)
    plan = search(store, server)
    dead = Server(f"http://127.0.0.1:{free_port()}/dicom-web", user=USER, password=PASSWORD,
                  retries=0)
    report = pull(store, dead, plan)
    reasons = [o.reason for o in report.outcomes]
    assert "cannot reach the PACS" in reasons[0]
    assert all("not retrieved: the PACS stopped answering" in r for r in reasons[1:])
    assert store.counts()["images"] == 0


def test_credentials_never_in_the_url_or_repr():
    with pytest.raises(InputError, match="url carries a user or password"):
        clean_url("http://bob:secret@pacs:8042/dicom-web")
    assert clean_url("https://pacs:8042/dicom-web/?x=1#y") == "https://pacs:8042/dicom-web"
    server = Server("http://pacs/dicom-web", user="bob", password="hunter2-secret")
    assert "hunter2" not in repr(server)
    with pytest.raises(InputError, match="study_date"):
        Filters(study_date="2021-06-04")
    assert isinstance(PacsError("x"), InputError)


def test_password_env_must_be_set(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(PW_ENV, raising=False)
    assert main(["import", "dicomweb", "http://127.0.0.1:1/dicom-web", "--user", "u",
                 "--password-env", PW_ENV, "--db", str(tmp_path / "s.duckdb")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --password-env: environment variable {PW_ENV} is not set or empty; export it "
        f"first (read -s {PW_ENV}; export {PW_ENV})")


def test_import_page_searches_and_pulls_chosen_studies(pacs, tmp_path, monkeypatch):
    from tests.test_app import import_page_on_an_empty_store

    at, db = import_page_on_an_empty_store(tmp_path, monkeypatch)
    at.text_input(key="pacs_url").set_value(pacs["server"].dicomweb)
    at.text_input(key="pacs_user").set_value(USER)
    at.text_input(key="pacs_password").set_value("not-the-password").run()
    at.button(key="pacs_search").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.error) == 1 and "HTTP 401" in at.error[0].value
    at.text_input(key="pacs_password").set_value(PASSWORD)
    at.button(key="pacs_search").click().run()
    assert not at.exception and not at.error
    store = open_store(db, read_only=True)
    key_b = "S" + store.pseudonym("study:" + _uid("1", "B"))[1:]
    results = at.dataframe[0].value.set_index("exam_key")
    assert len(results) == 2 and results.loc[key_b, "instances"] == 2
    assert results.loc[key_b, "patient"] == store.pseudonym(PHI["PatientID"] + "B")
    at.multiselect(key="pacs_chosen").set_value([key_b]).run()
    at.button(key="pacs_pull").click().run()
    assert not at.exception, [e.value for e in at.exception]
    outcomes = at.dataframe[1].value
    assert list(outcomes["status"]) == ["imported", "imported"]
    assert all(f.startswith(key_b + "/") for f in outcomes["file"])
    images = open_store(db, read_only=True).images()
    assert len(images) == 2 and set(images["exam_id"]) == {f"pacs/{key_b}"}
    shown = "\n".join([str(e.value) for e in at.markdown] + [str(e.value) for e in at.caption]
                      + [d.value.to_csv() for d in at.dataframe])
    _clean(shown.encode(), pacs["needles"], "the page")
