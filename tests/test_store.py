"""The store: schema versions, atomic writes, busy handling, concurrency, test-set rules."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

import core.store.opening as store_module
from core.errors import InputError, StoreBusy, StoreVersionError
from core.store import Store, dataset_delete_plan, open_store, write_result
from core.store.schema import STUDY_TABLES


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
    version = store_module.SCHEMA_VERSION
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", version + 1)
    monkeypatch.setattr(store_module, "MIGRATIONS",
                        {version: "ALTER TABLE exams ADD COLUMN site VARCHAR"})
    store = open_store(path)
    assert store.schema_version() == version + 1
    assert "site" in store.exams().columns


def _downgrade_to_v1(path):
    """Turn a current file back into what ILCscope's schema v1 wrote (no hashes, test-set ids,
    cases or runs table)."""
    con = duckdb.connect(str(path))
    con.execute("DROP TABLE cases")
    con.execute("DROP TABLE runs")  # v3
    for table in reversed(STUDY_TABLES):  # v5
        con.execute(f"DROP TABLE {table}")
    for table, columns in (("predictions", "case_hash"), ("density", "exam_hash"),
                           ("testset_exams", "exam_hash"), ("testsets", "id")):
        frame = con.execute(f"SELECT * EXCLUDE ({columns}) FROM {table}").df()
        con.execute(f"DELETE FROM {table}")
        for column in columns.split(", "):
            con.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        con.execute(f"INSERT INTO {table} SELECT * FROM frame")
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.close()


def test_v1_store_migrates_to_integer_keys_and_cases(tmp_path):
    path = tmp_path / "s.duckdb"
    store = open_store(path)
    small_cohort(store)
    cases = store.cases(level="image")
    store.write_tables({
        "models": pd.DataFrame([{"model": "m", "kind": "external"}]),
        "predictions": pd.DataFrame({"model": "m", "level": "image", "case_id": cases["case_id"],
                                     "exam_id": cases["exam_id"], "malignant": np.arange(16.0)}),
        "density": pd.DataFrame({"source": "label", "level": "exam", "case_id": ["x/0", "x/1"],
                                 "exam_id": ["x/0", "x/1"], "category": [3, 1]})})
    store.create_testset("ilc", "histology=ILC,none density=3,1")
    expected = {level: store.scores(models=["m"], level=level, test_set="ilc")
                for level in ("image", "breast", "exam")}
    summary = store.summary(test_set="ilc")
    _downgrade_to_v1(path)
    assert store.schema_version() == 1
    migrated = open_store(path)
    assert migrated.schema_version() == store_module.SCHEMA_VERSION
    for level, frame in expected.items():
        pd.testing.assert_frame_equal(migrated.scores(models=["m"], level=level, test_set="ilc"),
                                      frame)
    for name, frame in migrated.summary(test_set="ilc").items():
        pd.testing.assert_frame_equal(frame, summary[name])
    assert migrated.create_testset("ilc", "histology=ILC,none density=3,1") == 2
    # a read-only open (the report commands) migrates an older file too
    _downgrade_to_v1(path)
    read_only = open_store(path, read_only=True)
    assert read_only.schema_version() == store_module.SCHEMA_VERSION
    pd.testing.assert_frame_equal(read_only.scores(models=["m"], level="image", test_set="ilc"),
                                  expected["image"])


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
        store = Store(path=path, busy_timeout_s=0.3)
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
    a = open_store(tmp_path / "a.duckdb", key_file=tmp_path / "a.key")  # two keys
    b = open_store(tmp_path / "b.duckdb", key_file=tmp_path / "b.key")
    assert a.pseudonym("1234567") == a.pseudonym("1234567")
    assert a.pseudonym("1234567") != b.pseudonym("1234567")
    assert "1234567" not in a.pseudonym("1234567")


def test_hash_keys_are_md5_and_do_not_depend_on_duckdb(tmp_path):
    # Stored keys must never change under a DuckDB upgrade: check them against Python's md5.
    from core.store.schema import case_hash_sql, exam_hash_sql
    con = duckdb.connect()
    for text in ("x/0", "demo/E000123/L-CC", "mias/mdb001", "é/ü"):
        case = con.execute(f"SELECT {case_hash_sql('?', '?')}", ["image", text]).fetchall()[0][0]
        exam = con.execute(f"SELECT {exam_hash_sql('?')}", [text]).fetchall()[0][0]
        assert case == _md5_64(f"image:{text}")
        assert exam == _md5_64(text)


def _md5_64(text: str) -> int:
    import hashlib
    return int.from_bytes(hashlib.md5(text.encode()).digest()[8:], "little")


def _random_cohort(store, rng, n=40):
    """Exams over two datasets with random truth, partial predictions and density labels."""
    exams = pd.DataFrame({"exam_id": [f"d{i % 2}/{i:03d}" for i in range(n)],
                          "dataset": [f"d{i % 2}" for i in range(n)],
                          "exam_key": [str(i) for i in range(n)],
                          "split": rng.choice(["train", "test"], n)})
    breasts = pd.DataFrame([
        {"exam_id": e, "laterality": side, "cancer": int(c),
         "histology": rng.choice(["ILC", "IDC", "other"]) if c else rng.choice(["none", "unknown"])}
        for e in exams["exam_id"] for side, c in zip("LR", rng.random(2) < 0.3)])
    images = pd.DataFrame([
        {"image_id": f"{e}/{side}-{view}", "exam_id": e, "dataset": e.split("/")[0],
         "image_key": f"{e}{side}{view}", "laterality": side, "laterality_source": "synthetic",
         "view": view}
        for e in exams["exam_id"] for side in "LR" for view in ("CC", "MLO")
        if rng.random() < 0.9])  # some views missing
    preds = []
    for model in ("m1", "m2"):
        for level, ids in (("image", images["image_id"]),
                           ("breast", breasts["exam_id"] + "/" + breasts["laterality"])):
            keep = rng.random(len(ids)) < 0.8  # some cases unscored
            preds.append(pd.DataFrame({
                "model": model, "level": level, "case_id": ids[keep].to_numpy(),
                "exam_id": [i.rsplit("/", 1)[0] for i in ids[keep]],
                "malignant": rng.random(keep.sum()),
                "benign": np.where(rng.random(keep.sum()) < 0.5, np.nan, rng.random(keep.sum()))}))
    dens = exams.sample(frac=0.7, random_state=1)
    store.write_tables({
        "datasets": pd.DataFrame({"dataset": ["d0", "d1"], "kind": "synthetic"}),
        "exams": exams, "breasts": breasts, "images": images,
        "models": pd.DataFrame({"model": ["m1", "m2"], "kind": "external"}),
        "predictions": pd.concat(preds, ignore_index=True),
        "density": pd.concat([pd.DataFrame({
            "source": source, "level": "exam", "case_id": d["exam_id"], "exam_id": d["exam_id"],
            "category": rng.integers(0, 4, len(d))})
            for source, d in (("label", dens), ("classical", exams.sample(frac=0.5)))])})
    store.refresh_testsets()
    store.create_testset("mixed", "split=test histology=ILC,none")


def _brute_force_scores(store, models, level, test_set, density_source):
    """The scores frame from the base tables with pandas merges (no cases table, no hashes)."""
    exams, images = store.select("exams"), store.select("images")
    breasts, preds = store.select("breasts"), store.select("predictions")
    members = store.select("testset_exams", name=test_set)["exam_id"]
    dens = store.select("density", level="exam", source=density_source)
    dens = dens[["exam_id", "category"]]
    if level == "image":
        truth = images.merge(breasts, on=["exam_id", "laterality"]).assign(
            case_id=lambda f: f["image_id"], label=lambda f: f["cancer"])
    elif level == "breast":
        truth = breasts.assign(case_id=breasts["exam_id"] + "/" + breasts["laterality"],
                               image_id=None, label=breasts["cancer"])
    else:
        rank = {"ILC": 4, "IDC": 3, "other": 2, "unknown": 1, "none": 0}
        hist = breasts.assign(r=breasts["histology"].map(rank)).groupby("exam_id").agg(
            label=("cancer", "max"), r=("r", "max"),
            all_none=("histology", lambda h: (h == "none").all())).reset_index()
        names = {v: k for k, v in rank.items()}
        hist["histology"] = [("none" if n else "unknown") if r < 2 else names[r]
                             for r, n in zip(hist["r"], hist["all_none"])]
        truth = hist.assign(case_id=hist["exam_id"], laterality=None, image_id=None)
    truth = truth[truth["exam_id"].isin(members)].merge(
        exams[["exam_id"]], on="exam_id").merge(dens, on="exam_id", how="left")
    rows = []
    for model in models:
        p = preds[(preds["model"] == model) & (preds["level"] == level)]
        rows.append(truth.merge(p[["case_id", "malignant", "benign"]], on="case_id", how="left")
                    .assign(model=model).sort_values("case_id"))
    out = pd.concat(rows, ignore_index=True)
    return out.rename(columns={"malignant": "score", "category": "density"})


@pytest.mark.parametrize("level", ["image", "breast", "exam"])
def test_scores_equal_a_brute_force_join_of_the_base_tables(tmp_path, level):
    store = open_store(tmp_path / "s.duckdb")
    _random_cohort(store, np.random.default_rng(3))
    for test_set, source in (("mixed", "label"), ("d1", "label"), ("mixed", "classical")):
        ours = store.scores(models=["m2", "m1"], level=level, test_set=test_set,
                            density_source=source)
        ref = _brute_force_scores(store, ["m2", "m1"], level, test_set, source)
        assert len(ours) == len(ref) > 0
        for column in ("model", "case_id", "exam_id", "laterality", "image_id", "histology"):
            assert ours[column].astype(object).where(ours[column].notna(), None).tolist() == \
                ref[column].astype(object).where(ref[column].notna(), None).tolist(), column
        for column in ("label", "density", "score", "benign"):
            np.testing.assert_array_equal(ours[column].astype(float).to_numpy(),
                                          ref[column].astype(float).to_numpy(), err_msg=column)
        cases = store.cases(level=level, test_set=test_set, density_source=source)
        assert cases["case_id"].tolist() == sorted(ref["case_id"].unique())
        np.testing.assert_array_equal(cases["density"].astype(float).to_numpy(),
                                      ref[ref["model"] == "m2"]["density"].astype(float))


def test_cached_truth_follows_every_write(tmp_path):
    path = tmp_path / "s.duckdb"
    store = open_store(path)
    small_cohort(store)
    before = store.scores(models=[], level="breast", test_set="x")
    assert store.cases(level="breast").set_index("case_id").loc["x/1/L", "label"] == 0
    # another handle in this process, then another process, changes the truth
    open_store(path).write_tables({"breasts": pd.DataFrame(
        [{"exam_id": "x/1", "laterality": "L", "cancer": 1, "histology": "ILC"}])})
    assert store.cases(level="breast").set_index("case_id").loc["x/1/L", "label"] == 1
    repo = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import pandas as pd
        from core.store import open_store
        open_store({str(path)!r}).write_tables({{"breasts": pd.DataFrame(
            [{{"exam_id": "x/1", "laterality": "L", "cancer": 0, "histology": "none"}}])}})
        """)], cwd=repo, check=True)
    assert store.cases(level="breast").set_index("case_id").loc["x/1/L", "label"] == 0
    # density and predictions: the truth's density follows, scores are never cached
    store.write_tables({"density": pd.DataFrame([{"source": "label", "level": "exam",
                                                  "case_id": "x/1", "exam_id": "x/1",
                                                  "category": 2}])})
    assert store.cases(level="exam").set_index("case_id").loc["x/1", "density"] == 2
    for value in (0.25, 0.75):
        store.write_tables({"predictions": pd.DataFrame([{
            "model": "m", "level": "exam", "case_id": "x/1", "exam_id": "x/1",
            "malignant": value}])})
        scores = store.scores(models=["m"], level="exam").set_index("case_id")
        assert scores.loc["x/1", "score"] == value and np.isnan(scores.loc["x/0", "score"])
    store.delete_testset("x")
    with pytest.raises(InputError, match="does not exist"):
        store.cases(test_set="x")
    assert before.empty and list(before.columns) == list(store.scores(
        models=["nope"], level="breast").columns)


def test_one_engine_per_process_shares_and_releases_the_file(tmp_path):
    path = tmp_path / "s.duckdb"
    small_cohort(open_store(path))
    reader = open_store(path, read_only=True)
    writer = Store(path=path, busy_timeout_s=0.3)
    with reader.connection():
        # another read-only handle shares the attachment; a writable one waits for it
        assert len(Store(path=path, read_only=True).exams()) == 4
        with pytest.raises(StoreBusy, match="store is busy"):
            writer.write_tables({"exams": pd.DataFrame({
                "exam_id": ["x/9"], "dataset": "x", "exam_key": ["9"]})})
    writer.write_tables({"exams": pd.DataFrame({"exam_id": ["x/9"], "dataset": "x",
                                                "exam_key": ["9"]})})
    assert len(reader.exams()) == 5
    # a forked child (the filter batch's pool forks) opens the file through an engine of
    # its own, the parent's being unusable after a fork
    pid = os.fork()
    if pid == 0:
        code = 0 if len(Store(path=path, busy_timeout_s=30).exams()) == 5 else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
