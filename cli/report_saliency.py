"""``report saliency``: do the model's saliency maps point at the tumour (the Saliency page's
numbers as JSON)."""
from __future__ import annotations

import argparse

from cli import open_from_args

EXAMPLE = ("example:\n  python -m core report saliency --test-set test-ILC --model gmic-demo "
           "--compare gmic-tuned --class malignant --json")


def register(commands, report, common) -> None:
    p = report.add_parser(
        "saliency", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="saliency vs segmentation: best Dice, pointing game, relevance mass",
        description="For every annotated image of a test set with a saliency file: Dice at "
                    "thresholds 0, 0.05, ..., 1 (best per image), whether the map's maximum lies "
                    "in the segmentation (hit rate with a Wilson 95%% CI), relevance mass and "
                    "rank; per model and histology. With --compare, McNemar on hits and "
                    "Wilcoxon signed-rank on best Dice over the images both models scored.",
        epilog=EXAMPLE)
    p.add_argument("--test-set", required=True, help="a named test set (see `testsets list`)")
    p.add_argument("--model", required=True, help="a model with saliency files (run predict)")
    p.add_argument("--compare", help="a second model, compared on the same images")
    p.add_argument("--class", dest="which", choices=("malignant", "benign"), default="malignant",
                   help="which saliency map (default malignant)")
    p.add_argument("--annotation-version", type=int, metavar="V",
                   help="use annotation version V of each image (default: the newest)")
    p.add_argument("--per-image", action="store_true", help="also print one row per image")
    p.set_defaults(func=cmd_report_saliency)


def cmd_report_saliency(args):
    from core.reports.saliency import saliency_report

    store = open_from_args(args, read_only=True)
    result = saliency_report(store, test_set=args.test_set, model=args.model,
                             compare=args.compare, which=args.which,
                             annotation_version=args.annotation_version)
    return result.to_dict(per_image=args.per_image)
