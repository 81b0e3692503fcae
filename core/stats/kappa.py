"""Cohen's weighted kappa: agreement between two ordinal raters (density categories)."""
from __future__ import annotations

import numpy as np

from core.errors import InputError
from core.validation import check_choice

KAPPA_WEIGHTS = ("linear", "quadratic")


def weighted_kappa(confusion, weights: str = "linear") -> float:
    """Cohen's weighted kappa of a (k, k) confusion matrix (scikit-learn's definition).

    Parameters
    ----------
    confusion : array-like of shape (k, k)   counts; rows one rater, columns the other.
    weights : 'linear' or 'quadratic'         disagreement |i - j| or (i - j)**2.

    NaN when the expected disagreement is zero (e.g. one category only on both sides).
    """
    cm = np.asarray(confusion, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.sum() <= 0:
        raise InputError(f"confusion has shape {cm.shape} / total {cm.sum()}; pass a square count matrix")
    check_choice(weights, KAPPA_WEIGHTS, name="weights")
    expected = np.outer(cm.sum(axis=1), cm.sum(axis=0)) / cm.sum()
    if (_weights(cm.shape[0], weights) * expected).sum() <= 0:
        return float("nan")
    return float(weighted_kappas(cm, weights))


def weighted_kappas(cm: np.ndarray, weights: str) -> np.ndarray:
    """Weighted kappa of a stack of float64 confusion matrices (..., k, k), unchecked.

    For searches over many candidate cut points at once; a zero expected disagreement gives
    NaN or -inf (callers rank with it, and both lose to any real kappa)."""
    w = _weights(cm.shape[-1], weights)
    n = cm.sum(axis=(-1, -2), keepdims=True)
    expected = cm.sum(axis=-1, keepdims=True) * cm.sum(axis=-2, keepdims=True) / n
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 - (w * cm).sum(axis=(-1, -2)) / (w * expected).sum(axis=(-1, -2))


def _weights(k: int, weights: str) -> np.ndarray:
    idx = np.arange(k)
    w = np.abs(idx[:, None] - idx[None, :]).astype(np.float64)
    return w**2 if weights == "quadratic" else w
