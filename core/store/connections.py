"""One in-process DuckDB that attaches store files for the length of an operation.

Why not ``duckdb.connect(path)`` per operation: creating a DuckDB instance costs ~30 ms (it
builds its catalog of built-in functions), more than most page queries, while ``ATTACH`` of a
file costs ~3 ms and ``DETACH`` releases the file's lock for other processes just as closing a
connection did. Attachments are reference-counted, so the threads of one process (Streamlit
sessions) share one attachment and the file is detached when the last of them is done.

A single engine per process is deliberate: a process's own file locks never conflict with each
other, so two DuckDB instances in one process could both open a file for writing; one engine
attaching each file once rules that out (DuckDB refuses it too). A forked child (the filter
batch's process pool) never touches its parent's engine: it builds its own, and can open a file
its parent did not hold at the fork (fork outside ``Store.connection`` blocks).
"""
from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from core.errors import InputError, StoreBusy


@dataclass
class _Attachment:
    alias: str
    read_only: bool
    users: int = 0


class Engine:
    """An in-memory DuckDB instance plus the store files attached to it, by resolved path."""

    def __init__(self) -> None:
        self._db = duckdb.connect(":memory:")
        self._lock = threading.Lock()
        self._attached: dict[str, _Attachment] = {}

    def open(self, path: Path, *, read_only: bool, busy_timeout_s: float
             ) -> duckdb.DuckDBPyConnection:
        """A new connection whose default database is the file at ``path``.

        Waits with jittered back-off while another process holds the file (or this process
        holds it read-only and a write is asked for), then raises `StoreBusy`. Pair every
        call with `close`.
        """
        key = str(Path(path).resolve())
        deadline = time.monotonic() + busy_timeout_s
        delay = 0.01
        while True:
            with self._lock:
                alias = self._try_attach(key, read_only)
                if alias is not None:
                    try:
                        con = self._db.cursor()
                        con.execute(f"USE {alias}")
                    except BaseException:
                        self._release(key)
                        raise
                    return con
            if time.monotonic() >= deadline:
                raise StoreBusy(
                    f"store is busy: {path} stayed locked by another process (or open "
                    f"read-only in this one) for {busy_timeout_s:.0f} s; retry when its "
                    "import or job ends")
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.5)

    def close(self, path: Path, con: duckdb.DuckDBPyConnection) -> None:
        con.close()
        with self._lock:
            self._release(str(Path(path).resolve()))

    def rewrite(self, path: Path) -> bool:
        """Copy the file at ``path`` into a fresh one and swap it in; False if it is shared.

        Why: DuckDB leaves deleted values in the file's freed blocks, so a value removed for
        privacy (the v4 migration's salt) stays in the bytes; a copy holds live rows only.
        The caller has the file attached writable and is its only user in this process: the
        lock keeps other processes out until the swap is done. Otherwise nothing is done.
        """
        key = str(Path(path).resolve())
        with self._lock:
            entry = self._attached[key]
            if entry.read_only or entry.users != 1:
                return False
            target = Path(key + ".rewrite")
            target.unlink(missing_ok=True)
            self._db.execute(f"CHECKPOINT {entry.alias}")
            self._db.execute(f"ATTACH '{_quote(str(target))}' AS rewrite_target")
            try:
                self._db.execute(f"COPY FROM DATABASE {entry.alias} TO rewrite_target")
            finally:
                self._db.execute("DETACH rewrite_target")
            os.replace(target, key)
            return True

    def _try_attach(self, key: str, read_only: bool) -> str | None:
        """The attachment's alias with one more user, or None while the file is locked."""
        entry = self._attached.get(key)
        if entry is not None:
            if entry.read_only and not read_only:
                return None  # a write waits until this process's readers are done
            entry.users += 1
            return entry.alias
        alias = "store_" + hashlib.sha1(key.encode()).hexdigest()[:12]
        mode = " (READ_ONLY)" if read_only else ""
        try:
            self._db.execute(f"ATTACH '{_quote(key)}' AS {alias}{mode}")
        except duckdb.Error as exc:
            locked = "lock" in str(exc).replace(key, "").lower()  # not a "lock" in the path
            if locked and isinstance(exc, (duckdb.IOException, duckdb.ConnectionException)):
                return None
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"store {key} cannot be opened as a DuckDB database ({first}); "
                             "pass an ILCscope store, or a new file name to create one") from None
        self._attached[key] = _Attachment(alias, read_only, users=1)
        return alias

    def _release(self, key: str) -> None:
        entry = self._attached[key]
        entry.users -= 1
        if entry.users == 0:
            del self._attached[key]
            self._db.execute(f"DETACH {entry.alias}")


def _quote(text: str) -> str:
    return text.replace("'", "''")


# By process id: a forked child builds its own engine and keeps its parent's alive but untouched
# (destroying an instance whose threads did not survive the fork could hang).
_engines: dict[int, Engine] = {}
_engines_lock = threading.Lock()


def engine() -> Engine:
    """This process's engine, created on first use."""
    with _engines_lock:
        pid = os.getpid()
        if pid not in _engines:
            _engines[pid] = Engine()
        return _engines[pid]


def _renew_lock_in_child() -> None:
    global _engines_lock
    _engines_lock = threading.Lock()  # another thread may have held it at the fork


os.register_at_fork(after_in_child=_renew_lock_in_child)
