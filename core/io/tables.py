"""Reading tables users bring: CSV/TSV, Parquet and pickled pandas DataFrames.

Pickles are loaded with a restricted unpickler that accepts pandas/numpy data only, so a pickle
cannot run code (the metarepository ships its exam lists and predictions as pickles).
"""
from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

import pandas as pd

from core.errors import InputError
from core.vocabulary import TABLE_SUFFIXES

__all__ = ["load_pickle", "read_table"]

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
    """CSV/TSV (all columns as text), Parquet or a pickled DataFrame; ``Unnamed: N`` dropped.

    Columns named ``Unnamed: N`` are a saved pandas index, not data.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"table {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputError(f"{path.name}: unknown table type {suffix or '(no suffix)'}; use "
                         ".csv, .tsv, .parquet or .pkl")
    try:
        if suffix in (".csv", ".tsv", ".txt"):
            table = pd.read_csv(path, dtype=str, sep="\t" if suffix == ".tsv" else ",")
        elif suffix in (".parquet", ".pq"):
            table = pd.read_parquet(path)
        else:
            table = load_pickle(path)
            if not isinstance(table, pd.DataFrame):
                raise InputError(f"{path.name}: the pickle holds a {type(table).__name__}, not "
                                 "a pandas DataFrame")
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
