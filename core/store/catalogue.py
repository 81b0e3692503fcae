"""Read queries: what is in the store, and its rows within a test set.

Each function is the query behind the `Store` method of the same name: it takes the connection
that method opened and returns the DataFrame whose columns that method documents. A test set
narrows a query through its exams (`exam_filter`) or, on the ``cases`` table, through each
row's own test-set ids (`case_filter`: a single-table scan, in the table's row order).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import pandas as pd

from core.errors import InputError

FILES_ROOT = "@files"  # a dataset root inside the store's files folder moves with the store


def _df(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence = ()) -> pd.DataFrame:
    return con.execute(sql, list(params)).df()


def exam_filter(con: duckdb.DuckDBPyConnection, test_set: str | None) -> tuple[str, list]:
    """SQL selecting the exam ids of a test set (all exams when None) and its params."""
    if test_set is None:
        return "SELECT exam_id FROM exams", []
    if not con.execute("SELECT count(*) FROM testsets WHERE name = ?", [test_set]).fetchall()[0][0]:
        names = [n for (n,) in con.execute("SELECT name FROM testsets ORDER BY name").fetchall()]
        raise InputError(f"test set {test_set!r} does not exist; known: "
                         f"{', '.join(names) or 'none yet'}")
    return "SELECT exam_id FROM testset_exams WHERE name = ?", [test_set]


def case_filter(con: duckdb.DuckDBPyConnection, test_set: str | None) -> tuple[str, list]:
    """SQL true for ``cases`` rows ``c`` in a test set (all when None) and its params.

    It tests the row's own testset_ids, so a scan reads ``cases`` alone, in its row order
    (case order unless updates appended rows: `core.store.truth.read_truth` checks).
    """
    if test_set is None:
        return "TRUE", []
    rows = con.execute("SELECT id FROM testsets WHERE name = ?", [test_set]).fetchall()
    if not rows:
        exam_filter(con, test_set)  # raises: names the known sets
    return "list_contains(c.testset_ids, ?)", [rows[0][0]]


def datasets(con) -> pd.DataFrame:
    return _df(con, """
        SELECT d.dataset, d.kind, d.source, d.root, d.notes,
               (SELECT count(*) FROM exams e WHERE e.dataset = d.dataset) AS n_exams,
               (SELECT count(*) FROM images i WHERE i.dataset = d.dataset) AS n_images
        FROM datasets d ORDER BY d.dataset""")


def testsets(con) -> pd.DataFrame:
    return _df(con, """
        SELECT t.name, t.rule, count(m.exam_id) AS n_exams,
               string_agg(DISTINCT e.dataset, ',' ORDER BY e.dataset) AS datasets, t.created_at
        FROM testsets t LEFT JOIN testset_exams m USING (name)
        LEFT JOIN exams e USING (exam_id)
        GROUP BY t.name, t.rule, t.created_at ORDER BY t.name""")


def models(con) -> pd.DataFrame:
    return _df(con, """
        SELECT m.*, (SELECT count(*) FROM predictions p WHERE p.model = m.model) AS n_predictions
        FROM models m ORDER BY m.model""")


def readers(con) -> pd.DataFrame:
    return _df(con, """
        SELECT r.*, (SELECT count(*) FROM reads x WHERE x.reader = r.reader) AS n_reads
        FROM readers r ORDER BY r.kind DESC, r.reader""")


def summary(con, test_set: str | None) -> dict[str, pd.DataFrame]:
    where, params = case_filter(con, test_set)
    exams, exam_params = exam_filter(con, test_set)
    return {
        "histology": _df(con, f"""
            SELECT c.histology, count(*) AS breasts FROM cases c
            WHERE c.level = 'breast' AND {where} GROUP BY 1 ORDER BY 2 DESC, 1""", params),
        "presentation": _df(con, f"""
            SELECT trim(p) AS presentation, c.histology, count(*) AS breasts
            FROM cases c, unnest(string_split(coalesce(c.presentation, ''), ',')) t(p)
            WHERE c.level = 'breast' AND {where} AND c.label = 1 AND trim(p) <> ''
            GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2""", params),
        "density": _df(con, f"""
            SELECT d.source, d.category, count(*) AS exams FROM density d
            WHERE d.level = 'exam' AND d.exam_id IN ({exams}) AND d.category IS NOT NULL
            GROUP BY 1, 2 ORDER BY 1, 2""", exam_params),
        "views": _df(con, f"""
            SELECT c.view, c.laterality, count(*) AS images FROM cases c
            WHERE c.level = 'image' AND {where} GROUP BY 1, 2 ORDER BY 1, 2""", params),
        "splits": _df(con, f"""
            SELECT c.dataset, coalesce(c.split, 'none') AS split, count(*) AS exams
            FROM cases c WHERE c.level = 'exam' AND {where} GROUP BY 1, 2 ORDER BY 1, 2""",
                      params),
    }


def exams(con, test_set: str | None, dataset: str | None) -> pd.DataFrame:
    exam_ids, params = exam_filter(con, test_set)
    sql = f"SELECT * FROM exams WHERE exam_id IN ({exam_ids})"
    if dataset is not None:
        sql += " AND dataset = ?"
        params = [*params, dataset]
    return _df(con, sql + " ORDER BY exam_id", params)


def images(con, files_dir: Path, test_set: str | None, dataset: str | None,
           image_ids: Sequence[str] | None) -> pd.DataFrame:
    exam_ids, params = exam_filter(con, test_set)
    sql = f"""SELECT i.*, CASE WHEN i.path IS NULL THEN NULL
                               ELSE replace(d.root, '{FILES_ROOT}', ?) || '/' || i.path
                          END AS abs_path
              FROM images i JOIN datasets d USING (dataset)
              WHERE i.exam_id IN ({exam_ids})"""
    params = [str(files_dir.resolve()), *params]
    if dataset is not None:
        sql += " AND i.dataset = ?"
        params = [*params, dataset]
    if image_ids is not None:
        sql += " AND i.image_id IN (SELECT unnest(?::VARCHAR[]))"
        params = [*params, list(image_ids)]
    return _df(con, sql + " ORDER BY i.image_id", params)


def lesions(con, image_id: str | None, test_set: str | None) -> pd.DataFrame:
    exam_ids, params = exam_filter(con, test_set)
    sql = f"SELECT * FROM lesions WHERE exam_id IN ({exam_ids})"
    if image_id is not None:
        sql += " AND image_id = ?"
        params = [*params, image_id]
    return _df(con, sql + " ORDER BY lesion_id", params)


def predictions(con, models: Sequence[str], level: str, test_set: str | None) -> pd.DataFrame:
    exam_ids, params = exam_filter(con, test_set)
    return _df(con, f"""
        SELECT p.model, p.case_id, p.exam_id, p.laterality, p.image_id,
               p.malignant AS score, p.benign
        FROM predictions p
        WHERE p.level = ? AND p.model IN (SELECT unnest(?::VARCHAR[]))
          AND p.exam_id IN ({exam_ids})
        ORDER BY p.model, p.case_id""", [level, list(models), *params])


def prediction_levels(con) -> pd.DataFrame:
    return _df(con, """SELECT model, level, count(*) AS n FROM predictions
                       GROUP BY 1, 2 ORDER BY 1, 2""")


def reads(con, level: str, readers: Sequence[str] | None, test_set: str | None) -> pd.DataFrame:
    exam_ids, params = exam_filter(con, test_set)
    sql = f"""SELECT reader, case_id, exam_id, laterality, image_id, score, recall
              FROM reads WHERE level = ? AND exam_id IN ({exam_ids})"""
    params = [level, *params]
    if readers is not None:
        sql += " AND reader IN (SELECT unnest(?::VARCHAR[]))"
        params.append(list(readers))
    return _df(con, sql + " ORDER BY reader, case_id", params)


def density(con, source: str | None, level: str, test_set: str | None) -> pd.DataFrame:
    exam_ids, params = exam_filter(con, test_set)
    sql = f"SELECT * FROM density WHERE level = ? AND exam_id IN ({exam_ids})"
    params = [level, *params]
    if source is not None:
        sql += " AND source = ?"
        params.append(source)
    return _df(con, sql + " ORDER BY source, case_id", params)


def density_sources(con) -> list[str]:
    return _df(con, "SELECT DISTINCT source FROM density ORDER BY 1")["source"].tolist()


def annotations(con, image_id: str) -> pd.DataFrame:
    return _df(con, "SELECT * FROM annotations WHERE image_id = ? ORDER BY version", [image_id])


def latest_annotations(con, test_set: str | None) -> pd.DataFrame:
    exam_ids, params = exam_filter(con, test_set)
    return _df(con, f"""
        SELECT a.* FROM annotations a JOIN images i USING (image_id)
        WHERE i.exam_id IN ({exam_ids})
        QUALIFY row_number() OVER (PARTITION BY a.image_id ORDER BY a.version DESC) = 1
        ORDER BY a.image_id""", params)
