"""Bad input on a page: one error line in the form's words, and the page stops there.

Why one place: every page caught `InputError`, showed it and stopped, written out 14 times;
`input_errors()` says it once (``with input_errors(): table = core_call(...)``).
"""
from __future__ import annotations

import re
from contextlib import contextmanager

import streamlit as st

from core.errors import InputError
from ui.text import md_escape

__all__ = ["form_words", "input_errors", "show_input_error"]


def form_words(message: str, labels: dict[str, str]) -> str:
    """``message`` in a form's words: each parameter name core put in it (``id_column``)
    becomes its field's label ('the "Id column" field'), as the CLI turns them into flags.

    Names with an underscore change wherever they stand outside quotes; a plain word only when
    it opens the message (mid-sentence it is usually English: "322 images").
    """
    def field(name: str) -> str:
        return f'the "{labels[name]}" field'

    joined = [n for n in labels if "_" in n]
    if joined:
        message = re.sub(r"(?<![\w'\"])(" + "|".join(map(re.escape, joined)) + r")(?![\w'\"])",
                         lambda m: field(m.group(1)), message)
    first, space, rest = message.partition(" ")
    return (field(first) if first in labels else first) + space + rest


def show_input_error(exc: Exception, labels: dict[str, str] | None = None) -> None:
    """One error line; with ``labels`` (parameter -> form label) in the form's words."""
    message = form_words(str(exc), labels) if labels else str(exc)
    st.error(md_escape(message), icon=":material/error:")   # plain text that may hold names


@contextmanager
def input_errors(labels: dict[str, str] | None = None, *, stop: bool = True):
    """Show an `InputError` raised inside the block as one line; then stop the page (default)
    or, with ``stop=False``, carry on after the block (a field the page can do without)."""
    try:
        yield
    except InputError as exc:
        show_input_error(exc, labels)
        if stop:
            st.stop()

