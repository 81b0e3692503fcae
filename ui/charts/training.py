"""Fine-tuning charts: loss per epoch, training beside validation, one line per learning rate
(the study's figure 6.7). Pure: `core.reports.training.loss_curves` in, an ``alt.Chart`` out."""
from __future__ import annotations

import math

import altair as alt
import pandas as pd

from core.reports.training import SPLITS
from ui.charts import fit


def loss_chart(curves: pd.DataFrame, *, title: str = "") -> alt.Chart:
    """Loss against epoch, a panel per split (training, validation), a colour per run (its
    learning rate, ordered by rate) and a row per mode when runs of several modes are shown.
    The diamond marks each run's best epoch by validation loss: the checkpoint it keeps."""
    runs = curves.drop_duplicates("run").sort_values("lr", kind="stable")["run"].tolist()
    colour = alt.Color("run:N", title="learning rate", sort=runs,
                       scale=alt.Scale(scheme="viridis"), legend=alt.Legend(orient="right"))
    tips = [alt.Tooltip("run:N", title="learning rate"), alt.Tooltip("mode:N"),
            alt.Tooltip("epoch:Q"), alt.Tooltip("split:N"), alt.Tooltip("loss:Q", format=".4f"),
            alt.Tooltip("val_auc:Q", title="validation AUC", format=".3f"),
            alt.Tooltip("run_id:N")]
    base = alt.Chart().encode(
        x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1, format="d")),
        y=alt.Y("loss:Q", scale=alt.Scale(zero=False)), color=colour, detail="run_id:N",
        tooltip=tips)
    lines = base.mark_line(point=alt.OverlayMarkDef(size=25))
    best = base.transform_filter(alt.datum.best).mark_point(
        shape="diamond", size=140, filled=True, stroke="black", strokeWidth=0.8)
    facet = {"column": alt.Column("split:N", sort=list(SPLITS), title=None)}
    if curves["mode"].nunique() > 1:
        facet["row"] = alt.Row("mode:N", title=None)
    return alt.layer(lines, best, data=curves).properties(width=340, height=240).facet(
        **facet, title=title).resolve_scale(y="independent")


def loss_panels(curves: pd.DataFrame) -> list[alt.Chart]:
    """`loss_chart`'s panels as separate charts, each as wide as its container (the page sets
    them side by side, stacked on a narrow screen): one per split, titled by it. Runs of
    several modes differ by dash (``mode`` in the legend) instead of a row per mode. The
    learning-rate legend sits below, so that it takes no width from the curves."""
    runs = curves.drop_duplicates("run").sort_values("lr", kind="stable")["run"].tolist()
    colour = alt.Color("run:N", title="learning rate", sort=runs,
                       scale=alt.Scale(scheme="viridis"),
                       legend=alt.Legend(orient="bottom", columns=3, labelLimit=0))
    tips = [alt.Tooltip("run:N", title="learning rate"), alt.Tooltip("mode:N"),
            alt.Tooltip("epoch:Q"), alt.Tooltip("split:N"), alt.Tooltip("loss:Q", format=".4f"),
            alt.Tooltip("val_auc:Q", title="validation AUC", format=".3f"),
            alt.Tooltip("run_id:N")]
    dash = ({"strokeDash": alt.StrokeDash("mode:N", legend=alt.Legend(orient="bottom"))}
            if curves["mode"].nunique() > 1 else {})
    panels = []
    for split in SPLITS:
        part = curves[curves["split"] == split]
        if part.empty:
            continue
        base = alt.Chart(part).encode(
            x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y("loss:Q", scale=alt.Scale(zero=False)), color=colour, detail="run_id:N",
            tooltip=tips)
        best = base.transform_filter(alt.datum.best).mark_point(
            shape="diamond", size=140, filled=True, stroke="black", strokeWidth=0.8)
        panels.append(fit(alt.layer(base.mark_line(point=alt.OverlayMarkDef(size=25)).encode(
            **dash), best).properties(height=240, title=split)))
    return panels


def duration(seconds: float) -> str:
    """Seconds as people read an ETA: '45 s', '12 min', '3 h 05 min'; '' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
