"""Download buttons for the pages: a chart as PNG/SVG (rendered only when clicked, by
vl-convert), a table as CSV, or both in one popover.

Every CSV goes through `csv_text`, which defuses cells a spreadsheet would run as a formula:
model, reader and dataset names come from users' files, and ``=cmd|' /C calc'!A0`` is a name.
"""
from __future__ import annotations

import io
import re

import altair as alt
import pandas as pd
import streamlit as st

# what makes Excel, LibreOffice and Google Sheets read a cell as a formula (OWASP, "CSV
# Injection"): = + - @ first, or a tab / carriage return before them
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _defuse(value):
    """``value`` with a leading single quote when a spreadsheet would run it; numbers as is."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and \
            not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def csv_text(frame: pd.DataFrame) -> str:
    """``frame`` as CSV text (no index) with formula-like text cells and headers defused.

    Numeric columns are written untouched, so -0.5 stays a number; text that is a plain
    number ("-0.5") is left too, as a spreadsheet reads it as one.
    """
    frame = frame.copy()
    if isinstance(frame.columns, pd.MultiIndex):
        frame.columns = pd.MultiIndex.from_tuples([tuple(map(_defuse, c)) for c in frame.columns],
                                                  names=frame.columns.names)
    else:
        frame.columns = [_defuse(c) for c in frame.columns]
    for i in range(frame.shape[1]):
        column = frame.iloc[:, i]
        if not (pd.api.types.is_numeric_dtype(column) or
                pd.api.types.is_datetime64_any_dtype(column)):
            frame.isetitem(i, column.astype(object).map(_defuse))
    # CRLF rows (RFC 4180): the csv writer then quotes a cell holding a bare \r, which with
    # \n rows would split the cell and start a new, unescaped one
    return frame.to_csv(index=False, lineterminator="\r\n")


def _render(chart: alt.Chart, fmt: str) -> bytes:
    buffer = io.BytesIO() if fmt == "png" else io.StringIO()
    chart.save(buffer, format=fmt, **({"scale_factor": 2} if fmt == "png" else {}))
    value = buffer.getvalue()
    return value if isinstance(value, bytes) else value.encode()


def chart_downloads(chart: alt.Chart, stem: str, *, key: str) -> None:
    """PNG and SVG download buttons for a chart."""
    left, right = st.columns(2)
    left.download_button("PNG", lambda: _render(chart, "png"), f"{stem}.png", "image/png",
                         key=f"{key}_png", icon=":material/image:", on_click="ignore")
    right.download_button("SVG", lambda: _render(chart, "svg"), f"{stem}.svg", "image/svg+xml",
                          key=f"{key}_svg", icon=":material/draw:", on_click="ignore")


def table_download(frame: pd.DataFrame, stem: str, *, key: str) -> None:
    """A CSV download button for a table."""
    st.download_button("CSV", csv_text(frame), f"{stem}.csv", "text/csv",
                       key=f"{key}_csv", icon=":material/download:", on_click="ignore")


def download_popover(stem: str, key: str, *, chart: alt.Chart | None = None,
                     frame: pd.DataFrame | None = None) -> None:
    """One "Download" popover with PNG / SVG of ``chart`` and CSV of ``frame``."""
    with st.popover("Download", icon=":material/download:"):
        if chart is not None:
            chart_downloads(chart, stem, key=key)
        if frame is not None:
            table_download(frame, stem, key=key)
