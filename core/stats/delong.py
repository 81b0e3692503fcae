"""DeLong's variance and covariance of AUCs, and the tests built on them.

One AUC with its interval (`delong_auc`), k models on the same cases (`delong_covariance`,
`delong_paired_test`, `delong_contrast_test`, `delong_matrix` with Holm's adjustment), and two
AUCs on disjoint groups of cases (`unpaired_auc_test`). Placement values by Sun & Xu's
O(n log n) algorithm; results equal pROC's with ``direction = "<"``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

from core.errors import InputError
from core.stats._arrays import _binary, _multi, _scores, _warn_excluded
from core.stats.auc import AUCResult
from core.validation import check_alpha

__all__ = ["PairedTest", "ContrastTest", "UnpairedTest", "delong_auc", "delong_covariance",
           "delong_paired_test", "delong_contrast_test", "delong_matrix", "unpaired_auc_test",
           "holm_adjust"]


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
    alpha = check_alpha(alpha)
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
