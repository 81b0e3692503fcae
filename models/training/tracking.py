"""Optional MLflow logging of training runs, beside the store (which stays the record).

``make_tracker(uri)`` with a URI (``--mlflow-uri``) or ``MLFLOW_TRACKING_URI`` set gives an
:class:`MLflowTracker`: parameters, per-epoch metrics (train_loss, val_loss, val_auc), checkpoint
paths (tags ``checkpoint.<name>``) and the final status. Without either, a :class:`NullTracker`
that does nothing. mlflow is imported only then, so the app runs without it. Only the main rank of
a distributed run should make a real tracker. MLflow 3 refuses a plain folder (``file:``) store
unless ``MLFLOW_ALLOW_FILE_STORE=true``; a server (``http://...``) or a database URI needs nothing.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping

from core.errors import InputError

__all__ = ["MLflowTracker", "NullTracker", "make_tracker"]

#: our run statuses -> MLflow's
_STATUS = {"done": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}


class NullTracker:
    """No tracking URI: every call does nothing."""

    run_id: str | None = None

    def log_params(self, params: Mapping) -> None: ...

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None: ...

    def log_checkpoint(self, name: str, path) -> None: ...

    def finish(self, status: str) -> None: ...


class MLflowTracker(NullTracker):
    """One MLflow run; ``resume_run_id`` reopens it (a resumed training run continues its record)."""

    def __init__(self, uri: str, *, experiment: str = "ilcscope", run_name: str | None = None,
                 resume_run_id: str | None = None) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise InputError("an MLflow tracking URI was given but mlflow is not installed: "
                             "pip install mlflow-skinny, or drop --mlflow-uri / MLFLOW_TRACKING_URI") from None
        self._client = MlflowClient(tracking_uri=uri)
        if resume_run_id:
            from mlflow.exceptions import MlflowException

            try:   # a run deleted since, or a tracking URI changed since: start a new one
                self._client.update_run(resume_run_id, status="RUNNING")
                self.run_id = resume_run_id
                return
            except MlflowException:
                pass
        found = self._client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self._client.create_experiment(experiment)
        self.run_id = self._client.create_run(experiment_id, run_name=run_name).info.run_id

    # one log_batch per call, not one request per value: each is an HTTP round trip to a server
    def log_params(self, params: Mapping) -> None:
        from mlflow.entities import Param

        self._client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        self._client.log_batch(self.run_id, metrics=[
            Metric(k, float(v), now_ms, int(epoch)) for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))])   # an undefined AUC is not logged

    def log_checkpoint(self, name: str, path) -> None:
        self._client.set_tag(self.run_id, f"checkpoint.{name}", str(path))

    def finish(self, status: str) -> None:
        if status not in _STATUS:
            raise InputError(f"run status must be one of {sorted(_STATUS)}; got {status!r}")
        self._client.set_terminated(self.run_id, status=_STATUS[status])


def make_tracker(uri: str | None = None, *, experiment: str = "ilcscope", run_name: str | None = None,
                 resume_run_id: str | None = None) -> NullTracker:
    """An MLflow tracker when ``uri`` or ``MLFLOW_TRACKING_URI`` is set, else a no-op one."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return NullTracker()
    return MLflowTracker(uri, experiment=experiment, run_name=run_name, resume_run_id=resume_run_id)
