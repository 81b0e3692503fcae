"""Multi-reader multi-case (MRMC) ROC analysis: do readers' AUCs differ between modalities?

Readers and cases are both random samples in a reader study (radiologists reading the same
mammograms unaided and aided by a model); the test of the modality difference must carry both
sources of variance, which a per-reader DeLong test does not. Implemented here:

* `auc_matrix`: the empirical (Mann-Whitney, trapezoidal) AUC per reader and modality;
* `mrmc_test`: Obuchowski-Rockette (OR) with Hillis's denominator df and the AUC covariances
  by jackknife, DeLong or bootstrap, or Dorfman-Berbaum-Metz (DBM) on jackknife pseudovalues;
  random readers and cases (RRRC), fixed readers (FRRC) or fixed cases (RRFC);
* `model_vs_readers`: a model as a fixed reader against the random readers' mean AUC.

`sample_size` (in ``mrmc_power``) turns pilot variance components into readers and cases.
Conventions are ``core.stats``'s: truth 1 = cancer, higher rating = more suspicious, ties count
one half. A NaN rating is a missing read: OR with DeLong covariance allows missing reads and
split-plot designs (each AUC on the cases its reader read); the jackknife, the bootstrap and DBM
need every reader to read every case and say so.

References: Obuchowski & Rockette (1995) Commun Stat Simul 24:285; Hillis (2007) Stat Med
26:596; Hillis, Obuchowski, Schartz & Berbaum (2005) Stat Med 24:1579 (OR = DBM with jackknife
covariance); Dorfman, Berbaum & Metz (1992) Invest Radiol 27:723; Hillis (2008) Acad Radiol 15:647.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from core.errors import InputError
from core.stats._arrays import _as_array, _labels
from core.stats.mrmc_core import (_bootstrap_cov, _dbm_components, _dbm_test, _delong_study_cov,
                                  _jackknife_aucs, _jackknife_cov, _or_components, _or_covariances,
                                  _or_test, _p_value, _study_placements, _t_quantile,
                                  _three_way_ms, _two_sided_p)
from core.validation import check_alpha, check_choice, check_n_boot

__all__ = ["MRMCResult", "ModelVsReadersResult", "auc_matrix", "mrmc_test", "model_vs_readers",
           "MRMC_METHODS", "MRMC_COVARIANCES", "MRMC_ANALYSES"]

MRMC_METHODS = ("or", "dbm")
MRMC_COVARIANCES = ("jackknife", "delong", "bootstrap")
MRMC_ANALYSES = ("rrrc", "frrc", "rrfc")
_ANALYSIS_WORDS = {"rrrc": "random readers and cases", "frrc": "fixed readers, random cases",
                   "rrfc": "random readers, fixed cases"}


def _fmt_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def _f3(x: float) -> str:
    """Three decimals without a negative zero (-0.0004 reads 0.000)."""
    return f"{round(x, 3) + 0.0:.3f}"


@dataclass(frozen=True)
class MRMCResult:
    """One MRMC test. AUCs are empirical; differences are later modality minus earlier one.

    auc : DataFrame (n_readers, n_modalities), index = readers, columns = modalities.
    modality_auc : DataFrame, one row per modality: auc (mean over readers), se, df, ci_low,
        ci_high (the mean's interval under ``analysis``; not clipped to [0, 1]).
    differences : DataFrame, one row per pair i < j: modality_a, modality_b, diff = mean(b) -
        mean(a), se, df (inf = normal), stat (t or z), p, ci_low, ci_high.
    statistic, statistic_name ('F' or 'chi2'), df1, df2 (inf for chi2), p : the global test of
        equal modality means.
    components : OR: var_R, var_TR, cov1, cov2, cov3, var_error (AUC scale); DBM: var_R, var_C,
        var_TR, var_TC, var_RC, var_error (pseudovalue scale).
    mean_squares : the ANOVA mean squares the test used (AUCs for OR, pseudovalues for DBM).
    n_excluded : cases no reader read in any modality (left out).
    """

    auc: pd.DataFrame
    modality_auc: pd.DataFrame
    differences: pd.DataFrame
    statistic: float
    statistic_name: str
    df1: float
    df2: float
    p: float
    components: dict
    mean_squares: dict
    method: str
    cov: str
    analysis: str
    alpha: float
    n_pos: int
    n_neg: int
    n_excluded: int = 0

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.auc.columns)

    @property
    def readers(self) -> tuple[str, ...]:
        return tuple(self.auc.index)

    @property
    def diff(self) -> float:
        """The first difference (modality 1 minus modality 0)."""
        return float(self.differences["diff"].iloc[0])

    @property
    def diff_ci(self) -> tuple[float, float]:
        row = self.differences.iloc[0]
        return float(row["ci_low"]), float(row["ci_high"])

    def summary(self) -> str:
        """One plain sentence: the means, the difference with its CI, p and the analysis."""
        words, level = _ANALYSIS_WORDS[self.analysis], round(100 * (1 - self.alpha))
        means = self.modality_auc["auc"]
        if math.isnan(self.p):
            return self._untestable()
        if len(means) == 2:
            a, b = self.modalities
            d, (lo, hi) = self.diff, self.diff_ci
            verb = "rose" if d > 0 else ("fell" if d < 0 else "stayed")
            return (f"With {b} instead of {a}, readers' mean AUC {verb} from {_f3(means[a])} "
                    f"to {_f3(means[b])} (difference {_f3(d)}, {level} % CI {_f3(lo)} to "
                    f"{_f3(hi)}, {_fmt_p(self.p)}, {words})")
        best, worst = means.idxmax(), means.idxmin()
        df = f"{self.df1:g}" + ("" if math.isinf(self.df2) else f", {self.df2:.1f}")
        return (f"Readers' mean AUC across {len(means)} modalities ranged from {means[worst]:.3f}"
                f" ({worst}) to {means[best]:.3f} ({best}) ({self.statistic_name}({df}) = "
                f"{self.statistic:.2f}, {_fmt_p(self.p)}, {words})")

    def _untestable(self) -> str:
        """Why no p-value exists: the test divides by a variance that is zero here."""
        aucs = self.auc.to_numpy(dtype=np.float64)
        if np.ptp(aucs) == 0:
            why = (f"every reader's AUC is {_f3(aucs.flat[0])} in every modality, so the AUCs "
                   "have no variance to measure a difference against")
            if aucs.flat[0] == 0.5:
                why += " (ratings that never separate cancers from the others, e.g. all equal)"
        else:
            why = ("the variance the test divides by is zero or undefined (readers and cases "
                   "leave no variation between modalities to measure)")
        return (f"The study cannot be tested: {why}; check that the ratings were read from the "
                "right column, or add readers or cases")

    def tables(self) -> dict[str, pd.DataFrame]:
        """reader_auc (long), modalities, differences, components, test: plain DataFrames."""
        long = self.auc.rename_axis("reader").reset_index().melt(
            id_vars="reader", var_name="modality", value_name="auc")
        test = pd.DataFrame([{"method": self.method, "cov": self.cov, "analysis": self.analysis,
                              "statistic": self.statistic_name, "value": self.statistic,
                              "df1": self.df1, "df2": self.df2, "p": self.p,
                              "n_readers": len(self.readers), "n_pos": self.n_pos,
                              "n_neg": self.n_neg, "n_excluded": self.n_excluded}])
        return {"reader_auc": long,
                "modalities": self.modality_auc.rename_axis("modality").reset_index(),
                "differences": self.differences.copy(),
                "components": pd.DataFrame({"component": list(self.components),
                                            "estimate": list(self.components.values())}),
                "test": test}


@dataclass(frozen=True)
class ModelVsReadersResult:
    """A model (fixed) against the random readers' mean AUC, on the same cases.

    diff = model_auc - readers_mean, with se, df (Hillis), t, two-sided p and the CI;
    components: ms_R (variance of the per-reader differences, ddof 1), var and cov2 of the
    differences' case-sampling errors (same reader / different readers).
    """

    reader_auc: pd.Series
    model_auc: float
    model: str
    readers_mean: float
    diff: float
    se: float
    df: float
    t: float
    p: float
    ci_low: float
    ci_high: float
    components: dict
    cov: str
    alpha: float
    n_pos: int
    n_neg: int

    def summary(self) -> str:
        level = round(100 * (1 - self.alpha))
        verb = "above" if self.diff > 0 else ("below" if self.diff < 0 else "equal to")
        return (f"{self.model}'s AUC {_f3(self.model_auc)} was {verb} the readers' mean AUC "
                f"{_f3(self.readers_mean)} (difference {_f3(self.diff)}, {level} % CI "
                f"{_f3(self.ci_low)} to {_f3(self.ci_high)}, {_fmt_p(self.p)}, random readers "
                f"and cases, the model fixed)")

    def tables(self) -> dict[str, pd.DataFrame]:
        readers = self.reader_auc.rename_axis("reader").rename("auc").reset_index()
        test = pd.DataFrame([{"model": self.model, "model_auc": self.model_auc,
                              "readers_mean": self.readers_mean, "diff": self.diff,
                              "se": self.se, "df": self.df, "t": self.t, "p": self.p,
                              "ci_low": self.ci_low, "ci_high": self.ci_high, "cov": self.cov}])
        return {"reader_auc": readers, "test": test,
                "components": pd.DataFrame({"component": list(self.components),
                                            "estimate": list(self.components.values())})}


# ---------------------------------------------------------------- the door


def _names(names, n: int, what: str, prefix: str) -> list[str]:
    if names is None:
        return [f"{prefix} {i + 1}" for i in range(n)]
    names = [names] if isinstance(names, str) else [str(x) for x in names]
    if len(names) != n or len(set(names)) != n:
        raise InputError(f"{what} must hold {n} unique names, one per {prefix}; got {names}")
    return names


def _numeric(values, name: str, ndim: int, shape_words: str) -> np.ndarray:
    arr = _as_array(values)
    if arr.dtype.kind in "USV" or (arr.dtype.kind == "O" and any(
            isinstance(x, (str, bytes)) for x in arr.flat)):
        raise InputError(f"{name} must be numeric (higher = more suspicious); got dtype "
                         f"{arr.dtype}. Map ordinal labels (e.g. BI-RADS) to numbers first.")
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numeric; got dtype {arr.dtype}") from None
    if arr.ndim != ndim:
        raise InputError(f"{name} must have shape {shape_words}; got shape {arr.shape}")
    if np.isinf(arr).any():
        raise InputError(f"{name} has infinite values; pass finite ratings (NaN = missing read)")
    return arr


def _check_study(ratings, truth, what: str):
    """(y bool (c,), ratings (r, t, c) float64, n_excluded): cases nobody read are dropped."""
    s = _numeric(ratings, "ratings", 3, "(n_readers, n_modalities, n_cases)")
    y = _labels(truth, "truth")
    if s.shape[2] != y.size:
        raise InputError(f"ratings has {s.shape[2]} cases (shape {s.shape}) but truth has "
                         f"{y.size}; pass one truth per case, in the ratings' case order")
    read = ~np.isnan(s)
    unread = ~read.any(axis=(0, 1))
    if unread.any():
        y, s, read = y[~unread], s[:, :, ~unread], read[:, :, ~unread]
    empty = np.argwhere(~read.any(axis=2))
    if empty.size:
        r, t = empty[0]
        raise InputError(f"ratings[{r}, {t}, :] is all NaN: reader index {r} read nothing in "
                         f"modality index {t}; {what} needs every reader to read cases in every "
                         f"modality. Drop that reader or modality.")
    for r, t in np.ndindex(s.shape[:2]):
        n_pos = int(np.count_nonzero(y & read[r, t]))
        if n_pos == 0 or n_pos == int(read[r, t].sum()):
            raise InputError(f"ratings[{r}, {t}, :] covers cases of one class only "
                             f"({n_pos} positives of {int(read[r, t].sum())}); an AUC needs "
                             f"both. Check truth or the reads.")
    return y, s, int(unread.sum())


def auc_matrix(ratings, truth, *, case_mask=None) -> np.ndarray:
    """Empirical AUC per reader and modality, each on the cases its reader read.

    Parameters
    ----------
    ratings : array-like of shape (n_readers, n_modalities, n_cases)
        Higher = more suspicious; NaN = not read.
    truth : array-like of shape (n_cases,)
        0/1 or bool, 1 = cancer.
    case_mask : array-like of bool, shape (n_cases,), optional
        A case subgroup (ILC only, dense only): the AUCs on those cases.

    Returns
    -------
    ndarray of shape (n_readers, n_modalities)
    """
    s = _numeric(ratings, "ratings", 3, "(n_readers, n_modalities, n_cases)")
    if case_mask is not None:
        mask = np.asarray(case_mask)
        if mask.dtype != bool or mask.shape != (s.shape[2],):
            raise InputError(f"case_mask must be bool of shape ({s.shape[2]},), one per case; "
                             f"got dtype {mask.dtype}, shape {mask.shape}")
        y = _labels(truth, "truth")
        if y.size == mask.size:          # else _check_study names the mismatch
            s, truth = s[:, :, mask], y[mask]
    y, s, _ = _check_study(s, truth, "auc_matrix")
    r, t, c = s.shape
    return _study_placements(y, s.reshape(r * t, c))[0].reshape(r, t)


def _covariance(y, flat, cov: str, n_boot: int, seed):
    """(aucs (k,), covariance (k, k), leave-one-out AUCs (k, c) or None)."""
    aucs, v10, v01 = _study_placements(y, flat)
    if cov == "delong":
        return aucs, _delong_study_cov(v10, v01), None
    if cov == "bootstrap":
        return aucs, _bootstrap_cov(y, flat, n_boot, seed), None
    loo = _jackknife_aucs(y, aucs, v10, v01)
    return aucs, _jackknife_cov(loo), loo


def _needs_complete(s: np.ndarray, y: np.ndarray, method: str, cov: str) -> None:
    n_missing = int(np.isnan(s).sum())
    if n_missing and (method == "dbm" or cov != "delong"):
        r, t, c = np.argwhere(np.isnan(s))[0]
        name = "DBM" if method == "dbm" else f"OR with {cov} covariance"
        raise InputError(f"ratings has {n_missing} missing reads (NaN; the first: ratings[{r}, "
                         f"{t}, {c}]); {name} needs every reader to read every "
                         f"case. Use method='or', cov='delong' (it allows missing reads and "
                         f"split-plot designs), or drop the incomplete cases.")
    if cov == "jackknife" or method == "dbm":
        m = int(y.sum())
        if min(m, y.size - m) < 2:
            raise InputError(f"the jackknife needs at least 2 positives and 2 negatives; got "
                             f"{m} and {y.size - m}")


def mrmc_test(ratings, truth, *, modalities=None, readers=None, method: str = "or",
              cov: str = "jackknife", analysis: str = "rrrc", alpha: float = 0.05,
              n_boot: int = 2000, seed: int = 0) -> MRMCResult:
    """Test whether readers' mean AUC differs between modalities (MRMC ROC analysis).

    Parameters
    ----------
    ratings : array-like of shape (n_readers, n_modalities, n_cases)
        Each reader's rating of each case in each modality; NaN = not read (OR with DeLong
        covariance only).
    truth : array-like of shape (n_cases,)
        0/1 or bool, 1 = cancer; a missing truth is an error.
    modalities, readers : sequences of unique names, optional
        Default "modality 1", ... and "reader 1", ...
    method : 'or' (Obuchowski-Rockette) or 'dbm' (Dorfman-Berbaum-Metz pseudovalues)
    cov : 'jackknife', 'delong' or 'bootstrap' (OR only; DBM is built on the jackknife)
    analysis : 'rrrc' (generalise to readers and cases), 'frrc' (these readers), 'rrfc'
        (these cases)
    alpha : float, default 0.05
    n_boot, seed : the bootstrap's resamples and seed (cov='bootstrap' only).

    Returns
    -------
    MRMCResult
    """
    alpha = check_alpha(alpha)
    method = check_choice(method, MRMC_METHODS, name="method")
    cov = check_choice(cov, MRMC_COVARIANCES, name="cov")
    analysis = check_choice(analysis, MRMC_ANALYSES, name="analysis")
    n_boot = check_n_boot(n_boot)
    if method == "dbm" and cov != "jackknife":
        raise InputError(f"cov {cov!r} does not apply to method 'dbm' (DBM is built on jackknife "
                         f"pseudovalues); pass cov='jackknife' or method='or'")
    y, s, n_excluded = _check_study(ratings, truth, "mrmc_test")
    r, t, c = s.shape
    modalities = _names(modalities, t, "modalities", "modality")
    readers = _names(readers, r, "readers", "reader")
    if t < 2:
        raise InputError(f"ratings has 1 modality (shape {s.shape}); mrmc_test compares "
                         f"modalities and needs at least 2. For readers against a model use "
                         f"model_vs_readers.")
    if r < 2 and analysis != "frrc":
        raise InputError(f"ratings has 1 reader; analysis {analysis!r} treats readers as a "
                         f"random sample and needs at least 2. Use analysis='frrc' for one "
                         f"reader.")
    _needs_complete(s, y, method, cov)
    aucs, k_cov, loo = _covariance(y, s.reshape(r * t, c), cov, n_boot, seed)
    theta = aucs.reshape(r, t)
    if method == "or":
        cv = _or_covariances(k_cov, r, t)
        res = _or_test(theta, cv, analysis)
        components = _or_components(res["ms"], cv, t)
        mean_squares = {k: v for k, v in res["ms"].items() if k != "ms_r_t"}
    else:
        pseudo = (c * aucs[:, None] - (c - 1) * loo).reshape(r, t, c)
        ms = _three_way_ms(pseudo)
        res = _dbm_test(ms, r, c, t, analysis)
        components = _dbm_components(ms, r, c, t)
        mean_squares = {k: v for k, v in ms.items() if not k.endswith("_t")}
    return _result(theta, res, readers, modalities, method, cov, analysis, alpha, y,
                   n_excluded, components, mean_squares)


def _result(theta, res, readers, modalities, method, cov, analysis, alpha, y, n_excluded,
            components, mean_squares) -> MRMCResult:
    means = theta.mean(axis=0)
    q = 1 - alpha / 2
    se, df = math.sqrt(max(res["var_diff"], 0.0)), float(res["df_diff"])
    half = _t_quantile(q, df) * se
    rows = []
    for (i, a), (j, b) in combinations(enumerate(modalities), 2):
        d = float(means[j] - means[i])
        stat = d / se if se > 0 else (0.0 if d == 0 else math.copysign(math.inf, d))
        rows.append((a, b, d, se, df, stat, _two_sided_p(stat, df) if se > 0 else float(d == 0),
                     d - half, d + half))
    se_t = np.sqrt(np.maximum(res["var_t"], 0.0))
    half_t = np.array([_t_quantile(q, df) for df in res["df_t"]]) * se_t
    per_mod = pd.DataFrame({"auc": means, "se": se_t, "df": res["df_t"],
                            "ci_low": means - half_t, "ci_high": means + half_t},
                           index=pd.Index(modalities, name="modality"))
    stat = float(res["stat"])
    diffs = pd.DataFrame(rows, columns=["modality_a", "modality_b", "diff", "se", "df", "stat",
                                        "p", "ci_low", "ci_high"])
    auc = pd.DataFrame(theta, index=pd.Index(readers, name="reader"),
                       columns=pd.Index(modalities, name="modality"))
    m = int(y.sum())
    return MRMCResult(auc, per_mod, diffs, stat, res["stat_name"], float(res["df1"]),
                      float(res["df2"]), _p_value(stat, res["stat_name"], res["df1"], res["df2"]),
                      {k: float(v) for k, v in components.items()},
                      {k: float(v) for k, v in mean_squares.items()}, method, cov, analysis,
                      alpha, m, y.size - m, n_excluded)


def model_vs_readers(reader_ratings, model_scores, truth, *, cov: str = "jackknife",
                     alpha: float = 0.05, readers=None, model: str = "model",
                     n_boot: int = 2000, seed: int = 0) -> ModelVsReadersResult:
    """A model's standalone AUC against the mean AUC of random readers on the same cases.

    The model is a fixed "reader": the per-reader differences model - reader get Hillis's
    single-modality OR analysis (random readers and cases), as screening-AI studies report.

    Parameters
    ----------
    reader_ratings : array-like of shape (n_readers, n_cases)
        NaN = not read (cov='delong' only).
    model_scores : array-like of shape (n_cases,)
    truth : array-like of shape (n_cases,)
    cov : 'jackknife', 'delong' or 'bootstrap'
    alpha : float, default 0.05

    Returns
    -------
    ModelVsReadersResult
    """
    alpha = check_alpha(alpha)
    cov = check_choice(cov, MRMC_COVARIANCES, name="cov")
    n_boot = check_n_boot(n_boot)
    reads = _numeric(reader_ratings, "reader_ratings", 2, "(n_readers, n_cases)")
    scores = _numeric(model_scores, "model_scores", 1, "(n_cases,)")
    if scores.size != reads.shape[1]:
        raise InputError(f"model_scores has {scores.size} cases but reader_ratings has "
                         f"{reads.shape[1]} (shape {reads.shape}); pass both on the same cases")
    y, s, _ = _check_study(np.vstack([reads, scores])[:, None, :], truth, "model_vs_readers")
    r = s.shape[0] - 1
    readers = _names(readers, r, "readers", "reader")
    if r < 2:
        raise InputError(f"reader_ratings has {r} reader; random readers need at least 2")
    _needs_complete(s, y, "or", cov)
    aucs, k_cov, _ = _covariance(y, s[:, 0, :], cov, n_boot, seed)
    contrast = np.hstack([-np.eye(r), np.ones((r, 1))])          # model - reader j
    d, k_d = contrast @ aucs, contrast @ k_cov @ contrast.T
    ms_r = float(np.var(d, ddof=1))
    var = float(np.trace(k_d) / r)
    cov2 = float((k_d.sum() - np.trace(k_d)) / (r * (r - 1)))
    num = ms_r + r * max(cov2, 0.0)
    se = math.sqrt(num / r)
    df = num ** 2 / (ms_r ** 2 / (r - 1)) if ms_r > 0 else math.inf
    diff = float(d.mean())
    t = diff / se if se > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    half = _t_quantile(1 - alpha / 2, df) * se
    m = int(y.sum())
    return ModelVsReadersResult(pd.Series(aucs[:r], index=pd.Index(readers, name="reader")),
                                float(aucs[r]), model, float(aucs[:r].mean()), diff, se, df, t,
                                _two_sided_p(t, df) if se > 0 else float(diff == 0),
                                diff - half, diff + half,
                                {"ms_R": ms_r, "var": var, "cov2": cov2}, cov, alpha, m,
                                y.size - m)
