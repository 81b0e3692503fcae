"""`Store` verbs that read: rows by name, summaries, cases and their truth, scores, reads.

Each verb opens a connection (or joins the caller's) and hands it to the module that knows the
SQL: `core.store.match` for rows by name, `core.store.catalogue` for read queries,
`core.store.truth` for case truth and scores at scale, `core.store.studies` for reader studies.
"""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from core.errors import InputError
from core.store import catalogue, studies
from core.store.match import check_table, keys_sql, select_sql
from core.store.schema import TABLE_COLUMNS
from core.store.truth import SCORE_CASE_COLUMNS, Truth, read_scores, read_truth, truth_token
from core.validation import check_level


class StoreReads:
    """`Store` verbs that read (see the module doc)."""

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
        none/unknown (`core.store.derived.exam_truth_select`).
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

    def reader_studies(self) -> pd.DataFrame:
        """The reader studies (`core.store.studies`), by name.

        Columns: study, level, store_cases, rating_scale, description, synthetic, created_at,
        n_readers, n_modalities, n_cases, n_reads, modalities (comma-separated, sorted)."""
        with self.connection() as con:
            return studies.reader_studies(con)

    def study_reads(self, study: str, *, level: str | None = None,
                    modalities: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per stored read of a reader study: what MRMC statistics start from.

        Columns: study, reader, reader_kind ('radiologist', or 'model' for a fixed reader),
        modality, case_id, rating (float64, higher = more suspicious), truth (Int8, 1 =
        cancer); ordered by modality, reader, case_id. A read that was not made has no row
        (split-plot designs, missing reads). ``level`` None is the study's own; a coarser
        level works for studies of store cases: a breast's (exam's) rating is the highest of
        its images' (breasts') ratings and its truth the store's label. ``modalities`` keeps
        those only (None: all).
        """
        with self.connection() as con:
            return studies.study_reads(con, study, level, modalities)
