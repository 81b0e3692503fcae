"""Tumour and healthy regions, and the pixel AUC of each filter between them.

The study asks, per annotated image and per filter M1-M7: do the filtered tumour pixels stand out
from healthy tissue? The answer is the AUC of tumour-vs-healthy pixel values (Mann-Whitney, ties
count one half; 1 = every tumour pixel brighter than every healthy pixel, 0.5 = no separation).

Healthy tissue comes from the other breast where its image of the same view exists (the tumour's
mirror image there: same place, no tumour), otherwise from a ring around the tumour in the same
image. `filter_aucs` is the per-image unit of work a batch runner calls.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from core import progress as _progress
from core.errors import InputError
from core.image.filters import METHODS, apply_method, infer_bit_depth, params_hash, resolve_params
from core.image.segmentation import breast_mask, chest_wall_side

__all__ = [
    "ALL_METHODS", "HealthyRegion", "PixelAUC", "filter_aucs", "healthy_region", "pixel_auc",
    "tumour_region",
]

ALL_METHODS: tuple[str, ...] = tuple(METHODS)  # 'original', 'M1', ..., 'M7'
_COLUMNS = ["method", "params_hash", "auc", "n_tumour", "n_healthy", "healthy_region"]


@dataclass(frozen=True)
class HealthyRegion:
    """Where the healthy reference pixels are.

    Attributes
    ----------
    mask : ndarray of bool, shape of the image named by `source_image`.
    source_image : 'same' (the tumour's image) or 'contralateral' (the other breast's image).
    kind : 'mirrored' (tumour mask mirrored onto the other breast) or 'ring' (around the tumour).
    """

    mask: np.ndarray
    source_image: Literal["same", "contralateral"]
    kind: Literal["mirrored", "ring"]


class PixelAUC(NamedTuple):
    """AUC of tumour vs healthy pixel values and the pixel counts it rests on."""

    auc: float
    n_tumour: int
    n_healthy: int


# --- regions ----------------------------------------------------------------------------------


def tumour_region(annotation_mask: np.ndarray, shape: tuple[int, int] | None = None) -> np.ndarray:
    """The tumour region as a bool mask, checked against the image shape.

    Parameters
    ----------
    annotation_mask : array-like of shape (H, W)
        The (latest) annotation; nonzero = tumour.
    shape : (H, W), optional
        The image's shape; a mismatch is an InputError (an annotation drawn on a display copy
        must be resized first).

    Returns
    -------
    ndarray of bool, shape (H, W); at least one True.
    """
    mask = np.asarray(annotation_mask)
    if mask.ndim != 2:
        raise InputError(f"annotation mask has shape {mask.shape}; pass a 2-D mask (H, W)")
    if shape is not None and mask.shape != tuple(shape):
        raise InputError(
            f"annotation mask has shape {mask.shape} but the image is {tuple(shape)}; "
            "resize the mask to the image first"
        )
    mask = mask.astype(bool, copy=False)
    if not mask.any():
        raise InputError("annotation mask is empty; draw or import the tumour outline first")
    return mask


def healthy_region(
    tumour_mask: np.ndarray,
    image: np.ndarray,
    *,
    view: str | None,
    other_image: np.ndarray | None = None,
    ring_px: int = 20,
    ring_mm: float | None = None,
    spacing_mm: float | None = None,
    breast: np.ndarray | None = None,
    other_breast: np.ndarray | None = None,
) -> HealthyRegion:
    """Healthy reference region for a tumour: mirrored onto the other breast, or a ring.

    (a) With `other_image` (the other breast, same view): the tumour mask is flipped left-right
    and shifted so that each pixel keeps its distance from the chest wall (the chest wall is the
    breast mask's extreme column on the side `chest_wall_side` finds, so padded films work),
    rows unchanged, then restricted to that image's breast tissue. If nothing of it lands on
    breast tissue there, (b) is used instead.

    (b) Otherwise: the pixels within `ring_px` (or `ring_mm` / `spacing_mm`) of the tumour,
    outside it, restricted to breast tissue of the same image.

    Parameters
    ----------
    tumour_mask : ndarray of bool, shape (H, W)
    image : ndarray of shape (H, W), any dtype; the tumour's image.
    view : 'CC', 'MLO' or None; with 'MLO' the pectoral muscle is not breast tissue.
    other_image : ndarray of shape (H2, W2), optional; the contralateral image, same view.
    ring_px : int, ring width in pixels (the study's 20).
    ring_mm, spacing_mm : float, optional; the ring width in mm and the pixel spacing (mm/pixel),
        used instead of `ring_px` when both are given.
    breast, other_breast : ndarray of bool, optional; precomputed `breast_mask` results.

    Returns
    -------
    HealthyRegion
    """
    tumour = tumour_region(tumour_mask, np.shape(image))
    width = _ring_width(ring_px, ring_mm, spacing_mm)
    breast = _given_mask(breast, np.shape(image), "breast")
    if other_image is not None:
        other = np.asarray(other_image)
        if other.ndim != 2:
            raise InputError(f"other_image has shape {other.shape}; pass a 2-D image (H, W)")
        if breast is None:
            breast = breast_mask(image, view=view)
        other_breast = _given_mask(other_breast, other.shape, "other_breast")
        if other_breast is None:
            other_breast = breast_mask(other, view=view)
        mirrored = _mirror(tumour, breast, other_breast, chest_wall_side(image),
                           chest_wall_side(other)) & other_breast
        if mirrored.any():
            return HealthyRegion(mirrored, "contralateral", "mirrored")
    if breast is None:
        breast = breast_mask(image, view=view)
    return HealthyRegion(_ring(tumour, width) & breast, "same", "ring")


def _given_mask(mask: np.ndarray | None, shape: tuple[int, ...], name: str) -> np.ndarray | None:
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != tuple(shape):
        raise InputError(f"{name} mask has shape {mask.shape} but its image is {tuple(shape)}; "
                         "pass the breast_mask of that image or None")
    return mask


def _ring_width(ring_px: int, ring_mm: float | None, spacing_mm: float | None) -> float:
    if ring_mm is not None:
        if spacing_mm is None or not spacing_mm > 0:
            raise InputError(
                f"ring_mm is {ring_mm} but spacing_mm is {spacing_mm!r}; pass the pixel spacing "
                "in mm (e.g. 0.2 for mini-MIAS) or use ring_px"
            )
        width = float(ring_mm) / float(spacing_mm)
    else:
        width = float(ring_px)
    if not width >= 1:
        raise InputError(f"ring width is {width:g} pixels; pass at least 1 pixel")
    return width


def _ring(tumour: np.ndarray, width: float) -> np.ndarray:
    """Pixels outside `tumour` within Euclidean distance `width` of it (EDT on a crop)."""
    rows, cols = np.nonzero(tumour)
    pad = int(np.ceil(width)) + 1
    r0, r1 = max(rows.min() - pad, 0), min(rows.max() + pad + 1, tumour.shape[0])
    c0, c1 = max(cols.min() - pad, 0), min(cols.max() + pad + 1, tumour.shape[1])
    crop = tumour[r0:r1, c0:c1]
    near = ndi.distance_transform_edt(~crop) <= width
    out = np.zeros_like(tumour)
    out[r0:r1, c0:c1] = near & ~crop
    return out


def _mirror(tumour: np.ndarray, breast: np.ndarray, other_breast: np.ndarray, side: str,
            other_side: str) -> np.ndarray:
    """Map each tumour pixel to the other image at the same distance from its chest wall."""
    if not breast.any() or not other_breast.any():
        return np.zeros(other_breast.shape, dtype=bool)
    wall, other_wall = _wall_column(breast, side), _wall_column(other_breast, other_side)
    rows, cols = np.nonzero(tumour)
    dist = cols - wall if side == "left" else wall - cols
    new_cols = other_wall + dist if other_side == "left" else other_wall - dist
    h, w = other_breast.shape
    ok = (rows < h) & (new_cols >= 0) & (new_cols < w)
    out = np.zeros((h, w), dtype=bool)
    out[rows[ok], new_cols[ok]] = True
    return out


def _wall_column(breast: np.ndarray, side: str) -> int:
    cols = np.flatnonzero(breast.any(axis=0))
    return int(cols[0] if side == "left" else cols[-1])


# --- AUC --------------------------------------------------------------------------------------


def pixel_auc(tumour_values: np.ndarray, healthy_values: np.ndarray) -> PixelAUC:
    """Exact AUC of tumour vs healthy values (Mann-Whitney U / (n_t n_h), ties count 1/2).

    Higher = tumour brighter. Equals ``roc_auc_score([1]*n_t + [0]*n_h, concat(t, h))``.

    Integer (and bool) data: counts per grey level with `np.bincount` and a cumulative sum,
    O(pixels + levels). Float data (or a level range far above the pixel count): both samples
    sorted, the healthy values below and equal to each tumour value found with
    `np.searchsorted`, O(n log n). Both count pairs exactly in int64.

    Parameters
    ----------
    tumour_values, healthy_values : array-like of numbers, any shape (flattened).

    Returns
    -------
    PixelAUC
        (auc, n_tumour, n_healthy); auc is nan when either sample is empty.
    """
    t, h = _check_values(tumour_values, "tumour_values"), _check_values(healthy_values,
                                                                       "healthy_values")
    n_t, n_h = t.size, h.size
    if n_t == 0 or n_h == 0:
        return PixelAUC(float("nan"), n_t, n_h)
    if _is_int(t) and _is_int(h):
        lo = min(int(t.min()), int(h.min()))
        levels = max(int(t.max()), int(h.max())) - lo + 1
        if levels <= 4 * (n_t + n_h) + 65536:
            twice_u = _twice_u_counts(t, h, lo, levels)
            return PixelAUC(twice_u / (2.0 * n_t * n_h), n_t, n_h)
    dtype = np.result_type(t.dtype, h.dtype, np.float32) if not (_is_int(t) and _is_int(h)) \
        else np.int64
    t, h = np.sort(t.astype(dtype, copy=False)), np.sort(h.astype(dtype, copy=False))
    twice_u = int(np.searchsorted(h, t, side="left").sum(dtype=np.int64)) + int(
        np.searchsorted(h, t, side="right").sum(dtype=np.int64))
    return PixelAUC(twice_u / (2.0 * n_t * n_h), n_t, n_h)


def _twice_u_counts(t: np.ndarray, h: np.ndarray, lo: int, levels: int) -> int:
    ct = np.bincount((t.astype(np.int64) - lo), minlength=levels)
    ch = np.bincount((h.astype(np.int64) - lo), minlength=levels)
    below = np.cumsum(ch) - ch
    return int(2 * np.dot(ct, below) + np.dot(ct, ch))


def _is_int(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.integer) or a.dtype == bool


def _check_values(values: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(values).ravel()
    if a.dtype == bool:
        return a.view(np.uint8)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise InputError(f"{name} has dtype {a.dtype}; pass numeric pixel values")
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
        raise InputError(f"{name} has NaN or infinite values; drop them before the AUC")
    return a


# --- per image --------------------------------------------------------------------------------


def filter_aucs(
    pixels: np.ndarray,
    tumour_mask: np.ndarray,
    healthy: HealthyRegion,
    other_pixels: np.ndarray | None = None,
    methods: Sequence[str] = ALL_METHODS,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    bit_depth: int | None = None,
    crop: bool = True,
    progress: _progress.ProgressFn | None = None,
) -> pd.DataFrame:
    """Pixel AUC of tumour vs healthy region for each filter, on one image.

    Each method is applied to the image (and to the contralateral image when the healthy region
    lives there: each image is filtered on its own, as it would be displayed), then the region
    pixels are compared with `pixel_auc`. Both images share one intensity scale: one
    `bit_depth` for integers (inferred from the larger maximum), one min-max for floats outside
    [0, 1].

    Parameters
    ----------
    pixels : ndarray of shape (H, W), any dtype; the tumour's image.
    tumour_mask : ndarray of bool, shape (H, W)
    healthy : HealthyRegion, from `healthy_region`.
    other_pixels : ndarray, optional; required when ``healthy.source_image == 'contralateral'``.
    methods : codes from `core.image.filters.METHODS`; default all ('original', 'M1'..'M7').
    params : {code: {name: value}}, optional; overrides of the defaults.
    bit_depth : int, optional; bits stored, shared by both images.
    crop : bool
        Run local methods ('original', M4-M7) on the regions' bounding box plus the method's
        support (`FilterMethod.support`) instead of the whole image: the same values, several
        times faster on full-field images. Global methods (M1-M3) always see the whole image.
    progress : ProgressFn, optional; called once per method.

    Returns
    -------
    DataFrame, one row per method: method, params_hash, auc (float; nan if a region is empty),
    n_tumour, n_healthy (pixels), healthy_region ('mirrored' or 'ring').
    """
    pixels = np.asarray(pixels)
    tumour = tumour_region(tumour_mask, pixels.shape)
    params = dict(params or {})
    unknown = sorted(set(params) - set(methods))
    if unknown:
        raise InputError(f"params names {', '.join(unknown)} not in methods; pass params only "
                         "for the methods you run")
    contra = healthy.source_image == "contralateral"
    if contra and other_pixels is None:
        raise InputError("healthy region is on the contralateral image but other_pixels is "
                         "None; pass that image too")
    target = np.asarray(other_pixels) if contra else pixels
    if healthy.mask.shape != target.shape:
        raise InputError(f"healthy mask has shape {healthy.mask.shape} but its image is "
                         f"{target.shape}; recompute it with healthy_region")
    images = [pixels, target] if contra else [pixels]
    images, bit_depth = _shared_scale(images, bit_depth)
    rows = []
    for i, code in enumerate(methods):
        p = dict(params.get(code, {}))
        key = params_hash(code, p)
        _progress.report(progress, i, len(methods), code)
        if code == "original":   # raw values: the same ranks as the [0, 1] copy, integer path
            t, h = images[0][tumour], images[-1][healthy.mask]
        elif contra:
            (t,) = _region_values(code, images[0], [tumour], bit_depth, p, crop)
            (h,) = _region_values(code, images[1], [healthy.mask], bit_depth, p, crop)
        else:
            t, h = _region_values(code, images[0], [tumour, healthy.mask], bit_depth, p, crop)
        res = pixel_auc(t, h)
        rows.append((code, key, res.auc, res.n_tumour, res.n_healthy, healthy.kind))
    _progress.report(progress, len(methods), len(methods), "done")
    return pd.DataFrame(rows, columns=_COLUMNS)


def _region_values(code: str, image: np.ndarray, masks: list[np.ndarray],
                   bit_depth: int | None, params: dict, crop: bool) -> list[np.ndarray]:
    """Filtered values under each mask; local methods run on the masks' box plus their support.

    Cropping gives the same values as filtering the whole image: every pixel under a mask is at
    least the method's support away from the crop's inner edges, and the crop starts on the
    method's grid (the DWT's 2**level).
    """
    support = METHODS[code].support
    union = np.logical_or.reduce(masks)
    if not crop or support is None or not union.any():
        out = apply_method(code, image, bit_depth=bit_depth, **params)
        return [out[m] for m in masks]
    margin, align = support(resolve_params(code, params))
    rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    r0 = max(int(rows[0]) - margin, 0) // align * align
    c0 = max(int(cols[0]) - margin, 0) // align * align
    r1, c1 = int(rows[-1]) + 1 + margin, int(cols[-1]) + 1 + margin
    out = apply_method(code, image[r0:r1, c0:c1], bit_depth=bit_depth, **params)
    return [out[m[r0:r1, c0:c1]] for m in masks]


def _shared_scale(images: list[np.ndarray], bit_depth: int | None):
    """One intensity scale for all images: a shared bit depth, or a joint min-max for floats."""
    if all(_is_int(im) for im in images):
        if bit_depth is None:
            bit_depth = max(infer_bit_depth(im) for im in images)
        return images, bit_depth
    lo = min(float(np.min(im)) for im in images)
    hi = max(float(np.max(im)) for im in images)
    if lo >= 0.0 and hi <= 1.0:
        return images, bit_depth
    scale = hi - lo if hi > lo else 1.0
    return [((im.astype(np.float64) - lo) / scale).astype(np.float32) for im in images], None
