"""Download buttons for the pages: a chart as PNG/SVG (rendered only when clicked, by
vl-convert), a table as CSV, both in one "Download" popover (the one style every page uses).

A download carries its context: `download_popover`'s ``context`` (test set, models, reader,
level, aggregation, CI method ...) goes into the file name and, as leading columns, into the
CSV, so two downloads of different views never overwrite each other and a CSV says what it is.

Every CSV goes through `csv_text`, which defuses cells a spreadsheet would run as a formula:
model, reader and dataset names come from users' files, and ``=cmd|' /C calc'!A0`` is a name.
"""
from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Mapping

import altair as alt
import pandas as pd
import streamlit as st

from ui.text import md_code

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


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
MAX_STEM = 120


def _text(value) -> str:
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value))
    return str(value)


def context_stem(stem: str, context: Mapping | None = None) -> str:
    """A file name stem: ``stem`` then each context value (None skipped), safe for every file
    system; a long one is cut and ends with a hash of the whole, so it stays distinct."""
    parts = [stem, *(_text(v) for v in (context or {}).values() if v not in (None, "", ()))]
    name = "_".join(_UNSAFE.sub("-", p).strip("-") for p in parts)
    if len(name) > MAX_STEM:
        name = name[:MAX_STEM - 9] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return name


def with_context(frame: pd.DataFrame, context: Mapping | None = None) -> pd.DataFrame:
    """``frame`` with each context entry as a leading column (unless it has that column)."""
    extra = {k: _text(v) for k, v in (context or {}).items()
             if v not in (None, "", ()) and k not in frame.columns}
    if not extra:
        return frame
    return pd.concat([pd.DataFrame(extra, index=frame.index), frame], axis=1)


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
                     frame: pd.DataFrame | None = None, picture: bytes | None = None,
                     context: Mapping | None = None, label: str = "Download") -> None:
    """One "Download" popover with PNG / SVG of ``chart``, CSV of ``frame`` and a ``picture``
    (PNG bytes), named and labelled with ``context`` (see the module docstring)."""
    stem = context_stem(stem, context)
    with st.popover(label, icon=":material/download:"):
        st.caption(md_code(stem))
        if picture is not None:
            st.download_button("PNG", picture, f"{stem}.png", "image/png", key=f"{key}_picture",
                               icon=":material/image:", on_click="ignore")
        if chart is not None:
            chart_downloads(chart, stem, key=key)
        if frame is not None:
            table_download(with_context(frame, context), stem, key=key)
