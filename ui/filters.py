"""The Filters page's cached calls and method-parameter widgets.

Both calls are `st.cache_data`: each session gets its own copy of the stored results and of
one image's processed arrays (a `cache_resource` shared them between sessions, so one in-place
edit would have changed every user's picture, issue 29). Every widget is bound to the URL.
"""
from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from core.jobs.filters import PARAM_CHOICES, plan_filter_run
from core.reports import filters as fr
from ui.downloads import download_popover
from ui.session import store


@st.cache_data(show_spinner="Reading stored results…", max_entries=64)
def stored(db: str, token: tuple, scope: str):
    """(annotated images, how many lack results, stored per-image AUCs) for ``scope`` (JSON of
    `core.jobs.filters.run_filters`' keyword arguments)."""
    plan = plan_filter_run(store(), **json.loads(scope))
    return plan.images, plan.n_pending, fr.stored_results(store(), **json.loads(scope))


@st.cache_data(show_spinner="Filtering the image…", max_entries=4)
def detail(db: str, token: tuple, image_id: str, scope: str):
    """One image's `core.reports.filters.ImageDetail`, its region histograms and pixel ROC."""
    s = {k: v for k, v in json.loads(scope).items() if k != "malignant_only"}
    found = fr.image_detail(store(), image_id, **s)
    return found, fr.region_histograms(found), fr.region_roc(found)


def param_input(code: str, name: str, default):
    """One widget for a method parameter, chosen by its default's type (key filters_CODE_NAME,
    mirrored in the URL)."""
    key, choices = f"filters_{code}_{name}", PARAM_CHOICES.get(code, {}).get(name)
    bound = dict(key=key, bind="query-params")
    if choices:
        return st.selectbox(name, choices, index=choices.index(default), **bound)
    if isinstance(default, tuple):
        return st.multiselect(name, range(1, 7), default=list(default), **bound)
    if isinstance(default, int):
        return st.number_input(name, value=default, step=2 if name == "block_size" else 1,
                               **bound)
    if isinstance(default, float):
        return st.number_input(name, value=default, step=max(abs(default) / 10, 0.001),
                               format="%g", **bound)
    return st.number_input(name, value=None, min_value=0.0, max_value=1.0, **bound,
                           help="M3's manual threshold, a fraction of the grey range")


def grid(panels, n: int = 4) -> None:
    """Pictures with captions, ``n`` per row."""
    for row in range(0, len(panels), n):
        for col, (picture, caption) in zip(st.columns(n), panels[row:row + n]):
            col.image(picture, caption=caption, width="stretch")


def summary_tables(summary: pd.DataFrame, shown: pd.DataFrame, *, benign: bool,
                   context: dict) -> None:
    """Mean and median AUC per method and histology, the healthy regions used, and every
    image's AUCs in an expander (with its CSV)."""
    number = st.column_config.NumberColumn(format="%.3f")
    st.dataframe(summary, hide_index=True, key="filters_summary",
                 column_order=["histology", "label", "n_images", "mean_auc", "median_auc"],
                 column_config={"label": st.column_config.Column("method",
                                                                 help="Full names in the CSV"),
                                "mean_auc": number, "median_auc": number})
    kinds = shown.drop_duplicates("image_id")["healthy_region"].value_counts()
    st.caption(f"Healthy region: {kinds.get('mirrored', 0)} images mirrored from the "
               f"contralateral image, {kinds.get('ring', 0)} ring. "
               + ("Benign findings included." if benign else "Cancer images only."))
    with st.expander("Per-image AUCs"):
        st.dataframe(shown, hide_index=True, key="filters_per_image")
        download_popover("filter_auc_per_image", "filters_images", frame=shown,
                         context=context)
