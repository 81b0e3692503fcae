"""Score tables to one long form: a row per (case id, side, name) with a checked value.

Long and wide layouts, and the metarepository's two files, all become a `LongTable`; then
`parse_values` checks every id, side and value (scores, or 0/1 recall decisions for readers)
before anything is matched to the store. The layouts are described in `core.importers.tables`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import InputError
from core.importers.columns import (check_ids, check_numbers, find_column, id_text, is_binary,
                                    parse_binary, parse_numbers)
from core.importers.common import parse_laterality

__all__ = ["FORMATS", "LongTable", "TableOptions", "parse_values", "to_long"]

FORMATS = ("long", "wide")
ID_ALIASES = ("id", "case_id", "image_id", "exam_id", "image_index", "image", "exam", "exam_key",
              "image_key", "index")
SIDE_ALIASES = ("side", "laterality", "breast", "imagelaterality")
LABEL_ALIASES = ("label", "cancer", "malignant_label", "target", "truth")
NAME_COLUMN = {"predictions": "model", "readers": "reader"}
VALUE_COLUMNS = {"predictions": "model_columns", "readers": "reader_columns"}  # the parameter
SCORE_ALIASES = {"predictions": ("score", "malignant", "malignant_pred", "prediction", "pred"),
                 "readers": ("score", "recall", "decision", "value")}
_GENERIC_SCORES = ("malignant_pred", "malignant", "score", "prediction", "pred")


@dataclass(frozen=True)
class TableOptions:
    """How to read a score table; every field None = detect (see `core.importers.tables`)."""

    format: str | None = None
    id_column: str | None = None
    side_column: str | None = None
    label_column: str | None = None
    value_columns: tuple[str, ...] | None = None
    level: str | None = None
    dataset: str | None = None
    name: str | None = None
    score_column: str | None = None


@dataclass(frozen=True)
class LongTable:
    """A table in long form: one row per (case id, side, name) with a raw value and label."""

    rows: pd.DataFrame  # columns: id, side, name, value, label, row
    level: str | None
    has_label: bool


def to_long(table: pd.DataFrame, kind: str, options: TableOptions, path: Path) -> LongTable:
    """``table`` in long form, its layout taken from ``options.format`` or detected."""
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
        return _wide(table, kind, opts, [opts.score_column], default_name, file)
    if fmt is None and {"left_malignant", "right_malignant"} <= cols:  # metarepository, breast
        id_col = "index" if "index" in cols and options.id_column is None else options.id_column
        ids = (check_ids(table[find_column(table, id_col, (), "id", file)], id_col, file)
               if id_col else pd.Series(range(len(table))).map(id_text))
        parts = []
        for side, column in (("L", "left_malignant"), ("R", "right_malignant")):
            check_numbers(table[column], column, file, booleans=kind == "readers")
            parts.append(pd.DataFrame({"id": ids, "side": side,
                                       "name": default_name, "value": table[column],
                                       "label": np.nan, "row": np.arange(1, len(table) + 1)}))
        return LongTable(pd.concat(parts, ignore_index=True), options.level or "breast", False)
    name_present = find_column(table, None, (name_col,), name_col, file, required=False)
    if fmt == "long" or (fmt is None and name_present is not None):
        name_column = name_present or find_column(table, None, (name_col,), name_col, file)
        score = find_column(table, options.score_column, SCORE_ALIASES[kind], "score", file,
                            param="score_column")
        id_col, side, label = _keys(table, options, file)
        check_numbers(table[score], score, file, booleans=kind == "readers")
        rows = pd.DataFrame({
            "id": check_ids(table[id_col], id_col, file),
            "side": table[side] if side else None,
            "name": check_ids(table[name_column], name_column, file),
            "value": table[score], "label": table[label] if label else np.nan,
            "row": np.arange(1, len(table) + 1)})
        if rows["name"].isna().any():
            row = int(np.flatnonzero(rows["name"].isna().to_numpy())[0]) + 1
            raise InputError(f"{file}: column {name_column!r} is empty in row {row}; every row "
                             f"needs a {name_col} name")
        return LongTable(rows, options.level or ("breast" if side else None), label is not None)
    value_columns = list(options.value_columns) if options.value_columns else None
    if options.score_column is not None:
        value_columns = [options.score_column]
    return _wide(table, kind, options, value_columns, default_name, file)


def _keys(table: pd.DataFrame, options: TableOptions,
          file: str) -> tuple[str, str | None, str | None]:
    """The id column, and the side and label columns where there are any."""
    id_col = find_column(table, options.id_column, ID_ALIASES, "id", file, param="id_column")
    side = find_column(table, options.side_column, SIDE_ALIASES, "side", file,
                       required=options.side_column is not None, param="side_column")
    label = find_column(table, options.label_column, LABEL_ALIASES, "label", file,
                        required=False) if options.label_column else None
    return id_col, side, label


def _wide(table: pd.DataFrame, kind: str, options: TableOptions, value_columns: list[str] | None,
          default_name: str, file: str) -> LongTable:
    id_col, side, label = _keys(table, options, file)
    if value_columns is None:
        value_columns = [c for c in table.columns if c not in (id_col, side, label)]
    missing = [c for c in value_columns if c not in table.columns]
    if missing:
        raise InputError(f"{file}: no column {missing[0]!r}; columns are "
                         f"{', '.join(map(str, table.columns))}")
    if not value_columns:
        raise InputError(f"{file}: no score columns besides id/side/label; name them with "
                         f"{VALUE_COLUMNS[kind]}")
    parts = []
    single = len(value_columns) == 1 and (options.name is not None
                                          or value_columns[0].lower() in _GENERIC_SCORES)
    for column in value_columns:
        check_numbers(table[column], column, file, booleans=kind == "readers")
        name = default_name if single else column
        parts.append(pd.DataFrame({
            "id": check_ids(table[id_col], id_col, file), "side": table[side] if side else None,
            "name": name, "value": table[column], "label": table[label] if label else np.nan,
            "row": np.arange(1, len(table) + 1)}))
    return LongTable(pd.concat(parts, ignore_index=True),
                     options.level or ("breast" if side else None), label is not None)


def parse_values(rows: pd.DataFrame, kind: str, file: str) -> tuple[pd.DataFrame, str]:
    """Validated values: id present, side L/R, numbers or recall, no duplicates; NaN dropped.

    Returns the rows with ``score`` and ``recall`` columns, and a note counting the NaN rows.
    """
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
