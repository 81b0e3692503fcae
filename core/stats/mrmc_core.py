"""The arithmetic behind `mrmc_test`: placements, leave-one-out AUCs, covariances, OR and DBM.

Private helpers on clean arrays: ``y`` bool (n_cases,), ratings float64 (n_readers,
n_modalities, n_cases) with NaN only where the method allows missing reads. Reader-modality
pairs are flattened reader-major: row ``a = reader * n_modalities + modality``.

Why placements: a positive i's placement ``v10[i]`` is the share of negatives it outranks, so
the AUC with positive i left out is ``(m AUC - v10[i]) / (m - 1)`` (and likewise for a
negative): every leave-one-out AUC of a reader-modality comes from one sort, not c sorts.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

from core.stats.bootstrap import _BOOT_CHUNK, _resample_aucs
from core.stats.delong import _placements

# ---------------------------------------------------------------- placements and covariances


def _study_placements(y: np.ndarray, flat: np.ndarray):
    """AUCs (k,), v10 (k, m), v01 (k, n) of k reader-modalities; NaN placement = case not read.

    Complete rows share one call of DeLong's O(n log n) placements; a row with missing reads
    gets its placements from the cases it read.
    """
    read = ~np.isnan(flat)
    if read.all():
        return _placements(y, flat)
    k = flat.shape[0]
    aucs = np.empty(k)
    v10, v01 = np.full((k, int(y.sum())), np.nan), np.full((k, int((~y).sum())), np.nan)
    for a in range(k):
        keep = read[a]
        auc, p10, p01 = _placements(y[keep], flat[a, keep][None, :])
        aucs[a] = auc[0]
        v10[a, keep[y]] = p10[0]
        v01[a, keep[~y]] = p01[0]
    return aucs, v10, v01


def _jackknife_aucs(y: np.ndarray, aucs: np.ndarray, v10: np.ndarray,
                    v01: np.ndarray) -> np.ndarray:
    """Leave-one-out AUCs (k, n_cases): column c is every reader-modality's AUC without case c."""
    m, n = v10.shape[1], v01.shape[1]
    loo = np.empty((aucs.size, y.size))
    loo[:, y] = (m * aucs[:, None] - v10) / (m - 1)
    loo[:, ~y] = (n * aucs[:, None] - v01) / (n - 1)
    return loo


def _gram(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b.T for a few rows (k ~ 20) and many cases, without BLAS: a (k, c) gemm waits on
    OpenBLAS's thread pool, which on shared cores costs more than the sums themselves."""
    return np.einsum("ic,jc->ij", a, b)


def _jackknife_cov(loo: np.ndarray) -> np.ndarray:
    """Jackknife covariance (k, k) of the AUCs: (c - 1) / c times the sum of cross-products."""
    c = loo.shape[1]
    d = loo - loo.mean(axis=1, keepdims=True)
    return (c - 1) / c * _gram(d, d)


def _shared_cov(v: np.ndarray) -> np.ndarray:
    """One class's DeLong term for k AUCs whose case sets may differ (NaN = not read).

    ``cov[a, b] = m_ab / (m_a m_b) * S_ab``: S_ab the sample covariance (ddof = 1) of the
    placements over the m_ab cases both read. Complete data give DeLong's ``S10 / m``; pairs
    sharing fewer than two cases (split-plot blocks) contribute zero.
    """
    w = (~np.isnan(v)).astype(np.float64)
    x = np.where(w > 0, v, 0.0)
    shared = _gram(w, w)
    sums = _gram(x, w)                     # sums[a, b] = sum of a's placements over shared cases
    with np.errstate(divide="ignore", invalid="ignore"):
        s_ab = (_gram(x, x) - sums * sums.T / shared) / (shared - 1)
        out = shared / np.outer(w.sum(1), w.sum(1)) * s_ab
    return np.where(shared >= 2, out, 0.0)


def _delong_study_cov(v10: np.ndarray, v01: np.ndarray) -> np.ndarray:
    """DeLong covariance (k, k) of k AUCs, missing reads allowed."""
    return _shared_cov(v10) + _shared_cov(v01)


def _bootstrap_cov(y: np.ndarray, flat: np.ndarray, n_boot: int, seed) -> np.ndarray:
    """Covariance (k, k, ddof = 1) of the k AUCs over stratified case resamples.

    All reader-modalities see the same resampled cases (the pairing the covariances need);
    each resample is counted, not sorted (`core.stats.bootstrap._resample_aucs`).
    """
    rng = np.random.default_rng(seed)
    pos_s, neg_s = flat[:, y], flat[:, ~y]
    k, m, n = flat.shape[0], pos_s.shape[1], neg_s.shape[1]
    order = np.argsort(neg_s, axis=1)
    rank = np.empty_like(order)                    # rank[a, j]: sorted position of negative j
    np.put_along_axis(rank, order, np.arange(n)[None, :].repeat(k, 0), axis=1)
    sorted_neg = np.take_along_axis(neg_s, order, axis=1)
    lo = np.array([np.searchsorted(sorted_neg[a], pos_s[a], "left") for a in range(k)])
    hi = np.array([np.searchsorted(sorted_neg[a], pos_s[a], "right") for a in range(k)])
    chunk = max(1, min(n_boot, _BOOT_CHUNK // (m + n)))
    boot = np.empty((n_boot, k))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        neg_draw = rng.integers(0, n, size=(b, n))
        pos_draw = rng.integers(0, m, size=(b, m))
        for a in range(k):
            boot[start:start + b, a] = _resample_aucs(lo[a], hi[a], n, pos_draw,
                                                      rank[a][neg_draw])
    return np.cov(boot, rowvar=False, ddof=1).reshape(k, k)


def _or_covariances(cov: np.ndarray, n_readers: int, n_modalities: int) -> dict:
    """Var, Cov1 (same reader), Cov2 (same modality), Cov3 (neither): averages over the pairs
    of the (k, k) covariance, and each modality's var and cov2 (arrays of n_modalities)."""
    r, t = n_readers, n_modalities
    c4 = cov.reshape(r, t, r, t)
    same_r = np.broadcast_to(np.eye(r, dtype=bool)[:, None, :, None], c4.shape)
    same_t = np.broadcast_to(np.eye(t, dtype=bool)[None, :, None, :], c4.shape)
    diag = np.einsum("ijij->ij", c4)                                   # (r, t)
    within = np.einsum("itjt->t", c4)                                  # sum over reader pairs
    nan_t = np.full(t, np.nan)
    return {"var": float(c4[same_r & same_t].mean()),
            "cov1": float(c4[same_r & ~same_t].mean()),
            "cov2": float(c4[~same_r & same_t].mean()) if r > 1 else math.nan,
            "cov3": float(c4[~same_r & ~same_t].mean()) if r > 1 else math.nan,
            "var_t": diag.mean(axis=0),
            "cov2_t": (within - diag.sum(axis=0)) / (r * (r - 1)) if r > 1 else nan_t}


# ---------------------------------------------------------------- mean squares


def _ms(ss: float, df: int) -> float:
    return ss / df if df > 0 else math.nan


def _two_way_ms(theta: np.ndarray) -> dict:
    """Reader x modality mean squares of the AUCs (n_readers, n_modalities)."""
    r, t = theta.shape
    g, mean_t, mean_r = theta.mean(), theta.mean(axis=0), theta.mean(axis=1)
    resid = theta - mean_r[:, None] - mean_t[None, :] + g
    return {"ms_t": _ms(r * ((mean_t - g) ** 2).sum(), t - 1),
            "ms_r": _ms(t * ((mean_r - g) ** 2).sum(), r - 1),
            "ms_tr": _ms((resid ** 2).sum(), (t - 1) * (r - 1)),
            "ms_r_t": ((theta - mean_t) ** 2).sum(axis=0) / (r - 1) if r > 1
            else np.full(t, np.nan)}


def _three_way_ms(y3: np.ndarray) -> dict:
    """DBM's ANOVA of pseudovalues (n_readers, n_modalities, n_cases), one value per cell."""
    r, t, c = y3.shape
    g = y3.mean()
    m_r, m_t, m_c = y3.mean(axis=(1, 2)), y3.mean(axis=(0, 2)), y3.mean(axis=(0, 1))
    m_rt, m_rc, m_tc = y3.mean(axis=2), y3.mean(axis=1), y3.mean(axis=0)
    e_rt = m_rt - m_r[:, None] - m_t[None, :] + g
    e_rc = m_rc - m_r[:, None] - m_c[None, :] + g
    e_tc = m_tc - m_t[:, None] - m_c[None, :] + g
    e = (y3 - m_rt[:, :, None] - m_rc[:, None, :] - m_tc[None, :, :] + m_r[:, None, None]
         + m_t[None, :, None] + m_c[None, None, :] - g)
    # per modality: the reader x case ANOVA of that modality's pseudovalues
    mt_r, mt_c = y3.mean(axis=2), y3.mean(axis=0)                     # (r, t), (t, c)
    e_t = y3 - mt_r[:, :, None] - mt_c[None, :, :] + m_t[None, :, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"ms_t": _ms(r * c * ((m_t - g) ** 2).sum(), t - 1),
                "ms_r": _ms(t * c * ((m_r - g) ** 2).sum(), r - 1),
                "ms_c": _ms(r * t * ((m_c - g) ** 2).sum(), c - 1),
                "ms_tr": _ms(c * (e_rt ** 2).sum(), (t - 1) * (r - 1)),
                "ms_tc": _ms(r * (e_tc ** 2).sum(), (t - 1) * (c - 1)),
                "ms_rc": _ms(t * (e_rc ** 2).sum(), (r - 1) * (c - 1)),
                "ms_trc": _ms((e ** 2).sum(), (t - 1) * (r - 1) * (c - 1)),
                "ms_r_t": c * ((mt_r - m_t) ** 2).sum(axis=0) / (r - 1),
                "ms_c_t": r * ((mt_c - m_t[:, None]) ** 2).sum(axis=1) / (c - 1),
                "ms_rc_t": (e_t ** 2).sum(axis=(0, 2)) / ((r - 1) * (c - 1))}


# ---------------------------------------------------------------- the tests


def _hillis_df(den: float, ms_error: float, df_error: float) -> float:
    """Hillis's (2007) denominator df: den^2 / (ms_error^2 / df_error); inf when ms_error = 0."""
    if ms_error == 0:
        return math.inf
    return den ** 2 / (ms_error ** 2 / df_error)


def _or_test(theta: np.ndarray, cv: dict, analysis: str) -> dict:
    """Obuchowski-Rockette test on the AUCs (n_readers, n_modalities) and covariances ``cv``.

    Returns the statistic, df1, df2 (inf for a chi-square), the variance of one modality mean
    difference (``var_diff``) with its df, and per-modality (var, df) arrays.
    """
    r, t = theta.shape
    ms = _two_way_ms(theta)
    cov23 = max(cv["cov2"] - cv["cov3"], 0.0) if r > 1 else 0.0
    if analysis == "rrrc":
        den = ms["ms_tr"] + r * cov23
        df2 = _hillis_df(den, ms["ms_tr"], (t - 1) * (r - 1))
        cov2_t = np.maximum(cv["cov2_t"], 0.0)
        var_t = ms["ms_r_t"] / r + cov2_t
        with np.errstate(divide="ignore", invalid="ignore"):
            df_t = np.where(ms["ms_r_t"] > 0, (ms["ms_r_t"] + r * cov2_t) ** 2
                            / (ms["ms_r_t"] ** 2 / (r - 1)), np.inf)
        stat, name = ms["ms_t"] / den, "F"
    elif analysis == "frrc":
        den = cv["var"] - cv["cov1"] + (r - 1) * cov23
        df2 = math.inf
        var_t = cv["var_t"] / r + ((r - 1) / r * cv["cov2_t"] if r > 1 else 0.0)
        df_t = np.full(t, np.inf)
        stat, name = (t - 1) * ms["ms_t"] / den, "chi2"
    else:   # rrfc
        den = ms["ms_tr"]
        df2 = (t - 1) * (r - 1)
        var_t, df_t = ms["ms_r_t"] / r, np.full(t, r - 1.0)
        stat, name = ms["ms_t"] / den, "F"
    return {"stat": stat, "stat_name": name, "df1": t - 1, "df2": df2, "var_diff": 2 * den / r,
            "df_diff": df2, "var_t": var_t, "df_t": df_t, "ms": ms}


def _or_components(ms: dict, cv: dict, t: int) -> dict:
    """OR variance components from the expected mean squares (Hillis 2005, table 1)."""
    var_tr = ms["ms_tr"] - (cv["var"] - cv["cov1"] - cv["cov2"] + cv["cov3"])
    var_r = (ms["ms_r"] - var_tr - cv["var"] - (t - 1) * cv["cov1"] + cv["cov2"]
             + (t - 1) * cv["cov3"]) / t
    return {"var_R": var_r, "var_TR": var_tr, "cov1": cv["cov1"], "cov2": cv["cov2"],
            "cov3": cv["cov3"], "var_error": cv["var"]}


def _dbm_test(ms: dict, r: int, c: int, t: int, analysis: str) -> dict:
    """Dorfman-Berbaum-Metz test from the pseudovalue ANOVA, Hillis's df for RRRC.

    Variances are put back on the AUC scale (divided by r c), so CIs read like OR's.
    """
    if analysis == "rrrc":
        den = ms["ms_tr"] + max(ms["ms_tc"] - ms["ms_trc"], 0.0)
        df2 = _hillis_df(den, ms["ms_tr"], (t - 1) * (r - 1))
        extra = np.maximum(ms["ms_c_t"] - ms["ms_rc_t"], 0.0)
        num_t = ms["ms_r_t"] + extra
        with np.errstate(divide="ignore", invalid="ignore"):
            df_t = np.where(ms["ms_r_t"] > 0, num_t ** 2 / (ms["ms_r_t"] ** 2 / (r - 1)), np.inf)
    elif analysis == "frrc":
        den, df2 = ms["ms_tc"], (t - 1) * (c - 1)
        num_t, df_t = ms["ms_c_t"], np.full(t, c - 1.0)
    else:   # rrfc
        den, df2 = ms["ms_tr"], (t - 1) * (r - 1)
        num_t, df_t = ms["ms_r_t"], np.full(t, r - 1.0)
    return {"stat": ms["ms_t"] / den, "stat_name": "F", "df1": t - 1, "df2": df2,
            "var_diff": 2 * den / (r * c), "df_diff": df2, "var_t": num_t / (r * c),
            "df_t": df_t, "ms": ms}


def _dbm_components(ms: dict, r: int, c: int, t: int) -> dict:
    """DBM variance components of the pseudovalues (expected mean squares of the RRRC model)."""
    return {"var_R": (ms["ms_r"] - ms["ms_tr"] - ms["ms_rc"] + ms["ms_trc"]) / (t * c),
            "var_C": (ms["ms_c"] - ms["ms_tc"] - ms["ms_rc"] + ms["ms_trc"]) / (t * r),
            "var_TR": (ms["ms_tr"] - ms["ms_trc"]) / c,
            "var_TC": (ms["ms_tc"] - ms["ms_trc"]) / r,
            "var_RC": (ms["ms_rc"] - ms["ms_trc"]) / t,
            "var_error": ms["ms_trc"]}


def _p_value(stat: float, name: str, df1: float, df2: float) -> float:
    if not np.isfinite(stat):
        return math.nan if np.isnan(stat) else 0.0
    if name == "chi2" or math.isinf(df2):
        return float(sps.chi2.sf(stat * (df1 if name == "F" else 1), df1))
    return float(sps.f.sf(stat, df1, df2))


def _t_quantile(q: float, df: float) -> float:
    """t quantile; the normal one for df = inf (FRRC, or a zero error mean square)."""
    return float(sps.norm.ppf(q) if math.isinf(df) else sps.t.ppf(q, df))


def _two_sided_p(stat: float, df: float) -> float:
    if np.isnan(stat):
        return math.nan
    return float(2 * (sps.norm.sf(abs(stat)) if math.isinf(df) else sps.t.sf(abs(stat), df)))
