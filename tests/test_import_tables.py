"""Prediction and reader tables: layouts (long, wide, metarepository), levels, matching,
predictions-only datasets, NaN/duplicate/type errors, refused pickles, and the CLI."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cli import main
from core.errors import InputError
from core.importers.tables import import_predictions, import_readers
from core.io.tables import load_plain_pickle
from core.store import open_store
from tests.test_import_dicom import dump


def cohort(store, dataset="d", n=3):
    """n exams with four images each, keys like the metarepository's ('0_L_CC')."""
    rows = {"datasets": [{"dataset": dataset, "kind": "imported", "source": "png", "root": "/x"}],
            "exams": [], "breasts": [], "images": []}
    for i in range(n):
        exam_id = f"{dataset}/{i}"
        rows["exams"].append({"exam_id": exam_id, "dataset": dataset, "exam_key": str(i)})
        for side in "LR":
            cancer = int(side == "R" and i == 0)
            rows["breasts"].append({"exam_id": exam_id, "laterality": side, "cancer": cancer,
                                    "histology": "ILC" if cancer else "none"})
            for view in ("CC", "MLO"):
                rows["images"].append({
                    "image_id": f"{exam_id}/{side}-{view}", "exam_id": exam_id,
                    "dataset": dataset, "image_key": f"{i}_{side}_{view}", "laterality": side,
                    "laterality_source": "file-name", "view": view})
    store.write_tables({t: pd.DataFrame(r) for t, r in rows.items()})
    store.refresh_testsets()


@pytest.fixture()
def store(tmp_path):
    s = open_store(tmp_path / "s.duckdb")
    cohort(s)
    return s


def scores(store, model, level):
    table = store.predictions(models=[model], level=level)
    return dict(zip(table["case_id"], table["score"]))


def test_metarepository_image_level(store, tmp_path):
    path = tmp_path / "gmic.csv"
    pd.DataFrame({"image_index": ["0_L-CC", "0_R-CC", "1_L_MLO", "9_L_CC"],
                  "malignant_pred": [0.1, 0.9, 0.3, 0.5],
                  "malignant_label": [0, 1, 0, 0]}).to_csv(path)  # with the pandas index
    report = import_predictions(store, path, model="gmic")
    assert report.counts() == {"imported": 1, "skipped": 0, "failed": 0}
    assert report.unmatched == ["9_L_CC"] and "match no stored image" in report.outcomes[0].reason
    assert scores(store, "gmic", "image") == {"d/0/L-CC": 0.1, "d/0/R-CC": 0.9,
                                              "d/1/L-MLO": 0.3}
    assert store.models().set_index("model").loc["gmic", "kind"] == "external"


def test_metarepository_breast_level_uses_index_as_exam_key(store, tmp_path):
    path = tmp_path / "breast.csv"
    pd.DataFrame({"index": [0, 1], "left_malignant": [0.2, 0.3],
                  "right_malignant": [0.7, np.nan]}).to_csv(path, index=False)
    report = import_predictions(store, path, model="nyu")
    assert "1 row(s) with NaN values skipped" in report.outcomes[0].reason
    assert scores(store, "nyu", "breast") == {"d/0/L": 0.2, "d/0/R": 0.7, "d/1/L": 0.3}


def test_wide_and_long_give_the_same_rows(store, tmp_path):
    wide = pd.DataFrame({"case": ["0", "1", "2"], "m1": [0.1, 0.2, 0.3], "m2": [1, 2, 3]})
    wide.to_csv(tmp_path / "wide.csv", index=False)
    import_predictions(store, tmp_path / "wide.csv", id_column="case", level="exam")
    first = {m: scores(store, m, "exam") for m in ("m1", "m2")}
    long = wide.melt(id_vars="case", var_name="model", value_name="score")
    long["model"] = long["model"] + "-long"
    long.to_parquet(tmp_path / "long.parquet")
    import_predictions(store, tmp_path / "long.parquet", id_column="case", level="exam")
    assert {m: scores(store, m + "-long", "exam") for m in ("m1", "m2")} == first
    assert first["m2"] == {"d/0": 1.0, "d/1": 2.0, "d/2": 3.0}


def test_breast_level_with_side_column_and_parquet(store, tmp_path):
    table = pd.DataFrame({"exam": ["d/0", "0", "1"], "side": ["left", "R", "L"],
                          "score": [0.4, 0.6, 0.5]})
    table.to_parquet(tmp_path / "t.parquet")
    import_predictions(store, tmp_path / "t.parquet", model="p")
    assert scores(store, "p", "breast") == {"d/0/L": 0.4, "d/0/R": 0.6, "d/1/L": 0.5}


def test_readers_scores_recall_and_consensus(store, tmp_path):
    table = pd.DataFrame({"id": ["0", "1", "2"], "r1": [1, 0, 1], "r2": [0.2, 0.8, np.nan],
                          "consensus": ["yes", "no", "no"]})
    table.to_csv(tmp_path / "reads.csv", index=False)
    report = import_readers(store, tmp_path / "reads.csv", level="exam")
    assert report.counts()["imported"] == 1
    reads = store.reads(level="exam").set_index(["reader", "case_id"])
    assert reads.loc[("r1", "d/0"), "recall"] == True  # noqa: E712 (pandas boolean)
    assert np.isnan(reads.loc[("r1", "d/0"), "score"])
    assert reads.loc[("r2", "d/1"), "score"] == 0.8 and ("r2", "d/2") not in reads.index
    assert reads.loc[("consensus", "d/0"), "recall"] == True  # noqa: E712
    kinds = store.readers().set_index("reader")["kind"]
    assert kinds["consensus"] == "consensus" and kinds["r1"] == "radiologist"


def test_new_dataset_from_labels(tmp_path):
    store = open_store(tmp_path / "s.duckdb")
    table = pd.DataFrame({"id": ["a", "b", "7_R_MLO"], "label": [1, 0, 1],
                          "score": [0.9, 0.2, 0.8]})
    table.to_csv(tmp_path / "p.csv", index=False)
    import_predictions(store, tmp_path / "p.csv", dataset="ext", label_column="label",
                       model="m", level="image")
    datasets = store.datasets().set_index("dataset")
    assert datasets.loc["ext", "kind"] == "predictions-only"
    assert "assumed" in datasets.loc["ext", "notes"]
    cases = store.cases(level="image", test_set="ext").set_index("case_id")
    assert cases.loc["ext/a", ["laterality", "label", "histology"]].tolist() == \
        ["L", 1, "unknown"]
    assert cases.loc["ext/7_R_MLO", ["exam_id", "laterality", "view"]].tolist() == \
        ["ext/7", "R", "MLO"]
    assert store.images(dataset="ext")["path"].isna().all()
    assert scores(store, "m", "image") == {"ext/a": 0.9, "ext/b": 0.2, "ext/7_R_MLO": 0.8}
    with pytest.raises(InputError, match="label.column"):
        import_predictions(store, tmp_path / "p.csv", dataset="other", model="m")


@pytest.mark.parametrize("table, kwargs, match", [
    (pd.DataFrame({"id": ["0", "0"], "score": [0.1, 0.2]}), {"level": "exam"}, "duplicate id"),
    (pd.DataFrame({"id": ["0", "1"], "score": [0.1, "high"]}), {"level": "exam"},
     "non-numeric value 'high'"),
    (pd.DataFrame({"id": ["0", "1"], "score": [0.1, np.inf]}), {"level": "exam"}, "infinite"),
    (pd.DataFrame({"idx": ["0", "1"], "score": [0.1, 0.2]}), {"level": "exam"}, "no id column"),
    (pd.DataFrame({"id": ["0", "1"], "score": [0.1, 0.2]}), {"score_column": "prob"},
     "no column 'prob'"),
    (pd.DataFrame({"id": ["0", "1"], "side": ["L", "middle"], "score": [0.1, 0.2]}), {},
     "'middle' in row 2"),
    (pd.DataFrame({"id": ["0", None], "score": [0.1, 0.2]}), {"level": "exam"}, "id is empty"),
])
def test_bad_tables_are_refused_and_change_nothing(store, tmp_path, table, kwargs, match):
    table.to_csv(tmp_path / "bad.csv", index=False)
    before = dump(store)
    with pytest.raises(InputError, match=match):
        import_predictions(store, tmp_path / "bad.csv", model="m", **kwargs)
    assert dump(store) == before


def test_unmatched_file_fails_and_changes_nothing(store, tmp_path):
    pd.DataFrame({"id": ["x", "y"], "score": [0.1, 0.2]}).to_csv(tmp_path / "u.csv", index=False)
    before = dump(store)
    report = import_predictions(store, tmp_path / "u.csv", model="m")
    assert report.failed and "none of its 2 rows" in report.outcomes[0].reason
    assert report.unmatched == ["x", "y"] and dump(store) == before


def test_pickles_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os
            return os.system, (f"touch {marker}",)

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(InputError, match="posix.system|os.system|does not load"):
        load_plain_pickle(tmp_path / "evil.pkl")
    assert not marker.exists()
    frame = pd.DataFrame({"a": ["x", "y"], "b": [1.5, np.nan], "c": pd.array([1, None],
                                                                             dtype="Int64")})
    frame.to_pickle(tmp_path / "ok.pkl")  # DataFrame pickles are refused (core.io.tables)
    with pytest.raises(InputError, match=r"to_parquet"):
        load_plain_pickle(tmp_path / "ok.pkl")


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.one_of(st.floats(0, 1), st.just(float("nan"))), min_size=12,
                       max_size=12))
def test_scores_round_trip_and_nans_are_counted(store, tmp_path, values):
    ids = [f"{i}_{s}_{v}" for i in range(3) for s in "LR" for v in ("CC", "MLO")]
    path = tmp_path / "h.csv"
    pd.DataFrame({"image_index": ids, "malignant_pred": values}).to_csv(path, index=False)
    kept = {f"d/{k[0]}/{k[2]}-{k[4:]}": v for k, v in zip(ids, values) if not np.isnan(v)}
    if not kept:
        with pytest.raises(InputError):
            import_predictions(store, path, model="h")
        return
    report = import_predictions(store, path, model="h")
    n_nan = sum(np.isnan(v) for v in values)
    assert (f"{n_nan} row(s) with NaN" in report.outcomes[0].reason) == (n_nan > 0)
    stored = scores(store, "h", "image")
    for case_id, value in kept.items():
        assert stored[case_id] == pytest.approx(value, rel=1e-12, abs=1e-15)


def test_cli(store, tmp_path, capsys):
    pd.DataFrame({"id": ["0", "1"], "left": [0.1, 0.2]}).to_csv(tmp_path / "p.csv", index=False)
    db = str(store.path)
    assert main(["import", "predictions", str(tmp_path / "p.csv"), "--db", db, "--json",
                 "--model-columns", "left", "--level", "exam"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["imported"] == 1
    assert "left" in open_store(db).model_names()
    pd.DataFrame({"id": ["0", "0"], "r1": [1, 0]}).to_csv(tmp_path / "r.csv", index=False)
    assert main(["import", "readers", str(tmp_path / "r.csv"), "--db", db, "--level",
                 "exam"]) == 2
    assert "duplicate id 0" in capsys.readouterr().err
    pd.DataFrame({"id": ["q"], "r1": [1]}).to_csv(tmp_path / "q.csv", index=False)
    assert main(["import", "readers", str(tmp_path / "q.csv"), "--db", db, "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["unmatched"] == ["q"] and "failed: q.csv" in captured.err
