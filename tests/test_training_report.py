"""core.reports.training on a hand-built store (rows written to runs, train_epochs, models and
predictions directly): progress and ETA by hand, loss curves against the rows, table 6.2
against scikit-learn's AUC and the paired DeLong test; and ``python -m core runs``."""
from __future__ import annotations

import json
import math
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cli import main
from core import stats
from core.errors import InputError
from core.reports import training
from core.store import open_store, write_result
from core.store.runs import get_run, write_run
from models.demo.finetune import DEMO_RUN   # the run that made the demo's shipped child
from tests.conftest import copy_store

NOW = datetime(2026, 12, 5, 3, 0, 0)
PARENT = "gmic-demo"
TEST_SETS = ["test-ILC", "test-all"]


def _ingest(store, frames: dict[str, pd.DataFrame]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store.ingest(write_result(tmp, frames))


def _params(lr: float, **more) -> dict:
    return {"model_init": PARENT, "mode": "full", "train_set": "train", "val_set": "demo",
            "lrs": [lr], "lr": lr, "epochs": 4, "batch_size": 2, "preprocess": "none",
            "device": "cpu", "launcher": "local", "evaluate": TEST_SETS, "seed": 0,
            "config": None, "beta": 3.26e-6, "mlflow_uri": None, "parent_model": PARENT} | more


def _run(store, run_id: str, status: str, params: dict, *, started: datetime,
         ended: datetime | None = None, done: int | None = None, total: int | None = None):
    write_run(store, {
        "run_id": run_id, "kind": "train", "params": params, "code_version": "test",
        "status": status, "started_at": started, "ended_at": ended, "progress_done": done,
        "progress_total": total, "message": f"{status} message", "ingested": {}, "chunks": [],
        "error": "RuntimeError: boom" if status == "failed" else None,
        "folder": f"runs/{run_id}"})
    (store.files_dir / "runs" / run_id).mkdir(parents=True, exist_ok=True)


# epoch rows per run: (train_loss, val_loss, val_auc)
EPOCHS = {
    "train-a": [(0.9, 0.8, 0.60), (0.7, 0.6, 0.65), (0.5, 0.55, 0.70), (0.4, 0.58, 0.72)],
    "train-b": [(0.95, 0.85, 0.55), (0.8, 0.7, 0.60)],
    "train-c": [(1.0, 0.9, 0.5)],
}


def training_store(demo_store_path: Path, folder: Path) -> Path:
    """A copy of the demo store plus four training runs of gmic-demo:

    * train-a: done, lr 1e-5, child gmic-ft-a scored on every image (parent + signal on cancers);
    * train-b: running, lr 3e-6, progress.json 3 / 10 after 30 s;
    * train-c: failed at 2 / 8; train-d: done, child gmic-ft-d never scored.
    """
    path = copy_store(demo_store_path, folder)
    with duckdb.connect(str(path)) as con:   # these runs are built by hand: the demo's own
        for table in ("runs", "train_epochs"):   # fine-tuning run is tested on its own below
            con.execute(f"DELETE FROM {table} WHERE run_id = ?", [DEMO_RUN])
    store = open_store(path)
    rng = np.random.default_rng(3)
    parent = store.select("predictions", model=PARENT, level="image")
    label = store.cases(level="image").set_index("case_id")["label"].reindex(parent["case_id"])
    child = parent.assign(model="gmic-ft-a", saliency_path=None, patch_boxes=None,
                          malignant=parent["malignant"].to_numpy()
                          + 0.3 * label.to_numpy(float) + rng.normal(0, 0.05, len(parent)))
    _ingest(store, {
        "models": pd.DataFrame({"model": ["gmic-ft-a", "gmic-ft-d"], "kind": "gmic",
                                "parent": PARENT, "preprocess": "none"}),
        "predictions": child,
        "train_epochs": pd.DataFrame([
            {"run_id": run, "epoch": i + 1, "train_loss": t, "val_loss": v, "val_auc": a,
             "lr": 1e-5, "images": 16, "elapsed_s": 2.0}
            for run, rows in EPOCHS.items() for i, (t, v, a) in enumerate(rows)])})
    _run(store, "train-a", "done", _params(1e-5, child_model="gmic-ft-a", best_epoch=3,
                                           best_val_loss=0.55),
         started=NOW - timedelta(minutes=10), ended=NOW - timedelta(minutes=2), done=4, total=4)
    _run(store, "train-b", "running", _params(3e-6), started=NOW - timedelta(seconds=30),
         done=1, total=10)
    (store.files_dir / "runs" / "train-b" / "progress.json").write_text(json.dumps(
        {"done": 3, "total": 10, "message": "epoch 2 of 4", "updated_at": NOW.isoformat()}))
    _run(store, "train-c", "failed", _params(1e-6, mode="feature-extraction"),
         started=NOW - timedelta(minutes=20), ended=NOW - timedelta(minutes=19), done=2, total=8)
    _run(store, "train-d", "done", _params(1e-6, child_model="gmic-ft-d", evaluate=[]),
         started=NOW - timedelta(minutes=30), ended=NOW - timedelta(minutes=25), done=4, total=4)
    store.checkpoint()
    return path


@pytest.fixture(scope="module")
def store_path(demo_store_path, tmp_path_factory) -> Path:
    return training_store(demo_store_path, tmp_path_factory.mktemp("training"))


@pytest.fixture(scope="module")
def store(store_path):
    return open_store(store_path, read_only=True)


# ---------------------------------------------------------------------------- runs


def test_run_table_progress_and_eta_by_hand(store):
    table = training.run_table(store, now=NOW).set_index("run_id")
    assert list(table.index) == ["train-b", "train-a", "train-c", "train-d"]   # newest first
    b = table.loc["train-b"]
    assert (b["status"], b["progress"], b["elapsed_s"]) == ("running", 0.3, 30.0)
    assert b["eta_s"] == pytest.approx(70.0)          # 30 s for 30 %: 70 s for the other 70 %
    assert b["message"] == "epoch 2 of 4" and b["epochs_done"] == 2 and b["lr"] == 3e-6
    a = table.loc["train-a"]
    assert (a["progress"], a["eta_s"], a["elapsed_s"]) == (1.0, 0.0, 480.0)
    assert (a["child"], a["parent"], a["best_epoch"], a["best_val_loss"]) == (
        "gmic-ft-a", PARENT, 3, 0.55)
    c = table.loc["train-c"]
    assert c["progress"] == 0.25 and math.isnan(c["eta_s"]) and c["error"] == "RuntimeError: boom"
    assert c["mode"] == "feature-extraction" and c["epochs_done"] == 1
    assert list(training.run_table(store, status="running", now=NOW)["run_id"]) == ["train-b"]
    other = training.run_table(store, kind="predict", now=NOW)     # the demo's own predict runs
    assert set(other["kind"]) == {"predict"} and other["mode"].isna().all() and len(other) >= 1
    assert other["progress"].eq(1.0).all()
    assert len(training.run_table(store, kind=None)) == 4 + len(other)


def test_run_table_refuses_an_unknown_status(store):
    with pytest.raises(InputError, match="status 'finished' is not one of"):
        training.run_table(store, status="finished")


def test_loss_curves_are_the_epoch_rows(store):
    curves = training.loss_curves(store)
    assert list(curves.columns) == list(training.CURVE_COLUMNS)
    assert list(dict.fromkeys(curves["run_id"])) == ["train-c", "train-a", "train-b"]  # oldest 1st
    for run, rows in EPOCHS.items():
        part = curves[curves["run_id"] == run]
        for split, col in (("training", 0), ("validation", 1)):
            got = part[part["split"] == split].sort_values("epoch")
            assert got["epoch"].tolist() == list(range(1, len(rows) + 1))
            assert got["loss"].tolist() == [r[col] for r in rows]
        best = 1 + int(np.argmin([r[1] for r in rows]))
        assert set(part.loc[part["best"], "epoch"]) == {best}
    assert set(curves.loc[curves["run_id"] == "train-a", "run"]) == {"1e-05"}
    only = training.loss_curves(store, run_ids=["train-b"])
    assert set(only["run_id"]) == {"train-b"} and len(only) == 4


def test_loss_curves_tell_runs_with_one_rate_apart(store_path, tmp_path):
    s = open_store(copy_store(store_path, tmp_path))
    _run(s, "train-e", "running", _params(1e-5), started=NOW)
    s.write_tables({"train_epochs": pd.DataFrame([{"run_id": "train-e", "epoch": 1,
                                                   "train_loss": 1.0, "val_loss": 1.0}])})
    labels = training.loss_curves(s, run_ids=["train-a", "train-e"]).drop_duplicates("run_id")
    assert labels["run"].tolist() == ["1e-05 · in-a", "1e-05 · in-e"]


# ---------------------------------------------------------------------------- table 6.2


def _arrays(store, model: str, test_set: str):
    cases = store.cases(test_set=test_set, level="image")[["case_id", "label"]]
    scores = store.select("predictions", model=model, level="image")
    merged = cases.merge(scores[["case_id", "malignant"]], on="case_id", how="left")
    return merged["label"].to_numpy(int), merged["malignant"].to_numpy(float)


def test_finished_runs_match_sklearn_and_the_paired_delong_test(store):
    table = training.finished_runs(store)
    assert list(table.columns) == list(training.FINISHED_COLUMNS)
    a = table[table["run_id"] == "train-a"].set_index("test_set")
    assert list(a.index) == TEST_SETS                         # the runs' evaluate list
    for test_set in TEST_SETS:
        y, child = _arrays(store, "gmic-ft-a", test_set)
        _, parent = _arrays(store, PARENT, test_set)
        row = a.loc[test_set]
        assert row["auc"] == pytest.approx(roc_auc_score(y, child), abs=1e-12)
        assert row["parent_auc"] == pytest.approx(roc_auc_score(y, parent), abs=1e-12)
        assert (row["n_pos"], row["n_neg"]) == (y.sum(), (1 - y).sum())
        ci = stats.delong_auc(y, child)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.ci_low, ci.ci_high))
        paired = stats.delong_paired_test(y, child, parent)
        assert row["diff"] == pytest.approx(paired.diff) and row["diff"] > 0
        assert row["p"] == pytest.approx(paired.p)
        assert row["note"] == ""
    d = table[table["run_id"] == "train-d"]
    assert (d["note"] == "child not evaluated").all() and d["auc"].isna().all()
    assert d["parent_auc"].notna().all() and d["p"].isna().all()
    assert set(table["run_id"]) == {"train-a", "train-d"}    # done with a child only


def test_the_demos_own_run_is_a_finished_run_against_its_parent(story_store_path):
    """The demo ships its fine-tuning run and child: table 6.2 shows them, sklearn's AUCs."""
    demo = open_store(story_store_path, read_only=True)   # the default demo: the story's
    table = training.finished_runs(demo).set_index("test_set")
    assert set(table["run_id"]) == {DEMO_RUN} and set(table["child"]) == {"gmic-demo-ilc"}
    for test_set, row in table.iterrows():
        y, child = _arrays(demo, "gmic-demo-ilc", test_set)
        _, parent = _arrays(demo, PARENT, test_set)
        assert row["auc"] == pytest.approx(roc_auc_score(y, child), abs=1e-12)
        assert row["parent_auc"] == pytest.approx(roc_auc_score(y, parent), abs=1e-12)
    assert table.at["test-ILC", "auc"] > table.at["test-ILC", "parent_auc"]
    curves = training.loss_curves(demo)
    assert set(curves["run_id"]) == {DEMO_RUN} and curves["best"].sum() == 2


def test_finished_runs_chosen_test_sets_and_errors(store):
    one = training.finished_runs(store, test_sets=["test-IDC"], run_ids=["train-a"])
    assert one["test_set"].tolist() == ["test-IDC"] and len(one) == 1
    with pytest.raises(InputError, match="test set 'nope' does not exist"):
        training.finished_runs(store, test_sets=["nope"])
    with pytest.raises(InputError, match="train-b are not finished training runs"):
        training.finished_runs(store, run_ids=["train-b"])


def test_finished_wide_puts_child_beside_parent(store):
    table = training.finished_runs(store, run_ids=["train-a"])
    wide = training.finished_wide(table).iloc[0]
    r = table.iloc[0]
    assert wide["test-ILC child AUC [95% CI]"] == (
        f"{r.auc:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]")
    assert wide["test-ILC parent AUC [95% CI]"].startswith(f"{r.parent_auc:.3f} [")
    assert wide["test-ILC p (DeLong)"] == f"{r.p:.3g}"


# ---------------------------------------------------------------------------- the CLI


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def test_cli_runs_list_and_show_equal_the_report(store_path, capsys):
    assert main(["runs", "list", "--db", str(store_path), "--json"]) == 0
    listed = _json(capsys)
    assert [r["run_id"] for r in listed] == ["train-b", "train-a", "train-c", "train-d"]
    assert main(["runs", "list", "--status", "failed", "--db", str(store_path), "--json"]) == 0
    assert [r["run_id"] for r in _json(capsys)] == ["train-c"]
    assert main(["runs", "show", "train-a", "--db", str(store_path), "--json"]) == 0
    shown = _json(capsys)
    assert shown["params"]["child_model"] == "gmic-ft-a"
    assert [e["val_loss"] for e in shown["epochs"]] == [r[1] for r in EPOCHS["train-a"]]
    report = training.finished_runs(open_store(store_path, read_only=True), run_ids=["train-a"])
    assert [e["p"] for e in shown["evaluation"]] == pytest.approx(report["p"].tolist())
    assert main(["runs", "show", "train-x", "--db", str(store_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: run_id 'train-x' is not in this store; list the runs with "
        "`python -m core runs list`")


def test_cli_runs_cancel_marks_a_running_run_only(store_path, tmp_path, capsys):
    path = copy_store(store_path, tmp_path)
    assert main(["runs", "cancel", "train-b", "--db", str(path), "--json"]) == 0
    assert _json(capsys) == {"run_id": "train-b", "cancel_requested": True}
    store = open_store(path)
    assert (store.files_dir / get_run(store, "train-b")["folder"] / "cancel").exists()
    assert main(["runs", "cancel", "train-a", "--db", str(path)]) == 2
    assert "is done, not running" in capsys.readouterr().err
    missing = tmp_path / "typo.duckdb"                  # a mistyped --db creates nothing
    for action in ("cancel", "resume"):
        assert main(["runs", action, "train-b", "--db", str(missing)]) == 2
        assert f"store {missing} does not exist" in capsys.readouterr().err
    assert not list(tmp_path.glob("typo*"))


def test_cli_runs_resume_refuses_done_and_other_kinds(store_path, capsys):
    assert main(["runs", "resume", "train-a", "--db", str(store_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: run train-a is done; launch a new run instead")
    predict = training.run_table(open_store(store_path, read_only=True), kind="predict")
    run_id = predict["run_id"].iat[0]
    assert main(["runs", "resume", run_id, "--db", str(store_path)]) == 2
    assert f"run {run_id} is a predict run; only training runs resume here" in \
        capsys.readouterr().err
