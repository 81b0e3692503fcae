"""Saliency: does a model's saliency map point at the tumour? One image with the map as a
heatmap, the segmentation's contour and the patch boxes, beside a second model (figure 6.12);
the test set as a gallery; Dice distributions and hit rates (figure 6.13). Every model whose
family leaves maps is listed (GMIC's CAM, GLAM's segmentation, the NYU patch heatmaps).
`python -m core report saliency` prints the same numbers; `ui.saliency` draws the parts."""

import numpy as np
import pandas as pd
import streamlit as st

from core.reports.saliency import saliency_report
from core.store import Store
from ui import cached, download_popover, input_errors, require_test_set
from ui.charts import saliency as charts
from ui.exam_view import exam_view
from ui.links import default_model
from ui.saliency import map_caption, picture, saliency_models, test_set_tab
from ui.text import md_code, md_escape

GALLERY_PAGE = 12

st.title("Saliency maps versus the tumour")
st.caption("Per annotated image: Dice of the thresholded map with the segmentation at "
           "thresholds 0, 0.05, …, 1 (the best kept), and a hit when the map's maximum lies "
           "inside it (the pointing game). The study: 37 % hits for the original GMIC, 58 % "
           "after fine-tuning.")
test_set = require_test_set()
models = cached(Store.models)
mapped = saliency_models(models)           # parents first: beside their child
if not mapped:
    st.info("No model that leaves saliency maps (GMIC, GLAM, NYU image + heatmaps) is in this "
            "store: run `python -m core predict` to write them.", icon=":material/info:")
    st.stop()
m_col, c_col, w_col, v_col = st.columns([2, 2, 1.6, 1.2])
first = default_model(mapped)   # ?model= from another page (Fine-tuning), else the headline model
model = m_col.selectbox("Model", mapped, key="saliency_model", bind="query-params",
                        index=mapped.index(first))
others = [m for m in mapped if m != model]
parent = models.set_index("model")["parent"].get(model)
kin = [m for m in models[models["parent"] == model]["model"] if m in others] + \
    ([parent] if parent in others else [])    # a parent beside its child, a child beside it
compare = c_col.selectbox("Compare with", [None, *others], key="saliency_compare",
                          bind="query-params", index=1 + others.index(kin[0]) if kin else 0,
                          format_func=lambda m: "—" if m is None else m)
which = w_col.segmented_control("Map", ["malignant", "benign"], default="malignant",
                                key="saliency_which", bind="query-params") or "malignant"
version = v_col.number_input("Annotation version", min_value=1, value=None, step=1,
                             key="saliency_version", bind="query-params", placeholder="newest",
                             help="Empty: each image's newest version")
with input_errors(), st.spinner("Scoring every annotated image's map…"):
    report = cached(saliency_report, test_set=test_set, model=model, compare=compare,
                    which=which, annotation_version=None if version is None else int(version))
shown_models = [model] if compare is None else [model, compare]
shapes = cached(Store.images, test_set=test_set).set_index("image_id")[["height", "width"]]
per_image = report.per_image
stem = "saliency"
# what every download of this view says about itself (file name and leading CSV columns)
context = dict(test_set=test_set, models=shown_models, map=which,
               annotation_version=None if version is None else int(version))

if not (per_image["model"] == model).any():   # no masks, or only the compared model has maps
    unannotated = report.skipped.get("no annotation", [])
    if len(unannotated) == len(shapes):
        st.info(f"No image of {md_code(test_set)} has a tumour outline to score the maps against: "
                "draw one on the Annotate page or import masks (`python -m core annotate "
                "import`).", icon=":material/info:")
    else:
        st.info(f"{md_escape(model)} has no saliency map on an annotated image of "
                f"{md_code(test_set)}: pick the "
                "model that has, or run `python -m core predict` for this one.",
                icon=":material/info:")
    st.stop()
# the open tab rides in the URL: the Overview's Saliency link opens "Test set", its numbers
one, gallery, aggregate = st.tabs(["One image", "Gallery", "Test set"], key="saliency_view",
                                  bind="query-params")
with one:
    first = per_image[per_image["model"] == model].sort_values("best_dice", ascending=False)
    label = {r.image_id: f"{r.image_id} · {r.histology}" for r in first.itertuples()}
    image_id = st.selectbox("Image (best Dice first)", list(label), format_func=label.get,
                            key="saliency_image", bind="query-params")
    o_col, t_col = st.columns(2)
    opacity = o_col.slider("Heatmap opacity", 0.0, 1.0, 0.5, 0.05, key="saliency_opacity",
                           bind="query-params")
    threshold = t_col.slider("Show the map from", 0.0, 1.0, 0.0, 0.05, key="saliency_threshold",
                             bind="query-params")
    rows = per_image[per_image["image_id"] == image_id]
    for column, row in zip(st.columns(len(shown_models)), rows.itertuples()):
        image = picture(row, tuple(shapes.loc[row.image_id]), which=which, opacity=opacity,
                        threshold=threshold, max_side=700)
        column.image(image, width="stretch", caption=map_caption(row))
        with column:
            download_popover(f"{stem}_map", f"saliency_png_{row.model}",
                             picture=charts.png_bytes(image),
                             context=dict(context, models=row.model, image=image_id))
    curves = pd.concat([pd.DataFrame({"model": r.model, "threshold": report.thresholds,
                                      "dice": report.dice_curves[i]})
                        for i, r in zip(np.flatnonzero(per_image["image_id"] == image_id),
                                        rows.itertuples())], ignore_index=True)
    curve = charts.dice_curve(curves, threshold=threshold,
                              title=f"Dice against threshold, {image_id}")
    st.altair_chart(curve, width="stretch")
    download_popover(f"{stem}_dice_curve", "saliency_curve", chart=curve, frame=curves,
                     context=dict(context, image=image_id))
    download_popover(f"{stem}_image_metrics", "saliency_row", frame=rows,
                     context=dict(context, image=image_id), label="Download metrics")
    with st.expander(f"Exam {md_escape(rows['exam_id'].iloc[0])}: all four views"):
        exam_view(rows["exam_id"].iloc[0], models=shown_models, key="saliency_exam")

with gallery:
    g_col, p_col = st.columns([2, 1])
    order = g_col.segmented_control("Sort by", ["dice", "hit"], default="dice",
                                    key="saliency_sort", bind="query-params", format_func={
                                        "dice": "Best Dice", "hit": "Hits, then misses"}.get)
    ordered = charts.gallery_order(per_image[per_image["model"] == model], order or "dice")
    pages = max(1, -(-len(ordered) // GALLERY_PAGE))
    page = p_col.number_input("Page", 1, pages, 1, key="saliency_page", bind="query-params") - 1
    tiles = ordered.iloc[page * GALLERY_PAGE:(page + 1) * GALLERY_PAGE]
    for start in range(0, len(tiles), 4):
        for column, row in zip(st.columns(4), tiles.iloc[start:start + 4].itertuples()):
            column.image(picture(row, tuple(shapes.loc[row.image_id]), which=which, opacity=0.5,
                                 threshold=0.0, max_side=240),
                         caption=f"{row.image_id} · Dice {row.best_dice:.2f} · "
                                 f"{'hit' if row.hit else 'miss'}", width="stretch")
    download_popover(f"{stem}_gallery", "saliency_gallery", frame=ordered,
                     context=dict(context, models=model, order=order))

with aggregate:
    test_set_tab(report, shown_models, context, stem)
