"""Score tables: ``python -m core import predictions FILE`` and ``... import readers FILE``.

A table is CSV (``.csv``, ``.tsv``), Parquet (``.parquet``, ``.pq``) or a pickled pandas
DataFrame (``.pkl``, ``.pickle``; loaded with a restricted unpickler that accepts pandas/numpy
data only, so a pickle cannot run code). Columns named ``Unnamed: N`` (a saved pandas index)
are ignored.

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
counts them. A duplicate (id, side, name) fails the file, as does a non-numeric score.
"""
from __future__ import annotations

import io
import math
import pickle
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import InputError
from core.importers import ImportReport
from core.importers.common import (
    Batch, FileRows, check_dataset, exam_id_for, finish, parse_image_name, parse_laterality,
)
from core.progress import ProgressFn, report as report_progress
from core.store.schema import LEVELS
from core.store import Store

__all__ = ["import_predictions", "import_readers", "read_table", "load_pickle", "TableOptions"]

FORMATS = ("long", "wide")
ID_ALIASES = ("id", "case_id", "image_id", "exam_id", "image_index", "image", "exam", "exam_key",
              "image_key", "index")
SIDE_ALIASES = ("side", "laterality", "breast", "imagelaterality")
LABEL_ALIASES = ("label", "cancer", "malignant_label", "target", "truth")
NAME_COLUMN = {"predictions": "model", "readers": "reader"}
SCORE_ALIASES = {"predictions": ("score", "malignant", "malignant_pred", "prediction", "pred"),
                 "readers": ("score", "recall", "decision", "value")}
_BOOLEAN_WORDS = {"0": False, "1": True, "0.0": False, "1.0": True, "false": False,
                  "true": True, "no": False, "yes": True}
_CONSENSUS = re.compile(r"consensus|recall|arbitrat", re.IGNORECASE)
_GENERIC_SCORES = ("malignant_pred", "malignant", "score", "prediction", "pred")
_IMAGE_SUFFIX = re.compile(r"\.(png|dcm|dicom|pgm)$", re.IGNORECASE)


@dataclass(frozen=True)
class TableOptions:
    """How to read a score table; every field None = detect (see the module docstring)."""

    format: str | None = None
    id_column: str | None = None
    side_column: str | None = None
    label_column: str | None = None
    value_columns: tuple[str, ...] | None = None
    level: str | None = None
    dataset: str | None = None
    name: str | None = None
    score_column: str | None = None


# ---------------------------------------------------------------------------- reading files
_PICKLE_CLASSES = {
    ("builtins", n) for n in ("list", "dict", "tuple", "set", "frozenset", "slice", "range",
                              "complex", "bytearray", "bytes", "str", "int", "float", "bool")
} | {("__builtin__", n) for n in ("list", "dict", "tuple", "set", "frozenset", "slice",
                                   "bytearray", "complex")} | {
    ("numpy", "dtype"), ("numpy", "ndarray"), ("_codecs", "encode"),
    ("copyreg", "_reconstructor"), ("collections", "OrderedDict"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
    ("pyarrow.lib", "_restore_array"), ("pyarrow.lib", "py_buffer"),
    ("pyarrow.lib", "type_for_alias"),
} | {("pandas", n) for n in (
    "DataFrame", "Series", "Index", "RangeIndex", "MultiIndex", "CategoricalIndex",
    "DatetimeIndex", "TimedeltaIndex", "Categorical", "StringDtype", "CategoricalDtype",
    "DatetimeTZDtype", "ArrowDtype", "BooleanDtype", "Int8Dtype", "Int16Dtype", "Int32Dtype",
    "Int64Dtype", "UInt8Dtype", "UInt16Dtype", "UInt32Dtype", "UInt64Dtype", "Float32Dtype",
    "Float64Dtype", "Timestamp", "Timedelta")}
_PICKLE_MODULES = ("pandas._libs.", "pandas.core.internals.", "pandas.core.indexes.",
                   "pandas.core.arrays.", "pandas.core.dtypes.", "pandas.arrays", "numpy.dtypes",
                   "datetime")


class _DataUnpickler(pickle.Unpickler):
    """Unpickles plain data and pandas/numpy containers only: a pickle cannot run code."""

    def find_class(self, module: str, name: str):
        allowed = (module, name) in _PICKLE_CLASSES or any(
            module == m.rstrip(".") or module.startswith(m) for m in _PICKLE_MODULES)
        if not allowed or name.startswith("__") and not name.startswith("__pyx_unpickle"):
            raise InputError(f"pickle refers to {module}.{name}, which ILCscope does not load "
                             "from pickles (only plain data and pandas tables); save the table "
                             "as CSV or Parquet")
        return super().find_class(module, name)


def load_pickle(path: str | Path):
    """A pickle holding plain data or a pandas DataFrame, loaded without running its code."""
    path = Path(path)
    try:
        return _DataUnpickler(io.BytesIO(path.read_bytes())).load()
    except InputError:
        raise
    except Exception as exc:  # a corrupt pickle raises anything from EOFError to KeyError
        raise InputError(f"{path.name}: not a readable pickle ({type(exc).__name__}); save the "
                         "table as CSV or Parquet") from None


def read_table(path: str | Path) -> pd.DataFrame:
    """CSV/TSV (all columns as text), Parquet or a pickled DataFrame; ``Unnamed: N`` dropped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"table {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv", ".txt"):
            table = pd.read_csv(path, dtype=str, sep="\t" if suffix == ".tsv" else ",")
        elif suffix in (".parquet", ".pq"):
            table = pd.read_parquet(path)
        elif suffix in (".pkl", ".pickle"):
            table = load_pickle(path)
            if not isinstance(table, pd.DataFrame):
                raise InputError(f"{path.name}: the pickle holds a {type(table).__name__}, not "
                                 "a pandas DataFrame")
        else:
            raise InputError(f"{path.name}: unknown table type {suffix or '(no suffix)'}; use "
                             ".csv, .tsv, .parquet or .pkl")
    except InputError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError,
            ValueError) as exc:
        raise InputError(f"{path.name}: unreadable table ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:160]})") from None
    table = table.rename(columns=lambda c: str(c).strip())
    table = table[[c for c in table.columns if not re.fullmatch(r"Unnamed: \d+", c)]]
    if table.empty:
        raise InputError(f"{path.name}: the table has no rows")
    return table.reset_index(drop=True)


def find_column(table: pd.DataFrame, name: str | None, aliases: tuple[str, ...], what: str,
                file: str, *, required: bool = True) -> str | None:
    """The column called ``name`` (exactly), else the first alias present (case-insensitive)."""
    if name is not None:
        if name not in table.columns:
            raise InputError(f"{file}: no column {name!r} ({what}); columns are "
                             f"{', '.join(map(str, table.columns))}")
        return name
    lower = {str(c).lower(): c for c in table.columns}
    for alias in aliases:
        if alias in lower:
            return lower[alias]
    if required:
        raise InputError(f"{file}: no {what} column (looked for {', '.join(aliases)}); columns "
                         f"are {', '.join(map(str, table.columns))}; name it with the flag")
    return None


def id_text(value) -> str | None:
    """An id as text: integral floats lose their '.0' (CSV ids read back as 1.0), blanks -> None."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def parse_numbers(values: pd.Series, column: str, file: str) -> pd.Series:
    """float64 values; blanks/NaN stay NaN; anything non-numeric fails with the first example."""
    if pd.api.types.is_bool_dtype(values):
        return values.astype("float64")
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    bad = numbers.isna() & values.notna() & (values.astype(str).str.strip() != "")
    bad &= ~values.astype(str).str.strip().str.lower().isin(("nan", "na", "null", "none"))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"{file}: column {column!r} holds a non-numeric value "
                         f"{str(values.iloc[row])[:40]!r} (row {row + 1}); it must hold numbers")
    if np.isinf(numbers).any():
        row = int(np.flatnonzero(np.isinf(numbers.to_numpy()))[0])
        raise InputError(f"{file}: column {column!r} holds an infinite value (row {row + 1})")
    return numbers


def parse_binary(values: pd.Series, column: str, file: str) -> pd.Series:
    """0/1 as float64 (NaN for blanks) from 0/1/true/false/yes/no; anything else fails."""
    def one(value):
        if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            return np.nan
        if isinstance(value, (bool, np.bool_)):
            return float(value)
        text = str(value).strip().lower()
        if text in ("", "nan", "na", "null", "none"):
            return np.nan
        if text not in _BOOLEAN_WORDS:
            raise InputError(f"{file}: column {column!r} holds {str(value)[:40]!r}; expected "
                             "0/1 (or true/false, yes/no)")
        return float(_BOOLEAN_WORDS[text])
    return values.map(one).astype("float64")


def is_binary(values: pd.Series) -> bool:
    present = values.dropna()
    if present.empty:
        return False
    if pd.api.types.is_bool_dtype(values):
        return True
    return bool(present.astype(str).str.strip().str.lower().isin(_BOOLEAN_WORDS).all())


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


# ---------------------------------------------------------------------------- the work
@dataclass(frozen=True)
class _Long:
    """A table in long form: one row per (case id, side, name) with a raw value and label."""

    rows: pd.DataFrame  # columns: id, side, name, value, label, row
    level: str | None
    has_label: bool


def _import_table(store: Store, path: Path, kind: str, options: TableOptions,
                  progress: ProgressFn | None) -> ImportReport:
    if options.format is not None and options.format not in FORMATS:
        raise InputError(f"format {options.format!r} is not long or wide")
    if options.level is not None and options.level not in LEVELS:
        raise InputError(f"level {options.level!r} is not one of {', '.join(LEVELS)}")
    if options.dataset is not None:
        check_dataset(options.dataset)
    report = ImportReport(kind=kind, dataset=options.dataset or "")
    table = read_table(path)
    report_progress(progress, 0, 3, "reading")
    long = _to_long(table, kind, options, path)
    values, note = _parse_values(long.rows, kind, path.name)
    report_progress(progress, 1, 3, "matching")
    if options.dataset is not None and not long.has_label and \
            options.dataset not in store.dataset_names():
        raise InputError(f"dataset {options.dataset!r} is not in the store; to create its cases "
                         "from this table pass --label-column (or import the images first)")
    with store.connection():
        with Batch(store, report) as batch:
            batch.run(path.name, lambda: _file_rows(store, path, kind, options, long, values,
                                                    note, report))
    report_progress(progress, 3, 3, "written")
    return finish(store, report)


def _to_long(table: pd.DataFrame, kind: str, options: TableOptions, path: Path) -> _Long:
    file = path.name
    cols = set(table.columns)
    name_col = NAME_COLUMN[kind]
    default_name = options.name or path.stem
    fmt = options.format
    if fmt is None and {"image_index", "malignant_pred"} <= cols:  # metarepository, image level
        label = options.label_column or ("malignant_label" if "malignant_label" in cols else None)
        opts = replace(options, id_column=options.id_column or "image_index",
                       score_column=options.score_column or "malignant_pred",
                       label_column=label, level=options.level or "image")
        return _wide(table, opts, [opts.score_column], default_name, file)
    if fmt is None and {"left_malignant", "right_malignant"} <= cols:  # metarepository, breast
        ids = (table["index"] if "index" in cols and options.id_column is None
               else table[options.id_column] if options.id_column
               else pd.Series(range(len(table))))
        parts = []
        for side, column in (("L", "left_malignant"), ("R", "right_malignant")):
            parts.append(pd.DataFrame({"id": ids.map(id_text), "side": side,
                                       "name": default_name, "value": table[column],
                                       "label": np.nan, "row": np.arange(1, len(table) + 1)}))
        return _Long(pd.concat(parts, ignore_index=True), options.level or "breast", False)
    name_present = find_column(table, None, (name_col,), name_col, file, required=False)
    if fmt == "long" or (fmt is None and name_present is not None):
        name_column = name_present or find_column(table, None, (name_col,), name_col, file)
        score = find_column(table, options.score_column, SCORE_ALIASES[kind], "score", file)
        id_col = find_column(table, options.id_column, ID_ALIASES, "id", file)
        side = find_column(table, options.side_column, SIDE_ALIASES, "side", file,
                           required=options.side_column is not None)
        label = find_column(table, options.label_column, LABEL_ALIASES, "label", file,
                            required=False) if options.label_column else None
        rows = pd.DataFrame({
            "id": table[id_col].map(id_text),
            "side": table[side] if side else None,
            "name": table[name_column].map(id_text),
            "value": table[score], "label": table[label] if label else np.nan,
            "row": np.arange(1, len(table) + 1)})
        if rows["name"].isna().any():
            row = int(np.flatnonzero(rows["name"].isna().to_numpy())[0]) + 1
            raise InputError(f"{file}: column {name_column!r} is empty in row {row}; every row "
                             f"needs a {name_col} name")
        return _Long(rows, options.level or ("breast" if side else None), label is not None)
    value_columns = list(options.value_columns) if options.value_columns else None
    if options.score_column is not None:
        value_columns = [options.score_column]
    return _wide(table, options, value_columns, default_name, file)


def _wide(table: pd.DataFrame, options: TableOptions, value_columns: list[str] | None,
          default_name: str, file: str) -> _Long:
    id_col = find_column(table, options.id_column, ID_ALIASES, "id", file)
    side = find_column(table, options.side_column, SIDE_ALIASES, "side", file,
                       required=options.side_column is not None)
    label = find_column(table, options.label_column, LABEL_ALIASES, "label", file,
                        required=False) if options.label_column else None
    if value_columns is None:
        value_columns = [c for c in table.columns if c not in (id_col, side, label)]
    missing = [c for c in value_columns if c not in table.columns]
    if missing:
        raise InputError(f"{file}: no column {missing[0]!r}; columns are "
                         f"{', '.join(map(str, table.columns))}")
    if not value_columns:
        raise InputError(f"{file}: no score columns besides id/side/label; name them with "
                         "--model-columns / --reader-columns")
    parts = []
    single = len(value_columns) == 1 and (options.name is not None
                                          or value_columns[0].lower() in _GENERIC_SCORES)
    for column in value_columns:
        name = default_name if single else column
        parts.append(pd.DataFrame({
            "id": table[id_col].map(id_text), "side": table[side] if side else None,
            "name": name, "value": table[column], "label": table[label] if label else np.nan,
            "row": np.arange(1, len(table) + 1)}))
    return _Long(pd.concat(parts, ignore_index=True),
                 options.level or ("breast" if side else None), label is not None)


def _parse_values(rows: pd.DataFrame, kind: str, file: str) -> tuple[pd.DataFrame, str]:
    """Validated values: id present, side L/R, numbers or recall, no duplicates; NaN dropped."""
    rows = rows.copy()
    if rows["id"].isna().any():
        row = int(rows.loc[rows["id"].isna(), "row"].iloc[0])
        raise InputError(f"{file}: the id is empty in row {row}; every row needs an id")
    if rows["side"].notna().any():
        sides = rows["side"].map(parse_laterality)
        if sides.isna().any():
            bad = rows[sides.isna()].iloc[0]
            raise InputError(f"{file}: side {bad['side']!r} in row {int(bad['row'])} is not "
                             "L/R/left/right")
        rows["side"] = sides
    else:
        rows["side"] = None
    rows["label"] = parse_binary(rows["label"], "label", file)
    rows["score"], rows["recall"] = np.nan, np.nan
    for name, group in rows.groupby("name", sort=False):
        if kind == "readers" and is_binary(group["value"]):
            rows.loc[group.index, "recall"] = parse_binary(group["value"], str(name), file)
        else:
            rows.loc[group.index, "score"] = parse_numbers(group["value"], str(name), file)
    key = ["id", "side", "name"]
    dup = rows.duplicated(subset=key, keep=False)
    if dup.any():
        first = rows[dup].iloc[0]
        n = int((rows[key].fillna("") == first[key].fillna("")).all(axis=1).sum())
        where = f"{first['id']}" + (f" side {first['side']}" if first["side"] else "")
        raise InputError(f"{file}: duplicate id {where} for {first['name']} ({n} rows); keep "
                         "one row per case (and side) per model or reader")
    empty = rows["score"].isna() & rows["recall"].isna()
    n_empty = int(empty.sum())
    note = f"{n_empty} row(s) with NaN values skipped" if n_empty else ""
    return rows[~empty].reset_index(drop=True), note


def _file_rows(store: Store, path: Path, kind: str, options: TableOptions, long: _Long,
               values: pd.DataFrame, note: str, report: ImportReport) -> FileRows:
    dataset = options.dataset
    known = set(store.dataset_names())
    rows: dict[str, list[dict]] = {}
    notes = [note] if note else []
    level = long.level
    if dataset is not None and dataset not in known:
        level = level or _guess_new_level(values)
        rows.update(_new_cases(dataset, kind, path.name, level, values))
        targets = _Targets.from_rows(rows)
    else:
        targets = _Targets.from_store(store, dataset)
        if long.has_label:
            notes.append("label column ignored: the cases exist")
    level = level or targets.best_level(values)
    matched = values.apply(lambda r: targets.match(level, r["id"], r["side"]), axis=1)
    unmatched = values[matched.isna()]
    report.unmatched.extend(sorted({f"{r.id}/{r.side}" if r.side else str(r.id)
                                    for r in unmatched.itertuples()}))
    values = values[matched.notna()]
    matched = matched[matched.notna()]
    if values.empty:
        raise InputError(f"{path.name}: none of its {len(unmatched)} rows matches a stored "
                         f"{level} (first id {unmatched['id'].iloc[0]!r}); check --level, "
                         "--id-column and --dataset, or create the cases with --dataset NEW "
                         "--label-column COL")
    if not unmatched.empty:
        notes.append(f"{len(unmatched)} row(s) match no stored {level}")
    table_rows = []
    seen = set()
    for (case_id, exam_id, laterality, image_id), row in zip(matched, values.itertuples()):
        if (row.name, case_id) in seen:
            raise InputError(f"{path.name}: two rows ({row.id}) resolve to the same {level} "
                             f"case {case_id} for {row.name}; keep one")
        seen.add((row.name, case_id))
        base = {"level": level, "case_id": case_id, "exam_id": exam_id,
                "laterality": laterality, "image_id": image_id}
        if kind == "predictions":
            table_rows.append(dict(base, model=row.name, malignant=float(row.score)))
        else:
            table_rows.append(dict(base, reader=row.name,
                                   score=None if math.isnan(row.score) else float(row.score),
                                   recall=None if math.isnan(row.recall) else bool(row.recall)))
    rows["predictions" if kind == "predictions" else "reads"] = table_rows
    names = sorted(values["name"].unique())
    if kind == "predictions":
        new = [n for n in names if n not in set(store.model_names())]
        rows["models"] = [{"model": n, "kind": "external", "synthetic": False,
                           "description": f"imported from {path.name}"} for n in new]
    else:
        new = [n for n in names if n not in set(store.reader_names())]
        rows["readers"] = [{"reader": n, "synthetic": False,
                            "kind": "consensus" if _CONSENSUS.search(n) else "radiologist"}
                           for n in new]
    return FileRows(rows, note="; ".join(notes))


def _guess_new_level(values: pd.DataFrame) -> str:
    if values["side"].notna().any():
        return "breast"
    parsed = values["id"].map(lambda i: parse_image_name(_IMAGE_SUFFIX.sub("", i)))
    return "image" if parsed.notna().all() else "exam"


def _new_cases(dataset: str, kind: str, file: str, level: str,
               values: pd.DataFrame) -> dict[str, list[dict]]:
    """Exams, breasts (and images) for a predictions-only dataset, labelled from the table."""
    exams: dict[str, dict] = {}
    breasts: dict[tuple[str, str], dict] = {}
    images: dict[str, dict] = {}
    assumed = False
    labels = values.dropna(subset=["label"]).groupby(["id", "side"], dropna=False)["label"].max()
    if labels.empty:
        raise InputError(f"{file}: the label column is empty; labels are needed to create cases")
    for (case, side), label in labels.items():
        side = side if isinstance(side, str) else None
        if level == "image":
            parsed = parse_image_name(_IMAGE_SUFFIX.sub("", case))
            if parsed is not None:
                exam_key, laterality, view, _ = parsed
                source = "file-name"
            else:
                exam_key, view = case, "other"
                laterality, source = (side, "manifest") if side else ("L", "assumed")
                assumed |= side is None
            exam_id = exam_id_for(dataset, exam_key)
            images[case] = {"image_id": f"{dataset}/{case}", "exam_id": exam_id,
                            "dataset": dataset, "image_key": case, "laterality": laterality,
                            "laterality_source": source, "view": view}
        elif level == "breast":
            if side is None:
                raise InputError(f"{file}: breast-level cases need a side column (or the "
                                 "metarepository's left_/right_malignant columns)")
            exam_key, laterality = case, side
        else:
            exam_key, laterality = case, "L"
        exam_id = exam_id_for(dataset, exam_key)
        exams[exam_id] = {"exam_id": exam_id, "dataset": dataset, "exam_key": exam_key}
        key = (exam_id, laterality)
        cancer = int(max(label, breasts[key]["cancer"]) if key in breasts else label)
        breasts[key] = {"exam_id": exam_id, "laterality": laterality, "cancer": cancer,
                        "histology": "unknown" if cancer else "none"}
    notes = {"image": "image-level cases created from a score table; laterality from "
                      "<exam>_<L|R>_<view> ids or the side column"
                      + ("; ids without side information got laterality 'L' (assumed)"
                         if assumed else ""),
             "breast": "breast-level cases created from a score table",
             "exam": "exam-level cases created from a score table; each exam's label sits on "
                     "one placeholder breast 'L'"}[level]
    return {"datasets": [{"dataset": dataset, "kind": "predictions-only", "source": kind,
                          "root": None, "notes": notes}],
            "exams": list(exams.values()), "breasts": list(breasts.values()),
            "images": list(images.values())}


class _Targets:
    """Stored (or about-to-be-created) cases, indexed by every id a table may use."""

    def __init__(self, images: pd.DataFrame, exams: pd.DataFrame, breasts: set[str]):
        self.images: dict[str, tuple | None] = {}
        self.exams: dict[str, tuple | None] = {}
        self.breasts = breasts  # case ids <exam_id>/<L|R>
        for r in images.itertuples():
            value = (r.image_id, r.exam_id, r.laterality, r.image_id)
            for key in {r.image_id, r.image_key}:
                self._put(self.images, key, value)
            exam_key = r.exam_id.split("/", 1)[1]
            self._put(self.images, ("view", exam_key, r.laterality, r.view), value)
            parsed = parse_image_name(str(r.image_key))
            if parsed is not None:
                self._put(self.images, ("view",) + parsed[:3], value)
        for r in exams.itertuples():
            for key in {r.exam_id, r.exam_key}:
                self._put(self.exams, key, r.exam_id)

    @staticmethod
    def _put(index: dict, key, value) -> None:
        if key in index and index[key] != value:
            index[key] = None  # ambiguous: matches several cases
        else:
            index[key] = value

    @classmethod
    def from_store(cls, store: Store, dataset: str | None) -> _Targets:
        if dataset is not None and dataset not in store.dataset_names():
            raise InputError(f"dataset {dataset!r} is not in the store")
        exams = store.exams(dataset=dataset)
        breasts = store.cases(level="breast")
        breasts = set(breasts.loc[breasts["exam_id"].isin(set(exams["exam_id"])), "case_id"])
        return cls(store.images(dataset=dataset), exams, breasts)

    @classmethod
    def from_rows(cls, rows: dict[str, list[dict]]) -> _Targets:
        images = pd.DataFrame(rows["images"], columns=["image_id", "exam_id", "laterality",
                                                       "view", "image_key"])
        exams = pd.DataFrame(rows["exams"], columns=["exam_id", "exam_key"])
        return cls(images, exams, {f"{b['exam_id']}/{b['laterality']}" for b in rows["breasts"]})

    def _image(self, case: str):
        case = _IMAGE_SUFFIX.sub("", case)
        if case in self.images:
            return self.images[case]
        parsed = parse_image_name(case)
        return self.images.get(("view",) + parsed[:3]) if parsed is not None else None

    def match(self, level: str, case: str, side: str | None) -> tuple | None:
        """(case_id, exam_id, laterality, image_id) or None (unmatched or ambiguous)."""
        if level == "image":
            return self._image(case)
        if level == "exam":
            exam_id = self.exams.get(case)
            return None if exam_id is None else (exam_id, exam_id, None, None)
        if side is None and "/" in case and case.rsplit("/", 1)[1] in ("L", "R"):
            case, side = case.rsplit("/", 1)
        exam_id = self.exams.get(case)
        if exam_id is None or side is None or f"{exam_id}/{side}" not in self.breasts:
            return None
        return (f"{exam_id}/{side}", exam_id, side, None)

    def best_level(self, values: pd.DataFrame) -> str:
        sample = values.drop_duplicates(subset=["id"])
        images = sum(self._image(c) is not None for c in sample["id"])
        exams = sum(self.exams.get(c) is not None for c in sample["id"])
        return "exam" if exams > images else "image"
