"""The Radiologist complement page's operating point and headline numbers.

The operating point is a mode ("match" the reader's specificity, a preset specificity, or a
"manual" threshold from the slider) kept in ``?complement_at=match|0.89|t0.4321``, so a link
opens the page where it was made (the slider's own value is not the point: a preset's exact
threshold lies between slider steps).
"""
from __future__ import annotations

import math

import streamlit as st

from core.reports import complement as cr
from ui.text import md_code, md_escape

PRESETS = {"match": "Match reader specificity", **{p: f"{p:.0%} specificity"
                                                   for p in cr.PRESET_SPECIFICITIES}}
# what each preset is, where it is offered (a button's help and the caption under the buttons)
PRESET_HELP = {
    "match": "The model's threshold that gives it the reader's own specificity on these cases.",
    0.98: "The study's first operating point: the radiologists' specificity on its CSAW "
          "test sets (98 %; tables 6.6-6.10).",
    0.90: "The study's lower operating point, allowing more recalls (Table 6.10); Table 6.11 "
          "used its threshold among the radiologists' negatives.",
    0.89: "The study's Table 6.11: at its 90 %-specificity threshold the original GMIC model "
          "kept 89 % specificity among the images the radiologists called healthy and caught "
          "23 % of the cancers they missed. Here 89 % is the model's specificity on all cases.",
}


def choose(mode, cases, reader_threshold, high) -> None:
    """A preset button: remember the mode and move the slider to its threshold."""
    st.session_state.complement_mode = mode
    t = cr.threshold_for(cases, specificity=None if mode == "match" else mode,
                         reader_threshold=reader_threshold)
    st.session_state.complement_threshold = min(t, high)


def manual() -> None:
    """The slider moved: the threshold is the user's own."""
    st.session_state.complement_mode = "manual"


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def mode_from_url() -> str | float:
    """The operating point: the session's, else the link's (``?complement_at=``), else match."""
    state = st.session_state
    if "complement_mode" not in state:
        at = st.query_params.get("complement_at", "")
        if at == "match":
            state.complement_mode = "match"
        elif at.startswith("t") and _is_number(at[1:]):
            state.complement_mode, state.complement_threshold = "manual", float(at[1:])
        elif _is_number(at) and float(at) in cr.PRESET_SPECIFICITIES:
            state.complement_mode = float(at)
    if state.get("complement_mode") == "manual" and state.get("complement_threshold") is None:
        state.complement_mode = "match"        # the slider was not drawn last run (page switch)
    return state.setdefault("complement_mode", "match")


def mode_to_url(mode, threshold: float) -> None:
    st.query_params["complement_at"] = ("match" if mode == "match" else
                                        f"t{threshold:.6g}" if mode == "manual" else f"{mode:g}")


def operating_point_controls(cases, mode, res, *, low, high, step, reader_threshold,
                             level: str, test_set: str) -> None:
    """The threshold slider, the preset buttons and what the current point is."""
    st.slider("Model threshold: a case is flagged iff its score ≥ threshold", low, high,
              step=step, format="%.4f", key="complement_threshold", on_change=manual,
              help=f"Arrow keys move {step:g}; the presets set exact thresholds.")
    with st.container(horizontal=True, vertical_alignment="center"):
        for key, label in PRESETS.items():
            st.button(label, key=f"complement_preset_{key}", on_click=choose,
                      args=(key, cases, reader_threshold, high), help=PRESET_HELP[key],
                      type="primary" if mode == key else "secondary")
        shown = f"{res.threshold:.4f}" if math.isfinite(res.threshold) else "above every score"
        st.caption(f"Threshold **{shown}** ({md_escape(res.rule)}) on {res.n_cases} {level}s of "
                   f"{md_code(test_set)}: {res.cancers} cancers, {res.healthy} healthy.")
    st.caption(f":material/info: **89 % specificity**: {PRESET_HELP[0.89]}")


def _fmt(x: float, spec: str = ".1%") -> str:
    return "n/a" if math.isnan(x) else format(x, spec)


def headline_metrics(res, unit: str) -> None:
    """Two rows of four metrics: what the model adds to the reader, then each alone."""
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


def confusion_matrices(confusion) -> None:
    """The five 2x2 (+ totals) matrices, three then two per row."""
    for col, name in zip([*st.columns(3), *st.columns(3)[:2]], confusion["matrix"].unique()):
        col.markdown(f"**{md_escape(name.capitalize())}**")
        col.dataframe(confusion[confusion["matrix"] == name], hide_index=True,
                      column_order=["truth", "recall", "no_recall", "total"],
                      column_config={"no_recall": "no recall"}, key=f"complement_matrix_{name}")


def missing_inputs(models, readers, *, level: str, test_set: str) -> str | None:
    """Why the page cannot compare anything here, in one sentence (None when it can)."""
    if not models:
        return (f"No model has scores in this store: run one on {md_code(test_set)} (Benchmark "
                "page) or import predictions (`python -m core import predictions FILE`).")
    if readers.empty:
        return (f"No radiologist read {md_code(test_set)} at {level} level, so there is "
                "nothing to complement: import reads (`python -m core import readers FILE`) or "
                "pick a test set with readers (the demo's `test-all`).")
    return None
