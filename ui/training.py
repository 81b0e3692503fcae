"""The Fine-tuning page's actions and its live run panel.

Runs start as background processes (`models.training.sweep.launch_runs(..., detach=True)`): they outlive
a page reload and a closed tab, and the page finds them again in the store's ``runs`` table.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.jobs.run_folder import request_cancel
from core.reports import training
from models.training import sweep as train
from ui.charts.training import duration, loss_chart, loss_panels
from ui.downloads import download_popover
from ui.errors import input_errors
from ui.layout import chart_grid
from ui.session import store
from ui.text import md_escape

REFRESH_S = 2.0          # how often the run panel re-reads the runs while one is running
MAX_CURVES = 12          # runs drawn by default (the newest); pick others explicitly
STOPPED = ("failed", "cancelled")

__all__ = ["REFRESH_S", "follow_default", "launch", "parse_lrs", "progress_text", "run_panel"]


def parse_lrs(text: str, runs: int | None) -> tuple[float, ...] | None:
    """The learning rates ``text`` gives (`models.training.sweep.parse_lrs`), or None with the error
    shown under the field."""
    with input_errors(stop=False):
        return train.parse_lrs(text, runs)
    return None


def launch(**fields) -> list[str]:
    """Check the request, then start one background process per learning rate; the new run
    ids, or [] with the one-line error shown (nothing started)."""
    with input_errors(stop=False):
        return train.launch_runs(store(), train.TrainRequest(**fields), detach=True)
    return []


def _resume(run_id: str) -> None:
    with input_errors(stop=False):
        train.resume_run(store(), run_id, detach=True)
        st.toast(f"Resumed {md_escape(run_id)} from its last epoch", icon=":material/play_arrow:")


def _cancel(run_id: str) -> None:
    with input_errors(stop=False):
        request_cancel(store(), run_id)
        st.toast(f"Cancel requested: {md_escape(run_id)} stops at its next batch",
                 icon=":material/stop:")


def follow_default(key: str, default: list) -> list | None:
    """The ``default=`` for the widget ``key`` that must follow a changing default (the test
    sets the finished runs evaluated on): a new default replaces the selection, as a fresh
    widget would, while the first leaves a value from the URL alone. None once the widget has
    a value (Streamlit warns when a default meets a value set through the session)."""
    seen, st.session_state[f"_{key}_default"] = st.session_state.get(f"_{key}_default"), default
    if seen is not None and seen != default:
        st.session_state[key] = default
    return None if key in st.session_state else default


def _label(row, *, state: bool = True) -> str:
    return " · ".join([training.lr_label(row.lr), row.mode, *([row.state] if state else []),
                       row.run_id[-4:]])


def progress_text(row) -> str:
    """A live run's line as its state reads: queued (waiting for its worker), running (epochs
    done, ETA once known, the worker's message), evaluating (its best epoch, the test sets
    being scored). Unknown parts are left out, never written as 'nan'."""
    if row.state == "queued":
        parts = ["waiting for its worker (a sweep trains its rates one after another)"]
    elif row.state == "evaluating":
        best = "" if pd.isna(row.best_epoch) else f" (best epoch {int(row.best_epoch)})"
        parts = [f"training done{best}",
                 f"scoring {md_escape(', '.join(row.evaluate)) or 'no test set'}"]
    else:
        parts = [f"{row.epochs_done} of {row.epochs} epochs done" if row.epochs else "",
                 f"ETA {duration(row.eta_s)}" if duration(row.eta_s) else "",
                 md_escape(row.message)]   # the worker's words: file and set names
    return " · ".join([f"**{md_escape(_label(row))}**", *(p for p in parts if p)])


def run_panel(*, polling: bool, read_only: bool) -> None:
    """Runs with progress and ETA, cancel and resume buttons, and the loss curves. Drawn in a
    fragment that reruns every `REFRESH_S` while ``polling``; when the last running run ends it
    reruns the whole page once (the finished-runs table) and polling stops. A run whose worker
    is gone (killed, a restart) shows as 'worker gone' (computed on read: the page never writes
    from here) and can be resumed."""
    runs = training.run_table(store())
    gone = runs["state"].eq("worker gone")
    running = runs[runs["status"].eq("running") & ~gone]
    if polling and running.empty:
        st.rerun()
    if runs.empty:
        st.info("No training runs in this store yet.", icon=":material/info:")
        return
    for row in running.itertuples():
        bar, button = st.columns([6, 1], vertical_alignment="bottom")
        bar.progress(row.progress, text=progress_text(row))
        if button.button("Cancel", key=f"ft_cancel_{row.run_id}", icon=":material/stop:",
                         disabled=read_only):
            _cancel(row.run_id)
    shown = runs.assign(eta=runs["eta_s"].map(duration), elapsed=runs["elapsed_s"].map(duration),
                        lr=runs["lr"].map(training.lr_label))
    st.dataframe(shown, hide_index=True, key="ft_runs", column_order=[
        "run_id", "state", "mode", "lr", "preprocess", "epochs_done", "epochs", "progress",
        "eta", "elapsed", "best_epoch", "best_val_loss", "child", "parent", "message", "error"],
        column_config={"progress": st.column_config.ProgressColumn(min_value=0, max_value=1),
                       "best_val_loss": st.column_config.NumberColumn(format="%.4f")})
    stopped = runs[runs["status"].isin(STOPPED) | gone]
    if len(stopped) and not read_only:
        pick, button = st.columns([6, 1], vertical_alignment="bottom")
        labels = {r.run_id: _label(r) for r in stopped.itertuples()}
        # not in the URL: a one-off action on a run that a resume makes running again
        run_id = pick.selectbox("Resume a stopped run from its last epoch", list(labels),
                                format_func=labels.get, key="ft_resume_pick")
        if button.button("Resume", key="ft_resume", icon=":material/play_arrow:"):
            _resume(run_id)
    # in the URL as their labels (Streamlit writes a bound widget's formatted options): the
    # curve picker's leave the state out, so that a link outlives the run's end
    labels = {r.run_id: _label(r, state=False) for r in runs.itertuples()}
    picked = st.multiselect("Loss curves of", list(labels), format_func=labels.get,
                            key="ft_curve_runs", placeholder=f"the {MAX_CURVES} newest runs",
                            bind="query-params")
    curves = training.loss_curves(store(), run_ids=picked or runs["run_id"][:MAX_CURVES].tolist())
    if curves.empty:
        st.caption("Loss curves appear when the first epoch ends.")
        return
    title = "Loss per epoch (◆ best validation loss: the kept checkpoint)"
    st.markdown(f"**{title}**")
    chart_grid(loss_panels(curves), per_row=2)     # fits any width; the download: one figure
    chart = loss_chart(curves, title=title)
    download_popover("finetune_loss_curves", "ft_curves", chart=chart, frame=curves)
