"""The questions the Density page asks, as DataFrames the page draws and ``report density`` prints.

Why: dense tissue hides tumours. The study found lower AUC in dense breasts (categories 2-3)
than in non-dense ones (0-1), for models and radiologists alike, and also reported the AUC
without the most dense group (as if those women had an MRI instead). Each table takes a density
source already in the store (labels, or an estimate from `core.jobs.density`):
`category_counts` (figure 6.14), `stratified_auc` and `dense_vs_nondense` (table 6.3),
`density_scatter` (figure 6.15), `reader_by_density` (sensitivity and specificity per density
category, the model at the reader's overall specificity); `density_report` gathers them with
the settings of the source's newest estimate (`core.jobs.density.last_run`).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from core.complement import wilson_ci
from core.density.calibration import check_source, counts_by_category
from core.errors import InputError
from core.jobs.density import last_run
from core.reports.complement import load_cases, reader_options
from core.reports.scores import model_scores
from core.stats import auc_table, delong_auc, threshold_for_specificity, unpaired_auc_test
from core.store import Store
from core.validation import check_aggregation, check_alpha, check_choice, check_level

__all__ = [
    "STRATA", "category_counts", "dense_vs_nondense", "density_report", "density_scatter", "reader_by_density", "stratified_auc", "stratified_scores",
]

READER_COLUMNS = ["reader", "who", "role", "density", "cancers", "detected", "sensitivity",
                  "sensitivity_ci_low", "sensitivity_ci_high", "healthy", "cleared", "specificity",
                  "specificity_ci_low", "specificity_ci_high", "threshold", "n_excluded"]
STRATA = (("all", (0, 1, 2, 3)), ("non-dense (0-1)", (0, 1)), ("dense (2-3)", (2, 3)),
          ("without extremely dense (0-2)", (0, 1, 2)))


def category_counts(store: Store, *, source: str, by: str = "dataset",
                    test_sets: Sequence[str] | None = None) -> pd.DataFrame:
    """Exams per density category (figure 6.14) for each dataset or each test set.

    Returns columns group, category (0..3), name, exams, share (of the group's exams with a
    category); every category appears, with 0 where empty. Exams without a category (a source
    holding percentages only) are left out.
    """
    check_choice(by, ("dataset", "test_set"), name="by")
    parts = []
    if by == "dataset":
        rows = store.density(source=source, level="exam").merge(
            store.exams()[["exam_id", "dataset"]], on="exam_id")
        groups = [(name, g["category"]) for name, g in rows.groupby("dataset", sort=True)]
    else:
        names = store.testset_names() if test_sets is None else list(test_sets)
        groups = [(t, store.density(source=source, level="exam", test_set=t)["category"]) for t in names]
    for name, cats in groups:
        c = counts_by_category(cats)
        total = c["exams"].sum()
        parts.append(c.assign(group=name, share=c["exams"] / total if total else np.nan))
    columns = ["group", "category", "name", "exams", "share"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def stratified_scores(store: Store, *, models: Sequence[str], test_sets: Sequence[str],
                      level: str = "exam", density_source: str = "label",
                      how: str = "max") -> pd.DataFrame:
    """`core.reports.scores.model_scores` for each test set, with a ``test_set`` column; ``density`` is
    the exam's category from ``density_source`` (NA where it has none)."""
    check_level(level)
    check_aggregation(how)
    with store.connection():
        parts = [model_scores(store, models=list(models), level=level, test_set=t, how=how,
                              density_source=density_source).assign(test_set=t) for t in test_sets]
    if not parts:
        raise InputError("no test sets chosen; pick at least one")
    frame = pd.concat(parts, ignore_index=True)
    if frame["label"].isna().any():
        raise InputError(f"{int(frame['label'].isna().sum())} cases of {', '.join(test_sets)} have no "
                         f"label at {level} level; fill in breasts.cancer or use a test set without them")
    return frame


def _stratum(scores: pd.DataFrame, categories) -> pd.DataFrame:
    if len(categories) == 4:
        return scores
    return scores[scores["density"].isin(list(categories)).fillna(False).astype(bool)]


def stratified_auc(scores: pd.DataFrame, *, alpha: float = 0.05) -> pd.DataFrame:
    """AUC with a DeLong CI per (test set, model, density stratum), as table 6.3.

    ``scores``: `stratified_scores`. Strata (`STRATA`): all cases, non-dense (0-1), dense
    (2-3), without extremely dense (0-2); cases without a density category count only in 'all'.
    Returns the `core.stats.auc_table` columns plus stratum; a stratum without cases gets the
    note "n/a: no cases".
    """
    check_alpha(alpha)
    if "test_set" not in scores.columns:
        scores = scores.assign(test_set=None)
    parts = []
    for name, cats in STRATA:
        sub = _stratum(scores, cats)
        if not sub.empty:
            parts.append(auc_table(sub[["test_set", "model", "label", "score"]].astype(
                {"label": int}), alpha=alpha).assign(stratum=name))
    keys = scores[["test_set", "model"]].drop_duplicates()
    full = keys.merge(pd.DataFrame({"stratum": [s for s, _ in STRATA]}), how="cross")
    table = full.merge(pd.concat(parts, ignore_index=True) if parts else full.iloc[:0],
                       on=["test_set", "model", "stratum"], how="left")
    table["note"] = table["note"].fillna("n/a: no cases")
    for c in ("n_pos", "n_neg", "n_excluded"):
        table[c] = table[c].fillna(0).astype(np.int64)
    return table[["test_set", "model", "stratum", "n_pos", "n_neg", "n_excluded", "auc", "ci_low",
                  "ci_high", "note"]]


def dense_vs_nondense(scores: pd.DataFrame) -> pd.DataFrame:
    """Unpaired DeLong z test of AUC(dense 2-3) = AUC(non-dense 0-1) per (test set, model).

    The strata are different women, so the covariance is zero (`core.stats.unpaired_auc_test`).
    Columns test_set, model, auc_dense, auc_nondense, diff (dense - non-dense), se, z, p,
    n_no_density (cases without a category), note.
    """
    if "test_set" not in scores.columns:
        scores = scores.assign(test_set=None)
    rows = []
    for (ts, model), g in scores.groupby(["test_set", "model"], sort=False, dropna=False):
        row = {"test_set": ts, "model": model, "n_no_density": int(g["density"].isna().sum())}
        if g["score"].isna().all():     # the common case on a newly imported dataset: say so
            rows.append(row | {"note": f"n/a: {model} has no scores on these {len(g)} cases; "
                                       "run it on them (Benchmark page) or import its predictions"})
            continue
        if g["density"].isna().all():
            rows.append(row | {"note": "n/a: no case has a density category in this source"})
            continue
        try:
            res = [delong_auc(s["label"].to_numpy(int), s["score"].to_numpy(float))
                   for s in (_stratum(g, (2, 3)), _stratum(g, (0, 1)))]
            t = unpaired_auc_test(*res)
            row |= {"auc_dense": res[0].auc, "auc_nondense": res[1].auc, "diff": t.diff,
                    "se": t.se, "z": t.z, "p": t.p,
                    "note": "" if np.isfinite(t.p) else
                    "n/a: DeLong needs 2 positives and 2 negatives per stratum"}
        except InputError as exc:
            row |= {"note": f"n/a: {str(exc).split(';')[0]}"}
        rows.append(row)
    columns = ["test_set", "model", "auc_dense", "auc_nondense", "diff", "se", "z", "p",
               "n_no_density", "note"]
    return pd.DataFrame(rows).reindex(columns=columns)


def density_scatter(store: Store, *, model: str, test_set: str, level: str = "exam",
                    density_source: str = "label", how: str = "max") -> pd.DataFrame:
    """Model score against density score per case (figure 6.15).

    Columns case_id, exam_id, label (int), truth ('cancer' | 'healthy'), histology, score,
    density (category), density_score: the exam's score from ``density_source``, or at image
    level the image's own when the source stores image rows. Cases lacking either are dropped.
    """
    with store.connection():
        frame = stratified_scores(store, models=[model], test_sets=[test_set], level=level,
                                  density_source=density_source, how=how)
        exam = store.density(source=density_source, level="exam", test_set=test_set)
        img = store.density(source=density_source, level="image", test_set=test_set) \
            if level == "image" else None
    frame = frame.merge(exam[["exam_id", "score"]].rename(columns={"score": "density_score"}),
                        on="exam_id", how="left")
    if img is not None and not img.empty:
        own = frame["image_id"].map(img.set_index("image_id")["score"])
        frame["density_score"] = own.fillna(frame["density_score"])
    frame = frame.dropna(subset=["score", "density_score"])
    frame = frame.assign(label=frame["label"].astype(int),
                         truth=np.where(frame["label"].astype(int) == 1, "cancer", "healthy"))
    return frame[["case_id", "exam_id", "label", "truth", "histology", "score", "density",
                  "density_score"]].reset_index(drop=True)


def _rates_row(y: np.ndarray, d: np.ndarray, alpha: float) -> dict:
    tp, n_pos = int(np.sum(d & y)), int(np.sum(y))
    tn, n_neg = int(np.sum(~d & ~y)), int(np.sum(~y))
    se, sp = wilson_ci(tp, n_pos, alpha), wilson_ci(tn, n_neg, alpha)
    return {"cancers": n_pos, "detected": tp, "sensitivity": tp / n_pos if n_pos else np.nan,
            "sensitivity_ci_low": se[0], "sensitivity_ci_high": se[1], "healthy": n_neg,
            "cleared": tn, "specificity": tn / n_neg if n_neg else np.nan,
            "specificity_ci_low": sp[0], "specificity_ci_high": sp[1]}


def reader_by_density(store: Store, *, model: str, test_set: str, readers: Sequence[str] | None = None,
                      level: str = "exam", density_source: str = "label", how: str = "max",
                      alpha: float = 0.05) -> pd.DataFrame:
    """Readers' sensitivity and specificity per density category, beside the model's.

    For each reader the model's threshold matches the reader's overall specificity (the lowest
    threshold reaching it, `core.stats.threshold_for_specificity`) on the cases where both
    have a decision; then both are counted per category (and 'all'). Wilson (1 - alpha) CIs.

    Returns
    -------
    DataFrame  reader, who (the reader's or the model's name), role ('reader' | 'model'),
        density ('all', '0'..'3'), cancers, detected, sensitivity (+ CI), healthy, cleared,
        specificity (+ CI), threshold (model rows), n_excluded (cases left out for a missing
        score or read). Readers without recall decisions are skipped; a test set nobody read
        gives an empty frame with these columns (a dataset imported without reads).
    """
    check_level(level)
    check_aggregation(how)
    check_alpha(alpha)
    with store.connection():     # one connection for the many small queries (~15 ms each to open)
        return _reader_by_density(store, model, test_set, readers, level, density_source, how, alpha)


def _reader_by_density(store, model, test_set, readers, level, density_source, how, alpha):
    options = reader_options(store, level=level, test_set=test_set)
    # astype(bool): an empty frame's object column would select columns, not rows (the
    # KeyError 'reader' on a dataset nobody read, issue 29)
    options = options[options["has_recall"].astype(bool)]
    chosen = list(options["reader"]) if readers is None else list(readers)
    dens_by_case = store.cases(test_set=test_set, level=level, density_source=density_source)
    dens_by_case = dens_by_case.set_index("case_id")["density"]
    rows = []
    for reader in chosen:
        if reader not in set(options["reader"]):
            known = ", ".join(options["reader"]) or "none"
            raise InputError(f"reader {reader!r} has no recall decisions at {level} level in "
                             f"{test_set!r}; readers with decisions: {known}")
        f = load_cases(store, test_set=test_set, model=model, reader=reader, level=level, how=how).frame
        keep = f["score"].notna() & f["reader_recall"].notna()
        f = f[keep]
        y = f["label"].to_numpy(int).astype(bool)
        r = f["reader_recall"].to_numpy(float) == 1
        s = f["score"].to_numpy(float)
        spec = float(np.sum(~r & ~y) / max(np.sum(~y), 1))
        t = threshold_for_specificity(y.astype(int), s, spec) if (~y).any() else np.inf
        cat = pd.to_numeric(f["case_id"].map(dens_by_case)).to_numpy(float, na_value=np.nan)
        for label, mask in [("all", np.ones(len(f), bool))] + [(str(k), cat == k) for k in range(4)]:
            for who, role, d, thr in ((reader, "reader", r, np.nan), (model, "model", s >= t, t)):
                rows.append({"reader": reader, "who": who, "role": role, "density": label,
                             **_rates_row(y[mask], d[mask], alpha), "threshold": thr,
                             "n_excluded": int((~keep).sum())})
    return pd.DataFrame(rows, columns=READER_COLUMNS)


def density_report(store: Store, *, test_set: str, test_sets: Sequence[str] | None = None,
                   density_source: str = "label", models: Sequence[str] | None = None,
                   level: str = "exam", how: str = "max", reader_model: str | None = None,
                   readers: Sequence[str] | None = None, alpha: float = 0.05) -> dict:
    """Everything ``report density`` prints, as the Density page computes it.

    ``models`` defaults to every model usable at ``level``; ``reader_model`` (the model set beside
    the readers) to the first of them.
    """
    from core.reports.benchmark import usable_models

    check_level(level)
    check_aggregation(how)
    check_alpha(alpha)
    check_source(store, density_source)
    if models is None:
        models = usable_models(store.prediction_levels(), level)
    if not models:
        raise InputError(f"no model has scores usable at {level} level; import predictions first")
    test_sets = [test_set] if test_sets is None else list(dict.fromkeys(test_sets))
    scores = stratified_scores(store, models=models, test_sets=test_sets, level=level,
                               density_source=density_source, how=how)
    readers_table = reader_by_density(store, model=reader_model or models[0], test_set=test_set,
                                      readers=readers, level=level, density_source=density_source,
                                      how=how, alpha=alpha)
    return {"test_set": test_set, "test_sets": test_sets, "density_source": density_source,
            "level": level, "how": how, "run": last_run(store, density_source),
            "counts": category_counts(store, source=density_source, by="test_set", test_sets=test_sets),
            "auc": stratified_auc(scores, alpha=alpha), "dense_vs_nondense": dense_vs_nondense(scores),
            "readers": readers_table.replace([np.inf, -np.inf], np.nan)}

