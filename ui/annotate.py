"""The Annotate page's parts: the drawing kept across views, Algorithm 3's element sizes and
preview, and the saved versions. The canvas itself (`streamlit_drawable_canvas`) is mounted by
the page; its geometry is `ui.canvas`.

Strokes from another view (zoom, pan, canvas width) are kept as a full-resolution drawing: the
canvas is remounted empty for each view, and what it held is folded in first (`Drawing`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from core.annotations import (STUDY_SIZES_PX, STUDY_SPACING_MM, annotation_versions,
                              fill_drawing, load_annotation, study_sizes_px)
from core.saliency import dice_at_thresholds
from ui.caching import cached
from ui.canvas import CanvasView, drawing_mask
from ui.charts.saliency import annotation_preview, display_step, png_bytes, versions_overlay
from ui.downloads import download_popover
from ui.errors import input_errors
from ui.session import store

__all__ = ["Drawing", "element_sizes", "preview", "sizes_note", "versions_section"]

_STATE = "annotate_drawn"
_NONCE = "annotate_nonce"


@dataclass(frozen=True)
class Drawing:
    """The canvas of one image in one view: ``slot`` names it (image, view, canvas width)."""

    image_id: str
    view: CanvasView
    width: int

    @property
    def slot(self) -> tuple:
        return (self.image_id, self.view, self.width)

    @property
    def key(self) -> str:
        """The canvas's widget key: a new view, width or a Clear remounts it empty."""
        nonce = st.session_state.setdefault(_NONCE, 0)
        return f"annotate_canvas_{self.image_id}_{self.view}_{self.width}_{nonce}"

    def mask(self, result, shape) -> np.ndarray:
        """Fold a pending drawing of another view in, then add this canvas's strokes (bool,
        full resolution); remembers them as pending."""
        state = st.session_state.setdefault(_STATE, {"base": {}, "pending": None})
        pending = state["pending"]
        if pending and pending["slot"] != self.slot:
            state["base"][pending["slot"][0]] = drawing_mask(
                pending["json"], pending["fit"], pending["slot"][1], pending["shape"],
                base=state["base"].get(pending["slot"][0]))
            state["pending"] = pending = None
        with input_errors():
            drawing = drawing_mask(result.json_data, result.background_fit, self.view, shape,
                                   base=state["base"].get(self.image_id))
        objects = (result.json_data or {}).get("objects")
        if objects:
            state["pending"] = {"slot": self.slot, "json": result.json_data,
                                "fit": result.background_fit, "shape": tuple(shape)}
        elif objects is not None and pending:
            state["pending"] = None   # all undone or reset on the canvas: nothing to fold in
        return drawing

    def clear(self) -> None:
        """Forget this image's drawing and remount the canvas empty."""
        state = st.session_state.setdefault(_STATE, {"base": {}, "pending": None})
        state["base"].pop(self.image_id, None)
        state["pending"] = None
        st.session_state[_NONCE] = st.session_state.get(_NONCE, 0) + 1


def sizes_note(spacing_mm: float | None) -> str:
    """What the default element sizes are on this image, in words."""
    sizes = ", ".join(f"{s:.4g}" for s in study_sizes_px(spacing_mm))
    study = ", ".join(map(str, STUDY_SIZES_PX))
    if spacing_mm is None:
        return (f"This image stores no pixel spacing: the study's {study} px are used as "
                f"they are.")
    return (f"The study's {study} px (at {STUDY_SPACING_MM:g} mm per pixel; the thesis does "
            f"not state its spacing, so this is assumed) are scaled to this image's "
            f"{spacing_mm:g} mm pixels: {sizes} px.")


def element_sizes(spacing_mm: float | None) -> dict:
    """The expander of Algorithm 3's element sizes; returns `fill_drawing`'s size arguments
    (empty: the study's sizes scaled to this image)."""
    with st.expander("Algorithm 3 element sizes"):
        st.caption(sizes_note(spacing_mm))
        custom = st.toggle("Other sizes", key="annotate_custom_sizes", bind="query-params")
        if not custom:
            return {}
        unit = "px" if spacing_mm is None else "mm"
        study = [p if spacing_mm is None else p * STUDY_SPACING_MM for p in STUDY_SIZES_PX]
        values = tuple(float(c.number_input(f"Step {i + 1} ({unit})", min_value=0.1,
                                            value=float(v), format="%g",
                                            key=f"annotate_size_{unit}_{i}", bind="query-params"))
                       for i, (c, v) in enumerate(zip(st.columns(3), study)))
        return {"sizes_px" if spacing_mm is None else "sizes_mm": values}


@st.cache_data(show_spinner="Filling the drawing (Algorithm 3)…", max_entries=16)
def _filled(drawing: np.ndarray, spacing_mm: float | None, sizes: tuple):
    return fill_drawing(drawing, spacing_mm=spacing_mm, **dict(sizes))


def preview(grey: np.ndarray, drawing: np.ndarray, view: CanvasView,
            spacing_mm: float | None, sizes: dict):
    """The filled segmentation over the shown part of the image; returns the `FilledDrawing`
    (None before anything is drawn)."""
    r0, c0, h, w = view.crop
    step = display_step((h, w))
    shown = (slice(r0, r0 + h, step), slice(c0, c0 + w, step))
    if not drawing.any():
        st.image(grey[shown], caption="Draw on the canvas; the filled segmentation shows here.",
                 width="stretch")
        return None
    with input_errors():
        filled = _filled(drawing, spacing_mm, tuple(sizes.items()))
    st.image(annotation_preview(grey[shown], drawing[shown], filled.mask[shown]),
             caption=f"Segmentation: {filled.describe(spacing_mm)}, "
                     f"{int(filled.mask.sum()):,} pixels", width="stretch")
    return filled


def versions_section(image_id: str, grey: np.ndarray) -> None:
    """The image's saved versions: table, download, one version or two compared (Dice)."""
    st.subheader("Versions")
    versions = cached(annotation_versions, image_id)
    if versions.empty:
        st.info("No saved version of this image yet.", icon=":material/info:")
        return
    st.dataframe(versions.drop(columns=["mask_path"]), hide_index=True, key="annotate_versions")
    download_popover("annotation_versions", "annotate_versions", frame=versions,
                     context=dict(image=image_id))
    numbers = versions["version"].tolist()
    a_col, b_col = st.columns(2)
    stem = f"{image_id}_{len(numbers)}"   # a new version: a new key, so it is shown first
    a = a_col.selectbox("Version", numbers, index=len(numbers) - 1, key=f"annotate_a_{stem}",
                        bind="query-params")
    b = b_col.selectbox("Compare with", [None, *numbers], key=f"annotate_b_{stem}",
                        bind="query-params", format_func=lambda v: "—" if v is None else str(v))
    mask_a = load_annotation(store(), image_id, a)
    mask_b = None if b is None else load_annotation(store(), image_id, b)
    step = display_step(grey.shape)
    picture = versions_overlay(grey[::step, ::step], mask_a[::step, ::step],
                               None if mask_b is None else mask_b[::step, ::step])
    caption = f"Version {a} (green)"
    if mask_b is not None:
        dice = dice_at_thresholds(mask_a.astype(np.float32), mask_b, [0.5])[0]
        caption += f" against version {b} (magenta): Dice {dice:.3f}"
    st.image(picture, caption=caption, width="stretch")
    download_popover("annotation", "annotate_png", picture=png_bytes(picture),
                     context=dict(image=image_id, version=a, compare=b))


def spacing_of(row: pd.Series) -> float | None:
    """The image row's pixel spacing in mm, None where it stores none."""
    return None if pd.isna(row["spacing_mm"]) else float(row["spacing_mm"])
