"""Overview: what is in the store, at a glance."""
import streamlit as st

from core.reports import findings as fd
from core.reports.findings_html import findings_html
from core.reports.holdings import store_gaps
from core.store import Store
from ui import cached, charts, store, test_set
from ui.sidebar import synthetic_datasets
from ui.tables import readable
from ui.text import md_escape

st.title("ILCscope")
st.markdown("Research dashboard for **invasive lobular carcinoma** on mammograms: filters, "
            "detection models, density and the radiologist's view, on your own data.")
if synthetic := synthetic_datasets():
    everything = len(synthetic) == len(cached(Store.datasets))
    st.info(("All data in this store is **synthetic**" if everything else
             f"Dataset{'s' if len(synthetic) > 1 else ''} {', '.join(map(md_escape, synthetic))} "
             f"{'are' if len(synthetic) > 1 else 'is'} **synthetic**")
            + ": rendered mammograms and simulated readers from `python -m core demo`. The "
            "numbers show what ILCscope computes, not findings about real patients.",
            icon=":material/science:")

scope = st.segmented_control("Scope", ["Whole store", "Active test set"], default="Whole store",
                             key="overview_scope", bind="query-params")
within = test_set() if scope == "Active test set" else None
counts = cached(Store.counts)
summary = cached(Store.summary, test_set=within)
histology = summary["histology"]
cancers = histology[histology["histology"].isin(["ILC", "IDC", "other", "unknown"])]

n_exams = cached(Store.exams, test_set=within).shape[0]
cols = st.columns(6)
cols[0].metric("Exams", f"{n_exams:,}")
cols[1].metric("Images", f"{int(summary['views']['images'].sum()):,}")
cols[2].metric("Cancers (breasts)", f"{int(cancers['breasts'].sum()):,}")
cols[3].metric("ILC", f"{int(histology.loc[histology['histology'] == 'ILC', 'breasts'].sum()):,}")
cols[4].metric("Readers", counts["readers"])
cols[5].metric("Models", counts["models"])

if gaps := cached(store_gaps):   # what the six questions still need, and where to get it
    st.info("\n".join(f"- {md_escape(gap)}" for gap in gaps), icon=":material/info:")

st.subheader("Findings")
choices = cached(fd.headline_models)
model = None
if choices:
    rule = cached(fd.headline_model)
    model = st.selectbox("Headline model", choices, key="overview_model", bind="query-params",
                         index=choices.index(rule) if rule in choices else 0,
                         help="Every model question below is answered for this model.")
    if rule:
        st.caption(f"Default: {md_escape(rule)}, {fd.HEADLINE_RULE}.")
items = cached(fd.findings, model=model)   # stored results only, cached per store state and model
for item in items:   # core's sentences are plain text holding names: escaped whole
    st.markdown(f"{md_escape(item.sentence)} [Open :material/open_in_new:]({fd.link(item)})")
st.download_button("Download findings", lambda: findings_html(store(), items=items),
                   "ilcscope_findings.html", mime="text/html", key="overview_findings_html",
                   icon=":material/download:", on_click="ignore",
                   help="One HTML file: the six findings, their tables and charts; opens "
                        "without the app or a network.")

left, right = st.columns(2)
with left:
    if summary["presentation"].empty:
        st.info("No cancers in this scope.")
    else:
        st.altair_chart(charts.bar(summary["presentation"], "presentation", "breasts",
                                   color="histology", horizontal=True,
                                   color_scale=charts.HISTOLOGY_COLOURS,
                                   title="Cancers by lesion presentation and histology"),
                        width="stretch")
with right:
    density = summary["density"]
    if density.empty:
        st.info("No density recorded yet (see the Density page).")
    else:
        source = st.selectbox("Density source", sorted(density["source"].unique()),
                              key="overview_density_source", bind="query-params")
        shown = density[density["source"] == source]
        st.altair_chart(charts.density_bars(shown, title="Exams per density category"),
                        width="stretch")
        if (covered := int(shown["exams"].sum())) < n_exams:
            st.caption(f":material/info: Density '{md_escape(source)}' is recorded for "
                       f"{covered:,} of the {n_exams:,} exams in this scope (e.g. estimated "
                       "on one test set).")

left, right = st.columns(2)
with left:
    st.altair_chart(charts.bar(summary["splits"], "split", "exams", color="dataset",
                               title="Exams per split"), width="stretch")
with right:
    if not summary["views"].empty:
        st.altair_chart(charts.bar(summary["views"], "view", "images", color="laterality",
                                   title="Images per view and side"), width="stretch")

st.subheader("Datasets")
readable(cached(Store.datasets))
st.subheader("Test sets")
readable(cached(Store.testsets))
left, right = st.columns(2)
with left:
    st.subheader("Models")
    readable(cached(Store.models)[["model", "kind", "parent", "n_predictions", "description"]])
with right:
    st.subheader("Readers")
    readable(cached(Store.readers))
