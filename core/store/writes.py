"""Bulk writes and result folders: how rows reach the store.

A bulk write registers a DataFrame and runs ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``
(idempotent: re-importing updates rows, never duplicates). A long job never writes to the store
itself: it leaves a result folder (`write_result`: Parquet files and a ``result.json`` naming
them and the structured deletes to run first) that `Store.ingest` checks (`read_result`) and
loads in one transaction. Nothing in a result folder is executable. Every write re-derives the
derived rows of the exams it touched in the same transaction (`core.store.derived`).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import duckdb
import pandas as pd

from core.errors import InputError
from core.store import testsets as _testsets
from core.store.derived import touched_by_delete, touched_by_upsert, update_cases
from core.store.match import check_table, delete_sql
from core.store.schema import DERIVED_COLUMNS, PRIMARY_KEYS, TABLE_COLUMNS

RESULT_MANIFEST = "result.json"
# Derived from test-set rules (`core.store.testsets`): written through rules, never as rows.
RULE_TABLES = ("testsets", "testset_exams")


class StoreWrites:
    """`Store` verbs that write rows (see the module doc)."""

    def write_tables(self, frames: dict[str, pd.DataFrame], *,
                     delete: Sequence[Mapping] = (), testsets: Mapping[str, str] | None = None,
                     refresh_testsets: bool = False) -> dict[str, int]:
        """Upsert several tables in one transaction; returns rows written per table.

        ``delete`` holds ``{"table": name, "match": {column: value or values}}`` entries
        (`core.store.match.match_sql`), run first in the same transaction, for replacing rows:
        a dataset, a density source on some exams. Nothing in them is SQL: names are checked
        against the schema and values travel as parameters.

        The ``cases`` rows and test-set members of the exams touched are re-derived in the same
        transaction. ``testsets`` (name -> rule) are created or replaced, and
        ``refresh_testsets`` creates each dataset's own set where missing, also in it: rows and
        the test sets they change land together, so a kill between them cannot leave a set stale.
        """
        for table, frame in frames.items():
            check_frame(table, frame)
            if table in RULE_TABLES:
                raise InputError(f"table {table} is derived from test-set rules; pass "
                                 "testsets={name: rule} instead of its rows")
        deletes = [delete_sql(entry) for entry in delete]
        with self.transaction() as con:
            if self._key is not None:   # pseudonyms were made: their key's fingerprint lands too
                self._record_fingerprint(con)
            touched: set[str] = set()
            for entry, (sql, params) in zip(delete, deletes):
                touched |= touched_by_delete(con, entry)
                con.execute(sql, params)
            written = {}
            for table, frame in frames.items():
                touched |= touched_by_upsert(con, table, frame)
                written[table] = upsert(con, table, frame)
            _testsets.update_derived(con, touched)
            rules = dict(testsets or {})
            if refresh_testsets:
                current = _testsets.current_rules(con)
                rules = {n: current[n] for n in _testsets.stale_testsets(con, current)} | rules
            if rules:  # members written: the changed exams' cases rows follow
                update_cases(con, _testsets.write_testsets(con, rules)[1])
            return written

    def ingest(self, result_dir: str | Path) -> dict[str, int]:
        """Load a job's result folder (see `write_result`) in one transaction.

        The manifest names tables, their Parquet files and structured deletes only; anything
        else in it (an SQL string, an unknown table or column, a file outside the folder) is
        refused before any write (`core.store.writes.read_result`).
        """
        frames, delete = read_result(result_dir)
        return self.write_tables(frames, delete=delete)


def check_frame(table: str, frame: pd.DataFrame) -> None:
    """Refuse rows for an unknown table, or without every column of its primary key."""
    check_table(table)
    missing = [c for c in PRIMARY_KEYS[table] if c not in frame.columns]
    if missing:
        raise InputError(f"rows for table {table} lack key column(s) {', '.join(missing)}")


def upsert(con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame) -> int:
    """Insert or update ``frame``'s rows of ``table`` (inside the caller's transaction).

    Only the schema columns the frame carries are written, so ``created_at`` and any column a
    caller leaves out keep their stored values on a re-import. Returns the number of rows.
    """
    check_frame(table, frame)
    columns = TABLE_COLUMNS[table]
    if frame.empty:
        return 0
    cols = [c for c in columns if c in frame.columns]
    derived = DERIVED_COLUMNS.get(table, {})
    name = f"_incoming_{table}"
    con.register(name, frame[cols])
    try:
        col_sql = ", ".join([*cols, *derived])
        select_sql = ", ".join([*cols, *derived.values()])
        updates = [c for c in [*cols, *derived] if c not in PRIMARY_KEYS[table]]
        conflict = (f"ON CONFLICT ({', '.join(PRIMARY_KEYS[table])}) DO UPDATE SET "
                    + ", ".join(f"{c} = EXCLUDED.{c}" for c in updates)
                    if updates else "ON CONFLICT DO NOTHING")
        con.execute(f"INSERT INTO {table} ({col_sql}) SELECT {select_sql} FROM {name} {conflict}")
    finally:
        con.unregister(name)
    return len(frame)


def write_result(result_dir: str | Path, frames: dict[str, pd.DataFrame], *,
                 delete: Sequence[dict] = ()) -> Path:
    """Write a job's result folder for `Store.ingest`: one Parquet file per table + manifest.

    ``delete`` holds structured entries (``{"table": name, "match": {column: value}}``), checked
    here so a job fails before its result is written, not at ingest. The manifest is written
    last, so a folder without one is an unfinished job.
    """
    result_dir = Path(result_dir)
    for entry in delete:
        delete_sql(entry)
    for table in frames:
        check_table(table)
    result_dir.mkdir(parents=True, exist_ok=True)
    tables = {}
    for table, frame in frames.items():
        tables[table] = f"{table}.parquet"
        frame.to_parquet(result_dir / tables[table], index=False)
    manifest = {"tables": tables, "delete": list(delete)}
    tmp = result_dir / (RESULT_MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(result_dir / RESULT_MANIFEST)
    return result_dir


def read_result(result_dir: str | Path) -> tuple[dict[str, pd.DataFrame], list[dict]]:
    """The frames and delete entries of a result folder, every entry checked before any is read.

    The manifest may name tables (each a Parquet file directly inside the folder) and structured
    deletes, nothing else; each refusal is one `InputError` line naming the manifest.
    """
    result_dir = Path(result_dir)
    path = result_dir / RESULT_MANIFEST
    if not path.is_file():
        raise InputError(f"{result_dir} holds no {RESULT_MANIFEST}; pass a job's result folder")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not JSON ({str(exc).splitlines()[0]}); "
                         "rerun the job that wrote it") from exc
    if not isinstance(manifest, dict) or set(manifest) - {"tables", "delete"}:
        found = sorted(manifest) if isinstance(manifest, dict) else type(manifest).__name__
        raise InputError(f"{path}: unknown entries {found}; a result manifest holds 'tables' "
                         "and 'delete' only")
    tables, delete = manifest.get("tables", {}), manifest.get("delete", [])
    if not isinstance(tables, Mapping) or not isinstance(delete, list):
        raise InputError(f"{path}: 'tables' must map table names to Parquet files and 'delete' "
                         "must be a list of {'table': ..., 'match': {...}} entries")
    files = {}
    for table, name in tables.items():
        check_table(table)
        if not isinstance(name, str) or Path(name).name != name or not name.endswith(".parquet"):
            raise InputError(f"{path}: table {table} points at {name!r}; expected a "
                             "Parquet file inside the result folder")
        files[table] = result_dir / name
        if not files[table].is_file():
            raise InputError(f"{path}: table {table}'s file {name} is missing; "
                             "rerun the job that wrote it")
    for entry in delete:
        delete_sql(entry)
    return {t: pd.read_parquet(f) for t, f in files.items()}, list(delete)


def dataset_delete_plan(dataset: str) -> list[dict]:
    """``write_tables(delete=...)`` entries that remove a dataset and everything on its exams
    and images (children first)."""
    tables = ("reads", "density", "predictions", "lesions", "breasts", "testset_exams",
              "annotations", "filter_results", "images", "exams", "datasets")
    return [{"table": table, "match": {"dataset": dataset}} for table in tables]
