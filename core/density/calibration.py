"""Calibration of the classical density estimator to a labelled density source in the store.

Why: `core.density.estimator`'s threshold (70 % of full scale) and cut points were fitted on
mini-MIAS film; on other data they can put every exam in one category (the synthetic demo puts
fat at ~30 % and dense tissue at ~70 % of full scale: ~0 % dense everywhere). With a labelled
density source in the same store, `calibrate_classical` refits both: for each threshold of a
grid it runs `core.density.estimator.calibrate_cut_points` on the labelled exams of the test
set's datasets and keeps the threshold with the highest linear weighted kappa (ties: the middle
of the tied run). The kappa it reports is in-sample (the labels chose the threshold and cut
points), so it is optimistic. Without a label source the mini-MIAS defaults are used
(`default_calibration`); every density run records which in its ``runs`` row
(`core.jobs.density`).

Each image is read once (`read_breast_values`: its sorted breast pixel values at working
resolution), so that any threshold is a binary search (`percent_dense`). `agreement` scores an
estimate against a reference source the same way.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from core.density import estimator as dens
from core.errors import InputError
from core.image.segmentation import breast_mask
from core.io.images import read_pixels
from core.progress import ProgressFn, report
from core.stats.kappa import weighted_kappa
from core.store import Store

__all__ = [
    "CALIBRATION_THRESHOLDS", "MAX_CALIBRATION_EXAMS", "Agreement", "ClassicalCalibration",
    "agreement", "calibrate_classical", "counts_by_category", "calibration_data", "category_rows", "check_source",
    "check_thresholds", "default_calibration", "fit_calibration", "label_classes",
    "percent_dense", "read_breast_values",
]

# Fractions of full scale tried by `calibrate_classical` (core.density's default is 0.70).
CALIBRATION_THRESHOLDS = tuple(round(0.20 + 0.02 * i, 2) for i in range(36))   # 0.20 .. 0.90
MAX_CALIBRATION_EXAMS = 400    # a seeded sample beyond this: the fit needs hundreds, not 100k
_SEARCH_CANDIDATES = 40        # cut-point candidates while scanning thresholds (~4x faster);
                               # the chosen threshold is refitted with core.density's default


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


def _breast_values(pixels: np.ndarray, view: str | None, max_side: int) -> tuple[np.ndarray, float]:
    """Sorted float32 breast pixel values at working resolution, and the full scale.

    The first half of `core.density.percent_density` (same block mean, same mask), done once so
    that any threshold is a binary search (`percent_dense`); tests check the two agree exactly.
    """
    img = np.asarray(pixels)
    factor = max(1, math.ceil(max(img.shape) / max_side))
    small = dens.block_mean(img, factor)     # core.density's own block mean: the same numbers
    values = np.sort(small[breast_mask(small, view=view)])
    if values.size == 0:
        raise InputError("the breast mask is empty (blank image, or MONOCHROME1 not inverted?)")
    return values, dens.full_scale(img)


def percent_dense(values: np.ndarray, top: float, threshold: float) -> float:
    """Percent of the breast values (`read_breast_values`) above ``threshold`` of full scale."""
    # percent_density compares float32 values with the Python float threshold * top, which
    # NumPy 2 casts to float32; do the same so both give identical counts.
    cut = np.float32(threshold * top)
    dense = values.size - int(np.searchsorted(values, cut, side="right"))
    return 100.0 * (dense / values.size)      # as 100 * mean(bool): the same float


def read_breast_values(images: pd.DataFrame, max_side: int, progress: ProgressFn | None):
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
    pct = [percent_dense(*values[i], threshold) for i in ok["image_id"]]
    return pd.Series(pct, index=ok["exam_id"].to_numpy(), dtype=float).groupby(level=0).mean()


def label_classes(labels: pd.Series) -> int:
    """3 for a reference with no category 3 (mini-MIAS F/G/D), else 4 (BI-RADS a-d)."""
    return 3 if labels.max() <= 2 else 4


def _fit(labels: pd.Series, scores: dict[float, np.ndarray], thresholds: tuple[float, ...],
         weights: str, source: str, n: int) -> ClassicalCalibration:
    """Best threshold by kappa (ties: the middle of the tied run), then its cut points."""
    curve = []
    y = labels.to_numpy(np.int64)
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
                                source, float(fit.kappa), weights, n, label_classes(labels),
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
    thresholds = check_thresholds(thresholds)
    values, labels, images, _ = calibration_data(store, source, test_set, max_exams, max_side,
                                                  progress)
    return fit_calibration(values, labels, images, thresholds, weights, source)


def check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    """Thresholds as a tuple of fractions of full scale in (0, 1)."""
    try:
        out = tuple(float(t) for t in thresholds)
    except (TypeError, ValueError):
        out = ()
    if not out or not all(0 < t < 1 for t in out):
        raise InputError(f"threshold(s) {thresholds!r}: pass fractions of full scale in (0, 1), e.g. 0.5")
    return out


def calibration_data(store, source, test_set, max_exams, max_side, progress, have=None):
    """(values, labels, images, skipped) of the labelled exams of ``source`` in the test set's
    datasets (a seeded sample of ``max_exams``); images already in ``have`` are not read again."""
    check_source(store, source)
    datasets = sorted(store.exams(test_set=test_set)["dataset"].unique()) if test_set else None
    lab = store.density(source=source, level="exam").dropna(subset=["category"])
    if datasets is not None:
        exams = store.exams()
        lab = lab[lab["exam_id"].isin(set(exams.loc[exams["dataset"].isin(datasets), "exam_id"]))]
    if lab.empty:
        where = f" in dataset(s) {', '.join(datasets)}" if datasets else ""
        raise InputError(f"density source {source!r} has no exam-level categories{where}; "
                         "calibrate on a source with categories, or use the mini-MIAS defaults")
    if len(lab) > max_exams:
        lab = lab.iloc[np.sort(np.random.default_rng(0).choice(len(lab), max_exams, replace=False))]
    images = store.images(image_ids=None).merge(lab[["exam_id"]], on="exam_id")
    have = {} if have is None else have
    todo = images[~images["image_id"].isin(have.keys())]
    new, skipped = read_breast_values(todo, max_side, progress)
    values = have | new
    labels = lab.set_index("exam_id")["category"].astype(int)
    return values, labels, images, skipped


def fit_calibration(values, labels, images, thresholds, weights, source) -> ClassicalCalibration:
    """The best threshold and cut points for `calibration_data`'s values and labels."""
    scores = {t: _exam_scores(images, values, t) for t in thresholds}
    common = labels.index.intersection(scores[thresholds[0]].index)
    if common.empty:
        raise InputError(f"no labelled exam of source {source!r} has a readable image; "
                         "check the dataset's image folder")
    return _fit(labels.loc[common], {t: s.loc[common].to_numpy() for t, s in scores.items()},
                thresholds, weights, source, len(common))


def default_calibration(threshold: float | None) -> ClassicalCalibration:
    """The mini-MIAS settings (another fixed threshold gets the BI-RADS cut points)."""
    t = dens.DEFAULT_THRESHOLD if threshold is None else float(threshold)
    if math.isclose(t, dens.DEFAULT_THRESHOLD):
        return ClassicalCalibration("mias-default", t, dens.CALIBRATED_CUT_POINTS,
                                    dens.CALIBRATED_SOFT_WIDTH)
    return ClassicalCalibration("mias-default", t, dens.BIRADS_CUT_POINTS, None)


def category_rows(scores: np.ndarray, cal: ClassicalCalibration) -> dict:
    """The density columns category, score, p0..p3 for percent-dense ``scores`` under ``cal``."""
    cats = [dens.density_category(min(max(s, 0.0), 100.0), cut_points=cal.cut_points) for s in scores]
    if cal.soft_width is None:
        probs = np.full((len(scores), 4), np.nan)
    else:
        probs = np.array([dens.category_probabilities(min(max(s, 0.0), 100.0), cut_points=cal.cut_points,
                                                      width=cal.soft_width) for s in scores]).reshape(-1, 4)
    return {"category": np.asarray(cats, np.int8), "score": np.asarray(scores, float),
            **{f"p{k}": probs[:, k] for k in range(4)}}


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
    k = label_classes(store.density(source=reference, level="exam")["category"].dropna())
    r = both["category_ref"].to_numpy(int).clip(0, k - 1)
    e = both["category_est"].to_numpy(int).clip(0, k - 1)
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (r, e), 1)
    return Agreement(reference, len(both), k, cm, weighted_kappa(cm, "linear"),
                     weighted_kappa(cm, "quadratic"), float(np.trace(cm) / cm.sum()))


def counts_by_category(categories: pd.Series) -> pd.DataFrame:
    """Exams per category: columns category (0..3), name, exams (0 where none)."""
    counts = categories.dropna().astype(int).value_counts().reindex(range(4), fill_value=0)
    return pd.DataFrame({"category": range(4), "name": dens.CATEGORY_NAMES,
                         "exams": counts.to_numpy(np.int64)})


def check_source(store: Store, source: str) -> None:
    """InputError unless ``source`` has density rows in the store."""
    present = store.density_sources()
    if source not in present:
        raise InputError(f"density source {source!r} is not in the store; present: "
                         f"{', '.join(present) or 'none (run `python -m core density estimate`)'}")
