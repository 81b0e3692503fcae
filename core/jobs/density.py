"""Density estimation jobs: a density per exam (and image) of a test set, stored with its source.

Why: the Density page's questions (`core.reports.density`) need a density category per exam;
labels are rare, so the classical estimator (`core.density.estimator`, calibrated by
`core.density.calibration`) fills them in. The NYU histogram model lives in
`models.inference.density` (core never imports torch) and stores through `store_density` here.

Each estimate is one run (`core.jobs.run_folder`): its folder under ``<store files>/runs/``
holds params.json, progress.json and one result chunk that `Store.ingest` loads in one
transaction with the run's ``runs`` row. Rows of table ``density``: source ``'classical'`` or
``'nyu-histogram'``; level ``'image'`` (case_id = image_id; classical only) and ``'exam'``
(case_id = exam_id); category 0..3; score (classical: percent dense area, 0..100; NYU: the
expected category sum(k p_k), 0..3); p0..p3. Re-running replaces the rows of the exams it
estimated (delete and insert in one transaction). The calibration a run used is in its
``runs`` row's params (`last_run` reads it back).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.density import estimator as dens
from core.density.calibration import (CALIBRATION_THRESHOLDS, MAX_CALIBRATION_EXAMS, Agreement,
                                      agreement, calibration_data, category_rows, check_source,
                                      check_thresholds, counts_by_category, default_calibration,
                                      fit_calibration, percent_dense, read_breast_values)
from core.errors import InputError
from core.jobs.run_folder import RunFolder
from core.progress import ProgressFn
from core.store.runs import latest_run
from core.store import Store
from core.vocabulary import DENSITY_SOURCES

__all__ = ["DensityRun", "density_run", "estimate_classical", "last_run", "run_settings",
           "store_density"]

RESULT_CHUNK = "result"       # a density run lands in one chunk


@dataclass(frozen=True)
class DensityRun:
    """One estimation: what was written, how, and how it agrees with the labels.

    rows: the density rows written (both levels). counts: exams per category (category, name,
    exams). skipped: reason -> number of exams (or images) left out. info: the run's settings
    (method, calibration, recipe...) as `last_run` returns them. run_dir:
    the run's folder.
    """

    source: str
    test_set: str
    rows: pd.DataFrame
    counts: pd.DataFrame
    n_exams: int
    n_images: int
    skipped: dict[str, int]
    info: dict
    agreement: Agreement | None
    run_dir: Path
    elapsed_s: float
    notes: tuple[str, ...] = field(default=())

    def summary(self) -> str:
        """One plain sentence (or three) for a status line."""
        a = self.agreement
        agree = "" if a is None else (f" Agreement with '{a.reference}' on {a.n} exams: linear kappa "
                                      f"{a.kappa_linear:.3f}, {a.exact:.0%} identical.")
        return " ".join([f"{self.n_exams} exams in {self.elapsed_s:.1f} s.{agree}", *self.notes])

    def to_dict(self) -> dict:
        return {"test_set": self.test_set, "source": self.source, "n_exams": self.n_exams,
                "n_images": self.n_images, "counts": self.counts, "skipped": self.skipped,
                "agreement": None if self.agreement is None else self.agreement.to_dict(),
                "run": self.info, "notes": list(self.notes), "run_dir": str(self.run_dir),
                "elapsed_s": round(self.elapsed_s, 3)}



def density_run(store: Store, *, source: str, test_set: str, method: str,
                resume: str | None = None) -> RunFolder:
    """Open the run of a density estimate (use it as a context manager around the work);
    ``resume``: a queued or stopped run of these settings (`core.jobs.detached`)."""
    if source not in DENSITY_SOURCES or source == "label":
        raise InputError(f"source {source!r}: estimates are stored as one of "
                         f"{', '.join(s for s in DENSITY_SOURCES if s != 'label')}")
    return RunFolder.open(store, "density",
                          {"source": source, "test_set": test_set, "method": method}, resume=resume)


def estimate_classical(store: Store, *, test_set: str, calibrate_on: str | None = None,
                       threshold: float | None = None, reference: str = "label",
                       weights: str = "linear", max_side: int = dens.DEFAULT_MAX_SIDE,
                       progress: ProgressFn | None = None, resume: str | None = None) -> DensityRun:
    """Classical density of every exam (and image) of ``test_set``, written to the store.

    Parameters
    ----------
    calibrate_on : str or None
        A density source to fit threshold and cut points to (`calibrate_classical`, on the
        labelled exams of the test set's datasets); None: the mini-MIAS defaults.
    threshold : float or None
        Fix the threshold (fraction of full scale); with ``calibrate_on`` only the cut points
        are fitted, without it `core.density`'s rule applies (BIRADS cut points off 0.70).
    reference : str   the source agreement is reported against, when present.
    resume : str or None   the run_id of a queued, failed or cancelled classical run of this
        test set (a detached job's worker passes its own).

    Returns
    -------
    DensityRun   source 'classical'; ``info['calibration']`` says which calibration was used.
    """
    start = time.perf_counter()
    grid = CALIBRATION_THRESHOLDS if threshold is None else check_thresholds([threshold])
    if calibrate_on is not None:
        check_source(store, calibrate_on)
    images = store.images(test_set=test_set)
    if images.empty:
        raise InputError(f"test set {test_set!r} has no images; import images first")
    with density_run(store, source="classical", test_set=test_set, method="classical",
                     resume=resume) as run:
        progress = run.tee(progress)
        values, skipped = read_breast_values(images, max_side, progress)
        if calibrate_on is not None:
            cal_values, labels, cal_images, _ = calibration_data(
                store, calibrate_on, test_set, MAX_CALIBRATION_EXAMS, max_side, progress,
                have=values)
            cal = fit_calibration(cal_values, labels, cal_images, grid, weights, calibrate_on)
        else:
            cal = default_calibration(threshold)
        run.record(calibration=asdict(cal), describe=cal.describe(), max_side=max_side)
        ok = images[images["image_id"].isin(values.keys())]
        pct = np.array([percent_dense(*values[i], cal.threshold) for i in ok["image_id"]])
        image_rows = pd.DataFrame({"source": "classical", "level": "image",
                                   "case_id": ok["image_id"], "exam_id": ok["exam_id"],
                                   "laterality": ok["laterality"], "image_id": ok["image_id"],
                                   **category_rows(pct, cal)})
        exam_pct = pd.Series(pct, index=ok["exam_id"].to_numpy()).groupby(level=0).mean()
        exam_rows = pd.DataFrame({"source": "classical", "level": "exam",
                                  "case_id": exam_pct.index, "exam_id": exam_pct.index,
                                  "laterality": None, "image_id": None,
                                  **category_rows(exam_pct.to_numpy(), cal)})
        n_missing = images["exam_id"].nunique() - len(exam_rows)
        if n_missing:
            skipped["exams without a readable image"] = int(n_missing)
        notes = []
        degenerate = exam_rows["category"].nunique() == 1
        if calibrate_on is None and degenerate and reference in store.density_sources():
            notes.append(f"every exam fell in category {int(exam_rows['category'].iloc[0])} with "
                         f"the mini-MIAS defaults; calibrate on the '{reference}' source "
                         f"(--calibrate-on {reference}) for meaningful categories on this dataset")
        return store_density(run, pd.concat([image_rows, exam_rows], ignore_index=True),
                             skipped=skipped, reference=reference, n_images=len(ok),
                             started=start, notes=notes)


def store_density(run: RunFolder, rows: pd.DataFrame, *, skipped: dict | None = None,
                  reference: str = "label", n_images: int = 0, started: float | None = None,
                  notes: Sequence[str] = ()) -> DensityRun:
    """Write a density run's rows (its source and test set are the run's) in one transaction.

    The rows of the source on the exams in ``rows`` are deleted first, in the same
    transaction, so a re-run replaces, never duplicates (an image no longer read loses its old
    row); the run's ``runs`` row lands with them.
    """
    start = time.perf_counter() if started is None else started
    source, test_set = run.params["source"], run.params["test_set"]
    delete = [{"table": "density", "match": {"source": source,
                                             "exam_id": sorted(set(rows["exam_id"]))}}]
    rows = rows.assign(category=rows["category"].astype("Int8"))
    run.ingest(RESULT_CHUNK, {"density": rows}, delete=delete)
    exams = rows[rows["level"] == "exam"]
    store = run.store
    return DensityRun(source, test_set, rows, counts_by_category(exams["category"]), len(exams),
                      n_images, dict(skipped or {}), run_settings(run.row),
                      agreement(store, source=source, reference=reference, test_set=test_set)
                      if reference in store.density_sources() else None,
                      run.path, time.perf_counter() - start, tuple(notes))


def last_run(store: Store, source: str) -> dict | None:
    """The settings of the newest density run of ``source`` whose rows landed, or None.

    The dict is the run's parameters (source, test_set, method, calibration, describe, ...)
    with ``created`` (its start, local time) and ``ingested`` (True), as ``run.json`` held them.
    """
    run = latest_run(store, "density", status=None, landed=True, source=source)
    return None if run is None else run_settings(run)


def run_settings(run: dict) -> dict:
    """A density run's settings from its ``runs`` row, in ``run.json``'s old shape."""
    params = dict(run["params"])
    created = run["started_at"].strftime("%Y-%m-%d %H:%M:%S")
    return {"source": params.pop("source"), "test_set": params.pop("test_set"),
            "created": created, **params, "ingested": True}
