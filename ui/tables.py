"""Tables as the clinic pages show them: rates as percentages, counts plain, scores to four
decimals, a missing value as the word the caption uses ("NA"), and a CSV of the whole frame
beside each table (`ui.downloads.download_popover`)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import streamlit as st

from ui.downloads import download_popover

# a column's display by a part of its name: the first match wins
FORMATS = {"sensitivity": "percent", "specificity": "percent", "threshold": "%.4f",
           "per_1000": "%.0f", "reads_per_case": "%.2f", "mean_score": "%.4f"}


def column(name: str, label: str):
    """A column's display: rates as percentages, counts plain, scores to 4 decimals."""
    fmt = next((f for key, f in FORMATS.items() if key in name), None)
    if fmt is None:   # long descriptions stay one line wide; their full text shows on hover
        return st.column_config.Column(label, width="medium" if name == "description" else None)
    help_ = "Infinity: no score reaches it, so nothing is flagged" if name == "threshold" else None
    return st.column_config.NumberColumn(label, format=fmt, help=help_)


def rate_table(frame: pd.DataFrame, columns: Sequence[str], stem: str, *,
               context: Mapping | None = None, **labels: str) -> None:
    """Show ``columns`` of ``frame`` (rates as percentages) and offer all of it as CSV."""
    config = {c: column(c, labels.get(c, c.replace("_", " "))) for c in columns}
    st.dataframe(frame, hide_index=True, column_order=list(columns), column_config=config)
    download_popover(stem, stem, frame=frame, context=context)


def na_as_text(frame: pd.DataFrame, columns: Sequence[str], missing: str = "NA") -> pd.DataFrame:
    """``frame`` with the missing values of ``columns`` shown as ``missing`` (numbers as text).

    Why: Streamlit writes a missing integer as "None", where a caption promises "NA" (the
    sample-size table: no case count reaches the power with that many readers).
    """
    out = frame.copy()
    for c in columns:
        out[c] = out[c].astype(object).map(lambda v: missing if pd.isna(v) else f"{v}")
    return out
