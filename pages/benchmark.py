"""Benchmark: AUC [95 % CI] per model and test set, paired DeLong tests, ROC curves with
operating points, sensitivity at fixed specificities, score histograms by histology. Each piece
is cached on its own until the store changes; `python -m core report benchmark` prints the same."""
import streamlit as st

from core.reports import benchmark as benchmark
from core.reports.caveats import IMAGE_LEVEL_DELONG, auc_caveats
from core.reports.published import with_published
from core.vocabulary import LEVELS
from core.store import Store
from ui import cached, download_popover, input_errors, require_test_set, show_caveats
from ui.benchmark_view import piece, show_chart, show_panels, show_unpaired, table_formats
from ui.charts import benchmark as charts
from ui.links import headline_first, linked_models
from ui.published import container_models_note, published_columns
from ui.tables import readable
from ui.text import md_escape
from ui.url_state import follow

SPECIFICITIES = [0.99, 0.98, 0.95, 0.9, 0.85, 0.8]

st.title("Benchmark")
test_set = require_test_set()
levels = cached(Store.prediction_levels)
if levels.empty:
    st.info("No model predictions in this store yet: import predictions on the Import page "
            "(labels without pixels are enough) or run a model.", icon=":material/info:")
    st.stop()

all_models = headline_first(list(dict.fromkeys(levels["model"])))  # the Overview's model first
chosen = st.multiselect("Models", all_models, key="bench_models", bind="query-params",
                        default=linked_models(all_models) or all_models)  # ?model=: it and its parent
mid, right, far, _ = st.columns([2.4, 1.6, 2.2, 4])   # models on their own row: names are long
level = mid.segmented_control("Level", LEVELS, default="image", key="bench_level",
                              bind="query-params") or "image"
how = right.segmented_control("Aggregate", ["max", "mean"], default="max", key="bench_how",
                              bind="query-params", disabled=level == "image",
                              help="Image scores to breast/exam") or "max"
ci = far.segmented_control("95% CI", benchmark.CI_METHODS, default="delong", key="bench_ci",
                           bind="query-params",
                           format_func={"delong": "DeLong", "bootstrap": "Bootstrap"}.get) or "delong"
usable = benchmark.usable_models(levels, level)
models = tuple(m for m in chosen if m in usable)
if skipped := [m for m in chosen if m not in usable]:
    st.caption(f"No scores at {level} level (nor image scores to aggregate): "
               f"{md_escape(', '.join(skipped))}")
if not models:
    st.info("Pick at least one model with scores at this level.", icon=":material/info:")
    st.stop()
scope = dict(models=models, level=level, how=how)
# what every download of this view says about itself (file name and leading CSV columns)
context = dict(models=list(models), level=level,
               aggregation=how if level != "image" else None, ci_method=ci)

st.subheader("AUC by test set")
known = cached(Store.testsets)["name"].tolist()
defaults = benchmark.default_test_sets(test_set, known)
follow("bench_test_sets", test_set, defaults)   # the default follows the sidebar's test set
test_sets = tuple(st.multiselect("Test sets", known, default=defaults, key="bench_test_sets",
                                 bind="query-params"))
one = dict(test_sets=(test_set,), **scope)
with input_errors():
    table = piece(benchmark.auc_summary, test_sets=test_sets, **scope,
                  options=(("ci", ci),)) if test_sets else None
    note = piece(benchmark.class_note, **one)
if table is None:
    st.info("Pick at least one test set for the table.", icon=":material/info:")
else:
    readable(with_published(benchmark.auc_wide(table), cached(Store.models)),
             column_config=published_columns())
    with st.expander("All numbers (full precision)"):
        readable(table, key="bench_auc_numbers", exact=True)
    download_popover("benchmark_auc", "bench_auc", frame=table,
                     context=dict(test_sets=list(test_sets), **context))
    st.caption(f"{level.capitalize()} level; n+ / n- = positive / negative cases; unscored "
               "cases are excluded and counted (n_excluded). " + ("DeLong interval." if ci ==
               "delong" else "Stratified bootstrap, 2000 resamples, seed 0."))
    show_caveats(auc_caveats(table, names=("model", "test_set")))
    container_models_note()
if table is not None and len(test_sets) >= 2:   # the Overview's ILC-against-IDC p
    with input_errors(stop=False):
        show_unpaired(test_sets[:2], scope)
if level == "image":
    st.caption(f":material/warning: {IMAGE_LEVEL_DELONG}")

st.subheader(f"Within {md_escape(test_set)}", help="The sidebar's active test set")
if note:
    st.info(md_escape(note), icon=":material/info:")
spec_col, holm_col = st.columns([3, 1], vertical_alignment="bottom")
targets = spec_col.multiselect(
    "Fixed specificities", SPECIFICITIES, default=[0.98, 0.9], key="bench_specificities",
    bind="query-params", accept_new_options=True,
    format_func=lambda v: f"{float(v):.0%}" if not isinstance(v, str) else v,
    help="Operating points: the lowest threshold whose specificity reaches each target. "
         "Type a value (0.97 or 97%) to add one.")
specificities = ()
with input_errors(stop=False):
    specificities = benchmark.parse_specificities(targets) if targets else ()
holm = holm_col.toggle("Holm adjustment", value=True, key="bench_holm", bind="query-params",
                       disabled=len(models) < 2,
                       help="Holm's step-down correction of the paired p-values over all pairs")
ops = (piece(benchmark.sensitivity_at_specificity, **one,
             options=(("specificities", specificities),)) if specificities else None)
here = dict(test_set=test_set, **context)

roc_col, pair_col = st.columns([3, 2], gap="large")
with roc_col:
    roc = piece(benchmark.roc_points, **one)
    if not roc.empty:
        show_chart(charts.roc_chart, "roc", roc, ops, models=models, title="ROC curves",
                   width="stretch", frame=roc, context=here)
with pair_col:
    pairs = piece(benchmark.pairwise_tests, **one)
    if len(models) < 2:
        st.info("Pick two or more models for paired DeLong tests.", icon=":material/info:")
    elif not pairs.empty:
        show_chart(charts.pvalue_heatmap, "delong", pairs, column="p_holm" if holm else "p",
                   title="Paired DeLong test, p-values", frame=pairs,
                   context=dict(here, p_values="holm" if holm else "unadjusted"))
        if n_out := pairs["n_excluded"].iloc[0]:
            st.caption(f"{n_out} cases lacking a score from some model are left out of the tests.")
if len(models) >= 2 and not pairs.empty:
    # full width: in the narrow column the last column (p_holm) was cut off
    readable(pairs, key="bench_pairs",
             column_order=["model_a", "model_b", "auc_a", "auc_b", "diff", "p", "p_holm"],
             column_config=table_formats(("auc_a", "auc_b", "diff")))

if ops is not None and not ops.empty:
    st.markdown("**Sensitivity at fixed specificity**")
    readable(ops, key="bench_ops", column_order=list(ops.columns[1:]), exact=True,
             column_config=table_formats(("sensitivity", "specificity"), digits=3,
                                         percent=("target_specificity",),
                                         target_specificity="target specificity"))
    download_popover("sensitivity_at_specificity", "bench_ops", frame=ops, context=here)

st.markdown("**Score distributions: healthy, ILC, IDC, other cancers**")
scale = st.segmented_control("Height", ["share", "count"], default="share", key="bench_hist_y",
                             bind="query-params",
                             format_func={"share": "Share of group", "count": "Count"}.get)
hist = piece(benchmark.score_histograms, **one)
if hist.empty:
    st.info("No scored cases in this test set.", icon=":material/info:")
else:
    show_panels(charts.score_histogram_panels, charts.score_histograms, "score_histograms", hist,
                y=scale or "share", frame=hist, context=here)
