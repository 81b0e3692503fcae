"""The Saliency page's parts: which models have maps, one image's picture (map, contour, patch
boxes) and caption, and the test-set tab (summary, distributions, hit rates by histology, paired
tests). Numbers come from `core.reports.saliency.saliency_report`; pictures and charts from
`ui.charts.saliency`; which families leave maps from the registry (`models.families`)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core.annotations import load_annotation
from core.io.pixels import to_display
from core.reports.saliency import patch_boxes, saliency_files
from core.saliency import read_saliency
from models.families import FAMILIES
from ui.charts import saliency as charts
from ui.downloads import download_popover
from ui.images import image_pixels
from ui.session import data_token, store
from ui.text import md_escape

__all__ = ["map_caption", "picture", "saliency_models", "test_set_tab"]


def saliency_models(models: pd.DataFrame) -> list[str]:
    """The models whose family leaves saliency maps (`Family.saliency`), parents first (so a
    fine-tuned child opens beside its parent), else in the store's order."""
    kinds = {name for name, fam in FAMILIES.items() if fam.saliency is not None}
    names = models.loc[models["kind"].isin(kinds), "model"].tolist()
    parents = set(models["parent"].dropna())
    return sorted(names, key=lambda m: m not in parents)


def map_caption(row) -> str:
    """One per-image row of the report as the picture's caption; the patch part only for maps
    that come with patches (GMIC, GLAM; not the NYU heatmaps)."""
    text = (f"{row.model}: best Dice {row.best_dice:.3f} at {row.best_threshold:.2f}; "
            f"{'hit' if row.hit else 'miss'} ({row.distance_px:.0f} px away); relevance mass "
            f"{row.relevance_mass:.2f}")
    if pd.isna(row.n_patches_hit):
        return text
    text += f"; patches on the tumour: {row.n_patches_hit}"
    return text + ("" if pd.isna(row.patch_attention) else
                   f", attention on them {row.patch_attention:.2f}")


@st.cache_data(show_spinner="Reading the image, its map and its annotation…", max_entries=64)
def _layers(db: str, token: tuple, model: str, image_id: str, which: str, version: int,
            step: int):
    """Display-size grey image, map, mask, patch boxes (pixels / ``step``) and their attention
    weights (None in format 1 files) of one image."""
    s = store()
    image = s.image(image_id)
    entry = saliency_files(s, model, [image_id]).iloc[0]
    stored = read_saliency(s.files_dir / entry["saliency_path"])
    saliency = stored.to_original(which)
    mask = load_annotation(s, image_id, version)
    boxes = patch_boxes(stored, entry["patch_boxes"])
    shown = (slice(None, None, step), slice(None, None, step))
    return (to_display(image_pixels(image["abs_path"]))[shown], saliency[shown], mask[shown],
            None if boxes is None else boxes / step, stored.patch_attention)


def picture(row, shape: tuple[int, int], *, which: str, opacity: float, threshold: float,
            max_side: int) -> np.ndarray:
    """One per-image row's picture (its model's map, its annotation version) at most
    ``max_side`` pixels on its longer side; ``shape`` is the image's (rows, cols)."""
    step = charts.display_step(shape, max_side)
    grey, saliency, mask, boxes, attention = _layers(
        str(store().path), data_token(), row.model, row.image_id, which,
        int(row.annotation_version), step)
    labels = charts.patch_labels(boxes, attention)
    return charts.saliency_overlay(grey, saliency, opacity=opacity, threshold=threshold,
                                   mask=mask, boxes=boxes, box_labels=labels)


def test_set_tab(report, models: list[str], context: dict, stem: str = "saliency") -> None:
    """The whole test set: summary, best-Dice distribution, hit rates overall and by
    histology, the paired tests of two models, per-image metrics; each with its download."""
    per_image = report.per_image
    summary = pd.DataFrame([{"model": m, **report.summary[m]} for m in models])
    st.dataframe(summary, hide_index=True, key="saliency_summary")
    download_popover(f"{stem}_summary", "saliency_summary", frame=summary, context=context)
    d_col, h_col = st.columns(2)
    for column, chart, name in (
            (d_col, charts.best_dice_distribution(per_image, title="Best Dice per image"),
             "dice_distribution"),
            (h_col, charts.hit_rate_chart(summary, title="Hit rate, 95 % Wilson CI"),
             "hit_rate")):
        column.altair_chart(chart, width="stretch")
        with column:
            download_popover(f"{stem}_{name}", f"saliency_{name}", chart=chart, context=context)
    st.markdown("**By histology**")
    by_histology = report.by_histology
    chart = charts.hit_rate_chart(by_histology, by="histology", title="Hit rate by histology")
    st.altair_chart(chart, width="stretch")
    download_popover(f"{stem}_by_histology", "saliency_histology", chart=chart,
                     frame=by_histology, context=context)
    st.dataframe(by_histology, hide_index=True, key="saliency_by_histology")
    if report.paired is not None:
        st.markdown(f"**{md_escape(models[0])} against {md_escape(models[-1])}** on the "
                    f"{report.paired['n_images']} images both scored: McNemar on hits, "
                    "Wilcoxon signed-rank on best Dice")
        paired = pd.DataFrame([{"test": k, **v} for k, v in report.paired.items()
                               if isinstance(v, dict)])
        st.dataframe(paired, hide_index=True, key="saliency_paired")
        download_popover(f"{stem}_paired", "saliency_paired", frame=paired, context=context)
    if report.skipped:
        st.caption("Left out: " + "; ".join(f"{len(ids)} {md_escape(reason)}"
                                             for reason, ids in report.skipped.items()))
    with st.expander("Per-image metrics"):
        st.dataframe(per_image, hide_index=True, key="saliency_per_image")
        download_popover(f"{stem}_per_image", "saliency_per_image", frame=per_image,
                         context=context)
