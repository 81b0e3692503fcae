"""``report findings``: the six questions answered from the store, as JSON or one HTML file."""
from __future__ import annotations

import argparse
from pathlib import Path

from cli import open_from_args
from core.errors import InputError

EXAMPLE = ("example:\n  python -m core report findings --out report.html\n"
           "  python -m core report findings --model gmic-demo --json")


def register(commands, report, common) -> None:
    p = report.add_parser(
        "findings", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="the study's six questions, one sentence each (the Overview's findings)",
        description="Filters, models, fine-tuning, density, saliency and radiologists, each "
                    "answered from stored results with the page link that shows the number, "
                    "for one headline model (default: the model with the highest image-level "
                    "AUC on test-all). --out writes a self-contained HTML report (charts "
                    "included, no network).",
        epilog=EXAMPLE)
    p.add_argument("--out", type=Path, metavar="FILE.html",
                   help="write the HTML report here (overwritten)")
    p.add_argument("--model", help="the headline model (a model with image-level scores; "
                                   "default: the highest image-level AUC on test-all)")
    p.set_defaults(func=cmd_report_findings)


def cmd_report_findings(args):
    from core.reports.findings import findings, headline_model, link
    from core.reports.findings_html import findings_html

    if args.out is not None and not args.out.parent.is_dir():
        raise InputError(f"out {str(args.out)!r}: its folder does not exist; create it first")
    store = open_from_args(args, read_only=True)
    model = args.model if args.model is not None else headline_model(store)
    items = findings(store, model=model)
    if args.out is not None:
        args.out.write_text(findings_html(store, items=items), encoding="utf-8")
    return {"model": model,
            "findings": [{"question": f.question, "sentence": f.sentence, "link": link(f),
                          "value": f.value} for f in items],
            **({"out": str(args.out)} if args.out is not None else {})}
