"""Reader studies in the store: the tables and migration, the long/iMRMC/store importers, the demo."""
from __future__ import annotations

import json

import duckdb
import numpy as np
import pandas as pd
import pytest

from cli import main
from core.demo.reader_study import DEMO_STUDY
from core.errors import InputError
from core.importers.reader_study import (import_reader_study, import_store_reads,
                                         parse_imrmc)
from core.stats import roc_auc
from core.store import open_store
from core.store.schema import SCHEMA_VERSION, STUDY_TABLES
from tests.test_store import small_cohort

COLUMNS = ["study", "reader", "reader_kind", "modality", "case_id", "rating", "truth"]

# The iMRMC input format: free header lines, BEGIN DATA:, rows readerID, caseID, modalityID,
# score; truth rows have readerID -1 (or 'truth') and any modalityID. Spaces around fields.
IMRMC = """Pilot study, two readers, two modalities
NR: 2
N0: 2
N1: 1
NM: 2

BEGIN DATA:
-1, c1, 0, 1
-1, c2, 0, 0
truth, c3, truth, 0
r1, c1, A, 4
r1, c2, A, 2
r1 , c3 , A , 1.5
r1, c1, B, 5
r1, c2, B, 1
r1, c3, B, 3
r2, c1, A, 3
r2, c3, A, 3

r2, c1, B, 4
r2, c2, B, 2
r2, c3, B, 1
"""


def expected(rows, study) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["reader", "reader_kind", "modality", "case_id", "rating",
                                        "truth"]).assign(study=study)
    frame["rating"] = frame["rating"].astype("float64")
    frame["truth"] = frame["truth"].astype("Int8")
    return frame.sort_values(["modality", "reader", "case_id"], ignore_index=True)[COLUMNS]


@pytest.fixture
def store(tmp_path):
    store = open_store(tmp_path / "s.duckdb")
    small_cohort(store)  # breasts x/i/L, x/i/R; cancers x/0/L and x/2/L
    return store


def long_table(tmp_path, rows, name="reads.csv") -> str:
    path = tmp_path / name
    pd.DataFrame(rows, columns=["reader", "modality", "case", "rating", "truth"]).to_csv(
        path, index=False)
    return path


LONG = [("r1", "unaided", "x/0/L", 4, 1), ("r1", "unaided", "x/0/R", 2, ""),
        ("r1", "unaided", "x/1/L", 3, 0), ("r1", "aided", "x/0/L", 5, ""),
        ("r1", "aided", "x/0/R", 1, 0), ("r1", "aided", "x/1/L", 2, ""),
        ("r2", "unaided", "x/0/L", 3, ""), ("r2", "unaided", "x/1/L", 3, ""),
        ("r2", "aided", "x/0/R", 2, ""), ("r2", "aided", "x/1/L", 1, "")]


# ---------------------------------------------------------------------------- long tables
def test_long_table_of_store_cases_gives_exactly_its_rows(store, tmp_path):
    report = import_reader_study(store, long_table(tmp_path, LONG), study="s1")
    label = {"x/0/L": 1, "x/0/R": 0, "x/1/L": 0}  # the store's labels (small_cohort)
    pd.testing.assert_frame_equal(store.study_reads("s1"), expected(
        [(r, "radiologist", m, c, v, label[c]) for r, m, c, v, _ in LONG], "s1"))
    study = store.reader_studies().set_index("study").loc["s1"]
    assert (study["level"], study["store_cases"], study["n_cases"]) == ("breast", True, 3)
    assert study["modalities"] == "aided,unaided" and study["n_reads"] == 10
    doc = report.as_dict()
    assert doc["counts"] == {"imported": 1, "skipped": 0, "failed": 0}
    assert doc["design"] == {"n_readers": 2, "n_modalities": 2, "n_cases": 3, "n_reads": 10,
                             "n_missing": 2, "fully_crossed": False}
    missing = {(m["reader"], m["modality"]): m["n_missing"] for m in doc["missing"]}
    assert missing == {("r1", "aided"): 0, ("r1", "unaided"): 0, ("r2", "aided"): 1,
                       ("r2", "unaided"): 1}
    assert store.reads(level="breast").empty  # the clinical reads are untouched


def test_reimport_is_idempotent_and_replaces_its_readers_reads(store, tmp_path):
    path = long_table(tmp_path, LONG)
    import_reader_study(store, path, study="s1")
    counts, frame = store.counts(), store.study_reads("s1")
    import_reader_study(store, path, study="s1")
    assert store.counts() == counts
    pd.testing.assert_frame_equal(store.study_reads("s1"), frame)
    changed = [("r1", "unaided", "x/0/L", 9, "")] + LONG[1:-1]   # r2's last read is gone
    import_reader_study(store, long_table(tmp_path, changed), study="s1")
    after = store.study_reads("s1").set_index(["reader", "modality", "case_id"])["rating"]
    assert after[("r1", "unaided", "x/0/L")] == 9 and len(after) == 9
    assert ("r2", "aided", "x/1/L") not in after.index


def test_own_cases_and_a_single_modality_table(store, tmp_path):
    rows = [("a", None, "case-1", 0.9, 1), ("a", None, "case-2", 0.2, 0),
            ("b", None, "case-1", 0.7, 1), ("b", None, "case-2", 0.4, 0)]
    path = tmp_path / "own.csv"  # no modality column: one condition, named by the caller
    pd.DataFrame(rows, columns=["reader", "modality", "case", "rating", "truth"]).drop(
        columns="modality").to_csv(path, index=False)
    report = import_reader_study(store, path, study="own", modality="unaided", level="image")
    pd.testing.assert_frame_equal(store.study_reads("own"), expected(
        [(r, "radiologist", "unaided", c, v, t) for r, _, c, v, t in rows], "own"))
    study = store.reader_studies().set_index("study").loc["own"]
    assert (study["level"], study["store_cases"]) == ("image", False)
    assert report.design["fully_crossed"]
    with pytest.raises(InputError, match="read at image level on cases of its own"):
        store.study_reads("own", level="exam")


# ---------------------------------------------------------------------------- iMRMC
def test_imrmc_parser_reads_the_documented_format():
    source = parse_imrmc(IMRMC, "pilot.imrmc")
    assert source.truth.to_dict() == {"c1": 1.0, "c2": 0.0, "c3": 0.0}
    assert list(source.reads.itertuples(index=False, name=None)) == [
        ("r1", "A", "c1", 4.0), ("r1", "A", "c2", 2.0), ("r1", "A", "c3", 1.5),
        ("r1", "B", "c1", 5.0), ("r1", "B", "c2", 1.0), ("r1", "B", "c3", 3.0),
        ("r2", "A", "c1", 3.0), ("r2", "A", "c3", 3.0),
        ("r2", "B", "c1", 4.0), ("r2", "B", "c2", 2.0), ("r2", "B", "c3", 1.0)]


def test_imrmc_import_gives_exactly_its_rows(store, tmp_path):
    path = tmp_path / "pilot.imrmc"
    path.write_text(IMRMC)
    report = import_reader_study(store, path, study="pilot")
    truth = {"c1": 1, "c2": 0, "c3": 0}
    pd.testing.assert_frame_equal(store.study_reads("pilot"), expected(
        [(r, "radiologist", m, c, v, truth[c])
         for r, m, c, v in parse_imrmc(IMRMC, "x").reads.itertuples(index=False)], "pilot"))
    assert store.reader_studies().set_index("study").loc["pilot", "store_cases"] == False  # noqa: E712
    assert report.design["n_missing"] == 1
    counts = store.counts()
    import_reader_study(store, path, study="pilot")
    assert store.counts() == counts


# ---------------------------------------------------------------------------- bad input
BAD_LONG = {
    "twice": (LONG + [("r1", "aided", "x/0/L", 3, "")], "read case 'x/0/L' in modality "
              "'aided' twice"),
    "not a number": ([("r1", "unaided", "x/0/L", "high", "")], "non-numeric value 'high'"),
    "contradicts": ([("r1", "unaided", "x/0/L", 3, 0)], "store's label is 1"),
    "unknown": ([("r1", "unaided", "x/0/L", 3, ""), ("r1", "unaided", "x/9/L", 3, "")],
                "1 of 2 case ids are not breast-level cases of the store .first 'x/9/L'"),
    "two truths": ([("r1", "a", "c1", 3, 0), ("r2", "a", "c1", 3, 1)], "truth 0 on some"),
    "no truth": ([("r1", "a", "c1", 3, 1), ("r1", "a", "c2", 3, "")], "case 'c2' has no truth"),
}
BAD_IMRMC = {
    "no begin": (IMRMC.replace("BEGIN DATA:", "DATA"), "no line 'BEGIN DATA:'"),
    "fields": (IMRMC + "r3, c1, A\n", "has 3 field.s."),
    "score": (IMRMC + "r3, c1, A, n/a\n", "has the score 'n/a'"),
    "truth twice": (IMRMC + "-1, c1, 0, 1\n", "case 'c1' has two truth rows"),
    "truth value": (IMRMC.replace("-1, c2, 0, 0", "-1, c2, 0, 2"), "truth rows hold 0"),
    "imrmc without truth": (IMRMC.replace("-1, c2, 0, 0\n", ""), "case 'c2' has no truth"),
    "duplicate": (IMRMC + "r1, c1, A, 2\n", "read case 'c1' in modality 'A' twice .lines"),
}


@pytest.mark.parametrize("name", [*BAD_LONG, *BAD_IMRMC])
def test_bad_input_is_one_line_and_changes_nothing(store, tmp_path, name):
    import_reader_study(store, long_table(tmp_path, LONG, "good.csv"), study="s1")
    counts, frame = store.counts(), store.study_reads("s1")
    if name in BAD_IMRMC:
        text, message = BAD_IMRMC[name]
        path = tmp_path / "bad.imrmc"
        path.write_text(text)
    else:
        rows, message = BAD_LONG[name]
        path = long_table(tmp_path, rows, "bad.csv")
    with pytest.raises(InputError, match=message) as info:
        import_reader_study(store, path, study="s2")
    assert "\n" not in str(info.value)
    assert store.counts() == counts
    pd.testing.assert_frame_equal(store.study_reads("s1"), frame)


# ---------------------------------------------------------------------------- the store's reads
def test_store_reads_with_a_model_as_fixed_reader(store):
    cases = store.cases(level="breast")
    images = store.cases(level="image")
    rng = np.random.default_rng(3)
    store.write_tables({
        "readers": pd.DataFrame([{"reader": "R1", "kind": "radiologist"}]),
        "reads": pd.DataFrame({"reader": "R1", "level": "breast", "case_id": cases["case_id"],
                               "exam_id": cases["exam_id"], "score": rng.random(len(cases))}),
        "models": pd.DataFrame([{"model": "m", "kind": "external"}]),
        "predictions": pd.DataFrame({"model": "m", "level": "image",
                                     "case_id": images["case_id"],
                                     "exam_id": images["exam_id"],
                                     "malignant": rng.random(len(images))})})
    report = import_store_reads(store, study="clinic", level="breast", models=["m"])
    reads = store.reads(level="breast").merge(cases[["case_id", "label"]], on="case_id")
    predictions = store.predictions(models=["m"], level="image")
    side = images.set_index("case_id")["laterality"]
    breast = predictions["exam_id"] + "/" + side[predictions["case_id"]].to_numpy()
    model = predictions.groupby(breast)["score"].max()  # the breast's highest image
    label = cases.set_index("case_id")["label"]
    pd.testing.assert_frame_equal(store.study_reads("clinic"), expected(
        [("R1", "radiologist", "unaided", r.case_id, r.score, r.label) for r in reads.itertuples()]
        + [("m", "model", "unaided", c, s, label[c]) for c, s in model.items()], "clinic"))
    assert report.design == {"n_readers": 2, "n_modalities": 1, "n_cases": 8, "n_reads": 16,
                             "n_missing": 0, "fully_crossed": True}
    # coarser levels: a case's highest rating, the store's label there
    exam = store.study_reads("clinic", level="exam")
    frame = store.study_reads("clinic")
    frame["exam_id"] = frame["case_id"].str.rsplit("/", n=1).str[0]
    by_hand = frame.groupby(["reader", "exam_id"])["rating"].max()
    assert exam.set_index(["reader", "case_id"])["rating"].to_dict() == by_hand.to_dict()
    exam_label = store.cases(level="exam").set_index("case_id")["label"]
    assert (exam["truth"].to_numpy() == exam_label[exam["case_id"]].to_numpy()).all()
    with pytest.raises(InputError, match="level 'image' is not available"):
        store.study_reads("clinic", level="image")
    with pytest.raises(InputError, match="reader study 'nope' does not exist; known: clinic"):
        store.study_reads("nope")


# ---------------------------------------------------------------------------- migration
def test_v4_store_gains_the_study_tables(store, tmp_path):
    """v4 -> v5 adds the study tables; later migrations carry the store to the current version."""
    store.checkpoint()
    cases = store.cases(level="breast")
    con = duckdb.connect(str(store.path))
    for table in reversed(STUDY_TABLES):
        con.execute(f"DROP TABLE {table}")
    con.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    con.close()
    read_only = open_store(store.path, read_only=True)  # the report commands migrate too
    assert read_only.schema_version() == SCHEMA_VERSION and read_only.reader_studies().empty
    migrated = open_store(store.path)
    assert {t: migrated.counts()[t] for t in STUDY_TABLES} == dict.fromkeys(STUDY_TABLES, 0)
    pd.testing.assert_frame_equal(migrated.cases(level="breast"), cases)
    assert list(migrated.select("study_reads").columns) == [
        "study", "reader", "modality", "case_id", "rating"]


# ---------------------------------------------------------------------------- CLI and demo
def test_cli_imports_a_study_and_refuses_bad_input_in_one_line(store, tmp_path, capsys):
    path = tmp_path / "pilot.imrmc"
    path.write_text(IMRMC)
    assert main(["import", "reader-study", str(path), "--study", "pilot", "--db",
                 str(store.path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["study"] == "pilot" and doc["design"]["n_reads"] == 11
    path.write_text(IMRMC + "r1, c1, A, 2\n")
    counts = store.counts()
    assert main(["import", "reader-study", str(path), "--study", "pilot", "--db",
                 str(store.path), "--json"]) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert captured.out == "" and len(errors) == 1 and "twice" in errors[0]
    assert store.counts() == counts


def test_demo_reader_study_aided_readers_beat_unaided(demo_store_path):
    store = open_store(demo_store_path, read_only=True)
    study = store.reader_studies().set_index("study").loc[DEMO_STUDY]
    assert study["synthetic"] and study["level"] == "breast"
    reads = store.study_reads(DEMO_STUDY)
    cases = store.cases(level="breast", test_set="test-all")
    assert set(reads["modality"]) == {"unaided", "aided-by-gmic-demo"}
    assert reads["reader"].nunique() == 5 and len(reads) == 5 * 2 * len(cases)
    assert set(reads["case_id"]) == set(cases["case_id"])
    truth = cases.set_index("case_id")["label"]
    assert (reads["truth"].to_numpy() == truth[reads["case_id"]].to_numpy()).all()
    auc = {(m, r): roc_auc(g["truth"].astype(int), g["rating"])
           for (m, r), g in reads.groupby(["modality", "reader"])}
    aided = np.mean([v for (m, _), v in auc.items() if m != "unaided"])
    unaided = np.mean([v for (m, _), v in auc.items() if m == "unaided"])
    assert aided > unaided, (aided, unaided)
