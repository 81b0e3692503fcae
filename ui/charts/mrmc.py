"""Reader-study charts: each reader's AUC across modalities (a slope chart), ROC curves per
reader and modality, and a model's AUC beside the readers'. Pure: frames from
`core.reports.mrmc` in, an ``alt.Chart`` out."""
from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import pandas as pd

from ui.charts import fit, model_colours

MEAN = "readers' mean"
MEAN_COLOUR = "#222222"


def reader_colours(readers: Sequence[str]) -> alt.Scale:
    """One colour per reader, the same on every page (`ui.charts.model_colours`)."""
    return model_colours(readers)


def slope_chart(reader_auc: pd.DataFrame, *, modalities: Sequence[str],
                title: str = "") -> alt.Chart:
    """Each reader's AUC in each modality, joined by a line (one line per reader), and the
    readers' mean as a thick black line.

    ``reader_auc``: long, one row per (reader, modality) with ``auc`` (`MRMCReport.reader_auc`).
    ``modalities`` fixes the left-to-right order (unaided first, as the study reads).
    """
    order = list(modalities)
    readers = list(dict.fromkeys(reader_auc["reader"]))
    x = alt.X("modality:N", title=None, sort=order, scale=alt.Scale(domain=order, padding=0.3),
              axis=alt.Axis(labelAngle=0, labelLimit=200))
    y = alt.Y("auc:Q", title="AUC", scale=alt.Scale(zero=False, nice=True))
    tips = [alt.Tooltip("reader:N"), alt.Tooltip("modality:N"),
            alt.Tooltip("auc:Q", format=".3f")]
    colour = alt.Color("reader:N", scale=reader_colours(readers),
                       legend=alt.Legend(orient="bottom", title="reader", columns=2, labelLimit=0))
    lines = alt.Chart(reader_auc).mark_line(point=alt.OverlayMarkDef(size=60, filled=True),
                                            strokeWidth=1.8, opacity=0.85).encode(
        x=x, y=y, color=colour, detail="reader:N", tooltip=tips)
    mean = (reader_auc.groupby("modality", sort=False)["auc"].mean().reindex(order)
            .rename_axis("modality").reset_index().assign(reader=MEAN))
    mean_line = alt.Chart(mean).mark_line(
        color=MEAN_COLOUR, strokeWidth=4, point=alt.OverlayMarkDef(size=120, filled=True,
                                                                   color=MEAN_COLOUR)).encode(
        x=x, y=y, tooltip=tips)
    return fit(alt.layer(lines, mean_line).properties(height=360, title=alt.TitleParams(
        title or "Each reader's AUC by modality",
        subtitle=["One line per reader; black: the readers' mean."], anchor="start")))


def roc_chart(roc: pd.DataFrame, *, readers: Sequence[str], modalities: Sequence[str],
              title: str = "") -> alt.Chart:
    """Empirical ROC curves, colour = reader, one panel per modality (side by side), at a
    fixed size (the download; the page shows `roc_panels`).

    ``roc``: long, reader, modality, fpr, tpr, threshold (`MRMCReport.roc`), each curve's
    points in order from (0, 0) to (1, 1); the chance line is dashed.
    """
    roc = roc.assign(threshold=roc["threshold"].where(roc["threshold"].abs() < float("inf")),
                     order=roc.groupby(["reader", "modality"]).cumcount())
    x = alt.X("fpr:Q", title="1 − specificity", scale=alt.Scale(domain=[0, 1]))
    y = alt.Y("tpr:Q", title="sensitivity", scale=alt.Scale(domain=[0, 1]))
    colour = alt.Color("reader:N", scale=reader_colours(readers),
                       legend=alt.Legend(orient="bottom", title="reader", columns=2, labelLimit=0))
    tips = [alt.Tooltip("reader:N"), alt.Tooltip("modality:N"),
            alt.Tooltip("threshold:Q", format=".4g"),
            alt.Tooltip("tpr:Q", format=".3f", title="sensitivity"),
            alt.Tooltip("fpr:Q", format=".3f", title="1 − specificity")]
    chance = alt.Chart(pd.DataFrame({"fpr": [0, 1], "tpr": [0, 1]})).mark_line(
        color="#bbbbbb", strokeDash=[4, 4]).encode(x=x, y=y)
    panels = [alt.layer(chance, alt.Chart(roc[roc["modality"] == m]).mark_line(
        strokeWidth=1.8).encode(x=x, y=y, order="order:Q", color=colour, tooltip=tips)
    ).properties(width=300, height=300, title=m) for m in modalities]
    return alt.hconcat(*panels, title=alt.TitleParams(title or "ROC curves per reader",
                                                      anchor="start"))


def roc_panels(roc: pd.DataFrame, *, readers: Sequence[str],
               modalities: Sequence[str]) -> list[alt.Chart]:
    """`roc_chart`'s panels as separate charts, one per modality, each as wide as its container
    (side by side on a wide screen, stacked on a narrow one), the reader legend below each."""
    chart = roc_chart(roc, readers=readers, modalities=modalities)
    return [fit(panel) for panel in chart.hconcat]


def model_vs_readers_chart(reader_auc: pd.DataFrame, *, model: str, model_auc: float,
                           readers_mean: float, title: str = "") -> alt.Chart:
    """The readers' AUCs as dots, their mean and the model's AUC as rules.

    ``reader_auc``: reader, auc (`ModelVsReadersResult.tables()['reader_auc']`).
    """
    readers = reader_auc["reader"].tolist()
    x = alt.X("auc:Q", title="AUC", scale=alt.Scale(zero=False, nice=True))
    dots = alt.Chart(reader_auc).mark_circle(size=140, opacity=0.9).encode(
        x=x, y=alt.Y("reader:N", title=None, sort=readers),
        color=alt.Color("reader:N", scale=reader_colours(readers), legend=None),
        tooltip=["reader:N", alt.Tooltip("auc:Q", format=".3f")])
    marks = pd.DataFrame({"what": [f"model: {model}", MEAN], "auc": [model_auc, readers_mean]})
    rules = alt.Chart(marks).mark_rule(strokeWidth=3).encode(
        x=x, color=alt.Color("what:N", title=None, legend=alt.Legend(orient="bottom"),
                             scale=alt.Scale(domain=marks["what"].tolist(),
                                             range=["#c0392b", MEAN_COLOUR])),
        tooltip=["what:N", alt.Tooltip("auc:Q", format=".3f")])
    return fit(alt.layer(dots, rules).resolve_scale(color="independent").properties(
        height=alt.Step(30), title=title or f"{model} against the readers"))
