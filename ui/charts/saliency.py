"""Saliency and Annotate pictures and charts. Pure: arrays and frames in, RGB arrays or
``alt.Chart`` out.

Pictures: a mammogram with a saliency map as a heatmap (the study's figure 6.12), the
segmentation contour and GMIC's patch boxes; an annotation preview (drawing and filled
segmentation over the image). Charts: Dice against threshold per image, the distribution of
best Dice (figure 6.13) and hit rates with their Wilson intervals.
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from skimage.segmentation import find_boundaries

from ui.charts import HISTOLOGY_COLOURS, model_colours

__all__ = ["CONTOUR_COLOUR", "annotation_preview", "best_dice_distribution", "dice_curve",
           "display_step", "gallery_order", "heat_colours", "hit_rate_chart", "png_bytes",
           "saliency_overlay", "versions_overlay"]

CONTOUR_COLOUR = (0, 230, 118)       # the segmentation's contour: green on grey and on heat
OTHER_COLOUR = (255, 64, 255)        # a second version's contour
BOX_COLOUR = (255, 255, 255)
# a perceptual dark-to-bright ramp (anchors of matplotlib's "inferno"), so a higher value is
# always brighter, also in greyscale print
_HEAT = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
                  [245, 125, 21], [250, 193, 39], [252, 255, 164]], np.float32)


def display_step(shape: Sequence[int], max_side: int = 900) -> int:
    """The whole-number stride that shows an image of ``shape`` at most ``max_side`` pixels
    on its longer side (1: full resolution)."""
    return max(1, math.ceil(max(int(shape[0]), int(shape[1])) / max_side))


def heat_colours(values: np.ndarray) -> np.ndarray:
    """RGB (float32, 0..255) of values in [0, 1] (clipped) on the heat ramp; shape + (3,)."""
    v = np.clip(np.asarray(values, np.float32), 0, 1) * (len(_HEAT) - 1)
    low = np.minimum(np.floor(v).astype(np.int64), len(_HEAT) - 2)
    frac = (v - low)[..., None]
    return _HEAT[low] * (1 - frac) + _HEAT[low + 1] * frac


def saliency_overlay(grey: np.ndarray, saliency: np.ndarray | None, *, opacity: float = 0.5,
                     threshold: float = 0.0, mask: np.ndarray | None = None,
                     boxes: np.ndarray | None = None,
                     box_labels: Sequence[str] | None = None) -> np.ndarray:
    """A mammogram with a saliency heatmap, the segmentation contour and patch boxes.

    Parameters
    ----------
    grey : uint8 array of shape (H, W), the windowed image.
    saliency : float array of shape (H, W) in [0, 1], or None. Pixels at or above
        ``threshold`` are blended with their heat colour at ``opacity`` (0 = invisible).
    mask : bool array of shape (H, W) or None: its inner boundary is drawn in
        `CONTOUR_COLOUR`.
    boxes : array of shape (K, 4) or None: [row, col, height, width] in these pixels (edges).
    box_labels : K short labels written at the boxes' top-left corners (attention weights).

    Returns
    -------
    uint8 array of shape (H, W, 3)
    """
    rgb = np.repeat(np.asarray(grey, np.float32)[..., None], 3, axis=2)
    if saliency is not None:
        sal = np.asarray(saliency, np.float32)
        alpha = np.where(sal >= threshold, float(opacity), 0.0)[..., None]
        rgb = rgb * (1 - alpha) + heat_colours(sal) * alpha
    rgb = rgb.round().astype(np.uint8)
    if mask is not None and np.any(mask):
        rgb[find_boundaries(np.asarray(mask, bool), mode="inner")] = CONTOUR_COLOUR
    if boxes is not None and len(boxes):
        picture = Image.fromarray(rgb)
        draw = ImageDraw.Draw(picture)
        for i, (row, col, height, width) in enumerate(np.asarray(boxes, np.float64)):
            draw.rectangle([col, row, col + width - 1, row + height - 1], outline=BOX_COLOUR,
                           width=2)
            if box_labels is not None:
                draw.text((col + 3, row + 2), box_labels[i], fill=BOX_COLOUR)
        rgb = np.asarray(picture)
    return rgb


def patch_labels(boxes, attention) -> list[str] | None:
    """Each patch box's label: its number and attention weight ("2: 0.41"), or the number
    alone when the file predates stored weights."""
    if boxes is None:
        return None
    if attention is None:
        return [f"{i + 1}" for i in range(len(boxes))]
    return [f"{i + 1}: {w:.2f}" for i, w in enumerate(attention)]


def annotation_preview(grey: np.ndarray, drawing: np.ndarray | None,
                       filled: np.ndarray | None, *, opacity: float = 0.35) -> np.ndarray:
    """The image with a filled segmentation tinted (and its contour) and the drawing in red:
    what Algorithm 3 made of the strokes. All arrays of one shape (H, W); uint8 (H, W, 3) out."""
    rgb = np.repeat(np.asarray(grey, np.float32)[..., None], 3, axis=2)
    if filled is not None and np.any(filled):
        tint = np.asarray(filled, bool)
        rgb[tint] = rgb[tint] * (1 - opacity) + np.array(CONTOUR_COLOUR, np.float32) * opacity
    rgb = rgb.round().astype(np.uint8)
    if filled is not None and np.any(filled):
        rgb[find_boundaries(np.asarray(filled, bool), mode="inner")] = CONTOUR_COLOUR
    if drawing is not None:
        rgb[np.asarray(drawing, bool)] = (255, 59, 48)
    return rgb


def versions_overlay(grey: np.ndarray, mask: np.ndarray, other: np.ndarray | None = None
                     ) -> np.ndarray:
    """The image with one annotation version's contour (green) and optionally another's
    (magenta, drawn over): two versions compared. Arrays of one shape (H, W); uint8 RGB out."""
    rgb = np.repeat(np.asarray(grey, np.uint8)[..., None], 3, axis=2)
    for m, colour in ((mask, CONTOUR_COLOUR), (other, OTHER_COLOUR)):
        if m is not None:
            rgb[find_boundaries(np.asarray(m, bool), mode="inner")] = colour
    return rgb


def png_bytes(rgb: np.ndarray) -> bytes:
    """A picture (uint8 grey or RGB) as PNG bytes, for a download button."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(rgb, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


# --- charts ----------------------------------------------------------------------------------


def dice_curve(curves: pd.DataFrame, *, threshold: float | None = None,
               title: str = "") -> alt.Chart:
    """Dice against threshold per model, each model's best point ringed; a rule at the
    page's current ``threshold``.

    ``curves``: columns model, threshold, dice (one row per model and threshold).
    """
    colour = alt.Color("model:N", title=None, legend=alt.Legend(orient="top"),
                       scale=model_colours(list(dict.fromkeys(curves["model"]))))
    x = alt.X("threshold:Q", title="threshold on the map", scale=alt.Scale(domain=[0, 1]))
    y = alt.Y("dice:Q", title="Dice with the segmentation", scale=alt.Scale(domain=[0, 1]))
    tips = ["model:N", alt.Tooltip("threshold:Q", format=".2f"),
            alt.Tooltip("dice:Q", format=".3f")]
    lines = alt.Chart(curves).mark_line(point=True).encode(x=x, y=y, color=colour, tooltip=tips)
    curves = curves.reset_index(drop=True)   # idxmax labels must name one row each
    best = curves.loc[curves.groupby("model")["dice"].idxmax()]
    rings = alt.Chart(best).mark_point(size=160, shape="circle", strokeWidth=2).encode(
        x=x, y=y, color=colour, tooltip=tips)
    layers = [lines, rings]
    if threshold is not None:
        layers.append(alt.Chart(pd.DataFrame({"threshold": [threshold]})).mark_rule(
            color="#777777", strokeDash=[4, 4]).encode(x="threshold:Q"))
    return alt.layer(*layers, title=title).properties(height=260)


def best_dice_distribution(per_image: pd.DataFrame, *, by: str = "model",
                           title: str = "") -> alt.Chart:
    """Histogram of best Dice per image (bins of 0.05, as the threshold sweep), one colour per
    value of ``by`` (model or histology), overlaid (figure 6.13).

    ``per_image``: `core.reports.saliency` rows (best_dice and the ``by`` column).
    """
    return alt.Chart(per_image, title=title).mark_bar(opacity=0.6, binSpacing=0).encode(
        x=alt.X("best_dice:Q", bin=alt.Bin(extent=[0, 1], step=0.05),
                title="best Dice over thresholds"),
        y=alt.Y("count():Q", title="images", stack=None),
        color=alt.Color(f"{by}:N", title=by, legend=alt.Legend(orient="top"),
                        scale=_colours(per_image, by)),
        tooltip=[f"{by}:N", alt.Tooltip("count():Q", title="images")],
    ).properties(height=260)


def hit_rate_chart(summary: pd.DataFrame, *, by: str = "model", title: str = "") -> alt.Chart:
    """Hit rate (the map's maximum inside the segmentation) per ``by`` with its Wilson
    interval as an error bar.

    ``summary``: columns ``by``, hit_rate, hit_ci_low, hit_ci_high, n_hits, n_images
    (`core.saliency.summarise_saliency`); an optional ``model`` column splits the bars.
    """
    offset = {"xOffset": alt.XOffset("model:N")} if by != "model" and "model" in summary else {}
    field = "model" if "model" in summary else by
    colour = alt.Color(f"{field}:N", title=None, legend=alt.Legend(orient="top"),
                       scale=_colours(summary, field))
    x = alt.X(f"{by}:N", title=None, axis=alt.Axis(labelAngle=0))
    base = alt.Chart(summary)
    bars = base.mark_bar(opacity=0.8).encode(
        x=x, y=alt.Y("hit_rate:Q", title="hit rate (pointing game)",
                     scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        color=colour, **offset,
        tooltip=[f"{by}:N", alt.Tooltip("hit_rate:Q", format=".1%"),
                 alt.Tooltip("hit_ci_low:Q", title="95% CI low", format=".1%"),
                 alt.Tooltip("hit_ci_high:Q", title="95% CI high", format=".1%"),
                 alt.Tooltip("n_hits:Q", title="hits"), alt.Tooltip("n_images:Q", title="images")])
    errors = base.mark_errorbar(ticks=True, color="#888888").encode(   # reads on light and dark
        x=x, y=alt.Y("hit_ci_low:Q", title=""), y2="hit_ci_high:Q", **offset)
    return alt.layer(bars, errors, title=title).properties(height=260)


def _colours(frame: pd.DataFrame, field: str):
    """Models in their own colours (`model_colours`); histologies in theirs."""
    if field == "model":
        return model_colours(list(dict.fromkeys(frame["model"])))
    return HISTOLOGY_COLOURS if field == "histology" else alt.Undefined


def gallery_order(per_image: pd.DataFrame, by: str) -> pd.DataFrame:
    """The gallery's order: ``by`` = 'dice' (best Dice, highest first) or 'hit' (hits, then
    misses; each by best Dice, highest first); ties keep the image_id order."""
    keys = {"dice": ["best_dice"], "hit": ["hit", "best_dice"]}[by]
    ordered = per_image.sort_values("image_id", kind="stable")
    return ordered.sort_values(keys, ascending=False, kind="stable").reset_index(drop=True)
