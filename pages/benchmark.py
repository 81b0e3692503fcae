"""Benchmark: AUC [95 % CI] per model and test set, paired DeLong tests, ROC curves with
operating points, sensitivity at fixed specificities, score histograms by histology. Each piece
is cached on its own until the store changes; `python -m core report benchmark` prints the same."""
import pandas as pd
import streamlit as st

from core.reports import benchmark as benchmark
from core.reports import findings
from core.reports.caveats import IMAGE_LEVEL_DELONG, auc_caveats
from core.errors import InputError
from core.vocabulary import LEVELS
from core.store import Store
from ui import (cached, data_token, download_popover, qualified_name, require_test_set,
                settings, show_caveats, show_input_error, store)
from ui.charts import benchmark as charts
from ui.links import linked_models


@st.cache_resource(show_spinner="Loading scores…", max_entries=16)
def _scores(db: str, token: tuple, models: tuple, test_set: str, level: str, how: str):
    # Shared, never mutated (core.reports.benchmark only reads it): no copy of 100k rows per rerun.
    return benchmark.load_scores(store(), models=models, test_sets=[test_set], level=level, how=how)


@st.cache_data(show_spinner="Computing…", max_entries=128)
def _computed(name: str, db: str, token: tuple, models: tuple, test_sets: tuple, level: str,
              how: str, options: tuple, _fn):
    frame = pd.concat([_scores(db, token, models, t, level, how) for t in test_sets],
                      ignore_index=True)
    return _fn(frame, **dict(options))


def _piece(piece, db: str, token: tuple, *, models: tuple, test_sets: tuple, level: str,
           how: str, options: tuple = ()):
    """``piece`` (a `core.reports.benchmark` function) on the test sets' scores, cached until
    the store changes."""
    return _computed(qualified_name(piece), db, token, models, test_sets, level, how, options,
                     _fn=piece)


@st.cache_resource(show_spinner=False, max_entries=64)
def _chart(name: str, _builder, *frames, **options):
    # Built and validated once per input: altair's schema checks cost ~100 ms a rerun.
    chart = _builder(*frames, **options)
    return chart, chart.to_dict()


def _show(builder, stem: str, *frames, width: str = "content", frame=None, context=None,
          **options) -> None:
    chart, spec = _chart(qualified_name(builder), builder, *frames, **options)
    st.vega_lite_chart(spec, width=width)
    download_popover(stem, f"bench_{builder.__name__}", chart=chart, frame=frame,
                     context=context)


st.title("Benchmark")
test_set = require_test_set()
levels = cached(Store.prediction_levels)
if levels.empty:
    st.info("No model predictions in this store yet: import predictions on the Import page "
            "(labels without pixels are enough) or run a model.", icon=":material/info:")
    st.stop()

left, mid, right, far = st.columns([4, 2.4, 1.6, 2.2])
all_models = list(dict.fromkeys(levels["model"]))
best = cached(findings.best_model, test_set=test_set, level="image")  # the best model first
all_models.sort(key=lambda m: m != best)
chosen = left.multiselect("Models", all_models, key="bench_models", bind="query-params",
                          default=linked_models(all_models) or all_models)  # ?model=: it and its parent
level = mid.segmented_control("Level", LEVELS, default="image", key="bench_level", bind="query-params") or "image"
how = right.segmented_control("Aggregate", ["max", "mean"], default="max", key="bench_how", bind="query-params",
                              disabled=level == "image", help="Image scores to breast/exam") or "max"
ci = far.segmented_control("95% CI", benchmark.CI_METHODS, default="delong", key="bench_ci", bind="query-params",
                           format_func={"delong": "DeLong", "bootstrap": "Bootstrap"}.get)
ci = ci or "delong"
usable = benchmark.usable_models(levels, level)
models = tuple(m for m in chosen if m in usable)
if skipped := [m for m in chosen if m not in usable]:
    st.caption(f"No scores at {level} level (nor image scores to aggregate): {', '.join(skipped)}")
if not models:
    st.info("Pick at least one model with scores at this level.", icon=":material/info:")
    st.stop()
key = (str(settings().db_path), data_token())
scope = dict(models=models, level=level, how=how)
# what every download of this view says about itself (file name and leading CSV columns)
context = dict(models=list(models), level=level,
               aggregation=how if level != "image" else None, ci_method=ci)

st.subheader("AUC by test set")
known = cached(Store.testsets)["name"].tolist()
test_sets = tuple(st.multiselect(  # keyed by the active set: its default follows the sidebar
    "Test sets", known, default=benchmark.default_test_sets(test_set, known),
    key=f"bench_test_sets_{test_set}"))
one = dict(test_sets=(test_set,), **scope)
try:
    table = _piece(benchmark.auc_summary, *key, test_sets=test_sets, **scope,
                   options=(("ci", ci),)) if test_sets else None
    note = _piece(benchmark.class_note, *key, **one)
except InputError as exc:
    show_input_error(exc)
    st.stop()
if table is None:
    st.info("Pick at least one test set for the table.", icon=":material/info:")
else:
    st.dataframe(benchmark.auc_wide(table), hide_index=True)
    with st.expander("All numbers (full precision)"):
        st.dataframe(table, hide_index=True, key="bench_auc_numbers")
    download_popover("benchmark_auc", "bench_auc", frame=table,
                     context=dict(test_sets=list(test_sets), **context))
    st.caption(f"{level.capitalize()} level; n+ / n- = positive / negative cases; unscored "
               "cases are excluded and counted (n_excluded). " + ("DeLong interval." if ci ==
               "delong" else "Stratified bootstrap, 2000 resamples, seed 0."))
    show_caveats(auc_caveats(table, names=("model", "test_set")))
if level == "image":
    st.caption(f":material/warning: {IMAGE_LEVEL_DELONG}")

st.subheader(f"Within {test_set}", help="The sidebar's active test set")
if note:
    st.info(note, icon=":material/info:")
spec_col, holm_col = st.columns([3, 1], vertical_alignment="bottom")
targets = spec_col.multiselect(
    "Fixed specificities", [0.99, 0.98, 0.95, 0.9, 0.85, 0.8], default=[0.98, 0.9],
    key="bench_specificities", accept_new_options=True,
    format_func=lambda v: f"{float(v):.0%}" if not isinstance(v, str) else v,
    help="Operating points: the lowest threshold whose specificity reaches each target. "
         "Type a value (0.97 or 97%) to add one.")
try:
    specificities = benchmark.parse_specificities(targets) if targets else ()
except InputError as exc:
    show_input_error(exc)
    specificities = ()
holm = holm_col.toggle("Holm adjustment", value=True, key="bench_holm", disabled=len(models) < 2,
                       help="Holm's step-down correction of the paired p-values over all pairs")
ops = (_piece(benchmark.sensitivity_at_specificity, *key, **one,
              options=(("specificities", specificities),)) if specificities else None)
here = dict(test_set=test_set, **context)

roc_col, pair_col = st.columns([3, 2], gap="large")
with roc_col:
    roc = _piece(benchmark.roc_points, *key, **one)
    if not roc.empty:
        _show(charts.roc_chart, "roc", roc, ops, models=models, title="ROC curves",
              width="stretch", frame=roc, context=here)
with pair_col:
    pairs = _piece(benchmark.pairwise_tests, *key, **one)
    if len(models) < 2:
        st.info("Pick two or more models for paired DeLong tests.", icon=":material/info:")
    elif not pairs.empty:
        _show(charts.pvalue_heatmap, "delong", pairs, column="p_holm" if holm else "p",
              title="Paired DeLong test, p-values", frame=pairs,
              context=dict(here, p_values="holm" if holm else "unadjusted"))
        if n_out := pairs["n_excluded"].iloc[0]:
            st.caption(f"{n_out} cases lacking a score from some model are left out of the tests.")
if len(models) >= 2 and not pairs.empty:
    # full width: in the narrow column the last column (p_holm) was cut off
    st.dataframe(pairs, hide_index=True, key="bench_pairs",
                 column_order=["model_a", "model_b", "auc_a", "auc_b", "diff", "p", "p_holm"],
                 column_config={c: st.column_config.NumberColumn(format="%.4f")
                                for c in ("auc_a", "auc_b", "diff", "p", "p_holm")})

if ops is not None and not ops.empty:
    st.markdown("**Sensitivity at fixed specificity**")
    st.dataframe(ops, hide_index=True, key="bench_ops", column_order=list(ops.columns[1:]),
                 column_config={
        "target_specificity": st.column_config.NumberColumn("target specificity", format="percent"),
        "sensitivity": st.column_config.NumberColumn(format="%.3f"),
        "specificity": st.column_config.NumberColumn(format="%.3f")})
    download_popover("sensitivity_at_specificity", "bench_ops", frame=ops, context=here)

st.markdown("**Score distributions: healthy, ILC, IDC, other cancers**")
scale = st.segmented_control("Height", ["share", "count"], default="share", key="bench_hist_y",
                             format_func={"share": "Share of group", "count": "Count"}.get)
hist = _piece(benchmark.score_histograms, *key, **one)
if hist.empty:
    st.info("No scored cases in this test set.", icon=":material/info:")
else:
    _show(charts.score_histograms, "score_histograms", hist, y=scale or "share", frame=hist,
          context=here)
