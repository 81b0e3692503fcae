"""Does a saliency map point at the tumour? Per-image metrics against a segmentation mask.

The study (section 5.3.1) thresholds the map at t = 0, 0.05, ..., 1 (``map >= t``), takes Dice's
coefficient with the radiologist's segmentation at each t and keeps the best per image, and
counts the image as a hit when the map's maximum lies inside the segmentation (the pointing
game). Added here: the distance from the maximum to the mask, the share of the map's mass inside
the mask (relevance mass) and of its top-|mask| pixels (relevance rank), and whether GMIC's K
patches touch the mask.

Why no loop and no sort: a full-size map has ~8.5 million pixels; a loop over thresholds makes
21 passes over it, one sort costs about 10. The map's counts at every threshold come from its
32 x 32 block minima and maxima (`core.saliency.counts`), the mask's from its (few) sorted
pixels; bench/saliency.py measures both ways.
Comparisons are exact in the map's float type: ``map >= t`` means the float64 value of each
pixel is at least the float64 threshold, as the straightforward loop computes it.
"""
from __future__ import annotations

from numbers import Real

import numpy as np

from core.errors import InputError
from core.saliency.counts import BlockSummary

__all__ = ["DEFAULT_THRESHOLDS", "dice_at_thresholds", "saliency_metrics"]

DEFAULT_THRESHOLDS = np.round(np.arange(0, 1.0001, 0.05), 10)  # the study's sweep


def saliency_metrics(map_orig, mask, *, spacing_mm: float | None, patch_boxes=None,
                     attention=None, thresholds=DEFAULT_THRESHOLDS) -> dict:
    """Every per-image saliency metric of one map against one segmentation.

    Parameters
    ----------
    map_orig : array-like of shape (H, W), float
        The saliency map on the original image grid (`SaliencyFile.to_original`); no NaN.
    mask : array-like of shape (H, W), bool
        The segmentation; at least one pixel.
    spacing_mm : float or None, keyword-only
        Pixel size in mm (square pixels); None gives ``distance_mm`` NaN (``distance_px`` stays).
    patch_boxes : array-like of shape (K, 4) or None, keyword-only
        ``[row, col, height, width]`` in original pixels (edges), as `models.inference.predict` stores them.
    attention : array-like of shape (K,) or None, keyword-only
        The patches' attention weights (sum 1 per model); None gives ``patch_attention`` NaN.
    thresholds : array-like of shape (T,), keyword-only
        Increasing thresholds; default the study's 0, 0.05, ..., 1.

    Returns
    -------
    dict with
        ``thresholds`` (T,), ``dice`` (T,): Dice of ``map >= thresholds[i]`` with the mask;
        ``best_dice``, ``best_threshold``: the largest Dice and the lowest threshold reaching it;
        ``hit``: the arg-max (first in row-major order) lies in the mask (pointing game);
        ``argmax_row``, ``argmax_col``; ``distance_px``, ``distance_mm``: from the arg-max's
        pixel centre to the nearest mask pixel centre (0 for a hit);
        ``relevance_mass``: sum of the map in the mask / sum of the map (NaN if the map sums to 0);
        ``relevance_rank``: share of the |mask| highest pixels that lie in the mask (ties at the
        cut-off shared in proportion, the mean over random tie-breaks);
        ``n_mask``: |mask|; ``patch_hit``: any patch overlaps the mask (None without boxes);
        ``n_patches_hit``; ``patch_attention``: attention summed over the patches that do.
    """
    values, mask = _check_pair(map_orig, mask)
    thresholds = _check_thresholds(thresholds)
    spacing = _check_spacing(spacing_mm)
    flat, inside = values.ravel(), np.flatnonzero(mask)
    blocks = BlockSummary(values)
    in_mask = np.sort(flat[inside])
    k = in_mask.size
    cuts = _as_dtype_cut(thresholds, values.dtype)
    n_pred = blocks.count_at_least(cuts)
    dice = _dice(n_pred, in_mask, cuts)
    best = int(np.argmax(dice))
    argmax = int(np.argmax(flat))                 # first maximum in row-major order
    row, col = divmod(argmax, values.shape[1])
    hit = bool(mask[row, col])
    distance = 0.0 if hit else _distance_to_mask(inside, values.shape[1], row, col)
    total = float(flat.sum(dtype=np.float64))
    # The k largest values lie at or above the highest threshold that k pixels reach.
    reaching = np.flatnonzero(n_pred >= k)
    top = blocks.at_least(cuts[reaching[-1]] if reaching.size else -np.inf)
    cut = np.partition(top, top.size - k)[top.size - k]   # the k-th largest value
    above_all = np.count_nonzero(top > cut)
    tied_all = np.count_nonzero(top == cut)
    above_in = k - np.searchsorted(in_mask, cut, side="right")
    tied_in = np.searchsorted(in_mask, cut, side="right") - np.searchsorted(in_mask, cut, "left")
    rank = (above_in + (k - above_all) * tied_in / tied_all) / k
    result = {
        "thresholds": thresholds, "dice": dice, "best_dice": float(dice[best]),
        "best_threshold": float(thresholds[best]), "hit": hit, "argmax_row": row,
        "argmax_col": col, "distance_px": distance,
        "distance_mm": distance * spacing if spacing is not None else float("nan"),
        "relevance_mass": float(in_mask.sum(dtype=np.float64)) / total if total else float("nan"),
        "relevance_rank": float(rank), "n_mask": k,
    }
    result.update(_patches(mask, patch_boxes, attention))
    return result


def dice_at_thresholds(map_orig, mask, thresholds=DEFAULT_THRESHOLDS) -> np.ndarray:
    """Dice of ``map_orig >= thresholds[i]`` with ``mask``, for every i: shape (T,)."""
    values, mask = _check_pair(map_orig, mask)
    cuts = _as_dtype_cut(_check_thresholds(thresholds), values.dtype)
    return _dice(BlockSummary(values).count_at_least(cuts), np.sort(values[mask]), cuts)


def _dice(n_pred: np.ndarray, in_mask: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """2 |X & Y_t| / (|X| + |Y_t|) from the map's counts at the cuts and sorted mask values."""
    n_both = in_mask.size - np.searchsorted(in_mask, cuts, side="left")
    return 2.0 * n_both / (in_mask.size + n_pred)


def _as_dtype_cut(thresholds: np.ndarray, dtype) -> np.ndarray:
    """The smallest ``dtype`` value >= each float64 threshold: ``x >= t`` iff ``x >= cut`` for
    every x of that dtype, so searching never casts the full map to float64."""
    cut = thresholds.astype(dtype)
    low = cut.astype(np.float64) < thresholds
    cut[low] = np.nextafter(cut[low], dtype.type(np.inf))
    return cut


def _distance_to_mask(inside: np.ndarray, width: int, row: int, col: int) -> float:
    """From (row, col) to the nearest of the mask's flat indices ``inside``, in pixels."""
    rows, cols = np.divmod(inside, width)
    return float(np.sqrt(np.min((rows - row) ** 2 + (cols - col) ** 2)))


def _patches(mask: np.ndarray, patch_boxes, attention) -> dict:
    """Which patches overlap the mask: a box covers pixels it overlaps with positive area."""
    if patch_boxes is None:
        return {"patch_hit": None, "n_patches_hit": None, "patch_attention": float("nan")}
    boxes = np.asarray(patch_boxes, dtype=np.float64).reshape(-1, 4)
    if not np.isfinite(boxes).all() or (boxes[:, 2:] < 0).any():
        raise InputError(f"patch_boxes hold non-finite values or negative sizes ({boxes.tolist()}); "
                         "pass [row, col, height, width] rows in original pixels")
    height, width = mask.shape
    hits = np.zeros(len(boxes), bool)
    for i, (row, col, h, w) in enumerate(boxes):
        r0, r1 = max(int(np.floor(row)), 0), min(int(np.ceil(row + h)), height)
        c0, c1 = max(int(np.floor(col)), 0), min(int(np.ceil(col + w)), width)
        hits[i] = h > 0 and w > 0 and bool(mask[r0:r1, c0:c1].any())
    weight = float("nan")
    if attention is not None:
        attn = np.asarray(attention, dtype=np.float64).ravel()
        if attn.shape != (len(boxes),):
            raise InputError(f"attention has {attn.size} weights for {len(boxes)} patch boxes; "
                             "pass one weight per box")
        weight = float(attn[hits].sum())
    return {"patch_hit": bool(hits.any()), "n_patches_hit": int(hits.sum()),
            "patch_attention": weight}


def _check_pair(map_orig, mask) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(map_orig)
    if values.dtype not in (np.float32, np.float64):
        if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
            raise InputError(f"map_orig has dtype {values.dtype}; pass a numeric saliency map")
        values = values.astype(np.float64)
    mask = np.asarray(mask)
    if values.ndim != 2:
        raise InputError(f"map_orig has shape {values.shape}; pass a 2-D map on the image grid")
    if mask.shape != values.shape:
        raise InputError(f"mask has shape {mask.shape} but map_orig has {values.shape}; map the "
                         "saliency back to the original image first (SaliencyFile.to_original)")
    if mask.dtype != bool:
        mask = mask != 0
    if not mask.any():
        raise InputError("mask is empty; the metrics need a segmentation with at least one pixel")
    if np.isnan(values.min()):                   # min propagates NaN: one cheap pass
        raise InputError(f"map_orig holds {int(np.isnan(values).sum())} NaN values; pass a "
                         "finite saliency map")
    return values, mask


def _check_thresholds(thresholds) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64).ravel()
    if t.size == 0 or not np.isfinite(t).all() or (np.diff(t) <= 0).any():
        raise InputError(f"thresholds must be finite and strictly increasing; got {t.tolist()}")
    return t


def _check_spacing(spacing_mm) -> float | None:
    if spacing_mm is None or (isinstance(spacing_mm, Real) and np.isnan(spacing_mm)):
        return None
    if isinstance(spacing_mm, bool) or not isinstance(spacing_mm, Real) or not spacing_mm > 0:
        raise InputError(f"spacing_mm must be a positive number of mm per pixel or None; "
                         f"got {spacing_mm!r}")
    return float(spacing_mm)
