"""Reader vs model: which cancers the radiologists missed would a model catch, and at what cost?

The clinicians' question, after the study: set the model's threshold (to a target specificity, or
to the radiologists' own), then look *within the exams the radiologists called negative*: how many
of the missed cancers does the model flag (``caught``) and how many healthy women does it flag
there (``extra_recalls``, each one a recall that would not have happened). The rest of the module
turns that into the combined "recall if reader or model" rule, screening workflows with a reading
workload, a threshold trade-off curve, confidence intervals and plain-language sentences.

Conventions (shared with `core.stats`): 1 = cancer; a case is positive iff its score is
``>= threshold``; a reader decision is a recall (1) or not (0), or a reader's continuous score
turned into one with ``reader_threshold``. Cases with a NaN model score or a missing reader
decision are left out and counted (``n_excluded``). "Per 1,000" rates say their denominator.
"""
from __future__ import annotations

import math

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from core.errors import InputError
from core.stats import Confusion, confusion_at, threshold_for_specificity, wilson_ci
from core.validation import check_alpha, check_choice, check_n_boot

__all__ = [
    "Stratum", "DifferenceCI", "ComplementResult", "reader_decisions", "complement",
    "complement_table", "rates_table", "tradeoff_curve", "workflows", "bootstrap_difference",
    "describe",
]


@dataclass(frozen=True)
class Stratum:
    """The model's decisions within one group of cases (e.g. those the reader did not recall).

    ``caught`` are cancers the model flags, ``missed`` those it does not; ``flagged_healthy`` are
    healthy cases it flags (among reader-negatives: extra recalls). Rates are nan on an empty
    denominator; ``*_ci`` are Wilson intervals; ``flagged_per_1000_healthy`` = 1000 *
    flagged_healthy / healthy.
    """

    n: int
    cancers: int
    healthy: int
    caught: int
    missed: int
    flagged_healthy: int
    cleared_healthy: int
    sensitivity: float
    specificity: float
    sensitivity_ci: tuple[float, float]
    specificity_ci: tuple[float, float]
    flagged_per_1000_healthy: float


@dataclass(frozen=True)
class DifferenceCI:
    """``estimate`` = metric(a) - metric(b) with a stratified-bootstrap percentile interval."""

    metric: str
    estimate: float
    ci_low: float
    ci_high: float
    n_boot: int
    alpha: float


@dataclass(frozen=True)
class ComplementResult:
    """Reader, model and "reader or model" on the same cases, at one model threshold.

    All counts are on the ``n_cases`` kept cases (each Confusion's ``n_excluded`` repeats the
    count left out). The threshold is +inf when no observed score reaches the target specificity.
    ``method`` is how the threshold was chosen ("threshold" | "specificity" | "match_reader"),
    ``rule`` the same in words; ``target_specificity`` is nan for a given threshold. ``caught`` of ``reader_missed`` cancers (reader-negative cancers) are flagged by
    the model, at ``extra_recalls`` healthy reader-negatives, i.e. ``extra_recalls_per_1000``
    per 1,000 healthy women the reader did not recall. ``sensitivity_gain`` is combined minus
    reader sensitivity (>= 0), ``specificity_change`` combined minus reader specificity (<= 0).
    """

    threshold: float
    method: str
    rule: str
    target_specificity: float
    n_cases: int
    n_excluded: int
    cancers: int
    healthy: int
    model: Confusion
    reader: Confusion
    combined: Confusion
    among_reader_negative: Stratum
    among_reader_positive: Stratum
    caught: int
    reader_missed: int
    extra_recalls: int
    extra_recalls_per_1000: float
    sensitivity_gain: DifferenceCI
    specificity_change: DifferenceCI
    alpha: float


# ---------------------------------------------------------------------------- validation

def _as_float(name: str, values) -> np.ndarray:
    try:
        if isinstance(values, (pd.Series, pd.Index, pd.api.extensions.ExtensionArray)):
            arr = pd.Series(values).to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} is not numeric (dtype {getattr(values, 'dtype', type(values).__name__)}); "
                         f"pass numbers, one per case") from None
    if arr.ndim != 1:
        raise InputError(f"{name} must be 1-D, one value per case; got shape {arr.shape}")
    return arr


def _binary(name: str, arr: np.ndarray, *, hint: str = "") -> np.ndarray:
    """0/1 check on the non-NaN values of a float array; returns the same array."""
    bad = arr[~np.isnan(arr) & (arr != 0) & (arr != 1)]
    if bad.size:
        raise InputError(f"{name} must be 0/1 but has {bad.size} other values (e.g. {bad[0]:g}){hint}")
    return arr


def reader_decisions(scores_or_recall, *, threshold: float | None = None) -> np.ndarray:
    """A reader's recall decisions as a bool array of shape (n_cases,).

    Without ``threshold`` the input must already be 0/1 (or bool): CSAW's ``rad_recall``,
    ``rad_r1``, ``rad_r2``. With it, the input is a reader's continuous score (e.g. BI-RADS or a
    probability of malignancy) and a case is recalled iff ``score >= threshold``, the same
    convention as model scores. Missing values raise; `complement` and friends accept them and
    leave those cases out.
    """
    arr = _reader_array("scores_or_recall", scores_or_recall, threshold)
    if np.isnan(arr).any():
        raise InputError(f"scores_or_recall has {int(np.isnan(arr).sum())} missing values; drop those "
                         f"cases first, or pass the column to complement(), which leaves them out")
    return arr.astype(bool)


def _reader_array(name: str, values, threshold: float | None) -> np.ndarray:
    arr = _as_float(name, values)
    if threshold is None:
        return _binary(name, arr, hint="; for a reader's continuous score pass reader_threshold= "
                                        "(recall iff score >= threshold)")
    if not np.isfinite(threshold):
        raise InputError(f"reader threshold must be a finite number, got {threshold!r}")
    return np.where(np.isnan(arr), np.nan, (arr >= threshold).astype(np.float64))


def _check(y_true, model_score, reader_recall, reader_threshold, *extra):
    """Validate at the door; return clean (y, score, reader, n_excluded, keep) on kept cases.

    ``extra`` are further optional 0/1 arrays (e.g. an arbiter) checked for length only here.
    """
    y = _binary("y_true", _as_float("y_true", y_true))
    s = _as_float("model_score", model_score)
    r = _reader_array("reader_recall", reader_recall, reader_threshold)
    for name, arr in (("model_score", s), ("reader_recall", r), *extra):
        if len(arr) != len(y):
            raise InputError(f"{name} has {len(arr)} values but y_true has {len(y)}; pass one per case")
    if len(y) == 0:
        raise InputError("no cases were given; pick a test set with exams in it")
    if np.isnan(y).any():
        raise InputError(f"y_true has {int(np.isnan(y).sum())} missing labels; drop unlabelled cases first")
    if np.isinf(s).any():
        raise InputError(f"model_score has {int(np.isinf(s).sum())} infinite values; scores must be "
                         f"finite (NaN marks a missing score)")
    keep = ~np.isnan(s) & ~np.isnan(r)
    y, s, r = y[keep].astype(bool), s[keep], r[keep].astype(bool)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        raise InputError(f"y_true has one class only ({len(y) - n_pos} healthy, {n_pos} cancers, after "
                         f"leaving out {int((~keep).sum())} cases without a score or read); "
                         f"comparing reader and model needs both; widen the test set")
    return y, s, r, int((~keep).sum()), keep


def _rate(k, n) -> float:
    return k / n if n else float("nan")


# ---------------------------------------------------------------------------- bootstrap

_METRICS = ("sensitivity", "specificity", "recall_rate")


def bootstrap_difference(y_true, decision_a, decision_b, *, metric: str = "sensitivity",
                         n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> DifferenceCI:
    """metric(a) - metric(b) for two recall rules on the same cases, with a bootstrap CI.

    Stratified: cancers and healthy cases are resampled separately, so every replicate keeps the
    class counts (why: a few dozen cancers among thousands of exams would otherwise make the
    sensitivity denominator jump). Decisions are fixed (thresholds are not re-chosen per replicate).
    Vectorised exactly: resampling n paired 0/1 decisions with replacement is a multinomial draw over
    the four (a, b) cells, so memory is O(n_boot) however many exams there are.

    Parameters
    ----------
    y_true, decision_a, decision_b : array-like of shape (n_cases,), 0/1 or bool.
    metric : "sensitivity" | "specificity" | "recall_rate" (recalls per case).
    seed : int   seeds ``np.random.default_rng``; same seed, same interval.
    """
    alpha = check_alpha(alpha)
    metric = check_choice(metric, _METRICS, name="metric")
    n_boot = check_n_boot(n_boot)
    y = _binary("y_true", _as_float("y_true", y_true))
    a = _binary("decision_a", _as_float("decision_a", decision_a))
    b = _binary("decision_b", _as_float("decision_b", decision_b))
    if not len(y) == len(a) == len(b):
        raise InputError(f"y_true, decision_a and decision_b have {len(y)}, {len(a)} and {len(b)} "
                         f"values; pass one per case")
    if np.isnan(y).any() or np.isnan(a).any() or np.isnan(b).any():
        raise InputError("y_true and the decisions must have no missing values; drop those cases")
    y, a, b = y.astype(bool), a.astype(bool), b.astype(bool)
    need = {"sensitivity": (y,), "specificity": (~y,), "recall_rate": (y, ~y)}[metric]
    if any(not m.any() for m in need):
        raise InputError(f"{metric} needs {'cancers' if metric == 'sensitivity' else 'healthy cases'}"
                         f" (got {int(y.sum())} cancers, {int((~y).sum())} healthy)")
    return _bootstrap(y, a, b, metric, int(n_boot), alpha, seed)


def _bootstrap(y, a, b, metric, n_boot, alpha, seed) -> DifferenceCI:
    rng = np.random.default_rng(seed)
    sign = -1.0 if metric == "specificity" else 1.0       # specificity counts the non-recalls
    strata = {"sensitivity": (y,), "specificity": (~y,), "recall_rate": (y, ~y)}[metric]
    n_total = sum(int(m.sum()) for m in strata)
    est, boot = 0.0, np.zeros(n_boot)
    for m in strata:
        aa, bb = a[m], b[m]
        cells = np.array([(aa & ~bb).sum(), (~aa & bb).sum(), (aa == bb).sum()], dtype=np.float64)
        draws = rng.multinomial(int(m.sum()), cells / cells.sum(), size=n_boot)
        est += sign * (cells[0] - cells[1]) / n_total
        boot += sign * (draws[:, 0] - draws[:, 1]) / n_total
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return DifferenceCI(metric, float(est), float(low), float(high), n_boot, alpha)


# ---------------------------------------------------------------------------- complement

def _stratum(y: np.ndarray, m: np.ndarray, alpha: float) -> Stratum:
    cancers, healthy = int(y.sum()), int((~y).sum())
    caught, flagged = int((y & m).sum()), int((~y & m).sum())
    return Stratum(
        n=len(y), cancers=cancers, healthy=healthy, caught=caught, missed=cancers - caught,
        flagged_healthy=flagged, cleared_healthy=healthy - flagged,
        sensitivity=_rate(caught, cancers), specificity=_rate(healthy - flagged, healthy),
        sensitivity_ci=wilson_ci(caught, cancers, alpha),
        specificity_ci=wilson_ci(healthy - flagged, healthy, alpha),
        flagged_per_1000_healthy=1000 * _rate(flagged, healthy))


def _decisions_confusion(y: np.ndarray, d: np.ndarray) -> Confusion:
    """Confusion of 0/1 decisions (threshold 1.0 on 0/1: positive iff recalled)."""
    return confusion_at(y.astype(np.int64), d.astype(np.float64), 1.0)


def complement(y_true, model_score, reader_recall, *, threshold: float | None = None,
               specificity: float | None = None, match_reader: bool = False,
               reader_threshold: float | None = None, alpha: float = 0.05,
               n_boot: int = 2000, seed: int = 0) -> ComplementResult:
    """Compare a model with the radiologists on the same cases, at one model threshold.

    Pass exactly one of ``threshold`` (given), ``specificity`` (the lowest threshold whose overall
    specificity is >= the target, as the study did at 98 % and 90 %) or ``match_reader=True`` (the
    target is the reader's own specificity on these cases).

    Parameters
    ----------
    y_true : array-like of shape (n_cases,)         0/1 or bool; 1 = cancer.
    model_score : array-like of shape (n_cases,)    higher = more suspicious; NaN = no score.
    reader_recall : array-like of shape (n_cases,)  0/1 recall (NaN = not read), or the reader's
        continuous score when ``reader_threshold`` is given (recall iff score >= it).
    alpha : float                                  Wilson and bootstrap intervals are 1 - alpha.
    n_boot, seed :                                 the bootstrap behind ``sensitivity_gain``.

    Returns
    -------
    ComplementResult   counts and rates for reader, model, combined and both reader strata.
    """
    alpha = check_alpha(alpha)
    n_boot = check_n_boot(n_boot, minimum=1)   # 1: the counts only, no interval wanted
    chosen = [threshold is not None, specificity is not None, bool(match_reader)]
    if sum(chosen) != 1:
        raise InputError(f"pass exactly one of threshold=, specificity= or match_reader=True (got "
                         f"threshold={threshold!r}, specificity={specificity!r}, match_reader={match_reader!r})")
    if threshold is not None and not (isinstance(threshold, (int, float, np.number)) and threshold == threshold):
        raise InputError(f"threshold must be a number (positive iff score >= threshold), got {threshold!r}")
    if specificity is not None and not (isinstance(specificity, (int, float, np.number)) and 0 < specificity <= 1):
        raise InputError(f"specificity must lie in (0, 1], got {specificity!r}; e.g. 0.98")
    y, s, r, n_excluded, _ = _check(y_true, model_score, reader_recall, reader_threshold)
    reader = replace(_decisions_confusion(y, r), n_excluded=n_excluded)
    if threshold is not None:
        method, t, target, rule = "threshold", float(threshold), float("nan"), f"threshold {threshold:g} given"
    else:
        method = "specificity" if specificity is not None else "match_reader"
        target = float(specificity) if specificity is not None else float(reader.specificity)
        rule = (f"specificity >= {target:.1%}" if specificity is not None
                else f"specificity matched to the reader's ({target:.1%})")
        t = float(threshold_for_specificity(y.astype(np.int64), s, target))
    m = s >= t
    neg = _stratum(y[~r], m[~r], alpha)
    boot = dict(n_boot=int(n_boot), alpha=alpha, seed=seed)
    combined = r | m
    return ComplementResult(
        threshold=t, method=method, rule=rule, target_specificity=target, n_cases=len(y), n_excluded=n_excluded,
        cancers=int(y.sum()), healthy=int((~y).sum()),
        model=replace(confusion_at(y.astype(np.int64), s, t), n_excluded=n_excluded), reader=reader,
        combined=replace(_decisions_confusion(y, combined), n_excluded=n_excluded),
        among_reader_negative=neg, among_reader_positive=_stratum(y[r], m[r], alpha),
        caught=neg.caught, reader_missed=neg.cancers, extra_recalls=neg.flagged_healthy,
        extra_recalls_per_1000=neg.flagged_per_1000_healthy,
        sensitivity_gain=_bootstrap(y, combined, r, "sensitivity", **boot),
        specificity_change=_bootstrap(y, combined, r, "specificity", **boot),
        alpha=alpha)


def complement_table(result: ComplementResult) -> pd.DataFrame:
    """Counts cross-tabulated like the study's tables: truth x reader rows, model columns.

    Columns: truth ("cancer" | "healthy"), reader ("recall" | "no recall" | "total"),
    model_recall, model_no_recall, total (ints). The model's flags on the ("cancer", "no recall")
    row are the caught cancers; on ("healthy", "no recall") the extra recalls.
    """
    rows = []
    for truth in ("cancer", "healthy"):
        parts = []
        for label, st in (("recall", result.among_reader_positive),
                          ("no recall", result.among_reader_negative)):
            flagged, cleared = ((st.caught, st.missed) if truth == "cancer"
                                else (st.flagged_healthy, st.cleared_healthy))
            parts.append((label, flagged, cleared))
        parts.append(("total", parts[0][1] + parts[1][1], parts[0][2] + parts[1][2]))
        rows += [dict(truth=truth, reader=lab, model_recall=f, model_no_recall=c, total=f + c)
                 for lab, f, c in parts]
    return pd.DataFrame(rows)


def rates_table(result: ComplementResult) -> pd.DataFrame:
    """Sensitivity and specificity (Wilson CIs) of each rule in a ComplementResult, one row each.

    Rows: reader, model, reader or model, model among reader-negative, model among
    reader-positive. Columns: rule, cases, cancers, healthy, detected, false_positives,
    sensitivity(_ci_low/_high), specificity(_ci_low/_high), recalls_per_1000 (per 1,000 cases of
    that row).
    """
    counts = [("reader", result.reader.tp, result.reader.fp, result.cancers, result.healthy),
              ("model", result.model.tp, result.model.fp, result.cancers, result.healthy),
              ("reader or model", result.combined.tp, result.combined.fp, result.cancers, result.healthy)]
    for name, st in (("model among reader-negative", result.among_reader_negative),
                     ("model among reader-positive", result.among_reader_positive)):
        counts.append((name, st.caught, st.flagged_healthy, st.cancers, st.healthy))
    rows = []
    for name, tp, fp, cancers, healthy in counts:
        se, sp = wilson_ci(tp, cancers, result.alpha), wilson_ci(healthy - fp, healthy, result.alpha)
        rows.append(dict(rule=name, cases=cancers + healthy, cancers=cancers, healthy=healthy,
                         detected=tp, false_positives=fp, sensitivity=_rate(tp, cancers),
                         sensitivity_ci_low=se[0], sensitivity_ci_high=se[1],
                         specificity=_rate(healthy - fp, healthy),
                         specificity_ci_low=sp[0], specificity_ci_high=sp[1],
                         recalls_per_1000=1000 * _rate(tp + fp, cancers + healthy)))
    return pd.DataFrame(rows)


def tradeoff_curve(y_true, model_score, reader_recall, *, thresholds=None,
                   reader_threshold: float | None = None) -> pd.DataFrame:
    """Missed cancers caught vs extra recalls among reader-negatives, one row per threshold.

    Without ``thresholds`` every distinct model score among reader-negative cases is used (the
    only places the counts change), highest first, so ``caught`` and ``extra_recalls`` rise down
    the table. Counts come from binary searches in sorted scores: O((n + k) log n) for k rows.

    Returns
    -------
    DataFrame with columns threshold, caught (reader-missed cancers with score >= threshold),
    caught_fraction (of the reader-missed cancers; nan if none), extra_recalls (healthy
    reader-negatives flagged), extra_recalls_per_1000 (per 1,000 healthy reader-negatives),
    specificity (among healthy reader-negatives) and model_specificity (over all healthy cases).
    """
    y, s, r, _, _ = _check(y_true, model_score, reader_recall, reader_threshold)
    if thresholds is None:
        t = np.unique(s[~r])[::-1]
    else:
        t = _as_float("thresholds", thresholds)
        if np.isnan(t).any():
            raise InputError("thresholds contain NaN; pass numbers")
        t = np.unique(t)[::-1]
    missed = np.sort(s[~r & y])
    healthy_neg = np.sort(s[~r & ~y])
    healthy_all = np.sort(s[~y])

    def at_or_above(sorted_scores):
        return len(sorted_scores) - np.searchsorted(sorted_scores, t, side="left")

    caught, extra = at_or_above(missed), at_or_above(healthy_neg)
    with np.errstate(divide="ignore", invalid="ignore"):
        return pd.DataFrame({
            "threshold": t,
            "caught": caught,
            "caught_fraction": caught / len(missed) if len(missed) else np.full(len(t), np.nan),
            "extra_recalls": extra,
            "extra_recalls_per_1000": 1000 * extra / len(healthy_neg) if len(healthy_neg)
            else np.full(len(t), np.nan),
            "specificity": 1 - extra / len(healthy_neg) if len(healthy_neg) else np.full(len(t), np.nan),
            "model_specificity": 1 - at_or_above(healthy_all) / len(healthy_all),
        })


# ---------------------------------------------------------------------------- workflows

def workflows(y_true, model_score, reader_recall, *, threshold: float,
              triage_threshold: float | None = None, reader_reads: float = 1.0,
              arbiter_recall=None, reader_threshold: float | None = None, alpha: float = 0.05,
              n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Screening workflows from the study's recommendations, each on the same cases.

    Rows (model positive iff score >= ``threshold``):

    - ``reader``: today's practice, the reader's decisions alone.
    - ``model alone``: the model's flags, no human read (a reference point, not a proposal).
    - ``reader or model``: the model as a safety net on the reader's negatives, which makes the
      same decisions as the model as a second reader with "recall if either"; each flag is
      assumed recalled (an upper bound on both the cancers gained and the recalls).
    - ``reader and model``: the model as a second reader, recall only when both agree (consensus
      with no arbitration; fewer recalls, cancers lost).
    - ``arbitration`` (with ``arbiter_recall``): the model as a second reader; where reader and
      model disagree the arbiter decides (e.g. CSAW's ``rad_r2``, or ``rad_recall`` as a proxy
      for a consensus meeting), costing one extra read per discordant case.
    - ``triage`` (with ``triage_threshold``): exams scoring below it are not read and not
      recalled; the reader decides the rest.

    ``reads_per_case`` counts human reads: ``reader_reads`` per read case (1 for single reading;
    2 when ``reader_recall`` is a double-reading consensus such as CSAW's ``rad_recall``).
    ``cancers_lost`` are cancers the reader recalled that the workflow does not;
    ``cancers_gained`` those it recalls that the reader missed. ``recalls_per_1000`` is per 1,000
    screened cases. Sensitivity, specificity and recall rate carry Wilson intervals; the changes
    against the reader carry stratified-bootstrap intervals (``n_boot``, ``seed``).
    """
    alpha = check_alpha(alpha)
    n_boot = check_n_boot(n_boot, minimum=1)   # 1: the counts only, no interval wanted
    if np.isnan(threshold):
        raise InputError("threshold is NaN; pass a number (positive iff score >= threshold)")
    if not (np.isfinite(reader_reads) and reader_reads > 0):
        raise InputError(f"reader_reads must be > 0 (1 single, 2 double reading), got {reader_reads!r}")
    if triage_threshold is not None and not np.isfinite(triage_threshold):
        raise InputError(f"triage_threshold must be a finite number, got {triage_threshold!r}")
    extra = ()
    if arbiter_recall is not None:
        arb = _binary("arbiter_recall", _as_float("arbiter_recall", arbiter_recall))
        extra = (("arbiter_recall", arb),)
    y, s, r, _, keep = _check(y_true, model_score, reader_recall, reader_threshold, *extra)
    m = s >= threshold
    rows = [("reader", "the reader alone", r, reader_reads),
            ("model alone", "the model alone, no human read", m, 0.0),
            ("reader or model", "model as safety net on reader-negatives, or as second reader "
                                "with recall if either; flags assumed recalled", r | m, reader_reads),
            ("reader and model", "model as second reader, recall only if both agree",
             r & m, reader_reads)]
    if arbiter_recall is not None:
        arb = extra[0][1][keep]
        discordant = r != m
        if np.isnan(arb[discordant]).any():
            raise InputError(f"arbiter_recall is missing on {int(np.isnan(arb[discordant]).sum())} "
                             f"cases where reader and model disagree; the arbiter must decide those")
        decided = np.where(discordant, arb == 1, r)
        rows.append(("arbitration", "model as second reader; an arbiter decides where reader and "
                                    "model disagree", decided, reader_reads + discordant.mean()))
    if triage_threshold is not None:
        read = s >= triage_threshold
        rows.append(("triage", f"exams scoring below {triage_threshold:g} are not read "
                               f"({(~read).mean():.0%} of cases)", r & read, reader_reads * read.mean()))
    return pd.DataFrame([_workflow_row(name, text, y, r, d, reads, alpha, n_boot, seed)
                         for name, text, d, reads in rows])


def _workflow_row(name, text, y, r, d, reads, alpha, n_boot, seed) -> dict:
    tp, tn, recalls = int((y & d).sum()), int((~y & ~d).sum()), int(d.sum())
    cancers, healthy, n = int(y.sum()), int((~y).sum()), len(y)
    se, sp, rr = wilson_ci(tp, cancers, alpha), wilson_ci(tn, healthy, alpha), wilson_ci(recalls, n, alpha)
    d_se = _bootstrap(y, d, r, "sensitivity", n_boot, alpha, seed)
    d_sp = _bootstrap(y, d, r, "specificity", n_boot, alpha, seed)
    return dict(
        workflow=name, description=text, sensitivity=tp / cancers, sensitivity_ci_low=se[0],
        sensitivity_ci_high=se[1], specificity=tn / healthy, specificity_ci_low=sp[0],
        specificity_ci_high=sp[1], recalls=recalls, recalls_per_1000=1000 * recalls / n,
        recalls_per_1000_ci_low=1000 * rr[0], recalls_per_1000_ci_high=1000 * rr[1],
        reads_per_case=float(reads), cancers_detected=tp, cancers_lost=int((y & r & ~d).sum()),
        cancers_gained=int((y & ~r & d).sum()), sensitivity_change=d_se.estimate,
        sensitivity_change_ci_low=d_se.ci_low, sensitivity_change_ci_high=d_se.ci_high,
        specificity_change=d_sp.estimate, specificity_change_ci_low=d_sp.ci_low,
        specificity_change_ci_high=d_sp.ci_high)


# ---------------------------------------------------------------------------- sentences

def describe(result: ComplementResult, *, unit: str = "women") -> list[str]:
    """Plain-language sentences for clinicians, one finding each, from a ComplementResult.

    ``unit`` names what a healthy case is ("women", "exams", "breasts", "images"). Percentages
    have one decimal; per-1,000 figures are whole numbers.
    """
    res, rd, md, cb = result, result.reader, result.model, result.combined
    conf = f"{1 - res.alpha:.0%}"
    if not math.isfinite(res.threshold):
        how = (f"No model score reaches a specificity of {res.target_specificity:.1%} here (the "
               "radiologists recalled no healthy case), so the model flags nothing")
    elif res.method == "threshold":
        how = f"The model's threshold was set to {res.threshold:.3g}"
    elif res.method == "match_reader":
        how = (f"The model's threshold ({res.threshold:.3g}) was set to match the radiologists' "
               f"specificity of {res.target_specificity:.1%}")
    else:
        how = (f"The model's threshold ({res.threshold:.3g}) was set for a specificity of at least "
               f"{res.target_specificity:.1%}")
    out = [f"{how}; there the model alone finds {md.tp} of {res.cancers} cancers (sensitivity "
           f"{md.sensitivity:.1%}) with a specificity of {md.specificity:.1%}.",
           f"The radiologists recalled {rd.tp} of the {res.cancers} cancers (sensitivity "
           f"{rd.sensitivity:.1%}) and {rd.fp} of {res.healthy} healthy {unit} (specificity "
           f"{rd.specificity:.1%})."]
    per_1000 = (f"{res.extra_recalls_per_1000:,.0f} extra recalls per 1,000 healthy {unit} they did "
                f"not recall" if res.among_reader_negative.healthy else "no extra recalls")
    if res.reader_missed:
        missed = (f"the {res.reader_missed} cancers" if res.reader_missed > 1
                  else "the one cancer")
        out.append(f"At this threshold the model would have flagged {res.caught} of "
                   f"{missed} the radiologists missed, at {per_1000}.")
    else:
        out.append(f"The radiologists missed none of these cancers, so the model has none to catch; "
                   f"it would add {per_1000}.")
    gain = res.sensitivity_gain
    out.append(f"Recalling when either the radiologists or the model flag would find {cb.tp} of "
               f"{res.cancers} cancers (sensitivity {cb.sensitivity:.1%} instead of "
               f"{rd.sensitivity:.1%}; +{100 * gain.estimate:.1f} points, {conf} CI "
               f"{100 * gain.ci_low:.1f} to {100 * gain.ci_high:.1f}), with specificity "
               f"{cb.specificity:.1%} instead of {rd.specificity:.1%}.")
    pos = res.among_reader_positive
    if pos.cancers:
        out.append(f"Among the cancers the radiologists recalled, the model also flagged "
                   f"{pos.caught} of {pos.cancers}.")
    if res.n_excluded:
        out.append(f"{res.n_excluded} cases without a model score or a reader decision were left out.")
    return out
