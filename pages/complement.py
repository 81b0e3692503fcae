"""Radiologist complement: which cancers the radiologists missed would the model catch, and at
what cost in extra recalls? Same numbers as ``python -m core report complement``."""
import math

import pandas as pd
import streamlit as st

from core.reports import complement as cr
from core.reports import findings
from core.reports.caveats import few_positives, prevalence
from core.errors import InputError
from core.vocabulary import LEVELS
from core.store import Store
from ui import cached, download_popover, require_test_set, show_caveats, show_input_error
from ui.charts import complement as cc
from ui.exam_view import EXAM_PAGE, exam_url

PRESETS = {"match": "Match reader specificity", **{p: f"{p:.0%} specificity"
                                                   for p in cr.PRESET_SPECIFICITIES}}
_FORMATS = {"sensitivity": "percent", "specificity": "percent", "threshold": "%.4f",
            "per_1000": "%.0f", "reads_per_case": "%.2f", "mean_score": "%.4f"}


def _column(name: str, label: str):
    """A column's display: rates as percentages, counts plain, scores to 4 decimals."""
    fmt = next((f for key, f in _FORMATS.items() if key in name), None)
    if fmt is None:   # long descriptions stay one line wide; their full text shows on hover
        return st.column_config.Column(label, width="medium" if name == "description" else None)
    help_ = "Infinity: no score reaches it, so nothing is flagged" if name == "threshold" else None
    return st.column_config.NumberColumn(label, format=fmt, help=help_)


def rate_table(frame: pd.DataFrame, columns: list[str], stem: str, **labels: str) -> None:
    """Show ``columns`` of ``frame`` (rates as percentages) and offer all of it as CSV."""
    config = {c: _column(c, labels.get(c, c.replace("_", " "))) for c in columns}
    st.dataframe(frame, hide_index=True, column_order=columns, column_config=config)
    download_popover(stem, stem, frame=frame, context=context)


def _choose(mode, cases, reader_threshold, high) -> None:
    """Preset buttons: remember the mode and move the slider to its threshold."""
    st.session_state.complement_mode = mode
    t = cr.threshold_for(cases, specificity=None if mode == "match" else mode,
                         reader_threshold=reader_threshold)
    st.session_state.complement_threshold = min(t, high)


def _manual() -> None:
    st.session_state.complement_mode = "manual"


def _mode_from_url(state) -> None:
    """``?complement_at=match|0.89|t0.4321``: the operating point a shared link was made at."""
    at = st.query_params.get("complement_at", "")
    if at == "match":
        state.complement_mode = "match"
    elif at.startswith("t") and _is_number(at[1:]):
        state.complement_mode, state.complement_threshold = "manual", float(at[1:])
    elif _is_number(at) and float(at) in cr.PRESET_SPECIFICITIES:
        state.complement_mode = float(at)


def _mode_to_url(mode, threshold: float) -> None:
    st.query_params["complement_at"] = ("match" if mode == "match" else
                                        f"t{threshold:.6g}" if mode == "manual" else f"{mode:g}")


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _fmt(x: float, spec: str = ".1%") -> str:
    return "n/a" if math.isnan(x) else format(x, spec)


st.title("Radiologist complement")
st.caption("Which cancers did the radiologists miss that the model would flag, and how many "
           "healthy women would it recall to find them?")
test_set = require_test_set()
top = st.columns([1.3, 1, 1, 1])
level = top[0].radio("Level", LEVELS, index=2, horizontal=True, key="complement_level", bind="query-params",
                     help="Reads are stored per level; at image level each image may take "
                          "its breast's read.")
models = cached(Store.model_names)
best = cached(findings.best_model, test_set=test_set, level=level)  # the best model first
models = sorted(models, key=lambda m: m != best)
model = top[1].selectbox("Model", models, key="complement_model", bind="query-params")
readers = cached(cr.reader_options, level=level, test_set=test_set)
if model is None or readers.empty:
    st.info(f"This test set needs a model's scores and a reader's reads at {level} level.")
    st.stop()
kinds = dict(zip(readers["reader"], readers["kind"]))
reader = top[2].selectbox("Reader", readers["reader"], key="complement_reader", bind="query-params", format_func=lambda
                          r: f"{r} (consensus)" if kinds[r] == "consensus" != r else r)
reader_threshold = None
if not readers.set_index("reader").loc[reader, "has_recall"]:
    reader_threshold = top[3].number_input(
        "Reader threshold", value=50.0, key="complement_reader_threshold", bind="query-params",
        help="This reader has scores only: recall iff the reader's score >= this.")
state = st.session_state
if "complement_mode" not in state:
    _mode_from_url(state)
if state.get("complement_mode") == "manual" and state.get("complement_threshold") is None:
    state.complement_mode = "match"        # the slider was not drawn last run (page switch)
mode = state.setdefault("complement_mode", "match")
try:
    cases = cached(cr.load_cases, test_set=test_set, model=model, reader=reader, level=level)
    low, high, step = cr.threshold_bounds(cases)
    manual = min(max(state.complement_threshold, low), high) if mode == "manual" else None
    state.setdefault("complement_triage", float(cases.frame["score"].quantile(0.25)))
    report = cr.build_report(cases, threshold=manual,
                             specificity=None if mode in ("match", "manual") else mode,
                             reader_threshold=reader_threshold,
                             triage_threshold=state.complement_triage)
except InputError as exc:
    show_input_error(exc)
    st.stop()
res, unit = report.result, cr.UNITS[level]
# what every download of this view says about itself (file name and leading CSV columns)
context = dict(test_set=test_set, models=model, reader=reader, level=level,
               threshold=f"{res.threshold:.4g}", reader_threshold=reader_threshold)
state.complement_threshold = manual if mode == "manual" else min(res.threshold, high)
_mode_to_url(mode, state.complement_threshold)

st.slider("Model threshold: a case is flagged iff its score ≥ threshold", low, high, step=step,
          format="%.4f", key="complement_threshold", on_change=_manual)
with st.container(horizontal=True, vertical_alignment="center"):
    for key, label in PRESETS.items():
        st.button(label, key=f"complement_preset_{key}", on_click=_choose,
                  args=(key, cases, reader_threshold, high),
                  type="primary" if mode == key else "secondary")
    shown = f"{res.threshold:.4f}" if math.isfinite(res.threshold) else "above every score"
    st.caption(f"Threshold **{shown}** ({res.rule}) on {res.n_cases} {level}s of "
               f"`{test_set}`: {res.cancers} cancers, {res.healthy} healthy.")
if not math.isfinite(res.threshold):
    st.warning("No model score reaches this specificity on these cases, so the model flags "
               "nothing. Try 98 % or 90 %, or move the slider.", icon=":material/warning:")
for note in cases.notes:
    st.caption(f":material/info: {note}")

with st.container(border=True):
    st.markdown("\n".join(f"- {s}" for s in report.sentences))
    st.caption(f":material/info: {prevalence(res.cancers, res.n_cases, f'{level}s')}")
if res.reader_missed == 0:   # a degenerate view: offer the nearest one with missed cancers
    nearest = cached(findings.nearest_missed_view, test_set=test_set, model=model,
                     reader=reader, level=level)
    if nearest:
        st.info(f"{reader} missed no cancer here, so there is nothing for the model to catch. "
                f"[Open {nearest['complement_reader']} at {nearest['complement_level']} "
                f"level]({findings.link(findings.Finding('', '', 'complement', nearest))}), "
                "the nearest view with missed cancers.", icon=":material/info:")
show_caveats([few_positives(res.cancers, f"{test_set} at {level} level"),
              few_positives(res.among_reader_negative.cancers, "cancers the radiologists missed")])

neg, cb, rd, md = res.among_reader_negative, res.combined, res.reader, res.model
row = st.columns(4)
row[0].metric("Missed cancers caught", f"{neg.caught} of {neg.cancers}",
              help="Cancers the radiologists did not recall that the model flags")
row[1].metric("Extra recalls per 1,000", _fmt(neg.flagged_per_1000_healthy, ",.0f"),
              help=f"Healthy {unit} the model flags among those the radiologists did not "
                   f"recall ({neg.flagged_healthy} of {neg.healthy})")
row[2].metric("Sensitivity, reader or model", _fmt(cb.sensitivity),
              f"{100 * (cb.sensitivity - rd.sensitivity):+.1f} points vs reader")
row[3].metric("Specificity, reader or model", _fmt(cb.specificity),
              f"{100 * (cb.specificity - rd.specificity):+.1f} points vs reader")
row = st.columns(4)
row[0].metric("Model sensitivity", _fmt(md.sensitivity))
row[1].metric("Model specificity", _fmt(md.specificity))
row[2].metric("Reader sensitivity", _fmt(rd.sensitivity))
row[3].metric("Reader specificity", _fmt(rd.specificity))

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
               "complement_score_groups", flagged="flagged by the model")

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
        case = st.selectbox("Open a case", cancers["case_id"], key="complement_case")
        st.page_link(EXAM_PAGE, label="Open in the Exam view", icon=":material/grid_view:",
                     query_params={"exam": case})

st.subheader("Confusion matrices")
st.caption("Rows: the truth. Columns: the decision. The model's matrices within the "
           "radiologists' negatives and positives split the cases by the reader's decision.")
for col, name in zip([*st.columns(3), *st.columns(3)[:2]], report.confusion["matrix"].unique()):
    col.markdown(f"**{name.capitalize()}**")
    col.dataframe(report.confusion[report.confusion["matrix"] == name], hide_index=True,
                  column_order=["truth", "recall", "no_recall", "total"],
                  column_config={"no_recall": "no recall"}, key=f"complement_matrix_{name}")
download_popover("complement_confusion", "complement_confusion", frame=report.confusion,
                 context=context)

st.subheader("The model at fixed specificity")
rate_table(report.operating_points, [
    "operating_point", "threshold", "sensitivity", "sensitivity_ci_low", "sensitivity_ci_high",
    "specificity", "detected", "cancers", "combined_sensitivity", "combined_specificity"],
    "complement_operating_points", detected="cancers found", sensitivity_ci_low="CI low",
    sensitivity_ci_high="CI high", combined_sensitivity="reader or model: sens.",
    combined_specificity="reader or model: spec.")
st.subheader("The model among the radiologists' negatives")
rate_table(report.reader_negatives, [
    "operating_point", "threshold", "caught", "cancers", "sensitivity", "flagged", "healthy",
    "specificity", "extra_recalls_per_1000"], "complement_reader_negatives",
    caught="missed cancers caught", cancers="missed cancers", flagged="extra recalls",
    healthy=f"healthy {unit}", extra_recalls_per_1000="extra recalls per 1,000")

st.subheader("Screening workflows")
st.caption(f":material/info: {prevalence(res.cancers, res.n_cases, f'{level}s')}")
st.number_input("Triage threshold: cases scoring below it are not read", step=step,
                format="%.4f", key="complement_triage", width=360)
rate_table(report.workflows, [
    "workflow", "description", "sensitivity", "specificity", "recalls_per_1000",
    "reads_per_case", "cancers_detected", "cancers_lost", "cancers_gained",
    "sensitivity_change", "specificity_change"], "complement_workflows",
    recalls_per_1000="recalls per 1,000", reads_per_case="reads per case",
    sensitivity_change="Δ sensitivity", specificity_change="Δ specificity")
