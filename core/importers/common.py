"""What every importer shares: ids, safe paths, the stored snapshot, batched writes, masks.

An importer turns each input file into rows (``{table: [row dict, ...]}``, a `FileRows`),
validating everything it reads; bad input raises `InputError`, and that file is reported as
*failed* with the one-line message and contributes nothing. A file whose rows are all already
stored with the same values (`Snapshot.unchanged`) is *skipped*: that is what makes every
importer idempotent without an "already imported" table.

`Batch` collects the validated files and writes them with one `Store.write_tables` call per
batch (default 500 files): one transaction holding the rows *and* the test sets they change, so
files land whole or not at all and a kill never leaves a set stale. Batching matters because
each upsert statement costs ~5-10 ms in DuckDB here (MIAS: 24 s with one transaction per image,
~5 s batched). Files an importer writes itself (masks, pulled pixel copies) are written before
the transaction and removed if it fails.

The store file is locked only while a connection is open, so an importer reads its `Snapshot`
in one short operation and does the slow work (decoding, hashing, pixel copies) holding no
connection: other processes (the app, ``info``) wait at most one batch's insert, never the import.
`finish` re-checks the test sets, so a re-import that finds every file unchanged still repairs a
set that an older, interrupted import left stale.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from core.errors import InputError
from core.importers import FileOutcome, ImportReport
from core.store.schema import PRIMARY_KEYS, TABLE_COLUMNS
from core.vocabulary import LATERALITIES
from core.store import annotation_mask_path, Store

__all__ = [
    "DATASET_NAME", "check_dataset", "exam_id_for", "image_id_for", "parse_image_name",
    "parse_laterality", "safe_relative", "frame", "stored_rows", "Snapshot", "Skipped",
    "FileRows", "Batch", "finish", "disk_mask", "annotation_rows",
    "raster_record", "correct_laterality", "escaped_name", "check_utf8_folder", "NOT_UTF8",
]

DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# <exam>_<L|R>_<CC|MLO>, <exam>_<L|R>-<CC|MLO>, optionally _<n> (a repeat): the metarepository's
# and CSAW's file names (CSAW: <patient>_<date>_<L|R>_<CC|MLO>_<n>).
IMAGE_NAME = re.compile(
    r"^(?P<exam>.+?)[_-](?P<lat>[LR])[_-](?P<view>CC|MLO)(?:[_-](?P<n>\d+))?$", re.IGNORECASE)
_LATERALITY_WORDS = {"l": "L", "left": "L", "r": "R", "right": "R"}
NOT_UTF8 = "the name is not valid UTF-8 (the store keeps names as text); rename it"


# ---------------------------------------------------------------------------- ids and names
def check_dataset(name: str) -> str:
    """A dataset name: 1-64 characters of letters, digits, ``._-``; it starts every id."""
    if not isinstance(name, str) or not DATASET_NAME.match(name):
        raise InputError(f"dataset name {name!r} is not usable; use 1-64 letters, digits, "
                         "'.', '_' or '-' (no spaces or '/'), e.g. 'mias'")
    return name


def exam_id_for(dataset: str, exam_key: str) -> str:
    return f"{dataset}/{exam_key}"


def image_id_for(dataset: str, exam_key: str, laterality: str, view: str) -> str:
    """``<exam_id>/<L|R>-<view>``: the id of an image named by exam, side and view."""
    return f"{exam_id_for(dataset, exam_key)}/{laterality}-{view}"


def parse_image_name(stem: str) -> tuple[str, str, str, int] | None:
    """``(exam_key, laterality, view, repeat)`` from ``0_L_CC``/``0_L-CC``/``p_2099_R_MLO_2``."""
    match = IMAGE_NAME.match(stem)
    if match is None:
        return None
    return (match["exam"], match["lat"].upper(), match["view"].upper(),
            int(match["n"]) if match["n"] else 1)


def parse_laterality(value) -> str | None:
    """'L'/'R' from L, R, left, right (any case); None for anything else."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return _LATERALITY_WORDS.get(str(value).strip().lower())


def escaped_name(name: str) -> str:
    """``name`` as printable UTF-8, bytes that are not UTF-8 shown as ``\\udcXX`` escapes.

    Linux names are bytes; Python keeps undecodable ones as lone surrogates, which neither
    DuckDB nor a UTF-8 stdout can encode. ``escaped_name(n) != n`` tells such a name.
    """
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def check_utf8_folder(root: Path) -> Path:
    """``root`` if its path is valid UTF-8 (stored as ``datasets.root``), else `InputError`."""
    shown = escaped_name(str(root))
    if shown != str(root):
        raise InputError(f"folder {shown}: {NOT_UTF8}")
    return root


def safe_relative(root: Path, rel: str) -> Path:
    """``root / rel`` for a relative path that stays inside ``root`` (manifest paths).

    Absolute paths, drive letters, ``..`` segments and symbolic links that lead outside
    ``root`` are refused: a manifest must not make the importer read files elsewhere.
    """
    text = str(rel).replace("\\", "/").strip()
    pure = PurePosixPath(text)
    if not text or pure.is_absolute() or re.match(r"^[A-Za-z]:", text) or ".." in pure.parts:
        raise InputError(f"manifest path {text!r} is absolute or climbs out of the image folder "
                         "with '..'; give paths relative to the folder")
    path = root / pure
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        raise InputError(f"manifest path {text!r} leads outside the image folder "
                         "(a symbolic link?); give paths inside it") from None
    return path


# ---------------------------------------------------------------------------- rows
def frame(table: str, rows: Iterable[dict]) -> pd.DataFrame:
    """Rows (dicts) as a DataFrame with exactly the table's columns; missing keys and NaN -> NULL.

    A full row on purpose: `Store.write_tables` replaces whole rows, so a column left out
    must be NULL rather than keep a stale value.
    """
    columns = list(TABLE_COLUMNS[table])
    rows = list(rows)
    unknown = {k for row in rows for k in row} - set(columns)
    if unknown:  # a programming error, not bad input
        raise KeyError(f"columns {sorted(unknown)} are not in table {table}")
    return pd.DataFrame([[None if _missing(row.get(c)) else row.get(c) for c in columns]
                         for row in rows], columns=columns, dtype=object)


def _missing(value) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _norm(value):
    """A comparable plain value: None for every kind of missing, dates as ISO text."""
    if _missing(value):
        return None
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, datetime):  # pd.Timestamp too; DATE columns come back as midnight
        if value.time() == datetime.min.time():
            return value.date().isoformat()
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _same(a, b) -> bool:
    a, b = _norm(a), _norm(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)
    return a == b


def _key(table: str, row: dict) -> tuple:
    return tuple(str(_norm(row.get(c))) for c in PRIMARY_KEYS[table])


def stored_rows(store: Store, table: str, keys: pd.DataFrame) -> pd.DataFrame:
    """The stored rows of ``table`` whose primary key appears in ``keys`` (normalised keys)."""
    if keys.empty:
        return frame(table, [])
    return store.rows(table, keys.assign(**{c: [None if _missing(v) else _norm(v)
                                                  for v in keys[c]]
                                             for c in PRIMARY_KEYS[table]}))


class Snapshot:
    """What a dataset already has in ``tables``, read once per import (one query per table).

    Comparing a file's rows with this snapshot tells whether re-importing it would change
    anything (`unchanged`) without a query per file. Name only the tables the importer writes
    (a dataset's predictions can run to millions of rows). Readers are global: the snapshot
    holds all of them.
    """

    def __init__(self, store: Store, dataset: str, tables: Sequence[str]):
        self._rows: dict[str, dict[tuple, dict]] = {t: {} for t in ("annotations", "lesions")}
        with store.connection():  # one short read; the import's slow work holds no connection
            for table in tables:
                rows = (store.select(table) if table == "readers"        # readers are global
                        else store.select(table, dataset=dataset))
                self._rows[table] = {_key(table, r): r for r in rows.to_dict("records")}
        self._by_image: dict[tuple[str, str], list[dict]] = {}
        for table in ("annotations", "lesions"):
            for row in sorted(self._rows[table].values(),
                              key=lambda r: r.get("version") or r.get("lesion_id")):
                self._by_image.setdefault((table, row["image_id"]), []).append(row)

    def get(self, table: str, **key) -> dict | None:
        """The stored row of ``table`` with this primary key, or None."""
        return self._rows[table].get(_key(table, key))

    def rows(self, table: str) -> list[dict]:
        return list(self._rows[table].values())

    def of_image(self, table: str, image_id: str) -> list[dict]:
        """An image's stored 'annotations' (oldest version first) or 'lesions' rows."""
        return self._by_image.get((table, image_id), [])

    def unchanged(self, rows: dict[str, list[dict]]) -> bool:
        """True when every row is already stored with the same values (missing keys = NULL)."""
        for table, new in rows.items():
            stored = self._rows[table]
            for row in new:
                old = stored.get(_key(table, row))
                if old is None or not all(_same(row.get(c), old[c])
                                          for c in TABLE_COLUMNS[table]):
                    return False
        return True


# ---------------------------------------------------------------------------- batched writes
@dataclass(frozen=True)
class Skipped:
    """A file that needs no write; ``reason`` is one line."""

    reason: str


@dataclass
class FileRows:
    """Everything one input file adds to the store.

    rows : {table: [row dict, ...]}; missing columns are NULL.
    new_files : files written for this input (masks, pixel copies), removed if the write fails.
    replace : (table, column, value): stored rows with ``column = value`` are deleted first,
        in the same transaction (e.g. an image's lesions, so a finding removed at the source
        disappears).
    note : a one-line remark for the report (e.g. "3 rows with NaN scores skipped").
    """

    rows: dict[str, list[dict]]
    new_files: list[Path] = field(default_factory=list)
    replace: list[tuple[str, str, str]] = field(default_factory=list)
    note: str = ""

    @property
    def n_rows(self) -> int:
        return sum(len(r) for r in self.rows.values())


class Batch:
    """Validated files queued for one transaction; use as ``with Batch(store, report) as b:``.

    `run` executes a file's job: `InputError` or `OSError` -> failed (one line), `Skipped` ->
    skipped, `FileRows` -> queued and reported imported; `flush` writes the queue with one
    `Store.write_tables` call (rows deduplicated on the primary key, last file wins; the test
    sets refreshed in the same transaction). If that write fails, every queued file is
    re-reported as failed and its new files are removed.
    """

    def __init__(self, store: Store, report: ImportReport, *, size: int = 500):
        self.store, self.report, self.size = store, report, size
        self._queue: list[tuple[int, FileRows]] = []

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.flush()
        else:
            self._discard(f"not written: the import stopped ({exc_type.__name__})")

    def run(self, name: str, job: Callable[[], FileRows | Skipped]) -> None:
        """Run one file's job; whatever the file does, only that file fails (one line): a name
        that is not UTF-8 fails unrun, and a parser's RecursionError or MemoryError fails it."""
        shown = escaped_name(name)
        if shown != name:  # it would abort the batch's transaction, so it never reaches it
            self.report.add(shown, "failed", f"{shown}: {NOT_UTF8}")
            return
        try:
            result = job()
        except InputError as exc:
            self.report.add(name, "failed", _one_line(str(exc)))
            return
        except OSError as exc:  # unreadable input (permissions, a broken link), or a full disk
            self.report.add(name, "failed", f"{name}: cannot read or write a file "
                                            f"({exc.strerror or type(exc).__name__})")
            return
        except (RecursionError, MemoryError) as exc:  # a decoder's last resort; checks come first
            self.report.add(name, "failed", f"{name}: too deeply nested or too large to read "
                                            f"({type(exc).__name__}); the file is corrupt or "
                                            "hostile")
            return
        if isinstance(result, Skipped):
            self.report.add(name, "skipped", result.reason)
            return
        self.report.add(name, "imported", result.note, result.n_rows)
        self._queue.append((len(self.report.outcomes) - 1, result))
        if len(self._queue) >= self.size:
            self.flush()

    def flush(self) -> None:
        if not self._queue:
            return
        merged: dict[str, dict[tuple, dict]] = {}
        replace: dict[tuple[str, str], list[str]] = {}
        for _, item in self._queue:
            for table, rows in item.rows.items():
                bucket = merged.setdefault(table, {})
                for row in rows:
                    bucket[_key(table, row)] = row
            for table, column, value in item.replace:
                replace.setdefault((table, column), []).append(value)
        frames = {t: frame(t, rows.values()) for t, rows in merged.items() if rows}
        delete = [{"table": t, "match": {c: values}} for (t, c), values in replace.items()]
        try:
            self.store.write_tables(frames, delete=delete, refresh_testsets=True)
        except InputError as exc:
            self._discard(f"store write failed: {_one_line(str(exc))}")
            return
        except BaseException:
            self._discard("store write failed")
            raise
        self._queue.clear()

    def _discard(self, reason: str) -> None:
        for index, item in self._queue:
            for path in item.new_files:
                Path(path).unlink(missing_ok=True)
            self.report.outcomes[index] = FileOutcome(
                self.report.outcomes[index].file, "failed", reason)
        self._queue.clear()


def finish(store: Store, report: ImportReport) -> ImportReport:
    """After an import: repair any stale test set (each batch refreshed its own already).

    Why: an import interrupted before its sets were refreshed (or one from an older ILCscope)
    would otherwise stay stale for good, since a re-import skips every unchanged file.
    Reads only when every set is current.
    """
    store.refresh_testsets()
    return report


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:400]


# ---------------------------------------------------------------------------- masks
def disk_mask(shape: tuple[int, int], circles: Iterable[tuple[float, float, float]]) -> np.ndarray:
    """Boolean mask of the union of discs ``(row, col, radius)`` (pixels), clipped to ``shape``."""
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, dtype=bool)
    for row, col, radius in circles:
        mask |= (rows - row) ** 2 + (cols - col) ** 2 <= radius ** 2
    return mask


def annotation_rows(store: Store, snapshot: Snapshot, image_id: str, mask: np.ndarray, *,
                    source: str, author: str | None,
                    note: str | None) -> tuple[list[dict], list[Path]]:
    """The annotation row (and mask file) for ``mask``, or nothing if it is already the latest.

    A new version is ``max(version) + 1`` and never replaces an old one; when the latest stored
    version holds the identical mask, no row is made (re-imports add no versions). The mask
    file is written now; put the returned paths in the file's `FileRows.new_files`.
    """
    from core.io.pixels import read_mask, write_mask

    versions = snapshot.of_image("annotations", image_id)
    if versions:
        path = store.files_dir / versions[-1]["mask_path"]
        if path.is_file() and np.array_equal(read_mask(path), mask > 0):
            return [], []
    version = int(versions[-1]["version"]) + 1 if versions else 1
    rel = annotation_mask_path(image_id, version)  # the layout `Store.add_annotation` uses
    target = store.files_dir / rel
    write_mask(target, mask)
    row = {"image_id": image_id, "version": version, "source": source, "author": author,
           "mask_path": rel.as_posix(), "note": note}
    return [row], [target]


# ---------------------------------------------------------------------------- laterality
_PATHOLOGY_RANK = {"malignant": 2, "benign": 1, "none": 0}
_HISTOLOGY_RANK = {"ILC": 4, "IDC": 3, "other": 2, "unknown": 1, "none": 0}


def correct_laterality(store: Store, image_id: str, laterality: str) -> dict:
    """Set an image's laterality by hand (``laterality_source = 'corrected'``), in one transaction.

    Why: laterality can be wrong at the source (mini-MIAS' README and film markers disagree; a
    DICOM tag can be mis-set). Everything keyed by the image follows it: its lesions and the
    ``laterality`` column of its image-level predictions, reads and density rows. Breast labels
    follow the image when it was its side's only image (the breast row moves, or merges into an
    existing row on the other side: worst pathology, highest histology, cancer = max,
    presentations joined); when other images stay on the old side, the old row stays and the
    new side gets a copy of its labels if it had no row. Breast-level predictions and reads
    stay on their case ids (re-import them if the move changes them). Re-imports keep the
    correction: importers never overwrite a 'corrected' laterality.

    Returns a dict: image_id, from, to, breasts ('moved' | 'merged' | 'copied' | 'kept').
    """
    new = parse_laterality(laterality)
    if new is None:
        raise InputError(f"laterality {laterality!r} is not L or R; pass L or R")
    image = store.image(image_id)
    old, exam_id = image["laterality"], image["exam_id"]
    with store.connection():
        images = stored_rows(store, "images", pd.DataFrame({"image_id": [image_id]}))
        row = images.iloc[0].to_dict()
        if old == new and row["laterality_source"] == "corrected":
            return {"image_id": image_id, "from": old, "to": new, "breasts": "kept"}
        row.update(laterality=new, laterality_source="corrected")
        frames: dict[str, pd.DataFrame] = {"images": frame("images", [row])}
        delete: list[dict] = []
        action = "kept"
        if old != new:
            siblings = store.images(dataset=image["dataset"])
            siblings = siblings[(siblings["exam_id"] == exam_id)
                                & (siblings["image_id"] != image_id)]
            old_alone = not (siblings["laterality"] == old).any()
            breasts = stored_rows(store, "breasts", pd.DataFrame(
                {"exam_id": [exam_id, exam_id], "laterality": list(LATERALITIES)}))
            by_side = {r["laterality"]: r for r in breasts.to_dict("records")}
            source, target = by_side.get(old), by_side.get(new)
            if source is None and target is None:  # keep the image a case: an unlabelled breast
                frames["breasts"] = frame("breasts", [{"exam_id": exam_id, "laterality": new,
                                                       "histology": "unknown"}])
            if source is not None:
                if target is None:
                    moved = dict(source, laterality=new)
                    action = "moved" if old_alone else "copied"
                elif old_alone:
                    moved, action = _merge_breasts(target, source), "merged"
                else:
                    moved = None
                if moved is not None:
                    frames["breasts"] = frame("breasts", [moved])
                if old_alone:
                    delete.append({"table": "breasts",
                                   "match": {"exam_id": exam_id, "laterality": old}})
            lesions = store.lesions(image_id=image_id)
            if not lesions.empty:
                lesions["laterality"] = new
                frames["lesions"] = frame("lesions", lesions[list(TABLE_COLUMNS["lesions"])]
                                          .to_dict("records"))
            for table in ("predictions", "reads", "density"):
                rows = _image_level_rows(store, table, image_id)
                if not rows.empty:
                    rows["laterality"] = new
                    frames[table] = frame(table, rows.to_dict("records"))
        store.write_tables(frames, delete=delete)
    return {"image_id": image_id, "from": old, "to": new, "breasts": action}


def _merge_breasts(target: dict, source: dict) -> dict:
    merged = dict(target)
    cancers = [v for v in (target["cancer"], source["cancer"]) if not _missing(v)]
    merged["cancer"] = max(cancers) if cancers else None
    merged["pathology"] = max((target["pathology"], source["pathology"]),
                              key=lambda p: _PATHOLOGY_RANK.get(p, -1))
    merged["histology"] = max((target["histology"], source["histology"]),
                              key=lambda h: _HISTOLOGY_RANK.get(h, -1))
    parts = [p.strip() for v in (target["presentation"], source["presentation"])
             if not _missing(v) for p in str(v).split(",") if p.strip()]
    parts = [p for p in dict.fromkeys(parts) if p != "none"] or (["none"] if parts else [])
    merged["presentation"] = ",".join(parts) if parts else None
    return merged


def _image_level_rows(store: Store, table: str, image_id: str) -> pd.DataFrame:
    """Image-level rows of predictions / reads / density for one image (all columns)."""
    return store.select(table, level="image", image_id=image_id)


# ---------------------------------------------------------------------------- raster files
def raster_record(path: Path, known: dict | None = None) -> dict:
    """Geometry and hash of a PNG/PGM file, decoding it whole (a truncated file fails here).

    Returns images columns: sha256, height, width, bit_depth, photometric ('MONOCHROME2':
    PNG/PGM mammograms are stored brighter = denser). ``known`` is the image's stored row:
    when its sha256 matches the file, the stored geometry is reused and nothing is decoded
    (the file was validated when it was first imported), which keeps re-imports fast.
    """
    from core.io.pixels import bit_depth, sha256_file
    from core.io.images import read_pixels, sniff_format

    digest = sha256_file(path)
    fields = ("height", "width", "bit_depth", "photometric")
    if known is not None and known.get("sha256") == digest and \
            not any(_missing(known.get(f)) for f in fields):
        return {"sha256": digest, **{f: _norm(known[f]) for f in fields}}
    kind = sniff_format(path)
    if kind not in ("png", "pgm"):
        raise InputError(f"{path.name}: a {kind} file where a PNG or PGM image was expected")
    pixels = read_pixels(path)
    if pixels.ndim != 2:
        raise InputError(f"{path.name}: image has shape {pixels.shape}; expected one grey plane")
    return {"sha256": digest, "height": int(pixels.shape[0]), "width": int(pixels.shape[1]),
            "bit_depth": bit_depth(pixels), "photometric": "MONOCHROME2"}
