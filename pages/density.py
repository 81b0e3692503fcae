"""Density: is a model (or a radiologist) worse in dense breasts? Category distribution, AUC for
non-dense (0-1), dense (2-3) and without extremely dense (0-2) with a dense vs non-dense test,
score against density, and readers per category beside the model. Same numbers as
``python -m core report density``; ``python -m core density estimate`` fills in a source."""
import streamlit as st

from core.jobs.density import last_run
from core.reports import density as dr
from core.reports.benchmark import usable_models
from core.reports.caveats import IMAGE_LEVEL_DELONG, auc_caveats
from core.store import Store
from core.vocabulary import LEVELS
from ui import cached, download_popover, input_errors, require_test_set, show_caveats, store
from ui import density as view
from ui.charts import density as charts
from ui.layout import chart_grid
from ui.links import headline_first
from ui.text import md_code, md_escape

st.title("Density")
st.caption("Dense tissue hides tumours: the study found lower AUC in dense breasts (categories 2-3) "
           "than in non-dense ones (0-1), for models and radiologists alike.")
test_set = require_test_set()
sources = cached(Store.density_sources)

view.estimate_panel(test_set, sources)
if not sources:
    st.info("No density in this store yet: estimate it above or import labels.", icon=":material/info:")
    st.stop()

top = st.columns([1.2, 1.5, 1, 3])
source = top[0].selectbox("Density source", sources, key="density_source", bind="query-params",
                          index=sources.index("label") if "label" in sources else 0)
level = top[1].segmented_control("Level", LEVELS, default="exam", key="density_level",
                                  bind="query-params", required=True, wrap=True)
how = top[2].segmented_control("Aggregate", ["max", "mean"], default="max", key="density_how",
                               bind="query-params", disabled=level == "image", required=True,
                               wrap=True, help="Image scores to breast/exam")
models = headline_first(usable_models(cached(Store.prediction_levels), level))  # Overview's first
chosen = tuple(top[3].multiselect("Models", models, default=models, key="density_models",
                                  bind="query-params"))
if run := last_run(store(), source):
    st.caption(f":material/info: **{md_escape(source)}** ({md_escape(run.get('test_set'))}, "
               f"{run.get('created')}): {md_escape(run.get('describe', ''))}")
names = cached(Store.testset_names)
context = dict(source=source, models=list(chosen), level=level,
               aggregation=how if level != "image" else None)

left, right = st.columns([1, 1.25], gap="large")
with left:
    st.subheader("Categories", help="Exams per density category (0 almost entirely fatty to 3 "
                 "extremely dense)")
    by = st.segmented_control("Per", ["dataset", "test_set"], default="dataset", key="density_by",
                              bind="query-params", required=True, format_func={
                                  "dataset": "Dataset", "test_set": "Test set"}.get)
    # keyed by the sidebar's test set, so its default follows the sidebar (as Benchmark's)
    groups = st.multiselect("Test sets", names, default=[test_set], bind="query-params",
                            key=f"density_dist_sets_{test_set}") if by == "test_set" else None
    counts = cached(dr.category_counts, source=source, by=by, test_sets=groups)
    if counts["exams"].sum() == 0:
        st.info(f"Source '{md_escape(source)}' has no categories here (percentages only?).",
                icon=":material/info:")
    else:
        dist = charts.distribution_chart(counts, title=f"Exams per category ({source})")
        st.altair_chart(dist, width="stretch")
        totals = counts.groupby("group", sort=False)["exams"].sum()
        st.caption("Bars: % of each group's exams with a category; the label on a bar is its "
                   "share, the count shows on hover. n = " + ", ".join(
                       f"{g}: {int(n):,} exams" for g, n in totals.items()))
        download_popover("density_categories", "density_dist", chart=dist, frame=counts,
                         context=dict(source=source, per=by, test_sets=groups))
with right:
    st.subheader("AUC by density", help="AUC per density stratum with its 95% CI; unpaired "
                 "DeLong test of dense (2-3) vs non-dense (0-1)")
    test_sets = tuple(st.multiselect("Test sets", names, default=[test_set],
                                     key=f"density_auc_sets_{test_set}", bind="query-params"))
    if not models:
        st.info(f"No model has scores at {level} level in this store, so there is no AUC to "
                "stratify: run one (Benchmark page) or import predictions (`python -m core "
                "import predictions FILE`).", icon=":material/info:")
        st.stop()
    if not chosen or not test_sets:
        st.info("Pick at least one model and one test set.", icon=":material/info:")
        st.stop()
    with input_errors():
        scores = cached(dr.stratified_scores, models=chosen, test_sets=test_sets, level=level,
                        density_source=source, how=how)
    table, tests = dr.stratified_auc(scores), dr.dense_vs_nondense(scores)
    # the headline: the sidebar's test set where it is picked, for the model named above it
    mine = tests[tests["test_set"] == test_set]
    head_model = st.selectbox("Headline model", list(dict.fromkeys(tests["model"])),
                              key="density_head_model", bind="query-params")
    rows = (mine if not mine.empty else tests)
    view.headline(rows[rows["model"] == head_model].iloc[0], level=level)
    show_caveats(auc_caveats(table, names=("model", "test_set", "stratum")))
    if level == "image":
        st.caption(f":material/warning: {IMAGE_LEVEL_DELONG}")
    forest = charts.auc_forest(table, title=f"AUC (95% CI), {level} level")
    st.altair_chart(forest, width="stretch")
    # both tables have a note: name them, not note_x / note_y
    download_popover("auc_by_density", "density_auc", chart=forest,
                     frame=table.rename(columns={"note": "auc_note"}).merge(
                         tests.rename(columns={"note": "test_note"}),
                         on=["test_set", "model"], how="left"),
                     context=dict(context, test_sets=list(test_sets)))
view.auc_numbers(table, tests)

left, right = st.columns([1, 1.25], gap="large")
with left:
    st.subheader("Score against density", help="Does the model score dense breasts higher, "
                 "healthy or not? One dot per case")
    model = st.selectbox("Model", chosen, key="density_model", bind="query-params")
    scatter = cached(dr.density_scatter, model=model, test_set=test_set, level=level,
                    density_source=source, how=how)
    if scatter.empty:
        st.info(f"No case of {md_escape(test_set)} has both a {md_escape(model)} score and a "
                f"'{md_escape(source)}' density "
                "score.", icon=":material/info:")
    else:
        unit = "expected category" if source == "nyu-histogram" else "percent dense area"
        fig = charts.score_vs_density(scatter, density_title=f"{source}: {unit}",
                                      title=f"{model}, {test_set}")
        st.altair_chart(fig, width="stretch")
        download_popover("score_vs_density", "density_scatter", chart=fig, frame=scatter,
                         context=dict(context, test_set=test_set, models=model))
with right:
    st.subheader("Radiologists by density", help="Wilson 95% CIs; the model at the threshold matching "
                 "each reader's overall specificity")
    options = cached(dr.reader_by_density, model=model, test_set=test_set, level=level,
                    density_source=source, how=how)
    names = list(dict.fromkeys(options["reader"]))     # consensus first
    readers = st.multiselect("Readers", names, default=names[:1], key="density_readers",
                             bind="query-params")
    shown = options[options["reader"].isin(readers)]
    if not names:
        st.info(f"No radiologist has recall decisions at {level} level in {md_code(test_set)}, so "
                "there is nobody to set beside the model: import reads (`python -m core import "
                "readers FILE`) or pick a test set with readers.", icon=":material/info:")
    elif shown.empty:
        st.info(f"Pick a reader with recall decisions at {level} level in {md_escape(test_set)}.",
                icon=":material/info:")
    else:
        rc = charts.reader_chart(shown, title=f"{model} at each reader's specificity")
        st.markdown(f"**{md_escape(model)} at each reader's specificity**")
        chart_grid(charts.reader_panels(shown), per_row=1)   # the download: one figure
        download_popover("readers_by_density", "density_reader", chart=rc, frame=shown,
                         context=dict(context, test_set=test_set, models=model,
                                      readers=readers))
        view.reader_numbers(shown)
