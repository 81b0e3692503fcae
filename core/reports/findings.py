"""The study's six questions, each answered in one sentence from what the store holds.

Why: the Overview, the shared HTML report and ``python -m core report findings`` open on the
study's answers, not on counts. Each `Finding` carries the page and the query parameters
(the pages' widget keys, bound to the URL) that open the view giving its number, so a reader
can check it there. One headline model answers every model question (`HEADLINE_RULE` picks
it unless the caller names one) and each sentence names it, so no two sentences silently
quote different models. Only stored results are read: predictions, reads, stored filter AUCs,
saliency files and outlines, model lineage; nothing here runs a batch (filters, predict,
training). Where a question has no stored result the sentence says so and what to run.
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
from core.reports.saliency import saliency_report
from core.store import Store
from core.store.runs import latest_run

__all__ = ["Finding", "HEADLINE_RULE", "QUESTIONS", "best_model", "filters_finding", "findings",
           "headline_model", "headline_models", "link", "nearest_missed_view"]

QUESTIONS = ("filters", "models", "fine-tuning", "density", "saliency", "radiologists")
STUDY_LEVEL = {"models": "image", "density": "exam", "radiologists": "exam"}  # the pages' defaults
ILC_SET, IDC_SET, ALL_SET = "test-ILC", "test-IDC", "test-all"
UNFILTERED = "original"   # the filters' code for the image as acquired (`core.image.filters`)
HEADLINE_RULE = f"the model with the highest image-level AUC on {ALL_SET}"


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


def headline_models(store: Store) -> list[str]:
    """The models a headline can be: those with image-level scores (stored or none needed)."""
    return _scored(store, "image")


def headline_model(store: Store) -> str | None:
    """The default headline model, by `HEADLINE_RULE` (None: no model has image scores)."""
    if not headline_models(store):
        return None
    return best_model(store, test_set=ALL_SET, level="image") if ALL_SET in set(
        store.testsets()["name"]) else headline_models(store)[0]


def filters_finding(results: pd.DataFrame, *, test_set: str = ALL_SET) -> Finding:
    """The Filters answer from `core.reports.filters.stored_results` rows.

    Each method's mean pixel AUC (over annotated cancer images) is compared with the image as
    acquired (code ``'original'``), not with M1: M1 (CLAHE) is itself a filter, and quoting it
    as "the original" made a filter that only equals the raw image look like a gain.
    """
    table = summarize(results)
    link = {"test_set": test_set}
    if table.empty:
        return Finding("filters", "Filters (image processing, no model): no filter run is "
                       f"stored for {test_set} yet; press Run on the Filters page (or `python "
                       "-m core filters run`).", "filters", link)
    n = int(table["n_images"].max())
    raw = table[table["method"] == UNFILTERED]
    filtered = table[table["method"] != UNFILTERED]
    if raw.empty or filtered.empty:
        what = "the unfiltered image" if raw.empty else "any filter (M1-M7)"
        return Finding("filters", f"Filters (image processing, no model): the stored run on "
                       f"{test_set} lacks {what}, so no filter can be compared with the image as "
                       "acquired; run the Filters page with the original and M1-M7.", "filters",
                       link, table=table)
    base = float(raw["mean_auc"].iloc[0])
    best = filtered.sort_values("mean_auc", ascending=False, kind="stable").iloc[0]
    verdict = (f"{best['method']} ({best['name']}) is best" if best["mean_auc"] > base
               else f"no filter beats the unfiltered image (best: {best['method']}, "
                    f"{best['name']})")
    return Finding("filters", f"Filters (image processing, no model): on {n} annotated cancer "
                   f"images of {test_set} {verdict}, mean pixel AUC {_fmt(best['mean_auc'])} "
                   f"against {_fmt(base)} for the unfiltered image.", "filters", link,
                   value=float(best["mean_auc"]), table=table)


def _filters(store: Store, test_set: str) -> Finding:
    return filters_finding(stored_results(store, test_set=test_set), test_set=test_set)


def _models(store: Store, model: str | None) -> Finding:
    level = STUDY_LEVEL["models"]
    if model is None:
        return Finding("models", "Models: no model has scores on the test sets yet; score one on "
                       "the Benchmark page's import or `python -m core predict`.", "benchmark")
    scores = bm.load_scores(store, models=[model], test_sets=[ILC_SET, IDC_SET], level=level)
    table = bm.auc_summary(scores)
    test = bm.unpaired_tests(scores, test_sets=[ILC_SET, IDC_SET]).iloc[0]
    if test["note"]:
        raise InputError(f"{model}: {test['note']}")
    ci = table.set_index("test_set").loc[ILC_SET]
    # the study reports image level (and the headline rule ranks there); the Benchmark page
    # warns that image-level p-values run small (a woman's views are correlated)
    return Finding(
        "models", f"Models: {model} reaches AUC {_fmt(test['auc_a'])} [{_fmt(ci['ci_low'])}, "
        f"{_fmt(ci['ci_high'])}] on {ILC_SET} against {_fmt(test['auc_b'])} on {IDC_SET} "
        f"(unpaired DeLong p = {_p(test['p'])}, at {level} level as the study reports it; "
        "p-values there run small, as views of one woman are correlated).", "benchmark",
        {"test_set": ILC_SET, "bench_models": [model], "bench_level": level,
         "bench_test_sets": [ILC_SET, IDC_SET]},
        value=float(test["auc_a"]), table=table)


def _kin(store: Store, model: str) -> tuple[str, str] | None:
    """(child, parent) with ``model`` as one of them and both scored at image level: its parent
    first, else its newest fine-tuned child (the models table's order)."""
    models = store.models()
    scored = set(_scored(store, "image"))
    parents = models.set_index("model")["parent"]
    if parents.get(model) in scored:
        return model, str(parents[model])
    children = models[(models["parent"] == model) & models["model"].isin(scored)]
    return (str(children["model"].iloc[-1]), model) if len(children) else None


def _finetuning(store: Store, model: str | None) -> Finding:
    pair = _kin(store, model) if model is not None else None
    if pair is None:
        run = latest_run(store, "train", status=None)
        state = (f"the latest training run ({run['run_id']}) is {run['status']}, and no "
                 "fine-tuned model has predictions yet; score it on the test sets"
                 if run else "no fine-tuned model with predictions is stored yet; fine-tune "
                 "one on the Fine-tuning page (Models) and score the test sets")
        who = f"{model} has no scored parent or fine-tuned child; " if model else ""
        return Finding("fine-tuning", f"Fine-tuning: {who}{state}.", "finetune")
    child, parent = pair
    scores = bm.load_scores(store, models=[child, parent], test_sets=[ILC_SET], level="image")
    pairs = bm.pairwise_tests(scores)
    params = {"test_set": ILC_SET, "bench_models": [child, parent], "bench_level": "image",
              "bench_test_sets": [ILC_SET]}
    if pairs.empty:
        return Finding("fine-tuning", f"Fine-tuning: {child} and its parent {parent} share no "
                       f"scored cases of both classes on {ILC_SET}.", "benchmark", params)
    row = pairs.iloc[0]
    auc = {row["model_a"]: row["auc_a"], row["model_b"]: row["auc_b"]}
    return Finding(
        "fine-tuning", f"Fine-tuning: {child} reaches AUC {_fmt(auc[child])} on {ILC_SET} "
        f"against {_fmt(auc[parent])} for its parent {parent} (paired DeLong p = "
        f"{_p(row['p'])}).", "benchmark", params, value=float(auc[child]), table=pairs)


def _density(store: Store, model: str | None) -> Finding:
    level = STUDY_LEVEL["density"]
    if model is None:
        return Finding("density", "Density: no model scores to stratify yet.", "density")
    scores = dn.stratified_scores(store, models=[model], test_sets=[ALL_SET], level=level)
    table = dn.dense_vs_nondense(scores)
    row = table.iloc[0]
    params = {"test_set": ALL_SET, "density_models": [model], "density_level": level,
              "density_head_model": model, "density_model": model}
    if not math.isfinite(row.get("auc_dense", math.nan)):
        return Finding("density", f"Density: {model}'s AUC cannot be split by density on "
                       f"{ALL_SET} ({row['note']}).", "density", params, table=table)
    return Finding(
        "density", f"Density: {model} reaches AUC {_fmt(row['auc_dense'])} in dense breasts "
        f"(categories 2-3) against {_fmt(row['auc_nondense'])} in non-dense ones ({ALL_SET}, "
        f"{level} level, p = {_p(row['p'])}).", "density", params,
        value=float(row["auc_dense"]), table=table)


def _saliency(store: Store, model: str | None) -> Finding:
    """Dice and pointing game of the model's malignant maps against the stored outlines: the
    numbers of `core.reports.saliency.saliency_report` (``report saliency``), newest outlines."""
    if model is None:
        return Finding("saliency", "Saliency: no model has scores yet, so no map to compare "
                       "with the outlines.", "saliency", {"test_set": ALL_SET})
    params = {"test_set": ALL_SET, "saliency_model": model, "saliency_which": "malignant",
              "saliency_view": "Test set"}   # the view with the Dice and hit numbers
    images = store.images(test_set=ALL_SET)["image_id"]
    outlined = store.select("annotations", image_id=list(images))["image_id"].nunique()
    if not outlined:
        return Finding("saliency", f"Saliency: no image of {ALL_SET} has a tumour outline, so "
                       f"{model}'s maps cannot be scored; draw outlines on the Annotate page "
                       "(or import them).", "annotate", {"test_set": ALL_SET})
    try:
        report = saliency_report(store, test_set=ALL_SET, model=model)
    except InputError:   # outlines exist, so no outlined image has a map from this model
        return Finding("saliency", f"Saliency: {model} stored no saliency map for the "
                       f"{outlined} outlined images of {ALL_SET} (models without maps, such as "
                       "a classical baseline, cannot be scored); pick a model that writes maps "
                       "(GMIC) or run predict with maps.", "saliency", params)
    except OSError as exc:   # the store's files folder moved or was not copied with it
        return Finding("saliency", f"Saliency: the outline or map files of {ALL_SET} cannot be "
                       f"read ({type(exc).__name__}: {exc.filename or exc}); keep the store's "
                       "_files folder beside it.", "saliency", params)
    s = report.summary[model]
    n = int(s["n_images"])
    if not n:
        return Finding("saliency", f"Saliency: {model} stored no saliency map for the "
                       f"{outlined} outlined images of {ALL_SET}.", "saliency", params)
    unmapped = len(report.skipped.get(f"no saliency file from {model}", []))
    gap = f"; {unmapped} outlined images have no map from {model}" if unmapped else ""
    table = pd.DataFrame([{"model": model, **s}])
    return Finding(
        "saliency", f"Saliency: on {n} outlined images of {ALL_SET}, {model}'s malignant map "
        f"reaches a median best Dice of {_fmt(s['median_best_dice'])} (IQR "
        f"{_fmt(s['q1_best_dice'])}-{_fmt(s['q3_best_dice'])}), and its maximum lies inside the "
        f"tumour on {int(s['n_hits'])} of {n} (hit rate {s['hit_rate']:.0%}, 95 % CI "
        f"{s['hit_ci_low']:.0%}-{s['hit_ci_high']:.0%}){gap}.", "saliency", params,
        value=float(s["hit_rate"]), table=table)


def _radiologists(store: Store, model: str | None) -> Finding:
    level = STUDY_LEVEL["radiologists"]
    readers = cr.reader_options(store, level=level, test_set=ALL_SET) if model else pd.DataFrame()
    if model is None or readers.empty:
        return Finding("radiologists", f"Radiologists: {ALL_SET} needs "
                       + (f"a reader's reads to set beside {model}'s scores" if model else
                          "a model's scores and a reader's reads")
                       + " (import reads on the Import page).", "complement")
    consensus = readers[readers["kind"] == "consensus"]["reader"]
    reader = str((consensus if len(consensus) else readers["reader"]).iloc[0])
    report = cr.complement_report(store, test_set=ALL_SET, model=model, reader=reader,
                                  level=level)
    res = report.result
    params = {"test_set": ALL_SET, "complement_level": level, "complement_model": model,
              "complement_reader": reader}
    if res.reader_missed == 0:
        return Finding("radiologists", f"Radiologists: {reader} missed none of the "
                       f"{res.cancers} cancers of {ALL_SET}, so {model} has none to catch.",
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


def findings(store: Store, *, model: str | None = None) -> list[Finding]:
    """The six findings in `QUESTIONS` order (the study's named test sets; see `core.demo`).

    model : the headline model every model question is answered for; None picks it by
        `HEADLINE_RULE`. It must have image-level scores (`headline_models`).
    """
    known = headline_models(store)
    if model is not None and model not in known:
        raise InputError(f"model {model!r} has no image-level scores in this store (models with "
                         f"scores: {', '.join(known) or 'none'}); pick one of them")
    names = set(store.testsets()["name"])
    missing = [t for t in (ALL_SET, ILC_SET, IDC_SET) if t not in names]
    if missing:
        note = (f"needs the test sets {', '.join(missing)} (build the demo with `python -m core "
                "demo` or define them on the Import page).")
        return [Finding(q, f"{q.capitalize()}: {note}", "overview") for q in QUESTIONS]
    model = model if model is not None else headline_model(store)
    steps = [("filters", "filters", lambda: _filters(store, ALL_SET)),
             ("models", "benchmark", lambda: _models(store, model)),
             ("fine-tuning", "finetune", lambda: _finetuning(store, model)),
             ("density", "density", lambda: _density(store, model)),
             ("saliency", "saliency", lambda: _saliency(store, model)),
             ("radiologists", "complement", lambda: _radiologists(store, model))]
    out = []
    for question, page, answer in steps:
        try:
            out.append(answer())
        except InputError as exc:   # e.g. a test set with one class: say it, keep the others
            out.append(Finding(question, f"{question.capitalize()}: not computable on these "
                               f"test sets ({str(exc).split(';')[0]}).", page))
    return out

