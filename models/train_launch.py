"""Start the training worker (`models.train_worker`) of a sweep through its launcher.

``local`` one detached process, ``torchrun`` one process per GPU (``nodes`` > 1: this node's
share, with the command for each other node in ``launch.json``), ``slurm`` one task per GPU
through submitit (`models.launchers`). ``launch.json`` in the sweep's first run folder records
how the worker was started (command, pid or Slurm job id, log), for the CLI and for a person.
"""
from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

from core.store import Store
from core.store.runs import get_run, write_run
from models.launchers import (SlurmOptions, is_alive, launch_local, launch_slurm, launch_torchrun,
                              stop, torchrun_command)

__all__ = ["LAUNCH_FILE", "WORKER", "launch_record", "slurm_options", "start_worker", "worker_args"]

WORKER = "models.train_worker"
LAUNCH_FILE = "launch.json"


def start_worker(store: Store, run_ids: list[str], request, *, detach: bool) -> dict:
    """Start the worker of ``run_ids`` (a sweep made from ``request``, a `TrainRequest`) through
    the request's launcher; unless ``detach``, waits for a one-node torchrun (runs it left
    'running' are then failed); a Slurm job, or a multi-node torchrun, is left to run.
    Returns what was launched, also written to ``launch.json``."""
    folder = store.files_dir / get_run(store, run_ids[0])["folder"]
    args = worker_args(store, run_ids, request.device)
    other_nodes = []
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
    record = {"launcher": launched.launcher, "command": launched.command, "pid": launched.pid,
              "job_id": launched.job_id, "log": str(launched.log_path), "other_nodes": other_nodes}
    (folder / LAUNCH_FILE).write_text(json.dumps(record, indent=1))
    if not detach and launched.pid is not None and not other_nodes:
        _wait(launched.pid)
        _fail_unfinished(store, run_ids, launched.log_path)
    return record


def worker_args(store: Store, run_ids: list[str], device: str) -> list[str]:
    """The worker's arguments (after ``python -m models.train_worker``) for ``run_ids``."""
    return ["--db", str(store.path), "--device", device, *run_ids]


def launch_record(store: Store, run_id: str) -> dict | None:
    """How the worker of the sweep that ``run_id`` opens was started (None: in the caller)."""
    path = store.files_dir / get_run(store, run_id)["folder"] / LAUNCH_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def slurm_options(request):
    """The request's Slurm job: one task per GPU (``nproc_per_node``), or per process on CPU."""
    cpu = request.device == "cpu"
    return SlurmOptions(partition=request.partition, time_min=request.time_min,
                        nodes=request.nodes, gpus_per_node=0 if cpu else request.nproc_per_node,
                        tasks_per_node=request.nproc_per_node, account=request.account)


def _wait(pid: int) -> None:
    """Until the worker exits; Ctrl-C stops it (its whole session: torchrun and its ranks)."""
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
        row = get_run(store, run_id)
        if row["status"] == "running":
            write_run(store, row | {"status": "failed", "ended_at": datetime.now(),
                                    "error": f"the worker exited before the run ended; see {log}"})
