"""The store alone speaks SQL: structured selects and deletes, and result folders that hold no SQL.

Every select and delete is compared with a brute-force pandas filter of the whole table; every
refusal is one `InputError` line and leaves every table as it was.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from core.errors import InputError
from core.store import dataset_delete_plan, open_store, write_result
from core.store.schema import PRIMARY_KEYS, STUDY_TABLES, TABLE_COLUMNS

INJECTION = "exam_id = '' OR 1=1 --"


def _cohort(dataset: str, n: int) -> dict[str, pd.DataFrame]:
    exam_ids = [f"{dataset}/{i}" for i in range(n)]
    exams = pd.DataFrame({"exam_id": exam_ids, "dataset": dataset,
                          "exam_key": [str(i) for i in range(n)],
                          "split": [("test", "train", None)[i % 3] for i in range(n)]})
    breasts = pd.DataFrame([{"exam_id": e, "laterality": s, "cancer": int(s == "L" and i % 2 == 0),
                             "histology": "ILC" if s == "L" and i % 2 == 0 else "none"}
                            for i, e in enumerate(exam_ids) for s in "LR"])
    images = pd.DataFrame([{"image_id": f"{e}/{s}-{v}", "exam_id": e, "dataset": dataset,
                            "image_key": f"{e}{s}{v}", "laterality": s,
                            "laterality_source": "synthetic", "view": v,
                            "path": None if (i + len(v)) % 3 == 0 else f"{e}/{s}-{v}.png"}
                           for i, e in enumerate(exam_ids) for s in "LR" for v in ("CC", "MLO")])
    image_ids = images["image_id"]
    predictions = pd.concat([pd.DataFrame({
        "model": model, "level": "image", "case_id": image_ids, "exam_id": images["exam_id"],
        "laterality": images["laterality"], "image_id": image_ids,
        "malignant": np.linspace(0, 1, len(images)) * k}) for k, model in enumerate(["m1", "m2"])])
    reads = pd.DataFrame({"reader": "r1", "level": "exam", "case_id": exam_ids,
                          "exam_id": exam_ids, "score": np.arange(n, dtype=float)})
    density = pd.DataFrame({"source": "label", "level": "exam", "case_id": exam_ids,
                            "exam_id": exam_ids, "category": [i % 4 for i in range(n)]})
    lesions = pd.DataFrame({"lesion_id": [f"{i}-l" for i in image_ids[::4]],
                            "image_id": image_ids[::4], "exam_id": images["exam_id"][::4],
                            "laterality": images["laterality"][::4]})
    annotations = pd.DataFrame({"image_id": np.repeat(image_ids[::3].to_numpy(), 2),
                                "version": np.tile([1, 2], len(image_ids[::3])),
                                "source": "drawn", "mask_path": "masks/x.png"})
    filters = pd.DataFrame({"image_id": image_ids[::2], "method": "M1", "params_hash": "h",
                            "annotation_version": 1, "healthy_region": "ring", "auc": 0.5})
    return {"datasets": pd.DataFrame([{"dataset": dataset, "kind": "synthetic"}]),
            "exams": exams, "breasts": breasts, "images": images, "lesions": lesions,
            "reads": reads, "density": density, "predictions": predictions,
            "annotations": annotations, "filter_results": filters}


@pytest.fixture
def store(tmp_path):
    store = open_store(tmp_path / "s.duckdb")
    store.write_tables({"readers": pd.DataFrame([{"reader": "r1", "kind": "radiologist"}]),
                        "models": pd.DataFrame({"model": ["m1", "m2"], "kind": "external"})})
    store.write_tables(_cohort("x", 5))
    store.write_tables(_cohort("y", 4))
    store.refresh_testsets()
    return store


def full(store, table: str) -> pd.DataFrame:
    """The whole table, read without the code under test."""
    return store._df(f"SELECT {', '.join(TABLE_COLUMNS[table])} FROM {table}")


def in_dataset(store, table: str, dataset) -> pd.Series:
    """Rows of ``table`` on ``dataset`` (a name or a list), by pandas joins on the whole tables."""
    frame = full(store, table)
    names = dataset if isinstance(dataset, list) else [dataset]
    if "dataset" in frame:
        return frame["dataset"].isin(names)
    parent = "exam_id" if "exam_id" in frame else "image_id"
    owners = full(store, "exams" if parent == "exam_id" else "images")
    return frame[parent].isin(owners.loc[owners["dataset"].isin(names), parent])


def same_rows(actual: pd.DataFrame, expected: pd.DataFrame, table: str) -> None:
    """The same rows, whatever their order and however pandas typed an all-NULL column."""
    def norm(frame):
        frame = frame.sort_values(list(PRIMARY_KEYS[table]), ignore_index=True).astype(object)
        return frame.where(frame.notna(), None)
    assert list(actual.columns) == list(TABLE_COLUMNS[table])
    pd.testing.assert_frame_equal(norm(actual), norm(expected[list(TABLE_COLUMNS[table])]))


def snapshot(store) -> dict[str, pd.DataFrame]:
    return {t: full(store, t).sort_values(list(PRIMARY_KEYS[t]), ignore_index=True)
            for t in TABLE_COLUMNS}


def assert_unchanged(store, before: dict[str, pd.DataFrame]) -> None:
    after = snapshot(store)
    for table, frame in before.items():
        pd.testing.assert_frame_equal(after[table], frame)


# ---------------------------------------------------------------------------- selects
@pytest.mark.parametrize("table, equals, keep", [
    ("images", {"view": "CC"}, lambda f: f["view"] == "CC"),
    ("images", {"view": "CC", "laterality": "L"},
     lambda f: (f["view"] == "CC") & (f["laterality"] == "L")),
    ("exams", {"exam_id": ["x/0", "y/2", "nope"]}, lambda f: f["exam_id"].isin(["x/0", "y/2"])),
    ("annotations", {"version": [2]}, lambda f: f["version"] == 2),
    ("exams", {"split": None}, lambda f: f["split"].isna()),
    ("images", {"path": None, "view": "MLO"}, lambda f: f["path"].isna() & (f["view"] == "MLO")),
    ("exams", {"split": ["test", None]}, lambda f: f["split"].isna() | (f["split"] == "test")),
    ("predictions", {"model": "m2", "laterality": "R"},
     lambda f: (f["model"] == "m2") & (f["laterality"] == "R")),
    ("exams", {"exam_id": "x/0' OR '1'='1"}, lambda f: f["exam_id"] == "x/0' OR '1'='1"),
    ("exams", {}, lambda f: f["exam_id"].notna()),
])
def test_select_matches_a_pandas_filter(store, table, equals, keep):
    frame = full(store, table)
    same_rows(store.select(table, **equals), frame[keep(frame)], table)


@pytest.mark.parametrize("table", ["exams", "images", "predictions", "reads", "density",
                                   "lesions", "breasts", "testset_exams", "annotations",
                                   "filter_results"])
@pytest.mark.parametrize("dataset", ["y", ["x", "y"], "nope"])
def test_select_by_dataset_through_exams_and_images(store, table, dataset):
    frame = full(store, table)
    expected = frame[in_dataset(store, table, dataset)]
    same_rows(store.select(table, dataset=dataset), expected, table)
    if dataset == "y":
        assert 0 < len(expected) < len(frame)


@pytest.mark.parametrize("table, equals, message", [
    ("nope", {}, "unknown table 'nope'"),
    ("exams; DROP TABLE exams", {}, "unknown table"),
    ("exams", {"site": "a"}, "no column 'site'"),
    ("exams", {INJECTION: "x"}, "no column"),
    ("models", {"dataset": "x"}, "no dataset, exam_id or image_id"),
])
def test_select_refuses_unknown_names(store, table, equals, message):
    before = snapshot(store)
    with pytest.raises(InputError, match=message) as info:
        store.select(table, **equals)
    assert "\n" not in str(info.value)
    assert_unchanged(store, before)


# ---------------------------------------------------------------------------- deletes
@pytest.mark.parametrize("table, match, hit", [
    ("predictions", {"model": "m1"}, lambda f: f["model"] == "m1"),
    ("images", {"image_id": ["x/0/L-CC", "y/3/R-MLO", "nope"]},
     lambda f: f["image_id"].isin(["x/0/L-CC", "y/3/R-MLO"])),
    ("annotations", {"version": [1], "image_id": ["x/0/L-CC", "x/1/L-CC"]},
     lambda f: (f["version"] == 1) & f["image_id"].isin(["x/0/L-CC", "x/1/L-CC"])),
    ("exams", {"split": None}, lambda f: f["split"].isna()),
])
def test_structured_delete_removes_what_pandas_says(store, table, match, hit):
    before = snapshot(store)
    frame = before[table]
    assert hit(frame).any() and not hit(frame).all()
    store.write_tables({}, delete=[{"table": table, "match": match}])
    same_rows(full(store, table), frame[~hit(frame)], table)
    gone = frame[hit(frame)]["exam_id"] if table == "exams" else []
    for other, rows in before.items():
        if other == "testset_exams":  # derived: a deleted exam leaves its test sets
            rows = rows[~rows["exam_id"].isin(gone)].reset_index(drop=True)
        if other != table:
            pd.testing.assert_frame_equal(snapshot(store)[other], rows)


@pytest.mark.parametrize("table", ["predictions", "reads", "annotations", "filter_results",
                                   "images"])
def test_structured_delete_by_dataset(store, table):
    frame = full(store, table)
    on_x = in_dataset(store, table, "x")
    store.write_tables({}, delete=[{"table": table, "match": {"dataset": "x"}}])
    same_rows(full(store, table), frame[~on_x], table)


@pytest.mark.parametrize("bad", [
    {"table": "predictions", "where": "model = ?", "params": ["m1"]},
    {"table": "predictions", "match": {"model": "m1"}, "where": "TRUE"},
    {"table": "predictions", "match": {}},
    {"table": "predictions"},
    {"table": "predictions", "match": "model = 'm1'"},
    "DELETE FROM predictions",
    ["predictions", "model = ?", ["m1"]],
    {"table": "nope", "match": {"model": "m1"}},
    {"table": "predictions", "match": {INJECTION: "m1"}},
    {"table": "predictions; DROP TABLE exams", "match": {"model": "m1"}},
])
def test_bad_delete_is_refused_and_nothing_changes(store, bad):
    before = snapshot(store)
    good = {"table": "predictions", "match": {"model": "m2"}}
    with pytest.raises(InputError) as info:
        store.write_tables({"models": pd.DataFrame([{"model": "m3", "kind": "external"}])},
                           delete=[good, bad])
    assert "\n" not in str(info.value)
    assert_unchanged(store, before)


def test_dataset_delete_plan_leaves_no_row_of_the_dataset(store):
    before = snapshot(store)
    store.write_tables({}, delete=dataset_delete_plan("x"))
    for table in TABLE_COLUMNS:
        frame = before[table]
        if table in ("readers", "models", "testsets", "runs", "train_epochs", *STUDY_TABLES):   # no dataset
            continue
        expected = frame[~in_dataset_frame(before, table, "x")]
        assert not in_dataset_frame(snapshot(store), table, "x").any(), table
        same_rows(full(store, table), expected, table)


def in_dataset_frame(tables: dict[str, pd.DataFrame], table: str, dataset: str) -> pd.Series:
    """Like `in_dataset`, on a snapshot (so rows whose parent is gone are found too)."""
    frame = tables[table]
    if "dataset" in frame:
        return frame["dataset"] == dataset
    parent = "exam_id" if "exam_id" in frame else "image_id"
    prefix = frame[parent].str.startswith(dataset + "/")  # every id here begins with its dataset
    return prefix


# ---------------------------------------------------------------------------- result folders
def _result(tmp_path, manifest: dict | list | str, *, name="run"):
    folder = tmp_path / name
    write_result(folder, {"models": pd.DataFrame([{"model": "m9", "kind": "external"}]),
                          "predictions": pd.DataFrame({
                              "model": "m9", "level": "exam", "case_id": ["x/0"],
                              "exam_id": ["x/0"], "malignant": [0.5]})})
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    (folder / "result.json").write_text(text)
    return folder


TABLES = {"models": "models.parquet", "predictions": "predictions.parquet"}


@pytest.mark.parametrize("manifest, message", [
    ({"tables": TABLES, "delete": [{"table": "predictions", "where": "model = ?",
                                    "params": ["m1"]}]}, "is not {'table'"),
    ({"tables": TABLES, "delete": [], "sql": "DROP TABLE exams"}, "unknown entries"),
    ({"tables": {**TABLES, "nope": "models.parquet"}}, "unknown table 'nope'"),
    ({"tables": {"models": "../run/models.parquet"}}, "inside the result folder"),
    ({"tables": {"models": "/etc/models.parquet"}}, "inside the result folder"),
    ({"tables": {"models": "models.csv"}}, "inside the result folder"),
    ({"tables": {"models": "other.parquet"}}, "missing"),
    ({"tables": TABLES, "delete": [{"table": "predictions", "match": {INJECTION: 1}}]},
     "no column"),
    ({"tables": TABLES, "delete": {"table": "predictions", "match": {"model": "m1"}}},
     "must be a list"),
    ({"tables": ["models.parquet"]}, "must map"),
    (["models.parquet"], "unknown entries"),
    ("{not json", "is not JSON"),
])
def test_ingest_refuses_a_bad_manifest_and_changes_nothing(store, tmp_path, manifest, message):
    folder = _result(tmp_path, manifest)
    before = snapshot(store)
    with pytest.raises(InputError, match=message) as info:
        store.ingest(folder)
    assert "\n" not in str(info.value)
    assert_unchanged(store, before)
    # the same folder with a good manifest lands: the refusal was the manifest's doing
    (folder / "result.json").write_text(json.dumps({"tables": TABLES, "delete": []}))
    assert store.ingest(folder) == {"models": 1, "predictions": 1}


def test_write_result_refuses_an_old_style_delete(tmp_path):
    with pytest.raises(InputError, match="is not {'table'"):
        write_result(tmp_path / "run", {}, delete=[("predictions", "model = ?", ["m1"])])
    assert not (tmp_path / "run").exists()


def test_ingest_runs_structured_deletes_first(store, tmp_path):
    before = full(store, "predictions")
    folder = write_result(tmp_path / "run", {"predictions": before[before["model"] == "m1"]
                                             .assign(malignant=0.25)},
                          delete=[{"table": "predictions", "match": {"dataset": "x"}}])
    store.ingest(folder)
    on_x = before["exam_id"].str.startswith("x/")
    expected = pd.concat([before[~on_x], before[before["model"] == "m1"].assign(malignant=0.25)])
    expected = expected.drop_duplicates(list(PRIMARY_KEYS["predictions"]), keep="last")
    same_rows(full(store, "predictions"), expected, "predictions")
