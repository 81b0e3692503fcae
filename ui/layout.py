"""Narrow screens: below about 1,000 px the sidebar starts collapsed and columns stack, so no
metric label, chart or button is cut (a laptop split-screen, a tablet); a chart wider than
the window scrolls inside its own frame. Injected once by app.py.

Why CSS and a few lines of JavaScript: Streamlit collapses the sidebar only below its own
768 px breakpoint and never stacks ``st.columns`` above 640 px; at 800 px its sidebar took 300
px and four columns of metrics cut their labels ("Missed can...").
"""
from __future__ import annotations

from collections.abc import Sequence

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
  /* fallback only: charts fit their container (`ui.charts.fit`, `chart_grid`); one that
     still came out wider scrolls inside itself, not the page */
  [data-testid="stVegaLiteChart"] {{ max-width: 100% !important; overflow-x: auto !important; }}
  /* metric labels wrap instead of ending in "..." */
  [data-testid="stMetricLabel"], [data-testid="stMetricLabel"] * {{
    white-space: normal !important; overflow: visible !important; text-overflow: clip !important; }}
}}
/* every width: options of a segmented control or pills wrap onto a second row instead of
   scrolling out of sight ("M4 local thresh...", M5-M7 hidden at 1400 px); a multiselect tag
   shows its whole name ("gmic-dem...") and wraps if longer than the box */
[data-testid="stButtonGroup"], [data-testid="stButtonGroup"] > div {{
  flex-wrap: wrap !important; overflow: visible !important; }}
[data-testid="stMultiSelect"] [data-baseweb="select"] > div > div:first-child {{
  flex-wrap: wrap !important; overflow: visible !important; }}
[data-testid="stMultiSelect"] [data-baseweb="tag"] {{ max-width: 100% !important; height: auto !important; }}
[data-testid="stMultiSelect"] [data-baseweb="tag"] span {{
  max-width: none !important; overflow: visible !important; text-overflow: clip !important;
  white-space: normal !important; overflow-wrap: anywhere; }}
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


def chart_grid(charts: Sequence, *, per_row: int = 2) -> None:
    """Charts (each fitted to its width, `ui.charts.fit`; altair charts or their
    specification dicts) ``per_row`` side by side: the
    panels of a figure that Vega would draw as one fixed-width facet. Below `NARROW_PX` the
    columns stack, so each panel gets the whole width instead of being cut."""
    for start in range(0, len(charts), per_row):
        row = charts[start:start + per_row]
        columns = st.columns(per_row) if len(charts) > 1 and per_row > 1 else [st.container()]
        for column, chart in zip(columns, row):
            if isinstance(chart, dict):
                column.vega_lite_chart(chart, width="stretch")
            else:
                column.altair_chart(chart, width="stretch")
