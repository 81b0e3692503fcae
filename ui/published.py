"""The published AUCs beside the measured ones (`core.reports.published`): the Benchmark table's
column settings, and the note on models that come only as imported predictions (Benchmark and
Import pages)."""
from __future__ import annotations

import streamlit as st

from core.reports.published import CONTAINER_ONLY, METAREPOSITORY_COMMAND, PUBLISHED

__all__ = ["PUBLISHED_HELP", "published_columns", "container_models_note"]

PUBLISHED_HELP = ("as published in the model's paper, on its own test data (thesis Table 6.1); "
                  "not measured here")


def published_columns() -> dict:
    """``st.dataframe`` column_config for `core.reports.published.with_published`'s columns."""
    return {"Published AUC": st.column_config.NumberColumn("Published AUC", format="%.2f",
                                                           help=PUBLISHED_HELP),
            "Published in": st.column_config.TextColumn(
                "Published in", help="The paper the published AUC comes from, its test data, "
                                     "and whether this model is the published one")}


def container_models_note() -> None:
    """A caption, and the metarepository command in an expander: end2end and Faster R-CNN run
    only in the metarepository's containers and come in as imported predictions."""
    names = " and ".join(PUBLISHED[f].title for f in CONTAINER_ONLY)
    st.caption(f":material/deployed_code: {names} run only in the screening-mammography "
               "metarepository's Docker containers (Keras; Caffe without a licence): ILCscope "
               "takes their predictions as an imported table, never their code.")
    with st.expander("Run them in the metarepository, then import"):
        st.code(METAREPOSITORY_COMMAND, language="bash")
