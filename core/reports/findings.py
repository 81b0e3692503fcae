"""The study's six questions, each answered in one sentence from what the store holds.

Why: the Overview, the shared HTML report and ``python -m core report findings`` open on the
study's answers, not on counts. Each `Finding` carries the page and the query parameters
(the pages' widget keys, bound to the URL) that open the view giving its number, so a reader
can check it there. Only stored results are read: predictions, reads, stored filter AUCs,
model lineage; nothing here runs a batch (filters, saliency sweeps, training). Where a
question has no stored result the sentence says so and what to run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from urllib.parse import urlencode

import pandas as pd

from core.errors import InputError
from core.reports import benchmark as bm
from core.reports import complement as cr
from core.reports import density as dn
from core.reports.filters import stored_results, summarize
from core.stats import delong_auc, unpaired_auc_test
from core.store import Store
from core.store.runs import latest_run

__all__ = ["Finding", "QUESTIONS", "best_model", "findings", "link", "nearest_missed_view"]

QUESTIONS = ("filters", "models", "fine-tuning", "density", "saliency", "radiologists")
STUDY_LEVEL = {"models": "image", "density": "exam", "radiologists": "exam"}  # the pages' defaults
ILC_SET, IDC_SET, ALL_SET = "test-ILC", "test-IDC", "test-all"


@dataclass(frozen=True)
class Finding:
    """One question's answer.

    question : one of `QUESTIONS`. sentence : one sentence, numbers rounded as the page shows
    them. page : the page's URL path (``benchmark``). params : query parameters (widget keys)
    that open that page in the view giving the number. value : the headline number (None when
    nothing is stored yet). table : the rows behind the sentence (may be empty).
    """

    question: str
    sentence: str
    page: str
    params: dict = field(default_factory=dict)
    value: float | None = None
    table: pd.DataFrame = field(default_factory=pd.DataFrame)


def link(finding: Finding) -> str:
    """Relative URL of the page in the finding's view (multiselects repeat their key)."""
    query = urlencode(finding.params, doseq=True)
    return f"{finding.page}?{query}" if query else finding.page


def _fmt(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.2f}"


def _p(p: float) -> str:
    return "n/a" if not math.isfinite(p) else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def _scored(store: Store, level: str) -> list[str]:
    return bm.usable_models(store.prediction_levels(), level)


def best_model(store: Store, *, test_set: str, level: str = "image") -> str | None:
    """The model with the highest AUC on ``test_set`` at ``level`` (None: no scored model).

    Pages put it first so they open on the study's best result, not the first name stored.
    """
    models = _scored(store, level)
    if not models or test_set not in set(store.testsets()["name"]):
        return None
    try:
        table = bm.auc_summary(bm.load_scores(store, models=models, test_sets=[test_set],
                                              level=level))
    except InputError:
        return models[0]
    table = table[table["auc"].notna()]
    return str(table.sort_values("auc", ascending=False)["model"].iloc[0]) if len(table) \
        else models[0]


def _filters(store: Store, test_set: str) -> Finding:
    try:
        table = summarize(stored_results(store, test_set=test_set))
    except InputError:
        table = pd.DataFrame()
    if table.empty:
        return Finding("filters", "Filters: no filter run is stored for this test set yet; "
                       "press Run on the Filters page (or `python -m core filters run`).",
                       "filters")
    best = table.sort_values("mean_auc", ascending=False).iloc[0]
    original = table[table["method"] == "M1"]
    base = float(original["mean_auc"].iloc[0]) if len(original) else math.nan
    n = int(table["n_images"].max())
    verdict = (f"{best['method']} ({best['name']}) is best" if best["method"] != "M1"
               else "no method beats the original")
    return Finding("filters", f"Filters: on {n} annotated cancer images {verdict}, mean pixel "
                   f"AUC {_fmt(best['mean_auc'])} against {_fmt(base)} for the original (M1).",
                   "filters", value=float(best["mean_auc"]), table=table)


def _models(store: Store, model: str | None) -> Finding:
    level = STUDY_LEVEL["models"]
    if model is None:
        return Finding("models", "Models: no model has scores on the test sets yet; score one on "
                       "the Benchmark page's import or `python -m core predict`.", "benchmark")
    scores = bm.load_scores(store, models=[model], test_sets=[ILC_SET, IDC_SET], level=level)
    table = bm.auc_summary(scores)
    res = {t: delong_auc(g["label"].to_numpy(int), g["score"].to_numpy(float))
           for t, g in scores[scores["score"].notna()].groupby("test_set")}
    if set(res) != {ILC_SET, IDC_SET}:
        raise InputError(f"{model} has no scores on {ILC_SET} or {IDC_SET}")
    test = unpaired_auc_test(res[ILC_SET], res[IDC_SET])
    ilc = res[ILC_SET]
    return Finding(
        "models", f"Models: {model} reaches AUC {_fmt(ilc.auc)} [{_fmt(ilc.ci_low)}, "
        f"{_fmt(ilc.ci_high)}] on {ILC_SET} against {_fmt(res[IDC_SET].auc)} on {IDC_SET} "
        f"({level} level, unpaired DeLong p = {_p(test.p)}).", "benchmark",
        {"test_set": ILC_SET, "bench_models": [model], "bench_level": level},
        value=float(ilc.auc), table=table)


def _finetuning(store: Store) -> Finding:
    models = store.models()
    scored = set(_scored(store, "image"))
    children = models[models["parent"].notna() & models["model"].isin(scored)
                      & models["parent"].isin(scored)]
    if children.empty:
        run = latest_run(store, "train", status=None)
        state = (f"the latest training run ({run['run_id']}) is {run['status']}, and no "
                 "fine-tuned model has predictions yet; score it on the test sets"
                 if run else "no fine-tuned model with predictions is stored yet; fine-tune "
                 "one on the Fine-tuning page (Models) and score the test sets")
        return Finding("fine-tuning", f"Fine-tuning: {state}.", "finetune")
    child, parent = children["model"].iloc[-1], children["parent"].iloc[-1]
    scores = bm.load_scores(store, models=[child, parent], test_sets=[ILC_SET], level="image")
    pairs = bm.pairwise_tests(scores)
    if pairs.empty:
        return Finding("fine-tuning", f"Fine-tuning: {child} and its parent {parent} share no "
                       f"scored cases of both classes on {ILC_SET}.", "benchmark")
    row = pairs.iloc[0]
    auc = {row["model_a"]: row["auc_a"], row["model_b"]: row["auc_b"]}
    return Finding(
        "fine-tuning", f"Fine-tuning: {child} reaches AUC {_fmt(auc[child])} on {ILC_SET} "
        f"against {_fmt(auc[parent])} for its parent {parent} (paired DeLong p = "
        f"{_p(row['p'])}).", "benchmark",
        {"test_set": ILC_SET, "bench_models": [child, parent], "bench_level": "image"},
        value=float(auc[child]), table=pairs)


def _density(store: Store, model: str | None) -> Finding:
    level = STUDY_LEVEL["density"]
    if model is None:
        return Finding("density", "Density: no model scores to stratify yet.", "density")
    scores = dn.stratified_scores(store, models=[model], test_sets=[ALL_SET], level=level)
    table = dn.dense_vs_nondense(scores)
    row = table.iloc[0]
    if not math.isfinite(row.get("auc_dense", math.nan)):
        return Finding("density", f"Density: {model}'s AUC cannot be split by density on "
                       f"{ALL_SET} ({row['note']}).", "density", table=table)
    return Finding(
        "density", f"Density: {model} reaches AUC {_fmt(row['auc_dense'])} in dense breasts "
        f"(categories 2-3) against {_fmt(row['auc_nondense'])} in non-dense ones ({ALL_SET}, "
        f"{level} level, p = {_p(row['p'])}).", "density",
        {"test_set": ALL_SET, "density_models": [model], "density_level": level},
        value=float(row["auc_dense"]), table=table)


def _saliency(store: Store, model: str | None) -> Finding:
    return Finding("saliency", "Saliency: no saliency agreement is stored; open the Saliency "
                   "page to compare " + (f"{model}'s" if model else "a model's") +
                   " maps with the annotated lesions (Dice, hit rate).", "saliency",
                   {"test_set": ALL_SET, **({"saliency_model": model} if model else {})})


def _radiologists(store: Store, model: str | None) -> Finding:
    level = STUDY_LEVEL["radiologists"]
    readers = cr.reader_options(store, level=level, test_set=ALL_SET) if model else pd.DataFrame()
    if model is None or readers.empty:
        return Finding("radiologists", "Radiologists: the test set needs a model's scores and a "
                       "reader's reads (import reads on the Import page).", "complement")
    consensus = readers[readers["kind"] == "consensus"]["reader"]
    reader = str((consensus if len(consensus) else readers["reader"]).iloc[0])
    report = cr.complement_report(store, test_set=ALL_SET, model=model, reader=reader,
                                  level=level)
    res = report.result
    params = {"test_set": ALL_SET, "complement_level": level, "complement_model": model,
              "complement_reader": reader}
    if res.reader_missed == 0:
        return Finding("radiologists", f"Radiologists: {reader} missed none of the "
                       f"{res.cancers} cancers of {ALL_SET}, so the model has none to catch.",
                       "complement", params, value=0.0)
    return Finding(
        "radiologists", f"Radiologists: at the reader's specificity "
        f"({res.reader.specificity:.0%}) {model} would have caught {res.caught} of the "
        f"{res.reader_missed} cancers {reader} missed, at {res.extra_recalls_per_1000:.0f} extra "
        f"recalls per 1,000 healthy women ({ALL_SET}, {level} level; an enriched test set).",
        "complement", params, value=float(res.caught), table=report.reader_negatives)


def nearest_missed_view(store: Store, *, test_set: str, model: str, reader: str,
                        level: str) -> dict | None:
    """The nearest complement view whose reader missed a cancer: another level for this
    reader first, then another reader at this level, then both. Query parameters, or None.

    Why: with no missed cancers the complement page has nothing to show; it offers this one.
    """
    levels = [level, *[lv for lv in ("exam", "breast", "image") if lv != level]]
    for lv in levels:
        known = list(cr.reader_options(store, level=lv, test_set=test_set)["reader"])
        for r in sorted(known, key=lambda name: name != reader):   # this reader first
            if (lv, r) == (level, reader):
                continue
            try:
                res = cr.complement_report(store, test_set=test_set, model=model, reader=r,
                                           level=lv).result
            except InputError:
                continue
            if res.reader_missed:
                return {"complement_level": lv, "complement_reader": r,
                        "complement_model": model, "test_set": test_set}
    return None


def findings(store: Store) -> list[Finding]:
    """The six findings in `QUESTIONS` order (the study's named test sets; see `core.demo`)."""
    names = set(store.testsets()["name"])
    missing = [t for t in (ALL_SET, ILC_SET, IDC_SET) if t not in names]
    if missing:
        note = (f"needs the test sets {', '.join(missing)} (build the demo with `python -m core "
                "demo` or define them on the Import page).")
        return [Finding(q, f"{q.capitalize()}: {note}", "overview") for q in QUESTIONS]
    image_best = best_model(store, test_set=ALL_SET, level="image")
    exam_best = best_model(store, test_set=ALL_SET, level="exam")
    steps = [("filters", "filters", lambda: _filters(store, ALL_SET)),
             ("models", "benchmark", lambda: _models(store, image_best)),
             ("fine-tuning", "finetune", lambda: _finetuning(store)),
             ("density", "density", lambda: _density(store, exam_best)),
             ("saliency", "saliency", lambda: _saliency(store, image_best)),
             ("radiologists", "complement", lambda: _radiologists(store, exam_best))]
    out = []
    for question, page, answer in steps:
        try:
            out.append(answer())
        except InputError as exc:   # e.g. a test set with one class: say it, keep the others
            out.append(Finding(question, f"{question.capitalize()}: not computable on these "
                               f"test sets ({str(exc).split(';')[0]}).", page))
    return out
