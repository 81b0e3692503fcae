"""core.jobs.run_folder and the runs table: a row per job kind, cancel, resume, the v3 migration."""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict

import duckdb
import pandas as pd
import pytest
import torch

from core.density.calibration import calibrate_classical
from core.errors import InputError
from core.jobs import density as djob
from core.jobs import filters as fr
from core.jobs.run_folder import RunCancelled, RunFolder, code_version, read_progress, request_cancel
from core.reports import filters as frep
from core.store import open_store
from core.store.runs import get_run, latest_run
from core.store.schema import SCHEMA, SCHEMA_VERSION, STUDY_TABLES, table_ddl
from models.networks.gmic import build_gmic
from models.inference.predict import predict_test_set
from tests.conftest import copy_store

KEY = ["image_id", "method"]
METHODS = ["original", "M2"]


@pytest.fixture(scope="module")
def base_path(small_demo_path):
    """An 8-exam demo store: 4 annotated cancer images for the filters (copied, never written)."""
    return small_demo_path


@pytest.fixture
def fresh(base_path, tmp_path):
    return open_store(copy_store(base_path, tmp_path))


def _only_run(store, kind):
    rows = store.select("runs", kind=kind)
    assert len(rows) == 1, rows
    return get_run(store, rows["run_id"].iat[0])


def _stored_filters(store):
    return frep.stored_results(store, test_set="demo", methods=METHODS).sort_values(
        KEY, ignore_index=True)


# --- a row per job kind -----------------------------------------------------------------------


def test_filters_run_row(fresh):
    summary = fr.run_filters(fresh, test_set="demo", methods=METHODS, workers=1, chunk_images=3)
    run = _only_run(fresh, "filters")
    n_rows = len(fresh.select("filter_results"))
    assert run["status"] == "done" and run["error"] is None and run["ended_at"] >= run["started_at"]
    assert run["params"]["test_set"] == "demo" and run["params"]["methods"] == METHODS
    assert run["ingested"] == {"filter_results": n_rows} and n_rows == summary.n_rows == 8
    assert run["chunks"] == ["chunk-00000", "chunk-00001"]          # 3 images, then 1
    assert (run["progress_done"], run["progress_total"]) == (4, 4)
    assert run["code_version"] == code_version()
    assert not (fresh.files_dir / run["folder"]).exists()           # filters keep no folder


def test_predict_run_row(demo_store_path, tmp_path):
    store = open_store(copy_store(demo_store_path, tmp_path))
    torch.manual_seed(0)
    ckpt = tmp_path / "net.pt"
    torch.save({"state_dict": build_gmic("demo").eval().state_dict(), "config": "demo"}, ckpt)
    torch.set_num_threads(2)
    summary = predict_test_set(store, checkpoints=[ckpt], name="r", test_set="test-all",
                               batch_size=8, chunk_size=16)
    run = latest_run(store, "predict", model="r")
    n = len(store.select("predictions", model="r"))
    assert run["status"] == "done" and n == summary.n_predicted > 16
    assert run["ingested"] == {"predictions": n, "models": 1}
    assert len(run["chunks"]) == math.ceil(n / 16)
    assert run["params"]["test_set"] == "test-all" and run["params"]["chunk_size"] == 16
    assert run["params"]["checkpoints"] == summary.checkpoints
    folder = store.files_dir / run["folder"]
    assert summary.run_dir == str(folder) and run["run_id"].startswith("predict-")
    params = json.loads((folder / "params.json").read_text())
    assert params["params"] == run["params"] and params["code_version"] == run["code_version"]
    assert read_progress(store, run["run_id"])["done"] == n


def test_density_run_records_its_calibration(demo_store_path, tmp_path):
    store = open_store(copy_store(demo_store_path, tmp_path))
    result = djob.estimate_classical(store, test_set="test-all", calibrate_on="label")
    run = _only_run(store, "density")
    reference = calibrate_classical(store, source="label", test_set="test-all")
    assert run["params"]["calibration"] == json.loads(json.dumps(asdict(reference)))
    assert run["params"]["calibration"]["kind"] == "calibrated"
    assert run["status"] == "done"
    assert run["ingested"] == {"density": len(store.select("density", source="classical"))}
    assert djob.last_run(store, "classical") == result.info
    assert result.info["calibration"] == run["params"]["calibration"]
    assert result.run_dir == store.files_dir / run["folder"]


# --- cancel and resume ------------------------------------------------------------------------


def _cancel_after_first_chunk(store):
    def progress(done, total, message=""):
        if done == 2:   # the first chunk (2 images) has landed
            running = store.select("runs", kind="filters", status="running")
            request_cancel(store, running["run_id"].iat[0])
    return progress


def test_cancel_stops_before_the_next_chunk_and_resume_finishes(fresh, base_path, tmp_path):
    with pytest.raises(RunCancelled):
        fr.run_filters(fresh, test_set="demo", methods=METHODS, workers=1, chunk_images=2,
                       progress=_cancel_after_first_chunk(fresh))
    run = _only_run(fresh, "filters")
    assert run["status"] == "cancelled" and run["chunks"] == ["chunk-00000"]
    stored = _stored_filters(fresh)
    assert len(stored) == run["ingested"]["filter_results"] == 2 * len(METHODS)   # whole chunks
    assert stored.groupby("image_id").size().eq(len(METHODS)).all()
    assert (fresh.files_dir / run["folder"]).is_dir()               # kept for the resume
    with pytest.raises(InputError, match="is cancelled, not running"):
        request_cancel(fresh, run["run_id"])
    with pytest.raises(InputError, match="other methods"):
        fr.run_filters(fresh, test_set="demo", methods=["original"], workers=1,
                       resume=run["run_id"])

    again = fr.run_filters(fresh, test_set="demo", methods=METHODS, workers=1, chunk_images=2,
                           resume=run["run_id"])
    assert (again.n_computed, again.n_cached) == (2, 2)             # the first chunk is skipped
    done = _only_run(fresh, "filters")
    assert done["status"] == "done" and done["chunks"] == ["chunk-00000", "chunk-00001"]
    assert done["ingested"] == {"filter_results": 4 * len(METHODS)}

    whole = open_store(copy_store(base_path, tmp_path / "whole"))
    fr.run_filters(whole, test_set="demo", methods=METHODS, workers=1, chunk_images=2)
    pd.testing.assert_frame_equal(_stored_filters(fresh), _stored_filters(whole))
    with pytest.raises(InputError, match="is done"):
        fr.run_filters(fresh, test_set="demo", methods=METHODS, resume=run["run_id"])


def _models(names):
    return {"models": pd.DataFrame({"model": names, "kind": "external"})}


def test_resumed_run_skips_ingested_chunks(fresh):
    """A job of three fixed chunks fails after the first; the resume skips it."""
    chunks = {"a": ["m1", "m2"], "b": ["m3"], "c": ["m4", "m5"]}
    with pytest.raises(RuntimeError, match="disk full"):
        with RunFolder.open(fresh, "test", {"size": 3}) as run:
            for name, models in chunks.items():
                if name == "b":
                    raise RuntimeError("disk full")
                run.ingest(name, _models(models))
    failed = get_run(fresh, run.run_id)
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: disk full"
    assert failed["chunks"] == ["a"] and fresh.model_names() == ["m1", "m2"]

    computed = []
    with RunFolder.open(fresh, "test", {"size": 3}, resume=run.run_id) as resumed:
        for name, models in chunks.items():
            if not resumed.ingested(name):
                computed.append(name)
                resumed.ingest(name, _models(models))
        assert resumed.ingest("a", _models(["m1", "m2"])) == {}     # landed before: skipped
    row = get_run(fresh, run.run_id)
    assert computed == ["b", "c"] and row["status"] == "done" and row["error"] is None
    assert row["chunks"] == ["a", "b", "c"] and row["ingested"] == {"models": 5}
    assert fresh.model_names() == ["m1", "m2", "m3", "m4", "m5"]
    with pytest.raises(InputError, match="no test run"):
        RunFolder.open(fresh, "test", {}, resume="nope")


def test_progress_file_is_throttled_but_keeps_the_last(fresh):
    with RunFolder.open(fresh, "test", {}) as run:
        run.progress(0, 10, "start")
        run.progress(1, 10, "one")                 # within PROGRESS_EVERY_S: not written
        assert read_progress(fresh, run.run_id)["message"] == "start"
        run.progress(10, 10, "end")                # the last always
        assert read_progress(fresh, run.run_id)["done"] == 10
    assert get_run(fresh, run.run_id)["progress_done"] == 10


def test_code_version_is_a_commit_or_a_hash():
    assert re.fullmatch(r"[0-9a-f]{40}|sha256:[0-9a-f]{16}", code_version())


# --- the v2 -> v3 migration -------------------------------------------------------------------


def test_v2_store_gains_the_runs_table(tmp_path, monkeypatch):
    """v2 -> v3 adds the runs table; later migrations carry the store on to the current version."""
    v2_sql = SCHEMA
    for table in ("runs", *STUDY_TABLES, "train_epochs"):   # v3 runs, v5 studies, v7 epochs
        v2_sql = v2_sql.replace(table_ddl(table), "")
    v2_sql = re.sub(r",\n    preprocess VARCHAR[^\n]*", "", v2_sql)   # v7 added models.inference.preprocess
    assert "preprocess" not in v2_sql
    assert "CREATE TABLE runs" not in v2_sql and "CREATE TABLE cases" in v2_sql
    path = tmp_path / "v2.duckdb"
    con = duckdb.connect(str(path))
    con.execute(v2_sql)
    salt = "ab" * 16   # a v2/v3 store's salt: 32 hex digits, adopted as the key by the v3 -> v4 step
    monkeypatch.setenv("ILCSCOPE_PSEUDONYM_KEY", salt)
    con.execute("INSERT INTO meta VALUES ('schema_version', '2'), ('salt', ?)", [salt])
    con.execute("INSERT INTO models (model, kind) VALUES ('m', 'external')")
    con.close()

    read_only = open_store(path, read_only=True)       # the report commands migrate too
    assert read_only.schema_version() == SCHEMA_VERSION
    store = open_store(path)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.select("runs").empty and list(store.select("runs").columns) == [
        "run_id", "kind", "params", "code_version", "status", "started_at", "ended_at",
        "progress_done", "progress_total", "message", "ingested", "chunks", "error", "folder"]
    assert store.model_names() == ["m"] and store.pseudonym("x") == open_store(path).pseudonym("x")
    with RunFolder.open(store, "test", {"k": 1}) as run:
        run.ingest("only", _models(["n"]))
    assert get_run(store, run.run_id)["ingested"] == {"models": 1}


def test_v6_store_gains_train_epochs_and_model_preprocess(tmp_path):
    """v6 -> v7: the per-epoch metrics table and ``models.inference.preprocess``; existing models keep theirs."""
    path = tmp_path / "v6.duckdb"
    open_store(path).write_tables(_models(["parent"]))
    con = duckdb.connect(str(path))
    con.execute("DROP TABLE train_epochs")
    con.execute("ALTER TABLE models DROP COLUMN preprocess")
    con.execute("UPDATE meta SET value = '6' WHERE key = 'schema_version'")
    con.close()
    store = open_store(path)
    assert store.schema_version() == SCHEMA_VERSION == 8
    assert store.model_names() == ["parent"] and store.select("models")["preprocess"].isna().all()
    epochs = pd.DataFrame([{"run_id": "train-1", "epoch": 1, "train_loss": 0.7, "val_loss": 0.6,
                            "val_auc": 0.55, "lr": 1e-5, "images": 32, "elapsed_s": 1.5}])
    store.write_tables({"train_epochs": epochs})
    assert store.select("train_epochs", run_id="train-1")["val_loss"].tolist() == [0.6]
