"""The store's schema, its version, and the migrations that bring older files up to date.

Identifiers are text and global: ``exam_id = "<dataset>/<exam key>"``, ``image_id =
"<exam_id>/<L|R>-<view>"`` for files named that way or ``"<dataset>/<file stem>"`` otherwise.
A *case* is what a score or label belongs to at one level: ``case_id`` is the image_id (image
level), ``"<exam_id>/<L|R>"`` (breast level) or the exam_id (exam level). See `Store.cases`.

Joins run on integers: ``case_hash`` (md5 of ``"<level>:<case_id>"``) and ``exam_hash`` (md5 of
the exam_id), 64 bits of each, are numbers the store computes from each row's own text key when
it writes it (`DERIVED_COLUMNS`), so no table needs another's numbering (a collision among 10
million cases has odds of about 3 in a million, and joins also match the level).

The ``cases`` table is the case truth (label, histology, split, test sets, density label ...)
of every case at every level, derived from exams, images, breasts, test sets and density: the
pages' busiest queries read it instead of joining those tables on text keys each time. Each row
depends on its own exam's rows only, so every write re-derives it for the exams it touched, in
the same transaction (`core.store.derived`); each update renews ``meta.truth_token``, on which
readers key their caches.

Pixels stay in files: ``images.path`` is relative to ``datasets.root``; masks, saliency maps and
pixel copies live under the store's files folder (``Store.files_dir``) with relative paths.
``images.display_path`` names an old store's display copy (still shown); new imports leave it
NULL, the screen copy being made on first view (`core.io.display`).
"""
from __future__ import annotations

import re

from core.vocabulary import (ANNOTATION_SOURCES, DENSITY_SOURCES, HISTOLOGIES,  # noqa: F401
                             HISTOLOGY_PRIORITY, LATERALITIES, LEVELS, PATHOLOGIES,
                             PRESENTATIONS, VIEWS)

SCHEMA_VERSION = 8
# The first version whose derived tables are kept per exam: older files are re-derived whole.
PER_EXAM_VERSION = 8
# The last version that kept the pseudonym salt in ``meta`` (see `core.store.keys`).
SALTED_VERSION = 3


def case_hash_sql(level: str, case_id: str) -> str:
    """SQL for a case's 64-bit key from SQL expressions for its level and case_id."""
    return _md5_64(f"{level} || ':' || {case_id}")


def exam_hash_sql(exam_id: str) -> str:
    """SQL for an exam's 64-bit key from an SQL expression for its exam_id."""
    return _md5_64(exam_id)


def _md5_64(text: str) -> str:
    # md5, not DuckDB's hash(): stored keys must not change with the DuckDB version
    return f"(md5_number({text}) >> 64)::UBIGINT"


CASES_TABLE = """
CREATE TABLE cases (                     -- derived: see the module doc
    level VARCHAR NOT NULL,
    case_hash UBIGINT NOT NULL,
    case_id VARCHAR NOT NULL,
    exam_hash UBIGINT NOT NULL,
    exam_id VARCHAR NOT NULL,
    laterality VARCHAR,                  -- NULL at exam level (an image's case_id is its image_id)
    dataset VARCHAR NOT NULL,
    split VARCHAR,
    label TINYINT,                       -- 1 = cancer (an image has its breast's label)
    histology VARCHAR,
    presentation VARCHAR,
    view VARCHAR,                        -- image level only
    testset_ids INTEGER[] NOT NULL,      -- testsets.id of every set holding the exam
    density_label TINYINT                -- the exam's density category from source 'label'
);
"""


# One statement per table; the whole string runs in one transaction on a new file.
SCHEMA = """
CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);

CREATE TABLE datasets (
    dataset VARCHAR PRIMARY KEY,
    kind VARCHAR NOT NULL,               -- imported | synthetic | predictions-only
    source VARCHAR,                      -- dicom, png, mias, csaw, predictions, demo ...
    root VARCHAR,                        -- absolute folder the image paths are relative to
    notes VARCHAR,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE exams (
    exam_id VARCHAR PRIMARY KEY,
    dataset VARCHAR NOT NULL,
    exam_key VARCHAR NOT NULL,           -- the id as the source names it
    patient VARCHAR,                     -- keyed pseudonym (core.store.keys), never an id
    exam_date DATE,
    age DOUBLE,
    split VARCHAR                        -- train | val | test | NULL
);

CREATE TABLE images (
    image_id VARCHAR PRIMARY KEY,
    exam_id VARCHAR NOT NULL,
    dataset VARCHAR NOT NULL,
    image_key VARCHAR NOT NULL,
    laterality VARCHAR NOT NULL,         -- L | R
    laterality_source VARCHAR NOT NULL,  -- dicom-tag, file-name, info-note, corrected, synthetic
    view VARCHAR NOT NULL,               -- CC | MLO | other
    path VARCHAR,                        -- relative to datasets.root; NULL when no pixels
    sha256 VARCHAR,
    height INTEGER,
    width INTEGER,
    bit_depth INTEGER,
    spacing_mm DOUBLE,
    photometric VARCHAR,                 -- MONOCHROME1 | MONOCHROME2
    manufacturer VARCHAR,
    display_path VARCHAR                 -- 8-bit display copy, relative to the files folder
);

CREATE TABLE breasts (
    exam_id VARCHAR NOT NULL,
    laterality VARCHAR NOT NULL,
    cancer TINYINT,                      -- 1 = malignant finding in this breast
    histology VARCHAR NOT NULL,          -- ILC | IDC | other | none | unknown
    presentation VARCHAR,                -- comma-separated PRESENTATIONS
    pathology VARCHAR,                   -- malignant | benign | none
    PRIMARY KEY (exam_id, laterality)
);

CREATE TABLE lesions (
    lesion_id VARCHAR PRIMARY KEY,
    image_id VARCHAR NOT NULL,
    exam_id VARCHAR NOT NULL,
    laterality VARCHAR NOT NULL,
    presentation VARCHAR,
    pathology VARCHAR,
    histology VARCHAR,
    row_px DOUBLE,                       -- centre in array coordinates (row 0 at the top)
    col_px DOUBLE,
    radius_px DOUBLE
);

CREATE TABLE annotations (
    image_id VARCHAR NOT NULL,
    version INTEGER NOT NULL,            -- 1, 2, ...: a new version never replaces an old one
    source VARCHAR NOT NULL,             -- radiologist | drawn | imported | derived
    author VARCHAR,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    mask_path VARCHAR NOT NULL,          -- uint8 PNG (0/255), relative to the files folder
    note VARCHAR,
    parent INTEGER,                      -- the version this one was edited from; NULL: new
    PRIMARY KEY (image_id, version)
);

CREATE TABLE readers (
    reader VARCHAR PRIMARY KEY,
    kind VARCHAR NOT NULL,               -- radiologist | consensus
    synthetic BOOLEAN NOT NULL DEFAULT false
);

CREATE TABLE reads (
    reader VARCHAR NOT NULL,
    level VARCHAR NOT NULL,
    case_id VARCHAR NOT NULL,
    exam_id VARCHAR NOT NULL,
    laterality VARCHAR,
    image_id VARCHAR,
    score DOUBLE,
    recall BOOLEAN,
    PRIMARY KEY (reader, level, case_id)
);

CREATE TABLE density (
    source VARCHAR NOT NULL,             -- label | classical | nyu-histogram | imported
    level VARCHAR NOT NULL,
    case_id VARCHAR NOT NULL,
    exam_id VARCHAR NOT NULL,
    laterality VARCHAR,
    image_id VARCHAR,
    category TINYINT,                    -- 0 fatty .. 3 extremely dense
    score DOUBLE,                        -- percent density or model score
    p0 DOUBLE, p1 DOUBLE, p2 DOUBLE, p3 DOUBLE,
    exam_hash UBIGINT NOT NULL,          -- derived: md5 of exam_id
    PRIMARY KEY (source, level, case_id)
);

CREATE TABLE models (
    model VARCHAR PRIMARY KEY,
    kind VARCHAR NOT NULL,               -- gmic | classical | external | ...
    checkpoint VARCHAR,
    parent VARCHAR,
    description VARCHAR,
    synthetic BOOLEAN NOT NULL DEFAULT false,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    preprocess VARCHAR                   -- none | histeq | unsharp | sobel (what its inputs got)
);

CREATE TABLE predictions (
    model VARCHAR NOT NULL,
    level VARCHAR NOT NULL,
    case_id VARCHAR NOT NULL,
    exam_id VARCHAR NOT NULL,
    laterality VARCHAR,
    image_id VARCHAR,
    malignant DOUBLE NOT NULL,
    benign DOUBLE,
    saliency_path VARCHAR,               -- .npz relative to the files folder
    patch_boxes VARCHAR,                 -- JSON [[row, col, height, width], ...] in image pixels
    case_hash UBIGINT NOT NULL,          -- derived: md5 of level:case_id (see the module doc)
    PRIMARY KEY (model, level, case_id)
);

CREATE TABLE testsets (
    name VARCHAR PRIMARY KEY,
    rule VARCHAR NOT NULL,               -- the rule that made it (see core.store.testsets)
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    id INTEGER NOT NULL                  -- stable small number, kept in cases.testset_ids
);

CREATE TABLE testset_exams (
    name VARCHAR NOT NULL,
    exam_id VARCHAR NOT NULL,
    exam_hash UBIGINT NOT NULL,          -- derived: md5 of exam_id
    PRIMARY KEY (name, exam_id)
);

CREATE TABLE filter_results (
    image_id VARCHAR NOT NULL,
    method VARCHAR NOT NULL,             -- original | M1 .. M7
    params_hash VARCHAR NOT NULL,
    annotation_version INTEGER NOT NULL,
    healthy_region VARCHAR NOT NULL,     -- mirrored | ring
    auc DOUBLE,
    n_tumour BIGINT,
    n_healthy BIGINT,
    PRIMARY KEY (image_id, method, params_hash, annotation_version)
);

CREATE TABLE runs (                      -- one row per job (see core.jobs.run_folder)
    run_id VARCHAR PRIMARY KEY,          -- <kind>-<timestamp>-<random>: its folder's name
    kind VARCHAR NOT NULL,               -- filters | predict | density | train
    params VARCHAR NOT NULL,             -- JSON: the job's parameters (a density calibration too)
    code_version VARCHAR,                -- git commit, else sha256 of the package files
    status VARCHAR NOT NULL,             -- running | done | failed | cancelled
    started_at TIMESTAMP NOT NULL,
    ended_at TIMESTAMP,
    progress_done BIGINT,
    progress_total BIGINT,
    message VARCHAR,
    ingested VARCHAR,                    -- JSON: rows written per table
    chunks VARCHAR,                      -- JSON: names of the chunks ingested (a resume skips them)
    error VARCHAR,
    folder VARCHAR NOT NULL              -- relative to the files folder; gone once a filters run is done
);

CREATE TABLE train_epochs (              -- one row per finished epoch of a training run (models.training.sweep)
    run_id VARCHAR NOT NULL,             -- the run's row in ``runs`` (kind 'train')
    epoch INTEGER NOT NULL,              -- 1, 2, ...
    train_loss DOUBLE,                   -- mean training loss over the epoch's batches
    val_loss DOUBLE,                     -- mean loss on the validation set
    val_auc DOUBLE,                      -- image-level malignant AUC on the validation set
    lr DOUBLE,                           -- learning rate at the epoch's end
    images BIGINT,                       -- training images seen in the epoch
    elapsed_s DOUBLE,                    -- wall time of the epoch (training and validation)
    PRIMARY KEY (run_id, epoch)
);

CREATE TABLE reader_studies (            -- readers x modalities x cases (core.store.studies)
    study VARCHAR PRIMARY KEY,
    level VARCHAR NOT NULL,              -- image | breast | exam: what one case is
    store_cases BOOLEAN NOT NULL,        -- case ids are the store's cases at that level
    rating_scale VARCHAR,                -- e.g. 'BI-RADS 1-5', '0-100'; NULL = not stated
    description VARCHAR,
    synthetic BOOLEAN NOT NULL DEFAULT false,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE study_cases (
    study VARCHAR NOT NULL,
    case_id VARCHAR NOT NULL,            -- a store case_id when store_cases, else the file's id
    truth TINYINT NOT NULL,              -- 1 = cancer
    PRIMARY KEY (study, case_id)
);

CREATE TABLE study_readers (
    study VARCHAR NOT NULL,
    reader VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,               -- radiologist | model (a fixed reader)
    PRIMARY KEY (study, reader)
);

CREATE TABLE study_reads (
    study VARCHAR NOT NULL,
    reader VARCHAR NOT NULL,
    modality VARCHAR NOT NULL,           -- the condition: unaided, aided-by-gmic ...
    case_id VARCHAR NOT NULL,
    rating DOUBLE NOT NULL,              -- higher = more suspicious; a missing read has no row
    PRIMARY KEY (study, reader, modality, case_id)
);
""" + CASES_TABLE


def table_ddl(table: str) -> str:
    """The ``CREATE TABLE`` statement of ``table`` in the current `SCHEMA`."""
    match = re.search(rf"^CREATE TABLE {table} \(.*?^\);", SCHEMA, re.S | re.M)
    return match.group(0)


def _rebuild_with_columns(table: str, columns: dict[str, str]) -> str:
    """v1 -> v2 for a table that gained NOT NULL columns (name -> SQL value) at its end.

    DuckDB cannot add a NOT NULL column to an indexed table inside one transaction, so the
    table is rebuilt. It takes the current definition: a later version that changes one of
    these tables must freeze its v2 definition here.
    """
    values = ", ".join(f"{expr} AS {name}" for name, expr in columns.items())
    return f"""
        {table_ddl(table).replace(f"CREATE TABLE {table} (", f"CREATE TABLE {table}_v2 (", 1)}
        INSERT INTO {table}_v2 SELECT *, {values} FROM {table};
        DROP TABLE {table};
        ALTER TABLE {table}_v2 RENAME TO {table};"""


# Columns the store computes from a row's own text key on every write (see the module doc);
# callers never pass them, and `TABLE_COLUMNS` leaves them out.
DERIVED_COLUMNS: dict[str, dict[str, str]] = {
    "predictions": {"case_hash": case_hash_sql("level", "case_id")},
    "density": {"exam_hash": exam_hash_sql("exam_id")},
    "testset_exams": {"exam_hash": exam_hash_sql("exam_id")},
}

# Run by every update of ``cases``: readers key their caches on the token.
RENEW_TRUTH_TOKEN = """
    INSERT INTO meta VALUES ('truth_token', uuid()::VARCHAR) ON CONFLICT (key)
    DO UPDATE SET value = EXCLUDED.value"""

# The reader-study tables, parents first (a study's delete plan runs them in reverse).
STUDY_TABLES = ("reader_studies", "study_cases", "study_readers", "study_reads")

# MIGRATIONS[v] upgrades a file at version v to v + 1 (SQL run inside one transaction).
MIGRATIONS: dict[int, str] = {
    # v2: integer join keys and the materialised case truth (see bench/store.py)
    1: "\n".join([
        _rebuild_with_columns("predictions", DERIVED_COLUMNS["predictions"]),
        _rebuild_with_columns("density", DERIVED_COLUMNS["density"]),
        _rebuild_with_columns("testset_exams", DERIVED_COLUMNS["testset_exams"]),
        _rebuild_with_columns("testsets", {"id": "row_number() OVER (ORDER BY name)::INTEGER"}),
        CASES_TABLE,  # filled when the file reaches PER_EXAM_VERSION
    ]),
    # v3: the runs table (core.jobs.run_folder); a later change to it must freeze this DDL here
    2: table_ddl("runs"),
    # v4: the pseudonym salt leaves the store; `Store._adopt_salt` first saves it as a key file
    # and records its fingerprint (``meta.key_fingerprint``), in the same transaction
    SALTED_VERSION: "DELETE FROM meta WHERE key = 'salt';",
    # v5: reader studies (core.store.studies), beside ``reads``, which they leave unchanged;
    # a later change to one of these tables must freeze its v5 DDL here
    4: "\n".join(table_ddl(t) for t in STUDY_TABLES),
    # v6: an annotation version records the version it was edited from (core.annotations)
    5: "ALTER TABLE annotations ADD COLUMN IF NOT EXISTS parent INTEGER;",
    # v7: training runs' per-epoch metrics, and the preprocessing a model's inputs get (models.training.sweep);
    # a later change to train_epochs must freeze its v7 DDL here
    6: "\n".join([table_ddl("train_epochs").replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1),
                  "ALTER TABLE models ADD COLUMN IF NOT EXISTS preprocess VARCHAR;"]),
    # v8: derived tables kept per exam (core.store.derived); ``cases`` loses its global rank and
    # the opening re-derives it, and every test set's members, whole
    7: "DROP TABLE cases;\n" + CASES_TABLE,
}

# The tables whose rows ``cases`` rows and test-set members are derived from (each row names
# its exam: `core.store.derived` re-derives the exams a write to them touched).
CASE_SOURCES = ("exams", "images", "breasts", "testsets", "testset_exams", "density")

# Columns per table, in schema order: the ingest path and the importers build frames from these.
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "datasets": ("dataset", "kind", "source", "root", "notes"),
    "exams": ("exam_id", "dataset", "exam_key", "patient", "exam_date", "age", "split"),
    "images": (
        "image_id", "exam_id", "dataset", "image_key", "laterality", "laterality_source", "view",
        "path", "sha256", "height", "width", "bit_depth", "spacing_mm", "photometric",
        "manufacturer", "display_path",
    ),
    "breasts": ("exam_id", "laterality", "cancer", "histology", "presentation", "pathology"),
    "lesions": (
        "lesion_id", "image_id", "exam_id", "laterality", "presentation", "pathology",
        "histology", "row_px", "col_px", "radius_px",
    ),
    "annotations": ("image_id", "version", "source", "author", "mask_path", "note", "parent"),
    "readers": ("reader", "kind", "synthetic"),
    "reads": ("reader", "level", "case_id", "exam_id", "laterality", "image_id", "score", "recall"),
    "density": (
        "source", "level", "case_id", "exam_id", "laterality", "image_id", "category", "score",
        "p0", "p1", "p2", "p3",
    ),
    "models": ("model", "kind", "checkpoint", "parent", "description", "synthetic", "preprocess"),
    "predictions": (
        "model", "level", "case_id", "exam_id", "laterality", "image_id", "malignant", "benign",
        "saliency_path", "patch_boxes",
    ),
    "testsets": ("name", "rule"),
    "testset_exams": ("name", "exam_id"),
    "filter_results": (
        "image_id", "method", "params_hash", "annotation_version", "healthy_region", "auc",
        "n_tumour", "n_healthy",
    ),
    "runs": (
        "run_id", "kind", "params", "code_version", "status", "started_at", "ended_at",
        "progress_done", "progress_total", "message", "ingested", "chunks", "error", "folder",
    ),
    "train_epochs": ("run_id", "epoch", "train_loss", "val_loss", "val_auc", "lr", "images",
                     "elapsed_s"),
    "reader_studies": ("study", "level", "store_cases", "rating_scale", "description",
                       "synthetic"),
    "study_cases": ("study", "case_id", "truth"),
    "study_readers": ("study", "reader", "kind"),
    "study_reads": ("study", "reader", "modality", "case_id", "rating"),
}

PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "datasets": ("dataset",),
    "exams": ("exam_id",),
    "images": ("image_id",),
    "breasts": ("exam_id", "laterality"),
    "lesions": ("lesion_id",),
    "annotations": ("image_id", "version"),
    "readers": ("reader",),
    "reads": ("reader", "level", "case_id"),
    "density": ("source", "level", "case_id"),
    "models": ("model",),
    "predictions": ("model", "level", "case_id"),
    "testsets": ("name",),
    "testset_exams": ("name", "exam_id"),
    "filter_results": ("image_id", "method", "params_hash", "annotation_version"),
    "runs": ("run_id",),
    "train_epochs": ("run_id", "epoch"),
    "reader_studies": ("study",),
    "study_cases": ("study", "case_id"),
    "study_readers": ("study", "reader"),
    "study_reads": ("study", "reader", "modality", "case_id"),
}
