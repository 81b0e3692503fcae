"""The store: one DuckDB file of exams, images, labels, reads, annotations and predictions.

This is the only module that speaks SQL (with `core.store.schema`, which defines it). Every
connection is short: the file is attached for one operation (or one ``with
store.connection():`` block) and detached, because DuckDB lets one process at a time hold a
file for writing; a second writer retries with back-off for ``busy_timeout_s`` and then raises
`StoreBusy` rather than waiting forever or corrupting anything. Every write is one
transaction: all of it lands, or none (``write_tables``, ``ingest``). Long jobs never write
here directly: they write a result folder (`write_result`) that ``ingest`` loads in one
transaction.

Reads at scale go through the derived ``cases`` table and integer keys (`core.store.schema`), and a
`Store` keeps the case truth it last read until a write changes it (see `Store`).

SQL values always travel as ``?`` parameters; bulk writes register a DataFrame and run
``INSERT OR REPLACE ... SELECT`` (idempotent: re-importing updates rows, never duplicates).
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import hashlib
import hmac
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import duckdb
import numpy as np
import pandas as pd

from core.store.connections import engine
from core.errors import InputError, StoreVersionError
from core.store.schema import (CASE_SOURCES, CASES_SELECT, DERIVED_COLUMNS, LEVELS, MIGRATIONS,
                         PRIMARY_KEYS, RENEW_TRUTH_TOKEN, SCHEMA, SCHEMA_VERSION, TABLE_COLUMNS)
from core.store.testsets import Clause, parse_rule

DEFAULT_DB = Path("data") / "ilcscope.duckdb"
RESULT_MANIFEST = "result.json"
SCORE_CASE_COLUMNS = ("case_id", "exam_id", "laterality", "image_id", "label", "histology",
                      "density")
FILES_ROOT = "@files"  # a dataset root inside the store's files folder moves with the store


def default_db_path() -> Path:
    """``ILCSCOPE_DB`` if set, else ``data/ilcscope.duckdb`` (relative to the working folder)."""
    return Path(os.environ.get("ILCSCOPE_DB") or DEFAULT_DB)


def open_store(path: str | Path | None = None, *, read_only: bool = False,
               busy_timeout_s: float = 10.0) -> Store:
    """Open (and create, unless read-only) the store at ``path``.

    A file written by a newer ILCscope raises `StoreVersionError`; an older one is migrated in
    one transaction, read-only or not (the reads need the current schema). A read-only store
    refuses every write with an `InputError`.
    """
    path = Path(path) if path is not None else default_db_path()
    store = Store(path=path, read_only=read_only, busy_timeout_s=busy_timeout_s)
    if read_only:
        if not path.exists():
            raise InputError(f"store {path} does not exist; build it with `python -m core demo` "
                             "or `python -m core init`")
        version = store.schema_version()  # refuses newer files
        if version < SCHEMA_VERSION:
            try:
                Store(path=path, busy_timeout_s=busy_timeout_s)._create_or_migrate()
            except duckdb.IOException as exc:
                raise StoreVersionError(
                    f"store {path} has schema version {version}, older than this ILCscope's "
                    f"{SCHEMA_VERSION}, and cannot be migrated here ({_first_line(exc)}); "
                    f"run `python -m core init --db {path}` where the file is writable") from exc
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        store._create_or_migrate()
    return store


@dataclass
class Store:
    """A handle on one store file; cheap to copy, holds no connection between operations.

    It keeps the case truth of the last few (level, test set, density source) it was asked
    for, keyed by the store's truth token, which every write that can change a truth renews
    (in any process: the cases table's sources, test sets, density): the truth of a test set
    is the same for every model and survives a predictions import, and reading it is the
    larger part of `scores` on big stores.
    """

    path: Path
    read_only: bool = False
    busy_timeout_s: float = 10.0
    _local: threading.local = field(default_factory=threading.local, repr=False, compare=False)
    _truths: _TruthCache = field(default_factory=lambda: _TruthCache(), repr=False, compare=False)

    # ------------------------------------------------------------------ connections
    @property
    def files_dir(self) -> Path:
        """Folder for files the store owns (masks, saliency maps, display copies)."""
        return self.path.with_name(self.path.stem + "_files")

    @contextlib.contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One connection for a block of operations; nested calls in a thread reuse it.

        The file is attached to this process's DuckDB engine (`core.store.connections`) for the
        block and detached after it, so another process can write between two blocks.
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

    def select(self, table: str, **equals) -> pd.DataFrame:
        """All schema columns of ``table`` (`TABLE_COLUMNS`) for the rows that match ``equals``.

        ``equals`` maps a column to a value (``None`` matches NULL) or to a list of values
        (any of them); ``dataset=`` also works on tables that reach a dataset through their
        exam or image (see `match_sql`). No keywords: every row.
        """
        where, params = match_sql(table, equals)
        columns = ", ".join(TABLE_COLUMNS[table])
        return self._df(f"SELECT {columns} FROM {table} WHERE {where}", params)

    def rows(self, table: str, keys: pd.DataFrame) -> pd.DataFrame:
        """The stored rows of ``table`` whose primary key appears in ``keys``."""
        _check_table(table)
        pk = PRIMARY_KEYS[table]
        if keys.empty:
            return pd.DataFrame(columns=list(TABLE_COLUMNS[table]))
        columns = ", ".join(TABLE_COLUMNS[table])
        unnest = ", ".join(f"unnest(?::VARCHAR[]) AS {c}" for c in pk)
        on = " AND ".join(f"CAST(t.{c} AS VARCHAR) = k.{c}" for c in pk)
        params = [[None if pd.isna(v) else str(v) for v in keys[c]] for c in pk]
        return self._df(f"SELECT t.* FROM (SELECT {columns} FROM {table}) t "
                        f"JOIN (SELECT DISTINCT * FROM (SELECT {unnest})) k ON {on}", params)

    def _df(self, sql: str, params: Sequence = ()) -> pd.DataFrame:
        with self.connection() as con:
            return con.execute(sql, list(params)).df()

    def _scalar(self, sql: str, params: Sequence = ()):
        with self.connection() as con:
            rows = con.execute(sql, list(params)).fetchall()  # fetchall: leaves no open result
        return rows[0][0] if rows else None

    # ------------------------------------------------------------------ schema
    def schema_version(self) -> int:
        version = int(self._scalar("SELECT value FROM meta WHERE key = 'schema_version'"))
        if version > SCHEMA_VERSION:
            raise StoreVersionError(
                f"store {self.path} has schema version {version}, newer than this ILCscope's "
                f"{SCHEMA_VERSION}; upgrade ILCscope or open another store with --db")
        return version

    def _create_or_migrate(self) -> None:
        with self.transaction() as con:
            exists = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta' "
                "AND table_catalog = current_database()"
            ).fetchall()[0][0]
            if not exists:
                con.execute(SCHEMA)
                con.execute("INSERT INTO meta VALUES ('schema_version', ?), ('salt', ?)",
                            [str(SCHEMA_VERSION), secrets.token_hex(16)])
                return
            version = int(con.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'").fetchall()[0][0])
            if version > SCHEMA_VERSION:
                raise StoreVersionError(
                    f"store {self.path} has schema version {version}, newer than this "
                    f"ILCscope's {SCHEMA_VERSION}; upgrade ILCscope or open another store with --db")
            while version < SCHEMA_VERSION:
                con.execute(MIGRATIONS[version])
                version += 1
            con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(version)])

    def pseudonym(self, patient_id: str) -> str:
        """A stable pseudonym for a patient identifier: HMAC-SHA256 with this store's salt.

        The salt is random per store, so pseudonyms cannot be matched across stores or
        reversed with a table of hashed hospital numbers; the identifier itself is never kept.
        """
        salt = self._scalar("SELECT value FROM meta WHERE key = 'salt'")
        if salt is None:
            with self.transaction() as con:
                salt = secrets.token_hex(16)
                con.execute("INSERT OR IGNORE INTO meta VALUES ('salt', ?)", [salt])
                salt = con.execute("SELECT value FROM meta WHERE key = 'salt'").fetchall()[0][0]
        digest = hmac.new(salt.encode(), str(patient_id).encode(), hashlib.sha256).hexdigest()
        return "P" + digest[:16]

    # ------------------------------------------------------------------ writes
    def write_tables(self, frames: dict[str, pd.DataFrame], *,
                     delete: Sequence[Mapping] = ()) -> dict[str, int]:
        """Upsert several tables in one transaction; returns rows written per table.

        ``delete`` holds ``{"table": name, "match": {column: value or values}}`` entries
        (`match_sql`), run first in the same transaction, for replacing rows: a dataset, a
        density source on some exams. Nothing in them is SQL: names are checked against the
        schema and values travel as parameters.
        """
        deletes = [_delete_sql(entry) for entry in delete]
        with self.transaction() as con:
            for sql, params in deletes:
                con.execute(sql, params)
            written = {table: _upsert(con, table, frame) for table, frame in frames.items()}
            if {*frames, *(d["table"] for d in delete)} & set(CASE_SOURCES):
                _rebuild_cases(con)
            return written

    def ingest(self, result_dir: str | Path) -> dict[str, int]:
        """Load a job's result folder (see `write_result`) in one transaction.

        The manifest names tables, their Parquet files and structured deletes only; anything
        else in it (an SQL string, an unknown table or column) is refused before any write.
        """
        result_dir = Path(result_dir)
        manifest_path = result_dir / RESULT_MANIFEST
        if not manifest_path.is_file():
            raise InputError(f"{result_dir} holds no {RESULT_MANIFEST}; pass a job's result folder")
        manifest = json.loads(manifest_path.read_text())
        unknown = set(manifest) - {"tables", "delete"}
        if unknown:
            raise InputError(f"{manifest_path}: unknown entries {sorted(unknown)}; a result "
                             "manifest holds 'tables' and 'delete' only")
        files = {}
        for table, name in manifest.get("tables", {}).items():
            _check_table(table)
            if Path(name).name != name or not name.endswith(".parquet"):
                raise InputError(f"{manifest_path}: table {table} points at {name!r}; expected a "
                                 "Parquet file inside the result folder")
            files[table] = result_dir / name
        delete = list(manifest.get("delete", []))
        for entry in delete:
            _delete_sql(entry)  # validate all before reading any file
        frames = {t: pd.read_parquet(f) for t, f in files.items()}
        return self.write_tables(frames, delete=delete)

    # ------------------------------------------------------------------ summaries
    def counts(self) -> dict[str, int]:
        """Rows per table."""
        with self.connection() as con:
            return {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
                    for t in TABLE_COLUMNS}

    def datasets(self) -> pd.DataFrame:
        return self._df("""
            SELECT d.dataset, d.kind, d.source, d.root, d.notes,
                   (SELECT count(*) FROM exams e WHERE e.dataset = d.dataset) AS n_exams,
                   (SELECT count(*) FROM images i WHERE i.dataset = d.dataset) AS n_images
            FROM datasets d ORDER BY d.dataset""")

    def dataset_names(self) -> list[str]:
        return self.datasets()["dataset"].tolist()

    def testsets(self) -> pd.DataFrame:
        """Named test sets with their rule and size (each dataset's own set included)."""
        return self._df("""
            SELECT t.name, t.rule, count(m.exam_id) AS n_exams,
                   string_agg(DISTINCT e.dataset, ',' ORDER BY e.dataset) AS datasets, t.created_at
            FROM testsets t LEFT JOIN testset_exams m USING (name)
            LEFT JOIN exams e USING (exam_id)
            GROUP BY t.name, t.rule, t.created_at ORDER BY t.name""")

    def testset_names(self) -> list[str]:
        return self.testsets()["name"].tolist()

    def models(self) -> pd.DataFrame:
        return self._df("""
            SELECT m.*, (SELECT count(*) FROM predictions p WHERE p.model = m.model) AS n_predictions
            FROM models m ORDER BY m.model""")

    def model_names(self) -> list[str]:
        return self.models()["model"].tolist()

    def readers(self) -> pd.DataFrame:
        return self._df("""
            SELECT r.*, (SELECT count(*) FROM reads x WHERE x.reader = r.reader) AS n_reads
            FROM readers r ORDER BY r.kind DESC, r.reader""")

    def reader_names(self) -> list[str]:
        return self.readers()["reader"].tolist()

    def summary(self, *, test_set: str | None = None) -> dict[str, pd.DataFrame]:
        """What the Overview page and ``info`` show: breakdowns within a test set (or all)."""
        with self.connection():
            where, params = self._case_filter(test_set)
            exams, exam_params = self._exam_filter(test_set)
            return {
                "histology": self._df(f"""
                    SELECT c.histology, count(*) AS breasts FROM cases c
                    WHERE c.level = 'breast' AND {where} GROUP BY 1 ORDER BY 2 DESC, 1""", params),
                "presentation": self._df(f"""
                    SELECT trim(p) AS presentation, c.histology, count(*) AS breasts
                    FROM cases c, unnest(string_split(coalesce(c.presentation, ''), ',')) t(p)
                    WHERE c.level = 'breast' AND {where} AND c.label = 1 AND trim(p) <> ''
                    GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2""", params),
                "density": self._df(f"""
                    SELECT d.source, d.category, count(*) AS exams FROM density d
                    WHERE d.level = 'exam' AND d.exam_id IN ({exams}) AND d.category IS NOT NULL
                    GROUP BY 1, 2 ORDER BY 1, 2""", exam_params),
                "views": self._df(f"""
                    SELECT c.view, c.laterality, count(*) AS images FROM cases c
                    WHERE c.level = 'image' AND {where} GROUP BY 1, 2 ORDER BY 1, 2""", params),
                "splits": self._df(f"""
                    SELECT c.dataset, coalesce(c.split, 'none') AS split, count(*) AS exams
                    FROM cases c WHERE c.level = 'exam' AND {where} GROUP BY 1, 2 ORDER BY 1, 2""",
                                   params),
            }

    # ------------------------------------------------------------------ cases and labels
    def _exam_filter(self, test_set: str | None) -> tuple[str, list]:
        """SQL selecting the exam ids of a test set (all exams when None) and its params."""
        if test_set is None:
            return "SELECT exam_id FROM exams", []
        if not self._scalar("SELECT count(*) FROM testsets WHERE name = ?", [test_set]):
            names = ", ".join(self.testset_names()) or "none yet"
            raise InputError(f"test set {test_set!r} does not exist; known: {names}")
        return "SELECT exam_id FROM testset_exams WHERE name = ?", [test_set]

    def _case_filter(self, test_set: str | None) -> tuple[str, list]:
        """SQL true for ``cases`` rows ``c`` in a test set (all when None) and its params.

        It tests the row's own testset_ids: a single-table filter keeps the table's case order.
        """
        if test_set is None:
            return "TRUE", []
        test_id = self._scalar("SELECT id FROM testsets WHERE name = ?", [test_set])
        if test_id is None:
            self._exam_filter(test_set)  # raises: names the known sets
        return "list_contains(c.testset_ids, ?)", [test_id]

    def exams(self, *, test_set: str | None = None, dataset: str | None = None) -> pd.DataFrame:
        exams, params = self._exam_filter(test_set)
        sql = f"SELECT * FROM exams WHERE exam_id IN ({exams})"
        if dataset is not None:
            sql += " AND dataset = ?"
            params = [*params, dataset]
        return self._df(sql + " ORDER BY exam_id", params)

    def images(self, *, test_set: str | None = None, dataset: str | None = None,
               image_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Image rows with ``abs_path`` (the file on disk, or None without pixels)."""
        exams, params = self._exam_filter(test_set)
        sql = f"""SELECT i.*, CASE WHEN i.path IS NULL THEN NULL
                                   ELSE replace(d.root, '{FILES_ROOT}', ?) || '/' || i.path
                              END AS abs_path
                  FROM images i JOIN datasets d USING (dataset)
                  WHERE i.exam_id IN ({exams})"""
        params = [str(self.files_dir.resolve()), *params]
        if dataset is not None:
            sql += " AND i.dataset = ?"
            params = [*params, dataset]
        if image_ids is not None:
            sql += " AND i.image_id IN (SELECT unnest(?::VARCHAR[]))"
            params = [*params, list(image_ids)]
        return self._df(sql + " ORDER BY i.image_id", params)

    def image(self, image_id: str) -> dict:
        rows = self.images(image_ids=[image_id])
        if rows.empty:
            raise InputError(f"image {image_id!r} is not in the store")
        return rows.iloc[0].to_dict()

    def lesions(self, *, image_id: str | None = None, test_set: str | None = None) -> pd.DataFrame:
        exams, params = self._exam_filter(test_set)
        sql = f"SELECT * FROM lesions WHERE exam_id IN ({exams})"
        if image_id is not None:
            sql += " AND image_id = ?"
            params = [*params, image_id]
        return self._df(sql + " ORDER BY lesion_id", params)

    def cases(self, *, test_set: str | None = None, level: str = "image",
              density_source: str = "label") -> pd.DataFrame:
        """One row per case with its truth, in case_id order: what every metric starts from.

        Columns: case_id, exam_id, laterality, image_id, dataset, split, label (0/1),
        histology, presentation, density (exam category from ``density_source``, may be NA),
        and view at image level. An image's label is its breast's; an exam is positive if any
        breast is, and its histology is ILC if any breast is ILC, else IDC, else other, else
        none/unknown (`core.store.schema.EXAM_TRUTH`).
        """
        columns = ["case_id", "exam_id", "laterality", "image_id", "dataset", "split", "label",
                   "histology", "presentation"] + (["view"] if level == "image" else [])
        frame = self._case_truth(level, test_set, density_source, columns).frame
        return frame[columns[:-1] + ["density", "view"] if level == "image"
                     else columns + ["density"]]

    def scores(self, *, models: Sequence[str], level: str, test_set: str | None = None,
               density_source: str = "label") -> pd.DataFrame:
        """Every case of the test set at ``level`` with each model's stored score there.

        One row per (model, case), models in the order given, then by case_id: ``model``,
        the truth columns in ``SCORE_CASE_COLUMNS``, ``score`` (malignant; NaN where the model
        has no prediction for the case, so missing scores are counted, never silently
        dropped) and ``benign``. The other case columns (dataset, split, presentation, view)
        come from `cases`.

        The pages' busiest query, built for 100k-exam stores: the truth comes from the
        materialised ``cases`` table and each model's scores are matched to it on the integer
        ``case_hash`` (`core.store.schema`) here, not in a string join (see bench/store.py).
        """
        columns = [c for c in SCORE_CASE_COLUMNS if c != "density"]
        parts = []
        with self.connection() as con:
            truth = self._case_truth(level, test_set, density_source, columns)
            for model in dict.fromkeys(models):
                scored = con.sql("SELECT case_hash, malignant, benign FROM predictions "
                                 "WHERE model = ? AND level = ?", params=[model, level]
                                 ).to_arrow_table()
                at = truth.index.get_indexer(scored["case_hash"].to_numpy())
                parts.append(truth.frame.assign(
                    model=model, score=_place(scored["malignant"], at, len(truth.index)),
                    benign=_place(scored["benign"], at, len(truth.index))))
        if not parts:
            return truth.frame.iloc[:0].assign(model="", score=np.nan, benign=np.nan)[_SCORE_FRAME]
        frame = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
        return frame[_SCORE_FRAME]

    def _case_truth(self, level: str, test_set: str | None, density_source: str,
                    columns: Sequence[str]) -> _Truth:
        """``columns`` of the ``cases`` rows of a test set at ``level``, in case_id order,
        with ``density`` (exam category from ``density_source``) and ``case_hash``."""
        _check_level(level)
        with self.connection() as con:
            where, params = self._case_filter(test_set)
            # The token first: a write landing between the two reads then files newer rows
            # under an older token, which no later reader asks for.
            token = self._scalar("SELECT value FROM meta WHERE key = 'truth_token'")
            key = (token, level, test_set, density_source, tuple(columns))
            truth = self._truths.get(key)
            if truth is None:
                truth = _read_truth(con, level, where, params, density_source, columns)
                self._truths.put(key, truth)
        return truth

    def predictions(self, *, models: Sequence[str], level: str,
                    test_set: str | None = None) -> pd.DataFrame:
        """Stored predictions at ``level`` joined with the case truth (inner join on case).

        Columns: model, case_id, exam_id, laterality, image_id, label, histology, density,
        score (= malignant), benign. Cases without a prediction are absent; cases of the test
        set are the caller's `cases` frame.
        """
        _check_level(level)
        exams, params = self._exam_filter(test_set)
        return self._df(f"""
            SELECT p.model, p.case_id, p.exam_id, p.laterality, p.image_id,
                   p.malignant AS score, p.benign
            FROM predictions p
            WHERE p.level = ? AND p.model IN (SELECT unnest(?::VARCHAR[]))
              AND p.exam_id IN ({exams})
            ORDER BY p.model, p.case_id""", [level, list(models), *params])

    def prediction_levels(self) -> pd.DataFrame:
        """Which levels each model has predictions at (model, level, n)."""
        return self._df("""SELECT model, level, count(*) AS n FROM predictions
                           GROUP BY 1, 2 ORDER BY 1, 2""")

    def reads(self, *, level: str, readers: Sequence[str] | None = None,
              test_set: str | None = None) -> pd.DataFrame:
        """Reader reads at ``level``: reader, case_id, exam_id, laterality, image_id, score, recall."""
        _check_level(level)
        exams, params = self._exam_filter(test_set)
        sql = f"""SELECT reader, case_id, exam_id, laterality, image_id, score, recall
                  FROM reads WHERE level = ? AND exam_id IN ({exams})"""
        params = [level, *params]
        if readers is not None:
            sql += " AND reader IN (SELECT unnest(?::VARCHAR[]))"
            params.append(list(readers))
        return self._df(sql + " ORDER BY reader, case_id", params)

    def density(self, *, source: str | None = None, level: str = "exam",
                test_set: str | None = None) -> pd.DataFrame:
        _check_level(level)
        exams, params = self._exam_filter(test_set)
        sql = f"SELECT * FROM density WHERE level = ? AND exam_id IN ({exams})"
        params = [level, *params]
        if source is not None:
            sql += " AND source = ?"
            params.append(source)
        return self._df(sql + " ORDER BY source, case_id", params)

    def density_sources(self) -> list[str]:
        return self._df("SELECT DISTINCT source FROM density ORDER BY 1")["source"].tolist()

    # ------------------------------------------------------------------ annotations
    def annotations(self, image_id: str) -> pd.DataFrame:
        return self._df("SELECT * FROM annotations WHERE image_id = ? ORDER BY version",
                        [image_id])

    def latest_annotations(self, *, test_set: str | None = None) -> pd.DataFrame:
        """The newest annotation version of every annotated image (of a test set)."""
        exams, params = self._exam_filter(test_set)
        return self._df(f"""
            SELECT a.* FROM annotations a JOIN images i USING (image_id)
            WHERE i.exam_id IN ({exams})
            QUALIFY row_number() OVER (PARTITION BY a.image_id ORDER BY a.version DESC) = 1
            ORDER BY a.image_id""", params)

    def add_annotation(self, image_id: str, mask: np.ndarray, *, source: str,
                       author: str | None = None, note: str | None = None) -> int:
        """Save ``mask`` as the image's next annotation version; returns the version.

        The mask file is written first under a name no other version uses, then the row is
        inserted; if the insert fails the file is removed, so nothing half-written remains.
        """
        from core.io.pixels import write_mask

        self.image(image_id)  # raises for an unknown image
        mask = np.asarray(mask)
        if mask.ndim != 2 or not mask.any():
            raise InputError(f"annotation mask for {image_id} is empty or not 2-D "
                             f"(shape {mask.shape}); draw the tumour region first")
        with self.transaction() as con:
            version = con.execute(
                "SELECT coalesce(max(version), 0) + 1 FROM annotations WHERE image_id = ?",
                [image_id]).fetchall()[0][0]
            rel = annotation_mask_path(image_id, version)
            target = self.files_dir / rel
            write_mask(target, mask)
            try:
                con.execute(
                    "INSERT INTO annotations (image_id, version, source, author, mask_path, note)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [image_id, version, source, author, rel.as_posix(), note])
            except BaseException:
                target.unlink(missing_ok=True)
                raise
        return int(version)

    def stage_masks(self, masks: dict[str, np.ndarray], *, source: str,
                    author: str | None = None, note: str | None = None) -> pd.DataFrame:
        """Write mask files for a bulk import and return their ``annotations`` rows.

        Versions continue after each image's newest one. The rows go into the caller's
        ``write_tables`` call, so masks and the rest of a file land in one transaction; a
        file whose rows never land is an unreferenced leftover, never a wrong annotation.
        """
        from core.io.pixels import write_mask

        if not masks:
            return pd.DataFrame(columns=["image_id", "version", "source", "author",
                                         "mask_path", "note"])
        current = self._df("""SELECT image_id, max(version) AS v FROM annotations
                              WHERE image_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY 1""",
                           [list(masks)])
        latest = dict(zip(current["image_id"], current["v"]))
        rows = []
        for image_id, mask in masks.items():
            version = int(latest.get(image_id, 0)) + 1
            rel = annotation_mask_path(image_id, version)
            write_mask(self.files_dir / rel, mask)
            rows.append((image_id, version, source, author, rel.as_posix(), note))
        return pd.DataFrame(rows, columns=["image_id", "version", "source", "author",
                                           "mask_path", "note"])

    def load_mask(self, mask_path: str) -> np.ndarray:
        """An annotation's mask (bool array) from its stored relative path."""
        from core.io.pixels import read_mask

        return read_mask(self.files_dir / mask_path)

    # ------------------------------------------------------------------ test sets
    def create_testset(self, name: str, rule: str) -> int:
        """Create or replace test set ``name`` from ``rule``; returns its number of exams."""
        return self.create_testsets({name: rule})[name]

    def create_testsets(self, rules: dict[str, str]) -> dict[str, int]:
        """Create or replace several test sets (name -> rule) in one transaction.

        Returns each set's number of exams. Every rule is checked before anything is written.
        """
        for name in rules:
            if not name or any(c.isspace() for c in name):
                raise InputError(f"test-set name {name!r} must be non-empty without spaces")
        clauses = {name: _rule_sql(parse_rule(rule)) for name, rule in rules.items()}
        with self.transaction() as con:
            for name, (where, params) in clauses.items():
                con.execute("DELETE FROM testset_exams WHERE name = ?", [name])
                con.execute("""
                    INSERT INTO testsets (name, rule, id)
                    VALUES (?, ?, (SELECT coalesce(max(id), 0) + 1 FROM testsets))
                    ON CONFLICT (name) DO UPDATE SET rule = EXCLUDED.rule""",
                            [name, rules[name]])
                con.execute(f"""
                    INSERT INTO testset_exams (name, exam_id, exam_hash)
                    SELECT ?, c.exam_id, c.exam_hash FROM cases c
                    WHERE c.level = 'exam' AND {where}""", [name, *params])
            _rebuild_cases(con)
            counts = con.execute("""SELECT name, count(*) FROM testset_exams
                                    WHERE name IN (SELECT unnest(?::VARCHAR[])) GROUP BY 1""",
                                 [list(rules)]).fetchall()
        return {name: 0 for name in rules} | dict(counts)

    def refresh_testsets(self) -> None:
        """Re-evaluate every rule (after an import) and make each dataset's own set."""
        rules = {d: f"dataset={d}" for d in self.dataset_names()}
        rules |= dict(self.testsets()[["name", "rule"]].itertuples(index=False))
        self.create_testsets(rules)

    def delete_testset(self, name: str) -> None:
        with self.transaction() as con:
            con.execute("DELETE FROM testset_exams WHERE name = ?", [name])
            con.execute("DELETE FROM testsets WHERE name = ?", [name])
            _rebuild_cases(con)


def dataset_delete_plan(dataset: str) -> list[dict]:
    """``write_tables(delete=...)`` entries that remove a dataset and everything on its exams
    and images (children first)."""
    tables = ("reads", "density", "predictions", "lesions", "breasts", "testset_exams",
              "annotations", "filter_results", "images", "exams", "datasets")
    return [{"table": table, "match": {"dataset": dataset}} for table in tables]


def match_sql(table: str, match: Mapping) -> tuple[str, list]:
    """A WHERE clause and its parameters for ``{column: value or list of values}`` on ``table``.

    Columns are checked against the schema (never interpolated unchecked); values always travel
    as parameters. A list matches any of its values (compared as text, so ids and versions
    both work); ``None`` matches NULL. ``dataset`` on a table without that column selects the
    rows on the dataset's exams (tables with ``exam_id``) or images (``image_id``).
    """
    _check_table(table)
    columns = TABLE_COLUMNS[table]
    clauses, params = [], []
    for column, value in match.items():
        if column == "dataset" and column not in columns:
            if "exam_id" in columns:
                clauses.append("exam_id IN (SELECT exam_id FROM exams WHERE dataset = ?)")
            elif "image_id" in columns:
                clauses.append("image_id IN (SELECT image_id FROM images WHERE dataset = ?)")
            else:
                raise InputError(f"table {table} has no dataset, exam_id or image_id column; "
                                 "match it on its own columns")
            params.append(value)
            continue
        if column not in columns:
            raise InputError(f"table {table} has no column {column!r}; its columns are "
                             f"{', '.join(columns)}")
        if isinstance(value, (list, tuple, set, frozenset, np.ndarray, pd.Series, pd.Index)):
            clauses.append(f"CAST({column} AS VARCHAR) IN (SELECT unnest(?::VARCHAR[]))")
            params.append([str(v) for v in value])
        elif value is None:
            clauses.append(f"{column} IS NULL")
        else:
            clauses.append(f"{column} = ?")
            params.append(value.item() if isinstance(value, np.generic) else value)
    return " AND ".join(clauses) or "TRUE", params


def _delete_sql(entry: Mapping) -> tuple[str, list]:
    if not isinstance(entry, Mapping) or set(entry) != {"table", "match"} \
            or not isinstance(entry["match"], Mapping) or not entry["match"]:
        raise InputError(f"delete entry {str(entry)[:200]!r} is not {{'table': ..., 'match': "
                         "{column: value}}} with at least one column; deleting a whole table "
                         "is not an ingest's job")
    where, params = match_sql(entry["table"], entry["match"])
    return f"DELETE FROM {entry['table']} WHERE {where}", params


_SCORE_FRAME = ["model", *SCORE_CASE_COLUMNS, "score", "benign"]


class _Truth(NamedTuple):
    frame: pd.DataFrame    # the cases, in case_id order
    index: pd.Index        # their case_hash, to place each model's scores (hash table kept)


class _TruthCache:
    """A small thread-safe LRU of case-truth frames (pandas copy-on-write keeps them intact)."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._frames: OrderedDict[tuple, _Truth] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> _Truth | None:
        with self._lock:
            if key in self._frames:
                self._frames.move_to_end(key)
                return self._frames[key]
            return None

    def put(self, key: tuple, frame: _Truth) -> None:
        with self._lock:
            self._frames[key] = frame
            while len(self._frames) > self.size:
                self._frames.popitem(last=False)


def _read_truth(con: duckdb.DuckDBPyConnection, level: str, where: str, params: list,
                density_source: str, columns: Sequence[str]) -> _Truth:
    fetched = [c for c in columns if c != "image_id"]  # an image case's id is its image_id
    fetched += ["density_label AS density"] if density_source == "label" else ["exam_hash"]
    table = con.sql(f"""
        SELECT c.case_rank, c.case_hash, {", ".join("c." + c for c in fetched)}
        FROM cases c WHERE c.level = ? AND {where}""", params=[level, *params]).to_arrow_table()
    rank = table["case_rank"].to_numpy()
    if (np.diff(rank) < 0).any():  # a single-table scan keeps the order (CASES_SELECT)
        table = table.take(np.argsort(rank, kind="stable"))
    frame = table.to_pandas().drop(columns="case_rank")
    if "image_id" in columns:
        frame["image_id"] = frame["case_id"] if level == "image" else pd.Series(
            pd.NA, index=frame.index, dtype=frame["case_id"].dtype)
    frame["label"] = frame["label"].astype("Int8")
    if density_source != "label":
        density = con.sql("SELECT exam_hash, category FROM density WHERE level = 'exam' "
                          "AND source = ?", params=[density_source]).to_arrow_table()
        frame["density"] = _lookup(density["exam_hash"], density["category"],
                                   frame.pop("exam_hash"))
    frame["density"] = frame["density"].astype("Int8")
    return _Truth(frame, pd.Index(frame["case_hash"].to_numpy()))


def _rebuild_cases(con: duckdb.DuckDBPyConnection) -> None:
    """Recompute the derived ``cases`` table (inside the caller's write transaction)."""
    con.execute("DELETE FROM cases")
    con.execute(f"INSERT INTO cases {CASES_SELECT}")
    con.execute(RENEW_TRUTH_TOKEN)


def _lookup(keys, values, targets) -> np.ndarray:
    """``values`` (float64) at the unique integer ``keys`` equal to ``targets``; NaN where a
    target has no key or the value is NULL."""
    at = pd.Index(np.asarray(keys, dtype=np.uint64)).get_indexer(
        np.asarray(targets, dtype=np.uint64))
    values = values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    out = np.full(len(at), np.nan)
    found = at >= 0
    out[found] = values[at[found]]
    return out


def _place(values, at: np.ndarray, n: int) -> np.ndarray:
    """``n`` NaN with ``values[i]`` put at position ``at[i]`` (skipping -1; NULL stays NaN)."""
    values = values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    out = np.full(n, np.nan)
    found = np.flatnonzero(at >= 0)
    out[at[found]] = values[found]
    return out


def _rule_sql(clauses: tuple[Clause, ...]) -> tuple[str, list]:
    parts, params = ["TRUE"], []
    column = {"dataset": "c.dataset", "split": "c.split", "cancer": "CAST(c.label AS VARCHAR)",
              "histology": "c.histology", "density": "CAST(c.density_label AS VARCHAR)"}
    for clause in clauses:
        if clause.field == "presentation":
            parts.append("list_has_any(list_transform(string_split(coalesce(c.presentation, ''),"
                         " ','), lambda x: trim(x)), ?::VARCHAR[])")
        else:
            parts.append(f"{column[clause.field]} IN (SELECT unnest(?::VARCHAR[]))")
        params.append(list(clause.values))
    return " AND ".join(parts), params


def _upsert(con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame) -> int:
    _check_table(table)
    columns = TABLE_COLUMNS[table]
    missing = [c for c in PRIMARY_KEYS[table] if c not in frame.columns]
    if missing:
        raise InputError(f"rows for table {table} lack key column(s) {', '.join(missing)}")
    if frame.empty:
        return 0
    cols = [c for c in columns if c in frame.columns]
    derived = DERIVED_COLUMNS.get(table, {})
    name = f"_incoming_{table}"
    con.register(name, frame[cols])
    try:
        col_sql = ", ".join([*cols, *derived])
        select_sql = ", ".join([*cols, *derived.values()])
        # Update only the columns given, so created_at (and columns a caller leaves out) keep
        # their stored values on a re-import.
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

    The manifest is written last, so a folder without one is an unfinished job.
    """
    result_dir = Path(result_dir)
    result_dir.mkdir(parents=True, exist_ok=True)
    tables = {}
    for table, frame in frames.items():
        _check_table(table)
        tables[table] = f"{table}.parquet"
        frame.to_parquet(result_dir / tables[table], index=False)
    manifest = {"tables": tables, "delete": list(delete)}
    tmp = result_dir / (RESULT_MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(result_dir / RESULT_MANIFEST)
    return result_dir


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _check_table(table: str) -> None:
    if table not in TABLE_COLUMNS:
        raise InputError(f"unknown table {table!r}; known: {', '.join(TABLE_COLUMNS)}")


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise InputError(f"level {level!r} is not one of {', '.join(LEVELS)}")


def annotation_mask_path(image_id: str, version: int) -> Path:
    """Where annotation ``version`` of an image lives, relative to the store's files folder."""
    return Path("masks") / _safe_name(image_id) / f"v{version}.png"


def _safe_name(identifier: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in identifier)
