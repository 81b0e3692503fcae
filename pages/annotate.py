"""Annotate: draw a tumour's outline on an image, see the study's Algorithm 3 fill it, save it as
a new annotation version (old ones are kept), browse and compare the versions. Strokes map
back to full-resolution pixels through the canvas's background fit (`ui.canvas`);
`python -m core annotate fill` runs the same Algorithm 3 on a drawing file."""
import numpy as np
import pandas as pd
import streamlit as st
from streamlit_drawable_canvas import st_canvas

from core.annotations import (STUDY_SIZES_PX, annotation_versions, fill_drawing, load_annotation,
                              save_annotation)
from core.errors import InputError
from core.io.images import read_pixels
from core.saliency import dice_at_thresholds
from core.store import Store
from ui import (cached, download_popover, read_only_notice, require_test_set, show_input_error,
                store)
from ui.canvas import (DRAW_COLOUR, ERASER_COLOUR, background_picture, default_window,
                       drawing_mask, plan_view, windowed)
from ui.charts.saliency import annotation_preview, display_step, png_bytes, versions_overlay

CANVAS_WIDTH = 560
TOOLS = {"Free draw": ("freedraw", DRAW_COLOUR), "Polygon": ("polygon", DRAW_COLOUR),
         "Ellipse": ("circle", DRAW_COLOUR), "Eraser": ("freedraw", ERASER_COLOUR)}


@st.cache_resource(show_spinner="Reading the image…", max_entries=4)
def _pixels(path: str) -> np.ndarray:   # never mutated
    return read_pixels(path)


@st.cache_data(show_spinner="Filling the drawing (Algorithm 3)…", max_entries=16)
def _filled(drawing: np.ndarray, spacing_mm, sizes: tuple, in_mm: bool):
    return fill_drawing(drawing, spacing_mm=spacing_mm,
                        **({"sizes_mm": sizes} if in_mm else {"sizes_px": sizes}))


def _default_sizes(in_mm: bool, spacing_mm: float | None) -> tuple[float, ...]:
    """The study's 50, 75, 100 pixels; in millimetres, those pixels at this image's spacing."""
    return tuple(float(round(p * spacing_mm, 2)) if in_mm else float(p) for p in STUDY_SIZES_PX)


st.title("Annotate tumours")
st.caption("Draw the tumour's outline roughly; the study's Algorithm 3 closes and fills it "
           "(dilation then erosion with an ellipse of 50, then 75, then 100 pixels; the convex "
           "hull if it never closes). Each save is a new version; nothing is overwritten.")
locked = read_only_notice("Drawing and saving annotations")
test_set = require_test_set()
images = cached(Store.images, test_set=test_set)
images = images[images["abs_path"].notna()]
truth = cached(Store.cases, test_set=test_set, level="image").set_index("image_id")
if images.empty:
    st.info("No image of this test set has pixels to draw on.", icon=":material/info:")
    st.stop()
images = images.assign(histology=images["image_id"].map(truth["histology"]).fillna("unknown"))
pick, only = st.columns([4, 1.3], vertical_alignment="bottom")
if only.toggle("Cancers only", True, key="annotate_cancers"):
    cancers = images[images["histology"].isin(["ILC", "IDC", "other"])]
    images = cancers if not cancers.empty else images
label = {r.image_id: f"{r.image_id} · {r.histology} · {r.laterality}-{r.view}"
         for r in images.itertuples()}
image_id = pick.selectbox("Image", list(label), format_func=label.get, key="annotate_image")
row = images.set_index("image_id").loc[image_id]
pixels = _pixels(row["abs_path"])
spacing = None if pd.isna(row["spacing_mm"]) else float(row["spacing_mm"])

low, high = default_window(pixels)
w_col, z_col, p_col = st.columns([2, 1, 2])
window = w_col.slider("Window (grey values shown black to white)", float(pixels.min()),
                      float(pixels.max()), (low, high), key=f"annotate_window_{image_id}",
                      help="Window/level for 12- and 16-bit images")
zoom = z_col.select_slider("Zoom", [1, 1.5, 2, 3, 4, 6, 8], 1, key="annotate_zoom")
with p_col:
    across = st.slider("Centre across (%)", 0, 100, 50, key="annotate_across", disabled=zoom == 1)
    down = st.slider("Centre down (%)", 0, 100, 50, key="annotate_down", disabled=zoom == 1)
view = plan_view(pixels.shape, zoom=zoom, centre=(down / 100, across / 100))
grey = windowed(pixels, *window)

# Strokes from another view (zoom, pan) are kept as a full-resolution drawing: the canvas
# is remounted empty for each view, and what it held is folded in first.
state = st.session_state.setdefault("annotate_drawn", {"base": {}, "pending": None})
pending = state["pending"]
if pending and (pending["image_id"], pending["view"]) != (image_id, view):
    state["base"][pending["image_id"]] = drawing_mask(
        pending["json"], pending["fit"], pending["view"], pending["shape"],
        base=state["base"].get(pending["image_id"]))
    state["pending"] = None
base = state["base"].get(image_id)

tool_col, width_col, clear_col = st.columns([3, 2, 1], vertical_alignment="bottom")
tool = tool_col.segmented_control("Tool", list(TOOLS), default="Free draw",
                                  key="annotate_tool") or "Free draw"
stroke = width_col.slider("Stroke width (screen px)", 1, 30, 3, key="annotate_stroke")
nonce = st.session_state.setdefault("annotate_nonce", 0)
if clear_col.button("Clear", icon=":material/delete:", key="annotate_clear", disabled=locked):
    state["base"].pop(image_id, None)
    state["pending"], st.session_state["annotate_nonce"] = None, nonce + 1
    st.rerun()

canvas_col, preview_col = st.columns(2, gap="medium")
with canvas_col:
    mode, colour = TOOLS[tool]
    result = st_canvas(
        fill_color="rgba(0, 0, 0, 0)", stroke_width=stroke, stroke_color=colour,
        background_image=background_picture(grey, view), background_image_fit="contain",
        width=CANVAS_WIDTH, height=round(CANVAS_WIDTH * view.natural[0] / view.natural[1]),
        drawing_mode=mode, disabled=locked, key=f"annotate_canvas_{image_id}_{view}_{nonce}")
    st.caption("Polygon: click the first point again to close it. Undo, redo, edit (move, "
               "delete) and reset are on the canvas's toolbar; the eraser erases any stroke.")
try:
    drawing = drawing_mask(result.json_data, result.background_fit, view, pixels.shape,
                           base=base)
except InputError as exc:
    show_input_error(exc)
    st.stop()
objects = (result.json_data or {}).get("objects")
if objects:
    state["pending"] = {"image_id": image_id, "view": view, "json": result.json_data,
                        "fit": result.background_fit, "shape": pixels.shape}
elif objects is not None and pending and (pending["image_id"], pending["view"]) == (image_id, view):
    state["pending"] = None     # all undone or reset on the canvas: nothing left to fold in

with st.expander("Algorithm 3 element sizes"):
    in_mm = st.toggle("In millimetres", key="annotate_in_mm", disabled=spacing is None,
                      help="Sizes in mm carry from one scanner to another (via pixel spacing)")
    sizes = tuple(float(c.number_input(f"Step {i + 1}", min_value=1.0, value=v, format="%g",
                                       key=f"annotate_size_{i}_{in_mm}"))
                  for i, (c, v) in enumerate(zip(st.columns(3), _default_sizes(in_mm, spacing))))
r0, c0, h, w = view.crop
step = display_step((h, w))
shown = (slice(r0, r0 + h, step), slice(c0, c0 + w, step))
filled = None
with preview_col:
    if drawing.any():
        try:
            filled = _filled(drawing, spacing, sizes, in_mm)
        except InputError as exc:
            show_input_error(exc)
            st.stop()
        how = ("convex hull (never closed)" if filled.hull_used
               else f"closed at step {filled.step} ({filled.size_px:g} px)")
        st.image(annotation_preview(grey[shown], drawing[shown], filled.mask[shown]),
                 caption=f"Segmentation: {how}, {int(filled.mask.sum()):,} pixels",
                 width="stretch")
    else:
        st.image(grey[shown], caption="Draw on the left; the filled segmentation shows here.",
                 width="stretch")

author_col, note_col, save_col = st.columns([2, 3, 1.3], vertical_alignment="bottom")
author = author_col.text_input("Author", key="annotate_author", disabled=locked)
note = note_col.text_input("Note (optional)", key="annotate_note", disabled=locked)
if save_col.button("Save as new version", type="primary", icon=":material/save:",
                   key="annotate_save", disabled=locked or filled is None):
    try:
        version = save_annotation(store(), image_id, filled.mask, author=author, source="drawn",
                                  note=note or None)
    except InputError as exc:
        show_input_error(exc)
    else:
        state["base"].pop(image_id, None)
        state["pending"], st.session_state["annotate_nonce"] = None, nonce + 1
        st.toast(f"Saved version {version} of {image_id}", icon=":material/check:")
        st.rerun()

st.subheader("Versions")
versions = cached(annotation_versions, image_id)
if versions.empty:
    st.info("No saved version of this image yet.", icon=":material/info:")
    st.stop()
st.dataframe(versions.drop(columns=["mask_path"]), hide_index=True, key="annotate_versions")
download_popover("annotation_versions", "annotate_versions", frame=versions,
                 context=dict(image=image_id))
numbers = versions["version"].tolist()
a_col, b_col = st.columns(2)
a = a_col.selectbox("Version", numbers, index=len(numbers) - 1, key=f"annotate_a_{image_id}_{len(numbers)}")  # a new version: shown first
b = b_col.selectbox("Compare with", [None, *numbers], key=f"annotate_b_{image_id}_{len(numbers)}",
                    format_func=lambda v: "—" if v is None else str(v))
mask_a = load_annotation(store(), image_id, a)
mask_b = None if b is None else load_annotation(store(), image_id, b)
step = display_step(pixels.shape)
picture = versions_overlay(grey[::step, ::step], mask_a[::step, ::step],
                           None if mask_b is None else mask_b[::step, ::step])
caption = f"Version {a} (green)"
if mask_b is not None:
    dice = dice_at_thresholds(mask_a.astype(np.float32), mask_b, [0.5])[0]
    caption += f" against version {b} (magenta): Dice {dice:.3f}"
st.image(picture, caption=caption, width=CANVAS_WIDTH)
download_popover("annotation", "annotate_png", picture=png_bytes(picture),
                 context=dict(image=image_id, version=a, compare=b))
