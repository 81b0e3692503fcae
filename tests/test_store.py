"""The store: schema versions, atomic writes, busy handling, concurrency, test-set rules."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

import core.store as store_module
from core.errors import InputError, StoreBusy, StoreVersionError
from core.store import dataset_delete_plan, open_store, write_result


def small_cohort(store, dataset="x", n=4):
    exams = pd.DataFrame({"exam_id": [f"{dataset}/{i}" for i in range(n)], "dataset": dataset,
                          "exam_key": [str(i) for i in range(n)],
                          "split": ["test"] * (n - 1) + ["train"]})
    breasts = pd.DataFrame([
        {"exam_id": f"{dataset}/{i}", "laterality": side,
         "cancer": int(side == "L" and i % 2 == 0),
         "histology": ("ILC" if i == 0 else "IDC") if side == "L" and i % 2 == 0 else "none",
         "presentation": "architectural distortion" if (i == 0 and side == "L") else None}
        for i in range(n) for side in "LR"])
    images = pd.DataFrame([
        {"image_id": f"{dataset}/{i}/{side}-{view}", "exam_id": f"{dataset}/{i}",
         "dataset": dataset, "image_key": f"{i}_{side}_{view}", "laterality": side,
         "laterality_source": "synthetic", "view": view}
        for i in range(n) for side in "LR" for view in ("CC", "MLO")])
    store.write_tables({
        "datasets": pd.DataFrame([{"dataset": dataset, "kind": "synthetic", "root": "/tmp"}]),
        "exams": exams, "breasts": breasts, "images": images})
    store.refresh_testsets()


def test_new_store_has_schema_and_default_path(tmp_path, monkeypatch):
    monkeypatch.setenv("ILCSCOPE_DB", str(tmp_path / "env.duckdb"))
    store = open_store()
    assert store.path == tmp_path / "env.duckdb"
    assert store.schema_version() == store_module.SCHEMA_VERSION
    assert set(store.counts().values()) == {0}


def test_newer_store_is_refused(tmp_path):
    path = tmp_path / "s.duckdb"
    open_store(path)
    con = duckdb.connect(str(path))
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(StoreVersionError, match="newer than this ILCscope"):
        open_store(path)
    with pytest.raises(StoreVersionError):
        open_store(path, read_only=True)


def test_older_store_is_migrated(tmp_path, monkeypatch):
    path = tmp_path / "s.duckdb"
    open_store(path)
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(store_module, "MIGRATIONS", {1: "ALTER TABLE exams ADD COLUMN site VARCHAR"})
    store = open_store(path)
    assert store.schema_version() == 2
    assert "site" in store.exams().columns


def test_upsert_is_idempotent_and_updates(tmp_path):
    store = open_store(tmp_path / "s.duckdb")
    small_cohort(store)
    before = store.counts()
    small_cohort(store)
    assert store.counts() == before
    store.write_tables({"exams": pd.DataFrame({"exam_id": ["x/0"], "dataset": "x",
                                               "exam_key": "0", "split": "val"})})
    assert store.exams().set_index("exam_id").loc["x/0", "split"] == "val"
    assert store.counts()["exams"] == before["exams"]


def test_failed_write_changes_nothing(tmp_path):
    store = open_store(tmp_path / "s.duckdb")
    small_cohort(store)
    before = store.counts()
    bad = pd.DataFrame({"exam_id": ["x/9", "x/10"], "dataset": "x",
                        "exam_key": ["9", None]})  # exam_key is NOT NULL: second row fails
    with pytest.raises(duckdb.Error):
        store.write_tables({"exams": bad, "datasets": pd.DataFrame(
            [{"dataset": "y", "kind": "imported"}])})
    assert store.counts() == before


def test_read_only_store_refuses_writes(tmp_path):
    path = tmp_path / "s.duckdb"
    small_cohort(open_store(path))
    ro = open_store(path, read_only=True)
    assert len(ro.exams()) == 4
    with pytest.raises(InputError, match="read-only"):
        ro.write_tables({"datasets": pd.DataFrame([{"dataset": "z", "kind": "imported"}])})
    with pytest.raises(InputError, match="read-only"):
        ro.create_testset("t", "")


def test_busy_store_fails_cleanly_after_bounded_retry(tmp_path):
    path = tmp_path / "s.duckdb"
    open_store(path)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, sys, time
            con = duckdb.connect({str(path)!r})
            print('held', flush=True)
            sys.stdin.readline()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        store = store_module.Store(path=path, busy_timeout_s=0.3)
        with pytest.raises(StoreBusy, match="store is busy"):
            store.counts()
    finally:
        holder.communicate("go\n", timeout=10)


WRITER = """
import sys
import pandas as pd
from core.store import open_store
path, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = open_store(path, busy_timeout_s=300)
for i in range(n):
    store.write_tables({"exams": pd.DataFrame({
        "exam_id": [f"{prefix}/{i}"], "dataset": "w", "exam_key": [f"{prefix}{i}"]})})
"""
READER = """
import json, sys
from pathlib import Path
from core.store import Store
store = Store(path=Path(sys.argv[1]), busy_timeout_s=300)
print(json.dumps([len(store.exams()) for _ in range(int(sys.argv[2]))]))
"""


def test_two_writers_and_a_reader_lose_no_rows(tmp_path):
    # Plain subprocesses (not multiprocessing): a spawned child re-imports the parent's
    # __main__, which AppTest replaces with app.py earlier in a full test run.
    path = str(tmp_path / "s.duckdb")
    open_store(path)
    repo = Path(__file__).resolve().parents[1]
    run = [sys.executable, "-c"]
    procs = [subprocess.Popen(run + [WRITER, path, "a", "15"], cwd=repo),
             subprocess.Popen(run + [WRITER, path, "b", "15"], cwd=repo),
             subprocess.Popen(run + [READER, path, "15"], cwd=repo, stdout=subprocess.PIPE,
                              text=True)]
    out, _ = procs[2].communicate(timeout=600)
    for p in procs:
        assert p.wait(timeout=600) == 0
    seen = json.loads(out)
    assert len(open_store(path).exams()) == 30
    assert seen == sorted(seen)  # the reader only ever sees committed, growing counts


def test_testset_rules_select_the_right_exams(tmp_path):
    store = open_store(tmp_path / "s.duckdb")
    small_cohort(store)
    # x/0 ILC (test), x/1 healthy (test), x/2 IDC (test), x/3 healthy (train)
    assert store.create_testset("ilc", "split=test histology=ILC,none") == 2
    assert set(store.exams(test_set="ilc")["exam_id"]) == {"x/0", "x/1"}
    assert store.create_testset("cancers", "cancer=1") == 2
    assert store.create_testset("ad", "presentation=architectural-distortion") == 1
    assert store.create_testset("all", "") == 4
    assert "x" in store.testset_names()  # each dataset has its own set
    with pytest.raises(InputError, match="not field=value"):
        store.create_testset("bad", "split")
    with pytest.raises(InputError, match="does not exist"):
        store.exams(test_set="nope")


def test_cases_labels_per_level(tmp_path):
    store = open_store(tmp_path / "s.duckdb")
    small_cohort(store)
    image = store.cases(level="image")
    breast = store.cases(level="breast")
    exam = store.cases(level="exam")
    assert (len(image), len(breast), len(exam)) == (16, 8, 4)
    assert image.set_index("case_id").loc["x/0/L-CC", "label"] == 1
    assert image.set_index("case_id").loc["x/0/R-CC", "label"] == 0
    assert breast.set_index("case_id").loc["x/2/L", "histology"] == "IDC"
    ex = exam.set_index("case_id")
    assert ex.loc["x/0", "label"] == 1 and ex.loc["x/0", "histology"] == "ILC"
    assert ex.loc["x/1", "label"] == 0 and ex.loc["x/1", "histology"] == "none"


def test_annotations_keep_every_version(tmp_path):
    store = open_store(tmp_path / "s.duckdb")
    small_cohort(store)
    a = np.zeros((20, 10), bool)
    a[2:5, 2:5] = True
    b = np.zeros((20, 10), bool)
    b[10:15, 1:9] = True
    assert store.add_annotation("x/0/L-CC", a, source="drawn", author="r1") == 1
    assert store.add_annotation("x/0/L-CC", b, source="drawn", author="r1") == 2
    rows = store.annotations("x/0/L-CC")
    assert rows["version"].tolist() == [1, 2]
    assert np.array_equal(store.load_mask(rows["mask_path"][0]), a)
    assert np.array_equal(store.load_mask(rows["mask_path"][1]), b)
    latest = store.latest_annotations()
    assert latest["version"].tolist() == [2]
    with pytest.raises(InputError, match="empty"):
        store.add_annotation("x/0/L-CC", np.zeros((4, 4), bool), source="drawn")
    with pytest.raises(InputError, match="not in the store"):
        store.add_annotation("x/nope", a, source="drawn")


def test_ingest_result_folder_is_atomic(tmp_path):
    store = open_store(tmp_path / "s.duckdb")
    small_cohort(store)
    cases = store.cases(level="image")
    preds = pd.DataFrame({"model": "m", "level": "image", "case_id": cases["case_id"],
                          "exam_id": cases["exam_id"], "laterality": cases["laterality"],
                          "image_id": cases["image_id"], "malignant": np.linspace(0, 1, 16)})
    models = pd.DataFrame([{"model": "m", "kind": "external"}])
    write_result(tmp_path / "run1", {"models": models, "predictions": preds})
    assert store.ingest(tmp_path / "run1") == {"models": 1, "predictions": 16}
    assert len(store.predictions(models=["m"], level="image")) == 16
    # a result whose second table breaks (NULL score) leaves the store as it was
    bad = preds.assign(model="m2", malignant=[None] + [0.5] * 15)
    write_result(tmp_path / "run2", {"models": models.assign(model="m2"), "predictions": bad})
    before = store.counts()
    with pytest.raises(duckdb.Error):
        store.ingest(tmp_path / "run2")
    assert store.counts() == before
    with pytest.raises(InputError, match="result.json"):
        store.ingest(tmp_path)


def test_dataset_delete_plan_removes_everything(tmp_path):
    store = open_store(tmp_path / "s.duckdb")
    small_cohort(store, "x")
    small_cohort(store, "y")
    store.write_tables({}, delete=dataset_delete_plan("x"))
    counts = store.counts()
    assert counts["exams"] == 4 and counts["images"] == 16 and counts["breasts"] == 8
    assert store.dataset_names() == ["y"]


def test_pseudonym_is_stable_salted_and_not_the_id(tmp_path):
    a = open_store(tmp_path / "a.duckdb")
    b = open_store(tmp_path / "b.duckdb")
    assert a.pseudonym("1234567") == a.pseudonym("1234567")
    assert a.pseudonym("1234567") != b.pseudonym("1234567")
    assert "1234567" not in a.pseudonym("1234567")
