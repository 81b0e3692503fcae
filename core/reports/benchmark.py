"""The benchmark report: AUC per model and test set, paired DeLong tests, operating points at
fixed specificities, ROC points and score histograms by histology.

What the Benchmark page shows and ``python -m core report benchmark`` prints. Every piece is a
pure function of the long scores frame from `load_scores` (one row per test set, model and case;
a NaN score where a model has no score for a case), so the page, which caches each piece on its
own, and the CLI, which runs `benchmark_report`, call the same code and agree to the digit.
Nothing here raises for a test set with one class only: each piece says so per row ("n/a: no
positives") or returns an empty frame, and `class_note` gives the sentence a page shows.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core import stats
from core.errors import InputError
from core.reports.published import published_table
from core.reports.scores import model_scores
from core.store import Store
from core.validation import check_aggregation, check_choice, check_level

__all__ = [
    "CI_METHODS", "DEFAULT_SPECIFICITIES", "GROUPS", "BenchmarkReport", "usable_models",
    "default_test_sets", "parse_specificities", "load_scores", "auc_summary", "auc_wide",
    "class_note", "pairwise_tests", "unpaired_tests", "sensitivity_at_specificity", "roc_points",
    "score_histograms", "case_groups", "benchmark_report",
]

CI_METHODS = ("delong", "bootstrap")
DEFAULT_SPECIFICITIES = (0.98, 0.90)       # the study's operating points
PREFERRED_TEST_SETS = ("test-ILC", "test-all")
GROUPS = ("healthy", "ILC", "IDC", "other")  # the study's figure 6.6 d-f
SCORE_COLUMNS = ("test_set", "model", "case_id", "label", "histology", "score", "score_source")
UNPAIRED_COLUMNS = ("model", "test_set_a", "test_set_b", "auc_a", "auc_b", "diff", "se", "z",
                    "p", "n_shared", "note")
PAIRWISE_COLUMNS = ("model_a", "model_b", "auc_a", "auc_b", "diff", "se", "z", "p", "p_holm",
                    "n_excluded")


# ---------------------------------------------------------------------------- choices

def usable_models(levels: pd.DataFrame, level: str) -> list[str]:
    """Models that have a score at ``level``: stored there, or image-level ones to aggregate.

    Parameters
    ----------
    levels : DataFrame
        `Store.prediction_levels` (columns model, level, n).
    level : {'image', 'breast', 'exam'}
    """
    check_level(level)
    ok = levels["level"].eq(level) | (levels["level"].eq("image") & (level != "image"))
    return list(dict.fromkeys(levels.loc[ok, "model"]))


def default_test_sets(active: str | None, known: Sequence[str]) -> list[str]:
    """The active test set, then the study's test-ILC and test-all where the store has them."""
    chosen = [active] if active in known else []
    return list(dict.fromkeys(chosen + [t for t in PREFERRED_TEST_SETS if t in known]))


def parse_specificities(values: str | Iterable) -> tuple[float, ...]:
    """Target specificities from ``"0.98,0.90"``, numbers, or strings such as ``"95%"``.

    Returns unique values in [0, 1], highest first (the order of the study's table).
    """
    items = [t for t in values.split(",") if t.strip()] if isinstance(values, str) else list(values)
    out = []
    for item in items:
        text = str(item).strip()
        try:
            value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise InputError(f"specificity {text!r} is not a number; write e.g. 0.98 or 98%"
                             ) from None
        if not 0 <= value <= 1:
            raise InputError(f"specificity {text!r} lies outside [0, 1]; "
                             "write 0.9 (or 90%), not 90")
        out.append(value)
    if not out:
        raise InputError("no specificities given; pass e.g. 0.98,0.90")
    return tuple(sorted(set(out), reverse=True))


# ---------------------------------------------------------------------------- scores

def load_scores(store: Store, *, models: Sequence[str], test_sets: Sequence[str],
                level: str = "image", how: str = "max") -> pd.DataFrame:
    """The long scores frame every piece here starts from.

    Parameters
    ----------
    store : Store
    models : sequence of str
        Duplicates are dropped; a model without scores at ``level`` raises `InputError`.
    test_sets : sequence of str
        Unknown names raise `InputError`.
    level : {'image', 'breast', 'exam'}, default 'image'
    how : {'max', 'mean'}, default 'max'
        Aggregation over a case's views for models scored at image level only.

    Returns
    -------
    DataFrame
        Columns test_set, model, case_id, label (int8 0/1), histology, score (float64, NaN = no
        score for the case), score_source ('stored', 'image max', 'image mean'); rows in the
        order of ``test_sets``, then ``models``, then case_id.
    """
    check_level(level)
    check_aggregation(how)
    models, test_sets = list(dict.fromkeys(models)), list(dict.fromkeys(test_sets))
    if not test_sets:
        raise InputError("no test sets chosen; pick at least one "
                         "(see `python -m core testsets list`)")
    with store.connection():   # one connection for all the queries (opening one costs ~15 ms)
        parts = [model_scores(store, models=models, level=level, test_set=t, how=how)
                 .assign(test_set=t) for t in test_sets]
    frame = pd.concat(parts, ignore_index=True)[list(SCORE_COLUMNS)]
    if frame["label"].isna().any():
        n = int(frame["label"].isna().sum())
        raise InputError(f"{n} cases of test set(s) {', '.join(test_sets)} have no label at "
                         f"{level} level; fill in breasts.cancer or use a test set without them")
    return frame.astype({"label": np.int8, "score": np.float64})


def _one_test_set(scores: pd.DataFrame, what: str) -> str:
    names = scores["test_set"].unique()
    if len(names) != 1:
        raise InputError(f"{what} works on one test set; the scores hold {len(names)}: "
                         f"{list(names)[:5]}. Filter the frame to one test set first")
    return names[0]


def _models(scores: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(scores["model"]))


# ---------------------------------------------------------------------------- tables

def auc_summary(scores: pd.DataFrame, *, ci: str = "delong", n_boot: int = 2000,
                seed: int = 0) -> pd.DataFrame:
    """AUC [95 % CI] per (test set, model): `core.stats.auc_table` plus where scores came from.

    Returns
    -------
    DataFrame
        Columns test_set, model, n_pos, n_neg, n_excluded, auc, ci_low, ci_high, note, scores
        (score_source); one-class groups get NaN auc and note "n/a: no positives" (or negatives).
    """
    check_choice(ci, CI_METHODS, name="ci")
    table = stats.auc_table(scores, ci=ci, n_boot=n_boot, seed=seed)
    source = scores.drop_duplicates(["test_set", "model"]).set_index(["test_set", "model"])
    keys = pd.MultiIndex.from_frame(table[["test_set", "model"]])
    return table.assign(scores=source["score_source"].reindex(keys).to_numpy())


def auc_wide(table: pd.DataFrame, *, digits: int = 3) -> pd.DataFrame:
    """The study's layout of an `auc_summary` table: one row per model, per test set an
    "AUC [95% CI]" column (or the note) and an "n+ / n-" column (positives / negatives)."""
    rows: dict[str, dict[str, str]] = {}
    for r in table.itertuples(index=False):
        if math.isnan(r.auc):
            cell = r.note
        elif math.isnan(r.ci_low):
            cell = f"{r.auc:.{digits}f} [CI n/a]"
        else:
            cell = f"{r.auc:.{digits}f} [{r.ci_low:.{digits}f}, {r.ci_high:.{digits}f}]"
        row = rows.setdefault(r.model, {"model": r.model})
        row[f"{r.test_set} AUC [95% CI]"] = cell
        row[f"{r.test_set} n+ / n-"] = f"{r.n_pos} / {r.n_neg}"
    return pd.DataFrame(list(rows.values()))


def class_note(scores: pd.DataFrame) -> str | None:
    """A sentence when the (single) test set lacks a class, else None."""
    test_set = _one_test_set(scores, "class_note")
    cases = scores.drop_duplicates("case_id")
    n_pos = int(cases["label"].sum())
    n_neg = len(cases) - n_pos
    if n_pos and n_neg:
        return None
    return (f"Test set {test_set!r} has one class only ({n_neg} negatives, {n_pos} positives): "
            "ROC curves, DeLong tests and sensitivities need both. Pick another test set.")


def pairwise_tests(scores: pd.DataFrame) -> pd.DataFrame:
    """Paired DeLong tests of every pair of models on one test set, Holm-adjusted.

    Models without a single score on the test set are left out; of the others, only cases
    scored by every model count (paired tests need the same cases; ``n_excluded`` says how many
    were left out). Empty (same columns) with fewer than two such models or when the complete
    cases lack a class.

    Returns
    -------
    DataFrame
        `core.stats.delong_matrix` with ``holm=True``: model_a, model_b, auc_a, auc_b, diff,
        se, z, p (two-sided), p_holm (over the k (k - 1) / 2 pairs), n_excluded.
    """
    _one_test_set(scores, "pairwise_tests")
    scored = scores.groupby("model", sort=False)["score"].count()
    models = [m for m in _models(scores) if scored[m]]   # a model not run here has no pair
    empty = pd.DataFrame(columns=list(PAIRWISE_COLUMNS))
    if len(models) < 2:
        return empty
    wide = scores.pivot(index="case_id", columns="model", values="score")[models]
    labels = scores.drop_duplicates("case_id").set_index("case_id")["label"].reindex(wide.index)
    complete = wide.notna().all(axis=1).to_numpy()
    y = labels.to_numpy()[complete]
    if y.all() or not y.any():
        return empty
    return stats.delong_matrix(labels.to_numpy(), wide.to_numpy().T, models, holm=True)


def unpaired_tests(scores: pd.DataFrame, *, test_sets: Sequence[str]) -> pd.DataFrame:
    """Per model, the unpaired DeLong z test of its AUC on ``test_sets[0]`` against
    ``test_sets[1]`` (`core.stats.unpaired_auc_test`: the study's ILC against IDC).

    Why: the Overview quotes this p for its headline model; the Benchmark page shows it beside
    the AUCs so the link reproduces it. The test takes the two sets as independent samples;
    ``n_shared`` counts cases in both (e.g. healthy ones), which it ignores.

    Returns
    -------
    DataFrame
        One row per model scored on both: model, test_set_a, test_set_b, auc_a, auc_b, diff,
        se, z, p (two-sided), n_shared, note ("n/a: ..." where a set lacks a class; NaN
        numbers then).
    """
    a, b = (list(dict.fromkeys(test_sets)) + [None, None])[:2]
    if a is None or b is None:
        raise InputError(f"unpaired_tests compares two test sets; got {list(test_sets)}")
    missing = [t for t in (a, b) if t not in set(scores["test_set"])]
    if missing:
        raise InputError(f"the scores hold no test set {', '.join(missing)}; load both first")
    scored = scores[scores["score"].notna()]
    rows = []
    for model in _models(scores):
        row = dict(model=model, test_set_a=a, test_set_b=b, auc_a=math.nan, auc_b=math.nan,
                   diff=math.nan, se=math.nan, z=math.nan, p=math.nan, note="")
        res = {}
        for t in (a, b):
            part = scored[(scored["model"] == model) & (scored["test_set"] == t)]
            y = part["label"].to_numpy(int)
            if y.all() or not y.any():
                lacks = ("no positives" if y.size and not y.any() else "no negatives"
                         if y.size else "no scored cases")
                row["note"] = f"n/a: {t} has {lacks}"
                break
            res[t] = stats.delong_auc(y, part["score"].to_numpy(float))
        if len(res) == 2:
            test = stats.unpaired_auc_test(res[a], res[b])
            row.update(auc_a=res[a].auc, auc_b=res[b].auc, diff=test.diff, se=test.se,
                       z=test.z, p=test.p)
        mine = scored[scored["model"] == model]
        row["n_shared"] = len(set(mine.loc[mine["test_set"] == a, "case_id"])
                              & set(mine.loc[mine["test_set"] == b, "case_id"]))
        rows.append(row)
    return pd.DataFrame(rows, columns=list(UNPAIRED_COLUMNS))


def sensitivity_at_specificity(scores: pd.DataFrame, *,
                               specificities: Sequence[float] = DEFAULT_SPECIFICITIES
                               ) -> pd.DataFrame:
    """Each model's sensitivity at the lowest threshold reaching each target specificity.

    Returns
    -------
    DataFrame
        One row per (model, target): test_set, model, target_specificity, threshold (an
        observed score; +inf when only "call nothing positive" reaches the target),
        sensitivity, specificity (achieved, >= target), tp, fn, fp, tn, note. Without positives
        the sensitivity is NaN; without negatives the row is NaN with a note.
    """
    test_set = _one_test_set(scores, "sensitivity_at_specificity")
    targets = parse_specificities(specificities)
    rows = []
    for model, part in scores.groupby("model", sort=False):
        keep = part["score"].notna().to_numpy()
        y, s = part["label"].to_numpy()[keep], part["score"].to_numpy()[keep]
        for target in targets:
            row = {"test_set": test_set, "model": model, "target_specificity": target,
                   "threshold": math.nan, "sensitivity": math.nan, "specificity": math.nan,
                   "tp": 0, "fn": int(y.sum()), "fp": 0, "tn": 0, "note": ""}
            if y.all():   # also no scored cases at all
                row["note"] = "n/a: no negatives" if y.size else "n/a: no scored cases"
            else:
                threshold = stats.threshold_for_specificity(y, s, target)
                c = stats.confusion_at(y, s, threshold)
                row.update(threshold=threshold, sensitivity=c.sensitivity,
                           specificity=c.specificity, tp=c.tp, fn=c.fn, fp=c.fp, tn=c.tn)
                if not y.any():
                    row["note"] = "n/a: no positives"
                elif math.isinf(threshold):
                    row["note"] = "only calling nothing positive reaches this specificity"
            rows.append(row)
    columns = ["test_set", "model", "target_specificity", "threshold", "sensitivity",
               "specificity", "tp", "fn", "fp", "tn", "note"]
    return pd.DataFrame(rows, columns=columns)


# ---------------------------------------------------------------------------- chart data

def roc_points(scores: pd.DataFrame, *, max_points: int = 1000) -> pd.DataFrame:
    """ROC curve points per model on one test set, thinned for charting.

    Points on straight segments are dropped (they do not change the curve); if more than
    ``max_points`` remain, points are kept at equal steps of arc length along the curve, so a
    100k-case curve stays within ~1/max_points of the full one (the chart stays small).

    Returns
    -------
    DataFrame
        Columns model, fpr, tpr, threshold (decreasing; the first point is +inf: nothing
        called positive), sensitivity (= tpr), specificity (= 1 - fpr). Models whose scored
        cases lack a class are absent.
    """
    _one_test_set(scores, "roc_points")
    parts = []
    for model, part in scores.groupby("model", sort=False):
        part = part[part["score"].notna()]
        y = part["label"].to_numpy()
        if y.all() or not y.any():
            continue
        fpr, tpr, thr = stats.roc_curve(y, part["score"].to_numpy(), drop_intermediate=True)
        if fpr.size > max_points:
            arc = np.r_[0.0, np.cumsum(np.hypot(np.diff(fpr), np.diff(tpr)))]
            idx = np.unique(np.searchsorted(arc, np.linspace(0, arc[-1], max_points)))
            idx = np.unique(np.r_[0, np.minimum(idx, fpr.size - 1), fpr.size - 1])
            fpr, tpr, thr = fpr[idx], tpr[idx], thr[idx]
        parts.append(pd.DataFrame({"model": model, "fpr": fpr, "tpr": tpr, "threshold": thr,
                                   "sensitivity": tpr, "specificity": 1 - fpr}))
    if not parts:
        return pd.DataFrame(columns=["model", "fpr", "tpr", "threshold", "sensitivity",
                                     "specificity"])
    return pd.concat(parts, ignore_index=True)


def case_groups(label, histology) -> np.ndarray:
    """'healthy' for label 0; for cancers 'ILC', 'IDC' or 'other' (other and unknown).

    Parameters
    ----------
    label, histology : array-like of shape (n_cases,)

    Returns
    -------
    ndarray of shape (n_cases,), dtype object
    """
    label = np.asarray(label).astype(bool)
    histology = np.asarray(histology, dtype=object)
    cancer = np.where(np.isin(histology, ["ILC", "IDC"]), histology, "other")
    return np.where(label, cancer, "healthy").astype(object)


def score_histograms(scores: pd.DataFrame, *, bins: int = 30) -> pd.DataFrame:
    """Histograms of each model's scores on one test set, split into healthy / ILC / IDC / other.

    Bins are equal-width over each model's own score range (scores are on any scale).

    Returns
    -------
    DataFrame
        One row per (model, group, bin): model, group, bin_start, bin_end, count, share
        (count / cases of the group: comparable across groups of very different size),
        n_group. Groups without cases are absent; NaN scores are left out.
    """
    _one_test_set(scores, "score_histograms")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise InputError(f"bins must be a positive integer (30 is usual); got {bins!r}")
    parts = []
    for model, part in scores.groupby("model", sort=False):
        part = part[part["score"].notna()]
        if part.empty:
            continue
        s = part["score"].to_numpy()
        edges = np.histogram_bin_edges(s, bins=int(bins))
        which = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, bins - 1)
        group = pd.Categorical(case_groups(part["label"], part["histology"]), categories=GROUPS)
        counts = np.bincount(group.codes * bins + which, minlength=len(GROUPS) * bins)
        counts = counts.reshape(len(GROUPS), bins)
        n_group = counts.sum(axis=1)
        for g in np.flatnonzero(n_group):
            parts.append(pd.DataFrame({
                "model": model, "group": GROUPS[g], "bin_start": edges[:-1], "bin_end": edges[1:],
                "count": counts[g], "share": counts[g] / n_group[g], "n_group": n_group[g]}))
    if not parts:
        return pd.DataFrame(columns=["model", "group", "bin_start", "bin_end", "count", "share",
                                     "n_group"])
    return pd.concat(parts, ignore_index=True)


# ---------------------------------------------------------------------------- the report

@dataclass(frozen=True)
class BenchmarkReport:
    """What ``report benchmark`` prints: the AUC table over ``test_sets`` and, on ``test_set``,
    the pairwise DeLong tests and the sensitivities at fixed specificities."""

    test_set: str
    test_sets: tuple[str, ...]
    level: str
    how: str
    ci: str
    models: tuple[str, ...]
    auc: pd.DataFrame
    pairwise: pd.DataFrame
    operating_points: pd.DataFrame
    published: pd.DataFrame | None = None   # `published.published_table` of ``models``

    def to_dict(self) -> dict:
        """JSON-ready: ``models`` holds the AUC rows; +inf thresholds become None (JSON has no
        infinity; the row's note says nothing is called positive); ``published`` each model's
        AUC as its paper reports it (thesis Table 6.1; not measured here), None where none
        applies."""
        ops = self.operating_points.assign(
            threshold=self.operating_points["threshold"].replace([np.inf, -np.inf], np.nan))
        return {"test_set": self.test_set, "test_sets": list(self.test_sets),
                "level": self.level, "how": self.how, "ci": self.ci,
                "models": self.auc, "pairwise": self.pairwise,
                "sensitivity_at_specificity": ops, "published": self.published}


def benchmark_report(store: Store, *, test_set: str, test_sets: Sequence[str] | None = None,
                     models: Sequence[str] | None = None, level: str = "image",
                     how: str = "max", ci: str = "delong",
                     specificities: Sequence[float] = DEFAULT_SPECIFICITIES,
                     n_boot: int = 2000, seed: int = 0) -> BenchmarkReport:
    """The whole report, as the Benchmark page shows it with the same choices.

    ``test_sets`` defaults to `default_test_sets` (``test_set``, then test-ILC and test-all);
    ``models`` to every model with a score at ``level`` (see `usable_models`).
    """
    check_level(level)
    check_choice(ci, CI_METHODS, name="ci")
    known = store.testset_names()
    if test_set not in known:
        raise InputError(f"test set {test_set!r} does not exist; "
                         f"known: {', '.join(known) or 'none yet'}")
    targets = parse_specificities(specificities)
    if test_sets is None:
        test_sets = default_test_sets(test_set, known)
    if models is None:
        models = usable_models(store.prediction_levels(), level)
        if not models:
            raise InputError(f"no model has predictions usable at {level} level; import "
                             "predictions first (Import page or `python -m core import`)")
    models = list(dict.fromkeys(models))
    table_scores = load_scores(store, models=models, test_sets=test_sets, level=level, how=how)
    if test_set in test_sets:
        one = table_scores[table_scores["test_set"] == test_set]
    else:
        one = load_scores(store, models=models, test_sets=[test_set], level=level, how=how)
    return BenchmarkReport(
        test_set=test_set, test_sets=tuple(dict.fromkeys(test_sets)), level=level, how=how,
        ci=ci, models=tuple(models),
        auc=auc_summary(table_scores, ci=ci, n_boot=n_boot, seed=seed),
        pairwise=pairwise_tests(one),
        operating_points=sensitivity_at_specificity(one, specificities=targets),
        published=published_table(store.models(), models))
