"""Benchmark charts: ROC curves with operating points, a DeLong p-value heatmap and score
histograms by histology. Pure: frames from `core.reports.benchmark` in, an ``alt.Chart`` out."""
from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd

from core.reports.benchmark import GROUPS
from ui.charts import HISTOLOGY_COLOURS, fit, model_colours

_HIST = dict(zip(HISTOLOGY_COLOURS.domain, HISTOLOGY_COLOURS.range))
GROUP_COLOURS = alt.Scale(domain=list(GROUPS),
                          range=["#8a8a8a", _HIST["ILC"], _HIST["IDC"], _HIST["other"]])
P_BANDS = ("p < 0.001", "p < 0.01", "p < 0.05", "p ≥ 0.05")
P_COLOURS = alt.Scale(domain=list(P_BANDS), range=["#3f007d", "#6a51a3", "#b4afd6", "#dedede"])


def _finite(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """±inf (the ROC's 'nothing positive' threshold) as NaN: JSON has no infinity."""
    return frame.assign(**{column: frame[column].replace([np.inf, -np.inf], np.nan)})


def roc_chart(roc: pd.DataFrame, points: pd.DataFrame | None, *, models: Sequence[str],
              title: str = "") -> alt.Chart:
    """ROC curves (hover: threshold, sensitivity, specificity) with the operating points.

    ``roc``: `core.reports.benchmark.roc_points`; ``points``: `sensitivity_at_specificity` or None
    (rows without a finite threshold are skipped). Dashed rules mark the target specificities.
    """
    roc = _finite(roc, "threshold")
    x = alt.X("fpr:Q", title="1 − specificity", scale=alt.Scale(domain=[0, 1]))
    y = alt.Y("tpr:Q", title="sensitivity", scale=alt.Scale(domain=[0, 1]))
    colour = alt.Color("model:N", scale=model_colours(models),
                       legend=alt.Legend(orient="bottom-right"))
    tips = [alt.Tooltip("model:N"), alt.Tooltip("threshold:Q", format=".4g"),
            alt.Tooltip("sensitivity:Q", format=".3f"), alt.Tooltip("specificity:Q", format=".3f")]
    hover = alt.selection_point(on="pointerover", nearest=True, empty=False,
                                fields=["model", "fpr", "tpr"])
    diagonal = alt.Chart(pd.DataFrame({"fpr": [0, 1], "tpr": [0, 1]})).mark_line(
        color="#bbbbbb", strokeDash=[4, 4]).encode(x=x, y=y)
    curves = alt.Chart(roc).mark_line(interpolate="linear", strokeWidth=2).encode(
        x=x, y=y, color=colour, order="fpr:Q")
    hits = alt.Chart(roc).mark_point(size=60, filled=True).encode(
        x=x, y=y, color=colour, tooltip=tips,
        opacity=alt.condition(hover, alt.value(1), alt.value(0))).add_params(hover)
    layers = [diagonal, curves, hits]
    if points is not None:
        points = points[np.isfinite(points["threshold"].astype(float))]
    if points is not None and not points.empty:
        points = points.assign(fpr=1 - points["specificity"], tpr=points["sensitivity"],
                               target=(100 * points["target_specificity"]).round(1))
        targets = points.drop_duplicates("target").sort_values("target", ascending=False)
        targets = targets.assign(rule=[f"{t:g} % specificity ({100 - t:g} % FPR)"
                                       for t in targets["target"]])
        rules = alt.Chart(targets).mark_rule(color="#999999").encode(
            x=alt.X("rule_x:Q"), tooltip=[alt.Tooltip("target:Q", title="target specificity %")],
            strokeDash=alt.StrokeDash("rule:N", sort=list(targets["rule"]), scale=alt.Scale(
                domain=list(targets["rule"]), range=[[2, 3]] * len(targets)),
                legend=alt.Legend(title="dotted: target ◆ model's point", orient="bottom",
                                  labelLimit=260, symbolStrokeColor="#999999"))
        ).transform_calculate(rule_x="1 - datum.target / 100")
        marks = alt.Chart(points).mark_point(shape="diamond", size=140, filled=True,
                                             stroke="white", strokeWidth=1).encode(
            x=x, y=y, color=colour, tooltip=[
                alt.Tooltip("model:N"), alt.Tooltip("target:Q", title="target specificity %"),
                alt.Tooltip("threshold:Q", format=".4g"),
                alt.Tooltip("sensitivity:Q", format=".3f"),
                alt.Tooltip("specificity:Q", format=".3f")])
        layers = [diagonal, rules, curves, marks, hits]
    return fit(alt.layer(*layers, title=title).properties(height=420))


def pvalue_heatmap(pairs: pd.DataFrame, *, column: str = "p", title: str = "") -> alt.Chart:
    """Models x models (`core.reports.benchmark.pairwise_tests`), coloured by the paired DeLong
    p-value (``column``: 'p' or 'p_holm'); each cell shows it, the diagonal each AUC."""
    aucs = dict(zip(pairs["model_a"], pairs["auc_a"])) | dict(zip(pairs["model_b"], pairs["auc_b"]))
    flipped = pairs.rename(columns={"model_a": "model_b", "model_b": "model_a",
                                    "auc_a": "auc_b", "auc_b": "auc_a"}).assign(
        diff=-pairs["diff"], z=-pairs["z"])
    cells = pd.concat([pairs, flipped], ignore_index=True)
    cells = cells.assign(
        band=pd.cut(cells[column], [-1, 0.001, 0.01, 0.05, 2], right=False,
                    labels=list(P_BANDS)).astype(str),
        label=cells[column].map(lambda p: "p n/a" if np.isnan(p) else "p < 0.001" if p < 0.001
                                else f"p = {p:.3f}"))
    diagonal = pd.DataFrame({"model_a": list(aucs), "model_b": list(aucs),
                             "label": [f"AUC {a:.3f}" for a in aucs.values()]})
    order = list(aucs)
    x = alt.X("model_b:N", title=None, sort=order, axis=alt.Axis(labelAngle=-30))
    y = alt.Y("model_a:N", title=None, sort=order)
    tips = [alt.Tooltip("model_a:N", title="model"), alt.Tooltip("model_b:N", title="vs"),
            alt.Tooltip("diff:Q", format="+.3f", title="AUC difference"),
            alt.Tooltip("z:Q", format=".2f"), alt.Tooltip("p:Q", format=".4f"),
            alt.Tooltip("p_holm:Q", format=".4f", title="p (Holm)")]
    legend = alt.Legend(title="Holm-adjusted" if column == "p_holm" else "unadjusted",
                        orient="bottom", direction="horizontal", columns=2)
    rect = alt.Chart(cells).mark_rect(stroke="white").encode(
        x=x, y=y, color=alt.Color("band:N", scale=P_COLOURS, legend=legend), tooltip=tips)
    dark = alt.FieldOneOfPredicate(field="band", oneOf=list(P_BANDS[:2]))
    text = alt.Chart(cells).mark_text(fontSize=12).encode(
        x=x, y=y, text="label:N", tooltip=tips,
        color=alt.condition(dark, alt.value("white"), alt.value("#222222")))
    diag = alt.Chart(diagonal).mark_rect(color="#fafafa", stroke="white").encode(x=x, y=y)
    diag_text = alt.Chart(diagonal).mark_text(fontSize=12, fontStyle="italic",
                                              color="#555555").encode(x=x, y=y, text="label:N")
    # Steps, not a total size: Streamlit's theme shrinks a discrete axis given only a height.
    return alt.layer(rect, text, diag, diag_text, title=title).properties(
        width=alt.Step(84), height=alt.Step(56))


def _histogram_layers(hist: pd.DataFrame, y: str, legend: alt.Legend):
    hist = hist.assign(mid=(hist["bin_start"] + hist["bin_end"]) / 2)
    y_title = "share of the group's cases" if y == "share" else "cases"
    enc = dict(x=alt.X("mid:Q", title="score"), y=alt.Y(f"{y}:Q", title=y_title, stack=None),
               color=alt.Color("group:N", scale=GROUP_COLOURS, title=None,
                               legend=legend),
               tooltip=[alt.Tooltip("group:N"), alt.Tooltip("bin_start:Q", format=".3g"),
                        alt.Tooltip("bin_end:Q", format=".3g"), alt.Tooltip("count:Q"),
                        alt.Tooltip("share:Q", format=".1%"), alt.Tooltip("n_group:Q")])
    area = alt.Chart().mark_area(interpolate="step", opacity=0.18).encode(**enc)
    line = alt.Chart().mark_line(interpolate="step", strokeWidth=1.8).encode(**enc)
    return alt.layer(area, line, data=hist)


def score_histograms(hist: pd.DataFrame, *, y: str = "share", columns: int = 3,
                     title: str = "") -> alt.Chart:
    """Per model (facet), the score distribution of healthy, ILC, IDC and other cases as
    step outlines over a light fill (the study's figure 6.6 d-f), at a fixed size (the
    download; the page shows `score_histogram_panels`). ``y``: 'share' or 'count'."""
    legend = alt.Legend(orient="top", symbolOpacity=1)
    return _histogram_layers(hist, y, legend).properties(width=250, height=210).facet(
        facet=alt.Facet("model:N", title=None), columns=columns, title=title
    ).resolve_scale(x="independent")


def score_histogram_panels(hist: pd.DataFrame, *, y: str = "share") -> list[alt.Chart]:
    """`score_histograms`' panels as separate charts, one per model (titled by it), each as
    wide as its container: side by side on a wide screen, stacked on a narrow one instead of
    one model visible and the rest out of reach (issue 29)."""
    legend = alt.Legend(orient="bottom", columns=2, symbolOpacity=1, labelLimit=0)
    return [fit(_histogram_layers(part, y, legend).properties(height=210, title=str(model)))
            for model, part in hist.groupby("model", sort=False)]
