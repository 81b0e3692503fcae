"""``report mrmc``: a reader study's MRMC test, the Reader-study page's numbers as JSON."""
from __future__ import annotations

import argparse

from cli import comma_list, open_from_args
from core.vocabulary import LEVELS

EXAMPLE = """example:
  python -m core report mrmc --study demo-reader-study --modalities unaided,aided-by-gmic-demo \\
      --method or --cov jackknife --analysis rrrc --model gmic-demo --json"""


def register(commands, report, common) -> None:
    from core.stats.mrmc import MRMC_ANALYSES, MRMC_COVARIANCES, MRMC_METHODS

    p = report.add_parser(
        "mrmc", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="reader study: do readers' AUCs differ between modalities (MRMC)",
        description="Multi-reader multi-case ROC analysis of a reader study: each reader's AUC "
                    "per modality, the modality means and their difference with a CI, the "
                    "F test, the variance components, a sample-size table and, with --model, "
                    "the model against the readers. The numbers the Reader-study page shows.",
        epilog=EXAMPLE)
    p.add_argument("--study", required=True, help="a reader study (see the Reader-study page)")
    p.add_argument("--modalities", type=comma_list, default=None,
                   help="comma-separated modalities, reference first (default: all, unaided "
                        "first)")
    p.add_argument("--level", choices=LEVELS, default=None,
                   help="case level (default: the study's; coarser levels take the highest "
                        "rating of a case's parts)")
    p.add_argument("--method", choices=MRMC_METHODS, default="or",
                   help="or: Obuchowski-Rockette (default); dbm: Dorfman-Berbaum-Metz")
    p.add_argument("--cov", choices=MRMC_COVARIANCES, default="jackknife",
                   help="covariance of the AUCs for OR (default: jackknife)")
    p.add_argument("--analysis", choices=MRMC_ANALYSES, default="rrrc",
                   help="rrrc: random readers and cases (default); frrc: fixed readers; rrfc: "
                        "fixed cases")
    p.add_argument("--subgroup", choices=("ILC", "dense"), default=None,
                   help="ILC: ILC cancers and healthy cases; dense: density categories 2-3")
    p.add_argument("--model", help="compare this model (a fixed reader) with the readers")
    p.add_argument("--model-modality",
                   help="the readers' modality the model is compared with (default: the first)")
    p.add_argument("--effect", type=float, default=0.05,
                   help="sample size: the AUC difference to detect (default: 0.05)")
    p.add_argument("--power", type=float, default=0.8,
                   help="sample size: the target power (default: 0.8)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default: 0.05)")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (--cov bootstrap)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    p.set_defaults(func=cmd_report_mrmc)


def cmd_report_mrmc(args):
    from core.reports.mrmc import mrmc_report, to_dict

    store = open_from_args(args, read_only=True)
    report = mrmc_report(store, study=args.study, modalities=args.modalities, level=args.level,
                         method=args.method, cov=args.cov, analysis=args.analysis,
                         subgroup=args.subgroup, model=args.model,
                         model_modality=args.model_modality, effect=args.effect,
                         power=args.power, alpha=args.alpha, n_boot=args.n_boot, seed=args.seed)
    return to_dict(report)
