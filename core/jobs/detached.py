"""Every long job in its own process: queue a run, start its worker, follow it, cancel, resume.

Why: a job computed inside a Streamlit script thread dies with the script (a click, a rerun, a
closed tab), and the architecture says work runs outside the UI. So a page (or the CLI) only
*queues* a run (a ``runs`` row with status 'queued' and its parameters, `RunFolder.queue`) and
starts ``python -m core jobs work RUN_ID`` detached (`core.jobs.launchers.launch_local`: its own
session, its output in the run's ``worker.log``). The worker calls the job's own function with
``resume=RUN_ID``, so the function's run takes over the queued row, and a resume of a failed or
cancelled run is the same command again: each job skips what it stored before.

The page then follows the run through the store (`job_status`): status, items done / total, rate
and an ETA from the rate since the first item, the error line, and whether the worker process is
still alive (a worker killed from outside leaves 'running' with no process: shown as such,
never written from the read path).
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from core.errors import InputError
from core.jobs.launchers import is_alive, launch_local, process_identity
from core.jobs.run_folder import RunFolder, read_progress
from core.store import Store
from core.store.runs import get_run, list_runs, write_run

__all__ = ["DETACHED_KINDS", "JobStatus", "job_status", "latest_job", "log_path", "run_job", "start_job",
           "worker_command"]

LAUNCH_RECORD = "job-launch.json"             # in the run folder: the worker's pid and command


def _filters(store: Store, params: dict, run_id: str) -> dict:
    from core.jobs.filters import run_filters
    return run_filters(store, **params, resume=run_id).to_dict()


def _density(store: Store, params: dict, run_id: str) -> dict:
    from core.jobs.density import estimate_classical
    if params.get("method") != "classical":
        raise InputError(f"density method {params.get('method')!r} does not run detached here; "
                         "pass method 'classical'")
    return estimate_classical(store, test_set=params["test_set"], calibrate_on=params.get("calibrate_on"),
                              threshold=params.get("threshold"), resume=run_id).to_dict()


def _check_filters(store: Store, params: dict) -> None:
    from core.jobs.filters import plan_filter_run
    plan_filter_run(store, **params)       # settings, test set and spacing, as the run checks them


def _check_density(store: Store, params: dict) -> None:
    from core.density.calibration import check_source
    if params.get("method") != "classical":
        raise InputError(f"density method {params.get('method')!r} does not run detached here; "
                         "pass method 'classical'")
    if store.images(test_set=params["test_set"]).empty:
        raise InputError(f"test set {params['test_set']!r} has no images; import images first")
    if params.get("calibrate_on") is not None:
        check_source(store, params["calibrate_on"])


# kind -> the job's function over its stored parameters (taking over the queued row), and the
# checks its parameters pass before anything is queued (bad input changes nothing)
JOBS = {"filters": _filters, "density": _density}
CHECKS = {"filters": _check_filters, "density": _check_density}
DETACHED_KINDS = tuple(JOBS)


def run_job(store: Store, run_id: str) -> dict:
    """Run the queued (or stopped) run ``run_id`` in this process: what the worker does."""
    row = get_run(store, run_id)
    if row is None:
        raise InputError(f"run_id {run_id!r} is not in this store; see `python -m core runs list`")
    if row["kind"] not in JOBS:
        raise InputError(f"run {run_id} is a {row['kind']} run; `jobs work` runs {', '.join(JOBS)}")
    if row["status"] == "done":
        raise InputError(f"run {run_id} is done; nothing to run")
    try:
        return JOBS[row["kind"]](store, dict(row["params"]), run_id)
    except Exception as exc:
        # failed before its run took the row over (its settings' checks): the row says so
        if get_run(store, run_id)["status"] == "queued":
            write_run(store, row | {"status": "failed", "ended_at": datetime.now(),
                                    "error": " ".join(f"{type(exc).__name__}: {exc}".split())[:2000]})
        raise


def worker_command(store: Store, run_id: str) -> tuple[str, list[str]]:
    """(module, arguments) of the worker of ``run_id``: the CLI, on this store."""
    return "core", ["jobs", "work", run_id, "--db", str(store.path)]


def start_job(store: Store, kind: str, params: Mapping, *, resume: str | None = None) -> str:
    """Queue a run of ``kind`` with ``params`` (the job function's keyword arguments), or take
    back run ``resume`` (failed or cancelled), and start its worker; returns the run_id at once."""
    if kind not in DETACHED_KINDS:
        raise InputError(f"kind {kind!r} does not run detached; pass one of {', '.join(DETACHED_KINDS)}")
    if resume is None:
        CHECKS[kind](store, dict(params))
        run_id = RunFolder.queue(store, kind, params).run_id
    else:
        state = job_status(store, resume)
        if state.kind != kind or state.status not in ("failed", "cancelled", "worker gone"):
            raise InputError(f"run {resume} is a {state.kind} run, {state.status}; resume a failed, "
                             f"cancelled or worker-gone {kind} run")
        run_id = RunFolder.queue(store, kind, {}, resume=resume).run_id
    module, args = worker_command(store, run_id)
    folder = store.files_dir / get_run(store, run_id)["folder"]
    launched = launch_local(module, args, folder, env={"PYTHONUNBUFFERED": "1"})
    (folder / LAUNCH_RECORD).write_text(json.dumps(
        {"pid": launched.pid, "identity": process_identity(launched.pid), "command": launched.command,
         "host": os.uname().nodename, "started_at": datetime.now().isoformat(timespec="seconds")}))
    return run_id


@dataclass(frozen=True)
class JobStatus:
    """What a page shows of one run. ``status`` is the row's, except 'running' whose worker is
    gone on this host, shown as 'worker gone' (the row is left as it is: a read never writes)."""

    run_id: str
    kind: str
    status: str
    done: int
    total: int | None
    message: str
    error: str | None
    rate_per_s: float | None
    eta_s: float | None
    started_at: datetime | None

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")

    def describe(self) -> str:
        """One line: 'running · 12 of 40 images · 2.1/s · about 13 s left'."""
        parts = [self.status]
        if self.total:
            parts.append(f"{self.done} of {self.total}")
        if self.rate_per_s and self.status == "running":
            parts.append(f"{self.rate_per_s:.2g}/s")
        if self.eta_s is not None and self.status == "running":
            parts.append(f"about {_duration(self.eta_s)} left")
        if self.error:
            parts.append(self.error)
        return " · ".join(parts)


def job_status(store: Store, run_id: str) -> JobStatus:
    """The run's status, progress, rate and ETA (reads only)."""
    row = get_run(store, run_id)
    if row is None:
        raise InputError(f"run_id {run_id!r} is not in this store; see `python -m core runs list`")
    live = read_progress(store, run_id) or {}
    done, total = int(live.get("done", row.get("progress_done") or 0)), live.get("total", row.get("progress_total"))
    total = None if total is None or total != total else int(total)
    status = row["status"]
    if status in ("queued", "running") and _worker_gone(store, row):
        status = "worker gone"
    started = row.get("started_at")
    rate = eta = None
    if status == "running" and started is not None and done > 0:
        elapsed = (datetime.now() - started.to_pydatetime().replace(tzinfo=None)).total_seconds() \
            if hasattr(started, "to_pydatetime") else (datetime.now() - started).total_seconds()
        rate = done / max(elapsed, 1e-9)
        eta = (total - done) / rate if total else None
    return JobStatus(run_id, row["kind"], status, done, total, str(live.get("message", row.get("message") or "")),
                     row.get("error"), rate, eta, started)


def latest_job(store: Store, kind: str, **params) -> JobStatus | None:
    """The newest run of ``kind`` whose parameters include ``params``, or None."""
    for row in list_runs(store, kind=kind):
        if all(row["params"].get(k) == v for k, v in params.items()):
            return job_status(store, row["run_id"])
    return None


def _worker_gone(store: Store, row: dict) -> bool:
    """True when the run's launch record names a process on this host that no longer runs."""
    path = store.files_dir / row["folder"] / LAUNCH_RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return False               # started another way (the CLI in the foreground): can't tell
    if record.get("host") != os.uname().nodename:
        return False
    pid = int(record["pid"])
    return not is_alive(pid) or process_identity(pid) != record.get("identity")   # pid reused


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds} s" if seconds < 90 else f"{seconds // 60} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def log_path(store: Store, run_id: str) -> Path:
    """The worker's log (stdout and stderr; a failure's whole traceback)."""
    row = get_run(store, run_id)
    if row is None:
        raise InputError(f"run_id {run_id!r} is not in this store")
    return store.files_dir / row["folder"] / "worker.log"
