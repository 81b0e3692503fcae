"""Reader study: do radiologists read better with the model? Each reader's AUC unaided and
aided, the MRMC test (readers and cases random), variance components, ROC curves, a sample-size
table and the model against the readers. Same numbers as ``python -m core report mrmc``."""
import streamlit as st

from core.reports import mrmc
from core.stats.mrmc import MRMC_ANALYSES, MRMC_COVARIANCES, MRMC_METHODS
from core.store import Store
from ui import cached, download_popover, input_errors
from ui.charts import mrmc as charts
from ui.layout import chart_grid
from ui.tables import na_as_text, readable
from ui.text import md_escape

METHODS = {"or": "Obuchowski-Rockette", "dbm": "Dorfman-Berbaum-Metz"}
ANALYSES = {"rrrc": "Random readers and cases", "frrc": "Fixed readers",
            "rrfc": "Fixed cases"}
SUBGROUPS = {None: "All cases", "ILC": "ILC cancers + healthy", "dense": "Dense breasts"}
_NUMBERS = st.column_config.NumberColumn(format="%.4f")


def _table(frame, stem: str, **config) -> None:
    readable(frame, key=f"mrmc_{stem}", column_config=config, missing="NA")
    download_popover(f"reader_study_{stem}", f"mrmc_{stem}", frame=frame, context=context)


def _chart(chart, stem: str, frame=None, **options) -> None:
    st.altair_chart(chart, **options)
    download_popover(f"reader_study_{stem}", f"mrmc_{stem}_chart", chart=chart, frame=frame,
                     context=context)


st.title("Reader study")
st.caption("Several radiologists read the same cases without and with the model's help. Is "
           "their mean AUC higher with it, treating both readers and cases as random samples?")
studies = cached(Store.reader_studies)
if studies.empty:
    st.info("No reader study in this store yet: import one with `python -m core import "
            "reader-study FILE --study NAME` (a long table or an iMRMC file).",
            icon=":material/info:")
    st.stop()

top = st.columns([2, 3, 1.2])
study = top[0].selectbox("Study", studies["study"], key="mrmc_study", bind="query-params")
info = studies.set_index("study").loc[study]
known = mrmc.order_modalities(str(info["modalities"] or "").split(","))
chosen = top[1].multiselect("Modalities (reference first)", known, default=known[:2],
                            key=f"mrmc_modalities_{study}", bind="query-params")
levels = cached(mrmc.study_levels, study)
level = top[2].selectbox("Level", levels, key=f"mrmc_level_{study}", bind="query-params")
if info["description"]:
    st.caption(f":material/info: {md_escape(mrmc.public_description(info['description']))}")
row = st.columns([2.2, 1.8, 2.6, 2])
method = row[0].segmented_control("Method", MRMC_METHODS, default="or", key="mrmc_method",
                                  bind="query-params", format_func=METHODS.get, required=True,
                                  wrap=True)   # options wrap: one row cut "Dorfman-..."
cov = row[1].segmented_control("Covariance", MRMC_COVARIANCES, default="jackknife",
                               key="mrmc_cov", bind="query-params", disabled=method == "dbm",
                               required=True, wrap=True,
                               help="DBM is built on jackknife pseudovalues")
analysis = row[2].segmented_control("Analysis", MRMC_ANALYSES, default="rrrc",
                                    key="mrmc_analysis", bind="query-params",
                                    format_func=ANALYSES.get, required=True, wrap=True)
subgroup = row[3].selectbox("Cases", list(SUBGROUPS), format_func=SUBGROUPS.get,
                            key="mrmc_subgroup", bind="query-params",
                            disabled=not info["store_cases"],
                            help="Subgroups need the store's histology and density")
with st.expander("Sample size and model comparison settings"):
    plan = st.columns(4)
    effect = plan[0].number_input("AUC difference to detect", 0.005, 0.5, 0.05, 0.005,
                                  format="%.3f", key="mrmc_effect", bind="query-params")
    power = plan[1].number_input("Target power", 0.5, 0.99, 0.8, 0.05, key="mrmc_power",
                                 bind="query-params")
    models = cached(mrmc.model_options, study, level=level)
    model = plan[2].selectbox("Model to compare", ["none", *models], key=f"mrmc_model_{study}",
                              bind="query-params", index=1 if models else 0)
    model = None if model == "none" else model
    model_modality = plan[3].selectbox("Against readers' modality", chosen or known,
                                       key=f"mrmc_model_modality_{study}", bind="query-params")
with input_errors():
    report = cached(mrmc.mrmc_report, study=study, modalities=tuple(chosen), level=level,
                    method=method, cov="jackknife" if method == "dbm" else cov,
                    analysis=analysis, subgroup=subgroup, model=model,
                    model_modality=model_modality, effect=effect, power=power)
data, res = report.data, report.result
# what every download of this view says about itself (file name and leading CSV columns)
context = dict(study=study, modalities=list(chosen), level=level, method=method,
               covariance="jackknife" if method == "dbm" else cov, analysis=analysis,
               cases=subgroup or "all")

with st.container(border=True):
    st.markdown(f"**{md_escape(report.sentence)}**")   # plain text naming modalities
metrics = st.columns(4)
metrics[0].metric("Readers", len(data.readers))
metrics[1].metric("Cases", f"{res.n_pos} + {res.n_neg}", help="cancers + healthy")
metrics[2].metric(f"{res.statistic_name} statistic", f"{res.statistic:.2f}",
                  help=f"df {res.df1:g}, {res.df2:.1f}")
metrics[3].metric("p-value", f"{res.p:.4f}")
for note in data.notes:
    st.caption(f":material/info: {md_escape(note)}")

left, right = st.columns([1, 1.2], gap="large")
with left:
    st.subheader("Reader AUCs")
    _table(report.reader_auc, "reader_auc",
           **{c: _NUMBERS for c in report.reader_auc.columns if c != "reader"})
with right:
    _chart(charts.slope_chart(report.reader_auc_long, modalities=data.modalities), "slopes",
           width="stretch")

st.subheader("Modality means and their differences")
_table(report.tables["modalities"], "modalities")
_table(report.tables["differences"], "differences")
st.subheader("Test and variance components", help="OR: AUC scale; DBM: pseudovalue scale")
_table(report.tables["test"], "test")
_table(report.tables["components"], "components", estimate=st.column_config.NumberColumn(
    format="%.3e"))

st.subheader("ROC curves per reader and modality")
chart_grid(charts.roc_panels(report.roc, readers=data.readers, modalities=data.modalities))
download_popover("reader_study_roc", "mrmc_roc_chart", frame=report.roc, context=context,
                 chart=charts.roc_chart(report.roc, readers=data.readers,
                                        modalities=data.modalities))

st.subheader("Sample size", help="Hillis-Obuchowski power from this study's variance "
             "components as a pilot, for a two-modality study with the same case mix")
st.caption(f"Fewest cases for {report.power:.0%} power to detect an AUC difference of "
           f"{report.effect:.3f}, by number of readers ({ANALYSES[analysis].lower()}); NA: "
           f"not reachable with that many readers.")
if report.sample_size.empty:
    st.info("A sample-size table needs a pilot with at least 2 readers.", icon=":material/info:")
else:
    _table(na_as_text(report.sample_size, ["n_cases"]), "sample_size",
           n_cases=st.column_config.TextColumn("cases", alignment="right"),
           power=st.column_config.NumberColumn(format="%.3f"))

st.subheader("The model against the readers")
if report.comparison is None:
    st.info("Pick a model to compare (in the settings above): a fixed reader of the study, or "
            "a store model scored on these cases.", icon=":material/info:")
else:
    comp = report.comparison
    st.markdown(md_escape(comp.summary()))
    _chart(charts.model_vs_readers_chart(comp.tables()["reader_auc"], model=comp.model,
                                         model_auc=comp.model_auc,
                                         readers_mean=comp.readers_mean),
           "model_vs_readers", width="stretch")
    _table(comp.tables()["test"], "model_vs_readers")
