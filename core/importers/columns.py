"""Columns of a user's table: find one by name or alias, read ids, numbers and 0/1 values.

Shared by the score tables, the PNG manifests and CSAW-CC: each value is checked here, so a
bad cell fails its file with the column, the row and the value, whichever importer read it.
"""
from __future__ import annotations

import math
from decimal import Decimal
from numbers import Real

import numpy as np
import pandas as pd

from core.errors import InputError

__all__ = ["check_ids", "check_numbers", "find_column", "id_text", "is_binary", "parse_binary",
           "parse_numbers"]

BOOLEAN_WORDS = {"0": False, "1": True, "0.0": False, "1.0": True, "false": False,
                 "true": True, "no": False, "yes": True}
_BLANKS = ("", "nan", "na", "null", "none")


def find_column(table: pd.DataFrame, name: str | None, aliases: tuple[str, ...], what: str,
                file: str, *, required: bool = True, param: str | None = None) -> str | None:
    """The column called ``name`` (exactly), else the first alias present (case-insensitive).

    ``param`` names the importer's argument that chooses the column, for the error's way out.
    """
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
        remedy = f"name it with {param}" if param else "rename it to one of those"
        raise InputError(f"{file}: no {what} column (looked for {', '.join(aliases)}); columns "
                         f"are {', '.join(map(str, table.columns))}; {remedy}")
    return None


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def id_text(value) -> str | None:
    """An id as text: integral floats lose their '.0' (CSV ids read back as 1.0), blanks -> None."""
    if _missing(value):
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _type_name(values: pd.Series) -> str | None:
    """The name of a column's type when it holds neither numbers nor text, else None.

    Parquet keeps types that CSV loses: dates, durations, complex numbers, lists. Cast to
    numbers they would pass as scores (a date as nanoseconds since 1970), so they are named
    and refused instead.
    """
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        dtype, values = dtype.categories.dtype, values.astype(object)
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if pd.api.types.is_timedelta64_dtype(dtype):
        return "timedelta"
    if pd.api.types.is_complex_dtype(dtype):
        return "complex"
    if pd.api.types.is_numeric_dtype(dtype) or (pd.api.types.is_string_dtype(dtype)
                                                 and not pd.api.types.is_object_dtype(dtype)):
        return None
    if not pd.api.types.is_object_dtype(dtype):
        return str(dtype)  # period, interval, ...
    odd = values.map(lambda v: not (_missing(v) or isinstance(v, (str, Real, Decimal))))
    return type(values[odd].iloc[0]).__name__ if odd.any() else None


def _check_kind(values: pd.Series, column: str, file: str, what: str) -> None:
    """Refuse a column whose type is not numbers or text, naming the column and the type."""
    kind = _type_name(values)
    if kind is not None:
        raise InputError(f"{file}: column {column!r} holds {kind} values, not {what}; save "
                         f"{what} as numbers or text")


def check_ids(values: pd.Series, column: str, file: str) -> pd.Series:
    """Ids as text (`id_text`); a column of dates, durations, booleans or lists is refused."""
    if pd.api.types.is_bool_dtype(values):
        raise InputError(f"{file}: column {column!r} holds booleans (True/False), not ids")
    _check_kind(values, column, file, "ids")
    return values.map(id_text)


def check_numbers(values: pd.Series, column: str, file: str, *, booleans: bool = False) -> None:
    """Refuse a column of booleans (unless ``booleans``), dates, durations, or numbers mixed
    with text: none of them is a score or a measurement that was meant as one."""
    if not booleans and (pd.api.types.is_bool_dtype(values) or (
            pd.api.types.is_object_dtype(values)
            and values.map(lambda v: isinstance(v, (bool, np.bool_))).any())):
        raise InputError(f"{file}: column {column!r} holds booleans (True/False), not numbers; "
                         "save 0/1 decisions as a recall column or the scores as numbers")
    _check_kind(values, column, file, "numbers")
    if pd.api.types.is_object_dtype(values):
        text = values.map(lambda v: isinstance(v, str) and v.strip().lower() not in _BLANKS)
        number = values.map(lambda v: isinstance(v, (Real, Decimal)) and not _missing(v))
        if text.any() and number.any():
            row = int(np.flatnonzero(text.to_numpy())[0])
            raise InputError(f"{file}: column {column!r} mixes numbers and text (e.g. "
                             f"{str(values.iloc[row])[:40]!r}, row {row + 1}); save one type")


def parse_numbers(values: pd.Series, column: str, file: str) -> pd.Series:
    """float64 values; blanks/NaN stay NaN; anything non-numeric fails with the first example.

    The column's type is checked first (`check_numbers`: no booleans, dates or mixtures).
    """
    check_numbers(values, column, file)
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    bad = numbers.isna() & values.notna() & (values.astype(str).str.strip() != "")
    bad &= ~values.astype(str).str.strip().str.lower().isin(_BLANKS[1:])
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
    _check_kind(values, column, file, "0/1 values")

    def one(value):
        if _missing(value):
            return np.nan
        if isinstance(value, (bool, np.bool_)):
            return float(value)
        text = str(value).strip().lower()
        if text in _BLANKS:
            return np.nan
        if text not in BOOLEAN_WORDS:
            raise InputError(f"{file}: column {column!r} holds {str(value)[:40]!r}; expected "
                             "0/1 (or true/false, yes/no)")
        return float(BOOLEAN_WORDS[text])
    return values.map(one).astype("float64")


def is_binary(values: pd.Series) -> bool:
    """True when every present value reads as 0/1 (a reader's recall column, not scores)."""
    present = values.dropna()
    if present.empty:
        return False
    if pd.api.types.is_bool_dtype(values):
        return True
    return bool(present.astype(str).str.strip().str.lower().isin(BOOLEAN_WORDS).all())
