"""The store: one DuckDB file of exams, images, labels, reads, annotations and predictions.

`Store` is the one public class, a facade: its methods open a connection or a transaction and
hand it to the module that knows the SQL (`match` for structured selections, `writes` for bulk
writes and result folders, `catalogue` for read queries, `truth` for case truth and scores,
`annotations` for mask files, `testsets` for test-set rules). Schema versions and migrations
are handled here, on opening.

Every connection is short: the file is attached for one operation (or one ``with
store.connection():`` block) and detached, because DuckDB lets one process at a time hold a
file for writing; a second writer retries with back-off for ``busy_timeout_s`` and then raises
`StoreBusy` rather than waiting forever or corrupting anything. Every write is one
transaction: all of it lands, or none (``write_tables``, ``ingest``). Long jobs never write
here directly: they write a result folder (`write_result`) that ``ingest`` loads in one
transaction. Callers never pass SQL: tables and columns are names checked against the schema,
values travel as ``?`` parameters.
"""
from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from core.errors import InputError, PseudonymKeyError, StoreVersionError
from core.store import annotations as _annotations
from core.store import catalogue, keys
from core.store import testsets as _testsets
from core.store.connections import engine
from core.store.match import check_table, delete_sql, keys_sql, select_sql
from core.store.schema import (CASE_SOURCES, MIGRATIONS, SALTED_VERSION, SCHEMA, SCHEMA_VERSION,
                               TABLE_COLUMNS)
from core.store.truth import (SCORE_CASE_COLUMNS, Truth, TruthCache, read_scores, read_truth,
                              rebuild_cases, truth_token)
from core.store.writes import read_result, upsert
from core.validation import check_level

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
    if path.is_dir():
        raise InputError(f"store {path} is a folder; pass a store file (e.g. "
                         f"{path / DEFAULT_DB.name})")
    if not read_only and demo_mode():
        raise InputError(f"store {path} is read-only in demo mode ({MODE_ENV}=demo); writes "
                         f"are disabled: unset {MODE_ENV} to change a store")
    if read_only:
        if not path.exists():
            raise InputError(f"store {path} does not exist; build it with `python -m core demo` "
                             "or `python -m core init`")
        version = store.schema_version()  # refuses newer files and non-stores
        if version < SCHEMA_VERSION:
            if demo_mode():
                raise StoreVersionError(
                    f"store {path} has schema version {version}, older than this ILCscope's "
                    f"{SCHEMA_VERSION}, and demo mode never writes it; open it once with "
                    f"{MODE_ENV} unset to migrate it")
            try:
                Store(path=path, busy_timeout_s=busy_timeout_s,
                      key_file=key_file)._create_or_migrate()
            except duckdb.IOException as exc:
                raise StoreVersionError(
                    f"store {path} has schema version {version}, older than this ILCscope's "
                    f"{SCHEMA_VERSION}, and cannot be migrated here ({_first_line(exc)}); "
                    "open it once where the file is writable (any write migrates it)") from exc
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"store {path}: cannot create its folder {path.parent} "
                             f"({exc.strerror or type(exc).__name__}); pass a path in a "
                             "writable folder") from None
        store._create_or_migrate()
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
class Store:
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

    # ------------------------------------------------------------------ connections
    @property
    def files_dir(self) -> Path:
        """Folder for files the store owns (masks, saliency maps, display copies)."""
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
            raise InputError(f"store {self.path} cannot be read or written ({_first_line(exc)}); "
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

    # ------------------------------------------------------------------ schema
    def schema_version(self) -> int:
        """The file's schema version; a newer file than this ILCscope knows is refused."""
        with self.connection() as con:
            version = _stored_version(con, self.path)
        if version is None:
            raise InputError(f"store {self.path} is an empty DuckDB file, not an ILCscope store "
                             "yet; open it writable to create the store")
        return version

    def _create_or_migrate(self) -> None:
        with self.connection():
            with self.transaction() as con:
                version = _stored_version(con, self.path)
                if version is None:
                    con.execute(SCHEMA)
                    con.execute("INSERT INTO meta VALUES ('schema_version', ?)",
                                [str(SCHEMA_VERSION)])
                    return
                salted = version <= SALTED_VERSION
                while version < SCHEMA_VERSION:
                    if version == SALTED_VERSION:
                        self._adopt_salt(con)  # v4's Python half: save the salt, then drop it
                    con.execute(MIGRATIONS[version])
                    version += 1
                con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                            [str(version)])
            if salted:
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

    def pseudonym(self, patient_id: str) -> str:
        """A stable pseudonym for a patient identifier: HMAC-SHA256 under the pseudonym key.

        The key lives outside the store (`core.store.keys`), so the store alone cannot be
        re-identified; the same key gives the same pseudonym in every store (a site links its
        stores by sharing the key file). The store records the key's fingerprint on first use
        and refuses another key with `PseudonymKeyError`. The identifier itself is never kept.
        """
        return keys.pseudonym(self._pseudonym_key(), patient_id)

    def _pseudonym_key(self) -> bytes:
        if self._key is not None:
            return self._key
        key = keys.load_key(self.key_file, create=not self.read_only)
        stored = self._scalar("SELECT value FROM meta WHERE key = 'key_fingerprint'")
        _check_fingerprint(self.path, stored, keys.fingerprint(key), self.key_file)
        self._key = key
        return key

    def _record_fingerprint(self, con) -> None:
        """Store the key's fingerprint with the first rows written under it (same transaction,
        so a killed import leaves no trace of its key either), refusing another key's rows."""
        tag = keys.fingerprint(self._key)
        con.execute("INSERT OR IGNORE INTO meta VALUES ('key_fingerprint', ?)", [tag])
        stored = con.execute("SELECT value FROM meta WHERE key = 'key_fingerprint'").fetchall()[0][0]
        _check_fingerprint(self.path, stored, tag, self.key_file)

    # ------------------------------------------------------------------ rows by name
    def select(self, table: str, **equals) -> pd.DataFrame:
        """The rows of ``table`` that match ``equals``, for callers that must not write SQL.

        ``equals`` maps a column to a value (``None`` matches NULL) or to a list of values
        (any of them); ``dataset=`` also works on tables that reach a dataset through their
        exam or image (see `core.store.match.match_sql`). No keywords: every row.
        Columns: the table's schema columns, ``TABLE_COLUMNS[table]``.
        """
        return self._df(*select_sql(table, equals))

    def rows(self, table: str, keys: pd.DataFrame) -> pd.DataFrame:
        """The stored rows of ``table`` whose primary key appears in ``keys`` (an importer's
        snapshot of what a file would change). Columns: ``TABLE_COLUMNS[table]``."""
        check_table(table)
        if keys.empty:
            return pd.DataFrame(columns=list(TABLE_COLUMNS[table]))
        return self._df(*keys_sql(table, keys))

    # ------------------------------------------------------------------ writes
    def write_tables(self, frames: dict[str, pd.DataFrame], *,
                     delete: Sequence[Mapping] = (), testsets: Mapping[str, str] | None = None,
                     refresh_testsets: bool = False) -> dict[str, int]:
        """Upsert several tables in one transaction; returns rows written per table.

        ``delete`` holds ``{"table": name, "match": {column: value or values}}`` entries
        (`core.store.match.match_sql`), run first in the same transaction, for replacing rows:
        a dataset, a density source on some exams. Nothing in them is SQL: names are checked
        against the schema and values travel as parameters.

        ``testsets`` (name -> rule) are created or replaced, and ``refresh_testsets`` re-evaluates
        every stored rule and each dataset's own set, in the same transaction: rows and the test
        sets they change land together, so a kill between them cannot leave a set stale.
        """
        deletes = [delete_sql(entry) for entry in delete]
        with self.transaction() as con:
            if self._key is not None:   # pseudonyms were made: their key's fingerprint lands too
                self._record_fingerprint(con)
            for sql, params in deletes:
                con.execute(sql, params)
            written = {table: upsert(con, table, frame) for table, frame in frames.items()}
            sets_change = bool(testsets) or refresh_testsets
            if sets_change or {*frames, *(d["table"] for d in delete)} & set(CASE_SOURCES):
                rebuild_cases(con)  # the rules select from cases
            if sets_change:
                rules = _testsets.current_rules(con) if refresh_testsets else {}
                _testsets.write_testsets(con, rules | dict(testsets or {}))
                rebuild_cases(con)  # cases carry their test-set ids
            return written

    def ingest(self, result_dir: str | Path) -> dict[str, int]:
        """Load a job's result folder (see `write_result`) in one transaction.

        The manifest names tables, their Parquet files and structured deletes only; anything
        else in it (an SQL string, an unknown table or column, a file outside the folder) is
        refused before any write (`core.store.writes.read_result`).
        """
        frames, delete = read_result(result_dir)
        return self.write_tables(frames, delete=delete)

    # ------------------------------------------------------------------ summaries
    def counts(self) -> dict[str, int]:
        """Rows per table (the ``info`` command, and a cheap before/after check)."""
        with self.connection() as con:
            return {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
                    for t in TABLE_COLUMNS}

    def datasets(self) -> pd.DataFrame:
        """The datasets with their sizes. Columns: dataset, kind, source, root, notes,
        n_exams, n_images."""
        with self.connection() as con:
            return catalogue.datasets(con)

    def dataset_names(self) -> list[str]:
        """Dataset names, sorted (the pickers' choices)."""
        return self.datasets()["dataset"].tolist()

    def testsets(self) -> pd.DataFrame:
        """Named test sets with their rule and size (each dataset's own set included).

        Columns: name, rule, n_exams, datasets (comma-separated), created_at."""
        with self.connection() as con:
            return catalogue.testsets(con)

    def testset_names(self) -> list[str]:
        """Test-set names, sorted (the pickers' choices)."""
        return self.testsets()["name"].tolist()

    def models(self) -> pd.DataFrame:
        """The models with their number of predictions. Columns: model, kind, checkpoint,
        parent, description, synthetic, created_at, n_predictions."""
        with self.connection() as con:
            return catalogue.models(con)

    def model_names(self) -> list[str]:
        """Model names, sorted (the pickers' choices)."""
        return self.models()["model"].tolist()

    def readers(self) -> pd.DataFrame:
        """The readers, radiologists before consensus, with their number of reads.

        Columns: reader, kind, synthetic, n_reads."""
        with self.connection() as con:
            return catalogue.readers(con)

    def reader_names(self) -> list[str]:
        """Reader names in `readers` order (the pickers' choices)."""
        return self.readers()["reader"].tolist()

    def summary(self, *, test_set: str | None = None) -> dict[str, pd.DataFrame]:
        """What the Overview page and ``info`` show: breakdowns within a test set (or all).

        Frames (columns): histology (histology, breasts), presentation (presentation,
        histology, breasts; cancers only), density (source, category, exams), views (view,
        laterality, images), splits (dataset, split, exams).
        """
        with self.connection() as con:
            return catalogue.summary(con, test_set)

    # ------------------------------------------------------------------ cases and labels
    def exams(self, *, test_set: str | None = None, dataset: str | None = None) -> pd.DataFrame:
        """Exam rows of a test set and/or dataset, by exam_id. Columns: exam_id, dataset,
        exam_key, patient, exam_date, age, split."""
        with self.connection() as con:
            return catalogue.exams(con, test_set, dataset)

    def images(self, *, test_set: str | None = None, dataset: str | None = None,
               image_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Image rows with the file on disk, by image_id.

        Columns: image_id, exam_id, dataset, image_key, laterality, laterality_source, view,
        path, sha256, height, width, bit_depth, spacing_mm, photometric, manufacturer,
        display_path, abs_path (the file on disk, or None without pixels).
        """
        with self.connection() as con:
            return catalogue.images(con, self.files_dir, test_set, dataset, image_ids)

    def image(self, image_id: str) -> dict:
        """One image's `images` row as a dict; an unknown id is an `InputError`."""
        rows = self.images(image_ids=[image_id])
        if rows.empty:
            raise InputError(f"image {image_id!r} is not in the store")
        return rows.iloc[0].to_dict()

    def lesions(self, *, image_id: str | None = None, test_set: str | None = None) -> pd.DataFrame:
        """Marked lesions of an image or a test set, by lesion_id. Columns: lesion_id,
        image_id, exam_id, laterality, presentation, pathology, histology, row_px, col_px,
        radius_px."""
        with self.connection() as con:
            return catalogue.lesions(con, image_id, test_set)

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

        One row per (model, case), models in the order given, then by case_id. Columns: model,
        the truth columns in ``SCORE_CASE_COLUMNS``, score (malignant; NaN where the model
        has no prediction for the case, so missing scores are counted, never silently
        dropped) and benign. The other case columns (dataset, split, presentation, view)
        come from `cases`.

        The pages' busiest query, built for 100k-exam stores: the truth comes from the
        materialised ``cases`` table and each model's scores are matched to it on the integer
        ``case_hash`` (`core.store.truth`), not in a string join (see bench/store.py).
        """
        columns = [c for c in SCORE_CASE_COLUMNS if c != "density"]
        with self.connection() as con:
            truth = self._case_truth(level, test_set, density_source, columns)
            return read_scores(con, truth, models, level)

    def _case_truth(self, level: str, test_set: str | None, density_source: str,
                    columns: Sequence[str]) -> Truth:
        """``columns`` of the ``cases`` rows of a test set at ``level``, in case_id order,
        with ``density`` (exam category from ``density_source``) and ``case_hash``."""
        check_level(level)
        with self.connection() as con:
            where, params = catalogue.case_filter(con, test_set)
            # The token first: a write landing between the two reads then files newer rows
            # under an older token, which no later reader asks for.
            key = (truth_token(con), level, test_set, density_source, tuple(columns))
            truth = self._truths.get(key)
            if truth is None:
                truth = read_truth(con, level, where, params, density_source, columns)
                self._truths.put(key, truth)
        return truth

    def predictions(self, *, models: Sequence[str], level: str,
                    test_set: str | None = None) -> pd.DataFrame:
        """Stored predictions at ``level`` on the exams of a test set, by model and case_id.

        Columns: model, case_id, exam_id, laterality, image_id, score (= malignant), benign.
        Cases without a prediction are absent (`scores` keeps them, with NaN).
        """
        check_level(level)
        with self.connection() as con:
            return catalogue.predictions(con, models, level, test_set)

    def prediction_levels(self) -> pd.DataFrame:
        """Which levels each model has predictions at. Columns: model, level, n."""
        with self.connection() as con:
            return catalogue.prediction_levels(con)

    def reads(self, *, level: str, readers: Sequence[str] | None = None,
              test_set: str | None = None) -> pd.DataFrame:
        """Reader reads at ``level``, by reader and case_id.

        Columns: reader, case_id, exam_id, laterality, image_id, score, recall."""
        check_level(level)
        with self.connection() as con:
            return catalogue.reads(con, level, readers, test_set)

    def density(self, *, source: str | None = None, level: str = "exam",
                test_set: str | None = None) -> pd.DataFrame:
        """Density rows at ``level`` (of one source, or all), by source and case_id.

        Columns: source, level, case_id, exam_id, laterality, image_id, category, score,
        p0, p1, p2, p3, exam_hash."""
        check_level(level)
        with self.connection() as con:
            return catalogue.density(con, source, level, test_set)

    def density_sources(self) -> list[str]:
        """Sources that have density rows ('label' for the dataset's own), sorted."""
        with self.connection() as con:
            return catalogue.density_sources(con)

    # ------------------------------------------------------------------ annotations
    def annotations(self, image_id: str) -> pd.DataFrame:
        """Every annotation version of an image, oldest first. Columns: image_id, version,
        source, author, created_at, mask_path, note, parent."""
        with self.connection() as con:
            return catalogue.annotations(con, image_id)

    def latest_annotations(self, *, test_set: str | None = None) -> pd.DataFrame:
        """The newest annotation version of every annotated image (of a test set).

        Columns: image_id, version, source, author, created_at, mask_path, note, parent."""
        with self.connection() as con:
            return catalogue.latest_annotations(con, test_set)

    def add_annotation(self, image_id: str, mask: np.ndarray, *, source: str,
                       author: str | None = None, note: str | None = None,
                       parent: int | None = None) -> int:
        """Save ``mask`` as the image's next annotation version; returns the version.
        ``parent``: the existing version it was edited from (None: a new drawing).

        The mask file is written first under a name no other version uses, then the row is
        inserted; if the insert fails the file is removed, so nothing half-written remains.
        """
        self.image(image_id)  # raises for an unknown image
        mask = np.asarray(mask)
        if mask.ndim != 2 or not mask.any():
            raise InputError(f"annotation mask for {image_id} is empty or not 2-D "
                             f"(shape {mask.shape}); draw the tumour region first")
        with self.transaction() as con:
            return _annotations.insert_annotation(con, self.files_dir, image_id, mask,
                                                  source=source, author=author, note=note,
                                                  parent=parent)

    def stage_masks(self, masks: dict[str, np.ndarray], *, source: str,
                    author: str | None = None, note: str | None = None) -> pd.DataFrame:
        """Write mask files for a bulk import and return their ``annotations`` rows.

        Versions continue after each image's newest one. The rows go into the caller's
        ``write_tables`` call, so masks and the rest of a file land in one transaction; a
        file whose rows never land is an unreferenced leftover, never a wrong annotation.
        Columns: image_id, version, source, author, mask_path, note, parent.
        """
        with self.connection() as con:
            return _annotations.stage_masks(con, self.files_dir, masks, source=source,
                                            author=author, note=note)

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
        with self.transaction() as con:
            counts = _testsets.write_testsets(con, rules)
            rebuild_cases(con)
        return counts

    def refresh_testsets(self, testsets: Mapping[str, str] | None = None) -> list[str]:
        """Bring every test set up to date (each dataset's own set included), plus ``testsets``
        (name -> rule, created or replaced); returns the names rewritten.

        Only stale sets are written, in one transaction; when none is stale nothing is written
        (a re-import that found every file unchanged still repairs a set a kill left stale).
        """
        with self.connection() as con:
            rules = _testsets.current_rules(con) | dict(testsets or {})
            stale = _testsets.stale_testsets(con, rules)
            if stale:
                self.create_testsets({name: rules[name] for name in stale})
        return stale

    def delete_testset(self, name: str) -> None:
        """Remove a test set (its exams stay in the store)."""
        with self.transaction() as con:
            _testsets.delete_testset(con, name)
            rebuild_cases(con)


class StoreNotice(UserWarning):
    """Something the user must know about a store that is not an error (a migration's note)."""


def _stored_version(con: duckdb.DuckDBPyConnection, path: Path) -> int | None:
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


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _check_fingerprint(path: Path, stored: str | None, tag: str, key_file) -> None:
    """Refuse a key whose fingerprint differs from the one the store recorded."""
    if stored is not None and stored != tag:
        raise PseudonymKeyError(
            f"store {path} was pseudonymised with the key of fingerprint {stored}, not "
            f"the configured one ({tag}, from {keys.KEY_ENV} or {keys.key_path(key_file)}): its "
            f"pseudonyms would not match; set {keys.KEY_FILE_ENV} to that key's file (a migrated "
            f"store's salt was saved as pseudonym-{stored}.key) or import into another store")
