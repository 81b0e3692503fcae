"""Widgets whose value lives in the URL (``bind="query-params"``) and follows another choice.

Why: a bound widget must keep one key (the key is the query parameter's name), and a keyed
widget keeps its value when its default changes; so a default that should follow, say, the
sidebar's test set is set here, once, when that choice changes, and a URL opened afresh
keeps what it says.
"""
from __future__ import annotations

import streamlit as st

__all__ = ["follow"]


def follow(key: str, anchor, value) -> None:
    """Set widget ``key`` to ``value`` when ``anchor`` differs from the last run's (call it
    before drawing the widget); the first run, e.g. a shared link, keeps the URL's value."""
    seen = f"_{key}_follows"
    if seen in st.session_state and st.session_state[seen] != anchor:
        st.session_state[key] = value
    st.session_state[seen] = anchor
