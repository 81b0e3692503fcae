"""Paired tests for two models scored on the same cases: McNemar for yes/no outcomes (hit or
miss), Wilcoxon's signed-rank test for continuous ones (best Dice)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

from core.errors import InputError

__all__ = ["McNemarResult", "WilcoxonResult", "mcnemar_test", "wilcoxon_test"]

EXACT_BELOW = 25  # discordant pairs: below this the chi-square approximation is poor


@dataclass(frozen=True)
class McNemarResult:
    """``b``: cases a got right and b wrong; ``c``: the reverse; ``n``: pairs; ``method``:
    'exact' (two-sided binomial, p = 0.5 on the b + c discordant pairs) or 'chi2' (with
    Edwards' continuity correction); ``statistic``: min(b, c) or the chi-square."""

    n: int
    b: int
    c: int
    statistic: float
    p_value: float
    method: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class WilcoxonResult:
    """``n``: pairs; ``n_nonzero``: pairs that differ (zeros are dropped, Wilcoxon's way);
    ``median_difference``: median of a - b over all pairs; ``statistic``: the smaller rank sum;
    ``p_value`` two-sided (NaN when no pair differs)."""

    n: int
    n_nonzero: int
    median_difference: float
    statistic: float
    p_value: float

    def to_dict(self) -> dict:
        return asdict(self)


def mcnemar_test(a, b) -> McNemarResult:
    """McNemar's test of paired binary outcomes (exact binomial below 25 discordant pairs).

    Parameters
    ----------
    a, b : array-like of shape (n_cases,), bool or 0/1   the two models' outcomes per case.
    """
    x, y = _pair(a, b, "a", "b")
    if not (np.isin(x, (0, 1)).all() and np.isin(y, (0, 1)).all()):
        raise InputError("a and b must be 0/1 or bool outcomes per case; got other values")
    x, y = x.astype(bool), y.astype(bool)
    nb, nc = int((x & ~y).sum()), int((~x & y).sum())
    if nb + nc < EXACT_BELOW:
        p = 1.0 if nb + nc == 0 else float(sps.binomtest(min(nb, nc), nb + nc, 0.5).pvalue)
        return McNemarResult(len(x), nb, nc, float(min(nb, nc)), p, "exact")
    chi2 = (abs(nb - nc) - 1) ** 2 / (nb + nc)
    return McNemarResult(len(x), nb, nc, chi2, float(sps.chi2.sf(chi2, 1)), "chi2")


def wilcoxon_test(a, b) -> WilcoxonResult:
    """Wilcoxon's signed-rank test of paired values (two-sided; scipy's exact or normal method).

    Parameters
    ----------
    a, b : array-like of shape (n_cases,), float   the two models' values per case.
    """
    x, y = _pair(a, b, "a", "b")
    d = x - y
    nonzero = int(np.count_nonzero(d))
    median = float(np.median(d)) if d.size else float("nan")
    if nonzero == 0:
        return WilcoxonResult(len(d), 0, median, float("nan"), float("nan"))
    res = sps.wilcoxon(d[d != 0])
    return WilcoxonResult(len(d), nonzero, median, float(res.statistic), float(res.pvalue))


def _pair(a, b, name_a: str, name_b: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise InputError(f"{name_a} has {x.size} cases and {name_b} {y.size}; a paired test "
                         "needs the same cases in the same order")
    if np.isnan(x).any() or np.isnan(y).any():
        raise InputError(f"{name_a} or {name_b} holds NaN; pass complete pairs only")
    return x, y
