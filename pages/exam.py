"""Exam: one exam in the radiologists' hanging protocol with its labels, reads and scores.

``?exam=<id>`` opens any exam, or the exam of any image or breast id, so every table that
shows a case can link here (`ui.exam_view.exam_url`)."""
import pandas as pd
import streamlit as st

from core.store import Store
from ui import cached, test_set
from ui.exam_view import exam_view


def _pick() -> None:
    st.session_state.exam = st.session_state.exam_pick


st.title("Exam")
st.caption("R-CC beside L-CC, R-MLO beside L-MLO, chest walls facing, as radiologists hang "
           "them; each view with its breast's truth, the readers' decisions and every model's "
           "score.")
exams = cached(Store.cases, test_set=test_set(), level="exam").sort_values(
    "label", ascending=False, kind="stable")   # cancers first
truth = {e: "no label" if pd.isna(label) else f"{histology} cancer" if label else "healthy"
         for e, label, histology in zip(exams["case_id"], exams["label"], exams["histology"])}
top = st.columns([1.2, 1.2, 1])
exam = top[0].text_input("Exam, image or breast id", key="exam", bind="query-params",
                         help="Any case id from the store's tables; its exam opens.")
picked = top[1].selectbox("Or pick an exam of the test set", exams["case_id"], index=None,
                          key="exam_pick", bind="query-params", on_change=_pick,
                          placeholder="cancers first", format_func=lambda e: f"{e} · {truth[e]}")
names = cached(Store.model_names)
models = top[2].multiselect("Models", names, key="exam_models", bind="query-params",
                            placeholder="every model that scored it" if names else "no models")
exam = exam or picked
if not exam:
    if exams.empty:
        st.info("No exams yet: import data on the Import page or build the demo with "
                "`python -m core demo`.")
        st.stop()
    exam = exams["case_id"].iat[0]
show = st.toggle("Show one view as the model received it (crop, flip, resize)",
                 key="exam_model_input", bind="query-params")
exam_view(exam, models=models or None, show_model_input=show)
