"""CSAW-CC-style table importer: exams, breast labels from x_case/x_cancer_laterality/
rad_timing, reads, LIBRA density, image files, malformed tables, and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cli import main
from core.errors import InputError
from core.importers.csaw import import_csaw
from core.store import open_store
from tests.test_import_dicom import dump, make_dicom

# patient, year, x_case, cancer side, x_type, rad_timing, r1, r2, recall, type_left, type_right
EXAMS = [
    ("p1", 2010, 0, None, None, None, 0, 0, 0, None, None),
    ("p1", 2012, 0, None, None, None, 1, 0, 0, None, None),
    ("p2", 2011, 1, "Right", 2, 3, 0, 0, 0, None, None),
    ("p2", 2013, 1, "Right", 2, 1, 1, 0, 1, 0, 1),
    ("p3", 2014, 1, "Left", 1, 2, 0, 0, 0, None, None),
]


def csaw_table() -> pd.DataFrame:
    rows = []
    for n, (p, year, case, side, xtype, timing, r1, r2, recall, tl, tr) in enumerate(EXAMS):
        for k, (lat, view) in enumerate([("Left", "CC"), ("Left", "MLO"), ("Right", "CC"),
                                         ("Right", "MLO")]):
            rows.append({
                "anon_patientid": p, "exam_year": year,
                "anon_filename": f"{p}_{year}_{lat[0]}_{view}_1.dcm", "imagelaterality": lat,
                "viewposition": view, "x_age": 1, "x_case": case, "x_cancer_laterality": side,
                "x_type": xtype, "x_lymphnode_met": None, "rad_timing": timing, "rad_r1": r1,
                "rad_r2": r2, "rad_recall": recall, "rad_recall_type_left": tl,
                "rad_recall_type_right": tr, "libra_percentdensity": 10.0 * n + k,
                "libra_breastarea": 100, "libra_densearea": 10})
    return pd.DataFrame(rows)


@pytest.fixture()
def csv(tmp_path):
    path = tmp_path / "CSAW-CC_breast_cancer_screening_data.csv"
    csaw_table().to_csv(path, index=False)
    return path


def test_labels_reads_and_density(csv, tmp_path):
    store = open_store(tmp_path / "s.duckdb")
    report = import_csaw(store, csv)
    assert report.counts() == {"imported": 1, "skipped": 0, "failed": 0}
    counts = store.counts()
    assert (counts["exams"], counts["images"], counts["breasts"]) == (5, 20, 10)
    breasts = store.cases(level="breast").set_index("case_id")
    positive = breasts[breasts["label"] == 1]
    assert positive["histology"].to_dict() == {"csaw/p2_2013/R": "unknown",
                                               "csaw/p3_2014/L": "other"}
    assert breasts.loc["csaw/p2_2011/R", ["label", "histology"]].tolist() == [0, "unknown"]
    assert (breasts.drop(["csaw/p2_2011/R", *positive.index])["histology"] == "none").all()
    exams = store.exams().set_index("exam_id")
    assert str(exams.loc["csaw/p2_2013", "exam_date"])[:10] == "2013-01-01"
    assert exams["age"].isna().all() and exams.loc["csaw/p1_2010", "patient"] != "p1"
    assert exams.loc["csaw/p1_2010", "patient"] == exams.loc["csaw/p1_2012", "patient"]
    reads = store.reads(level="exam").set_index(["reader", "case_id"])["recall"]
    assert len(reads) == 15 and bool(reads[("csaw-r1", "csaw/p1_2012")]) is True
    assert bool(reads[("csaw-consensus", "csaw/p2_2013")]) is True
    breast_reads = store.reads(level="breast").set_index("case_id")["recall"]
    assert breast_reads.astype(bool).to_dict() == {"csaw/p2_2013/L": False,
                                                   "csaw/p2_2013/R": True}
    assert store.readers().set_index("reader")["kind"].to_dict() == {
        "csaw-r1": "radiologist", "csaw-r2": "radiologist", "csaw-consensus": "consensus"}
    density = store.density(source="imported", level="exam").set_index("exam_id")["score"]
    assert density["csaw/p2_2011"] == pytest.approx(np.mean([20, 21, 22, 23]))
    image_density = store.density(source="imported", level="image")
    assert len(image_density) == 20 and image_density["category"].isna().all()
    images = store.images().set_index("image_key")
    assert images.loc["p2_2013_R_MLO_1", ["image_id", "laterality", "view"]].tolist() == \
        ["csaw/p2_2013/R-MLO", "R", "MLO"]
    assert images["path"].isna().all()  # no --images: metadata only
    before = dump(store)
    assert import_csaw(store, csv).counts()["skipped"] == 1
    assert dump(store) == before


def test_positive_timing_and_histology_map(csv, tmp_path):
    store = open_store(tmp_path / "s.duckdb")
    import_csaw(store, csv, positive_timing=(1,), histology_map={1: "other", 2: "IDC"})
    breasts = store.cases(level="breast").set_index("case_id")
    assert breasts.loc["csaw/p3_2014/L", ["label", "histology"]].tolist() == [0, "unknown"]
    assert breasts.loc["csaw/p2_2013/R", "histology"] == "IDC"
    with pytest.raises(InputError, match="'lobular' is not one of"):
        import_csaw(store, csv, histology_map={2: "lobular"})


def test_image_files(csv, tmp_path):
    root = tmp_path / "images"
    for lat, view in [("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")]:
        make_dicom(root / f"p1_2010_{lat}_{view}_1.dcm", laterality=lat, view=view,
                   extra={"ImagerPixelSpacing": [0.07, 0.07], "Manufacturer": "HOLOGIC"})
    (root / "p1_2012_L_CC_1.dcm").write_bytes(b"\x00" * 10)  # unreadable
    store = open_store(tmp_path / "s.duckdb")
    report = import_csaw(store, csv, images=root)
    status = {o.file: o for o in report.outcomes}
    assert status["p1_2012_L_CC_1.dcm"].status == "failed"
    assert "16 without a readable file" in status[csv.name].reason
    images = store.images().set_index("image_key")
    row = images.loc["p1_2010_R_MLO_1"]
    assert row["path"] == "p1_2010_R_MLO_1.dcm" and row["height"] == 40 and row["width"] == 32
    assert row["spacing_mm"] == pytest.approx(0.07) and row["manufacturer"] == "HOLOGIC"
    assert len(row["sha256"]) == 64
    assert pd.isna(images.loc["p1_2012_L_CC_1", "path"])
    assert store.datasets().set_index("dataset").loc["csaw", "root"] == str(root.resolve())


@pytest.mark.parametrize("change, match", [
    (lambda t: t.drop(columns=["anon_patientid"]), "no column 'anon_patientid'"),
    (lambda t: t.assign(exam_year=t["exam_year"].astype(object).where(t.index != 3, "abc")),
     "non-numeric value 'abc'"),
    (lambda t: t.assign(exam_year=t["exam_year"].where(t.index != 3, 20130)), "not a year"),
    (lambda t: t.assign(rad_timing=t["rad_timing"].where(t.index != 0, 5)), "rad_timing"),
    (lambda t: t.assign(imagelaterality=t["imagelaterality"].where(t.index != 2, "Up")),
     "'Up'"),
    (lambda t: t.assign(anon_filename=t["anon_filename"].where(t.index != 1,
                                                               t["anon_filename"][0])),
     "appears twice"),
    (lambda t: t.assign(rad_r1=t["rad_r1"].where(t.index != 1, 1)), "different rad_r1"),
    (lambda t: t.assign(x_case=t["x_case"].astype(object).where(t.index != 0, "yes?")),
     "non-numeric"),
])
def test_malformed_tables_change_nothing(csv, tmp_path, change, match):
    store = open_store(tmp_path / "s.duckdb")
    before = dump(store)
    change(csaw_table()).to_csv(csv, index=False)
    with pytest.raises(InputError, match=match):
        import_csaw(store, csv)
    assert dump(store) == before


def test_cli(csv, tmp_path, capsys):
    db = tmp_path / "cli.duckdb"
    assert main(["import", "csaw", str(csv), "--db", str(db), "--json", "--histology-map",
                 "1=other,2=IDC,3=IDC", "--dataset", "csaw-cc"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["imported"] == 1
    cases = open_store(db).cases(level="breast", test_set="csaw-cc").set_index("case_id")
    assert cases.loc["csaw-cc/p2_2013/R", "histology"] == "IDC"
    assert main(["import", "csaw", str(csv), "--db", str(db), "--histology-map", "1"]) == 2
    assert "CODE=HISTOLOGY" in capsys.readouterr().err
