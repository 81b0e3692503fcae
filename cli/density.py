"""``density estimate``, ``density nyu-histogram`` and ``report density``: the Density page's work
and tables from the shell (the NYU model is imported only when asked for: core never needs torch)."""
from __future__ import annotations

import argparse

from core.jobs.density import estimate_classical
from core.reports.density import density_report
from cli import comma_list, open_from_args
from core.vocabulary import DENSITY_CATEGORY_NAMES as CATEGORY_NAMES
from core.errors import InputError
from core.progress import tqdm_progress
from core.vocabulary import LEVELS

FMT = argparse.RawDescriptionHelpFormatter
RECIPES = ("reference", "modern", "exact")
ESTIMATE_EXAMPLE = """Classical calibration: with --calibrate-on SOURCE the threshold and cut points are
fitted to that source's exam categories on the test set's datasets (maximum linear weighted
kappa; the kappa is printed, in-sample and 5-fold cross-validated); without it the mini-MIAS
defaults are used. The output says which ("run.calibration"), the exams per category and, when a 'label'
source exists, the confusion matrix (rows label, columns estimate) and weighted kappas.

examples:
  python -m core density estimate --test-set test-all --method classical --calibrate-on label --json
  python -m core density estimate --test-set test-all --method nyu-histogram \\
      --weights saved_models/BreastDensity_BaselineHistogramModel/model.p --json"""
NYU_EXAMPLE = """The folder holds one exam: L-CC, R-CC, L-MLO and R-MLO images (e.g. L-CC.png; .png, .pgm
or .dcm). Histogram arithmetic: --recipe reference (default) reproduces the published numbers.

example:
  python -m core density nyu-histogram \\
      --weights saved_models/BreastDensity_BaselineHistogramModel/model.p --images sample_exam/ --json"""
REPORT_EXAMPLE = """example:
  python -m core report density --test-set test-all --density-source label --level exam \\
      --models classical-dog --reader-model classical-dog --json"""



def register(commands, report, common) -> None:
    p = commands.add_parser("density", parents=[common], formatter_class=FMT,
                            help="estimate breast density (classical, NYU histogram model)",
                            epilog="examples:\n  python -m core density estimate --test-set test-all "
                                   "--method classical --calibrate-on label --json")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = sub.add_parser("estimate", parents=[common], formatter_class=FMT, epilog=ESTIMATE_EXAMPLE,
                       help="estimate density for a test set's exams and store it",
                       description="Estimate density per exam (and image, classical) of a test set; "
                                   "re-running replaces the earlier rows of those exams.")
    q.add_argument("--test-set", required=True, help="named test set (see `testsets list`)")
    q.add_argument("--method", choices=("classical", "nyu-histogram"), required=True)
    q.add_argument("--weights", help="nyu-histogram: path of the released model.p")
    q.add_argument("--calibrate-on", metavar="SOURCE",
                   help="classical: fit threshold and cut points to this density source (e.g. label)")
    q.add_argument("--threshold", type=float,
                   help="classical: fix the threshold (fraction of full scale); with --calibrate-on "
                        "only the cut points are fitted")
    q.add_argument("--recipe", choices=RECIPES, default="reference",
                   help="nyu-histogram: histogram arithmetic (default: reference)")
    q.add_argument("--reference", default="label",
                   help="density source to report agreement against (default: label)")
    q.set_defaults(func=cmd_estimate)

    q = sub.add_parser("nyu-histogram", parents=[common], formatter_class=FMT, epilog=NYU_EXAMPLE,
                       help="the NYU histogram model's four probabilities for one exam folder")
    q.add_argument("--weights", required=True,
                   help="path of the released model.p (a torch.save state dict)")
    q.add_argument("--images", required=True, help="folder with L-CC, R-CC, L-MLO, R-MLO images")
    q.add_argument("--recipe", choices=RECIPES, default="reference",
                   help="histogram arithmetic (default: reference, as the published numbers)")
    q.set_defaults(func=cmd_nyu_histogram)

    r = report.add_parser("density", parents=[common], formatter_class=FMT, epilog=REPORT_EXAMPLE,
                          help="AUC by density stratum, dense vs non-dense test, readers by density",
                          description="The Density page's tables: category counts, AUC [95%% CI] "
                                      "for all / non-dense (0-1) / dense (2-3) / without extremely "
                                      "dense (0-2) with an unpaired DeLong test of dense vs "
                                      "non-dense, and readers' sensitivity and specificity per "
                                      "category beside the model's at the reader's specificity.")
    r.add_argument("--test-set", required=True)
    r.add_argument("--test-sets", type=comma_list, help="comma-separated test sets for the AUC table "
                                                    "(default: --test-set)")
    r.add_argument("--density-source", default="label", help="density source (default: label)")
    r.add_argument("--models", type=comma_list, help="comma-separated models (default: all)")
    r.add_argument("--level", choices=LEVELS, default="exam")
    r.add_argument("--how", choices=("max", "mean"), default="max",
                   help="aggregation of image scores (default: max)")
    r.add_argument("--reader-model", help="model compared with the readers (default: first model)")
    r.add_argument("--readers", type=comma_list, help="comma-separated readers (default: all with "
                                                  "recall decisions)")
    r.set_defaults(func=cmd_report_density)


def cmd_estimate(args):
    store = open_from_args(args)
    if args.method == "nyu-histogram":
        if args.weights is None:
            raise InputError("--method nyu-histogram needs --weights PATH (the released model.p)")
        if args.calibrate_on or args.threshold is not None:
            raise InputError("--calibrate-on and --threshold apply to --method classical only")
        from models.inference.density import estimate_nyu

        with tqdm_progress("nyu-histogram") as progress:
            run = estimate_nyu(store, test_set=args.test_set, weights=args.weights,
                               recipe=args.recipe, reference=args.reference, progress=progress)
    else:
        if args.weights is not None:
            raise InputError("--weights applies to --method nyu-histogram only")
        with tqdm_progress("classical density") as progress:
            run = estimate_classical(store, test_set=args.test_set, calibrate_on=args.calibrate_on,
                                     threshold=args.threshold, reference=args.reference,
                                     progress=progress)
    return run.to_dict()


def cmd_nyu_histogram(args):
    from models.inference.density import predict_exam_folder

    pred, files = predict_exam_folder(args.weights, args.images, recipe=args.recipe)
    p = [float(x) for x in pred.probabilities]
    return {"images": str(args.images), "files": files, "recipe": args.recipe,
            "probabilities": dict(zip(CATEGORY_NAMES, p)), "p": p, "category": pred.category,
            "category_name": CATEGORY_NAMES[pred.category]}


def cmd_report_density(args):
    store = open_from_args(args, read_only=True)
    return density_report(store, test_set=args.test_set, test_sets=args.test_sets,
                          density_source=args.density_source, models=args.models,
                          level=args.level, how=args.how, reader_model=args.reader_model,
                          readers=args.readers)
