"""Cached calls for the pages: ``cached(fn, *args, **kwargs)`` runs ``fn(store, ...)`` once
per store state.

The key is the function's qualified name, its arguments and the store file's change token
(size and mtime of the DuckDB file and its WAL), so an import or a new prediction shows up on
the next rerun without a restart. Pages pass the function itself (a misspelt name fails when
the page loads, not when a widget reaches the call); ``st.cache_data`` returns copies, so no
session mutates another's result.
"""
from __future__ import annotations

import streamlit as st

from ui.session import data_token, store


def qualified_name(fn) -> str:
    """``module.Class.function``: the cache key of a function (its identity is per process)."""
    return f"{fn.__module__}.{fn.__qualname__}"


@st.cache_data(show_spinner=False, max_entries=256)
def _call(name: str, db: str, token: tuple, args: tuple, kwargs: dict, _fn, _store):
    return _fn(_store, *args, **kwargs)


def cached(fn, *args, **kwargs):
    """``fn(store(), *args, **kwargs)``, cached until the store changes (returns a copy).

    ``fn`` takes the store first: a `Store` method (``cached(Store.datasets)``) or a core
    function (``cached(complement.reader_options, level="exam", test_set="test-all")``).
    Arguments must be hashable by Streamlit (plain values, tuples, lists, frames).
    """
    s = store()
    return _call(qualified_name(fn), str(s.path), data_token(), args, kwargs, _fn=fn, _store=s)
