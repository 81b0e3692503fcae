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


def bar(frame: pd.DataFrame, x: str, y: str, *, color: str | None = None,
        title: str = "", horizontal: bool = False, color_scale=None) -> alt.Chart:
    """A bar chart with tooltips; ``color`` stacks the bars."""
    enc_x = alt.X(f"{x}:N", title=None, sort="-y" if not horizontal else None)
    enc_y = alt.Y(f"{y}:Q", title=y)
    if horizontal:
        enc_x, enc_y = alt.X(f"{y}:Q", title=y), alt.Y(f"{x}:N", title=None, sort="-x")
    chart = alt.Chart(frame, title=title).mark_bar().encode(
        x=enc_x, y=enc_y, tooltip=list(frame.columns))
    if color:
        chart = chart.encode(color=alt.Color(f"{color}:N", scale=color_scale or alt.Undefined))
    return chart.properties(height=alt.Step(22) if horizontal else 260)


def density_bars(frame: pd.DataFrame, *, count: str = "exams", title: str = "") -> alt.Chart:
    """Exams per density category (0-3) with the category names (slanted: the full names
    overlapped side by side in a half-width column)."""
    frame = frame.assign(category=frame["category"].map(DENSITY_NAMES))
    return alt.Chart(frame, title=title).mark_bar().encode(
        x=alt.X("category:N", title="density category", sort=list(DENSITY_NAMES.values()),
                axis=alt.Axis(labelAngle=-25, labelAlign="right", labelLimit=170)),
        y=alt.Y(f"{count}:Q"),
        color=alt.Color("category:N", scale=alt.Scale(scheme="purples"), legend=None),
        tooltip=list(frame.columns)).properties(height=260)
