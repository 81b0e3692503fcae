"""ILCscope: router and picture frame. Builds the store on first run, draws the shared
sidebar (store, dataset, test set: kept in the URL), lists every page, runs the chosen one."""
import streamlit as st

import ui

st.set_page_config(page_title="ILCscope", page_icon=":material/biotech:", layout="wide")
ui.narrow_screens()

ui.ensure_store()
ui.sidebar()

pages = {
    "Overview": [st.Page("pages/overview.py", title="Overview", icon=":material/dashboard:",
                         default=True)],
    "Explore": [
        st.Page("pages/filters.py", title="Filters", icon=":material/tune:"),
        st.Page("pages/density.py", title="Density", icon=":material/grain:"),
        st.Page("pages/exam.py", title="Exam", icon=":material/grid_view:"),
    ],
    "Models": [
        st.Page("pages/benchmark.py", title="Benchmark", icon=":material/leaderboard:"),
        st.Page("pages/finetune.py", title="Fine-tuning", icon=":material/model_training:"),
        st.Page("pages/saliency.py", title="Saliency", icon=":material/visibility:"),
    ],
    "Clinic": [
        st.Page("pages/complement.py", title="Radiologist complement",
                icon=":material/medical_services:"),
        st.Page("pages/reader_study.py", title="Reader study", icon=":material/groups:"),
    ],
    "Data": [
        st.Page("pages/import_data.py", title="Import", icon=":material/upload_file:"),
        st.Page("pages/annotate.py", title="Annotate", icon=":material/draw:"),
    ],
}
st.navigation(pages).run()
