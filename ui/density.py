"""The Density page's parts that are more than a widget: the classical estimate panel and the
headline (AUC non-dense vs dense for one model), which says why a number is missing."""
from __future__ import annotations

import math
import shlex

import pandas as pd
import streamlit as st

from ui.charts.density import SHORT_NAMES
from ui import jobs
from ui.session import read_only_notice
from ui.text import md_code, md_escape

ESTIMATED = ("classical", "nyu-histogram")


def estimate_panel(test_set: str, sources: list[str]) -> None:
    """Estimate percent dense area and categories for ``test_set`` (classical), calibrated on a
    labelled source; open when the store has no density yet."""
    with st.expander("Estimate density (classical)", expanded=not sources,
                     icon=":material/calculate:"):
        labelled = [s for s in sources if s not in ESTIMATED]
        cal = st.selectbox(
            "Calibrate threshold and cut points on", ["nothing", *labelled],
            key="density_calibrate", bind="query-params",
            index=1 + labelled.index("label") if "label" in labelled else 0,
            format_func=lambda s: f"source '{s}'" if s != "nothing" else
            "nothing: mini-MIAS defaults",
            help="Fits threshold and cut points to this source's exam categories on the test "
                 "set's datasets (maximum weighted kappa). The mini-MIAS defaults put ~every "
                 "exam of the synthetic demo in category 0.")
        cal = None if cal == "nothing" else cal
        locked = read_only_notice("Estimating density")
        if st.button("Estimate now", key="density_estimate", disabled=locked,
                     icon=":material/play_arrow:",
                     help=f"Percent dense area per image and exam of {md_escape(test_set)}, in a "
                          "background process; replaces earlier rows."):
            jobs.start("density", {"source": "classical", "test_set": test_set, "method": "classical",
                                   "calibrate_on": cal})
        jobs.job_panel("density", key="density_job", what="Density estimate", source="classical",
                       test_set=test_set)
        flag = f" --calibrate-on {shlex.quote(cal)}" if cal else ""
        command = (f"python -m core density estimate --test-set {shlex.quote(test_set)} "
                   f"--method classical{flag} --json")
        st.caption(f"Shell: {md_code(command)}, or `--method nyu-histogram --weights model.p`")


def _fmt(x, spec: str = ".3f") -> str:
    return "n/a" if x is None or pd.isna(x) or math.isnan(x) else format(x, spec)


def headline(head: pd.Series, *, level: str) -> None:
    """Three metrics for one (model, test set): AUC non-dense, dense (delta), p; with the
    reason in words beneath when one is n/a (the table's note: no scores, no categories ...)."""
    st.markdown(f"**{md_escape(head['model'])}** on {md_code(head['test_set'])}, {level} level: "
                "AUC")
    m = st.columns(3)
    m[0].metric("Non-dense (0-1)", _fmt(head["auc_nondense"]),
                help=f"AUC of {md_escape(head['model'])} on {md_escape(head['test_set'])}")
    diff = _fmt(head["diff"], "+.3f")
    m[1].metric("Dense (2-3)", _fmt(head["auc_dense"]), delta=None if diff == "n/a" else diff,
                help="Delta: dense minus non-dense")
    m[2].metric("p, dense vs non-dense", _fmt(head["p"]),
                help=md_escape(head["note"]) or "unpaired DeLong z test")
    if isinstance(head["note"], str) and head["note"].startswith("n/a"):
        st.caption(f":material/info: Why n/a: {md_escape(head['note'].removeprefix('n/a: '))}")


def auc_numbers(table, tests) -> None:
    """The stratified AUCs and the dense vs non-dense tests, to three decimals, in an expander."""
    with st.expander("AUC numbers and tests", icon=":material/table:"):
        num = st.column_config.NumberColumn(format="%.3f")
        st.dataframe(table, hide_index=True, key="density_auc_table",
                     column_config={c: num for c in ("auc", "ci_low", "ci_high")})
        st.dataframe(tests, hide_index=True, key="density_tests",
                     column_config={c: num for c in ("auc_dense", "auc_nondense", "diff", "se",
                                                     "z", "p")})


def reader_numbers(shown) -> None:
    """The readers-by-density rows behind the chart, to three decimals, in an expander."""
    with st.expander("Numbers", icon=":material/table:"):
        st.dataframe(shown.assign(density=shown["density"].map(SHORT_NAMES)), hide_index=True,
                     key="density_reader_table",
                     column_config={c: st.column_config.NumberColumn(format="%.3f")
                                    for c in shown.columns if "ity" in c or c == "threshold"})
