"""The shared pickers: dataset and test set, kept in the URL (shareable links)."""
from __future__ import annotations

import streamlit as st

from core.store import Store
from ui.caching import cached
from ui.session import settings, store
from ui.text import md_code

ALL = "All datasets"


def sidebar() -> tuple:
    """Store, dataset and test-set pickers; their values live in the URL's query parameters.

    Returns the lists it showed (`refresh_sidebar` compares them after the page ran). Which
    data is synthetic is said per dataset below, never by the demo mode: a hosted store may
    also hold real data.
    """
    cfg = settings()
    s = store()
    with st.sidebar:
        if cfg.demo_mode:
            st.info("Hosted demo: read-only. Uploads, server folders and training are "
                    "disabled.", icon=":material/lock:")
        datasets = cached(Store.datasets)
        st.selectbox("Dataset", [ALL, *datasets["dataset"]], key="dataset",
                     bind="query-params")
        sets = cached(Store.testsets)
        chosen = st.session_state.get("dataset", ALL)
        if chosen != ALL:
            sets = sets[sets["datasets"] == chosen]
        names = sets["name"].tolist()
        if names:
            st.selectbox("Test set", names, key="test_set", bind="query-params",
                         index=_default_index(names, chosen),
                         help="Named, reproducible case lists (see Import › Test sets)")
        synthetic = synthetic_datasets(datasets)
        if synthetic and (chosen == ALL or chosen in synthetic):
            st.caption(":material/science: **Synthetic** demo data"
                       + ("" if chosen != ALL else f" ({', '.join(synthetic)})")
                       + ": rendered images, simulated readers.")
        st.caption(f"Store: {md_code(s.path)}")
    return _lists()


def _lists() -> tuple:
    return (tuple(cached(Store.datasets)["dataset"]), tuple(cached(Store.testsets)["name"]))


def refresh_sidebar(shown: tuple) -> None:
    """Rerun once when the page just changed the sidebar's lists (an import, a new test set).

    Why: the sidebar is drawn before the page, so a dataset the page imported would appear
    only on the next interaction. Comparing the lists, not the store's change token, reruns
    once per change: pages that write on every run (job polling) never loop.
    """
    if _lists() != shown:
        st.rerun()


def synthetic_datasets(datasets=None) -> list[str]:
    """The store's synthetic (demo) datasets: said beside every number, whatever is picked."""
    datasets = cached(Store.datasets) if datasets is None else datasets
    return datasets.loc[datasets["kind"] == "synthetic", "dataset"].tolist()


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
