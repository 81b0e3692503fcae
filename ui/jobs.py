"""A detached job on a page: start it, follow it live, cancel or resume it.

Why: the job runs in its own process (`core.jobs.detached`), so a click, a rerun, a closed tab
or a second browser session never stops it; the page only reads the store. The panel is a
fragment that re-reads the run every `REFRESH_S` seconds while it is queued or running, and
reruns the whole page once when it ends (the page's results then include the run's).
"""
from __future__ import annotations

from collections.abc import Mapping

import streamlit as st

from core.jobs.detached import JobStatus, job_status, latest_job, start_job
from core.jobs.run_folder import request_cancel
from ui.errors import input_errors
from ui.session import store
from ui.text import md_escape

__all__ = ["REFRESH_S", "job_panel", "start"]

REFRESH_S = 1.5
_ICONS = {"done": ":material/check_circle:", "failed": ":material/error:",
          "cancelled": ":material/cancel:", "worker gone": ":material/warning:"}


def start(kind: str, params: Mapping) -> str | None:
    """Queue the job and start its worker; the run_id, or None with the one-line error shown."""
    with input_errors(stop=False):
        run_id = start_job(store(), kind, params)
        st.toast(f"Started {md_escape(run_id)}: it runs on if you leave the page",
                 icon=":material/play_arrow:")
        return run_id
    return None


def job_panel(kind: str, *, key: str, what: str, **params) -> JobStatus | None:
    """The newest ``kind`` run whose parameters include ``params``: a live progress bar while it
    runs (with Cancel), its outcome once it ended (Resume where it failed, was cancelled or its
    worker stopped). Returns its status as first read (None: no such run)."""
    state = latest_job(store(), kind, **params)
    if state is None:
        return None

    @st.fragment(run_every=REFRESH_S if state.active else None)
    def panel() -> None:
        now = job_status(store(), state.run_id)
        if now.active:
            bar, button = st.columns([5, 1], vertical_alignment="center")
            fraction = now.done / now.total if now.total else 0.0
            bar.progress(min(fraction, 1.0), text=md_escape(f"{what}: {now.describe()}"))
            if button.button("Cancel", key=f"{key}_cancel", icon=":material/stop:", width="stretch"):
                with input_errors(stop=False):
                    request_cancel(store(), now.run_id)
                    st.toast("Cancel requested: the run stops after its current chunk",
                             icon=":material/stop:")
        elif state.active:            # it ended while this page watched: show its results
            st.rerun()
        else:
            _outcome(kind, now, key=key, what=what)

    panel()
    return state


def _outcome(kind: str, now: JobStatus, *, key: str, what: str) -> None:
    line = md_escape(f"{what} {now.run_id}: {now.describe()}")
    if now.status == "done":
        st.caption(line)
        return
    text, resume = st.columns([5, 1], vertical_alignment="center")
    (text.error if now.status == "failed" else text.warning)(line, icon=_ICONS.get(now.status))
    if resume.button("Resume", key=f"{key}_resume", icon=":material/replay:", width="stretch",
                     help="Start it again: what it stored is kept"):
        with input_errors(stop=False):
            start_job(store(), kind, {}, resume=now.run_id)
            st.rerun()
