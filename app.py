"""ILCscope: router and picture frame. Builds the store on first run, draws the shared
sidebar (store, dataset, test set: kept in the URL), lists every page, runs the chosen one."""
from pathlib import Path

import streamlit as st

import ui

st.set_page_config(page_title="ILCscope", page_icon=":material/biotech:", layout="wide")
ui.narrow_screens()

ui.ensure_store()
ui.sidebar()


def page(path: str, title: str, icon: str, **options) -> st.Page:
    """A page of the navigation; a placeholder (it calls `ui.planned`) is marked planned."""
    if ui.is_planned(Path(__file__).parent / path):
        title, icon = f"{title} (planned)", ":material/construction:"
    return st.Page(path, title=title, icon=icon, **options)


pages = {
    "Overview": [page("pages/overview.py", title="Overview", icon=":material/dashboard:",
                      default=True)],
    "Explore": [
        page("pages/filters.py", title="Filters", icon=":material/tune:"),
        page("pages/density.py", title="Density", icon=":material/grain:"),
        page("pages/exam.py", title="Exam", icon=":material/grid_view:"),
    ],
    "Models": [
        page("pages/benchmark.py", title="Benchmark", icon=":material/leaderboard:"),
        page("pages/finetune.py", title="Fine-tuning", icon=":material/model_training:"),
        page("pages/saliency.py", title="Saliency", icon=":material/visibility:"),
    ],
    "Clinic": [
        page("pages/complement.py", title="Radiologist complement",
                icon=":material/medical_services:"),
        page("pages/reader_study.py", title="Reader study", icon=":material/groups:"),
    ],
    "Data": [
        page("pages/import_data.py", title="Import", icon=":material/upload_file:"),
        page("pages/annotate.py", title="Annotate", icon=":material/draw:"),
    ],
}
st.navigation(pages).run()
