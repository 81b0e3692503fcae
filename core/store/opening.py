"""Opening a store: where it is, the checks before any write, schema versions and migrations.

A store file is refused, untouched, when it is a folder, not a DuckDB database, someone else's
database, or newer than this ILCscope; an older one is migrated in one transaction, read-only
or not (the reads need the current schema). Files older than `PER_EXAM_VERSION` get their
derived rows (``cases``, test-set members) re-derived whole, after which every write keeps them
current for the exams it touches (`core.store.derived`).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import duckdb

from core.errors import InputError, StoreVersionError
from core.store import keys
from core.store.connections import engine
from core.store.schema import MIGRATIONS, PER_EXAM_VERSION, SALTED_VERSION, SCHEMA, SCHEMA_VERSION
from core.store.testsets import rebuild_derived

DEFAULT_DB = Path("data") / "ilcscope.duckdb"
MODE_ENV = "ILCSCOPE_MODE"


def default_db_path() -> Path:
    """``ILCSCOPE_DB`` if set, else ``data/ilcscope.duckdb`` (relative to the working folder)."""
    return Path(os.environ.get("ILCSCOPE_DB") or DEFAULT_DB)


def demo_mode(setting: str | None = None) -> bool:
    """Whether ``ILCSCOPE_MODE`` (else ``setting``, e.g. the app's secret) is ``demo``.

    In demo mode every store opens read-only, for every caller (see `open_store`).
    """
    return (os.environ.get(MODE_ENV) or setting or "").strip().lower() == "demo"


class StoreNotice(UserWarning):
    """Something the user must know about a store that is not an error (a migration's note)."""


class StoreOpening:
    """`Store` verbs for opening: the checks, the schema version, migrations (module doc)."""

    def _open(self) -> None:
        """What `core.store.facade.open_store` checks and does once the handle exists."""
        path = self.path
        if path.is_dir():
            raise InputError(f"store {path} is a folder; pass a store file (e.g. "
                             f"{path / DEFAULT_DB.name})")
        if not self.read_only and demo_mode():
            raise InputError(f"store {path} is read-only in demo mode ({MODE_ENV}=demo); "
                             f"writes are disabled: unset {MODE_ENV} to change a store")
        if not self.read_only:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(f"store {path}: cannot create its folder {path.parent} "
                                 f"({exc.strerror or type(exc).__name__}); pass a path in a "
                                 "writable folder") from None
            self._create_or_migrate()
            return
        if not path.exists():
            raise InputError(f"store {path} does not exist; build it with `python -m core demo` "
                             "or `python -m core init`")
        version = self.schema_version()  # refuses newer files and non-stores
        if version >= SCHEMA_VERSION:
            return
        older = (f"store {path} has schema version {version}, older than this ILCscope's "
                 f"{SCHEMA_VERSION}")
        if demo_mode():
            raise StoreVersionError(f"{older}, and demo mode never writes it; open it once "
                                    f"with {MODE_ENV} unset to migrate it")
        try:
            type(self)(path=path, busy_timeout_s=self.busy_timeout_s,
                       key_file=self.key_file)._create_or_migrate()
        except duckdb.IOException as exc:
            raise StoreVersionError(
                f"{older}, and cannot be migrated here ({first_line(exc)}); open it once where "
                "the file is writable (any write migrates it)") from exc

    def schema_version(self) -> int:
        """The file's schema version; a newer file than this ILCscope knows is refused."""
        with self.connection() as con:
            version = stored_version(con, self.path)
        if version is None:
            raise InputError(f"store {self.path} is an empty DuckDB file, not an ILCscope store "
                             "yet; open it writable to create the store")
        return version

    def _create_or_migrate(self) -> None:
        with self.connection():
            with self.transaction() as con:
                version = stored_version(con, self.path)
                if version is None:
                    con.execute(SCHEMA)
                    con.execute("INSERT INTO meta VALUES ('schema_version', ?)",
                                [str(SCHEMA_VERSION)])
                    return
                start = version
                while version < SCHEMA_VERSION:
                    if version == SALTED_VERSION:
                        self._adopt_salt(con)  # v4's Python half: save the salt, then drop it
                    con.execute(MIGRATIONS[version])
                    version += 1
                if start < PER_EXAM_VERSION <= version:
                    rebuild_derived(con)  # v8's Python half: derived rows from scratch
                con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                            [str(version)])
            if start <= SALTED_VERSION:
                engine().rewrite(self.path)  # the salt's freed blocks go with the old file

    def _adopt_salt(self, con: duckdb.DuckDBPyConnection) -> None:
        """v3 -> v4: the salt leaves the store (saved as a key file first), its fingerprint stays.

        The key file is written before the transaction commits, so a failure leaves the salt
        in the store, never in neither place.
        """
        rows = con.execute("SELECT value FROM meta WHERE key = 'salt'").fetchall()
        if not rows:
            return
        tag, message = keys.adopt_salt(rows[0][0], self.key_file)
        con.execute("INSERT INTO meta VALUES ('key_fingerprint', ?)", [tag])
        if message:
            warnings.warn(f"store {self.path}: {message}", StoreNotice, stacklevel=2)


def stored_version(con: duckdb.DuckDBPyConnection, path: Path) -> int | None:
    """The schema version of the attached file; None for a blank DuckDB file (no tables).

    A DuckDB file with tables but no ILCscope ``meta`` is someone else's database: refused
    (never written), as is a version newer than this ILCscope's.
    """
    tables = [t for (t,) in con.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_catalog = current_database() ORDER BY table_name").fetchall()]
    if not tables:
        return None
    try:
        rows = (con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
                if "meta" in tables else [])
    except (duckdb.BinderException, duckdb.CatalogException):  # someone else's meta table
        rows = []
    if not rows or not str(rows[0][0]).isdigit():
        listed = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise InputError(f"{path} is a DuckDB database but not an ILCscope store (tables: "
                         f"{listed}); pass an ILCscope store, or a new file name to create one")
    version = int(rows[0][0])
    if version > SCHEMA_VERSION:
        raise StoreVersionError(
            f"store {path} has schema version {version}, newer than this ILCscope's "
            f"{SCHEMA_VERSION}; upgrade ILCscope or open another store")
    return version


def first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
