"""The derived ``cases`` table: its SQL, and its update for the exams a write touched.

Each ``cases`` row (and each test-set membership, `core.store.testsets`) is a function of one
exam's own rows: its exam, images and breasts, its 'label' exam density and the sets holding
it. So a write collects the exams whose rows it changed (`touched_by_delete`,
`touched_by_upsert`) and re-derives only those, in its own transaction: their members
(`core.store.testsets.update_derived`), then their ``cases`` rows (`update_cases`). An import
then costs the same whatever the store holds (bench/store.py). `rebuild_cases` derives the
whole table from scratch: for migrations and the tests' reference
(`core.store.testsets.rebuild_derived`), and the cheaper way once a write touched a large
share of the exams.

Appended rows can leave the table out of (level, case_id) order; a full rebuild restores it,
and readers sort when they find it broken (`core.store.truth.read_truth`).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import duckdb
import pandas as pd

from core.store.match import keys_sql, match_sql
from core.store.schema import (CASE_SOURCES, HISTOLOGY_PRIORITY, PRIMARY_KEYS, RENEW_TRUTH_TOKEN,
                               case_hash_sql, exam_hash_sql)

# Touched exams / all exams from which `update_cases` rebuilds the whole table instead: about
# as fast by then, and it puts the rows back in case order.
REBUILD_SHARE = 0.25
TOUCHED = "_touched_exams"  # the name `touched_relation` registers exam ids under
# Of a table's rows, those that reach ``cases`` and the rules (all, for tables not named).
_DERIVED_FROM = {"density": "source = 'label' AND level = 'exam'"}


def _histology_sql(column: str) -> str:
    """The highest-priority histology among ``column`` (`HISTOLOGY_PRIORITY`); 'none' only if
    every row is 'none', else 'unknown' when nothing ranks above it."""
    ranked = [h for h in reversed(HISTOLOGY_PRIORITY) if h not in ("none", "unknown")]
    whens = "\n".join(f"                WHEN bool_or({column} = '{h}') THEN '{h}'" for h in ranked)
    return (f"CASE{whens[len('               '):]}\n"
            f"                WHEN bool_and({column} = 'none') THEN 'none'\n"
            f"                ELSE 'unknown' END")


def _of(alias: str, exams: str | None) -> str:
    """SQL true for rows ``alias`` whose exam_id is in the relation ``exams`` (None: every row)."""
    return f"{alias}.exam_id IN (SELECT exam_id FROM {exams})" if exams else "TRUE"


def _density_label(exams: str | None) -> str:
    """The 'label' exam density by exam_hash: the default stratum, kept with each case."""
    return (f"SELECT exam_hash, category AS density_label FROM density d WHERE level = 'exam' "
            f"AND source = 'label' AND {_of('d', exams)}")


def exam_truth_select(exams: str | None = None) -> str:
    """The exam-level truth of the exams in relation ``exams`` (None: all): exam_id,
    exam_hash, dataset, split, label (positive if any breast is), histology (by
    `HISTOLOGY_PRIORITY`), presentation (every breast's, comma-separated)."""
    return f"""
        SELECT e.exam_id, {exam_hash_sql("e.exam_id")} AS exam_hash, e.dataset, e.split,
               h.label, h.histology, h.presentation
        FROM exams e JOIN (
            SELECT b.exam_id, max(b.cancer) AS label,
                   {_histology_sql('b.histology')} AS histology,
                   string_agg(b.presentation, ',') AS presentation
            FROM breasts b WHERE {_of('b', exams)} GROUP BY b.exam_id) h USING (exam_id)
        WHERE {_of('e', exams)}"""


def exam_rules_select(exams: str) -> str:
    """`exam_truth_select` with each exam's ``density_label``: what a test-set rule filters
    (`core.store.testsets`), as in the exam's ``cases`` row, before that row is updated."""
    return (f"SELECT t.*, dn.density_label FROM ({exam_truth_select(exams)}) t "
            f"LEFT JOIN ({_density_label(exams)}) dn USING (exam_hash)")


def cases_select(exams: str | None = None) -> str:
    """The ``cases`` rows of the exams in relation ``exams`` (None: all), in (level, case_id)
    order: a full rebuild leaves the table in that order, which a single-table scan keeps
    (readers sort only when appended rows broke it). An image needs its breast's row."""
    return f"""
    SELECT c.*, coalesce(m.testset_ids, []::INTEGER[]) AS testset_ids, dn.density_label
    FROM (
        SELECT 'image' AS level, {case_hash_sql("'image'", "i.image_id")} AS case_hash,
               i.image_id AS case_id, {exam_hash_sql("i.exam_id")} AS exam_hash, i.exam_id,
               i.laterality, e.dataset, e.split, b.cancer AS label, b.histology, b.presentation,
               i.view
        FROM images i JOIN exams e USING (exam_id)
        JOIN breasts b ON b.exam_id = i.exam_id AND b.laterality = i.laterality
        WHERE {_of('i', exams)}
        UNION ALL
        SELECT 'breast', {case_hash_sql("'breast'", "b.exam_id || '/' || b.laterality")},
               b.exam_id || '/' || b.laterality, {exam_hash_sql("b.exam_id")}, b.exam_id,
               b.laterality, e.dataset, e.split, b.cancer, b.histology, b.presentation, NULL
        FROM breasts b JOIN exams e USING (exam_id)
        WHERE {_of('b', exams)}
        UNION ALL
        SELECT 'exam', {case_hash_sql("'exam'", "t.exam_id")}, t.exam_id, t.exam_hash,
               t.exam_id, NULL, t.dataset, t.split, t.label, t.histology, t.presentation, NULL
        FROM ({exam_truth_select(exams)}) t) c
    LEFT JOIN (SELECT x.exam_hash, list(t.id ORDER BY t.id) AS testset_ids
               FROM testset_exams x JOIN testsets t USING (name) WHERE {_of('x', exams)}
               GROUP BY 1) m USING (exam_hash)
    LEFT JOIN ({_density_label(exams)}) dn USING (exam_hash)
    ORDER BY c.level, c.case_id"""


def rebuild_cases(con: duckdb.DuckDBPyConnection) -> None:
    """Derive the whole ``cases`` table again (inside the caller's write transaction)."""
    con.execute("DELETE FROM cases")
    con.execute(f"INSERT INTO cases {cases_select()}")
    con.execute(RENEW_TRUTH_TOKEN)


def update_cases(con: duckdb.DuckDBPyConnection, exams: set[str]) -> None:
    """Re-derive the ``cases`` rows of ``exams`` (after their rows, or their sets, changed)."""
    if not exams:
        return
    n_exams = con.execute("SELECT count(*) FROM exams").fetchall()[0][0]
    if len(exams) >= REBUILD_SHARE * n_exams:
        rebuild_cases(con)
        return
    with touched_relation(con, exams) as touched:
        con.execute(f"DELETE FROM cases WHERE {_of('cases', touched)}")
        con.execute(f"INSERT INTO cases {cases_select(touched)}")
    con.execute(RENEW_TRUTH_TOKEN)


@contextlib.contextmanager
def touched_relation(con: duckdb.DuckDBPyConnection, exams: set[str]) -> Iterator[str]:
    """The exam ids registered as a relation for the block; yields its name."""
    con.register(TOUCHED, pd.DataFrame({"exam_id": sorted(exams)}, dtype=object))
    try:
        yield TOUCHED
    finally:
        con.unregister(TOUCHED)


def touched_by_delete(con: duckdb.DuckDBPyConnection, entry: Mapping) -> set[str]:
    """The exams whose derived rows a delete entry (`core.store.match.delete_sql`) changes;
    read before it runs."""
    table = entry["table"]
    if table not in CASE_SOURCES:
        return set()
    where, params = match_sql(table, entry["match"])
    if table == "testsets":   # a set's members lose its id
        sql = (f"SELECT exam_id FROM testset_exams WHERE name IN "
               f"(SELECT name FROM testsets WHERE {where})")
    else:
        sql = f"SELECT exam_id FROM {table} WHERE {where} AND {_DERIVED_FROM.get(table, 'TRUE')}"
    return _exam_ids(con, sql, params)


def touched_by_upsert(con: duckdb.DuckDBPyConnection, table: str,
                      frame: pd.DataFrame) -> set[str]:
    """The exams whose derived rows upserting ``frame`` into ``table`` changes: the frame's
    exams and, where exam_id is not part of the key (a row may move), the stored rows'."""
    if table not in CASE_SOURCES or frame.empty:
        return set()
    if table == "density":    # only the 'label' exam density reaches cases and rules
        frame = frame[(frame["source"] == "label") & (frame["level"] == "exam")]
    exams = set(frame["exam_id"].dropna()) if "exam_id" in frame else set()
    if "exam_id" not in PRIMARY_KEYS[table] and not frame.empty:
        sql, params = keys_sql(table, frame[list(PRIMARY_KEYS[table])])
        exams |= _exam_ids(con, f"SELECT exam_id FROM ({sql})", params)
    return exams


def _exam_ids(con: duckdb.DuckDBPyConnection, sql: str, params: list) -> set[str]:
    return {e for (e,) in con.execute(f"SELECT DISTINCT exam_id FROM ({sql})", params).fetchall()}
