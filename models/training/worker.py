"""The training worker: the process (or every rank of the torchrun/Slurm job) that trains a
sweep's runs, ``python -m models.training.worker --db STORE --device D RUN_ID ...``, one run after
another; started by `core.jobs.workers`.

Under several processes only rank 0 touches the store: it opens each run, caches its inputs,
then sends the other ranks what they need (`models.training.distributed.broadcast_object`: the cached
sets, the loop settings, the run folder), exactly one message per run, None for a run that
ended before training; every rank then trains its shares (`models.training.recipe.FineTuneRecipe`)
and rank 0 alone registers and scores the child. A run that fails *during* training leaves the
other ranks inside a collective, so rank 0 then ends the job (torchrun stops the others); a
SIGTERM (torchrun stopping a job whose other rank failed, or a hard cancel) is recorded as the
run's failure before the process ends.
"""
from __future__ import annotations

import argparse
import dataclasses
import faulthandler
import signal
import sys
from pathlib import Path

from core.jobs.run_folder import RunCancelled
from models.training.distributed import Announcer, DistContext, broadcast_object, leave_together

__all__ = ["follow_run", "main"]


def follow_run(ctx: DistContext) -> None:
    """A rank other than 0: wait for rank 0's message, train its shares of that run."""
    from models.networks.gmic import build_gmic
    from models.training.recipe import FineTuneRecipe

    work = broadcast_object(None, ctx)
    if work is None:   # the run ended before training (a cancel, a failure): nothing to do
        return
    settings = dataclasses.replace(work["settings"], device=ctx.device)
    recipe = FineTuneRecipe(settings, folder=Path(work["folder"]), meta=work["meta"], ctx=ctx)
    try:   # DDP copies rank 0's starting weights into this model
        recipe.setup(build_gmic(work["config"]), work["train"], work["val"])
        recipe.train()
    except RunCancelled:
        pass


def _stop_on_sigterm(signum, frame) -> None:
    raise SystemExit(f"stopped by signal {signum} (torchrun ends every rank when one fails, "
                     "and a hard cancel sends it; see worker.log)")


def main(argv: list[str] | None = None) -> int:
    """``python -m models.training.worker --db STORE [--device D] RUN_ID ...``; every rank of a
    torchrun or Slurm job runs the same command."""
    from models.training.distributed import init_distributed, leave_process, teardown

    parser = argparse.ArgumentParser(prog="python -m models.training.worker", description=main.__doc__)
    parser.add_argument("--db", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("run_ids", nargs="+")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    faulthandler.enable()   # a native crash (gloo, NCCL, CUDA) still leaves its Python stack in the log
    ctx = init_distributed(args.device)   # one process unless torchrun (or Slurm) started us
    print(f"worker rank {ctx.rank} of {ctx.world_size} on {ctx.device}", flush=True)
    try:
        code = _serve(ctx, args.db, args.run_ids)
    finally:
        teardown(ctx)
    return leave_process(ctx, code)


def _serve(ctx: DistContext, db: str, run_ids: list[str]) -> int:
    """Rank 0 trains ``run_ids`` one after the other; the other ranks follow each."""
    from core.store import open_store
    from models.training.sweep import execute_run
    from core.jobs.workers import fail_run, record_worker

    if not ctx.is_main:
        for _ in run_ids:
            follow_run(ctx)
        leave_together(ctx)
        return 0
    store = open_store(db)
    record_worker(store, run_ids)   # torchrun's ranks lead their own sessions: name rank 0
    failed = False
    for i, run_id in enumerate(run_ids):
        announcer = Announcer(ctx)
        row = execute_run(store, run_id, ctx=ctx, announcer=announcer)
        print(f"{run_id}: {row['status']}" + (f" ({row['error']})" if row.get("error") else ""),
              flush=True)
        failed |= row["status"] == "failed"
        if ctx.distributed and announcer.training and row["status"] == "failed":
            for rest in run_ids[i + 1:]:   # the other ranks wait in a collective: end the job
                fail_run(store, rest, f"not started: run {run_id} failed while training and "
                                      "ended its job; resume this run")
            return 1
    leave_together(ctx)
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
