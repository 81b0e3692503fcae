"""A model sent from one page to another rides in the URL: ``benchmark?model=<name>``.

The Fine-tuning page links each run's child model to the Benchmark and Saliency pages; those
pages open on the linked model (and its parent, to compare), so a link is also shareable.
Without a link every page opens on one model, the Overview's headline model
(`core.reports.findings.HEADLINE_RULE`), so no two pages open on different "best" models.
"""
from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

from core.reports import findings
from core.store import Store
from ui.caching import cached

__all__ = ["default_model", "headline_first", "linked_model", "linked_models", "model_url"]


def model_url(page: str, model: str, *, test_set: str | None = None) -> str:
    """The relative URL of ``page`` (its URL path: 'benchmark', 'saliency') opened on ``model``;
    the test set rides along, as the sidebar keeps it in the URL."""
    query = {"model": model} | ({"test_set": test_set} if test_set else {})
    return f"{page}?{urlencode(query)}"


def linked_model(known: list[str]) -> str | None:
    """The URL's ``?model=`` when it names one of ``known``, else None."""
    model = st.query_params.get("model")
    return model if model in known else None


def linked_models(known: list[str]) -> list[str] | None:
    """The linked model and its parent (when among ``known``), or None without a link."""
    model = linked_model(known)
    if model is None:
        return None
    parents = cached(Store.models).set_index("model")["parent"]
    parent = parents.get(model)
    return [model] + ([parent] if parent in known and parent != model else [])


def default_model(known: list[str]) -> str | None:
    """The model a page opens on: the URL's ``?model=`` when it names one of ``known``, else
    the headline model (`core.reports.findings.headline_model`) when known, else the first."""
    if not known:
        return None
    if (model := linked_model(known)) is not None:
        return model
    headline = cached(findings.headline_model)
    return headline if headline in known else known[0]


def headline_first(known: list[str]) -> list[str]:
    """``known`` with `default_model` first (a selectbox then opens on it), order kept."""
    first = default_model(list(known))
    return sorted(known, key=lambda m: m != first)
