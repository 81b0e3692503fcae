"""Score tables: ``python -m core import predictions FILE`` and ``... import readers FILE``.

A table is CSV (``.csv``, ``.tsv``) or Parquet (``.parquet``, ``.pq``), read by
`core.io.tables`. Pickled DataFrames are refused (loading one can run code): convert them on a
trusted machine with ``pd.read_pickle(p).to_parquet(...)``.
Columns named ``Unnamed: N`` (a saved pandas index) are ignored. The work is in three steps:
`core.importers.reshape` (layout to long form, values checked), `core.importers.matching`
(ids to cases) and one transaction here.

Layouts (``format``)
--------------------
long   one row per (case, model): an id column, a name column (``model`` for predictions,
       ``reader`` for readers) and a value column (``score``; or ``score_column``)
wide   one row per case, one value column per model/reader (``model_columns`` /
       ``reader_columns``; default: every column except id, side and label). With one value
       column, ``model`` (``reader``) names it; else the column name is the name
auto   (default) the metarepository's files are recognised by their columns:
       ``image_index, malignant_pred[, malignant_label]`` (image level; names like ``0_L_CC``
       or ``0_L-CC``) and ``[index,] left_malignant, right_malignant`` (breast level; ``index``,
       else the row number, is the exam key); otherwise long if a name column exists, else wide

Levels and matching
-------------------
``level`` image | breast | exam. Default: breast with a side column; otherwise whichever of
image and exam matches more ids. An id matches a stored image by image_id or image_key, or by
(exam key, side, view) when it reads ``<exam>_<L|R>[_-]<CC|MLO>``; a breast by exam_id or
exam_key plus the side column (L/R/left/right), or by its case id ``<exam_id>/<L|R>``; an exam
by exam_id or exam_key. ``dataset`` restricts matching to one dataset (an id found in several
datasets needs it). Rows that match nothing are listed in ``ImportReport.unmatched``, never
dropped silently.

New datasets (no pixels)
------------------------
When ``dataset`` names a dataset the store does not have and ``label_column`` is given, the
cases are created from the table (``datasets.kind = 'predictions-only'``): image level makes
one exam per ``<exam>_<L|R>_<view>`` id's exam key (laterality and view from the id), or per id
with the side column's laterality, or, with no side information at all, one exam per image
with laterality 'L' (``laterality_source = 'assumed'``, said in ``datasets.notes``); breast
level makes one exam per id and a breast per side; exam level makes one exam per id whose label
sits on a single placeholder breast 'L'. Labels are 0/1; histology is 'unknown' for 1, 'none'
for 0.

Values
------
Prediction scores are numbers (``predictions.malignant``). Reader columns hold scores (numbers)
or recall decisions: a column whose values are all 0/1/true/false/yes/no is read as recall.
Readers named like consensus/recall/arbitration get kind 'consensus', else 'radiologist'; new
model names get kind 'external'. Rows with a missing (NaN) value are not stored; the report
counts them. A duplicate (id, side, name) fails the file, as does a non-numeric score, and a
value column of booleans (predictions), dates, durations or lists (`columns.check_numbers`).
"""
from __future__ import annotations

from pathlib import Path

from core.errors import InputError
from core.importers import ImportReport
from core.importers.common import Batch, check_dataset, finish
from core.importers.matching import table_rows
from core.importers.reshape import FORMATS, TableOptions, parse_values, to_long
from core.io.tables import read_table
from core.progress import ProgressFn, report as report_progress
from core.store import Store
from core.validation import check_choice, check_level

__all__ = ["import_predictions", "import_readers", "TableOptions"]


# ---------------------------------------------------------------------------- public API
def import_predictions(store: Store, path: str | Path, *, format: str | None = None,
                       id_column: str | None = None, side_column: str | None = None,
                       label_column: str | None = None,
                       model_columns: tuple[str, ...] | None = None, level: str | None = None,
                       dataset: str | None = None, model: str | None = None,
                       score_column: str | None = None,
                       progress: ProgressFn | None = None) -> ImportReport:
    """Import a table of malignancy scores (see the module docstring); one transaction.

    Example: ``import_predictions(store, "gmic_image.csv", model="gmic")`` reads the
    metarepository's ``image_index, malignant_pred, malignant_label`` file.
    """
    options = TableOptions(format, id_column, side_column, label_column,
                           tuple(model_columns) if model_columns else None, level, dataset,
                           model, score_column)
    return _import_table(store, Path(path), "predictions", options, progress)


def import_readers(store: Store, path: str | Path, *, format: str | None = None,
                   id_column: str | None = None, side_column: str | None = None,
                   label_column: str | None = None,
                   reader_columns: tuple[str, ...] | None = None, level: str | None = None,
                   dataset: str | None = None, reader: str | None = None,
                   score_column: str | None = None,
                   progress: ProgressFn | None = None) -> ImportReport:
    """Import reader scores or recall decisions (see the module docstring); one transaction."""
    options = TableOptions(format, id_column, side_column, label_column,
                           tuple(reader_columns) if reader_columns else None, level, dataset,
                           reader, score_column)
    return _import_table(store, Path(path), "readers", options, progress)


def _import_table(store: Store, path: Path, kind: str, options: TableOptions,
                  progress: ProgressFn | None) -> ImportReport:
    if options.format is not None:
        check_choice(options.format, FORMATS, name="format")
    if options.level is not None:
        check_level(options.level)
    if options.dataset is not None:
        check_dataset(options.dataset)
    report = ImportReport(kind=kind, dataset=options.dataset or "")
    table = read_table(path)
    report_progress(progress, 0, 3, "reading")
    long = to_long(table, kind, options, path)
    values, note = parse_values(long.rows, kind, path.name)
    report_progress(progress, 1, 3, "matching")
    if options.dataset is not None and not long.has_label and \
            options.dataset not in store.dataset_names():
        raise InputError(f"dataset {options.dataset!r} is not in the store; to create its cases "
                         "from this table pass label_column (or import the images first)")
    with Batch(store, report) as batch:  # the write (at the block's end) is one transaction
        with store.connection():  # the matching's reads share one attachment
            batch.run(path.name, lambda: table_rows(store, path, kind, options, long, values,
                                                    note, report))
    report_progress(progress, 3, 3, "written")
    return finish(store, report)
