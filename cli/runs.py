"""``runs list|show|cancel|resume``: the jobs in the ``runs`` table (training first), as the
Fine-tuning page shows them (`core.reports.training`). ``list`` and ``show`` only read: a run
whose worker is gone shows as 'worker gone'; ``cancel`` records it failed, ``resume`` takes it."""
from __future__ import annotations

import argparse

from cli import CommandFailed, comma_list, open_from_args
from core.errors import InputError
from core.store.runs import RUN_STATUSES

EXAMPLE = """A training run (`python -m core train`) is one learning rate; its progress and ETA come
from the run's live progress file, its loss curves from the epochs it finished. A run whose
worker was killed lists as 'worker gone' (list and show never write): resume it, or cancel it
to record it failed.

examples:
  python -m core runs list --status running --json
  python -m core runs list --kind all
  python -m core runs show train-20261205T031500123456-ab12 --test-sets test-ILC,test-all --json
  python -m core runs cancel train-20261205T031500123456-ab12
  python -m core runs resume train-20261205T031500123456-ab12 --detach --json"""


def register(commands, report, common) -> None:
    runs = commands.add_parser("runs", help="list, show, cancel or resume jobs (training runs)",
                               formatter_class=argparse.RawDescriptionHelpFormatter,
                               description="The jobs recorded in the store's runs table.",
                               epilog=EXAMPLE)
    sub = runs.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    p = sub.add_parser("list", parents=[common], help="one row per run: status, progress, ETA",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE)
    p.add_argument("--kind", default="train",
                   help="train (default), filters, predict, density, ... or all")
    p.add_argument("--status", choices=RUN_STATUSES)
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("show", parents=[common], help="one run: parameters, epochs, evaluation",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE)
    p.add_argument("run_id")
    p.add_argument("--test-sets", type=comma_list, metavar="T1,T2",
                   help="test sets of a finished run's evaluation (default: those it evaluated)")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("cancel", parents=[common],
                       help="ask a running job to stop (a run whose worker is gone: failed)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE)
    p.add_argument("run_id")
    p.set_defaults(func=cmd_cancel)
    p = sub.add_parser("resume", parents=[common],
                       help="continue a failed or cancelled training run from its last epoch",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE)
    p.add_argument("run_id")
    p.add_argument("--detach", action="store_true",
                   help="run in the background (survives this shell) and return at once")
    p.set_defaults(func=cmd_resume)


def _writable(args):
    """The store for a change to a run: an existing one (a mistyped --db creates nothing)."""
    open_from_args(args, read_only=True)   # "does not exist; build it with ..." otherwise
    return open_from_args(args)


def cmd_list(args):
    from core.reports.training import run_table

    return run_table(open_from_args(args, read_only=True),
                     kind=None if args.kind == "all" else args.kind, status=args.status)


def cmd_show(args):
    from core.reports.training import run_report

    return run_report(open_from_args(args, read_only=True), args.run_id,
                      test_sets=args.test_sets)


def cmd_cancel(args):
    """A run whose worker is gone has nobody to honour a cancel file: it is recorded failed
    (`fail_orphaned_runs`, one short transaction), with the reason, and can be resumed."""
    from core.jobs.run_folder import request_cancel
    from core.jobs.workers import fail_orphaned_runs
    from core.store.runs import get_run

    store = _writable(args)
    if fail_orphaned_runs(store, [args.run_id]):
        row = get_run(store, args.run_id)
        return {"run_id": args.run_id, "cancel_requested": False, "status": row["status"],
                "error": row["error"]}
    request_cancel(store, args.run_id)
    return {"run_id": args.run_id, "cancel_requested": True}


def cmd_resume(args):
    from core.reports.training import TRAIN_KIND
    from core.store.runs import get_run
    from models.training.sweep import resume_run

    store = _writable(args)
    run = get_run(store, args.run_id)
    if run is not None and run["kind"] != TRAIN_KIND:
        raise InputError(f"run {args.run_id} is a {run['kind']} run; only training runs resume "
                         "here: run its command again (it skips the results already stored)")
    run_id = resume_run(store, args.run_id, detach=args.detach)
    row = get_run(store, run_id)
    if not args.detach and row["status"] == "failed":  # a failed job exits 1, as `train` does
        reason = " ".join(str(row["error"] or "no reason recorded").split())
        raise CommandFailed(f"run {run_id} failed again: {reason}")
    return {"run_id": run_id, "detached": args.detach, "status": row["status"]}
