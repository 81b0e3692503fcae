"""Discrimination metrics: AUC, ROC, DeLong, bootstrap, operating points and level aggregation.

Conventions (one contract for every function here, as scikit-learn's ``_ranking.py`` states its
own):

* ``y_true`` is 0/1 or bool, **1 = cancer** (the positive class). ``y_score`` is any monotone
  scale on which a **higher score is more suspicious** (probability, logit, rank).
* A case is called positive **iff score >= threshold**.
* A positive and a negative with equal scores count **one half** (the Mann-Whitney form of the
  AUC). AUC, DeLong variance and covariance therefore equal pROC's with ``direction = "<"``
  (pROC picks the direction from the data by default; we never do): variance
  ``S10 / m + S01 / n`` with sample covariances (ddof = 1) of the placement values.
* A NaN score means "no score" (a failed image, a model not run on a case). It is **excluded and
  counted, never dropped silently**: results that have a ``n_excluded`` field carry the count,
  the others emit an :class:`ExcludedScoresWarning`. Functions over several models exclude a case
  whose score is NaN under any model (paired statistics need complete cases). ±inf scores are
  rejected: +inf is reserved for the ROC curve's (0, 0) point.
* Bad input raises :class:`core.errors.InputError` (a ``ValueError``), one condition per message:
  the input, the value received, what to do. A test set with one class only is such an error;
  :func:`auc_table` reports it per row as ``"n/a: no positives"`` instead.

Public functions validate once, at the door. Private helpers (``_name``) assume clean arrays:
``y`` bool of shape (n_cases,), scores float64 of shape (n_cases,) or (k, n_cases), no NaN, both
classes where the statistic needs them.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

from core.errors import InputError
from core.progress import ProgressFn, report
from core.vocabulary import HISTOLOGIES, LEVELS

__all__ = [
    "FRAME_COLUMNS", "AUCResult", "PairedTest", "ContrastTest", "UnpairedTest", "Confusion",
    "ExcludedScoresWarning",
    "roc_auc", "roc_curve", "delong_auc", "bootstrap_auc", "delong_covariance",
    "delong_paired_test", "delong_contrast_test", "delong_matrix", "unpaired_auc_test",
    "holm_adjust", "confusion_at", "threshold_for_specificity", "threshold_for_sensitivity",
    "aggregate_scores", "auc_table",
]

FRAME_COLUMNS = ("model", "case_id", "exam_id", "laterality", "image_id", "label", "histology",
                 "score")
# An exam (or breast) takes the most specific histology among its parts; matches the store's
# exam truth (core.store.schema.EXAM_TRUTH): ILC, else IDC, else other, else unknown, else none.
_HISTOLOGY_PRIORITY = ("none", "unknown", "other", "IDC", "ILC")
# Elements per bootstrap chunk: keeps the count arrays in cache (bincount into a 32 MB array
# runs ~3x slower than into a 2 MB one) while still batching many resamples of small test sets.
_BOOT_CHUNK = 1 << 18


class ExcludedScoresWarning(UserWarning):
    """NaN scores were excluded by a function whose result has no ``n_excluded`` field."""


# ---------------------------------------------------------------------------- results

@dataclass(frozen=True)
class AUCResult:
    """An AUC with its variance and a (1 - alpha) confidence interval.

    ``n_pos`` and ``n_neg`` count the cases used; ``n_excluded`` those left out for a NaN score.
    ``method`` is ``'delong'`` (normal interval, clipped to [0, 1]; var and CI are NaN with fewer
    than 2 positives or 2 negatives) or ``'bootstrap'`` (stratified percentile interval, var the
    variance of the resampled AUCs).
    """

    auc: float
    var: float
    ci_low: float
    ci_high: float
    n_pos: int
    n_neg: int
    n_excluded: int
    method: str

    @property
    def se(self) -> float:
        return math.sqrt(self.var) if self.var >= 0 else math.nan


@dataclass(frozen=True)
class PairedTest:
    """DeLong test of AUC(a) - AUC(b) on the same cases; ``p`` is two-sided."""

    auc_a: float
    auc_b: float
    diff: float
    se: float
    z: float
    p: float
    n_excluded: int = 0


@dataclass(frozen=True)
class ContrastTest:
    """DeLong test of ``contrast @ aucs`` = 0 on the same cases; ``p`` is two-sided."""

    estimate: float
    se: float
    z: float
    p: float
    n_excluded: int = 0


@dataclass(frozen=True)
class UnpairedTest:
    """z test of AUC(a) - AUC(b) on disjoint groups of cases; ``p`` is two-sided."""

    diff: float
    se: float
    z: float
    p: float


@dataclass(frozen=True)
class Confusion:
    """Counts and rates at one threshold (positive iff score >= threshold).

    Rates with an empty denominator are ``math.nan`` (e.g. ppv when nothing is called positive).
    """

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: float
    specificity: float
    ppv: float
    npv: float
    accuracy: float
    n_excluded: int = 0


# ---------------------------------------------------------------------------- validation

def _as_array(values) -> np.ndarray:
    """numpy view of an array-like; pandas nullable columns (Int8, boolean, Float64) become
    float64 with NaN for NA, so a missing label or score is seen, not turned into an object."""
    if isinstance(values, (pd.Series, pd.Index, pd.api.extensions.ExtensionArray)):
        dt = values.dtype
        if isinstance(dt, pd.api.extensions.ExtensionDtype) and (
                pd.api.types.is_bool_dtype(dt) or pd.api.types.is_numeric_dtype(dt)):
            return pd.Series(values).to_numpy(dtype=np.float64, na_value=np.nan)
    return np.asarray(values)


def _labels(y_true, name: str = "y_true") -> np.ndarray:
    """0/1 or bool labels -> bool array of shape (n,)."""
    y = _as_array(y_true)
    if y.ndim != 1:
        raise InputError(f"{name} must be 1-D, one label per case; got shape {y.shape}")
    if y.dtype == bool:
        return y
    if y.dtype.kind not in "iuf":
        example = next(iter(y.tolist()), None)
        raise InputError(f"{name} must be 0/1 or bool (1 = cancer); got dtype {y.dtype} "
                         f"(e.g. {example!r}). Map the labels to 0/1 first.")
    if y.dtype.kind == "f":
        n_nan = int(np.count_nonzero(np.isnan(y)))
        if n_nan:
            raise InputError(f"{name} has {n_nan} missing labels (NaN); drop those cases or "
                             f"fill in their labels.")
    is_pos = y == 1
    bad = ~is_pos & (y != 0)
    if bad.any():
        shown = np.unique(y[bad])[:5].tolist()
        raise InputError(f"{name} must be 0/1 or bool (1 = cancer); got other values {shown}. "
                         f"Map the labels to 0/1 first.")
    return is_pos


def _scores(y_score, name: str, ndim: int) -> np.ndarray:
    """Numeric scores -> float64 array with ``ndim`` dimensions; NaN kept, ±inf rejected."""
    try:
        s = _as_array(y_score).astype(np.float64, copy=False)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numeric (higher = more suspicious); got dtype "
                         f"{getattr(y_score, 'dtype', type(y_score).__name__)}") from None
    if s.ndim != ndim:
        want = "(n_cases,)" if ndim == 1 else "(n_models, n_cases)"
        raise InputError(f"{name} must have shape {want}; got shape {s.shape}")
    n_inf = int(np.count_nonzero(np.isinf(s)))
    if n_inf:
        raise InputError(f"{name} has {n_inf} infinite values; pass finite scores (use NaN for a "
                         f"missing score, or clip logits).")
    return s


def _same_length(y: np.ndarray, s: np.ndarray, name: str) -> None:
    if s.shape[-1] != y.shape[0]:
        hint = " (transpose it?)" if s.ndim == 2 and s.shape[0] == y.shape[0] else ""
        raise InputError(f"y_true has {y.shape[0]} cases but {name} has shape {s.shape}{hint}; "
                         f"pass one score per case.")


def _classes(y: np.ndarray, n_excluded: int, need: str, what: str) -> None:
    """Raise if ``y`` lacks a class that ``need`` ('both' | 'pos' | 'neg' | 'any') requires."""
    n_pos = int(np.count_nonzero(y))
    n_neg = y.size - n_pos
    after = f" after excluding {n_excluded} NaN scores" if n_excluded else ""
    if y.size == 0:
        raise InputError(f"no cases to score{after}; {what} needs at least one case. "
                         f"Check the scores or widen the exam filter.")
    missing = {"both": n_pos == 0 or n_neg == 0, "pos": n_pos == 0, "neg": n_neg == 0,
               "any": False}[need]
    if missing:
        lack = "both" if need == "both" else ("positives" if need == "pos" else "negatives")
        raise InputError(f"y_true has one class only ({n_neg} negatives, {n_pos} positives{after});"
                         f" {what} needs {lack}. Check the label column or widen the exam filter.")


def _binary(y_true, y_score, *, need: str = "both", what: str = "AUC"):
    """The door for one model: (y bool, s float64 without NaN, n_excluded)."""
    y = _labels(y_true)
    s = _scores(y_score, "y_score", 1)
    _same_length(y, s, "y_score")
    keep = ~np.isnan(s)
    n_excluded = int(y.size - np.count_nonzero(keep))
    if n_excluded:
        y, s = y[keep], s[keep]
    _classes(y, n_excluded, need, what)
    return y, s, n_excluded


def _multi(y_true, scores, name: str = "scores"):
    """The door for k models on the same cases: (y, S (k, n) float64 without NaN, n_excluded)."""
    y = _labels(y_true)
    s = _scores(scores, name, 2)
    if s.shape[0] == 0:
        raise InputError(f"{name} has no models (shape {s.shape}); pass at least one row")
    _same_length(y, s, name)
    keep = ~np.isnan(s).any(axis=0)
    n_excluded = int(y.size - np.count_nonzero(keep))
    if n_excluded:
        y, s = y[keep], s[:, keep]
    _classes(y, n_excluded, "both", "AUC")
    return y, np.ascontiguousarray(s), n_excluded


def _warn_excluded(n_excluded: int, where: str) -> None:
    if n_excluded:
        warnings.warn(f"{where}: {n_excluded} cases with a NaN score were excluded",
                      ExcludedScoresWarning, stacklevel=3)


def _check_alpha(alpha) -> float:
    if not isinstance(alpha, (int, float, np.floating)) or not 0 < alpha < 1:
        raise InputError(f"alpha must lie in (0, 1), e.g. 0.05 for a 95% interval; got {alpha!r}")
    return float(alpha)


def _check_target(target, what: str) -> float:
    if not isinstance(target, (int, float, np.floating)) or not 0 <= target <= 1:
        raise InputError(f"target must be a {what} in [0, 1] (e.g. 0.9, not 90); got {target!r}")
    return float(target)


# ---------------------------------------------------------------------------- AUC and ROC

def roc_auc(y_true, y_score) -> float:
    """Area under the ROC curve, ties counted one half (Mann-Whitney U / (m n)).

    Parameters
    ----------
    y_true : array-like of shape (n_cases,)
        0/1 or bool; 1 = cancer.
    y_score : array-like of shape (n_cases,)
        Higher = more suspicious; NaN = no score (excluded, with an ExcludedScoresWarning).

    Returns
    -------
    float
        P(score of a random cancer > score of a random normal) + P(tie) / 2.

    Examples
    --------
    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y, s, n_excluded = _binary(y_true, y_score)
    _warn_excluded(n_excluded, "roc_auc")
    return _auc(y, s)


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    twice = np.searchsorted(neg, pos, "left").sum() + np.searchsorted(neg, pos, "right").sum()
    return float(twice / (2 * pos.size * neg.size))   # exact: an integer over 2 m n


def _counts_at_thresholds(y: np.ndarray, s: np.ndarray):
    """Distinct scores in decreasing order with tp and fp counts at score >= each of them."""
    order = np.argsort(s)[::-1]
    s_sorted = s[order]
    last = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), s.size - 1]
    tps = np.cumsum(y[order], dtype=np.int64)[last]
    fps = last + 1 - tps
    return s_sorted[last], tps, fps


def roc_curve(y_true, y_score, *, drop_intermediate: bool = False):
    """ROC points at every distinct score.

    Parameters
    ----------
    y_true : array-like of shape (n_cases,)
        0/1 or bool; 1 = cancer.
    y_score : array-like of shape (n_cases,)
        Higher = more suspicious; NaN = no score (excluded, with an ExcludedScoresWarning).
    drop_intermediate : bool, default False
        Drop points on straight segments (they do not change the curve; scikit-learn's rule).
        Use it to chart a million cases.

    Returns
    -------
    fpr, tpr : ndarray of shape (n_points,)
        ``fpr[i]``, ``tpr[i]`` are the rates of calling a case positive at
        ``score >= thresholds[i]``; the curve starts at (0, 0) and ends at (1, 1).
    thresholds : ndarray of shape (n_points,)
        Decreasing; ``thresholds[0] = +inf`` (nothing called positive), then the distinct scores.
    """
    y, s, n_excluded = _binary(y_true, y_score, what="the ROC curve")
    _warn_excluded(n_excluded, "roc_curve")
    thresholds, tps, fps = _counts_at_thresholds(y, s)
    if drop_intermediate and tps.size > 2:
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        thresholds, tps, fps = thresholds[keep], tps[keep], fps[keep]
    return (np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]], np.r_[np.inf, thresholds])


# ---------------------------------------------------------------------------- DeLong

def _placements(y: np.ndarray, scores: np.ndarray):
    """DeLong's structural components (placement values) of k models on the same cases.

    Returns aucs (k,), v10 (k, m) and v01 (k, n): ``v10[r, i]`` is the share of negatives that
    positive i outranks under model r (ties one half), ``v01[r, j]`` the share of positives that
    outrank negative j; each row's mean is that model's AUC.

    This is Sun & Xu's (2014) midrank algorithm, O(n log n) per model: their
    ``v10 = (T_Z - T_X) / n`` (midrank among all cases minus midrank among positives) is the
    number of negatives below a positive plus half those tied with it, which one sort of all
    cases and a running count of positives give directly, without three separate rankings.
    """
    k = scores.shape[0]
    pos_idx, neg_idx = np.flatnonzero(y), np.flatnonzero(~y)
    v10, v01 = np.empty((k, pos_idx.size)), np.empty((k, neg_idx.size))
    aucs = np.array([_placements_one(y, scores[r], pos_idx, neg_idx, v10[r], v01[r])
                     for r in range(k)])
    return aucs, v10, v01


def _placements_one(y: np.ndarray, s: np.ndarray, pos_idx: np.ndarray, neg_idx: np.ndarray,
                    v10: np.ndarray, v01: np.ndarray) -> float:
    """One model: fills v10 (m,) and v01 (n,) in place and returns its AUC (exact rational)."""
    n_cases, m, n = s.size, pos_idx.size, neg_idx.size
    order = np.argsort(s)
    s_sorted = s[order]
    y_sorted = y[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])   # tie groups
    ends = np.r_[starts[1:], n_cases]
    cum_pos = np.zeros(n_cases + 1, dtype=np.int64)
    np.cumsum(y_sorted, out=cum_pos[1:])
    pos_lt, pos_le = cum_pos[starts], cum_pos[ends]      # positives below / up to the group
    neg_twice = (starts - pos_lt) + (ends - pos_le)      # 2 (negatives below + half tied)
    pos_twice = 2 * m - pos_lt - pos_le                  # 2 (positives above + half tied)
    sizes = ends - starts
    value = np.empty(n_cases)
    value[order] = np.where(y_sorted, np.repeat(neg_twice / (2 * n), sizes),
                            np.repeat(pos_twice / (2 * m), sizes))
    np.take(value, pos_idx, out=v10)
    np.take(value, neg_idx, out=v01)
    return int(np.dot(pos_le - pos_lt, neg_twice)) / (2 * m * n)


def _delong_cov(v10: np.ndarray, v01: np.ndarray) -> np.ndarray:
    """S10 / m + S01 / n (k, k); NaN with fewer than 2 positives or negatives (ddof = 1)."""
    k, m = v10.shape
    n = v01.shape[1]
    if m < 2 or n < 2:
        return np.full((k, k), np.nan)
    d10 = v10 - v10.mean(axis=1, keepdims=True)
    d01 = v01 - v01.mean(axis=1, keepdims=True)
    if k == 1:   # no BLAS for one model: a (1, n) gemm can wait ms on OpenBLAS's thread pool
        return np.array([[np.einsum("i,i", d10[0], d10[0]) / ((m - 1) * m)
                          + np.einsum("i,i", d01[0], d01[0]) / ((n - 1) * n)]])
    return (d10 @ d10.T) / ((m - 1) * m) + (d01 @ d01.T) / ((n - 1) * n)


def _z_test(estimate, se):
    """Two-sided z test, elementwise. se = 0: z = 0, p = 1 if estimate = 0, else z = ±inf, p = 0
    (identical models give a zero difference with zero variance: no evidence of a difference)."""
    estimate, se = np.asarray(estimate, float), np.asarray(se, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, estimate / se,
                     np.where(estimate == 0, 0.0, np.sign(estimate) * np.inf))
    z = np.where(np.isnan(se), np.nan, z)
    return z, 2 * ndtr(-np.abs(z))


def _normal_ci(estimate: float, var: float, alpha: float) -> tuple[float, float]:
    if not np.isfinite(var):
        return math.nan, math.nan
    half = float(ndtri(1 - alpha / 2)) * math.sqrt(max(var, 0.0))
    return max(0.0, estimate - half), min(1.0, estimate + half)


def delong_auc(y_true, y_score, *, alpha: float = 0.05) -> AUCResult:
    """AUC with DeLong variance and a (1 - alpha) normal confidence interval.

    Ties count one half, as in pROC, so results match pROC (``direction = "<"``) to rounding
    (why: reviewers check pROC first).

    Parameters
    ----------
    y_true : array-like of shape (n_cases,)
        0/1 or bool; 1 = cancer.
    y_score : array-like of shape (n_cases,)
        Higher = more suspicious; any monotone scale. NaN = no score (excluded, counted).
    alpha : float, default 0.05

    Returns
    -------
    AUCResult
        auc, var (= S10/m + S01/n), ci_low, ci_high clipped to [0, 1], n_pos, n_neg, n_excluded.
        var and the CI are NaN with fewer than 2 positives or 2 negatives.

    References
    ----------
    DeLong, DeLong & Clarke-Pearson (1988), Biometrics 44:837. Sun & Xu (2014), IEEE Signal
    Processing Letters 21:1389 (the O(n log n) algorithm).
    """
    alpha = _check_alpha(alpha)
    y, s, n_excluded = _binary(y_true, y_score)
    return _delong_result(y, s, alpha, n_excluded)


def _delong_result(y: np.ndarray, s: np.ndarray, alpha: float, n_excluded: int) -> AUCResult:
    aucs, v10, v01 = _placements(y, s[None, :])
    var = float(_delong_cov(v10, v01)[0, 0])
    low, high = _normal_ci(float(aucs[0]), var, alpha)
    return AUCResult(float(aucs[0]), var, low, high, v10.shape[1], v01.shape[1], n_excluded,
                     "delong")


def delong_covariance(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of k models on the same cases and their DeLong covariance matrix.

    Parameters
    ----------
    y_true : array-like of shape (n_cases,)
    scores : array-like of shape (k, n_cases)
        One row per model. A case with a NaN under any model is excluded for all (warned).

    Returns
    -------
    aucs : ndarray of shape (k,)
    cov : ndarray of shape (k, k)
        ``S10 / m + S01 / n``; ``cov[i, i]`` is ``delong_auc(y_true, scores[i]).var``.
    """
    y, s, n_excluded = _multi(y_true, scores)
    _warn_excluded(n_excluded, "delong_covariance")
    aucs, v10, v01 = _placements(y, s)
    return aucs, _delong_cov(v10, v01)


def delong_paired_test(y_true, score_a, score_b) -> PairedTest:
    """DeLong's test of AUC(a) = AUC(b) for two models scored on the same cases.

    Parameters
    ----------
    y_true, score_a, score_b : array-like of shape (n_cases,)
        A case with a NaN score under either model is excluded from both (``n_excluded``).

    Returns
    -------
    PairedTest
        auc_a, auc_b, diff = auc_a - auc_b, its se, z = diff / se and the two-sided p.
    """
    a, b = _scores(score_a, "score_a", 1), _scores(score_b, "score_b", 1)
    if a.size != b.size:
        raise InputError(f"score_a has {a.size} cases but score_b has {b.size}; "
                         f"paired tests need both models' scores on the same cases")
    y, s, n_excluded = _multi(y_true, np.vstack([a, b]), "score_a/score_b")
    aucs, v10, v01 = _placements(y, s)
    cov = _delong_cov(v10, v01)
    diff = float(aucs[0] - aucs[1])
    se = math.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0)) if np.isfinite(cov).all() \
        else math.nan
    z, p = _z_test(diff, se)
    return PairedTest(float(aucs[0]), float(aucs[1]), diff, se, float(z), float(p), n_excluded)


def delong_contrast_test(y_true, scores, contrast) -> ContrastTest:
    """DeLong's test of ``contrast @ aucs = 0`` for k models on the same cases.

    Parameters
    ----------
    y_true : array-like of shape (n_cases,)
    scores : array-like of shape (k, n_cases)
    contrast : array-like of shape (k,)
        E.g. ``[1, -0.5, -0.5]``: model 0 against the mean of models 1 and 2.

    Returns
    -------
    ContrastTest
        estimate = contrast @ aucs, se = sqrt(contrast @ cov @ contrast), z, two-sided p.
    """
    y, s, n_excluded = _multi(y_true, scores)
    try:
        c = np.asarray(contrast, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"contrast must be numeric weights, one per model; "
                         f"got {contrast!r}") from None
    if c.shape != (s.shape[0],):
        raise InputError(f"contrast must have one weight per model, shape ({s.shape[0]},); "
                         f"got shape {c.shape}")
    if not np.isfinite(c).all() or not c.any():
        raise InputError(f"contrast must be finite and not all zero; got {c.tolist()}")
    aucs, v10, v01 = _placements(y, s)
    cov = _delong_cov(v10, v01)
    estimate = float(c @ aucs)
    se = math.sqrt(max(float(c @ cov @ c), 0.0)) if np.isfinite(cov).all() else math.nan
    z, p = _z_test(estimate, se)
    return ContrastTest(estimate, se, float(z), float(p), n_excluded)


def delong_matrix(y_true, scores, names: Sequence[str], *, holm: bool = False) -> pd.DataFrame:
    """Paired DeLong tests for every pair of k models, as a long table.

    Parameters
    ----------
    y_true : array-like of shape (n_cases,)
    scores : array-like of shape (k, n_cases)
    names : sequence of k unique str
    holm : bool, default False
        Fill ``p_holm`` with Holm's step-down adjustment over the k (k - 1) / 2 pairs; when
        False ``p_holm`` is NaN.

    Returns
    -------
    DataFrame
        One row per pair i < j in the order of ``names``: model_a, model_b, auc_a, auc_b, diff,
        se, z, p, p_holm, n_excluded (cases left out for a NaN under any model).
    """
    y, s, n_excluded = _multi(y_true, scores)
    names = list(names) if not isinstance(names, str) else [names]
    if len(names) != s.shape[0] or len(set(names)) != len(names):
        raise InputError(f"names must hold one unique name per model ({s.shape[0]}); got {names}")
    aucs, v10, v01 = _placements(y, s)
    cov = _delong_cov(v10, v01)
    i, j = np.triu_indices(len(names), k=1)
    diff = aucs[i] - aucs[j]
    se = np.sqrt(np.maximum(cov[i, i] + cov[j, j] - 2 * cov[i, j], 0.0))
    z, p = _z_test(diff, se)
    return pd.DataFrame({
        "model_a": [names[a] for a in i], "model_b": [names[b] for b in j],
        "auc_a": aucs[i], "auc_b": aucs[j], "diff": diff, "se": se, "z": z, "p": p,
        "p_holm": _holm(p) if holm else np.full(i.size, np.nan),
        "n_excluded": np.full(i.size, n_excluded, dtype=np.int64),
    })


def unpaired_auc_test(a: AUCResult, b: AUCResult) -> UnpairedTest:
    """z test of AUC(a) = AUC(b) on disjoint groups (e.g. ILC vs IDC cancers, two sites).

    ``se = sqrt(a.var + b.var)``: the groups share no cases, so the covariance is zero. Valid for
    DeLong and bootstrap results alike; NaN when either variance is NaN.
    """
    for name, r in (("a", a), ("b", b)):
        if not isinstance(r, AUCResult):
            raise InputError(f"{name} must be an AUCResult (from delong_auc or bootstrap_auc); "
                             f"got {type(r).__name__}")
    diff = a.auc - b.auc
    se = math.sqrt(a.var + b.var) if np.isfinite(a.var + b.var) else math.nan
    z, p = _z_test(diff, se)
    return UnpairedTest(diff, se, float(z), float(p))


def holm_adjust(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values, as R's ``p.adjust(p, "holm")``.

    Parameters
    ----------
    pvalues : array-like of shape (n_tests,)
        In [0, 1]; NaN entries stay NaN and do not count as tests (as in R).

    Returns
    -------
    ndarray of shape (n_tests,)
        ``p_holm[i] >= pvalues[i]``, in [0, 1], in the input order.
    """
    p = _scores(pvalues, "pvalues", 1)
    if ((p < 0) | (p > 1)).any():
        raise InputError(f"pvalues must lie in [0, 1]; got {p[(p < 0) | (p > 1)][:5].tolist()}")
    return _holm(p)


def _holm(p: np.ndarray) -> np.ndarray:
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    steps = (ok.size - np.arange(ok.size)) * p[order]
    out[order] = np.minimum(np.maximum.accumulate(steps), 1.0)
    return out


# ---------------------------------------------------------------------------- bootstrap

def _resample_aucs(lo: np.ndarray, hi: np.ndarray, n: int, pos_draw: np.ndarray,
                   neg_draw: np.ndarray) -> np.ndarray:
    """AUCs of b resamples, given which positives and negatives each one drew.

    ``lo[i]`` / ``hi[i]``: negatives (sorted) strictly below / at most positive i's score.
    ``pos_draw`` (b, m) and ``neg_draw`` (b, n): indices into positives / sorted negatives.
    A resample is a count per case; the negatives' cumulative counts at lo and hi give, for every
    positive, how many drawn negatives it outranks, so no resample is sorted and the sums stay
    integers (exact): AUC = sum_i w_i (C[lo_i] + C[hi_i]) / (2 m n).
    """
    b, m = pos_draw.shape
    rows = np.arange(b)[:, None]
    # Negative j of row r counts in bin r (n + 1) + j + 1, so one flat cumsum (fast, unlike an
    # axis-1 cumsum) gives cum[r, j] = drawn negatives below sorted position j, plus r n.
    u = np.bincount((neg_draw + (rows * (n + 1) + 1)).ravel(), minlength=b * (n + 1))
    cum = np.cumsum(u).reshape(b, n + 1) - rows * n
    w = np.bincount((pos_draw + rows * m).ravel(), minlength=b * m).reshape(b, m)
    twice = np.take(cum, lo, axis=1) + np.take(cum, hi, axis=1)   # take: 7x faster than cum[:, lo]
    return np.einsum("ij,ij->i", w, twice) / (2 * m * n)


def _bootstrap_aucs(y: np.ndarray, s: np.ndarray, n_boot: int, rng: np.random.Generator,
                    progress: ProgressFn | None = None) -> np.ndarray:
    """n_boot stratified resamples (positives and negatives drawn separately, with replacement)."""
    pos, neg = s[y], np.sort(s[~y])
    m, n = pos.size, neg.size
    lo, hi = np.searchsorted(neg, pos, "left"), np.searchsorted(neg, pos, "right")
    chunk = max(1, min(n_boot, _BOOT_CHUNK // (m + n)))
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        neg_draw = rng.integers(0, n, size=(b, n), dtype=np.uint32)   # uint32: 3x faster draws
        pos_draw = rng.integers(0, m, size=(b, m), dtype=np.uint32)
        out[start:start + b] = _resample_aucs(lo, hi, n, pos_draw, neg_draw)
        report(progress, start + b, n_boot, "bootstrap resamples")
    return out


def bootstrap_auc(y_true, y_score, *, n_boot: int = 2000, alpha: float = 0.05,
                  seed: int | np.random.Generator = 0,
                  progress: ProgressFn | None = None) -> AUCResult:
    """AUC with a stratified bootstrap percentile interval.

    Each resample draws m positives from the positives and n negatives from the negatives, with
    replacement, so every resample has both classes (pROC's ``boot.stratified = TRUE``).

    Parameters
    ----------
    y_true, y_score : array-like of shape (n_cases,)
        As in :func:`delong_auc`.
    n_boot : int, default 2000
    alpha : float, default 0.05
        The interval is the alpha/2 and 1 - alpha/2 quantiles of the resampled AUCs (linear
        interpolation, R's type 7).
    seed : int or numpy Generator, default 0
        The same seed and data give the same interval.
    progress : ProgressFn, optional
        Called as ``progress(done, total, message)`` after each chunk of resamples.

    Returns
    -------
    AUCResult
        auc of the full sample, var = variance of the resampled AUCs (ddof = 1), method
        ``'bootstrap'``.
    """
    alpha = _check_alpha(alpha)
    n_boot = _check_n_boot(n_boot)
    y, s, n_excluded = _binary(y_true, y_score)
    return _bootstrap_result(y, s, int(n_boot), alpha, seed, n_excluded, progress)


def _check_n_boot(n_boot) -> int:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 2:
        raise InputError(f"n_boot must be an integer >= 2 (2000 is usual); got {n_boot!r}")
    return int(n_boot)


def _bootstrap_result(y: np.ndarray, s: np.ndarray, n_boot: int, alpha: float, seed,
                      n_excluded: int, progress: ProgressFn | None = None) -> AUCResult:
    aucs = _bootstrap_aucs(y, s, n_boot, np.random.default_rng(seed), progress)
    low, high = np.quantile(aucs, [alpha / 2, 1 - alpha / 2])
    m = int(np.count_nonzero(y))
    return AUCResult(_auc(y, s), float(np.var(aucs, ddof=1)), float(low), float(high), m,
                     y.size - m, n_excluded, "bootstrap")


# ---------------------------------------------------------------------------- operating points

def _rate(num: int, den: int) -> float:
    return num / den if den else math.nan   # math.nan: one object, so equal results compare equal


def confusion_at(y_true, y_score, threshold: float) -> Confusion:
    """Counts and rates when every case with ``score >= threshold`` is called positive.

    Parameters
    ----------
    y_true, y_score : array-like of shape (n_cases,)
        One class only is allowed here (the other class's rates are NaN).
    threshold : float
        ±inf allowed (+inf: nothing positive; -inf: everything).

    Returns
    -------
    Confusion
        tp, fp, tn, fn; sensitivity = tp / (tp + fn), specificity = tn / (tn + fp),
        ppv = tp / (tp + fp), npv = tn / (tn + fn), accuracy; NaN on an empty denominator.
    """
    if not isinstance(threshold, (int, float, np.integer, np.floating)) or np.isnan(threshold):
        raise InputError(f"threshold must be a number (positive iff score >= threshold); "
                         f"got {threshold!r}")
    y, s, n_excluded = _binary(y_true, y_score, need="any", what="a confusion matrix")
    called = s >= threshold
    tp = int(np.count_nonzero(called & y))
    fp = int(np.count_nonzero(called)) - tp
    n_pos = int(np.count_nonzero(y))
    fn, tn = n_pos - tp, y.size - n_pos - fp
    return Confusion(float(threshold), tp, fp, tn, fn, _rate(tp, tp + fn), _rate(tn, tn + fp),
                     _rate(tp, tp + fp), _rate(tn, tn + fn), _rate(tp + tn, y.size), n_excluded)


def threshold_for_specificity(y_true, y_score, target: float) -> float:
    """The lowest threshold (an observed score or +inf) whose specificity is >= ``target``.

    The lowest such threshold gives the highest sensitivity at that specificity (the study's
    operating points at 90 % and 98 % specificity). Specificity is computed as in
    :func:`confusion_at`, so ``confusion_at(y, s, t).specificity >= target`` holds exactly.
    Needs negatives; NaN scores are excluded with an ExcludedScoresWarning.
    """
    target = _check_target(target, "specificity")
    y, s, n_excluded = _binary(y_true, y_score, need="neg", what="a specificity")
    _warn_excluded(n_excluded, "threshold_for_specificity")
    thresholds, _, fps = _counts_at_thresholds(y, s)
    n_neg = int(fps[-1])
    thresholds, fps = np.r_[np.inf, thresholds], np.r_[0, fps]
    ok = np.flatnonzero((n_neg - fps) / n_neg >= target)   # specificity falls along the array
    return float(thresholds[ok[-1]])                        # ok is never empty: spec(+inf) = 1


def threshold_for_sensitivity(y_true, y_score, target: float) -> float:
    """The highest threshold (an observed score or +inf) whose sensitivity is >= ``target``.

    The highest such threshold gives the highest specificity at that sensitivity. Needs
    positives; NaN scores are excluded with an ExcludedScoresWarning.
    """
    target = _check_target(target, "sensitivity")
    y, s, n_excluded = _binary(y_true, y_score, need="pos", what="a sensitivity")
    _warn_excluded(n_excluded, "threshold_for_sensitivity")
    thresholds, tps, _ = _counts_at_thresholds(y, s)
    n_pos = int(tps[-1])
    thresholds, tps = np.r_[np.inf, thresholds], np.r_[0, tps]
    return float(thresholds[np.flatnonzero(tps / n_pos >= target)[0]])   # sens(lowest) = 1


# ---------------------------------------------------------------------------- frames

def _require(frame, columns: Sequence[str], what: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"{what} needs a pandas DataFrame; got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"{what}: the scores frame lacks column(s) {missing}; it needs "
                         f"{list(columns)} (the store's long scores frame)")


def aggregate_scores(frame: pd.DataFrame, *, level: str, how: str = "max") -> pd.DataFrame:
    """Image-level scores to breast or exam level, per model (and per test set if present).

    Parameters
    ----------
    frame : DataFrame
        The long scores frame at image level (columns model, case_id, exam_id, laterality,
        image_id, label, histology, score, optionally test_set).
    level : {'image', 'breast', 'exam'}
        'image' returns the frame unchanged (a copy).
    how : {'max', 'mean'}, default 'max'
        Over a case's views; NaN scores are ignored, a case whose scores are all NaN stays NaN.

    Returns
    -------
    DataFrame
        The same columns at ``level``, one row per (test_set, model, case) in order of first
        appearance: case_id = f"{exam_id}/{laterality}" (breast) or exam_id (exam); laterality
        is None at exam level and image_id None at both; label = max over the case (missing
        labels are ignored; all missing stays missing); histology the most specific among its
        parts (ILC, else IDC, else other, else unknown, else none, as the store's exam truth;
        a missing histology counts as unknown). Other columns are dropped.
    """
    if level not in LEVELS:
        raise InputError(f"level must be one of {list(LEVELS)}; got {level!r}")
    if how not in ("max", "mean"):
        raise InputError(f"how must be 'max' or 'mean' (over a case's views); got {how!r}")
    _require(frame, FRAME_COLUMNS, "aggregate_scores")
    if level == "image":
        return frame.copy()
    _labels(frame["label"].dropna(), "label")   # a missing label stays missing (NA) here
    _scores(frame["score"], "score", 1)
    rank = pd.Series(range(len(_HISTOLOGY_PRIORITY)), index=list(_HISTOLOGY_PRIORITY))
    hist = frame["histology"].fillna("unknown").map(rank)
    if hist.isna().any():
        bad = sorted(map(str, frame.loc[hist.isna(), "histology"].unique()))[:5]
        raise InputError(f"histology has values outside {list(HISTOLOGIES)}: {bad}; map them first")
    keys = (["test_set"] if "test_set" in frame.columns else []) + ["model", "exam_id"]
    if level == "breast":
        lat = frame["laterality"]
        if not lat.isin(["L", "R"]).all():
            bad = sorted(map(str, lat[~lat.isin(["L", "R"])].unique()))[:5]
            raise InputError(f"laterality must be 'L' or 'R' for breast level; got {bad}")
        keys.append("laterality")
    grouped = frame.assign(_hist=hist.astype(np.int64)).groupby(keys, sort=False, dropna=False)
    out = grouped.agg(label=("label", "max"), _hist=("_hist", "max"),
                      score=("score", how)).reset_index()
    if level == "breast":
        out["case_id"] = out["exam_id"].astype(str) + "/" + out["laterality"].astype(str)
    else:
        out["case_id"] = out["exam_id"]
        out["laterality"] = None
    out["image_id"] = None
    out["histology"] = np.asarray(_HISTOLOGY_PRIORITY, dtype=object)[out["_hist"].to_numpy()]
    out["score"] = out["score"].astype(np.float64)
    columns = list(FRAME_COLUMNS) + (["test_set"] if "test_set" in frame.columns else [])
    return out[columns]


def auc_table(scores: pd.DataFrame, *, ci: str = "delong", alpha: float = 0.05,
              n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One AUC row per (test set, model) of a long scores frame.

    Parameters
    ----------
    scores : DataFrame
        Columns model, label, score, optionally test_set (any level; aggregate first).
    ci : {'delong', 'bootstrap', 'none'}, default 'delong'
    alpha, n_boot, seed :
        As in :func:`delong_auc` / :func:`bootstrap_auc`; every row uses the same seed, so a
        row does not change when other models are added.

    Returns
    -------
    DataFrame
        Columns test_set (None without that column), model, n_pos, n_neg, n_excluded, auc,
        ci_low, ci_high, note; rows in order of first appearance. A group with one class gets
        NaN auc and note "n/a: no positives" / "n/a: no negatives" ("n/a: no scored cases" if
        every score is NaN); a DeLong CI with < 2 positives or negatives is NaN with a note.
    """
    if ci not in ("delong", "bootstrap", "none"):
        raise InputError(f"ci must be 'delong', 'bootstrap' or 'none'; got {ci!r}")
    alpha = _check_alpha(alpha)
    n_boot = _check_n_boot(n_boot) if ci == "bootstrap" else n_boot
    _require(scores, ("model", "label", "score"), "auc_table")
    y_all = _labels(scores["label"], "label")
    s_all = _scores(scores["score"], "score", 1)
    if "test_set" in scores.columns:
        ts_codes, ts_names = pd.factorize(scores["test_set"], use_na_sentinel=False)
    else:
        ts_codes, ts_names = np.zeros(len(scores), np.intp), np.array([None], dtype=object)
    model_codes, model_names = pd.factorize(scores["model"], use_na_sentinel=False)
    group = ts_codes * len(model_names) + model_codes       # (test set, model) in first-seen order
    order = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.r_[True, np.diff(group[order]) != 0, True])
    rows = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        idx = order[start:stop]
        ts, model = divmod(int(group[idx[0]]), len(model_names))
        y, s = y_all[idx], s_all[idx]
        keep = ~np.isnan(s)
        row = {"test_set": ts_names[ts], "model": model_names[model]}
        rows.append(row | _auc_row(y[keep], s[keep], idx.size - int(keep.sum()), ci, alpha,
                                   n_boot, seed))
    columns = ["test_set", "model", "n_pos", "n_neg", "n_excluded", "auc", "ci_low", "ci_high",
               "note"]
    return pd.DataFrame(rows, columns=columns).astype(
        {"n_pos": np.int64, "n_neg": np.int64, "n_excluded": np.int64})


def _auc_row(y: np.ndarray, s: np.ndarray, n_excluded: int, ci: str, alpha: float, n_boot: int,
             seed) -> dict:
    """One auc_table row; one class only becomes a note instead of the InputError."""
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0 or n_pos == y.size:
        note = ("n/a: no scored cases" if y.size == 0 else
                "n/a: no positives" if n_pos == 0 else "n/a: no negatives")
        return {"n_pos": n_pos, "n_neg": y.size - n_pos, "n_excluded": n_excluded,
                "auc": math.nan, "ci_low": math.nan, "ci_high": math.nan, "note": note}
    if ci == "delong":
        r = _delong_result(y, s, alpha, n_excluded)
    elif ci == "bootstrap":
        r = _bootstrap_result(y, s, n_boot, alpha, seed, n_excluded)
    else:
        r = AUCResult(_auc(y, s), math.nan, math.nan, math.nan, n_pos, y.size - n_pos,
                      n_excluded, "none")
    note = ("CI n/a: DeLong needs 2 positives and 2 negatives"
            if ci == "delong" and math.isnan(r.ci_low) else "")
    return {"n_pos": r.n_pos, "n_neg": r.n_neg, "n_excluded": n_excluded, "auc": r.auc,
            "ci_low": r.ci_low, "ci_high": r.ci_high, "note": note}
