"""Reading tables users bring: CSV/TSV and Parquet; and the metarepository's exam list, data.pkl.

Pickled DataFrames are refused, not filtered. Rebuilding one calls pandas', numpy's and
pyarrow's own reconstructors, and these trust the bytes they are handed: a pandas 3 string
column is rebuilt by ``pyarrow.lib._restore_array`` from offsets it never checks, and numpy's
``dtype.__setstate__`` accepts flags under which ``numpy...scalar`` reads raw bytes as object
pointers. Either crashes the process from a crafted file that names only the exact pairs a
real DataFrame pickle needs (tests/test_hostile_tables.py), so no allow-list of them is safe.
Users convert on a machine they trust: ``pd.read_pickle(p).to_parquet(...)``.

The exam list is plain data (lists, dicts, strings, numbers). `load_plain_pickle` resolves
an exact set of (module, name) pairs, no dotted names and no module prefixes, to inert
stand-ins written here: numpy scalars of plain kinds are decoded from their bytes by
``np.frombuffer``, numpy arrays become `PickledArray` placeholders that keep nothing, and
every other global is refused before anything is imported or called.
"""
from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import InputError
from core.vocabulary import TABLE_SUFFIXES

__all__ = ["PICKLE_SUFFIXES", "PickledArray", "load_plain_pickle", "read_table"]

PICKLE_SUFFIXES = (".pkl", ".pickle")
_CONVERT = ("convert it on a machine you trust: pd.read_pickle(path).to_parquet(...) (or "
            ".to_csv(...)), then import the Parquet or CSV file")
# numpy dtypes a plain scalar may have: bool, ints, floats, complex, fixed-width text/bytes
# (the width caps one pickled text scalar at 4 MB; data.pkl's names are a few characters)
_PLAIN_DTYPE = re.compile(r"b1|[iu][1248]|f(2|4|8|16)|c(8|16|32)|[US]\d{1,6}")


class _PlainDType:
    """A numpy dtype named by a pickle, kept as text until `_Scalar` decodes with it.

    numpy's own ``dtype.__setstate__`` takes the flags from the file, so it is never called.
    """

    def __init__(self, spec, align=False, copy=True):
        if not isinstance(spec, str) or not _PLAIN_DTYPE.fullmatch(spec):
            raise InputError(f"the pickle holds a numpy value of type {str(spec)[:20]!r}; only "
                             "plain numbers and text are read")
        self.spec, self.order = spec, "|"

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 8 and state[1] in ("<", ">", "|", "=")
                and state[2:5] == (None, None, None)):
            raise InputError("the pickle holds a structured numpy type; only plain numbers "
                             "and text are read")
        self.order = state[1]

    def numpy(self) -> np.dtype:
        dtype = np.dtype(self.spec)
        return dtype.newbyteorder(self.order) if self.order in "<>" else dtype


class _Scalar:
    """``numpy.core.multiarray.scalar(dtype, raw)``: a numpy scalar read from its own bytes."""

    def __new__(cls, dtype, raw=None):
        if not isinstance(dtype, _PlainDType) or not isinstance(raw, bytes):
            raise InputError("the pickle holds a numpy scalar that is not a plain number or text")
        numpy_dtype = dtype.numpy()
        if len(raw) != numpy_dtype.itemsize:
            raise InputError(f"the pickle holds a numpy scalar of {len(raw)} bytes for a "
                             f"{numpy_dtype.itemsize}-byte type")
        return np.frombuffer(raw, dtype=numpy_dtype)[0]

    def __setstate__(self, state):  # BUILD on the class itself fails here, changing nothing
        raise InputError("the pickle changes a numpy scalar")


class PickledArray:
    """Stands for a numpy array in a plain-data pickle; its data is dropped, never decoded."""

    def __init__(self, *args):
        pass

    def __setstate__(self, state):
        pass

    def __repr__(self) -> str:
        return "<numpy array (not read from pickles)>"


class _Latin1:
    """``_codecs.encode(text, 'latin1')``: how protocols 0-2 store bytes; no other codec."""

    def __new__(cls, text, encoding="latin1"):
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise InputError(f"the pickle asks for codec {str(encoding)[:20]!r}; only latin1 "
                             "bytes are read")
        return text.encode("latin1")

    def __setstate__(self, state):
        raise InputError("the pickle changes a codec")


# exact (module, name) -> what it resolves to: builtin types are immutable; ILCscope's own
# stand-ins define __setstate__, so BUILD on the class itself raises instead of patching it
_PLAIN_GLOBALS = {
    **{(m, n): t for m in ("builtins", "__builtin__")
       for n, t in (("set", set), ("frozenset", frozenset), ("bytearray", bytearray))},
    ("collections", "OrderedDict"): dict,
    ("_codecs", "encode"): _Latin1,
    ("numpy", "dtype"): _PlainDType,
    ("numpy", "ndarray"): PickledArray,
    **{(f"numpy.{core}.{module}", name): stand_in
       for core in ("core", "_core")
       for module, name, stand_in in (("multiarray", "scalar", _Scalar),
                                      ("multiarray", "_reconstruct", PickledArray),
                                      ("numeric", "_frombuffer", PickledArray))},
}


class _PlainUnpickler(pickle.Unpickler):
    """Resolves `_PLAIN_GLOBALS` only: nothing is imported, no name is looked up."""

    def find_class(self, module: str, name: str):
        try:
            return _PLAIN_GLOBALS[(module, name)]
        except KeyError:
            where = " ".join(f"{module}.{name}".split())[:80]
            raise InputError(f"the pickle refers to {where!r}; ILCscope reads only plain-data "
                             f"pickles (the metarepository's data.pkl); {_CONVERT}") from None


def load_plain_pickle(path: str | Path):
    """The plain data (lists, dicts, text, numbers) in a pickle, read without running its code.

    numpy arrays come back as `PickledArray` placeholders. Raises `InputError` for any other
    global the pickle names, and for a corrupt file.
    """
    path = Path(path)
    try:
        return _PlainUnpickler(io.BytesIO(path.read_bytes())).load()
    except InputError as exc:
        raise InputError(f"{path.name}: {exc}") from None
    except Exception as exc:  # a corrupt pickle raises anything from EOFError to KeyError
        raise InputError(f"{path.name}: not a readable pickle ({type(exc).__name__}); save it as "
                         "CSV or Parquet") from None


def read_table(path: str | Path) -> pd.DataFrame:
    """CSV/TSV (all columns as text) or Parquet; ``Unnamed: N`` dropped; pickles refused.

    Columns named ``Unnamed: N`` are a saved pandas index, not data.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"table {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise InputError(f"{path.name}: pickled tables are not read (loading a pickle can run "
                         f"code); {_CONVERT}")
    if suffix not in TABLE_SUFFIXES:
        raise InputError(f"{path.name}: unknown table type {suffix or '(no suffix)'}; use "
                         ".csv, .tsv or .parquet")
    try:
        if suffix in (".csv", ".tsv", ".txt"):
            table = pd.read_csv(path, dtype=str, sep="\t" if suffix == ".tsv" else ",")
        else:
            table = pd.read_parquet(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError,
            ValueError) as exc:
        raise InputError(f"{path.name}: unreadable table ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:160]})") from None
    table = table.rename(columns=lambda c: str(c).strip())
    table = table[[c for c in table.columns if not re.fullmatch(r"Unnamed: \d+", c)]]
    if table.empty:
        raise InputError(f"{path.name}: the table has no rows")
    return table.reset_index(drop=True)
