"""The session's settings and store, the first-run demo build, and the pages' notices.

Settings come from the environment or ``st.secrets`` (``ILCSCOPE_DB``, ``ILCSCOPE_MODE``); the
store is one shared handle per file (it holds no connection between operations). Demo mode is
enforced by the store itself (`core.store.open_store` refuses writable stores); the app only
adds its notices.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from core.store import Store, create_store, default_db_path, demo_mode, open_store
from ui.progress import ProgressBar


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
    # Reading st.secrets also copies its root-level strings into os.environ (Streamlit does
    # that), so a secret ILCSCOPE_MODE reaches `open_store` as the variable does.
    mode = _secret("ILCSCOPE_MODE")
    db = os.environ.get("ILCSCOPE_DB") or _secret("ILCSCOPE_DB") or default_db_path()
    return Settings(db_path=Path(db), demo_mode=demo_mode(mode))


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
        from models.demo.models import add_demo_models

        tmp = cfg.db_path.with_name(cfg.db_path.stem + ".building.duckdb")
        for p in (tmp, tmp.with_name(tmp.name + ".wal")):
            p.unlink(missing_ok=True)
        with st.status("First run: building the synthetic demo store…", expanded=True) as box:
            progress = ProgressBar("rendering synthetic mammograms")
            building = create_store(tmp)  # new files only: allowed in demo mode
            summary = build_demo(building, progress=progress)
            st.write(f"{summary.n_exams} exams, {summary.n_images} images rendered.")
            progress.restart("scoring the demo models")
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


def read_only_notice(what: str) -> bool:
    """In the hosted demo, say that ``what`` is disabled; returns True when it is."""
    if settings().demo_mode:
        st.info(f"{what} is disabled in the hosted demo (read-only). Run ILCscope locally "
                "to use it.", icon=":material/lock:")
        return True
    return False


def is_planned(path: str | Path) -> bool:
    """Whether the page file at ``path`` is a placeholder: it calls `planned` (read, never run).

    Why read the source: the navigation marks placeholders without a list to keep up to date;
    when a page's issue lands and it stops calling `planned`, the mark goes by itself.
    """
    import ast

    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    return any(isinstance(node, ast.Call) and getattr(node.func, "id",
                                                     getattr(node.func, "attr", None)) == "planned"
               for node in ast.walk(tree))


def planned(title: str, what: str, cli: str | None = None) -> None:
    """A page whose issue comes later: say plainly what it will show."""
    st.title(title)
    st.info(what, icon=":material/construction:")
    if cli:
        st.caption(f"From the shell: `{cli}`")
