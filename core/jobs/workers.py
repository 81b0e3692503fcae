"""Start the training worker (`models.training.worker`) of a sweep through its launcher.

``local`` one detached process, ``torchrun`` one process per GPU (``nodes`` > 1: this node's
share, with the command for each other node in ``launch.json``), ``slurm`` one task per GPU
through submitit (`core.jobs.launchers`). In each run's folder ``launch.json`` records how its
worker was started (command, pid or Slurm job id, log, host), and ``worker.json`` the process that
trains it (rank 0, or the CLI training in its own process): for the CLI, for a person, and for
`fail_orphaned_runs`: a run left 'running' by workers that were killed, or by a machine that
restarted, is recorded as failed, so that the page and the CLI offer to resume it. Before either
exists, ``creator.json`` names the process that created the run (or is resuming it) and is to
start its worker: killed before it did (``--runs 100``, Ctrl-C), its runs are orphans too.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from datetime import datetime
from pathlib import Path

from core.store import Store
from core.store.runs import get_run, write_run
from core.jobs.launchers import (SlurmOptions, is_alive, launch_local, launch_slurm, launch_torchrun,
                              process_identity, stop, torchrun_command)

__all__ = ["CREATOR_FILE", "LAUNCH_FILE", "WORKER", "WORKER_FILE", "fail_orphaned_runs", "fail_run",
           "launch_record", "orphaned_runs", "record_creator", "record_worker", "slurm_options",
           "start_worker", "worker_alive", "worker_args"]

WORKER = "models.training.worker"
TRAIN_KIND = "train"   # the runs table's kind for a training run
LAUNCH_FILE = "launch.json"   # the launcher's process: torchrun, or the local worker itself
WORKER_FILE = "worker.json"   # the process that trains: rank 0 (its own session under torchrun)
CREATOR_FILE = "creator.json"  # the process that is to start the worker (until launch.json lands)


def start_worker(store: Store, run_ids: list[str], request, *, detach: bool) -> dict:
    """Start the worker of ``run_ids`` (a sweep made from ``request``, a `TrainRequest`) through
    the request's launcher; unless ``detach``, waits for a one-node torchrun (runs it left
    'running' are then failed); a Slurm job, or a multi-node torchrun, is left to run.
    Returns what was launched, also written to ``launch.json``."""
    folder = store.files_dir / get_run(store, run_ids[0])["folder"]
    args = worker_args(store, run_ids, request.device)
    record_creator(store, run_ids)   # this process starts the worker now: a resume's creator
    for run_id in run_ids:   # a resumed run's old records name dead workers until new ones land
        for name in (LAUNCH_FILE, WORKER_FILE):
            _record_path(store, run_id, name).unlink(missing_ok=True)
    other_nodes = []
    try:
        if request.launcher == "local":
            launched = launch_local(WORKER, args, folder)
        elif request.launcher == "torchrun":
            shape = dict(nproc_per_node=request.nproc_per_node, nnodes=request.nodes,
                         rdzv_endpoint=request.rdzv_endpoint)
            launched = launch_torchrun(WORKER, args, folder, node_rank=0, **shape)
            other_nodes = [" ".join(torchrun_command(WORKER, args, node_rank=rank, **shape))
                           for rank in range(1, request.nodes)]
        else:
            launched = launch_slurm(WORKER, args, folder, slurm_options(request))
    except Exception as exc:   # sbatch refused the job, no process could start: say so per run
        with contextlib.suppress(Exception):   # the launch's own error is the one to show
            for run_id in run_ids:
                fail_run(store, run_id, f"its worker did not start: {exc}")
        raise
    record = {"launcher": launched.launcher, "command": launched.command, "pid": launched.pid,
              "job_id": launched.job_id, "log": str(launched.log_path), "other_nodes": other_nodes,
              **_process_record(launched.pid)}
    _write_records(store, run_ids, LAUNCH_FILE, record)
    if not detach and launched.pid is not None and not other_nodes:
        _wait(launched.pid)
        _fail_unfinished(store, run_ids, launched.log_path)
    return record


def record_creator(store: Store, run_ids: list[str]) -> None:
    """Record this process as the one that is to start ``run_ids``' worker: until a launch or
    worker record exists, the runs live only as long as it does (`orphaned_runs`)."""
    _write_records(store, run_ids, CREATOR_FILE, {"pid": os.getpid(), "command": sys.argv,
                                                  **_process_record(os.getpid())})


def record_worker(store: Store, run_ids: list[str]) -> None:
    """Record this process as the one that trains ``run_ids`` (rank 0 of a worker, or the CLI
    training in its own process)."""
    _write_records(store, run_ids, WORKER_FILE, {"pid": os.getpid(), "command": sys.argv,
                                                 **_process_record(os.getpid())})


def worker_alive(store: Store, run_id: str) -> bool | None:
    """Whether a process of ``run_id``'s worker still runs (the launcher's, or the one that
    trains: torchrun killed alone leaves its ranks training); None where this machine cannot
    tell (a Slurm job, a multi-node torchrun, another host, no record)."""
    return _alive(_records(store, run_id))


def orphaned_runs(store: Store) -> dict[str, tuple]:
    """The 'running' training runs whose worker is gone, with the records that say so: the
    launch and worker records, or, where neither exists yet, the creator's (a process killed
    after it created the runs and before it started their worker)."""
    running = store.select("runs", kind=TRAIN_KIND, status="running")["run_id"]
    records = {run_id: _lifeline(store, run_id) for run_id in running}
    return {run_id: pair for run_id, pair in records.items() if _alive(pair) is False}


def fail_orphaned_runs(store: Store) -> list[str]:
    """Record as failed every 'running' training run whose worker is gone (killed whole, or the
    machine restarted), so that it can be resumed; returns their ids. A run resumed meanwhile
    (its record replaced) is left alone."""
    failed = []
    for run_id, pair in orphaned_runs(store).items():
        pids = " and ".join(str(p) for p in dict.fromkeys(r["pid"] for r in pair if r))
        gone = (f"the process that created it (pid {pids}) ended before starting its worker"
                if len(pair) == 1 else f"its worker (pid {pids}) is gone")
        if _lifeline(store, run_id) == pair and fail_run(
                store, run_id, f"{gone}: killed, or the machine restarted; resume the run from "
                               "its last epoch"):
            failed.append(run_id)
    return failed


def fail_run(store: Store, run_id: str, error: str) -> bool:
    """Record a run whose worker has ended (or never began) as failed, unless it ended first."""
    row = get_run(store, run_id)
    if row["status"] != "running":
        return False
    write_run(store, row | {"status": "failed", "ended_at": datetime.now(), "error": error})
    return True


def worker_args(store: Store, run_ids: list[str], device: str) -> list[str]:
    """The worker's arguments (after ``python -m models.training.worker``) for ``run_ids``."""
    return ["--db", str(store.path), "--device", device, *run_ids]


def launch_record(store: Store, run_id: str) -> dict | None:
    """How the worker that trains ``run_id`` was started (None: no record)."""
    return _read_record(store, run_id, LAUNCH_FILE)


def slurm_options(request):
    """The request's Slurm job: one task per GPU (``nproc_per_node``), or per process on CPU."""
    cpu = request.device == "cpu"
    return SlurmOptions(partition=request.partition, time_min=request.time_min,
                        nodes=request.nodes, gpus_per_node=0 if cpu else request.nproc_per_node,
                        tasks_per_node=request.nproc_per_node, account=request.account)


def _wait(pid: int) -> None:
    """Until the worker exits; Ctrl-C stops it (its session: torchrun, which stops its ranks)."""
    try:
        while is_alive(pid):
            time.sleep(0.5)
    except KeyboardInterrupt:
        stop(pid)
        raise


def _fail_unfinished(store: Store, run_ids: list[str], log: Path) -> None:
    """A run still 'running' after its worker exited died with it (a crashed rank, a failed
    rendezvous, a kill): record it as failed, pointing at the log, so the CLI exits 1."""
    for run_id in run_ids:
        fail_run(store, run_id, f"the worker exited before the run ended; see {log}")


def _alive(records: tuple[dict | None, ...]) -> bool | None:
    """`worker_alive` of a run's records (launch, worker; or creator): alive while any
    recorded process is."""
    states = [s for s in map(_process_alive, records) if s is not None]
    return any(states) if states else None


def _process_alive(record: dict | None) -> bool | None:
    """Whether the recorded process runs (None: not a process of this machine). A pid now used
    by another process counts as gone (`process_identity`)."""
    if not record or record.get("pid") is None or record.get("host") != socket.gethostname():
        return None
    if record.get("other_nodes"):   # a multi-node torchrun: rank 0 may train on another node
        return None
    pid, identity = record["pid"], record.get("identity")
    now = process_identity(pid)
    if now is not None and identity is not None and now != identity:
        return False
    return is_alive(pid)


def _records(store: Store, run_id: str) -> tuple[dict | None, dict | None]:
    return _read_record(store, run_id, LAUNCH_FILE), _read_record(store, run_id, WORKER_FILE)


def _lifeline(store: Store, run_id: str) -> tuple[dict | None, ...]:
    """The records that say whether ``run_id`` still has a process behind it: (launch, worker)
    once either exists, else (creator,) (None inside where there is no record)."""
    records = _records(store, run_id)
    return records if any(records) else (_read_record(store, run_id, CREATOR_FILE),)


def _read_record(store: Store, run_id: str, name: str) -> dict | None:
    path = _record_path(store, run_id, name)
    return json.loads(path.read_text()) if path.is_file() else None


def _process_record(pid: int | None) -> dict:
    return {"host": socket.gethostname(), "identity": None if pid is None else process_identity(pid)}


def _record_path(store: Store, run_id: str, name: str) -> Path:
    return store.files_dir / get_run(store, run_id)["folder"] / name


def _write_records(store: Store, run_ids: list[str], name: str, record: dict) -> None:
    for run_id in run_ids:
        _record_path(store, run_id, name).write_text(json.dumps(record, indent=1))
