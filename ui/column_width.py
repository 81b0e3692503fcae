"""The width of the column an element stands in, measured in the browser.

Why: a canvas is sized in CSS pixels by Python (`st_canvas(width=...)`), but only the browser
knows how wide its column is (the window, the sidebar, columns stacking on narrow screens).
A 560 px canvas in a 454 px column hid its right fifth. This zero-height component reports
its own width (which is its column's) whenever it changes by a whole pixel; the page sizes the
canvas from it (`ui.canvas.canvas_size`). None until the browser has reported (AppTest, the
first run of a page).
"""
from __future__ import annotations

import streamlit as st

__all__ = ["column_width"]

_JS = """
export default function (component) {
  const { parentElement, setStateValue } = component;
  const host = parentElement instanceof ShadowRoot ? parentElement.host : parentElement;
  let sent = null;
  const report = () => {
    const width = Math.floor(host.getBoundingClientRect().width);
    if (width > 0 && width !== sent) { sent = width; setStateValue("width", width); }
  };
  const observer = new ResizeObserver(report);
  observer.observe(host);
  report();
  return () => observer.disconnect();
}
"""

_measure = st.components.v2.component("ilcscope.column_width", html="<div></div>", js=_JS,
                                      isolate_styles=False)


def column_width(key: str) -> int | None:
    """The enclosing column's width in CSS pixels, or None before the browser reported it."""
    result = _measure(key=key, default={"width": None}, on_width_change=lambda: None,
                      width="stretch", height="content")
    width = result.get("width") if hasattr(result, "get") else getattr(result, "width", None)
    return None if width is None else int(width)
