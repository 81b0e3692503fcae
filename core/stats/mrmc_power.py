"""Readers and cases for a two-modality MRMC study, from a pilot's variance components.

Hillis, Obuchowski & Berbaum (2011), Acad Radiol 18:129: under the OR model the test statistic
is approximately a noncentral F with noncentrality ``lambda = r d^2 / (2 den)``, ``den = var_TR
+ (c*/c) (Var - Cov1 + (r - 1) (Cov2 - Cov3))`` and Hillis's df; the error covariances shrink
as 1/c (``c*`` = the pilot's cases), the reader variances do not. Only three numbers enter:
var_TR, Var - Cov1 and Cov2 - Cov3, so DBM components (pseudovalue scale) convert exactly.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real

import numpy as np
import pandas as pd
from scipy import stats as sps

from core.errors import InputError
from core.validation import check_alpha, check_choice, check_fraction, check_positive_int

__all__ = ["sample_size", "mrmc_power"]

_OR_KEYS = ("var_TR", "var_error", "cov1", "cov2", "cov3")


def _pilot(var_components, n_cases_pilot) -> tuple[float, float, float, int]:
    """(var_TR, Var - Cov1, Cov2 - Cov3, pilot cases) from an MRMCResult or an OR mapping."""
    comps = getattr(var_components, "components", var_components)
    if not isinstance(comps, Mapping):
        raise InputError(f"var_components must be an MRMCResult or a mapping with {_OR_KEYS}; "
                         f"got {type(var_components).__name__}")
    if n_cases_pilot is None:
        n_cases_pilot = (var_components.n_pos + var_components.n_neg
                         if hasattr(var_components, "n_pos") else comps.get("n_cases"))
    c_pilot = check_positive_int(n_cases_pilot, name="n_cases_pilot", minimum=2)
    if getattr(var_components, "method", "or") == "dbm":
        # pseudovalue components: var_TC = c (Cov2 - Cov3), var_error = c (Var - Cov1 - Cov2
        # + Cov3), var_TR equal to OR's (Hillis et al. 2005)
        out = (comps["var_TR"], (comps["var_error"] + comps["var_TC"]) / c_pilot,
               comps["var_TC"] / c_pilot)
    else:
        missing = [k for k in _OR_KEYS if k not in comps]
        if missing:
            raise InputError(f"var_components lacks {missing}; pass an MRMCResult or OR "
                             f"components {_OR_KEYS} (AUC scale) with n_cases_pilot")
        out = (comps["var_TR"], comps["var_error"] - comps["cov1"],
               comps["cov2"] - comps["cov3"])
    if not all(math.isfinite(float(x)) for x in out):
        raise InputError(f"var_components has non-finite values {out}; a pilot with 1 reader "
                         f"has no Cov2, Cov3 or var_TR")
    return float(out[0]), float(out[1]), float(out[2]), c_pilot


def mrmc_power(var_tr: float, var_minus_cov1: float, cov2_minus_cov3: float, *, effect: float,
               n_readers: int, n_cases: float, n_cases_pilot: int, alpha: float = 0.05,
               analysis: str = "rrrc") -> float:
    """Power of the two-modality OR test (AUC difference ``effect``) for r readers, c cases.

    Negative var_TR and Cov2 - Cov3 count as zero, as in the test's own denominator.
    """
    r, scale = n_readers, n_cases_pilot / n_cases
    tr, c23 = max(var_tr, 0.0), max(cov2_minus_cov3, 0.0)
    vc1 = scale * var_minus_cov1
    err = tr + vc1 - scale * c23                      # E[MS(TR)]
    if analysis == "rrfc":
        den, ddf = err, r - 1.0
    else:
        den = (0.0 if analysis == "frrc" else tr) + vc1 + (r - 1) * scale * c23
        ddf = math.inf if analysis == "frrc" or err <= 0 else den ** 2 / (err ** 2 / (r - 1))
    if den <= 0:
        return 1.0
    lam = r * effect ** 2 / (2 * den)
    if math.isinf(ddf):
        return float(sps.ncx2.sf(sps.chi2.ppf(1 - alpha, 1), 1, lam))
    return float(sps.ncf.sf(sps.f.ppf(1 - alpha, 1, ddf), 1, ddf, lam))


def _int_list(values, name: str, minimum: int) -> list[int]:
    values = [values] if isinstance(values, (int, np.integer)) else list(values)
    if not values:
        raise InputError(f"{name} is empty; pass at least one number")
    return [check_positive_int(v, name=name, minimum=minimum) for v in values]


def sample_size(var_components, *, effect: float, n_readers=(4, 6, 8, 10), n_cases=None,
                alpha: float = 0.05, power: float = 0.8, analysis: str = "rrrc",
                n_cases_pilot: int | None = None, max_cases: int = 100_000) -> pd.DataFrame:
    """Power of a two-modality reader study by readers and cases (Hillis-Obuchowski).

    Parameters
    ----------
    var_components : MRMCResult (OR or DBM) or mapping
        A pilot's components; a mapping holds OR's var_TR, var_error, cov1, cov2, cov3 (AUC
        scale) and ``n_cases`` or the argument ``n_cases_pilot``.
    effect : float
        The AUC difference to detect (e.g. 0.05); its sign does not matter.
    n_readers : int or sequence of int, default (4, 6, 8, 10)
    n_cases : int or sequence of int, optional
        Given: the power of every (readers, cases) pair. None: for each number of readers the
        fewest cases (up to ``max_cases``) that reach ``power``; NA when none do (reader
        variability alone then caps the power: add readers).
    alpha, power : floats in (0, 1)
    analysis : 'rrrc', 'frrc' or 'rrfc'

    Returns
    -------
    DataFrame with columns n_readers, n_cases (Int64), power; the same case mix (prevalence)
    as the pilot is assumed.
    """
    alpha = check_alpha(alpha)
    target = check_fraction(power, name="power", what="target power")
    if not 0 < target < 1:
        raise InputError(f"power must lie strictly between 0 and 1, e.g. 0.8; got {power!r}")
    analysis = check_choice(analysis, ("rrrc", "frrc", "rrfc"), name="analysis")
    if isinstance(effect, bool) or not isinstance(effect, Real) or not math.isfinite(effect) \
            or not 0 < abs(effect) < 1:
        raise InputError(f"effect must be an AUC difference with 0 < |effect| < 1, e.g. 0.05; "
                         f"got {effect!r}")
    tr, vc1, c23, c_pilot = _pilot(var_components, n_cases_pilot)
    readers = _int_list(n_readers, "n_readers", 1 if analysis == "frrc" else 2)
    max_cases = check_positive_int(max_cases, name="max_cases", minimum=2)

    def pw(r: int, c: int) -> float:
        return mrmc_power(tr, vc1, c23, effect=float(effect), n_readers=r, n_cases=c,
                          n_cases_pilot=c_pilot, alpha=alpha, analysis=analysis)

    rows = []
    if n_cases is not None:
        cases = _int_list(n_cases, "n_cases", 2)
        rows = [(r, c, pw(r, c)) for r in readers for c in cases]
    else:
        for r in readers:
            if pw(r, max_cases) < target:
                rows.append((r, pd.NA, pw(r, max_cases)))
                continue
            lo, hi = 2, max_cases                  # power rises with c: bisect for the fewest
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if pw(r, mid) >= target else (mid + 1, hi)
            rows.append((r, lo, pw(r, lo)))
    out = pd.DataFrame(rows, columns=["n_readers", "n_cases", "power"])
    out["n_cases"] = out["n_cases"].astype("Int64")
    return out
