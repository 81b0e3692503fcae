"""MLflow tracking against a real local file store, read back through mlflow's own client."""
from __future__ import annotations

import builtins
import math

import pytest

from core.errors import InputError
from models.training.tracking import MLflowTracker, NullTracker, make_tracker


def test_no_uri_is_a_no_op(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker = make_tracker(None)
    assert isinstance(tracker, NullTracker) and not isinstance(tracker, MLflowTracker)
    tracker.log_params({"lr": 1e-5})
    tracker.log_epoch(0, {"train_loss": 1.0})
    tracker.finish("done")


def test_run_is_logged_and_read_back(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # picked up without --mlflow-uri
    # mlflow-skinny has no SQLAlchemy (no sqlite store); its file store needs this opt-in since 3.x
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    tracker = make_tracker(run_name="lr-1e-05")
    assert isinstance(tracker, MLflowTracker)
    tracker.log_params({"mode": "full", "lr": 1e-5, "epochs": 2})
    tracker.log_epoch(0, {"train_loss": 0.9, "val_loss": 0.8, "val_auc": 0.61})
    tracker.log_epoch(1, {"train_loss": 0.7, "val_loss": 0.75, "val_auc": float("nan")})
    tracker.log_checkpoint("best", tmp_path / "best.pt")
    tracker.finish("cancelled")
    # a resumed run reopens the same MLflow run
    resumed = make_tracker(resume_run_id=tracker.run_id)
    resumed.log_epoch(2, {"train_loss": 0.6})
    resumed.log_checkpoint("final", tmp_path / "final.pt")
    resumed.finish("done")

    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "lr-1e-05"
    assert run.data.params == {"mode": "full", "lr": "1e-05", "epochs": "2"}
    assert run.data.tags["checkpoint.best"] == str(tmp_path / "best.pt")
    assert run.data.tags["checkpoint.final"] == str(tmp_path / "final.pt")
    history = {(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train_loss")}
    assert history == {(0, 0.9), (1, 0.7), (2, 0.6)}
    auc = client.get_metric_history(run.info.run_id, "val_auc")
    assert [(m.step, m.value) for m in auc] == [(0, 0.61)]  # the undefined AUC is not logged
    assert not any(math.isnan(m.value) for m in auc)
    assert client.get_experiment(run.info.experiment_id).name == "ilcscope"
    with pytest.raises(InputError, match="status"):
        resumed.finish("exploded")


def test_resuming_a_run_the_tracking_store_lacks_starts_a_new_one(tmp_path, monkeypatch):
    """A deleted run, or a tracking URI changed since the run began: the resumed training run
    is logged to a new MLflow run instead of failing."""
    mlflow = pytest.importorskip("mlflow")
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    missing = "0123456789abcdef0123456789abcdef"
    tracker = make_tracker(uri, run_name="lr-1e-05", resume_run_id=missing)
    assert tracker.run_id and tracker.run_id != missing
    tracker.finish("done")
    run = mlflow.tracking.MlflowClient(tracking_uri=uri).get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "lr-1e-05"


def test_uri_without_mlflow_is_one_clear_error(monkeypatch):
    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name.startswith("mlflow"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    with pytest.raises(InputError, match="mlflow is not installed"):
        make_tracker("file:///tmp/never")


def test_params_past_one_batch_s_cap_all_arrive(tmp_path, monkeypatch):
    """Parameters go in one `log_batch` (not a request each); past MLflow's 100 a request, its
    client splits them, and every one is read back."""
    mlflow = pytest.importorskip("mlflow")
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    tracker = make_tracker(uri)
    params = {f"p{i:03d}": i / 7 for i in range(150)} | {"none": None, "sets": ("a", "b")}
    tracker.log_params(params)
    tracker.log_epoch(3, {"train_loss": 0.5, "val_loss": 0.25, "val_auc": None})
    tracker.finish("done")
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    run = client.get_run(tracker.run_id)
    assert run.data.params == {k: str(v) for k, v in params.items()}
    assert run.data.metrics == {"train_loss": 0.5, "val_loss": 0.25}
    assert [m.step for m in client.get_metric_history(tracker.run_id, "val_loss")] == [3]
