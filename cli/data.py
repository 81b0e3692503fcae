"""Store commands: init, demo, info, testsets."""
from __future__ import annotations

import argparse
import dataclasses

from cli import open_from_args
from core.progress import tqdm_progress


def register(commands, report, common) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = commands.add_parser("init", parents=[common], formatter_class=fmt,
                            help="create an empty store (or migrate an old one)",
                            epilog="example: python -m core init --db data/my.duckdb")
    p.set_defaults(func=cmd_init)

    p = commands.add_parser("demo", parents=[common], formatter_class=fmt,
                            help="build the synthetic demo cohort into the store",
                            epilog="example: python -m core demo --n-exams 100 --seed 0 --json")
    p.add_argument("--n-exams", type=int, default=100, help="number of screening exams (4 views)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--metadata-only", action="store_true",
                   help="tables without pixels (for 100k-exam benchmark stores)")
    p.add_argument("--no-models", action="store_true",
                   help="skip the demo models' predictions")
    p.set_defaults(func=cmd_demo)

    p = commands.add_parser("info", parents=[common], formatter_class=fmt,
                            help="counts per table, dataset and test set",
                            epilog="example: python -m core info --json")
    p.set_defaults(func=cmd_info)

    register_images(commands, common)

    p = commands.add_parser("testsets", parents=[common], formatter_class=fmt,
                            help="list, create or delete named test sets",
                            epilog="examples:\n  python -m core testsets list\n"
                                   "  python -m core testsets create test-ILC "
                                   "--rule 'dataset=demo split=test histology=ILC,none'")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = sub.add_parser("list", parents=[common], help="named test sets with rule and size")
    q.set_defaults(func=cmd_testsets_list)
    q = sub.add_parser("create", parents=[common], help="create or replace a set from a rule",
                       epilog="rule fields: dataset split cancer histology density presentation")
    q.add_argument("name")
    q.add_argument("--rule", required=True, help="e.g. 'split=test histology=ILC,none'")
    q.set_defaults(func=cmd_testsets_create)
    q = sub.add_parser("delete", parents=[common], help="delete a named test set")
    q.add_argument("name")
    q.set_defaults(func=cmd_testsets_delete)


def register_images(commands, common) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = commands.add_parser("images", parents=[common], formatter_class=fmt,
                            help="list images or correct an image's laterality",
                            epilog="examples:\n  python -m core images list --test-set mias\n"
                                   "  python -m core images set-laterality mias/mdb001 R")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = sub.add_parser("list", parents=[common], help="images with laterality and its source")
    q.add_argument("--test-set", help="only this test set's images")
    q.set_defaults(func=cmd_images_list)
    q = sub.add_parser("set-laterality", parents=[common],
                       help="correct one image's laterality (recorded as 'corrected')",
                       epilog="example: python -m core images set-laterality mias/mdb001 R")
    q.add_argument("image_id")
    q.add_argument("laterality", choices=["L", "R"])
    q.set_defaults(func=cmd_images_set_laterality)


def cmd_images_list(args):
    images = open_from_args(args, read_only=True).images(test_set=args.test_set)
    return images[["image_id", "exam_id", "laterality", "laterality_source", "view", "height",
                   "width", "bit_depth", "path"]]


def cmd_images_set_laterality(args):
    from core.importers.common import correct_laterality

    return correct_laterality(open_from_args(args), args.image_id, args.laterality)


def cmd_init(args):
    store = open_from_args(args)
    return {"db": str(store.path), "schema_version": store.schema_version(),
            "counts": store.counts()}


def cmd_demo(args):
    from core.demo.build import build_demo

    store = open_from_args(args)
    with tqdm_progress("demo") as progress:
        summary = build_demo(store, n_exams=args.n_exams, seed=args.seed,
                             metadata_only=args.metadata_only, progress=progress)
    result = dataclasses.asdict(summary)
    if not args.no_models and not args.metadata_only:
        from models.demo.models import add_demo_models

        with tqdm_progress("demo models") as progress:
            result["models"] = add_demo_models(store, progress=progress)
    return result


def cmd_info(args):
    store = open_from_args(args, read_only=True)
    return {"db": str(store.path), "schema_version": store.schema_version(),
            "counts": store.counts(), "datasets": store.datasets(),
            "testsets": store.testsets().drop(columns="created_at"),
            "models": store.models()[["model", "kind", "parent", "n_predictions"]],
            "readers": store.readers()}


def cmd_testsets_list(args):
    return open_from_args(args, read_only=True).testsets()


def cmd_testsets_create(args):
    store = open_from_args(args)
    return {"name": args.name, "rule": args.rule,
            "n_exams": store.create_testset(args.name, args.rule)}


def cmd_testsets_delete(args):
    open_from_args(args).delete_testset(args.name)
    return {"deleted": args.name}
