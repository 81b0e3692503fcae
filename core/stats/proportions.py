"""Confidence intervals for proportions (sensitivity, specificity, recall rates)."""
from __future__ import annotations

import numpy as np
from scipy.stats import norm

from core.errors import InputError
from core.validation import check_alpha

__all__ = ["wilson_ci"]


def wilson_ci(k, n, alpha: float = 0.05):
    """Wilson score interval for a proportion k / n (no continuity correction).

    Preferred over the Wald interval because screening proportions sit near 0 or 1 (specificity
    98 %, a few caught cancers) where Wald leaves [0, 1] and undercovers. Same as statsmodels'
    ``proportion_confint(k, n, alpha, method="wilson")``.

    Parameters
    ----------
    k, n : int or array-like of int   successes and trials; n == 0 gives (nan, nan).

    Returns
    -------
    (low, high) : floats, or arrays shaped like the broadcast of k and n; within [0, 1].
    """
    alpha = check_alpha(alpha)
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    if np.any(k < 0) or np.any(k > n):
        raise InputError(f"wilson_ci needs 0 <= k <= n, got k={k}, n={n}")
    z = norm.ppf(1 - alpha / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        denom = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z / denom * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low = np.where(n > 0, np.clip(np.where(k == 0, 0.0, centre - half), 0, 1), np.nan)
    high = np.where(n > 0, np.clip(np.where(k == n, 1.0, centre + half), 0, 1), np.nan)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high
