"""Saliency metrics over many images: distributions, hit rates, and two models compared.

Aggregates read a per-image frame (one row per image, the scalar fields of
`core.saliency.saliency_metrics`): the study's figure 6.13 is the distribution of ``best_dice``,
its 37 % vs 58 % the hit rates.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from core.errors import InputError
from core.stats import mcnemar_test, wilcoxon_test, wilson_ci

__all__ = ["SUMMARY_COLUMNS", "compare_saliency", "summarise_saliency"]

SUMMARY_COLUMNS = ["n_images", "mean_best_dice", "median_best_dice", "q1_best_dice",
                   "q3_best_dice", "n_hits", "hit_rate", "hit_ci_low", "hit_ci_high",
                   "mean_relevance_mass", "mean_relevance_rank", "median_distance_mm",
                   "patch_hit_rate", "mean_patch_attention"]
_NEEDED = ("image_id", "best_dice", "hit", "relevance_mass", "relevance_rank", "distance_mm",
           "patch_hit")


def summarise_saliency(per_image: pd.DataFrame, *, by: str | None = None,
                       alpha: float = 0.05) -> pd.DataFrame:
    """One row of aggregates (``SUMMARY_COLUMNS``), or one per value of column ``by``.

    The hit rate's interval is Wilson's (`core.stats.wilson_ci`) at level 1 - ``alpha``; means
    skip NaN (a map that sums to 0 has no relevance mass); ``patch_hit_rate`` is over images
    with patch boxes; ``mean_patch_attention`` over images whose file holds attention weights.
    """
    _require(per_image, _NEEDED if by is None else (*_NEEDED, by))
    if by is None:
        return pd.DataFrame([_row(per_image, alpha)], columns=SUMMARY_COLUMNS)
    rows = [{by: key, **_row(group, alpha)}
            for key, group in per_image.groupby(by, sort=True, dropna=False)]
    return pd.DataFrame(rows, columns=[by, *SUMMARY_COLUMNS])


def compare_saliency(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """Model a vs model b on the images both have: McNemar on hits, Wilcoxon on best Dice.

    Returns a dict: ``n_images`` (paired), ``hit`` (`McNemarResult` as a dict: b = images a
    hits and b misses), ``best_dice`` (`WilcoxonResult` as a dict: differences a - b).
    """
    _require(a, _NEEDED)
    _require(b, _NEEDED)
    both = a.merge(b, on="image_id", suffixes=("_a", "_b"))
    if both.empty:
        raise InputError("the two models share no scored image; compare models predicted on "
                         "the same test set")
    return {"n_images": len(both),
            "hit": mcnemar_test(both["hit_a"].astype(bool), both["hit_b"].astype(bool)).to_dict(),
            "best_dice": wilcoxon_test(both["best_dice_a"], both["best_dice_b"]).to_dict()}


def _row(frame: pd.DataFrame, alpha: float) -> dict:
    n = len(frame)
    dice = frame["best_dice"].to_numpy(np.float64)
    hits = int(frame["hit"].astype(bool).sum())
    low, high = wilson_ci(hits, n, alpha) if n else (float("nan"), float("nan"))
    patches = frame["patch_hit"].dropna()
    q1, median, q3 = np.quantile(dice, [0.25, 0.5, 0.75]) if n else (np.nan,) * 3
    return {
        "n_images": n, "mean_best_dice": float(dice.mean()) if n else float("nan"),
        "median_best_dice": float(median), "q1_best_dice": float(q1), "q3_best_dice": float(q3),
        "n_hits": hits, "hit_rate": hits / n if n else float("nan"), "hit_ci_low": low,
        "hit_ci_high": high, "mean_relevance_mass": _mean(frame["relevance_mass"]),
        "mean_relevance_rank": _mean(frame["relevance_rank"]),
        "median_distance_mm": float(frame["distance_mm"].median()),
        "patch_hit_rate": float(patches.astype(bool).mean()) if len(patches) else float("nan"),
        "mean_patch_attention": (_mean(frame["patch_attention"]) if "patch_attention" in frame
                                 else float("nan")),
    }


def _mean(column: pd.Series) -> float:
    return float(column.mean()) if column.notna().any() else float("nan")


def _require(frame: pd.DataFrame, columns) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"per-image frame lacks column(s) {', '.join(missing)}; build it with "
                         "core.reports.saliency")
