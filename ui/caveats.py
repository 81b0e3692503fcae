"""Caveats beside a headline number, shown the same way on every page (the rules themselves
live in `core.reports.caveats`)."""
from __future__ import annotations

from collections.abc import Iterable

import streamlit as st

from ui.text import md_escape


def show_caveats(notes: Iterable[str | None]) -> None:
    """One warning box listing ``notes`` (None entries skipped); nothing when there are none."""
    notes = [n for n in notes if n]
    if notes:
        st.warning("\n".join(f"- {md_escape(n)}" for n in notes), icon=":material/warning:")
