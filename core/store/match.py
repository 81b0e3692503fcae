"""Structured row selections: what callers say instead of SQL, checked against the schema.

A caller names a table and ``{column: value or list of values}``; this module turns that into a
WHERE clause whose names all come from `core.store.schema.TABLE_COLUMNS` and whose values all
travel as ``?`` parameters, so nothing a caller (or a result folder on disk) passes is ever
executed as SQL.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from core.errors import InputError
from core.store.schema import PRIMARY_KEYS, TABLE_COLUMNS

_PARENTS = {"exam_id": "exams", "image_id": "images"}  # where a row finds its dataset
_LISTS = (list, tuple, set, frozenset, np.ndarray, pd.Series, pd.Index)


def check_table(table: str) -> None:
    """Refuse a name that is not a store table (names are interpolated, so only known ones)."""
    if table not in TABLE_COLUMNS:
        raise InputError(f"unknown table {table!r}; known: {', '.join(TABLE_COLUMNS)}")


def match_sql(table: str, match: Mapping) -> tuple[str, list]:
    """A WHERE clause and its parameters for ``{column: value or list of values}`` on ``table``.

    Columns are checked against the schema (never interpolated unchecked); values always travel
    as parameters. A list matches any of its values (compared as text, so ids and versions
    both work; a ``None`` in it matches NULL); ``None`` matches NULL. ``dataset`` on a table
    without that column selects the rows on the dataset's exams (tables with ``exam_id``) or
    images (``image_id``). No columns: every row (``TRUE``).
    """
    check_table(table)
    columns = TABLE_COLUMNS[table]
    clauses, params = [], []
    for column, value in match.items():
        if column == "dataset" and column not in columns:
            parent = next((p for p in _PARENTS if p in columns), None)
            if parent is None:
                raise InputError(f"table {table} has no dataset, exam_id or image_id column; "
                                 "match it on its own columns")
            inner, inner_params = match_sql(_PARENTS[parent], {"dataset": value})
            clauses.append(f"{parent} IN (SELECT {parent} FROM {_PARENTS[parent]} WHERE {inner})")
            params += inner_params
            continue
        if column not in columns:
            raise InputError(f"table {table} has no column {column!r}; its columns are "
                             f"{', '.join(columns)}")
        if isinstance(value, _LISTS):
            values = [str(v) for v in value if v is not None]
            clause = f"CAST({column} AS VARCHAR) IN (SELECT unnest(?::VARCHAR[]))"
            if len(values) < len(value):
                clause = f"({clause} OR {column} IS NULL)"
            clauses.append(clause)
            params.append(values)
        elif value is None:
            clauses.append(f"{column} IS NULL")
        else:
            clauses.append(f"{column} = ?")
            params.append(value.item() if isinstance(value, np.generic) else value)
    return " AND ".join(clauses) or "TRUE", params


def select_sql(table: str, match: Mapping) -> tuple[str, list]:
    """The query behind `Store.select`: the schema columns of ``table`` for the rows matched."""
    where, params = match_sql(table, match)
    return f"SELECT {', '.join(TABLE_COLUMNS[table])} FROM {table} WHERE {where}", params


def delete_sql(entry: Mapping) -> tuple[str, list]:
    """The DELETE for one ``{"table": name, "match": {column: value}}`` entry.

    Anything else (an SQL string, an old ``{"table", "where", "params"}`` entry, an empty match
    that would empty the table) is refused: a delete always names the rows it removes.
    """
    if not isinstance(entry, Mapping) or set(entry) != {"table", "match"} \
            or not isinstance(entry["match"], Mapping) or not entry["match"]:
        raise InputError(f"delete entry {str(entry)[:200]!r} is not {{'table': ..., 'match': "
                         "{column: value}}} with at least one column; deleting a whole table "
                         "is not an ingest's job")
    where, params = match_sql(entry["table"], entry["match"])
    return f"DELETE FROM {entry['table']} WHERE {where}", params


def keys_sql(table: str, keys: pd.DataFrame) -> tuple[str, list]:
    """The query behind `Store.rows`: rows of ``table`` whose primary key is a row of ``keys``.

    Keys are compared as text (one ``unnest`` list per key column), so a frame read from a
    file matches integer versions too; a missing key value matches nothing.
    """
    check_table(table)
    pk = PRIMARY_KEYS[table]
    columns = ", ".join(TABLE_COLUMNS[table])
    unnest = ", ".join(f"unnest(?::VARCHAR[]) AS {c}" for c in pk)
    on = " AND ".join(f"CAST(t.{c} AS VARCHAR) = k.{c}" for c in pk)
    params = [[None if pd.isna(v) else str(v) for v in keys[c]] for c in pk]
    return (f"SELECT t.* FROM (SELECT {columns} FROM {table}) t "
            f"JOIN (SELECT DISTINCT * FROM (SELECT {unnest})) k ON {on}", params)
