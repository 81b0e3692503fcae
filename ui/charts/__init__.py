"""Altair chart builders: a frame in, an ``alt.Chart`` out (pure; pages only place them)."""
from __future__ import annotations

import zlib
from collections.abc import Sequence

import altair as alt
import pandas as pd

DENSITY_NAMES = {0: "0 almost entirely fatty", 1: "1 scattered", 2: "2 heterogeneously dense",
                 3: "3 extremely dense"}
HISTOLOGY_COLOURS = alt.Scale(domain=["ILC", "IDC", "other", "unknown", "none"],
                              range=["#7b2d8e", "#e07b39", "#5b8db8", "#9e9e9e", "#cfcfcf"])


# Tableau 20, strong shades first: the palette a model's name hashes into.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
           "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def model_colour(name: str) -> str:
    """The colour of a model (or reader) named ``name``: a hash of the name into `PALETTE`, so
    it is the same on every page and does not change when another model is removed."""
    return PALETTE[zlib.crc32(str(name).encode()) % len(PALETTE)]


def model_colours(models: Sequence[str]) -> alt.Scale:
    """A colour scale for ``models``: each its `model_colour`; two that hash alike in one chart
    take the next free palette colour (in the order given), so no two models look the same."""
    taken, colours = set(), []
    for name in models:
        start = PALETTE.index(model_colour(name))
        colour = next((PALETTE[(start + i) % len(PALETTE)] for i in range(len(PALETTE))
                       if PALETTE[(start + i) % len(PALETTE)] not in taken), model_colour(name))
        taken.add(colour)
        colours.append(colour)
    return alt.Scale(domain=list(models), range=colours)


# A single (or layered) view as wide as its container, axes and legend included: Vega shrinks
# the plot to leave them room (issue 29: charts wider than a 390 px phone scrolled inside
# themselves). Compound views (facet, concat) cannot follow the container: pages show their
# panels as separate fitted charts (`ui.layout.chart_grid`).
FIT = alt.AutoSizeParams(type="fit-x", contains="padding")   # the height stays the plot's


# room for the glyphs Vega measures short: a rotated axis title lost a pixel or two at the
# SVG's left edge, the last axis label at its right (as `ui.charts.complement.PADDING`)
FIT_PADDING = {"left": 6, "right": 12, "top": 4, "bottom": 4}


def fit(chart: alt.TopLevelMixin) -> alt.TopLevelMixin:
    """``chart`` sized to its container's width (``st.altair_chart(..., width="stretch")``)."""
    return chart.properties(width="container", autosize=FIT, padding=FIT_PADDING)


def bar(frame: pd.DataFrame, x: str, y: str, *, color: str | None = None,
        title: str = "", horizontal: bool = False, color_scale=None) -> alt.Chart:
    """A bar chart with tooltips, as wide as its container; ``color`` stacks the bars. Category
    labels are never cut ("architectural dist..."): slanted when vertical, whole when
    horizontal; the legend sits below the bars."""
    enc_x = alt.X(f"{x}:N", title=None, sort="-y" if not horizontal else None,
                  axis=alt.Axis(labelAngle=-35, labelAlign="right", labelLimit=0))
    enc_y = alt.Y(f"{y}:Q", title=y)
    if horizontal:
        enc_x = alt.X(f"{y}:Q", title=y)
        enc_y = alt.Y(f"{x}:N", title=None, sort="-x", axis=alt.Axis(labelLimit=0))
    chart = alt.Chart(frame, title=title).mark_bar().encode(
        x=enc_x, y=enc_y, tooltip=list(frame.columns))
    if color:
        chart = chart.encode(color=alt.Color(
            f"{color}:N", scale=color_scale or alt.Undefined,
            legend=alt.Legend(orient="bottom", columns=3, labelLimit=0, titleLimit=0)))
    return fit(chart.properties(height=alt.Step(22) if horizontal else 260))


def density_bars(frame: pd.DataFrame, *, count: str = "exams", title: str = "") -> alt.Chart:
    """Exams per density category (0-3), one horizontal bar each with its whole name (slanted
    names under vertical bars overlapped, and Vega dropped all but 0 and 3)."""
    frame = frame.assign(category=frame["category"].map(DENSITY_NAMES))
    return fit(alt.Chart(frame, title=title).mark_bar().encode(
        y=alt.Y("category:N", title="density category", sort=list(DENSITY_NAMES.values()),
                axis=alt.Axis(labelLimit=0)),
        x=alt.X(f"{count}:Q"),
        color=alt.Color("category:N", scale=alt.Scale(scheme="purples"), legend=None),
        tooltip=list(frame.columns)).properties(height=alt.Step(34)))
