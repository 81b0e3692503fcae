"""One progress bar for every page: ``st.progress`` driving a core ``ProgressFn``."""
from __future__ import annotations

import streamlit as st

from ui.text import md_escape


class ProgressBar:
    """An ``st.progress`` bar that core jobs drive: pass it as ``progress=``.

    Its text is the job's message, else "done of total"; with ``unit`` it counts, as in
    "3 / 10 images · message", for jobs whose messages name only the item.
    """

    def __init__(self, text: str, *, unit: str | None = None):
        self._bar = st.progress(0.0, text=md_escape(text))   # job messages name files
        self._unit = unit

    def __call__(self, done: int, total: int, message: str = "") -> None:
        if self._unit:
            text = f"{done} / {total} {self._unit} · {message}"
        else:
            text = message or f"{done} of {total}"
        self._bar.progress(min(done / max(total, 1), 1.0), text=md_escape(text))

    def restart(self, text: str) -> None:
        """Back to zero for the next stage of a job."""
        self._bar.progress(0.0, text=md_escape(text))

    def finish(self, text: str = "done") -> None:
        self._bar.progress(1.0, text=md_escape(text))

    def empty(self) -> None:
        self._bar.empty()
