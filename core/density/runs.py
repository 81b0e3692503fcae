"""Density for a test set's exams, stored with its source, and the questions the Density page asks.

Why this module: dense tissue hides tumours. The study found lower AUC in dense breasts
(categories 2-3) than in non-dense ones (0-1), for models and radiologists alike, and also
reported the AUC without the most dense group (as if those women had an MRI instead). Answering
that needs a density per exam first, then the same tables for every model and reader.

**Estimation** (`estimate_classical`; the NYU histogram model lives in `models.density_runs`,
because core never imports torch) reads the test set's images, writes a result folder
(`core.store.write_result`) under ``<store files>/runs/`` and ingests it in one transaction.
Rows of table ``density``: source ``'classical'`` or ``'nyu-histogram'``; level ``'image'``
(case_id = image_id; classical only) and ``'exam'`` (case_id = exam_id); category 0..3; score
(classical: percent dense area, 0..100; NYU: the expected category sum(k p_k), 0..3); p0..p3.
Re-running replaces the rows of the exams it estimated (delete and insert in one transaction).

**Calibration.** `core.density`'s threshold (70 % of full scale) and cut points were fitted on
mini-MIAS film; on other data they can put every exam in one category (the synthetic demo puts
fat at ~30 % and dense tissue at ~70 % of full scale: ~0 % dense everywhere). With a labelled
density source in the same store, `calibrate_classical` refits both: for each threshold of a
grid it runs `core.density.calibrate_cut_points` on the labelled exams of the test set's
datasets and keeps the threshold with the highest linear weighted kappa (ties: the middle of the
tied run). The kappa it reports is in-sample (the labels chose the threshold and cut points), so
it is optimistic; the agreement printed after a run is on the test set, which usually lies inside
the calibration data. Without a label source the mini-MIAS defaults are used; every run records
which in ``run.json`` beside its result (`last_run`).

**Reports**: `category_counts` (figure 6.14), `stratified_auc` and `dense_vs_nondense`
(table 6.3), `density_scatter` (figure 6.15), `reader_by_density` (sensitivity and specificity
per density category, the model at the reader's overall specificity).
"""
from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from core.density import estimator as dens
from core.stats import wilson_ci
from core.reports.complement import load_cases, reader_options
from core.errors import InputError
from core.stats.kappa import weighted_kappa
from core.io.images import read_pixels
from core.stats import auc_table, delong_auc, threshold_for_specificity, unpaired_auc_test
from core.progress import ProgressFn, report
from core.store.schema import DENSITY_SOURCES, LEVELS
from core.reports.scores import model_scores
from core.image.segmentation import breast_mask
from core.store import Store, write_result

__all__ = [
    "CALIBRATION_THRESHOLDS", "STRATA", "Agreement", "ClassicalCalibration", "DensityRun",
    "agreement", "calibrate_classical", "category_counts", "dense_vs_nondense", "density_report",
    "density_scatter",
    "estimate_classical", "last_run", "reader_by_density", "store_density", "stratified_auc",
    "stratified_scores", "weighted_kappa",
]

# Fractions of full scale tried by `calibrate_classical` (core.density's default is 0.70).
CALIBRATION_THRESHOLDS = tuple(round(0.20 + 0.02 * i, 2) for i in range(36))   # 0.20 .. 0.90
MAX_CALIBRATION_EXAMS = 400    # a seeded sample beyond this: the fit needs hundreds, not 100k
_SEARCH_CANDIDATES = 40        # cut-point candidates while scanning thresholds (~4x faster);
                               # the chosen threshold is refitted with core.density's default
STRATA = (("all", (0, 1, 2, 3)), ("non-dense (0-1)", (0, 1)), ("dense (2-3)", (2, 3)),
          ("without extremely dense (0-2)", (0, 1, 2)))
RUNS_FOLDER = "runs"


# ---------------------------------------------------------------------------- results

@dataclass(frozen=True)
class ClassicalCalibration:
    """Threshold and cut points of the classical estimator, and where they came from.

    kind: 'mias-default' (core.density's constants) or 'calibrated'. calibrated_on: the density
    source fitted to (None for the defaults). kappa: in-sample weighted kappa of the fit (None for
    the defaults; mini-MIAS's 5-fold CV linear kappa is ~0.61, see core.density). cv_kappa: the
    same kappa with the cut points refitted on 4/5 of the exams and scored on the other fifth
    (5 folds stratified by label, seed 0; the threshold stays the in-sample choice), or None when
    a fold lacks a class. n_exams:
    labelled exams used; label_classes: 3 (MIAS-like F/G/D) or 4. confusion: rows = label,
    columns = fitted category. curve: (threshold, kappa) for every threshold tried.
    """

    kind: str
    threshold: float
    cut_points: tuple[float, float, float]
    soft_width: float | None
    calibrated_on: str | None = None
    kappa: float | None = None
    weights: str = "linear"
    n_exams: int = 0
    label_classes: int | None = None
    confusion: tuple[tuple[int, ...], ...] | None = None
    curve: tuple[tuple[float, float], ...] = ()
    cv_kappa: float | None = None

    def describe(self) -> str:
        cuts = ", ".join(f"{c:.1f}" for c in self.cut_points)
        if self.kind == "mias-default":
            return (f"mini-MIAS defaults: threshold {self.threshold:.2f} of full scale, "
                    f"cut points {cuts} % dense")
        cv = "" if self.cv_kappa is None else f", 5-fold CV {self.cv_kappa:.3f}"
        return (f"calibrated on '{self.calibrated_on}' ({self.n_exams} exams): threshold "
                f"{self.threshold:.2f} of full scale, cut points {cuts} % dense; "
                f"{self.weights} kappa {self.kappa:.3f} in-sample{cv}")


@dataclass(frozen=True)
class Agreement:
    """An estimate against a reference source on the exams both have (exam level).

    confusion: int (k, k), rows = reference category, columns = estimate; with a 3-class
    reference (mini-MIAS F/G/D) estimate categories 2 and 3 are merged. exact: share on the
    diagonal.
    """

    reference: str
    n: int
    classes: int
    confusion: np.ndarray
    kappa_linear: float
    kappa_quadratic: float
    exact: float

    def to_dict(self) -> dict:
        return asdict(self) | {"confusion": self.confusion.tolist()}


@dataclass(frozen=True)
class DensityRun:
    """One estimation: what was written, how, and how it agrees with the labels.

    rows: the density rows written (both levels). counts: exams per category (category, name,
    exams). skipped: reason -> number of exams (or images) left out. info: the run's settings
    as written to run.json (method, calibration, recipe...).
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


# ---------------------------------------------------------------------------- classical

def _breast_values(pixels: np.ndarray, view: str | None, max_side: int) -> tuple[np.ndarray, float]:
    """Sorted float32 breast pixel values at working resolution, and the full scale.

    The first half of `core.density.percent_density` (same block mean, same mask), done once so
    that any threshold is a binary search (`_percent`); tests check the two agree exactly.
    """
    img = np.asarray(pixels)
    factor = max(1, math.ceil(max(img.shape) / max_side))
    small = dens.block_mean(img, factor)     # core.density's own block mean: the same numbers
    values = np.sort(small[breast_mask(small, view=view)])
    if values.size == 0:
        raise InputError("the breast mask is empty (blank image, or MONOCHROME1 not inverted?)")
    return values, dens.full_scale(img)


def _percent(values: np.ndarray, top: float, threshold: float) -> float:
    # percent_density compares float32 values with the Python float threshold * top, which
    # NumPy 2 casts to float32; do the same so both give identical counts.
    cut = np.float32(threshold * top)
    dense = values.size - int(np.searchsorted(values, cut, side="right"))
    return 100.0 * (dense / values.size)      # as 100 * mean(bool): the same float


def _read_values(images: pd.DataFrame, max_side: int, progress: ProgressFn | None):
    """image_id -> (values, top) for every readable image; reason -> count for the others."""
    out, skipped = {}, {}
    for i, row in enumerate(images.itertuples(index=False)):
        if row.abs_path is None or (isinstance(row.abs_path, float) and math.isnan(row.abs_path)):
            skipped["image without pixels"] = skipped.get("image without pixels", 0) + 1
        else:
            try:
                view = row.view if row.view in ("CC", "MLO") else None
                out[row.image_id] = _breast_values(read_pixels(row.abs_path), view, max_side)
            except InputError as exc:
                key = f"unreadable image ({str(exc)[:80]})"
                skipped[key] = skipped.get(key, 0) + 1
        report(progress, i + 1, len(images), str(row.image_id))
    return out, skipped


def _exam_scores(images: pd.DataFrame, values: dict, threshold: float) -> pd.Series:
    """Mean percent over each exam's readable images (index exam_id)."""
    ok = images[images["image_id"].isin(values.keys())]
    pct = [_percent(*values[i], threshold) for i in ok["image_id"]]
    return pd.Series(pct, index=ok["exam_id"].to_numpy(), dtype=float).groupby(level=0).mean()


def _label_classes(labels: pd.Series) -> int:
    return 3 if labels.max() <= 2 else 4


def _fit(labels: pd.Series, scores: dict[float, np.ndarray], thresholds: tuple[float, ...],
         weights: str, source: str, n: int) -> ClassicalCalibration:
    """Best threshold by kappa (ties: the middle of the tied run), then its cut points."""
    curve = []
    y = labels.to_numpy(np.int64)
    k = _label_classes(labels)
    for t in thresholds:
        try:
            fit = dens.calibrate_cut_points(scores[t], y, weights=weights,
                                            max_candidates=_SEARCH_CANDIDATES)
            curve.append((float(t), fit.kappa))
        except InputError:     # e.g. every exam 0 % dense: too few distinct scores to cut
            curve.append((float(t), float("nan")))
    kappas = np.array([kappa for _, kappa in curve])
    if np.all(np.isnan(kappas)):
        raise InputError(f"no threshold in {thresholds[0]:.2f}..{thresholds[-1]:.2f} separates the "
                         f"'{source}' categories (classes {sorted(set(y.tolist()))}); calibration needs "
                         "every class 0..2 or 0..3 and images with varied density")
    tied = np.flatnonzero(np.isclose(kappas, np.nanmax(kappas), rtol=0, atol=1e-12))
    best = thresholds[int(tied[len(tied) // 2])]
    fit = dens.calibrate_cut_points(scores[best], y, weights=weights)
    return ClassicalCalibration("calibrated", float(best), tuple(fit.cut_points), fit.soft_width,
                                source, float(fit.kappa), weights, n, _label_classes(labels),
                                tuple(map(tuple, fit.confusion.tolist())), tuple(curve),
                                _cv_kappa(scores[best], y, weights))


def _cv_kappa(s: np.ndarray, y: np.ndarray, weights: str, folds: int = 5) -> float | None:
    rng = np.random.default_rng(0)
    fold = np.empty(y.size, np.int64)
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        fold[members] = np.arange(members.size) % folds
    k = 3 if y.max() <= 2 else 4
    pred = np.empty(y.size, np.int64)
    try:
        for f in range(folds):
            fit = dens.calibrate_cut_points(s[fold != f], y[fold != f], weights=weights)
            pred[fold == f] = np.searchsorted(np.asarray(fit.cut_points), s[fold == f], side="right")
    except InputError:       # a training fold without some class, or too few distinct scores
        return None
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (y, np.minimum(pred, k - 1)), 1)
    return weighted_kappa(cm, weights)


def calibrate_classical(store: Store, *, source: str = "label", test_set: str | None = None,
                        thresholds: Sequence[float] = CALIBRATION_THRESHOLDS,
                        weights: str = "linear", max_exams: int = MAX_CALIBRATION_EXAMS,
                        max_side: int = dens.DEFAULT_MAX_SIDE,
                        progress: ProgressFn | None = None) -> ClassicalCalibration:
    """Fit the classical threshold and cut points to a labelled density source in the store.

    Parameters
    ----------
    source : str
        A density source with exam-level categories (e.g. 'label'); 3 classes (F/G/D as
        mini-MIAS) or 4 (BI-RADS a-d).
    test_set : str or None
        Calibrate on the labelled exams of this test set's dataset(s) (None: every dataset).
    thresholds : fractions of full scale to try; one value fits the cut points only.
    weights : {'linear', 'quadratic'}   the kappa maximised.
    max_exams : int   a seeded sample (seed 0) of labelled exams beyond this many.

    Returns
    -------
    ClassicalCalibration (kind 'calibrated'); ``kappa`` is in-sample.
    """
    thresholds = _check_thresholds(thresholds)
    values, labels, images, _ = _calibration_data(store, source, test_set, max_exams, max_side,
                                                  progress)
    return _calibrate(values, labels, images, thresholds, weights, source)


def _check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    try:
        out = tuple(float(t) for t in thresholds)
    except (TypeError, ValueError):
        out = ()
    if not out or not all(0 < t < 1 for t in out):
        raise InputError(f"threshold(s) {thresholds!r}: pass fractions of full scale in (0, 1), e.g. 0.5")
    return out


def _calibration_data(store, source, test_set, max_exams, max_side, progress, have=None):
    check_source(store, source)
    datasets = sorted(store.exams(test_set=test_set)["dataset"].unique()) if test_set else None
    lab = store.density(source=source, level="exam").dropna(subset=["category"])
    if datasets is not None:
        exams = store.exams()
        lab = lab[lab["exam_id"].isin(set(exams.loc[exams["dataset"].isin(datasets), "exam_id"]))]
    if lab.empty:
        where = f" in dataset(s) {', '.join(datasets)}" if datasets else ""
        raise InputError(f"density source {source!r} has no exam-level categories{where}; "
                         "calibrate on a source with categories or drop --calibrate-on")
    if len(lab) > max_exams:
        lab = lab.iloc[np.sort(np.random.default_rng(0).choice(len(lab), max_exams, replace=False))]
    images = store.images(image_ids=None).merge(lab[["exam_id"]], on="exam_id")
    have = {} if have is None else have
    todo = images[~images["image_id"].isin(have.keys())]
    new, skipped = _read_values(todo, max_side, progress)
    values = have | new
    labels = lab.set_index("exam_id")["category"].astype(int)
    return values, labels, images, skipped


def _calibrate(values, labels, images, thresholds, weights, source) -> ClassicalCalibration:
    scores = {t: _exam_scores(images, values, t) for t in thresholds}
    common = labels.index.intersection(scores[thresholds[0]].index)
    if common.empty:
        raise InputError(f"no labelled exam of source {source!r} has a readable image; "
                         "check the dataset's image folder")
    return _fit(labels.loc[common], {t: s.loc[common].to_numpy() for t, s in scores.items()},
                thresholds, weights, source, len(common))


def _default_calibration(threshold: float | None) -> ClassicalCalibration:
    t = dens.DEFAULT_THRESHOLD if threshold is None else float(threshold)
    if math.isclose(t, dens.DEFAULT_THRESHOLD):
        return ClassicalCalibration("mias-default", t, dens.CALIBRATED_CUT_POINTS,
                                    dens.CALIBRATED_SOFT_WIDTH)
    return ClassicalCalibration("mias-default", t, dens.BIRADS_CUT_POINTS, None)


def _category_rows(scores: np.ndarray, cal: ClassicalCalibration) -> dict:
    cats = [dens.density_category(min(max(s, 0.0), 100.0), cut_points=cal.cut_points) for s in scores]
    if cal.soft_width is None:
        probs = np.full((len(scores), 4), np.nan)
    else:
        probs = np.array([dens.category_probabilities(min(max(s, 0.0), 100.0), cut_points=cal.cut_points,
                                                      width=cal.soft_width) for s in scores]).reshape(-1, 4)
    return {"category": np.asarray(cats, np.int8), "score": np.asarray(scores, float),
            **{f"p{k}": probs[:, k] for k in range(4)}}


def estimate_classical(store: Store, *, test_set: str, calibrate_on: str | None = None,
                       threshold: float | None = None, reference: str = "label",
                       weights: str = "linear", max_side: int = dens.DEFAULT_MAX_SIDE,
                       progress: ProgressFn | None = None) -> DensityRun:
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

    Returns
    -------
    DensityRun   source 'classical'; ``info['calibration']`` says which calibration was used.
    """
    start = time.perf_counter()
    grid = CALIBRATION_THRESHOLDS if threshold is None else _check_thresholds([threshold])
    if calibrate_on is not None:
        check_source(store, calibrate_on)
    images = store.images(test_set=test_set)
    if images.empty:
        raise InputError(f"test set {test_set!r} has no images; import images first")
    values, skipped = _read_values(images, max_side, progress)
    if calibrate_on is not None:
        cal_values, labels, cal_images, _ = _calibration_data(
            store, calibrate_on, test_set, MAX_CALIBRATION_EXAMS, max_side, progress, have=values)
        cal = _calibrate(cal_values, labels, cal_images, grid, weights, calibrate_on)
    else:
        cal = _default_calibration(threshold)
    ok = images[images["image_id"].isin(values.keys())]
    pct = np.array([_percent(*values[i], cal.threshold) for i in ok["image_id"]])
    image_rows = pd.DataFrame({"source": "classical", "level": "image", "case_id": ok["image_id"],
                               "exam_id": ok["exam_id"], "laterality": ok["laterality"],
                               "image_id": ok["image_id"], **_category_rows(pct, cal)})
    exam_pct = pd.Series(pct, index=ok["exam_id"].to_numpy()).groupby(level=0).mean()
    exam_rows = pd.DataFrame({"source": "classical", "level": "exam", "case_id": exam_pct.index,
                              "exam_id": exam_pct.index, "laterality": None, "image_id": None,
                              **_category_rows(exam_pct.to_numpy(), cal)})
    n_missing = images["exam_id"].nunique() - len(exam_rows)
    if n_missing:
        skipped["exams without a readable image"] = int(n_missing)
    info = {"method": "classical", "calibration": asdict(cal), "describe": cal.describe(),
            "max_side": max_side}
    notes = []
    degenerate = exam_rows["category"].nunique() == 1
    if calibrate_on is None and degenerate and reference in store.density_sources():
        notes.append(f"every exam fell in category {int(exam_rows['category'].iloc[0])} with the "
                     f"mini-MIAS defaults; calibrate on the '{reference}' source "
                     f"(--calibrate-on {reference}) for meaningful categories on this dataset")
    return store_density(store, pd.concat([image_rows, exam_rows], ignore_index=True),
                         source="classical", test_set=test_set, info=info, skipped=skipped,
                         reference=reference, n_images=len(ok), started=start, notes=notes)


# ---------------------------------------------------------------------------- storage

def store_density(store: Store, rows: pd.DataFrame, *, source: str, test_set: str, info: dict,
                  skipped: dict | None = None, reference: str = "label", n_images: int = 0,
                  started: float | None = None, notes: Sequence[str] = ()) -> DensityRun:
    """Write density rows through a result folder and `Store.ingest` (one transaction).

    The rows of ``source`` on the exams in ``rows`` are deleted first, in the same transaction,
    so a re-run replaces, never duplicates (an image no longer read loses its old row).
    ``info`` (JSON-able) is saved as ``run.json`` beside the result; `last_run` reads it back.
    """
    if source not in DENSITY_SOURCES or source == "label":
        raise InputError(f"source {source!r}: estimates are stored as one of "
                         f"{', '.join(s for s in DENSITY_SOURCES if s != 'label')}")
    start = time.perf_counter() if started is None else started
    exam_ids = sorted(set(rows["exam_id"]))
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S%f") + "-" + secrets.token_hex(2)   # sorts by time
    run_dir = store.files_dir / RUNS_FOLDER / f"density-{source}-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    info = {"source": source, "test_set": test_set, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            **info}
    (run_dir / "run.json").write_text(json.dumps(info, indent=1, default=_json_default))
    delete = [{"table": "density", "match": {"source": source, "exam_id": exam_ids}}]
    rows = rows.assign(category=rows["category"].astype("Int8"))
    write_result(run_dir, {"density": rows}, delete=delete)
    store.ingest(run_dir)
    info["ingested"] = True           # last_run ignores a run whose ingest failed
    (run_dir / "run.json").write_text(json.dumps(info, indent=1, default=_json_default))
    exams = rows[rows["level"] == "exam"]
    return DensityRun(source, test_set, rows, _counts(exams["category"]), len(exams), n_images,
                      dict(skipped or {}), info,
                      agreement(store, source=source, reference=reference, test_set=test_set)
                      if reference in store.density_sources() else None,
                      run_dir, time.perf_counter() - start, tuple(notes))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def last_run(store: Store, source: str) -> dict | None:
    """The settings of the newest ingested run of ``source`` (from its run.json), or None."""
    root = store.files_dir / RUNS_FOLDER
    for path in sorted(root.glob(f"density-{source}-*/run.json"), reverse=True) if root.is_dir() else []:
        info = json.loads(path.read_text())
        if info.get("ingested"):
            return info
    return None


# ---------------------------------------------------------------------------- agreement

def agreement(store: Store, *, source: str, reference: str = "label",
              test_set: str | None = None) -> Agreement | None:
    """``source`` against ``reference`` on the exam-level categories both have; None if none.

    A reference with no category 3 anywhere in the store is taken as 3-class (mini-MIAS F/G/D):
    the estimate's 2 and 3 are merged, as `core.density.calibrate_cut_points` scores its fit.
    """
    est = store.density(source=source, level="exam", test_set=test_set).dropna(subset=["category"])
    ref = store.density(source=reference, level="exam", test_set=test_set).dropna(subset=["category"])
    both = ref[["exam_id", "category"]].merge(est[["exam_id", "category"]], on="exam_id",
                                              suffixes=("_ref", "_est"))
    if both.empty:
        return None
    k = _label_classes(store.density(source=reference, level="exam")["category"].dropna())
    r = both["category_ref"].to_numpy(int).clip(0, k - 1)
    e = both["category_est"].to_numpy(int).clip(0, k - 1)
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (r, e), 1)
    return Agreement(reference, len(both), k, cm, weighted_kappa(cm, "linear"),
                     weighted_kappa(cm, "quadratic"), float(np.trace(cm) / cm.sum()))


def _counts(categories: pd.Series) -> pd.DataFrame:
    counts = categories.dropna().astype(int).value_counts().reindex(range(4), fill_value=0)
    return pd.DataFrame({"category": range(4), "name": dens.CATEGORY_NAMES,
                         "exams": counts.to_numpy(np.int64)})


# ---------------------------------------------------------------------------- reports

def category_counts(store: Store, *, source: str, by: str = "dataset",
                    test_sets: Sequence[str] | None = None) -> pd.DataFrame:
    """Exams per density category (figure 6.14) for each dataset or each test set.

    Returns columns group, category (0..3), name, exams, share (of the group's exams with a
    category); every category appears, with 0 where empty. Exams without a category (a source
    holding percentages only) are left out.
    """
    if by not in ("dataset", "test_set"):
        raise InputError(f"by is {by!r}; pass 'dataset' or 'test_set'")
    parts = []
    if by == "dataset":
        rows = store.density(source=source, level="exam").merge(
            store.exams()[["exam_id", "dataset"]], on="exam_id")
        groups = [(name, g["category"]) for name, g in rows.groupby("dataset", sort=True)]
    else:
        names = store.testset_names() if test_sets is None else list(test_sets)
        groups = [(t, store.density(source=source, level="exam", test_set=t)["category"]) for t in names]
    for name, cats in groups:
        c = _counts(cats)
        total = c["exams"].sum()
        parts.append(c.assign(group=name, share=c["exams"] / total if total else np.nan))
    columns = ["group", "category", "name", "exams", "share"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def stratified_scores(store: Store, *, models: Sequence[str], test_sets: Sequence[str],
                      level: str = "exam", density_source: str = "label",
                      how: str = "max") -> pd.DataFrame:
    """`core.reports.scores.model_scores` for each test set, with a ``test_set`` column; ``density`` is
    the exam's category from ``density_source`` (NA where it has none)."""
    if level not in LEVELS:
        raise InputError(f"level is {level!r}; pass one of {', '.join(LEVELS)}")
    with store.connection():
        parts = [model_scores(store, models=list(models), level=level, test_set=t, how=how,
                              density_source=density_source).assign(test_set=t) for t in test_sets]
    if not parts:
        raise InputError("no test sets chosen; pick at least one")
    frame = pd.concat(parts, ignore_index=True)
    if frame["label"].isna().any():
        raise InputError(f"{int(frame['label'].isna().sum())} cases of {', '.join(test_sets)} have no "
                         f"label at {level} level; fill in breasts.cancer or use a test set without them")
    return frame


def _stratum(scores: pd.DataFrame, categories) -> pd.DataFrame:
    if len(categories) == 4:
        return scores
    return scores[scores["density"].isin(list(categories)).fillna(False).astype(bool)]


def stratified_auc(scores: pd.DataFrame, *, alpha: float = 0.05) -> pd.DataFrame:
    """AUC with a DeLong CI per (test set, model, density stratum), as table 6.3.

    ``scores``: `stratified_scores`. Strata (`STRATA`): all cases, non-dense (0-1), dense
    (2-3), without extremely dense (0-2); cases without a density category count only in 'all'.
    Returns the `core.stats.metrics.auc_table` columns plus stratum; a stratum without cases gets the
    note "n/a: no cases".
    """
    if "test_set" not in scores.columns:
        scores = scores.assign(test_set=None)
    parts = []
    for name, cats in STRATA:
        sub = _stratum(scores, cats)
        if not sub.empty:
            parts.append(auc_table(sub[["test_set", "model", "label", "score"]].astype(
                {"label": int}), alpha=alpha).assign(stratum=name))
    keys = scores[["test_set", "model"]].drop_duplicates()
    full = keys.merge(pd.DataFrame({"stratum": [s for s, _ in STRATA]}), how="cross")
    table = full.merge(pd.concat(parts, ignore_index=True) if parts else full.iloc[:0],
                       on=["test_set", "model", "stratum"], how="left")
    table["note"] = table["note"].fillna("n/a: no cases")
    for c in ("n_pos", "n_neg", "n_excluded"):
        table[c] = table[c].fillna(0).astype(np.int64)
    return table[["test_set", "model", "stratum", "n_pos", "n_neg", "n_excluded", "auc", "ci_low",
                  "ci_high", "note"]]


def dense_vs_nondense(scores: pd.DataFrame) -> pd.DataFrame:
    """Unpaired DeLong z test of AUC(dense 2-3) = AUC(non-dense 0-1) per (test set, model).

    The strata are different women, so the covariance is zero (`core.stats.metrics.unpaired_auc_test`).
    Columns test_set, model, auc_dense, auc_nondense, diff (dense - non-dense), se, z, p,
    n_no_density (cases without a category), note.
    """
    if "test_set" not in scores.columns:
        scores = scores.assign(test_set=None)
    rows = []
    for (ts, model), g in scores.groupby(["test_set", "model"], sort=False, dropna=False):
        row = {"test_set": ts, "model": model, "n_no_density": int(g["density"].isna().sum())}
        try:
            res = [delong_auc(s["label"].to_numpy(int), s["score"].to_numpy(float))
                   for s in (_stratum(g, (2, 3)), _stratum(g, (0, 1)))]
            t = unpaired_auc_test(*res)
            row |= {"auc_dense": res[0].auc, "auc_nondense": res[1].auc, "diff": t.diff,
                    "se": t.se, "z": t.z, "p": t.p,
                    "note": "" if np.isfinite(t.p) else
                    "n/a: DeLong needs 2 positives and 2 negatives per stratum"}
        except InputError as exc:
            row |= {"note": f"n/a: {str(exc).split(';')[0]}"}
        rows.append(row)
    columns = ["test_set", "model", "auc_dense", "auc_nondense", "diff", "se", "z", "p",
               "n_no_density", "note"]
    return pd.DataFrame(rows).reindex(columns=columns)


def density_scatter(store: Store, *, model: str, test_set: str, level: str = "exam",
                    density_source: str = "label", how: str = "max") -> pd.DataFrame:
    """Model score against density score per case (figure 6.15).

    Columns case_id, exam_id, label (int), truth ('cancer' | 'healthy'), histology, score,
    density (category), density_score: the exam's score from ``density_source``, or at image
    level the image's own when the source stores image rows. Cases lacking either are dropped.
    """
    with store.connection():
        frame = stratified_scores(store, models=[model], test_sets=[test_set], level=level,
                                  density_source=density_source, how=how)
        exam = store.density(source=density_source, level="exam", test_set=test_set)
        img = store.density(source=density_source, level="image", test_set=test_set) \
            if level == "image" else None
    frame = frame.merge(exam[["exam_id", "score"]].rename(columns={"score": "density_score"}),
                        on="exam_id", how="left")
    if img is not None and not img.empty:
        own = frame["image_id"].map(img.set_index("image_id")["score"])
        frame["density_score"] = own.fillna(frame["density_score"])
    frame = frame.dropna(subset=["score", "density_score"])
    frame = frame.assign(label=frame["label"].astype(int),
                         truth=np.where(frame["label"].astype(int) == 1, "cancer", "healthy"))
    return frame[["case_id", "exam_id", "label", "truth", "histology", "score", "density",
                  "density_score"]].reset_index(drop=True)


def _rates_row(y: np.ndarray, d: np.ndarray, alpha: float) -> dict:
    tp, n_pos = int(np.sum(d & y)), int(np.sum(y))
    tn, n_neg = int(np.sum(~d & ~y)), int(np.sum(~y))
    se, sp = wilson_ci(tp, n_pos, alpha), wilson_ci(tn, n_neg, alpha)
    return {"cancers": n_pos, "detected": tp, "sensitivity": tp / n_pos if n_pos else np.nan,
            "sensitivity_ci_low": se[0], "sensitivity_ci_high": se[1], "healthy": n_neg,
            "cleared": tn, "specificity": tn / n_neg if n_neg else np.nan,
            "specificity_ci_low": sp[0], "specificity_ci_high": sp[1]}


def reader_by_density(store: Store, *, model: str, test_set: str, readers: Sequence[str] | None = None,
                      level: str = "exam", density_source: str = "label", how: str = "max",
                      alpha: float = 0.05) -> pd.DataFrame:
    """Readers' sensitivity and specificity per density category, beside the model's.

    For each reader the model's threshold matches the reader's overall specificity (the lowest
    threshold reaching it, `core.stats.metrics.threshold_for_specificity`) on the cases where both
    have a decision; then both are counted per category (and 'all'). Wilson (1 - alpha) CIs.

    Returns
    -------
    DataFrame  reader, who (the reader's or the model's name), role ('reader' | 'model'),
        density ('all', '0'..'3'), cancers, detected, sensitivity (+ CI), healthy, cleared,
        specificity (+ CI), threshold (model rows), n_excluded (cases left out for a missing
        score or read). Readers without recall decisions are skipped.
    """
    with store.connection():     # one connection for the many small queries (~15 ms each to open)
        return _reader_by_density(store, model, test_set, readers, level, density_source, how, alpha)


def _reader_by_density(store, model, test_set, readers, level, density_source, how, alpha):
    options = reader_options(store, level=level, test_set=test_set)
    options = options[options["has_recall"]]
    chosen = list(options["reader"]) if readers is None else list(readers)
    dens_by_case = store.cases(test_set=test_set, level=level, density_source=density_source)
    dens_by_case = dens_by_case.set_index("case_id")["density"]
    rows = []
    for reader in chosen:
        if reader not in set(options["reader"]):
            known = ", ".join(options["reader"]) or "none"
            raise InputError(f"reader {reader!r} has no recall decisions at {level} level in "
                             f"{test_set!r}; readers with decisions: {known}")
        f = load_cases(store, test_set=test_set, model=model, reader=reader, level=level, how=how).frame
        keep = f["score"].notna() & f["reader_recall"].notna()
        f = f[keep]
        y = f["label"].to_numpy(int).astype(bool)
        r = f["reader_recall"].to_numpy(float) == 1
        s = f["score"].to_numpy(float)
        spec = float(np.sum(~r & ~y) / max(np.sum(~y), 1))
        t = threshold_for_specificity(y.astype(int), s, spec) if (~y).any() else np.inf
        cat = pd.to_numeric(f["case_id"].map(dens_by_case)).to_numpy(float, na_value=np.nan)
        for label, mask in [("all", np.ones(len(f), bool))] + [(str(k), cat == k) for k in range(4)]:
            for who, role, d, thr in ((reader, "reader", r, np.nan), (model, "model", s >= t, t)):
                rows.append({"reader": reader, "who": who, "role": role, "density": label,
                             **_rates_row(y[mask], d[mask], alpha), "threshold": thr,
                             "n_excluded": int((~keep).sum())})
    return pd.DataFrame(rows)


def check_source(store: Store, source: str) -> None:
    """InputError unless ``source`` has density rows in the store."""
    present = store.density_sources()
    if source not in present:
        raise InputError(f"density source {source!r} is not in the store; present: "
                         f"{', '.join(present) or 'none (run `python -m core density estimate`)'}")


def density_report(store: Store, *, test_set: str, test_sets: Sequence[str] | None = None,
                   density_source: str = "label", models: Sequence[str] | None = None,
                   level: str = "exam", how: str = "max", reader_model: str | None = None,
                   readers: Sequence[str] | None = None, alpha: float = 0.05) -> dict:
    """Everything ``report density`` prints, as the Density page computes it.

    ``models`` defaults to every model usable at ``level``; ``reader_model`` (the model set beside
    the readers) to the first of them.
    """
    from core.reports.benchmark import usable_models

    check_source(store, density_source)
    if models is None:
        models = usable_models(store.prediction_levels(), level)
    if not models:
        raise InputError(f"no model has scores usable at {level} level; import predictions first")
    test_sets = [test_set] if test_sets is None else list(dict.fromkeys(test_sets))
    scores = stratified_scores(store, models=models, test_sets=test_sets, level=level,
                               density_source=density_source, how=how)
    readers_table = reader_by_density(store, model=reader_model or models[0], test_set=test_set,
                                      readers=readers, level=level, density_source=density_source,
                                      how=how, alpha=alpha)
    return {"test_set": test_set, "test_sets": test_sets, "density_source": density_source,
            "level": level, "how": how, "run": last_run(store, density_source),
            "counts": category_counts(store, source=density_source, by="test_set", test_sets=test_sets),
            "auc": stratified_auc(scores, alpha=alpha), "dense_vs_nondense": dense_vs_nondense(scores),
            "readers": readers_table.replace([np.inf, -np.inf], np.nan)}
