"""ILCscope: router and picture frame. Builds the store on first run, draws the shared
sidebar (store, dataset, test set: kept in the URL), lists every page, runs the chosen one."""
from pathlib import Path

import streamlit as st

import ui
from ui.sidebar import refresh_sidebar

HERE = Path(__file__).parent
# a file, not a Material icon: the browser would fetch that favicon from a font server
st.set_page_config(page_title="ILCscope", page_icon=str(HERE / "assets" / "icon.png"),
                   layout="wide")
ui.narrow_screens()


def page(path: str, title: str, icon: str, **options) -> st.Page:
    """A page of the navigation; a placeholder (it calls `ui.planned`) is marked planned."""
    if ui.is_planned(HERE / path):
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
# the navigation first: while the first start builds the demo, the menu lists these pages
# rather than the pages/ folder's file names
navigation = st.navigation(pages)
ui.ensure_store()
shown = ui.sidebar()
navigation.run()
refresh_sidebar(shown)   # a page that imported a dataset or made a test set: list it now
