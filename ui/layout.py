"""Narrow screens: below about 1,000 px the sidebar starts collapsed and columns stack, so no
metric label, chart or button is cut (a laptop split-screen, a tablet); a chart wider than
the window scrolls inside its own frame. Injected once by app.py.

Why CSS and a few lines of JavaScript: Streamlit collapses the sidebar only below its own
768 px breakpoint and never stacks ``st.columns`` above 640 px; at 800 px its sidebar took 300
px and four columns of metrics cut their labels ("Missed can...").
"""
from __future__ import annotations

import streamlit as st

NARROW_PX = 1000

_CSS = f"""
<style>
@media (max-width: {NARROW_PX}px) {{
  /* columns stack: one per row; columns holding only metrics two per row */
  [data-testid="stHorizontalBlock"] {{ flex-wrap: wrap !important; }}
  [data-testid="stHorizontalBlock"] > [data-testid="stColumn"] {{
    flex: 1 1 100% !important; min-width: 100% !important; width: 100% !important; }}
  [data-testid="stHorizontalBlock"] > [data-testid="stColumn"]:has([data-testid="stMetric"]) {{
    flex: 1 1 calc(50% - 1rem) !important; min-width: calc(50% - 1rem) !important; }}
  /* a chart wider than the window (a facet per model) scrolls inside itself, not the page */
  [data-testid="stVegaLiteChart"] {{ max-width: 100% !important; overflow-x: auto !important; }}
  /* metric labels wrap instead of ending in "..." */
  [data-testid="stMetricLabel"], [data-testid="stMetricLabel"] * {{
    white-space: normal !important; overflow: visible !important; text-overflow: clip !important; }}
}}
</style>
"""

# Collapse the sidebar once per page load when the window is narrow; the user can open it.
_JS = f"""
<script>
(function () {{
  if (window.__ilcscopeNarrow || window.innerWidth > {NARROW_PX}) return;
  window.__ilcscopeNarrow = true;
  let tries = 40;
  (function collapse() {{
    const open = document.querySelector('[data-testid="stSidebar"][data-collapsed="false"]');
    const button = document.querySelector('[data-testid="stSidebarCollapseButton"] button');
    if (open && button) {{ button.click(); return; }}
    if (--tries > 0) setTimeout(collapse, 150);
  }})();
}})();
</script>
"""


def narrow_screens() -> None:
    """Inject the narrow-screen CSS and the sidebar collapse (no visible element)."""
    st.html(_CSS + _JS, unsafe_allow_javascript=True)
