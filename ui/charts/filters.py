"""Filters page charts and pictures: AUC boxplots (figure 6.5), region histograms (6.3), pixel
ROC curves (6.4) and the image panels (6.1, 6.2). Pure: frames from `core.reports.filters` (or
arrays) in, an ``alt.Chart`` (or RGB arrays with captions) out."""
from __future__ import annotations

from collections.abc import Mapping

import altair as alt
import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from core.reports.filters import ImageDetail
from core.image.filters import METHODS
from core.io.pixels import to_display
from ui.charts import HISTOLOGY_COLOURS, fit

METHOD_ORDER = list(METHODS)
# what the axis says: the code and a short name (the full name and summary are on the page)
METHOD_LABELS = {"original": "original", "M1": "M1 CLAHE", "M2": "M2 hist. equal.",
                 "M3": "M3 global thresh.", "M4": "M4 local thresh.", "M5": "M5 Sobel",
                 "M6": "M6 unsharp mask", "M7": "M7 wavelet"}
REGION_COLOURS = {"tumour": "#d62728", "healthy": "#17becf"}   # outlines and histograms alike
FULL = (slice(None), slice(None))
_REGIONS = alt.Scale(domain=list(REGION_COLOURS), range=list(REGION_COLOURS.values()))


def auc_boxplot(results: pd.DataFrame, *, facet: bool = False, title: str = "") -> alt.Chart:
    """Per-image AUC per method: boxes by histology, means as diamonds, a 0.5 reference line.

    ``results``: `core.reports.filters.stored_results`. ``facet``: one panel per histology
    (ILC beside IDC) instead of side-by-side coloured boxes.
    """
    present = [h for h in HISTOLOGY_COLOURS.domain if h in set(results["histology"])]
    colours = dict(zip(HISTOLOGY_COLOURS.domain, HISTOLOGY_COLOURS.range))
    colour = alt.Color("histology:N", title="histology", scale=alt.Scale(
        domain=present, range=[colours[h] for h in present]))
    results = results.assign(label=results["method"].map(lambda m: METHOD_LABELS.get(m, m)))
    order = [METHOD_LABELS.get(m, m) for m in METHOD_ORDER]
    x = alt.X("label:N", sort=order, title="method",
              axis=alt.Axis(labelAngle=-40, labelLimit=140, labelAlign="right",
                            labelOverlap=False))
    y = alt.Y("auc:Q", title="per-image AUC, tumour vs healthy pixels",
              scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(titleLimit=400))
    offset = {} if facet else {"xOffset": alt.XOffset("histology:N")}
    base = alt.Chart(results)
    boxes = base.mark_boxplot(extent=1.5, size=22 if facet else 14, opacity=0.85,
                              median={"color": "white", "strokeWidth": 2},
                              outliers={"size": 14}).encode(x=x, y=y, color=colour, **offset)
    means = base.mark_point(shape="diamond", filled=True, size=70, color="black",
                            stroke="white", strokeWidth=1).encode(
        x=x, y=alt.Y("mean(auc):Q"), detail="histology:N", **offset,
        tooltip=[alt.Tooltip("label:N", title="method"), alt.Tooltip("histology:N"),
                 alt.Tooltip("mean(auc):Q", title="mean AUC", format=".3f"),
                 alt.Tooltip("median(auc):Q", title="median AUC", format=".3f"),
                 alt.Tooltip("count(auc):Q", title="images")])
    chance = base.mark_rule(color="#777777", strokeDash=[5, 4]).encode(y=alt.datum(0.5))
    layered = alt.layer(chance, boxes, means)
    if facet:
        # every panel keeps its own axes: a reader of the IDC panel needs the labels too
        return layered.properties(width=alt.Step(44), height=340).facet(
            column=alt.Column("histology:N", title=None, sort=present,
                              header=alt.Header(labelFontSize=13, labelFontWeight="bold")),
            title=title).resolve_axis(x="independent", y="independent")
    return layered.properties(height=380, title=title)


def region_histograms(frame: pd.DataFrame, *, columns: int = 4) -> alt.Chart:
    """Pixel histograms of tumour and healthy region after each method (overlaid, shared bins).

    ``frame``: `core.reports.filters.region_histograms` (share of each region's pixels per bin).
    """
    return _region_bars(frame, alt.Legend(orient="top")).properties(width=150, height=110).facet(
        facet=alt.Facet("method:N", sort=METHOD_ORDER, title=None), columns=columns
    ).resolve_scale(x="independent", y="independent")


def region_histogram_panels(frame: pd.DataFrame) -> list[alt.Chart]:
    """`region_histograms`' panels as separate charts, one per method (titled with its short
    name), each as wide as its container: four to a row on a wide screen, stacked on a narrow
    one (the facet ran off a 390 or 800 px window)."""
    legend = alt.Legend(orient="bottom")
    present = [m for m in METHOD_ORDER if m in set(frame["method"])]
    return [fit(_region_bars(frame[frame["method"] == m], legend).properties(
        height=110, title=METHOD_LABELS.get(m, m))) for m in present]


def _region_bars(frame: pd.DataFrame, legend: alt.Legend) -> alt.Chart:
    return alt.Chart(frame).mark_bar(opacity=0.55, binSpacing=0).encode(
        x=alt.X("bin_start:Q", title="value after processing", axis=alt.Axis(tickCount=4),
                scale=alt.Scale(zero=False, nice=False)),
        x2="bin_end:Q",
        y=alt.Y("share:Q", title="share of region", stack=None, axis=alt.Axis(format="%")),
        y2=alt.datum(0),
        color=alt.Color("region:N", scale=_REGIONS, title=None, legend=legend),
        tooltip=["method:N", "region:N", alt.Tooltip("bin_start:Q", format=".3g"),
                 alt.Tooltip("bin_end:Q", format=".3g"), alt.Tooltip("share:Q", format=".1%"),
                 alt.Tooltip("n:Q", title="pixels")])


def pixel_roc(frame: pd.DataFrame, *, title: str = "") -> alt.Chart:
    """ROC of tumour (positive) vs healthy pixels per method; the legend carries each AUC.

    ``frame``: `core.reports.filters.region_roc`.
    """
    frame = frame.assign(curve=[f"{m}  AUC {a:.3f}" for m, a in zip(frame["method"],
                                                                     frame["auc"])])
    curves = list(dict.fromkeys(frame.sort_values(
        "method", key=lambda s: s.map(METHOD_ORDER.index))["curve"]))
    x = alt.X("fpr:Q", title="healthy pixels above threshold (FPR)",
              scale=alt.Scale(domain=[0, 1]))
    y = alt.Y("tpr:Q", title="tumour pixels above threshold (TPR)", scale=alt.Scale(domain=[0, 1]))
    diagonal = alt.Chart(pd.DataFrame({"fpr": [0, 1], "tpr": [0, 1]})).mark_line(
        color="#bbbbbb", strokeDash=[4, 4]).encode(x=x, y=y)
    lines = alt.Chart(frame).mark_line(strokeWidth=2).encode(
        x=x, y=y, order="fpr:Q",
        color=alt.Color("curve:N", sort=curves, title=None, scale=alt.Scale(scheme="tableau10"),
                        legend=alt.Legend(orient="bottom", columns=2, labelFontSize=12,
                                          labelLimit=0)),
        tooltip=["method:N", alt.Tooltip("auc:Q", format=".3f")])
    return fit(alt.layer(diagonal, lines, title=title).properties(height=360))


# --- image panels -----------------------------------------------------------------------------


def display_copy(image: np.ndarray) -> np.ndarray:
    """8-bit copy for the screen: masks (M3, M4) as black/white, the rest windowed."""
    image = np.asarray(image)
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    return to_display(image)


def outline_overlay(image: np.ndarray, outlines: list[tuple[np.ndarray, str]], *,
                    width: int = 2) -> np.ndarray:
    """RGB copy of a (windowed) image with each mask's outline drawn in its hex colour."""
    grey = display_copy(image)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for mask, colour in outlines:
        edge = mask & ~ndi.binary_erosion(mask, iterations=width, border_value=0)
        rgb[edge] = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    return rgb


def zoom_box(mask: np.ndarray, *, margin: float = 1.0, min_px: int = 48) -> tuple[slice, slice]:
    """Rows and columns around a mask: its bounding box grown by ``margin`` x its size each
    side (at least ``min_px``), clipped to the image."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return slice(None), slice(None)
    out = []
    for idx, size in ((rows, mask.shape[0]), (cols, mask.shape[1])):
        grow = max(int(margin * (idx[-1] - idx[0] + 1)), min_px)
        out.append(slice(max(int(idx[0]) - grow, 0), min(int(idx[-1]) + 1 + grow, size)))
    return out[0], out[1]


def processed_panels(detail: ImageDetail, methods, aucs: Mapping[str, float],
                     box: tuple[slice, slice]) -> list[tuple[np.ndarray, str]]:
    """(picture, caption) per method: the processed tumour image, cropped to ``box``."""
    return [(display_copy(detail.processed[m][box]),
             f"{m} · {METHODS[m].name} · AUC {aucs.get(m, float('nan')):.3f}") for m in methods]


def subband_panels(bands: Mapping[str, np.ndarray], level: int, scale: int,
                   box: tuple[slice, slice]) -> list[tuple[np.ndarray, str]]:
    """LL and the LH/HL/HH detail subbands at ``scale`` of a ``level``-level wavelet transform
    (``bands``: `core.image.filters.wavelet_subbands`), as magnitudes, cropped to ``box``
    scaled to each subband's resolution."""
    names = ["LL", f"LH{scale}", f"HL{scale}", f"HH{scale}"]
    return [(display_copy(np.abs(bands[n])[scale_box(box, 2 ** (level if n == "LL"
                                                                 else scale))]),
             n if n == "LL" else f"{n} (|coefficient|)") for n in names]


def region_panels(detail: ImageDetail, *, zoom: bool) -> list[tuple[np.ndarray, str]]:
    """Figure 6.2: tumour outline (red) and healthy outline (cyan), on one image for a ring,
    on the tumour's and the contralateral image when mirrored."""
    red, cyan = REGION_COLOURS["tumour"], REGION_COLOURS["healthy"]
    if detail.other_pixels is None:
        box = zoom_box(detail.tumour | detail.healthy.mask) if zoom else FULL
        return [(outline_overlay(detail.pixels, [(detail.tumour, red),
                                                 (detail.healthy.mask, cyan)])[box],
                 detail.image_id)]
    return [(outline_overlay(detail.pixels, [(detail.tumour, red)])[
                zoom_box(detail.tumour) if zoom else FULL], detail.image_id),
            (outline_overlay(detail.other_pixels, [(detail.healthy.mask, cyan)])[
                zoom_box(detail.healthy.mask) if zoom else FULL],
             f"{detail.other_image_id} (contralateral)")]


def scale_box(box: tuple[slice, slice], factor: int) -> tuple[slice, slice]:
    """A zoom box on an image downsampled by ``factor`` (a wavelet subband)."""
    return tuple(slice(None if s.start is None else s.start // factor,
                       None if s.stop is None else -(-s.stop // factor)) for s in box)
