"""Density charts: category distribution (figure 6.14), AUC per density stratum with CIs
(table 6.3 as a forest plot), model score against density (figure 6.15) and readers' sensitivity
and specificity per category beside the model's. Pure: frames from `core.reports.density` in, an
``alt.Chart`` out."""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from core.reports.density import STRATA
from ui.charts import DENSITY_NAMES, fit, model_colours

TRUTH_COLOURS = alt.Scale(domain=["healthy", "cancer"], range=["#b0b0b0", "#7b2d8e"])
ROLE_COLOURS = alt.Scale(domain=["reader", "model"], range=["#e07b39", "#5b8db8"])
CATEGORY_ORDER = list(DENSITY_NAMES.values())
SHORT_NAMES = {"all": "all", "0": "0 fatty", "1": "1 scattered", "2": "2 heterogeneous",
               "3": "3 extreme"}
_TINY = {"all": "all", "0": "0", "1": "1", "2": "2", "3": "3"}   # axis labels in narrow panels


def distribution_chart(counts: pd.DataFrame, *, title: str = "") -> alt.Chart:
    """Share of exams per density category, one bar per group (dataset or test set) side by side;
    the share sits on each bar, as the axis reads (the count is in the tooltip).
    ``counts``: `core.reports.density.category_counts`."""
    frame = counts.assign(category=counts["category"].astype(str).map(SHORT_NAMES),
                          percent=100 * counts["share"].fillna(0))
    order = list(SHORT_NAMES.values())[1:]
    x = alt.X("category:N", sort=order, title=None, axis=alt.Axis(labelAngle=0, labelLimit=150, labelExpr="split(datum.label, ' ')"))
    groups = list(dict.fromkeys(frame["group"]))
    colour = (alt.Color("group:N", title=None, sort=groups, legend=alt.Legend(orient="top"))
              if len(groups) > 1 else alt.Color("category:N", scale=alt.Scale(scheme="purples"),
                                                sort=order, legend=None))
    base = alt.Chart(frame, title=title).encode(
        x=x, xOffset=alt.XOffset("group:N", sort=groups),
        y=alt.Y("percent:Q", title="% of exams", scale=alt.Scale(domainMin=0)),
        tooltip=[alt.Tooltip("group:N"), alt.Tooltip("category:N"), alt.Tooltip("exams:Q"),
                 alt.Tooltip("percent:Q", format=".1f", title="% of exams")])
    bars = base.mark_bar(cornerRadiusTopLeft=2, cornerRadiusTopRight=2).encode(color=colour)
    labels = base.mark_text(dy=-6, fontSize=11, color="#444").encode(
        text=alt.Text("percent:Q", format=".0f"))
    return fit((bars + labels).properties(height=280))


def auc_forest(table: pd.DataFrame, *, title: str = "") -> alt.Chart:
    """AUC with its 95 % CI per density stratum (rows) and model (colour), as wide as its
    container; with several test sets each row starts with its test set's name (one view, not
    a panel per test set: a facet cannot follow the width, and at 390 px only 0-0.4 of its
    axis showed). The dashed rule is chance. ``table``: `core.reports.density.stratified_auc`."""
    order = {s: i for i, (s, _) in enumerate(STRATA)}
    frame = table.dropna(subset=["auc"])
    sets = list(dict.fromkeys(frame["test_set"]))
    prefix = frame["test_set"] + " · " if len(sets) > 1 else ""
    frame = frame.assign(
        cases=lambda f: f["n_pos"].astype(str) + " cancers / " + f["n_neg"].astype(str) + " healthy",
        label=lambda f: prefix + f["stratum"] + "  " + f["n_pos"].astype(str) + "+ / "
        + f["n_neg"].astype(str) + "-",
        order=lambda f: f["test_set"].map(sets.index) * len(order) + f["stratum"].map(order))
    y = alt.Y("label:N", sort=alt.EncodingSortField("order"), title=None,
              axis=alt.Axis(labelLimit=0, labelExpr="split(datum.label, '  ')"))  # two lines
    x = alt.X("auc:Q", title="AUC (95% CI)", scale=alt.Scale(domain=[0, 1]))
    colour = alt.Color("model:N", scale=model_colours(list(dict.fromkeys(frame["model"]))),
                       legend=alt.Legend(orient="bottom", columns=1, labelLimit=0)
                       if frame["model"].nunique() > 1 else None)
    tips = [alt.Tooltip("test_set:N"), alt.Tooltip("model:N"), alt.Tooltip("stratum:N"),
            alt.Tooltip("auc:Q", format=".3f"), alt.Tooltip("ci_low:Q", format=".3f"),
            alt.Tooltip("ci_high:Q", format=".3f"), alt.Tooltip("cases:N"), alt.Tooltip("note:N")]
    base = alt.Chart(frame).encode(y=y, yOffset=alt.YOffset("model:N"), color=colour, tooltip=tips)
    whiskers = base.mark_rule(strokeWidth=2).encode(x=alt.X("ci_low:Q", title="AUC (95% CI)",
                                                            scale=alt.Scale(domain=[0, 1])), x2="ci_high:Q")
    points = base.mark_point(filled=True, size=90).encode(x=x)
    chance = alt.Chart().mark_rule(color="#999", strokeDash=[4, 4]).encode(x=alt.datum(0.5))
    return fit(alt.layer(chance, whiskers, points, data=frame).properties(
        height=alt.Step(20 * max(1, frame["model"].nunique())), title=title))


def score_vs_density(frame: pd.DataFrame, *, density_title: str, title: str = "") -> alt.Chart:
    """Model score (y) against density score (x), one point per case coloured by truth, with a
    least-squares line per group. ``frame``: `core.reports.density.density_scatter`."""
    frame = frame.assign(category=frame["density"].map(DENSITY_NAMES).astype(object).fillna("unknown"))
    x = alt.X("density_score:Q", title=density_title, scale=alt.Scale(zero=False))
    y = alt.Y("score:Q", title="model score", scale=alt.Scale(zero=False))
    colour = alt.Color("truth:N", scale=TRUTH_COLOURS, title=None, legend=alt.Legend(orient="top"))
    tips = [alt.Tooltip("case_id:N"), alt.Tooltip("truth:N"), alt.Tooltip("histology:N"),
            alt.Tooltip("category:N", title="density"), alt.Tooltip("density_score:Q", format=".3g"),
            alt.Tooltip("score:Q", format=".4g")]
    points = alt.Chart(frame).mark_circle(opacity=0.8, stroke="white", strokeWidth=0.5).encode(
        x=x, y=y, color=colour, size=alt.condition("datum.truth == 'cancer'", alt.value(90), alt.value(40)),
        tooltip=tips)
    layers = [points]
    if frame.groupby("truth")["density_score"].nunique().min() > 1:
        layers.append(alt.Chart(frame).transform_regression(
            "density_score", "score", groupby=["truth"]).mark_line(strokeDash=[6, 3]).encode(
            x=x, y=y, color=colour))
    return fit(alt.layer(*layers, title=title).properties(height=360))


def _reader_long(table: pd.DataFrame) -> pd.DataFrame:
    long = []
    for metric in ("sensitivity", "specificity"):
        part = table[["reader", "who", "role", "density", metric, f"{metric}_ci_low",
                      f"{metric}_ci_high"]].rename(columns={metric: "value", f"{metric}_ci_low": "low",
                                                            f"{metric}_ci_high": "high"})
        n = table["cancers" if metric == "sensitivity" else "healthy"]
        long.append(part.assign(metric=metric, n=n))
    frame = pd.concat(long, ignore_index=True).replace([np.inf, -np.inf], np.nan).dropna(subset=["value"])
    frame["category"] = frame["density"].map(SHORT_NAMES)
    frame["density"] = frame["density"].map(_TINY)
    return frame


def _reader_layers(legend: alt.Legend):
    x = alt.X("density:N", sort=list(_TINY.values()), title="density category",
              axis=alt.Axis(labelAngle=0))
    y = alt.Y("value:Q", title=None, scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"))
    colour = alt.Color("role:N", scale=ROLE_COLOURS, title=None,
                       legend=legend)
    tips = [alt.Tooltip("who:N"), alt.Tooltip("category:N", title="density"), alt.Tooltip("metric:N"),
            alt.Tooltip("value:Q", format=".1%"), alt.Tooltip("low:Q", format=".1%"),
            alt.Tooltip("high:Q", format=".1%"), alt.Tooltip("n:Q", title="cases")]
    base = alt.Chart().encode(x=x, xOffset=alt.XOffset("role:N", sort=["reader", "model"]),
                              color=colour, tooltip=tips)
    return [base.mark_rule(strokeWidth=2).encode(y=alt.Y("low:Q", title=None), y2="high:Q"),
            base.mark_point(filled=True, size=80).encode(y=y)]


def _role_legend(orient: str) -> alt.Legend:
    return alt.Legend(orient=orient, labelLimit=0, columns=1 if orient == "bottom" else alt.Undefined,
                      labelExpr="datum.label == 'model' ? 'model at the reader\\'s specificity' : 'reader'")


def reader_chart(table: pd.DataFrame, *, title: str = "") -> alt.Chart:
    """Sensitivity and specificity (Wilson 95 % CIs) per density category, reader beside model;
    one row of panels per reader, at a fixed size (the download; the page shows
    `reader_panels`). ``table``: `core.reports.density.reader_by_density`."""
    frame = _reader_long(table)
    layered = alt.layer(*_reader_layers(_role_legend("top")), data=frame).properties(
        width=210, height=200)
    rows = alt.Row("reader:N", title=None) if frame["reader"].nunique() > 1 else alt.Undefined
    return layered.facet(column=alt.Column("metric:N", title=None, sort=["sensitivity", "specificity"]),
                         row=rows, title=title)


def reader_panels(table: pd.DataFrame) -> list[alt.Chart]:
    """`reader_chart`'s panels as separate charts, each as wide as its container: sensitivity
    and specificity per reader (titled "reader: metric"), the legend below each."""
    frame = _reader_long(table)
    panels = []
    for reader in dict.fromkeys(frame["reader"]):
        for metric in ("sensitivity", "specificity"):
            part = frame[(frame["reader"] == reader) & (frame["metric"] == metric)]
            if part.empty:
                continue
            name = metric if frame["reader"].nunique() == 1 else f"{reader}: {metric}"
            panels.append(fit(alt.layer(*_reader_layers(_role_legend("bottom")), data=part)
                              .properties(height=200, title=name)))
    return panels
