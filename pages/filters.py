"""Filters: can conventional image processing make ILC more visible? Per-image AUC of tumour vs
healthy pixels for each method (boxplots, figure 6.5), and one image's processed versions,
regions, histograms and pixel ROC curves (figures 6.1-6.4). `python -m core filters run`
computes and prints the same numbers."""
import json
import shlex

import streamlit as st

from core.image.filters import METHODS, resolve_params, wavelet_subbands
from core.reports import filters as fr
from ui import (data_token, download_popover, input_errors, read_only_notice,
                require_test_set, settings)
from ui import filters as view
from ui import jobs
from ui.charts import filters as charts
from ui.layout import chart_grid
from ui.text import md_code, md_escape

st.title("Filters")
st.caption("Does a filter make the tumour stand out? Per annotated cancer image and method: AUC "
           "of tumour vs healthy pixel values (0.5 = no separation). Healthy tissue: the mirror "
           "image on the other breast's same view, else a ring around the tumour. An AUC below "
           "0.5 means the tumour's pixels came out *darker* than the healthy tissue's: the "
           "method reversed the contrast (a separation in the other direction, not a better "
           "one).")
test_set = require_test_set()
left, mid, right = st.columns([4, 2, 2.4])
codes = [c for c in METHODS if c != "original"]
chosen = left.pills("Methods (beside the original)", codes, default=codes, key="filters_methods",
                    bind="query-params", selection_mode="multi",
                    format_func=charts.METHOD_LABELS.get,
                    help="\n".join(f"- {c}: {METHODS[c].name}" for c in codes))
histology = mid.segmented_control("Histology", ["All", "ILC", "IDC"], default="All",
                                  key="filters_histology", bind="query-params") or "All"
facet = right.segmented_control("Boxplots", ["colour", "facet"], default="colour",
                                key="filters_layout", bind="query-params", required=True,
                                format_func={
                                    "colour": "Colour by histology", "facet": "ILC | IDC"}.get)
with st.expander("Parameters and healthy region"):
    ring_col, width_col, lesion_col = st.columns(3)
    in_mm = ring_col.toggle("Ring width in mm", key="filters_ring_in_mm", bind="query-params",
                            help="The ring is used where no contralateral same-view image exists")
    ring = width_col.number_input(f"Ring width ({'mm' if in_mm else 'px'})", min_value=0.1,
                                  value=4.0 if in_mm else 20.0, format="%g",
                                  key=f"filters_ring_{'mm' if in_mm else 'px'}",
                                  bind="query-params")
    benign = lesion_col.toggle("Include benign findings", key="filters_benign",
                               bind="query-params")
    params = {c: {} for c in codes}
    for tab, code in zip(st.tabs(codes), codes):
        tab.caption(f"**{METHODS[code].name}.** {METHODS[code].summary}")
        for col, (name, default) in zip(tab.columns(len(METHODS[code].defaults)),
                                        METHODS[code].defaults.items()):
            with col:
                params[code][name] = view.param_input(code, name, default)
methods = ["original", *chosen]
scope = dict(test_set=test_set, methods=methods, params={m: params[m] for m in chosen},
             ring_px=20 if in_mm else int(ring), ring_mm=float(ring) if in_mm else None,
             malignant_only=not benign)
scope_json, db = json.dumps(scope, sort_keys=True), str(settings().db_path)

status, button = st.columns([4, 1], vertical_alignment="center")
locked = read_only_notice("Running the filter batch")
if button.button("Run", type="primary", icon=":material/play_arrow:", key="filters_run",
                 disabled=locked, width="stretch",
                 help="Compute what is not stored yet, in a background process: leaving the page "
                      "does not stop it"):
    jobs.start("filters", scope)
jobs.job_panel("filters", key="filters_job", what="Filter run", test_set=test_set)
with input_errors():
    images, n_pending, results = view.stored(db, data_token(), scope_json)
status.markdown(f"**{len(images) - n_pending} of {len(images)}** annotated images of "
                f"{md_code(test_set)} have stored results for these settings.")

shown = results if histology == "All" else results[results["histology"] == histology]
if shown.empty:
    st.info(f"No stored results for these settings ({histology}) yet: press Run, or "
            f"{md_code(f'python -m core filters run --test-set {shlex.quote(test_set)}')}.",
            icon=":material/info:")
else:
    chart_col, table_col = st.columns([3, 2], gap="large")
    box = charts.auc_boxplot(shown, facet=facet == "facet",
                             title="Per-image AUC per method (◆ mean, dashed line 0.5)")
    chart_col.altair_chart(box, width="content" if facet == "facet" else "stretch")
    context = dict(test_set=test_set, histology=histology,
                   lesions="with-benign" if benign else "cancers")
    # split by histology as the chart is, not pooled
    summary = fr.summarize(shown, by=["histology"])
    summary.insert(2, "label", summary["method"].map(charts.METHOD_LABELS))
    with chart_col:
        download_popover("filter_auc_boxplot", "filters_box", chart=box, frame=summary,
                         context=context)
    with table_col:
        view.summary_tables(summary, shown, benign=benign, context=context)

st.subheader("One image")
if images.empty:
    st.info("No annotated images here: draw or import tumour outlines first.",
            icon=":material/info:")
    st.stop()
pick_col, zoom_col = st.columns([4, 1], vertical_alignment="bottom")
label = {r.image_id: f"{r.image_id} · {r.histology} · {r.view}" for r in images.itertuples()}
image_id = pick_col.selectbox("Image", list(label), format_func=label.get, key="filters_image",
                              bind="query-params")
zoom = zoom_col.toggle("Zoom on the tumour", True, key="filters_zoom", bind="query-params")
stem = image_id.replace("/", "_")
with input_errors():
    detail, hist, roc = view.detail(db, data_token(), image_id, scope_json)
auc = roc.drop_duplicates("method").set_index("method")["auc"].to_dict()
box = charts.zoom_box(detail.tumour) if zoom else charts.FULL

st.markdown("**Original and every processed version**, cropped to the tumour when zoomed")
view.grid(charts.processed_panels(detail, methods, auc, box))
if "M7" in methods:
    m7 = resolve_params("M7", params["M7"])
    scale = st.select_slider("M7 wavelet subbands at scale (1 = finest)",
                             range(1, m7["level"] + 1), min(m7["detail_levels"] or [1]),
                             key="filters_subband_scale", bind="query-params")
    bands = wavelet_subbands(detail.pixels, m7["wavelet"], m7["level"])
    view.grid(charts.subband_panels(bands, m7["level"], scale, box))
regions_col, roc_col = st.columns(2, gap="large")
with regions_col:
    st.markdown("**Regions compared**: tumour red; healthy cyan, "
                f"*{md_escape(detail.healthy_label)}*")
    view.grid(charts.region_panels(detail, zoom=zoom), n=2)
with roc_col:
    roc_chart = charts.pixel_roc(roc, title="Tumour vs healthy pixels, ROC per method")
    st.altair_chart(roc_chart, width="stretch")
    download_popover("filter_roc", "filters_roc", chart=roc_chart, frame=roc,
                     context=dict(image=stem))
    st.caption("Curves from up to 4,000 pixels per region; AUCs from all pixels.")
st.markdown("**Pixel values after processing, tumour vs healthy**: the less the two "
            "histograms overlap, the better the method separates them")
hist_chart = charts.region_histograms(hist)
chart_grid(charts.region_histogram_panels(hist), per_row=4)   # the download: one figure
download_popover("filter_histograms", "filters_hist", chart=hist_chart, frame=hist,
                 context=dict(image=stem))
