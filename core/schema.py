"""The store's schema, its version, and the migrations that bring older files up to date.

Identifiers are text and global: ``exam_id = "<dataset>/<exam key>"``, ``image_id =
"<exam_id>/<L|R>-<view>"`` for files named that way or ``"<dataset>/<file stem>"`` otherwise.
A *case* is what a score or label belongs to at one level: ``case_id`` is the image_id (image
level), ``"<exam_id>/<L|R>"`` (breast level) or the exam_id (exam level). See `core.cases`.

Pixels stay in files: ``images.path`` is relative to ``datasets.root``; masks, saliency maps and
display copies live under the store's files folder (``Store.files_dir``) with relative paths.
"""
from __future__ import annotations

SCHEMA_VERSION = 1

LEVELS = ("image", "breast", "exam")
LATERALITIES = ("L", "R")
VIEWS = ("CC", "MLO", "other")
HISTOLOGIES = ("ILC", "IDC", "other", "none", "unknown")
PRESENTATIONS = (
    "mass", "spiculated mass", "architectural distortion", "asymmetry", "calcification",
    "ill-defined", "none",
)
PATHOLOGIES = ("malignant", "benign", "none")
ANNOTATION_SOURCES = ("radiologist", "drawn", "imported", "derived")
DENSITY_SOURCES = ("label", "classical", "nyu-histogram", "imported")

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
    patient VARCHAR,                     -- salted-hash pseudonym, never a real identifier
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
    PRIMARY KEY (source, level, case_id)
);

CREATE TABLE models (
    model VARCHAR PRIMARY KEY,
    kind VARCHAR NOT NULL,               -- gmic | classical | external | ...
    checkpoint VARCHAR,
    parent VARCHAR,
    description VARCHAR,
    synthetic BOOLEAN NOT NULL DEFAULT false,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
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
    PRIMARY KEY (model, level, case_id)
);

CREATE TABLE testsets (
    name VARCHAR PRIMARY KEY,
    rule VARCHAR NOT NULL,               -- the rule that made it (see core.testsets)
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE testset_exams (
    name VARCHAR NOT NULL,
    exam_id VARCHAR NOT NULL,
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
"""

# MIGRATIONS[v] upgrades a file at version v to v + 1 (SQL run inside one transaction).
MIGRATIONS: dict[int, str] = {}

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
    "annotations": ("image_id", "version", "source", "author", "mask_path", "note"),
    "readers": ("reader", "kind", "synthetic"),
    "reads": ("reader", "level", "case_id", "exam_id", "laterality", "image_id", "score", "recall"),
    "density": (
        "source", "level", "case_id", "exam_id", "laterality", "image_id", "category", "score",
        "p0", "p1", "p2", "p3",
    ),
    "models": ("model", "kind", "checkpoint", "parent", "description", "synthetic"),
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
}
