"""Annotate: draw a tumour's outline on an image, see the study's Algorithm 3 fill it, save it as
a new annotation version (old ones are kept), browse and compare the versions. The canvas is
sized to its column (`ui.column_width`, `ui.canvas.canvas_size`); strokes map back to
full-resolution pixels through its background fit (`ui.canvas`); `ui.annotate` holds the
page's parts. `python -m core annotate fill` runs the same Algorithm 3 on a drawing file."""
import streamlit as st
from streamlit_drawable_canvas import st_canvas

from core.annotations import save_annotation
from core.store import Store
from ui import cached, input_errors, read_only_notice, require_test_set, store
from ui.annotate import Drawing, element_sizes, preview, spacing_of, versions_section
from ui.canvas import (DRAW_COLOUR, ERASER_COLOUR, background_picture, canvas_size,
                       default_window, plan_view, windowed)
from ui.column_width import column_width
from ui.images import image_pixels
from ui.text import md_escape

TOOLS = {"Free draw": ("freedraw", DRAW_COLOUR), "Polygon": ("polygon", DRAW_COLOUR),
         "Ellipse": ("circle", DRAW_COLOUR), "Eraser": ("freedraw", ERASER_COLOUR)}
ZOOMS = [1, 1.5, 2, 3, 4, 6, 8]

st.title("Annotate tumours")
st.caption("Draw the tumour's outline roughly; the study's Algorithm 3 closes and fills it "
           "(dilation then erosion with an ellipse of 50, then 75, then 100 of the study's "
           "pixels, scaled to this image's pixel spacing; the convex hull if it never closes). "
           "Each save is a new version; nothing is overwritten.")
locked = read_only_notice("Drawing and saving annotations")
test_set = require_test_set()
images = cached(Store.images, test_set=test_set)
images = images[images["abs_path"].notna()]
if images.empty:
    st.info("No image of this test set has pixels to draw on: import images (PNG, DICOM or "
            "mini-MIAS) on the Import page.", icon=":material/info:")
    st.stop()
truth = cached(Store.cases, test_set=test_set, level="image").set_index("image_id")
images = images.assign(histology=images["image_id"].map(truth["histology"]).fillna("unknown"),
                       cancer=images["image_id"].map(truth["label"]) == 1)
pick, only = st.columns([4, 1.3], vertical_alignment="bottom")
if only.toggle("Cancers only", True, key="annotate_cancers", bind="query-params"):
    cancers = images[images["cancer"]]
    if cancers.empty:
        st.caption(":material/info: No image of this test set is labelled a cancer; all shown.")
    images = cancers if not cancers.empty else images
label = {r.image_id: f"{r.image_id} · {r.histology} · {r.laterality}-{r.view}"
         for r in images.itertuples()}
image_id = pick.selectbox("Image", list(label), format_func=label.get, key="annotate_image",
                          bind="query-params")
row = images.set_index("image_id").loc[image_id]
with input_errors():
    pixels = image_pixels(row["abs_path"])
spacing = spacing_of(row)

low, high = default_window(pixels)
w_col, z_col, p_col = st.columns([2, 1, 2])
window = w_col.slider("Window (grey values shown black to white)", float(pixels.min()),
                      float(pixels.max()), (low, high), key=f"annotate_window_{image_id}",
                      bind="query-params", help="Window/level for 12- and 16-bit images")
zoom = z_col.select_slider("Zoom", ZOOMS, 1, key="annotate_zoom", bind="query-params")
with p_col:
    across = st.slider("Centre across (%)", 0, 100, 50, key="annotate_across",
                       bind="query-params", disabled=zoom == 1)
    down = st.slider("Centre down (%)", 0, 100, 50, key="annotate_down", bind="query-params",
                     disabled=zoom == 1)
view = plan_view(pixels.shape, zoom=zoom, centre=(down / 100, across / 100))
grey = windowed(pixels, *window)

tool_col, width_col, clear_col = st.columns([3, 2, 1], vertical_alignment="bottom")
tool = tool_col.segmented_control("Tool", list(TOOLS), default="Free draw", key="annotate_tool",
                                  bind="query-params") or "Free draw"
stroke = width_col.slider("Stroke width (screen px)", 1, 30, 3, key="annotate_stroke",
                          bind="query-params")
canvas_col, preview_col = st.columns(2, gap="medium")
with canvas_col:
    width, height = canvas_size(column_width("annotate_column"), view.natural)
    drawn = Drawing(image_id, view, width)
    if clear_col.button("Clear", icon=":material/delete:", key="annotate_clear", disabled=locked):
        drawn.clear()
        st.rerun()
    mode, colour = TOOLS[tool]
    result = st_canvas(
        fill_color="rgba(0, 0, 0, 0)", stroke_width=stroke, stroke_color=colour,
        background_image=background_picture(grey, view), background_image_fit="contain",
        width=width, height=height, drawing_mode=mode, disabled=locked, key=drawn.key)
    st.caption("Polygon: click the first point again to close it. Undo, redo, edit (move, "
               "delete) and reset are on the canvas's toolbar; the eraser erases any stroke.")
drawing = drawn.mask(result, pixels.shape)
sizes = element_sizes(spacing)
with preview_col:
    filled = preview(grey, drawing, view, spacing, sizes)

author_col, note_col, save_col = st.columns([2, 3, 1.3], vertical_alignment="bottom")
author = author_col.text_input("Author", key="annotate_author", bind="query-params",
                               disabled=locked)
note = note_col.text_input("Note (optional)", key="annotate_note", bind="query-params",
                           disabled=locked)
if save_col.button("Save as new version", type="primary", icon=":material/save:",
                   key="annotate_save", disabled=locked or filled is None):
    with input_errors(stop=False):
        version = save_annotation(store(), image_id, filled.mask, author=author,
                                  source="drawn", note=note or None)
        drawn.clear()
        st.toast(f"Saved version {version} of {md_escape(image_id)}", icon=":material/check:")
        st.rerun()
versions_section(image_id, grey)
