"""Stored filter results, read back: the boxplot frame, the per-method table, one image's regions.

Why apart from the batch (`core.jobs.filters`): the Filters page and ``python -m core filters
run`` read these far more often than they compute, and the viewer (`image_detail`) re-runs
every method on one image only. `stored_results` and `summarize` turn the stored AUCs into the
boxplot frame and the per-method table (n images, mean and median AUC); `image_detail`,
`region_histograms` and `region_roc` draw figures 6.3 and 6.4 for one image.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.errors import InputError
from core.image.filters import METHODS, apply_method
from core.image.regions import ALL_METHODS, HealthyRegion, pixel_auc
from core.jobs.filters import (DEFAULT_RING_PX, check_settings, load_task, make_task,
                               select_images, shared_depth, stored_keys, wanted_keys)
from core.stats import roc_curve
from core.store import Store

__all__ = ["ImageDetail", "filter_summary", "image_detail", "region_histograms", "region_roc",
           "region_values", "stored_results", "summarize"]


def stored_results(store: Store, *, test_set: str, methods: Sequence[str] = ALL_METHODS,
                   params: Mapping[str, Mapping[str, Any]] | None = None,
                   ring_px: int = DEFAULT_RING_PX, ring_mm: float | None = None,
                   malignant_only: bool = True) -> pd.DataFrame:
    """Per-image AUCs stored for these settings and each image's latest annotation.

    Returns
    -------
    DataFrame, one row per (image, method) with a stored result: image_id, exam_id,
    laterality, view, histology, method, name, annotation_version, params_hash,
    healthy_region ('mirrored' or 'ring'), auc, n_tumour, n_healthy; methods in `METHODS`
    order. Images not computed yet are absent (see `plan_filter_run`).
    """
    methods, params = check_settings(methods, params, ring_px, ring_mm)
    images = select_images(store, test_set=test_set, malignant_only=malignant_only)
    columns = ["image_id", "exam_id", "laterality", "view", "histology", "method", "name",
               "annotation_version", "params_hash", "healthy_region", "auc", "n_tumour",
               "n_healthy"]
    if images.empty:
        return pd.DataFrame(columns=columns)
    rows = stored_keys(store, wanted_keys(images, methods, params, ring_px, ring_mm))
    if rows.empty:
        return pd.DataFrame(columns=columns)
    rows = rows.astype({"auc": float, "n_tumour": int, "n_healthy": int,
                        "annotation_version": int})
    out = rows.merge(images[["image_id", "exam_id", "laterality", "view", "histology"]],
                     on="image_id")
    out = out.assign(name=out["method"].map(lambda m: METHODS[m].name),
                     order=out["method"].map(list(METHODS).index))
    return out.sort_values(["order", "image_id"], ignore_index=True)[columns]


def summarize(results: pd.DataFrame, *, by: Sequence[str] = ()) -> pd.DataFrame:
    """Per method (and ``by`` groups): n_images, mean_auc, median_auc.

    ``results``: `stored_results`. Images whose AUC is NaN (an empty region) are not counted.
    Rows follow `METHODS` order.
    """
    keys = [*by, "method"]
    columns = [*keys, "name", "n_images", "mean_auc", "median_auc"]
    valid = results[results["auc"].notna()] if len(results) else results
    if valid.empty:
        return pd.DataFrame(columns=columns)
    table = valid.groupby(keys, sort=False)["auc"].agg(
        n_images="count", mean_auc="mean", median_auc="median").reset_index()
    table = table.assign(name=table["method"].map(lambda m: METHODS[m].name),
                         order=table["method"].map(list(METHODS).index))
    return table.sort_values([*by, "order"], ignore_index=True)[columns]


def filter_summary(store: Store, *, test_set: str, methods: Sequence[str] = ALL_METHODS,
                   params: Mapping[str, Mapping[str, Any]] | None = None,
                   ring_px: int = DEFAULT_RING_PX, ring_mm: float | None = None,
                   malignant_only: bool = True) -> pd.DataFrame:
    """`summarize` of `stored_results`: the table the page and the CLI print."""
    return summarize(stored_results(store, test_set=test_set, methods=methods, params=params,
                                    ring_px=ring_px, ring_mm=ring_mm,
                                    malignant_only=malignant_only))


@dataclass(frozen=True)
class ImageDetail:
    """One image's regions and every processed version, as the batch sees them.

    Attributes
    ----------
    image_id, other_image_id : the tumour's image and its contralateral same-view image (None
        when the healthy region is a ring).
    pixels, other_pixels : ndarray (H, W) integer, as read (other_pixels None for a ring).
    tumour : ndarray of bool (H, W).
    healthy : HealthyRegion (its mask is on `other_pixels` when mirrored).
    processed, processed_other : {code: ndarray} on the whole image (float32, bool for M3/M4),
        both images on one intensity scale; processed_other is empty for a ring.
    healthy_label : 'mirrored from the contralateral image' or e.g. '20-px ring'.
    """

    image_id: str
    other_image_id: str | None
    pixels: np.ndarray
    other_pixels: np.ndarray | None
    tumour: np.ndarray
    healthy: HealthyRegion
    processed: Mapping[str, np.ndarray]
    processed_other: Mapping[str, np.ndarray]
    healthy_label: str


def image_detail(store: Store, image_id: str, *, test_set: str,
                 methods: Sequence[str] = ALL_METHODS,
                 params: Mapping[str, Mapping[str, Any]] | None = None,
                 ring_px: int = DEFAULT_RING_PX, ring_mm: float | None = None) -> ImageDetail:
    """Load one annotated image of ``test_set`` and apply every method to the whole image."""
    methods, params = check_settings(methods, params, ring_px, ring_mm)
    images = select_images(store, test_set=test_set, malignant_only=False)
    match = images[images["image_id"] == image_id]
    if match.empty:
        raise InputError(f"image {image_id!r} has no annotation with pixels in test set "
                         f"{test_set!r}; pick an annotated image")
    task = make_task(next(match.itertuples()), methods, params, ring_px, ring_mm)
    pixels, tumour, healthy, other = load_task(task)

    depth = shared_depth(task, other is not None)

    def run(image):
        return {m: apply_method(m, image, bit_depth=depth, **params.get(m, {})) for m in methods}

    if healthy.kind == "mirrored":
        label = "mirrored from the contralateral image"
    elif ring_mm is not None:
        label = f"{ring_mm:g}-mm ring ({ring_mm / task.spacing_mm:.0f} px)"
    else:
        label = f"{int(ring_px)}-px ring"
    return ImageDetail(image_id, task.other_image_id if other is not None else None, pixels,
                       other, tumour, healthy, run(pixels), run(other) if other is not None
                       else {}, label)


def region_values(detail: ImageDetail) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{code: (tumour values, healthy values)} after processing (1-D arrays)."""
    other = detail.processed_other or detail.processed
    return {m: (detail.processed[m][detail.tumour], other[m][detail.healthy.mask])
            for m in detail.processed}


def region_histograms(detail: ImageDetail, *, bins: int = 40) -> pd.DataFrame:
    """Pixel histograms of both regions per method, on shared bins (figure 6.3).

    Returns
    -------
    DataFrame: method, region ('tumour' or 'healthy'), bin_start, bin_end, share (fraction of
    the region's pixels in the bin; each region's shares sum to 1), n (pixels in the region).
    Binary outputs (M3, M4) get the two bins [0, 0.5) and [0.5, 1].
    """
    rows = []
    for code, (t, h) in region_values(detail).items():
        binary = t.dtype == bool
        both = np.concatenate([t, h]).astype(np.float64)
        lo, hi = (0.0, 1.0) if binary else (float(both.min()), float(both.max()))
        edges = np.histogram_bin_edges(both, bins=2 if binary else bins,
                                       range=(lo, hi if hi > lo else lo + 1.0))
        for region, values in (("tumour", t), ("healthy", h)):
            counts, _ = np.histogram(values.astype(np.float64), bins=edges)
            share = counts / max(values.size, 1)
            rows += [(code, region, edges[i], edges[i + 1], share[i], values.size)
                     for i in range(counts.size)]
    return pd.DataFrame(rows, columns=["method", "region", "bin_start", "bin_end", "share", "n"])


def region_roc(detail: ImageDetail, *, max_pixels: int = 4000, seed: int = 0) -> pd.DataFrame:
    """ROC curve of tumour (positive) vs healthy pixels per method (figure 6.4).

    The curve is drawn from at most ``max_pixels`` pixels of each region (a seeded random
    subsample: the chart need not carry a million points); ``auc`` is exact, over all pixels.

    Returns
    -------
    DataFrame: method, fpr, tpr, auc.
    """
    rng = np.random.default_rng(seed)
    frames = []
    for code, (t, h) in region_values(detail).items():
        if t.size == 0 or h.size == 0:
            continue
        auc = pixel_auc(t, h).auc
        t_s, h_s = (v if v.size <= max_pixels else rng.choice(v, max_pixels, replace=False)
                    for v in (t, h))
        y = np.r_[np.ones(t_s.size), np.zeros(h_s.size)]
        fpr, tpr, _ = roc_curve(y, np.r_[t_s, h_s].astype(np.float64), drop_intermediate=True)
        frames.append(pd.DataFrame({"method": code, "fpr": fpr, "tpr": tpr, "auc": auc}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["method", "fpr", "tpr", "auc"])
