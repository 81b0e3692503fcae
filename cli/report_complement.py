"""``report complement``: reader vs model, the Radiologist-complement page's numbers as JSON."""
from __future__ import annotations

import argparse

from cli import open_from_args
from core.errors import InputError
from core.vocabulary import LEVELS

EXAMPLE = ("example:\n  python -m core report complement --test-set test-all --model classical-dog "
           "--reader consensus --specificity 0.98 --level exam --json")


def register(commands, report, common) -> None:
    p = report.add_parser(
        "complement", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="which cancers the reader missed would the model catch, at what cost",
        description="Reader vs model on one test set at one model threshold: both alone, the "
                    "model among the reader's negatives (missed cancers caught, extra recalls) "
                    "and 'recall if either'. Default threshold: the model's specificity matched "
                    "to the reader's.",
        epilog=EXAMPLE)
    p.add_argument("--test-set", required=True, help="a named test set (see `testsets list`)")
    p.add_argument("--model", required=True, help="a model with predictions in the store")
    p.add_argument("--reader", required=True, help="a reader, e.g. R1, R2 or consensus")
    p.add_argument("--reader-threshold", type=float, metavar="X",
                   help="recall iff the reader's score >= X (for readers with scores only; "
                        "overrides a recorded recall decision)")
    p.add_argument("--specificity", type=float, metavar="S",
                   help="set the model's threshold for specificity >= S, a fraction (0.98)")
    p.add_argument("--threshold", type=float, metavar="X",
                   help="the model's threshold: positive iff score >= X")
    p.add_argument("--level", choices=LEVELS, default="exam",
                   help="case level (default exam; image level uses breast reads if needed)")
    p.add_argument("--triage-threshold", type=float, metavar="X",
                   help="add the triage workflow: cases scoring below X are not read")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates for the CIs")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.set_defaults(func=cmd_report_complement)


def cmd_report_complement(args):
    from core.reports.complement import complement_report, summary

    if args.specificity is not None and args.threshold is not None:
        raise InputError(f"pass --specificity or --threshold, not both (got {args.specificity:g} "
                         f"and {args.threshold:g}); with neither, the reader's specificity is "
                         f"matched")
    store = open_from_args(args, read_only=True)
    report = complement_report(store, test_set=args.test_set, model=args.model, reader=args.reader,
                               level=args.level, threshold=args.threshold,
                               specificity=args.specificity, reader_threshold=args.reader_threshold,
                               triage_threshold=args.triage_threshold, n_boot=args.n_boot,
                               seed=args.seed)
    return summary(report)
