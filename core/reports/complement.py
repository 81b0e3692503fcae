"""Reader vs model from the store: what the Radiologist-complement page and its CLI both show.

Why one module: the page and ``python -m core report complement`` must print the same numbers
to the digit, so both call `load_cases` (one row per case at a level: truth, the model's score,
the reader's decision) and then `build_report` (`core.complement` on those arrays, at one model
threshold). Pure over a `Store`; no Streamlit.

Reads are stored per level. At image level, when a reader has no image-level reads, each image
takes its breast's read (the radiologist decides per breast, not per view); `ReaderModelCases.notes`
says so. Model scores come from `core.reports.scores.model_scores` (stored at the level, or the image-level
maximum over the case's views).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core import complement as cp
from core import stats
from core.errors import InputError
from core.reports.scores import model_scores
from core.store import Store
from core.validation import check_level

__all__ = ["PRESET_SPECIFICITIES", "UNITS", "GROUPS", "ReaderModelCases", "ComplementReport",
           "reader_options", "load_cases", "threshold_for", "threshold_bounds", "build_report",
           "screening_workflows",
           "complement_report", "summary", "cancer_cases"]

PRESET_SPECIFICITIES = (0.98, 0.90, 0.89)   # the study's operating points (89 %: its table 6.11)
SLIDER_POSITIONS = 100   # at most this many threshold steps across the observed scores
UNITS = {"exam": "women", "breast": "breasts", "image": "images"}   # what a healthy case is
# The reader's four groups (figure 6.16): its decision against the truth.
GROUPS = {"TP": "cancer, recalled", "FN": "cancer, not recalled",
          "FP": "healthy, recalled", "TN": "healthy, not recalled"}


@dataclass(frozen=True)
class ReaderModelCases:
    """Every case of a test set at ``level`` with its truth, model score and reader read.

    ``frame`` has one row per case: case_id, exam_id, laterality, image_id, label (int 0/1),
    histology, score (float, NaN = no model score), reader_score (float, NaN = none),
    reader_recall (float 1/0, NaN = no decision). ``read_level`` is the level the reads come
    from (``"breast"`` at image level when the reader has no image reads); ``has_recall`` is
    whether the reader recorded recall decisions (else only scores: a reader threshold is needed).
    """

    frame: pd.DataFrame
    test_set: str | None
    level: str
    model: str
    reader: str
    reader_kind: str
    read_level: str
    score_source: str
    has_recall: bool
    notes: tuple[str, ...]


@dataclass(frozen=True)
class ComplementReport:
    """Everything the page shows at one model threshold (all frames computed from ``result``).

    confusion : long frame, one 3x3 matrix per ``matrix`` (reader, model, reader or model,
        model among reader-negatives, model among reader-positives): truth (cancer, healthy,
        total) x recall / no_recall / total.
    operating_points : one row per preset specificity (table 6.10): the model's threshold,
        sensitivity (Wilson CI) and specificity there, and the combined rule's.
    reader_negatives : the model among reader-negatives at this threshold and at each preset
        (table 6.11): cancers, caught, sensitivity, healthy, flagged, specificity, per 1,000.
    groups : one row per kept case: case_id, label, reader_recall, group (TP/FN/FP/TN by the
        reader), score, flagged (score >= threshold); ``group_means`` summarises it.
    tradeoff : `core.complement.tradeoff_curve` (every threshold among reader-negatives).
    workflows : `core.complement.workflows` at this threshold (triage when asked for).
    sentences : `core.complement.describe`, in the level's unit (women, breasts, images).
    """

    cases: ReaderModelCases
    reader_threshold: float | None
    triage_threshold: float | None
    result: cp.ComplementResult
    confusion: pd.DataFrame
    operating_points: pd.DataFrame
    reader_negatives: pd.DataFrame
    groups: pd.DataFrame
    group_means: pd.DataFrame
    tradeoff: pd.DataFrame
    workflows: pd.DataFrame
    sentences: tuple[str, ...]


# ---------------------------------------------------------------------------- loading

def _reads_for(store: Store, level: str, readers, test_set) -> pd.DataFrame:
    """Reads at ``level`` with a ``read_level`` column; at image level, a reader without image
    reads contributes its breast-level reads."""
    reads = store.reads(level=level, readers=readers, test_set=test_set).assign(read_level=level)
    if level == "image":
        breast = store.reads(level="breast", readers=readers, test_set=test_set)
        breast = breast[~breast["reader"].isin(set(reads["reader"]))]
        if not breast.empty:
            reads = pd.concat([reads, breast.assign(read_level="breast")], ignore_index=True)
    return reads


def reader_options(store: Store, *, level: str, test_set: str | None = None) -> pd.DataFrame:
    """Readers whose reads can be used at ``level`` (within a test set), consensus first.

    Columns: reader, kind (radiologist | consensus), read_level (where the reads come from),
    n_reads, has_recall (recall decisions recorded; else scores only). Empty when nobody read.
    """
    check_level(level)
    reads = _reads_for(store, level, None, test_set)
    kinds = store.readers().set_index("reader")["kind"]
    rows = [dict(reader=reader, kind=kinds.get(reader, "radiologist"),
                 read_level=group["read_level"].iloc[0], n_reads=len(group),
                 has_recall=bool(group["recall"].notna().any()))
            for reader, group in reads.groupby("reader", sort=True)]
    frame = pd.DataFrame(rows, columns=["reader", "kind", "read_level", "n_reads", "has_recall"])
    order = np.lexsort((frame["reader"].to_numpy(), (frame["kind"] != "consensus").to_numpy()))
    return frame.iloc[order].reset_index(drop=True)


def load_cases(store: Store, *, test_set: str | None, model: str, reader: str,
               level: str = "exam", how: str = "max") -> ReaderModelCases:
    """Align the model's scores and the reader's reads per case at ``level``.

    Every case of the test set is kept (a missing score or read is NaN, counted later by
    `core.complement` as excluded). ``how`` aggregates image scores when the model has none
    stored at ``level`` ('max' or 'mean' over the case's views).
    """
    check_level(level)
    readers = store.readers()
    if reader not in set(readers["reader"]):
        known = ", ".join(readers["reader"]) or "none yet"
        raise InputError(f"reader {reader!r} is not in the store; known: {known}")
    scores = model_scores(store, models=[model], level=level, test_set=test_set, how=how)
    reads = _reads_for(store, level, [reader], test_set)
    if reads.empty:
        where = f" in test set {test_set!r}" if test_set else ""
        raise InputError(f"reader {reader!r} has no reads at {level} level{where}; pick another "
                         f"reader or level (the demo has breast and exam reads)")
    read_level = reads["read_level"].iloc[0]
    reads = reads.assign(reader_recall=reads["recall"].astype("Float64").astype(float),
                         reader_score=reads["score"].astype(float))
    keep = ["reader_score", "reader_recall"]
    if read_level == level:
        frame = scores.merge(reads[["case_id", *keep]], on="case_id", how="left")
    else:   # image level from breast reads: each image takes its breast's read
        frame = scores.merge(reads[["exam_id", "laterality", *keep]],
                             on=["exam_id", "laterality"], how="left")
    frame = frame[["case_id", "exam_id", "laterality", "image_id", "label", "histology", "score",
                   *keep]]
    notes, unlabelled = [], frame["label"].isna()
    if unlabelled.any():
        notes.append(f"{int(unlabelled.sum())} cases without a cancer label were left out.")
    frame = frame[~unlabelled].astype({"label": int}).reset_index(drop=True)
    if read_level != level:
        notes.append(f"{reader} has no image-level reads, so each image takes its breast's "
                     f"read (all views of a breast share one decision).")
    if level == "image":
        notes.append("At image level the views of a breast are counted as separate cases; "
                     "confidence intervals treat them as independent (too narrow).")
    source = scores["score_source"].iloc[0] if len(scores) else "stored"
    if source != "stored":
        notes.append(f"{model} has no {level}-level scores; each case takes the {source} "
                     f"of its images' scores.")
    kind = readers.set_index("reader").loc[reader, "kind"]
    return ReaderModelCases(frame=frame, test_set=test_set, level=level, model=model,
                            reader=reader, reader_kind=str(kind), read_level=read_level,
                            score_source=source, has_recall=bool(reads["recall"].notna().any()),
                            notes=tuple(notes))


# ---------------------------------------------------------------------------- the report

def _reader_input(cases: ReaderModelCases, reader_threshold: float | None):
    """The reader column and threshold that `core.complement` takes."""
    if reader_threshold is not None:
        if not (isinstance(reader_threshold, (int, float)) and math.isfinite(reader_threshold)):
            raise InputError(f"reader threshold must be a finite number, got {reader_threshold!r}")
        return cases.frame["reader_score"].to_numpy(), float(reader_threshold)
    if not cases.has_recall:
        raise InputError(f"reader {cases.reader!r} has scores but no recall decisions at "
                         f"{cases.read_level} level; pass reader_threshold (recall iff "
                         f"score >= threshold), e.g. 50")
    return cases.frame["reader_recall"].to_numpy(), None


def threshold_for(cases: ReaderModelCases, *, specificity: float | None = None,
                  reader_threshold: float | None = None) -> float:
    """The model threshold `build_report` would use for ``specificity`` (None: the reader's).

    Exactly `core.complement.complement`'s choice on the same kept cases (+inf when no
    observed score reaches the target), so a page control set from it matches the CLI.
    """
    rr, rt = _reader_input(cases, reader_threshold)
    f = cases.frame
    return cp.complement(f["label"].to_numpy(), f["score"].to_numpy(), rr, specificity=specificity,
                         match_reader=specificity is None, reader_threshold=rt, n_boot=1).threshold


def _nice_step(at_least: float) -> float:
    """The smallest 1, 2 or 5 x 10^k that is >= ``at_least`` (> 0)."""
    power = 10.0 ** math.floor(math.log10(at_least))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= at_least * (1 - 1e-12))


def threshold_bounds(cases: ReaderModelCases) -> tuple[float, float, float]:
    """(low, high, step) for a threshold control: the observed score range, one step beyond.

    ``high`` is one step above the highest score, so "flag nothing" can be chosen; the step is
    the smallest of 1, 2 or 5 times a power of ten that crosses the range in at most
    `SLIDER_POSITIONS` steps (why: a power of ten alone gave ~840 arrow-key presses on scores
    in [0.01, 0.85]; the presets still land on exact thresholds between steps).
    """
    s = cases.frame["score"].dropna().to_numpy(dtype=float)
    if s.size == 0:
        raise InputError(f"model {cases.model!r} has no scores on this test set at "
                         f"{cases.level} level; run it on these cases first")
    low, high = float(s.min()), float(s.max())
    step = _nice_step((high - low) / SLIDER_POSITIONS) if high > low else 0.01
    return math.floor(low / step) * step, (math.floor(high / step) + 1) * step, step


def _matrix(name: str, tp: int, fn: int, fp: int, tn: int) -> list[dict]:
    return [dict(matrix=name, truth="cancer", recall=tp, no_recall=fn, total=tp + fn),
            dict(matrix=name, truth="healthy", recall=fp, no_recall=tn, total=fp + tn),
            dict(matrix=name, truth="total", recall=tp + fp, no_recall=fn + tn,
                 total=tp + fn + fp + tn)]


def _confusion(res: cp.ComplementResult) -> pd.DataFrame:
    neg, pos = res.among_reader_negative, res.among_reader_positive
    rows = []
    for name, c in (("reader", res.reader), ("model", res.model),
                    ("reader or model", res.combined)):
        rows += _matrix(name, c.tp, c.fn, c.fp, c.tn)
    for name, st in (("model among reader-negatives", neg), ("model among reader-positives", pos)):
        rows += _matrix(name, st.caught, st.missed, st.flagged_healthy, st.cleared_healthy)
    return pd.DataFrame(rows)


def _point_row(label: str, res: cp.ComplementResult) -> dict:
    m, alpha = res.model, res.alpha
    se = stats.wilson_ci(m.tp, res.cancers, alpha)
    return dict(operating_point=label, target_specificity=res.target_specificity,
                threshold=res.threshold, sensitivity=m.sensitivity, sensitivity_ci_low=se[0],
                sensitivity_ci_high=se[1], specificity=m.specificity, detected=m.tp,
                cancers=res.cancers, false_positives=m.fp, healthy=res.healthy,
                combined_sensitivity=res.combined.sensitivity,
                combined_specificity=res.combined.specificity)


def _negatives_row(label: str, res: cp.ComplementResult) -> dict:
    st = res.among_reader_negative
    return dict(operating_point=label, threshold=res.threshold, cancers=st.cancers,
                caught=st.caught, sensitivity=st.sensitivity,
                sensitivity_ci_low=st.sensitivity_ci[0], sensitivity_ci_high=st.sensitivity_ci[1],
                healthy=st.healthy, flagged=st.flagged_healthy, specificity=st.specificity,
                specificity_ci_low=st.specificity_ci[0], specificity_ci_high=st.specificity_ci[1],
                extra_recalls_per_1000=st.flagged_per_1000_healthy)


def _groups(y, s, r, threshold: float, case_ids) -> tuple[pd.DataFrame, pd.DataFrame]:
    group = np.where(y, np.where(r, "TP", "FN"), np.where(r, "FP", "TN"))
    frame = pd.DataFrame({"case_id": case_ids, "label": y.astype(int),
                          "reader_recall": r.astype(int), "group": group, "score": s,
                          "flagged": s >= threshold})
    means = (frame.groupby("group").agg(cases=("score", "size"), mean_score=("score", "mean"),
                                        flagged=("flagged", "sum"))
             .reindex(list(GROUPS)).reset_index())
    means["cases"] = means["cases"].fillna(0).astype(int)
    means["flagged"] = means["flagged"].fillna(0).astype(int)
    means.insert(1, "meaning", means["group"].map(GROUPS))
    return frame, means


def build_report(cases: ReaderModelCases, *, threshold: float | None = None,
                 specificity: float | None = None, reader_threshold: float | None = None,
                 triage_threshold: float | None = None, alpha: float = 0.05,
                 n_boot: int = 2000, seed: int = 0) -> ComplementReport:
    """Reader vs model on ``cases`` at one model threshold.

    Pass ``threshold`` (positive iff score >= threshold) or ``specificity`` (the lowest
    threshold reaching it), not both; with neither the model's specificity is matched to the
    reader's (the default of the CLI and the page). ``reader_threshold`` turns the reader's
    scores into decisions (score >= it) instead of its recall column. ``triage_threshold`` adds
    the triage workflow (cases scoring below it are not read). Cases lacking a score or a
    decision are left out and counted (``result.n_excluded``).
    """
    if threshold is not None and specificity is not None:
        raise InputError(f"pass a threshold or a specificity, not both (got threshold="
                         f"{threshold!r}, specificity={specificity!r})")
    rr, rt = _reader_input(cases, reader_threshold)
    f = cases.frame
    y, s = f["label"].to_numpy(), f["score"].to_numpy(dtype=float)
    common = dict(reader_threshold=rt, alpha=alpha, n_boot=n_boot, seed=seed)
    res = cp.complement(y, s, rr, threshold=threshold, specificity=specificity,
                        match_reader=threshold is None and specificity is None, **common)
    presets = [(f"{p:.0%} specificity", cp.complement(y, s, rr, specificity=p, **common))
               for p in PRESET_SPECIFICITIES]
    here = ("this threshold", res)
    flows = screening_workflows(cases, threshold=res.threshold, triage_threshold=triage_threshold,
                                reader_threshold=reader_threshold, alpha=alpha, n_boot=n_boot,
                                seed=seed)
    decided = rr if rt is None else np.where(np.isnan(rr), np.nan, rr >= rt)
    keep = ~np.isnan(s) & ~np.isnan(decided)
    groups, means = _groups(y[keep].astype(bool), s[keep], decided[keep].astype(bool),
                            res.threshold, f["case_id"].to_numpy()[keep])
    return ComplementReport(
        cases=cases, reader_threshold=rt, triage_threshold=triage_threshold, result=res,
        confusion=_confusion(res),
        operating_points=pd.DataFrame([_point_row(label, r) for label, r in presets]),
        reader_negatives=pd.DataFrame([_negatives_row(label, r) for label, r in [here, *presets]]),
        groups=groups, group_means=means,
        tradeoff=cp.tradeoff_curve(y, s, rr, reader_threshold=rt), workflows=flows,
        sentences=tuple(cp.describe(res, unit=UNITS[cases.level])))


def screening_workflows(cases: ReaderModelCases, *, threshold: float,
                        triage_threshold: float | None = None,
                        reader_threshold: float | None = None, alpha: float = 0.05,
                        n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """`core.complement.workflows` on ``cases`` at the model ``threshold``: the report's
    ``workflows`` table, on its own so a page can redraw it for another triage threshold
    without recomputing the rest. A consensus reader counts two reads per case (double
    reading with arbitration)."""
    rr, rt = _reader_input(cases, reader_threshold)
    f = cases.frame
    reads = 2.0 if cases.reader_kind == "consensus" else 1.0
    return cp.workflows(f["label"].to_numpy(), f["score"].to_numpy(dtype=float), rr,
                        threshold=threshold, triage_threshold=triage_threshold,
                        reader_reads=reads, reader_threshold=rt, alpha=alpha, n_boot=n_boot,
                        seed=seed)


def cancer_cases(report: ComplementReport) -> pd.DataFrame:
    """The kept cancers with the reader's decision and the model's flag at the report's
    threshold: the radiologists' misses first, then by model score (highest first).

    Columns: case_id, exam_id, histology, reader ('recall' | 'no recall'), score, model
    ('flagged' | 'not flagged'), outcome ('missed by the reader, caught by the model', 'missed
    by both', 'caught by the reader only', 'caught by both'). The Exam view links from here.
    """
    g = report.groups[report.groups["label"] == 1]
    truth = report.cases.frame.drop_duplicates("case_id").set_index("case_id")
    recalled, flagged = g["reader_recall"].astype(bool), g["flagged"].astype(bool)
    outcome = np.where(recalled, np.where(flagged, "caught by both", "caught by the reader only"),
                       np.where(flagged, "missed by the reader, caught by the model",
                                "missed by both"))
    out = pd.DataFrame({"case_id": g["case_id"].to_numpy(),
                        "exam_id": g["case_id"].map(truth["exam_id"]).to_numpy(),
                        "histology": g["case_id"].map(truth["histology"]).to_numpy(),
                        "reader": np.where(recalled, "recall", "no recall"),
                        "score": g["score"].to_numpy(dtype=float),
                        "model": np.where(flagged, "flagged", "not flagged"),
                        "outcome": outcome})
    order = np.lexsort((-out["score"].to_numpy(), recalled.to_numpy()))
    return out.iloc[order].reset_index(drop=True)


def complement_report(store: Store, *, test_set: str | None, model: str, reader: str,
                      level: str = "exam", threshold: float | None = None,
                      specificity: float | None = None, reader_threshold: float | None = None,
                      triage_threshold: float | None = None, n_boot: int = 2000,
                      seed: int = 0) -> ComplementReport:
    """`load_cases` then `build_report`: the CLI's one call."""
    cases = load_cases(store, test_set=test_set, model=model, reader=reader, level=level)
    return build_report(cases, threshold=threshold, specificity=specificity,
                        reader_threshold=reader_threshold, triage_threshold=triage_threshold,
                        n_boot=n_boot, seed=seed)


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def summary(report: ComplementReport) -> dict:
    """The headline numbers as plain values (the CLI's JSON; the page's metrics show the same).

    ``threshold`` is None when no observed score reaches the target (the model flags nothing).
    Rates are fractions in [0, 1] (None on an empty denominator, via the CLI's JSON encoder).
    """
    res, cases = report.result, report.cases
    neg = res.among_reader_negative

    def rates(c, **names):
        return dict(**names, sensitivity=c.sensitivity, specificity=c.specificity, tp=c.tp,
                    fn=c.fn, fp=c.fp, tn=c.tn)

    return dict(
        test_set=cases.test_set, level=cases.level, method=res.method, rule=res.rule,
        threshold=_finite(res.threshold), target_specificity=res.target_specificity,
        n_cases=res.n_cases, n_excluded=res.n_excluded, cancers=res.cancers,
        healthy=res.healthy,
        model=rates(res.model, name=cases.model, score_source=cases.score_source),
        reader=rates(res.reader, name=cases.reader, kind=cases.reader_kind,
                     read_level=cases.read_level, threshold=report.reader_threshold),
        reader_negatives=dict(cancers=neg.cancers, caught=neg.caught,
                              sensitivity=neg.sensitivity, healthy=neg.healthy,
                              flagged=neg.flagged_healthy, specificity=neg.specificity,
                              extra_recalls_per_1000=neg.flagged_per_1000_healthy),
        combined=rates(res.combined, rule="recall if reader or model flags"),
        sensitivity_gain=dict(estimate=res.sensitivity_gain.estimate,
                              ci_low=res.sensitivity_gain.ci_low,
                              ci_high=res.sensitivity_gain.ci_high),
        operating_points=report.operating_points.assign(
            threshold=report.operating_points["threshold"].map(_finite)),
        workflows=report.workflows, sentences=list(report.sentences), notes=list(cases.notes))
