"""Annotation masks: files the store owns, one per (image, version), never overwritten.

A new version is the image's newest plus one and gets a file name no other version uses, so a
mask is written before its row lands and a failed write leaves an unreferenced file at worst,
never a wrong annotation.
"""
from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from core.errors import InputError
from core.store import catalogue

ANNOTATION_COLUMNS = ["image_id", "version", "source", "author", "mask_path", "note", "parent"]


def annotation_mask_path(image_id: str, version: int) -> Path:
    """Where annotation ``version`` of an image lives, relative to the store's files folder."""
    return Path("masks") / _safe_name(image_id) / f"v{version}.png"


def insert_annotation(con: duckdb.DuckDBPyConnection, files_dir: Path, image_id: str,
                      mask: np.ndarray, *, source: str, author: str | None,
                      note: str | None, parent: int | None = None) -> int:
    """Write the image's next mask version and its row (inside the caller's transaction);
    the file is removed again if the row cannot be inserted. Returns the version.
    ``parent`` must be one of the image's versions (the one this mask was edited from)."""
    from core.io.pixels import write_mask  # PIL loads with the first mask, not the store

    versions = [v for (v,) in con.execute(
        "SELECT version FROM annotations WHERE image_id = ? ORDER BY version",
        [image_id]).fetchall()]
    if parent is not None and parent not in versions:
        raise InputError(f"parent version {parent} of {image_id} does not exist (versions: "
                         f"{', '.join(map(str, versions)) or 'none'}); pass one of them or None")
    version = (versions[-1] if versions else 0) + 1
    rel = annotation_mask_path(image_id, version)
    target = files_dir / rel
    write_mask(target, mask)
    try:
        con.execute(
            "INSERT INTO annotations (image_id, version, source, author, mask_path, note, parent)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [image_id, version, source, author, rel.as_posix(), note, parent])
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return int(version)


def stage_mask_files(con: duckdb.DuckDBPyConnection, files_dir: Path,
                     masks: dict[str, np.ndarray], *, source: str, author: str | None,
                     note: str | None) -> pd.DataFrame:
    """Write each image's next mask version and return the ``annotations`` rows for them
    (``ANNOTATION_COLUMNS``), for the caller to write in its own transaction."""
    from core.io.pixels import write_mask

    if not masks:
        return pd.DataFrame(columns=ANNOTATION_COLUMNS)
    current = con.execute("""SELECT image_id, max(version) AS v FROM annotations
                             WHERE image_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY 1""",
                          [list(masks)]).df()
    latest = dict(zip(current["image_id"], current["v"]))
    rows = []
    for image_id, mask in masks.items():
        version = int(latest.get(image_id, 0)) + 1
        rel = annotation_mask_path(image_id, version)
        write_mask(files_dir / rel, mask)
        rows.append((image_id, version, source, author, rel.as_posix(), note, None))
    return pd.DataFrame(rows, columns=ANNOTATION_COLUMNS)


class StoreAnnotations:
    """`Store` verbs for annotation versions and their mask files (see the module doc)."""

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
            return insert_annotation(con, self.files_dir, image_id, mask, source=source,
                                     author=author, note=note, parent=parent)

    def stage_masks(self, masks: dict[str, np.ndarray], *, source: str,
                    author: str | None = None, note: str | None = None) -> pd.DataFrame:
        """Write mask files for a bulk import and return their ``annotations`` rows.

        Versions continue after each image's newest one. The rows go into the caller's
        ``write_tables`` call, so masks and the rest of a file land in one transaction; a
        file whose rows never land is an unreferenced leftover, never a wrong annotation.
        Columns: image_id, version, source, author, mask_path, note, parent.
        """
        with self.connection() as con:
            return stage_mask_files(con, self.files_dir, masks, source=source,
                                    author=author, note=note)

    def load_mask(self, mask_path: str) -> np.ndarray:
        """An annotation's mask (bool array) from its stored relative path."""
        from core.io.pixels import read_mask

        return read_mask(self.files_dir / mask_path)


def _safe_name(identifier: str) -> str:
    """A readable folder name that no other image id shares: ``a/b_c`` and ``a_b/c`` read
    alike once ``/`` becomes ``_``, so a short digest of the id itself follows."""
    import hashlib

    readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in identifier)
    return f"{readable}-{hashlib.sha256(identifier.encode()).hexdigest()[:10]}"
