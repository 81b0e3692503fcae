"""Reader studies: readers x modalities x cases, each read a rating, the truth per case.

Four tables (`core.store.schema.STUDY_TABLES`): ``reader_studies`` (the study, its level, whether
its case ids are the store's cases), ``study_cases`` (truth per case), ``study_readers`` (each
reader's kind: a radiologist, or a model entered as a fixed reader) and ``study_reads`` (one
rating per read; a read that was never made has no row, so split-plot designs and missing
reads need no filler value).

Why beside ``reads`` and not a modality column on it: ``reads`` holds one clinical read per
(reader, case) with recall decisions, the complement page's input, keyed without a modality; a
study is a designed experiment of its own, which may use cases the store does not hold (an
iMRMC file) and several conditions per reader. Adding columns to ``reads`` would change its key
and every query of it. A study built from the store's reads copies them as its ``unaided``
modality (`core.importers.reader_study.import_store_reads`), so ``reads`` and the complement
page stay exactly as they were.
"""
from __future__ import annotations

from collections.abc import Sequence

import duckdb
import pandas as pd

from core.errors import InputError
from core.store.schema import STUDY_TABLES
from core.vocabulary import LEVELS

READER_KINDS = ("radiologist", "model")
STUDY_READ_COLUMNS = ("study", "reader", "reader_kind", "modality", "case_id", "rating", "truth")


def study_delete_plan(study: str, *, readers: Sequence[str] | None = None,
                      modalities: Sequence[str] | None = None) -> list[dict]:
    """``write_tables(delete=...)`` entries removing a study (children first), or, with
    ``readers`` and ``modalities``, only those readers' reads in those modalities."""
    if readers is not None or modalities is not None:
        match = {"study": study}
        if readers is not None:
            match["reader"] = list(readers)
        if modalities is not None:
            match["modality"] = list(modalities)
        return [{"table": "study_reads", "match": match}]
    return [{"table": t, "match": {"study": study}} for t in reversed(STUDY_TABLES)]


def reader_studies(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return con.execute("""
        SELECT s.study, s.level, s.store_cases, s.rating_scale, s.description, s.synthetic,
               s.created_at,
               (SELECT count(*) FROM study_readers r WHERE r.study = s.study) AS n_readers,
               (SELECT count(DISTINCT modality) FROM study_reads x
                WHERE x.study = s.study) AS n_modalities,
               (SELECT count(*) FROM study_cases c WHERE c.study = s.study) AS n_cases,
               (SELECT count(*) FROM study_reads x WHERE x.study = s.study) AS n_reads,
               (SELECT string_agg(DISTINCT modality, ',' ORDER BY modality) FROM study_reads x
                WHERE x.study = s.study) AS modalities
        FROM reader_studies s ORDER BY s.study""").df()


def study_reads(con: duckdb.DuckDBPyConnection, study: str, level: str | None,
                modalities: Sequence[str] | None) -> pd.DataFrame:
    """The long frame of `Store.study_reads` (its docstring has the columns and rules)."""
    rows = con.execute("SELECT level, store_cases FROM reader_studies WHERE study = ?",
                       [study]).fetchall()
    if not rows:
        known = [s for (s,) in con.execute(
            "SELECT study FROM reader_studies ORDER BY study").fetchall()]
        raise InputError(f"reader study {study!r} does not exist; known: "
                         f"{', '.join(known) or 'none yet (import one)'}")
    own_level, store_cases = rows[0]
    level = own_level if level is None else level
    if level not in LEVELS:
        raise InputError(f"level {level!r} is not one of {', '.join(LEVELS)}")
    if LEVELS.index(level) < LEVELS.index(own_level) or (level != own_level
                                                         and not store_cases):
        raise InputError(
            f"reader study {study!r} was read at {own_level} level"
            + ("" if store_cases else " on cases of its own") + f"; level {level!r} is not "
            f"available: pass level {own_level!r}"
            + (" or a coarser one" if store_cases else ""))
    params: list = [study]
    where = "x.study = ?"
    if modalities is not None:
        where += " AND x.modality IN (SELECT unnest(?::VARCHAR[]))"
        params.append(list(modalities))
    if level == own_level:
        sql = f"""
            SELECT x.study, x.reader, r.kind AS reader_kind, x.modality, x.case_id, x.rating,
                   c.truth
            FROM study_reads x JOIN study_cases c USING (study, case_id)
            JOIN study_readers r USING (study, reader) WHERE {where}"""
    else:
        # A coarser case's rating is the highest of its parts' ratings (as model scores are
        # aggregated by max), its truth the store's label at that level.
        coarse = "k.exam_id || '/' || k.laterality" if level == "breast" else "k.exam_id"
        sql = f"""
            SELECT x.study, x.reader, r.kind AS reader_kind, x.modality, {coarse} AS case_id,
                   max(x.rating) AS rating, any_value(t.label)::TINYINT AS truth
            FROM study_reads x JOIN study_readers r USING (study, reader)
            JOIN cases k ON k.level = ? AND k.case_id = x.case_id
            JOIN cases t ON t.level = ? AND t.case_id = {coarse}
            WHERE {where} GROUP BY ALL"""
        params = [own_level, level, *params]
    frame = con.execute(f"SELECT * FROM ({sql}) ORDER BY modality, reader, case_id",
                        params).df()
    frame["truth"] = frame["truth"].astype("Int8")
    return frame[list(STUDY_READ_COLUMNS)]
