"""Download buttons for the pages: a chart as PNG/SVG (rendered only when clicked, by
vl-convert), a table as CSV, or both in one popover."""
from __future__ import annotations

import io

import altair as alt
import pandas as pd
import streamlit as st


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
    st.download_button("CSV", frame.to_csv(index=False), f"{stem}.csv", "text/csv",
                       key=f"{key}_csv", icon=":material/download:", on_click="ignore")


def download_popover(stem: str, key: str, *, chart: alt.Chart | None = None,
                     frame: pd.DataFrame | None = None) -> None:
    """One "Download" popover with PNG / SVG of ``chart`` and CSV of ``frame``."""
    with st.popover("Download", icon=":material/download:"):
        if chart is not None:
            chart_downloads(chart, stem, key=key)
        if frame is not None:
            table_download(frame, stem, key=key)
