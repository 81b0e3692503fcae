"""``annotate``: turn a drawn contour into a filled mask (the study's Algorithm 3), and add a
folder of masks to the store as new annotation versions."""
from __future__ import annotations

import argparse
from pathlib import Path

from cli import open_from_args
from core.errors import InputError

FILL_EXAMPLE = ("example:\n  python -m core annotate fill drawing.png --out filled.png "
                "--spacing 0.07")
IMPORT_EXAMPLE = ("example:\n  python -m core annotate import masks/ --dataset csaw "
                  "--author 'Dr. A' --json")


def register(commands, report, common) -> None:
    annotate = commands.add_parser("annotate", help="drawings to masks; masks into the store")
    sub = annotate.add_subparsers(dest="annotate", metavar="ACTION", required=True)
    fill = sub.add_parser(
        "fill", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="fill a drawn contour (Algorithm 3)",
        description="Close a drawn contour (PNG, non-zero = drawn) by dilation and erosion with "
                    "a disk of 50, then 75, then 100 pixels until filling closes it, else take "
                    "its convex hull; write the filled mask as a 0/255 PNG. With --spacing the "
                    "study's pixels (taken as 0.07 mm) are scaled to the drawing's.",
        epilog=FILL_EXAMPLE)
    fill.add_argument("drawing", type=Path, help="greyscale PNG of the drawing")
    fill.add_argument("--out", type=Path, required=True, help="PNG to write the filled mask to")
    fill.add_argument("--spacing", type=float, metavar="MM",
                      help="pixel size in mm (scales the study's 0.07 mm elements to it; "
                           "needed by --sizes-mm)")
    fill.add_argument("--sizes-mm", type=comma_floats, metavar="A,B,C",
                      help="element diameters in mm instead of the study's 50,75,100 pixels")
    fill.set_defaults(func=cmd_fill)
    imp = sub.add_parser(
        "import", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="add a folder of PNG masks as new annotation versions",
        description="Each <image_key>.png in the folder becomes a new 'imported' version of that "
                    "image's annotation (older versions stay). Every file is checked first; "
                    "an unknown image or a bad mask stops the import before anything is written.",
        epilog=IMPORT_EXAMPLE)
    imp.add_argument("folder", type=Path, help="folder of <image_key>.png masks")
    imp.add_argument("--dataset", required=True, help="the dataset the images belong to")
    imp.add_argument("--author", help="who made the masks")
    imp.add_argument("--note", help="a note stored with every new version")
    imp.set_defaults(func=cmd_import)


def comma_floats(text: str) -> list[float]:
    """An argparse ``type`` for ``5,7.5,10``."""
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers")


def cmd_fill(args):
    from core.annotations import fill_drawing
    from core.io.pixels import check_mask_path, read_raster, write_mask

    if not args.drawing.is_file():
        raise InputError(f"{args.drawing} does not exist; pass a PNG of the drawing")
    check_mask_path(args.out)
    drawing = read_raster(args.drawing)
    filled = fill_drawing(drawing, spacing_mm=args.spacing, sizes_mm=args.sizes_mm)
    try:
        write_mask(args.out, filled.mask)
    except OSError as exc:   # a read-only folder, a full disk: the OS's reason, not a traceback
        raise InputError(f"cannot write {args.out}: {exc.strerror or exc}; pass --out in a "
                         "writable folder") from None
    return {"out": str(args.out), "step": filled.step, "size_px": filled.size_px,
            "size_mm": None if args.spacing is None else filled.size_px * args.spacing,
            "closed": filled.closed, "hull_used": filled.hull_used,
            "n_pixels": int(filled.mask.sum())}


def cmd_import(args):
    from core.annotations import import_masks

    store = open_from_args(args)
    return import_masks(store, args.folder, dataset=args.dataset, author=args.author,
                        note=args.note).to_dict()
