"""``filters run``: compute the missing filter AUCs of a test set, then print them per method."""
from __future__ import annotations

import argparse
import json
import sys

from core.jobs import filters as filter_runs
from core.reports.filters import filter_summary
from cli import CommandFailed, comma_list, open_from_args, to_json, to_text
from core.errors import InputError
from core.image.filters import METHODS
from core.progress import tqdm_progress

EXAMPLE = """example:
  python -m core filters run --test-set mias --methods M1,M2,M7 --workers 2 \\
      --param M7.detail_gain=3 --json"""



def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of processes >= 1")
    return value


def register(commands, report, common) -> None:
    """Add the ``filters`` command group (``report`` is unused)."""
    group = commands.add_parser("filters", help="filter exploration: per-image pixel AUCs")
    sub = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser(
        "run", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="compute the missing pixel AUCs of a test set, print n, mean and median per method",
        description="For each annotated cancer image of the test set and each method: the AUC "
                    "of tumour vs healthy pixel values (healthy: the contralateral same-view "
                    "image mirrored, else a ring around the tumour). Stored results are reused "
                    "(keyed by image, method, parameters and annotation version); the missing "
                    "ones are computed first (progress bar on stderr). 'original' is always "
                    "included as the reference. The numbers the Filters page shows.",
        epilog=EXAMPLE)
    p.add_argument("--test-set", required=True, help="named test set (each dataset's name is one)")
    p.add_argument("--methods", type=comma_list, default=None,
                   help=f"comma-separated codes (default: all of {','.join(METHODS)})")
    p.add_argument("--param", action="append", default=[], metavar="CODE.NAME=VALUE",
                   help="override a parameter, VALUE as JSON (repeatable), "
                        "e.g. M1.clip_limit=0.02 or M7.detail_levels=[1,2]")
    p.add_argument("--workers", type=_workers, default=None,
                   help="worker processes (default: min(2, cpu count))")
    ring = p.add_mutually_exclusive_group()
    ring.add_argument("--ring-px", type=int, default=filter_runs.DEFAULT_RING_PX,
                      help="healthy ring width in pixels where no contralateral image exists "
                           "(default: 20)")
    ring.add_argument("--ring-mm", type=float, default=None,
                      help="healthy ring width in mm instead (uses each image's pixel spacing)")
    p.add_argument("--all-lesions", action="store_true",
                   help="include annotated benign findings (default: cancer images only)")
    p.set_defaults(func=cmd_filters_run)


def parse_params(items: list[str]) -> dict[str, dict]:
    """``['M7.detail_gain=3', ...]`` -> ``{'M7': {'detail_gain': 3}}`` (values as JSON)."""
    params: dict[str, dict] = {}
    for item in items:
        head, sep, value = item.partition("=")
        code, dot, name = head.partition(".")
        if not (sep and dot and code and name):
            raise InputError(f"--param {item!r} is not CODE.NAME=VALUE; e.g. M1.clip_limit=0.02")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value   # plain text: sobel, db4
        params.setdefault(code.strip(), {})[name.strip()] = parsed
    return params


def cmd_filters_run(args):
    methods = ["original", *(m for m in (args.methods or METHODS) if m != "original")]
    settings = dict(test_set=args.test_set, methods=methods, params=parse_params(args.param),
                    ring_px=args.ring_px, ring_mm=args.ring_mm,
                    malignant_only=not args.all_lesions)
    store = open_from_args(args)
    filter_runs.plan_filter_run(store, **settings)   # bad input fails here, before the bar
    with tqdm_progress("filters") as progress:
        run = filter_runs.run_filters(store, workers=args.workers, progress=progress, **settings)
    result = {"test_set": args.test_set, "run": run.to_dict(),
              "methods": filter_summary(store, **settings)}
    if run.failures:
        print(to_json(result) if args.json else to_text(result))
        for image_id, reason in run.failures:
            print(f"failed: {image_id}: {reason}", file=sys.stderr)
        raise CommandFailed(f"{run.n_failed} of {run.n_computed + run.n_failed} image(s) "
                            "failed; nothing was stored for them (reasons above)")
    return result
