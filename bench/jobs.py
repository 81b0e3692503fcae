"""The job system at scale: `python -m core runs list` on 1,000 runs.

Builds 1,000 training runs in one bulk write (`tests.test_jobs_runs.bulk_runs`: a quarter
running, half of those with a dead worker) and prints, in the same run:

- new: ``runs list --json`` in this process (imports done; best of 3), and as a fresh
  ``python -m core`` process (imports included) with its peak memory;
- old: what HEAD f5b0126 paid per running run, each record and its progress found again
  through the runs table (`get_run`: a query, and outside a connection block an attach, per
  look-up), timed on ``--old-runs`` running runs and stated per run and for the 1,000 (it then
  also failed the orphans, writing the store from a read). Target (issue 32): under 1 s.

    python bench/jobs.py [--runs 1000] [--old-runs 50]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._timing import best_of  # noqa: E402
from cli import main  # noqa: E402
from core.jobs.run_folder import read_progress  # noqa: E402
from core.jobs.workers import CREATOR_FILE, LAUNCH_FILE, WORKER_FILE  # noqa: E402
from core.store import open_store  # noqa: E402
from core.store.runs import get_run  # noqa: E402
from tests.test_jobs_runs import bulk_runs  # noqa: E402


def list_in_process(path: Path) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["runs", "list", "--db", str(path), "--json"]) == 0


def list_in_new_process(path: Path) -> tuple[float, float]:
    """(wall s, peak RSS MiB) of ``python -m core runs list --json`` run from scratch."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "core", "runs", "list", "--db", str(path), "--json"],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def old_per_run(store, run_ids: list[str]) -> float:
    """HEAD's look-ups for ``run_ids`` (running runs), in s per run: `orphaned_runs` read each
    of three records through `get_run` (no connection block: an attach each), then `run_table`
    read each run's progress through `get_run` (inside one block)."""
    t0 = time.perf_counter()
    for run_id in run_ids:
        for name in (LAUNCH_FILE, WORKER_FILE, CREATOR_FILE):
            (store.files_dir / get_run(store, run_id)["folder"] / name).is_file()
    with store.connection():
        for run_id in run_ids:
            read_progress(store, run_id)
    return (time.perf_counter() - t0) / len(run_ids)


def main_bench(n_runs: int, n_old: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "runs.duckdb"
        store = open_store(path)
        t0 = time.perf_counter()
        expected = bulk_runs(store, n_runs)
        store.checkpoint()
        build_s = time.perf_counter() - t0
        running = [r for r, state in expected.items()
                   if state in ("running", "queued", "worker gone")]
        list_in_process(path)   # warm: imports, the first attach
        new_s, _ = best_of(lambda: list_in_process(path), repeat=3)
        cold_s, peak_mib = list_in_new_process(path)
        per_run = old_per_run(open_store(path, read_only=True), running[:n_old])
    old_s = per_run * len(running)
    print(f"{n_runs} runs ({len(running)} running) built in one bulk write in {build_s:.2f} s "
          f"({os.cpu_count()} CPUs, shared)")
    print(f"  new  runs list, in process          {new_s * 1e3:8.1f} ms   (target < 1000 ms)")
    print(f"  new  python -m core runs list        {cold_s * 1e3:8.1f} ms   imports included, "
          f"peak {peak_mib:.0f} MiB")
    print(f"  old  per running run (of {len(running[:n_old])} timed)   {per_run * 1e3:8.2f} ms   "
          f"x {len(running)} = {old_s:.1f} s, before its orphan writes")
    print(f"  ratio old / new (in process)         {old_s / new_s:8.1f} x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--old-runs", type=int, default=50,
                        help="running runs the old way is timed on (it costs ~10 ms each)")
    args = parser.parse_args()
    main_bench(args.runs, args.old_runs)
