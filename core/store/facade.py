"""The store: one DuckDB file of exams, images, labels, reads, annotations and predictions.

`Store` is the one public class, a thin face: it holds the file's path and its connections,
and takes its verbs by subject from `opening` (checks, schema versions, migrations), `reading`
(rows, summaries, case truth, scores), `writes` (bulk writes, result folders), `annotations`
(mask versions), `testsets` (named test sets) and `keys` (pseudonyms); each hands its
connection to the module that knows the SQL.

Every connection is short: the file is attached for one operation (or one ``with
store.connection():`` block) and detached, because DuckDB lets one process at a time hold a
file for writing; a second writer retries with back-off for ``busy_timeout_s`` and then raises
`StoreBusy` rather than waiting forever or corrupting anything. Every write is one
transaction: all of it lands, or none (``write_tables``, ``ingest``), the derived rows of the
exams it touched included. Long jobs never write here directly: they write a result folder
(`write_result`) that ``ingest`` loads in one transaction. Callers never pass SQL: tables and
columns are names checked against the schema, values travel as ``?`` parameters.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from core.errors import InputError
from core.store.annotations import StoreAnnotations
from core.store.connections import engine
from core.store.keys import StoreKeys
from core.store.opening import StoreOpening, default_db_path, first_line
from core.store.reading import StoreReads
from core.store.testsets import StoreTestSets
from core.store.truth import TruthCache
from core.store.writes import StoreWrites


def open_store(path: str | Path | None = None, *, read_only: bool = False,
               busy_timeout_s: float = 10.0, key_file: str | Path | None = None) -> Store:
    """Open (and create, unless read-only) the store at ``path``.

    A file written by a newer ILCscope raises `StoreVersionError`; an older one is migrated in
    one transaction, read-only or not (the reads need the current schema). A read-only store
    refuses every write with an `InputError`. ``key_file`` names the pseudonym key's file
    instead of the default (`core.store.keys`); only imports need the key.

    A folder, a file that is not a DuckDB database, and a DuckDB database that is not an
    ILCscope store (tables but no ``meta``) raise `InputError` and are left untouched. With
    ``ILCSCOPE_MODE=demo`` (`demo_mode`) a writable store is refused: nothing is created,
    migrated or written.
    """
    path = Path(path) if path is not None else default_db_path()
    store = Store(path=path, read_only=read_only, busy_timeout_s=busy_timeout_s,
                  key_file=key_file)
    store._open()
    return store


def create_store(path: str | Path) -> Store:
    """A new, empty, writable store at ``path``, which must not exist yet.

    Allowed in demo mode, unlike a writable `open_store`: it cannot change an existing store
    (the hosted demo builds its store this way on first start, then serves it read-only).
    """
    path = Path(path)
    if path.exists() or path.with_name(path.name + ".wal").exists():
        raise InputError(f"store {path} already exists; create_store makes new stores only")
    path.parent.mkdir(parents=True, exist_ok=True)
    store = Store(path=path)
    store._create_or_migrate()
    return store


@dataclass
class Store(StoreOpening, StoreReads, StoreWrites, StoreAnnotations, StoreTestSets, StoreKeys):
    """A handle on one store file; cheap to copy, holds no connection between operations.

    It keeps the case truth of the last few (level, test set, density source) it was asked
    for (`core.store.truth`), keyed by the store's truth token, which every write that can
    change a truth renews, in any process.
    """

    path: Path
    read_only: bool = False
    busy_timeout_s: float = 10.0
    key_file: str | Path | None = None  # pseudonym key file; None: `core.store.keys` defaults
    _local: threading.local = field(default_factory=threading.local, repr=False, compare=False)
    _key: bytes | None = field(default=None, repr=False, compare=False)  # once checked
    _truths: TruthCache = field(default_factory=TruthCache, repr=False, compare=False)

    @property
    def files_dir(self) -> Path:
        """Folder for files the store owns (masks, saliency maps, pixel and screen copies)."""
        return self.path.with_name(self.path.stem + "_files")

    @contextlib.contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One connection for a block of operations; nested calls in a thread reuse it.

        The file is attached to this process's DuckDB engine (`core.store.connections`) for the
        block and detached after it, so another process can write between two blocks. A file
        that fails to read part-way (truncated, damaged) raises `InputError`.
        """
        con = getattr(self._local, "con", None)
        if con is not None:
            yield con
            return
        eng = engine()
        con = eng.open(self.path, read_only=self.read_only, busy_timeout_s=self.busy_timeout_s)
        self._local.con = con
        try:
            yield con
        except duckdb.IOException as exc:
            raise InputError(f"store {self.path} cannot be read or written ({first_line(exc)}); "
                             "if it was truncated or damaged, restore it from a copy") from exc
        finally:
            self._local.con = None
            eng.close(self.path, con)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write transaction: commits on success, rolls back on any exception."""
        if self.read_only:
            raise InputError(f"store {self.path} is open read-only (demo mode); writes are disabled")
        with self.connection() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the file (before copying or moving the store)."""
        with self.connection() as con:
            con.execute("CHECKPOINT")

    def _df(self, sql: str, params: Sequence = ()) -> pd.DataFrame:
        with self.connection() as con:
            return con.execute(sql, list(params)).df()

    def _scalar(self, sql: str, params: Sequence = ()):
        with self.connection() as con:
            rows = con.execute(sql, list(params)).fetchall()  # fetchall: leaves no open result
        return rows[0][0] if rows else None
