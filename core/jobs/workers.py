"""Start the training worker (`models.training.worker`) of a sweep through its launcher.

``local`` one detached process, ``torchrun`` one process per GPU (``nodes`` > 1: this node's
share, with the command for each other node in ``launch.json``), ``slurm`` one task per GPU
through submitit (`core.jobs.launchers`). In each run's folder ``launch.json`` records how its
worker was started (command, pid or Slurm job id, log, host), and ``worker.json`` the process that
trains it (rank 0, or the CLI training in its own process): for the CLI, for a person, and to
tell a run left 'running' by workers that were killed, or by a machine that restarted, so that
it can be resumed. Before either exists, ``creator.json`` names the process that created the
run (or is resuming it) and is to start its worker: killed before it did (``--runs 100``,
Ctrl-C), its runs are orphans too.

Reading never writes: `gone_workers` tells a list which 'running' runs have lost their worker,
from these files alone. The writes are short store transactions of their own: `claim_run` (a
resume takes a run: of concurrent resumes exactly one wins), `fail_orphaned_runs` (records
orphans failed) and `fail_run`.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path

import pandas as pd

from core.errors import InputError
from core.store import Store
from core.store.runs import get_run, list_runs, run_frame
from core.store.writes import upsert
from core.jobs.launchers import (SlurmOptions, is_alive, launch_local, launch_slurm, launch_torchrun,
                              process_identity, stop, torchrun_command)

__all__ = ["CLAIM_LOCK", "CREATOR_FILE", "LAUNCH_FILE", "WORKER", "WORKER_FILE", "claim_run",
           "fail_orphaned_runs", "fail_run", "gone_workers", "launch_record", "orphaned_runs",
           "record_creator", "record_worker", "slurm_options", "start_worker", "worker_alive",
           "worker_args"]

WORKER = "models.training.worker"
TRAIN_KIND = "train"   # the runs table's kind for a training run
LAUNCH_FILE = "launch.json"   # the launcher's process: torchrun, or the local worker itself
WORKER_FILE = "worker.json"   # the process that trains: rank 0 (its own session under torchrun)
CREATOR_FILE = "creator.json"  # the process that is to start the worker (until launch.json lands)
CLAIM_LOCK = "claim.lock"   # flock'ed by a resume's claim (`claim_run`)


def start_worker(store: Store, run_ids: list[str], request, *, detach: bool) -> dict:
    """Start the worker of ``run_ids`` (a sweep made from ``request``, a `TrainRequest`) through
    the request's launcher; unless ``detach``, waits for a one-node torchrun (runs it left
    'running' are then failed); a Slurm job, or a multi-node torchrun, is left to run.
    Returns what was launched, also written to ``launch.json``."""
    folders = _folders(store, run_ids)
    folder = folders[0]
    args = worker_args(store, run_ids, request.device)
    record_creator(store, run_ids)   # this process starts the worker now: a resume's creator
    for path in folders:   # a resumed run's old records name dead workers until new ones land
        for name in (LAUNCH_FILE, WORKER_FILE):
            (path / name).unlink(missing_ok=True)
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
    _write_records(folders, LAUNCH_FILE, record)
    if not detach and launched.pid is not None and not other_nodes:
        _wait(launched.pid)
        _fail_unfinished(store, run_ids, launched.log_path)
    return record


def record_creator(store: Store, run_ids: list[str]) -> None:
    """Record this process as the one that is to start ``run_ids``' worker: until a launch or
    worker record exists, the runs live only as long as it does (`orphaned_runs`)."""
    _write_records(_folders(store, run_ids), CREATOR_FILE, _own_record())


def record_worker(store: Store, run_ids: list[str]) -> None:
    """Record this process as the one that trains ``run_ids`` (rank 0 of a worker, or the CLI
    training in its own process)."""
    _write_records(_folders(store, run_ids), WORKER_FILE, _own_record())


def worker_alive(store: Store, run_id: str) -> bool | None:
    """Whether a process of ``run_id``'s worker still runs (the launcher's, or the one that
    trains: torchrun killed alone leaves its ranks training); None where this machine cannot
    tell (a Slurm job, a multi-node torchrun, another host, no record)."""
    return _alive(_records(_folder(store, get_run(store, run_id))))


def gone_workers(store: Store, runs: Iterable[Mapping]) -> dict[str, str]:
    """The 'running' runs among ``runs`` (rows as read) whose worker is gone, each with the
    reason a person reads: from their folders' records only, so a list pays no store read per
    run and writes nothing (it shows them as such; `fail_orphaned_runs` records them)."""
    return {run_id: _gone_reason(pair) for run_id, (_, pair) in _orphans(store, runs).items()}


def orphaned_runs(store: Store) -> dict[str, tuple]:
    """The 'running' training runs whose worker is gone, with the records that say so: the
    launch and worker records, or, where neither exists yet, the creator's (a process killed
    after it created the runs and before it started their worker)."""
    orphans = _orphans(store, list_runs(store, kind=TRAIN_KIND, status="running"))
    return {run_id: pair for run_id, (_, pair) in orphans.items()}


def fail_orphaned_runs(store: Store, run_ids: Iterable[str] | None = None) -> list[str]:
    """Record as failed every 'running' training run (of ``run_ids``, default all) whose worker
    is gone (killed whole, or the machine restarted), so that it can be resumed; returns their
    ids. One short transaction, under each run's claim lock (`claim_run`): a run resumed
    meanwhile (its records replaced) is left alone."""
    orphans = _orphans(store, list_runs(store, kind=TRAIN_KIND, status="running",
                                        **({} if run_ids is None else {"run_id": list(run_ids)})))
    with contextlib.ExitStack() as locks:
        for run_id in sorted(orphans):   # one order for every holder of several: no deadlock
            locks.enter_context(_claim_lock(orphans[run_id][0]))
        return _fail(store, {r: _gone_reason(pair) for r, (_, pair) in orphans.items()},
                     still=lambda run: _lifeline(_folder(store, run)) == orphans[run["run_id"]][1])


def fail_run(store: Store, run_id: str, error: str) -> bool:
    """Record a run whose worker has ended (or never began) as failed, unless it ended first."""
    return bool(_fail(store, {run_id: error}))


def claim_run(store: Store, run_id: str) -> dict:
    """Take run ``run_id`` for a resume in this process; returns its row, now 'running'.

    Why: two resumes of one run (two shells, two browser sessions, a double click) both
    trained into its folder and registered two children. A claim holds the run folder's
    `CLAIM_LOCK` (``flock``: exclusive between processes and between threads, each holding its
    own open file; dropped by the kernel if the holder dies) around one store transaction that
    checks the run and takes it, writing this process's creator record before it commits. So
    exactly one of any number of concurrent claims wins; the next finds the run 'running' with
    a live creator and gets one `InputError` line. A run that is done, or 'running' with a
    live worker, is refused; a failed, cancelled or orphaned one is taken (one whose liveness
    this machine cannot tell, a Slurm job or another host's, too, as before).
    """
    row = get_run(store, run_id)
    if row is None:
        raise InputError(f"run_id {run_id!r} is not in this store; see `python -m core runs list`")
    folder = _folder(store, row)
    with _claim_lock(folder):   # first: the transaction must see the last claim's row
        with store.transaction() as con:
            row = get_run(store, run_id)
            if row["status"] == "done":
                raise InputError(f"run {run_id} is done; launch a new run instead")
            lifeline = _lifeline(folder)
            if row["status"] == "running" and _alive(lifeline):
                raise InputError(f"run {run_id} is still training or being resumed "
                                 f"({_pids(lifeline)}); let it finish, or cancel it first "
                                 f"(`python -m core runs cancel {run_id}`)")
            row |= {"status": "running", "ended_at": None, "error": None}
            upsert(con, "runs", run_frame(row))
            for name in (LAUNCH_FILE, WORKER_FILE):   # they name the dead worker: now this one
                (folder / name).unlink(missing_ok=True)
            _write_records([folder], CREATOR_FILE, _own_record())
    return row


def worker_args(store: Store, run_ids: list[str], device: str) -> list[str]:
    """The worker's arguments (after ``python -m models.training.worker``) for ``run_ids``."""
    return ["--db", str(store.path), "--device", device, *run_ids]


def launch_record(store: Store, run_id: str) -> dict | None:
    """How the worker that trains ``run_id`` was started (None: no record)."""
    return _read_record(_folder(store, get_run(store, run_id)), LAUNCH_FILE)


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
    _fail(store, dict.fromkeys(run_ids, f"the worker exited before the run ended; see {log}"))


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


def _orphans(store: Store, runs: Iterable[Mapping]) -> dict[str, tuple[Path, tuple]]:
    """run_id -> (folder, lifeline) of the 'running' ``runs`` whose lifeline says dead (files
    only)."""
    folders = {run["run_id"]: _folder(store, run) for run in runs if run["status"] == "running"}
    lifelines = {run_id: (folder, _lifeline(folder)) for run_id, folder in folders.items()}
    return {run_id: pair for run_id, pair in lifelines.items() if _alive(pair[1]) is False}


@contextlib.contextmanager
def _claim_lock(folder: Path) -> Iterator[None]:
    """The run's `CLAIM_LOCK`, held until the block ends (closing the file releases it)."""
    with open(folder / CLAIM_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _pids(lifeline: tuple[dict | None, ...]) -> str:
    pids = dict.fromkeys(r["pid"] for r in lifeline if r and r.get("pid") is not None)
    return "pid " + " and ".join(map(str, pids))


def _gone_reason(lifeline: tuple[dict | None, ...]) -> str:
    gone = (f"the process that created it ({_pids(lifeline)}) ended before starting its worker"
            if len(lifeline) == 1 else f"its worker ({_pids(lifeline)}) is gone")
    return f"{gone}: killed, or the machine restarted; resume the run from its last epoch"


def _fail(store: Store, errors: Mapping[str, str],
          still: Callable[[dict], bool] = lambda run: True) -> list[str]:
    """Record the runs of ``errors`` (run_id -> error) that are still 'running' (and pass
    ``still``, checked inside) as failed, in one short transaction; returns their ids."""
    if not errors:
        return []
    with store.transaction() as con:
        failed = [run | {"status": "failed", "ended_at": datetime.now(),
                         "error": errors[run["run_id"]]}
                  for run in list_runs(store, run_id=list(errors))
                  if run["status"] == "running" and still(run)]
        if failed:
            upsert(con, "runs", pd.concat(map(run_frame, failed), ignore_index=True))
    return [run["run_id"] for run in failed]


def _folder(store: Store, run: Mapping) -> Path:
    return store.files_dir / run["folder"]


def _folders(store: Store, run_ids: list[str]) -> list[Path]:
    """The folders of ``run_ids``, in their order (one store read)."""
    by_id = {run["run_id"]: _folder(store, run) for run in list_runs(store, run_id=run_ids)}
    return [by_id[run_id] for run_id in run_ids]


def _records(folder: Path) -> tuple[dict | None, dict | None]:
    return _read_record(folder, LAUNCH_FILE), _read_record(folder, WORKER_FILE)


def _lifeline(folder: Path) -> tuple[dict | None, ...]:
    """The records that say whether the run in ``folder`` still has a process behind it:
    (launch, worker) once either exists, else (creator,) (None inside where there is none)."""
    records = _records(folder)
    return records if any(records) else (_read_record(folder, CREATOR_FILE),)


def _read_record(folder: Path, name: str) -> dict | None:
    try:
        return json.loads((folder / name).read_text())
    except FileNotFoundError:
        return None


def _process_record(pid: int | None) -> dict:
    return {"host": socket.gethostname(), "identity": None if pid is None else process_identity(pid)}


def _own_record() -> dict:
    return {"pid": os.getpid(), "command": sys.argv, **_process_record(os.getpid())}


def _write_records(folders: Iterable[Path], name: str, record: dict) -> None:
    """Each record whole or not at all (a list may read it meanwhile)."""
    for folder in folders:
        tmp = folder / f"{name}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(folder / name)
