"""The AUC and the ROC curve of one model (ties count one half)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.stats._arrays import _binary, _warn_excluded

__all__ = ["AUCResult", "roc_auc", "roc_curve"]


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
