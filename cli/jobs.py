"""``jobs work RUN_ID``: the worker process of a detached job (`core.jobs.detached`).

A page or ``jobs start`` queues a run and starts this command in its own session; it runs the
job's function in the foreground, its output (a failure's whole traceback included) going to the
run's ``worker.log``. ``jobs status RUN_ID`` shows a run's progress and ETA.
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback

from cli import CommandFailed, open_from_args
from core.errors import InputError
from core.jobs import detached


def register(commands, report, common) -> None:
    """Add the ``jobs`` command group (``report`` is unused)."""
    group = commands.add_parser("jobs", help="detached jobs: the worker a page starts, and status")
    sub = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("work", parents=[common], help="run a queued job in this process (what a page starts)",
                       description="Runs the queued, failed or cancelled run RUN_ID (filters or classical "
                                   "density) to its end; the run's row records how it ended.")
    p.add_argument("run_id")
    p.set_defaults(func=cmd_work)
    p = sub.add_parser("start", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="queue a job and start its worker detached; prints the run_id",
                       epilog='example:\n  python -m core jobs start filters --params \'{"test_set": "test-all", '
                              '"methods": ["original", "M1"]}\'')
    p.add_argument("kind", choices=detached.DETACHED_KINDS)
    p.add_argument("--params", type=json.loads, default=None,
                   help="the job's parameters as a JSON object (its function's keyword arguments)")
    p.add_argument("--resume", metavar="RUN_ID", help="start a failed, cancelled or stopped run again")
    p.set_defaults(func=cmd_start)
    p = sub.add_parser("status", parents=[common], help="a run's status, progress and ETA")
    p.add_argument("run_id")
    p.set_defaults(func=cmd_status)


def cmd_work(args):
    store = open_from_args(args)
    try:
        return detached.run_job(store, args.run_id)
    except InputError:
        raise
    except Exception as exc:   # the row holds one line; the log (our stderr) the whole story
        traceback.print_exc(file=sys.stderr)
        raise CommandFailed(f"run {args.run_id} failed: {type(exc).__name__}: {exc}") from exc


def cmd_start(args):
    if args.params is None and args.resume is None:
        raise InputError("params is missing; pass --params '{...}' or --resume RUN_ID")
    if args.params is not None and not isinstance(args.params, dict):
        raise InputError("params is not a JSON object; pass --params '{\"test_set\": ...}'")
    store = open_from_args(args)
    run_id = detached.start_job(store, args.kind, args.params or {}, resume=args.resume)
    return {"run_id": run_id, "log": str(detached.log_path(store, run_id))}


def cmd_status(args):
    state = detached.job_status(open_from_args(args), args.run_id)
    return {"run_id": state.run_id, "kind": state.kind, "status": state.status, "done": state.done,
            "total": state.total, "rate_per_s": state.rate_per_s, "eta_s": state.eta_s,
            "message": state.message, "error": state.error, "line": state.describe()}
