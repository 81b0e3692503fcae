"""``python -m core``: argparse subcommands, each a few lines calling the core function a page calls.

Output contract (as sqlite-utils): ``--json`` prints one JSON document on stdout and nothing
else; progress bars and logs go to stderr; bad input is one ``error:`` line and exit 2; a failed
job exits 1; ``--debug`` shows the traceback. Library errors name parameters (``test_set``),
never flags; `flag_names` turns them into the flags the user typed when the line is printed.

Each command module exposes ``register(commands, report, common)`` and sets ``func`` on its
parsers; ``func(args)`` returns a JSON-able value (dict, list, DataFrame) that main prints.
Command modules import torch (``models``) and the other `OPTIONAL_DEPENDENCIES` only inside
their handlers, so every command's parser and help work without them; a command that needs
one that is missing says so in one line. Any other import error is a bug and shows whole.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import re
import sys
import traceback
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from core.errors import InputError, PseudonymKeyError, StoreBusy, StoreVersionError
from core.jobs.run_folder import RunCancelled

COMMAND_MODULES = ("data", "imports", "report_benchmark", "report_complement", "report_mrmc",
                   "report_saliency", "report_findings", "filters", "density", "predict", "annotate",
                   "train", "runs", "jobs")
# imported only when a command runs: a store-and-reports install may lack them
OPTIONAL_DEPENDENCIES = ("torch", "cv2", "submitit", "dicomweb_client")


# Parameter names in core's error messages -> the flags that set them here.
FLAGS = {
    "calibrate_on": "--calibrate-on", "dataset": "--dataset", "format": "--format",
    "id_column": "--id-column", "images": "--images", "label_column": "--label-column",
    "level": "--level", "model_columns": "--model-columns", "reader_columns": "--reader-columns",
    "reader_threshold": "--reader-threshold", "score_column": "--score-column",
    "side_column": "--side-column", "test_set": "--test-set", "test_sets": "--test-sets",
    "annotation_version": "--annotation-version", "compare": "--compare",
    "spacing_mm": "--spacing", "sizes_mm": "--sizes-mm",
    "effect": "--effect", "modalities": "--modalities", "model_modality": "--model-modality",
    "power": "--power", "subgroup": "--subgroup",
    "reader_column": "--reader-column", "modality_column": "--modality-column",
    "case_column": "--case-column", "truth_column": "--truth-column",
    "rating_column": "--rating-column", "out": "--out",
    "model_init": "--model-init", "train_set": "--train-set", "val_set": "--val-set",
    "nproc_per_node": "--nproc-per-node", "rdzv_endpoint": "--rdzv-endpoint",
    "time_min": "--time-min", "freeze_bn": "--freeze-bn",
    "batch_size": "--batch-size", "fractions": "--fractions", "prefix": "--prefix",
    "study_date": "--study-date", "password_env": "--password-env", "token_env": "--token-env",
    "timeout_s": "--timeout", "retries": "--retries", "limit": "--limit",
    "modality": "--modality",
}
_UNDERSCORED = re.compile(
    r"(?<![\w'\"])(" + "|".join(n for n in FLAGS if "_" in n) + r")(?![\w'\"])")


def flag_names(message: str) -> str:
    """``message`` in the shell's words: parameter names become the flags the user typed.

    Names with an underscore change wherever they stand outside quotes; a plain word
    (``images``, ``level``) only when it opens the message, as in core.validation's
    ``{name} must be ...``: mid-sentence it is usually English ("322 images").
    """
    message = _UNDERSCORED.sub(lambda m: FLAGS[m.group(1)], message)
    first, space, rest = message.partition(" ")
    return FLAGS.get(first, first) + space + rest


def comma_list(text: str) -> list[str]:
    """An argparse ``type`` for ``a,b,c`` lists: names stripped, empty items dropped."""
    return [t.strip() for t in text.split(",") if t.strip()]


class CommandFailed(RuntimeError):
    """A job ran and failed (exit 1); the message says why."""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", help="store file (default: $ILCSCOPE_DB or data/ilcscope.duckdb)")
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    parser = argparse.ArgumentParser(
        prog="python -m core", description="ILCscope command line: the store, imports, reports.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    report_parser = commands.add_parser("report", help="tables the pages show, as JSON")
    report = report_parser.add_subparsers(dest="report", metavar="REPORT", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"cli.{name}").register(commands, report, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            result = args.func(args)
    except (InputError, StoreVersionError, PseudonymKeyError) as exc:
        _fail(exc, debug)
        return 2
    except (CommandFailed, StoreBusy, RunCancelled) as exc:
        _fail(exc, debug)
        return 1
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in OPTIONAL_DEPENDENCIES:
            raise   # our own code, or a package every command needs: a bug, shown whole
        _fail(InputError(f"python -m core {args.command} needs {missing}, which is not installed "
                         "here; pip install -r requirements.txt"), debug)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    if result is not None:
        try:
            print(to_json(result) if getattr(args, "json", False) else to_text(result))
        except BrokenPipeError:  # `... | head`: the reader left; not an error
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one ``warning:`` line on stderr (a store migration's note, a NaN count)."""
    print(f"warning: {message}", file=sys.stderr)


def _fail(exc: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    print(f"error: {flag_names(str(exc))}", file=sys.stderr)


def jsonable(value):
    """DataFrames become lists of records; numpy scalars and NaN become plain JSON."""
    if isinstance(value, pd.DataFrame):
        return [jsonable(r) for r in value.to_dict(orient="records")]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):  # JSON has no NaN or Infinity
        return None if not math.isfinite(value) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def to_json(value) -> str:
    return json.dumps(jsonable(value), indent=1, default=str)


def to_text(value) -> str:
    """A readable rendering: tables as aligned text, dicts as 'key: value' lines."""
    if isinstance(value, pd.DataFrame):
        return value.to_string(index=False) if not value.empty else "(no rows)"
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, pd.DataFrame):
                lines += [f"{key}:", to_text(item), ""]
            elif isinstance(item, (dict, list)) and item:
                lines.append(f"{key}: {json.dumps(jsonable(item), default=str)}")
            else:
                lines.append(f"{key}: {item}")
        return "\n".join(lines)
    return to_json(value)


def open_from_args(args, *, read_only: bool = False):
    """The store named by ``--db`` (or the default)."""
    from core.store import open_store

    return open_store(args.db, read_only=read_only)
