"""Operating points: the confusion matrix at a threshold, and the threshold for a target rate.

A case is called positive iff its score is ``>= threshold``; the study reports sensitivity at
90 % and 98 % specificity.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.errors import InputError
from core.stats._arrays import _binary, _warn_excluded
from core.stats.auc import _counts_at_thresholds
from core.validation import check_fraction

__all__ = ["Confusion", "confusion_at", "threshold_for_specificity", "threshold_for_sensitivity"]


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
    target = check_fraction(target, name="target", what="specificity")
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
    target = check_fraction(target, name="target", what="sensitivity")
    y, s, n_excluded = _binary(y_true, y_score, need="pos", what="a sensitivity")
    _warn_excluded(n_excluded, "threshold_for_sensitivity")
    thresholds, tps, _ = _counts_at_thresholds(y, s)
    n_pos = int(tps[-1])
    thresholds, tps = np.r_[np.inf, thresholds], np.r_[0, tps]
    return float(thresholds[np.flatnonzero(tps / n_pos >= target)[0]])   # sens(lowest) = 1
