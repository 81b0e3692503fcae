"""Radiologist complement: which cancers the radiologists missed would the model catch, and at
what cost in extra recalls? Same numbers as ``python -m core report complement``."""
import math

import streamlit as st

from core.reports import complement as cr
from core.reports import findings
from core.reports.caveats import few_positives, prevalence
from core.store import Store
from core.vocabulary import LEVELS
from ui import cached, download_popover, input_errors, require_test_set, show_caveats
from ui import complement as view
from ui.charts import complement as cc
from ui.exam_view import EXAM_PAGE, exam_url
from ui.links import headline_first
from ui.tables import rate_table
from ui.text import md_escape

st.title("Radiologist complement")
st.caption("Which cancers did the radiologists miss that the model would flag, and how many "
           "healthy women would it recall to find them?")
test_set = require_test_set()
top = st.columns([1.3, 1, 1, 1])
level = top[0].radio("Level", LEVELS, index=2, horizontal=True, key="complement_level",
                     bind="query-params", help="Reads are stored per level; at image level "
                     "each image may take its breast's read.")
models = headline_first(cached(Store.model_names))   # the Overview's headline model first
readers = cached(cr.reader_options, level=level, test_set=test_set)
if missing := view.missing_inputs(models, readers, level=level, test_set=test_set):
    st.info(missing, icon=":material/info:")
    st.stop()
model = top[1].selectbox("Model", models, key="complement_model", bind="query-params")
kinds = dict(zip(readers["reader"], readers["kind"]))
reader = top[2].selectbox("Reader", readers["reader"], key="complement_reader",
                          bind="query-params", format_func=lambda r: f"{r} (consensus)"
                          if kinds[r] == "consensus" != r else r)
reader_threshold = None
if not readers.set_index("reader").loc[reader, "has_recall"]:
    reader_threshold = top[3].number_input(
        "Reader threshold", value=50.0, key="complement_reader_threshold", bind="query-params",
        help="This reader has scores only: recall iff the reader's score >= this.")
state = st.session_state
mode = view.mode_from_url()
with input_errors():
    cases = cached(cr.load_cases, test_set=test_set, model=model, reader=reader, level=level)
    low, high, step = cr.threshold_bounds(cases)
    manual = min(max(state.complement_threshold, low), high) if mode == "manual" else None
    report = cr.build_report(cases, threshold=manual,
                             specificity=None if mode in ("match", "manual") else mode,
                             reader_threshold=reader_threshold)
res, unit = report.result, cr.UNITS[level]
# what every download of this view says about itself (file name and leading CSV columns)
context = dict(test_set=test_set, models=model, reader=reader, level=level,
               threshold=f"{res.threshold:.4g}", reader_threshold=reader_threshold)
state.complement_threshold = manual if mode == "manual" else min(res.threshold, high)
view.mode_to_url(mode, state.complement_threshold)

view.operating_point_controls(cases, mode, res, low=low, high=high, step=step,
                              reader_threshold=reader_threshold, level=level, test_set=test_set)
if not math.isfinite(res.threshold):
    st.warning("No model score reaches this specificity on these cases, so the model flags "
               "nothing. Try 98 % or 90 %, or move the slider.", icon=":material/warning:")
for note in cases.notes:
    st.caption(f":material/info: {md_escape(note)}")

with st.container(border=True):
    st.markdown("\n".join(f"- {md_escape(s)}" for s in report.sentences))   # plain, with names
    st.caption(f":material/info: {prevalence(res.cancers, res.n_cases, f'{level}s')}")
if res.reader_missed == 0:   # a degenerate view: offer the nearest one with missed cancers
    nearest = cached(findings.nearest_missed_view, test_set=test_set, model=model,
                     reader=reader, level=level)
    if nearest:
        st.info(f"{md_escape(reader)} missed no cancer here, so there is nothing for the model "
                f"to catch. [Open {md_escape(nearest['complement_reader'])} at "
                f"{nearest['complement_level']} "
                f"level]({findings.link(findings.Finding('', '', 'complement', nearest))}), "
                "the nearest view with missed cancers.", icon=":material/info:")
show_caveats([few_positives(res.cancers, f"{test_set} at {level} level"),
              few_positives(res.among_reader_negative.cancers, "cancers the radiologists missed")])
view.headline_metrics(res, unit)

left, right = st.columns(2)
with left:
    chart = cc.tradeoff_chart(report.tradeoff, report.reader_negatives, missed=res.reader_missed,
                              unit=unit)
    st.altair_chart(chart, width="stretch", height=460)
    download_popover("complement_tradeoff", "complement_tradeoff", chart=chart,
                     frame=report.tradeoff, context=context)
with right:
    chart = cc.score_groups_chart(report.groups, report.group_means, threshold=res.threshold)
    st.altair_chart(chart, width="stretch", height=460)
    download_popover("complement_scores", "complement_scores", chart=chart,
                     frame=report.groups, context=context)
    rate_table(report.group_means, ["group", "meaning", "cases", "mean_score", "flagged"],
               "complement_score_groups", context=context, flagged="flagged by the model")

st.subheader("Cancers: missed and caught")
st.caption("Every cancer with the reader's decision and the model's flag at this threshold, "
           "the radiologists' misses first. A case opens in the Exam view (all four views, "
           "every reader and model).")
cancers = cr.cancer_cases(report).assign(
    link=lambda f: [exam_url(c, test_set=test_set) for c in f["case_id"]])
st.dataframe(cancers, hide_index=True,
             column_order=["link", "histology", "reader", "score", "model", "outcome"],
             column_config={"link": st.column_config.LinkColumn("case", display_text=r"exam=([^&]*)"),
                            "score": st.column_config.NumberColumn("model score", format="%.4f")})
download_popover("complement_cancers", "complement_cancers", frame=cancers.drop(columns="link"),
                 context=context)
if len(cancers):
    with st.container(horizontal=True, vertical_alignment="bottom"):
        case = st.selectbox("Open a case", cancers["case_id"], key="complement_case",
                            bind="query-params")
        st.page_link(EXAM_PAGE, label="Open in the Exam view", icon=":material/grid_view:",
                     query_params={"exam": case})

st.subheader("Confusion matrices")
st.caption("Rows: the truth. Columns: the decision. The model's matrices within the "
           "radiologists' negatives and positives split the cases by the reader's decision.")
view.confusion_matrices(report.confusion)
download_popover("complement_confusion", "complement_confusion", frame=report.confusion,
                 context=context)

st.subheader("The model at fixed specificity")
rate_table(report.operating_points, [
    "operating_point", "threshold", "sensitivity", "sensitivity_ci_low", "sensitivity_ci_high",
    "specificity", "detected", "cancers", "combined_sensitivity", "combined_specificity"],
    "complement_operating_points", context=context, detected="cancers found", sensitivity_ci_low="CI low",
    sensitivity_ci_high="CI high", combined_sensitivity="reader or model: sens.",
    combined_specificity="reader or model: spec.")
st.subheader("The model among the radiologists' negatives")
rate_table(report.reader_negatives, [
    "operating_point", "threshold", "caught", "cancers", "sensitivity", "flagged", "healthy",
    "specificity", "extra_recalls_per_1000"], "complement_reader_negatives", context=context,
    caught="missed cancers caught", cancers="missed cancers", flagged="extra recalls",
    healthy=f"healthy {unit}", extra_recalls_per_1000="extra recalls per 1,000")

st.subheader("Screening workflows")
st.caption(f":material/info: {prevalence(res.cancers, res.n_cases, f'{level}s')}")
triage = st.number_input("Triage threshold: cases scoring below it are not read", step=step,
                         value=float(cases.frame["score"].quantile(0.25)), format="%.4f",
                         key="complement_triage", bind="query-params", width=360)
rate_table(cr.screening_workflows(cases, threshold=res.threshold, triage_threshold=triage,
                                  reader_threshold=reader_threshold), [
    "workflow", "description", "sensitivity", "specificity", "recalls_per_1000",
    "reads_per_case", "cancers_detected", "cancers_lost", "cancers_gained",
    "sensitivity_change", "specificity_change"], "complement_workflows", context=context,
    recalls_per_1000="recalls per 1,000", reads_per_case="reads per case",
    sensitivity_change="Δ sensitivity", specificity_change="Δ specificity")
