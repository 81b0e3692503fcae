"""What every page shares: settings, the store, cached queries, the sidebar pickers.

Caching: `query` results are keyed by the store file's change token (size and mtime of the
DuckDB file and its WAL), so an import or a new prediction shows up on the next rerun without
restarting, and nothing mutable is shared between sessions (``st.cache_data`` returns copies).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from core.store import Store, default_db_path, open_store

ALL = "All datasets"


def _leave_pages_autodiscovery() -> None:
    """Make ``app.py``'s navigation run first, also for a deep link on a fresh server.

    Why: with a ``pages/`` folder beside ``app.py``, Streamlit's first run in a new server
    process takes the old multipage mode and runs the linked page file by itself (no sidebar,
    no test set), and lists helper modules as pages. The flag it keeps for that is cleared
    once ``st.navigation`` has run; clearing it here and rerunning gets there at once.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


_leave_pages_autodiscovery()


@dataclass(frozen=True)
class Settings:
    db_path: Path
    demo_mode: bool  # hosted demo: read-only store, no uploads, no server paths, no training


def _secret(name: str) -> str | None:
    try:
        return st.secrets.get(name)
    except Exception:  # no secrets.toml: Streamlit raises rather than returning None
        return None


def settings() -> Settings:
    mode = os.environ.get("ILCSCOPE_MODE") or _secret("ILCSCOPE_MODE") or ""
    db = os.environ.get("ILCSCOPE_DB") or _secret("ILCSCOPE_DB") or default_db_path()
    return Settings(db_path=Path(db), demo_mode=mode.strip().lower() == "demo")


@st.cache_resource(show_spinner=False)
def _store(path: str, read_only: bool) -> Store:
    return open_store(path, read_only=read_only)


def store() -> Store:
    """The session's store (shared handle; it holds no connection between operations)."""
    cfg = settings()
    return _store(str(cfg.db_path), cfg.demo_mode)


def data_token() -> tuple:
    """Changes whenever the store file (or its write-ahead log) changes."""
    path = settings().db_path
    token = []
    for p in (path, path.with_name(path.name + ".wal")):
        try:
            s = p.stat()
            token += [s.st_size, s.st_mtime_ns]
        except FileNotFoundError:
            token += [0, 0]
    return tuple(token)


@st.cache_data(show_spinner=False, max_entries=256)
def _cached(_store: Store, db: str, token: tuple, method: str, kwargs: tuple):
    return getattr(_store, method)(**dict(kwargs))


def query(method: str, **kwargs):
    """``store().<method>(**kwargs)``, cached until the store changes (returns a copy)."""
    s = store()
    items = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()))
    return _cached(s, str(s.path), data_token(), method, items)


@st.cache_resource(show_spinner=False)
def _first_run_lock(path: str):
    import threading

    return threading.Lock()


def ensure_store() -> None:
    """On a fresh clone: build the synthetic demo store once, with a visible progress bar."""
    cfg = settings()
    if cfg.db_path.exists():
        return
    with _first_run_lock(str(cfg.db_path)):
        if cfg.db_path.exists():
            return
        from core.demo.build import build_demo
        from models.demo_models import add_demo_models

        tmp = cfg.db_path.with_name(cfg.db_path.stem + ".building.duckdb")
        for p in (tmp, tmp.with_name(tmp.name + ".wal")):
            p.unlink(missing_ok=True)
        with st.status("First run: building the synthetic demo store…", expanded=True) as box:
            bar = st.progress(0.0, text="rendering synthetic mammograms")

            def progress(done: int, total: int, message: str = "") -> None:
                bar.progress(min(done / max(total, 1), 1.0), text=message or None)

            building = open_store(tmp)
            summary = build_demo(building, progress=progress)
            st.write(f"{summary.n_exams} exams, {summary.n_images} images rendered.")
            bar.progress(0.0, text="scoring the demo models")
            add_demo_models(building, progress=progress)
            building.checkpoint()
            _move_store(building, cfg.db_path)
            box.update(label="Demo store ready", state="complete", expanded=False)


def _move_store(building: Store, target: Path) -> None:
    """Move a finished store and its files folder into place (its roots are store-relative)."""
    import shutil

    files_target = target.with_name(target.stem + "_files")
    if files_target.exists():
        shutil.rmtree(files_target)
    if building.files_dir.exists():
        building.files_dir.rename(files_target)
    building.path.rename(target)


def sidebar() -> None:
    """Store, dataset and test-set pickers; their values live in the URL (shareable links)."""
    cfg = settings()
    s = store()
    with st.sidebar:
        if cfg.demo_mode:
            st.info("Hosted demo: read-only, synthetic data. Uploads, server folders and "
                    "training are disabled.", icon=":material/lock:")
        datasets = query("datasets")
        st.selectbox("Dataset", [ALL, *datasets["dataset"]], key="dataset",
                     bind="query-params")
        sets = query("testsets")
        chosen = st.session_state.get("dataset", ALL)
        if chosen != ALL:
            sets = sets[sets["datasets"] == chosen]
        names = sets["name"].tolist()
        if names:
            st.selectbox("Test set", names, key="test_set", bind="query-params",
                         index=_default_index(names, chosen),
                         help="Named, reproducible case lists (see Import › Test sets)")
        if chosen != ALL and datasets.set_index("dataset").loc[chosen, "kind"] == "synthetic":
            st.caption(":material/science: **Synthetic** demo data: rendered images, "
                       "simulated readers.")
        st.caption(f"Store: `{s.path}`")


def _default_index(names: list[str], dataset: str) -> int:
    for preferred in ("test-all", dataset):
        if preferred in names:
            return names.index(preferred)
    return 0


def test_set() -> str | None:
    return st.session_state.get("test_set")


def require_test_set() -> str:
    """The active test set, or stop the page with a hint."""
    name = test_set()
    if not name:
        st.info("No test set yet: import data on the Import page or build the demo with "
                "`python -m core demo`.")
        st.stop()
    return name


def read_only_notice(what: str) -> bool:
    """In the hosted demo, say that ``what`` is disabled; returns True when it is."""
    if settings().demo_mode:
        st.info(f"{what} is disabled in the hosted demo (read-only). Run ILCscope locally "
                "to use it.", icon=":material/lock:")
        return True
    return False


def show_input_error(exc: Exception) -> None:
    st.error(str(exc), icon=":material/error:")


def planned(title: str, what: str, cli: str | None = None) -> None:
    """A page whose issue comes later: say plainly what it will show."""
    st.title(title)
    st.info(what, icon=":material/construction:")
    if cli:
        st.caption(f"From the shell: `{cli}`")
