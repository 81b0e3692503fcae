"""``report benchmark``: the Benchmark page's tables (AUC, pairwise DeLong, operating points)."""
from __future__ import annotations

import argparse

from core.reports import benchmark as benchmark
from cli import comma_list, open_from_args
from core.vocabulary import LEVELS

EXAMPLE = """example:
  python -m core report benchmark --test-set test-ILC --test-sets test-ILC,test-all \\
      --models classical-dog --level breast --how max --ci delong \\
      --specificities 0.98,0.90 --json"""



def register(commands, report, common) -> None:
    p = report.add_parser(
        "benchmark", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="AUC [95%% CI] per model and test set, pairwise DeLong, sensitivity at specificity",
        description="AUC with a 95%% CI per model on each test set; on --test-set also the "
                    "paired DeLong tests (Holm-adjusted) and the sensitivity at fixed "
                    "specificities, with thresholds. The numbers the Benchmark page shows; "
                    "'published' gives each model's AUC as its paper reports it (thesis "
                    "Table 6.1), on the paper's own test data: not measured here.",
        epilog=EXAMPLE)
    p.add_argument("--test-set", required=True,
                   help="test set for the pairwise tests and operating points")
    p.add_argument("--test-sets", type=comma_list, default=None,
                   help="comma-separated test sets for the AUC table "
                        "(default: --test-set, then test-ILC and test-all where present)")
    p.add_argument("--models", type=comma_list, default=None,
                   help="comma-separated models (default: all with predictions at --level)")
    p.add_argument("--level", choices=LEVELS, default="image")
    p.add_argument("--how", choices=("max", "mean"), default="max",
                   help="aggregation of image scores for breast/exam level (default: max)")
    p.add_argument("--ci", choices=benchmark.CI_METHODS, default="delong",
                   help="confidence interval method (default: delong)")
    p.add_argument("--specificities", default=",".join(map(str, benchmark.DEFAULT_SPECIFICITIES)),
                   help="comma-separated target specificities in [0, 1] (default: 0.98,0.9)")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default: 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    p.set_defaults(func=cmd_report_benchmark)


def cmd_report_benchmark(args):
    store = open_from_args(args, read_only=True)
    result = benchmark.benchmark_report(
        store, test_set=args.test_set, test_sets=args.test_sets, models=args.models,
        level=args.level, how=args.how, ci=args.ci,
        specificities=benchmark.parse_specificities(args.specificities),
        n_boot=args.n_boot, seed=args.seed)
    return result.to_dict()
