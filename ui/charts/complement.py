"""Radiologist-complement charts: the trade-off as the threshold moves and the model's scores
in the reader's four groups. Pure: frames from `core.reports.complement` in, an ``alt.Chart``
out."""
from __future__ import annotations

import math
import textwrap

import altair as alt
import numpy as np
import pandas as pd

from core.reports.complement import GROUPS

CURRENT = "#c0392b"      # the threshold in use, on every chart
MAX_POINTS = 2000        # per chart layer: Vega stays fast, altair's 5,000-row limit is never hit
# Subtitle lines short enough for a 390 px phone (~340 px of chart): Vega never wraps text,
# and a longer line was cut on both sides there (issue 29).
SUBTITLE_CHARS = 44
# room for the glyphs Vega measures short: the last axis label ("1.00") and a rotated axis
# title lost a pixel or two at the edge of the SVG
PADDING = {"left": 6, "right": 12, "top": 4, "bottom": 4}
FLAG_COLOURS = alt.Scale(domain=["flagged by the model", "not flagged"],
                         range=["#c0392b", "#9aa5b1"])


def subtitle(text: str, width: int = SUBTITLE_CHARS) -> list[str]:
    """``text`` as subtitle lines of at most ``width`` characters (whole words)."""
    return textwrap.wrap(text, width)


def tradeoff_chart(curve: pd.DataFrame, negatives: pd.DataFrame, *, missed: int,
                   unit: str) -> alt.Chart:
    """Missed cancers caught vs extra recalls per 1,000 as the threshold falls.

    ``curve`` is `core.complement.tradeoff_curve`; ``negatives`` the report's reader-negatives
    table: its first row ("this threshold") is the large red dot, the presets have their own
    shapes (drawn under it, so coinciding points stay visible in the legend and tooltip).
    """
    start = pd.DataFrame({"threshold": [math.inf], "caught": [0], "extra_recalls_per_1000": [0.0]})
    stride = -(-len(curve) // MAX_POINTS)           # thin long curves, keep every step up
    keep = curve["caught"].diff().ne(0) | (np.arange(len(curve)) % stride == 0)
    keep.iloc[-1:] = True
    line = pd.concat([start, curve.loc[keep, ["threshold", "caught", "extra_recalls_per_1000"]]],
                     ignore_index=True)
    line["threshold"] = line["threshold"].map(lambda t: f"{t:.4g}" if math.isfinite(t) else "none")
    x = alt.X("extra_recalls_per_1000:Q", title=subtitle(
        f"extra recalls per 1,000 healthy {unit} the radiologists did not recall"))
    y = alt.Y("caught:Q", title=f"missed cancers caught (of {missed})",
              scale=alt.Scale(domain=[0, max(missed, 1) * 1.06]), axis=alt.Axis(tickMinStep=1))
    base = alt.Chart(line).encode(x=x, y=y)
    steps = base.mark_line(interpolate="step-after", color="#5b8db8")
    dots = base.mark_circle(size=80, opacity=0).encode(     # invisible: hover targets only
        tooltip=["threshold:N", "caught:Q", alt.Tooltip("extra_recalls_per_1000:Q", format=".0f")])
    names = negatives["operating_point"].tolist()     # "this threshold" first, then presets
    spots = alt.Chart(negatives.iloc[::-1]).mark_point(filled=True, opacity=0.9).encode(
        x=x, y=y,
        color=alt.Color("operating_point:N", title=None, scale=alt.Scale(
            domain=names, range=[CURRENT, "#333333", "#8e44ad", "#16a085"][:len(names)]),
            # two columns: four entries in one row were cut at 1400 px ("89% spe")
            legend=alt.Legend(orient="bottom", columns=2, labelLimit=0, symbolLimit=0)),
        shape=alt.Shape("operating_point:N", scale=alt.Scale(
            domain=names, range=["circle", "square", "diamond", "triangle-up"][:len(names)])),
        size=alt.condition(f"datum.operating_point == '{names[0]}'", alt.value(260),
                           alt.value(120)),
        tooltip=["operating_point:N", alt.Tooltip("threshold:Q", format=".4g"), "caught:Q",
                 alt.Tooltip("extra_recalls_per_1000:Q", format=".0f")])
    return (steps + dots + spots).properties(height=340, padding=PADDING, title=alt.TitleParams(
        "Trade-off as the threshold moves", subtitle=subtitle(
            "Lowering the threshold moves right: each step up is one more missed cancer "
            f"caught, each step right costs extra recalls of healthy {unit} the radiologists "
            "cleared."), anchor="start"))


def score_groups_chart(groups: pd.DataFrame, means: pd.DataFrame, *,
                       threshold: float) -> alt.Chart:
    """The model's scores in the reader's four groups (TP, FN, FP, TN), means as black ticks.

    One dot per case (a seeded vertical jitter, so exports repeat; at most ``MAX_POINTS / 4``
    per group, a fixed random sample, so large test sets stay drawable), red when the model
    flags it; the dashed line is the threshold (absent when it is +inf: nothing is flagged).
    The means use every case.
    """
    names = {g: f"{g}: {text}" for g, text in GROUPS.items()}
    order = list(names.values())
    per_group = MAX_POINTS // 4
    groups = groups.sample(frac=1, random_state=0).groupby("group").head(per_group)
    frame = groups.assign(group_name=groups["group"].map(names),
                          model=groups["flagged"].map({True: "flagged by the model",
                                                       False: "not flagged"}),
                          jitter=np.random.default_rng(0).uniform(-11, 11, len(groups)))
    y = alt.Y("group_name:N", title=None, sort=order, scale=alt.Scale(domain=order),
              axis=alt.Axis(labelLimit=260))
    x = alt.X("score:Q", title="model score", scale=alt.Scale(zero=False),
              axis=alt.Axis(tickCount=6))
    dots = alt.Chart(frame).mark_circle(size=45, opacity=0.75).encode(
        x=x, y=y, yOffset=alt.YOffset("jitter:Q", scale=alt.Scale(domain=[-30, 30])),
        color=alt.Color("model:N", scale=FLAG_COLOURS, title=None,
                        legend=alt.Legend(orient="bottom", columns=1)),
        tooltip=["case_id:N", alt.Tooltip("score:Q", format=".4f"), "model:N"])
    mean = means.dropna(subset=["mean_score"]).assign(group_name=lambda f: f["group"].map(names))
    ticks = alt.Chart(mean).mark_tick(color="black", thickness=3, size=34).encode(
        x=alt.X("mean_score:Q"), y=y,
        tooltip=["group_name:N", "cases:Q", alt.Tooltip("mean_score:Q", format=".4f")])
    layers = [dots, ticks]
    if math.isfinite(threshold):
        layers.append(alt.Chart(pd.DataFrame({"t": [threshold]})).mark_rule(
            color=CURRENT, strokeDash=[6, 4], size=2).encode(x="t:Q"))
    return alt.layer(*layers).properties(height=340, padding=PADDING, title=alt.TitleParams(
        "Model scores by the radiologists' decision", subtitle=subtitle(
            "Black tick: the group's mean. Red dots lie at or above the threshold (dashed): "
            "red dots on the FN row are missed cancers the model would catch."),
        anchor="start"))
