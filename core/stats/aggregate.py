"""Image scores to breast or exam scores: the one place that aggregates over a case's views."""
from __future__ import annotations

import numpy as np
import pandas as pd

from core.errors import InputError
from core.stats._arrays import _labels, _require, _scores
from core.validation import check_aggregation, check_level
from core.vocabulary import HISTOLOGIES, HISTOLOGY_PRIORITY

__all__ = ["FRAME_COLUMNS", "aggregate_scores"]

FRAME_COLUMNS = ("model", "case_id", "exam_id", "laterality", "image_id", "label", "histology",
                 "score")


def aggregate_scores(frame: pd.DataFrame, *, level: str, how: str = "max") -> pd.DataFrame:
    """Image-level scores to breast or exam level, per model (and per test set if present).

    Parameters
    ----------
    frame : DataFrame
        The long scores frame at image level (columns model, case_id, exam_id, laterality,
        image_id, label, histology, score, optionally test_set).
    level : {'image', 'breast', 'exam'}
        'image' returns the frame unchanged (a copy).
    how : {'max', 'mean'}, default 'max'
        Over a case's views; NaN scores are ignored, a case whose scores are all NaN stays NaN.

    Returns
    -------
    DataFrame
        The same columns at ``level``, one row per (test_set, model, case) in order of first
        appearance: case_id = f"{exam_id}/{laterality}" (breast) or exam_id (exam); laterality
        is None at exam level and image_id None at both; label = max over the case (missing
        labels are ignored; all missing stays missing); histology the most specific among its
        parts (ILC, else IDC, else other, else unknown, else none, as the store's exam truth;
        a missing histology counts as unknown). Other columns are dropped.
    """
    level = check_level(level)
    how = check_aggregation(how)
    _require(frame, FRAME_COLUMNS, "aggregate_scores")
    if level == "image":
        return frame.copy()
    _labels(frame["label"].dropna(), "label")   # a missing label stays missing (NA) here
    _scores(frame["score"], "score", 1)
    rank = pd.Series(range(len(HISTOLOGY_PRIORITY)), index=list(HISTOLOGY_PRIORITY))
    hist = frame["histology"].fillna("unknown").map(rank)
    if hist.isna().any():
        bad = sorted(map(str, frame.loc[hist.isna(), "histology"].unique()))[:5]
        raise InputError(f"histology has values outside {list(HISTOLOGIES)}: {bad}; map them first")
    keys = (["test_set"] if "test_set" in frame.columns else []) + ["model", "exam_id"]
    if level == "breast":
        lat = frame["laterality"]
        if not lat.isin(["L", "R"]).all():
            bad = sorted(map(str, lat[~lat.isin(["L", "R"])].unique()))[:5]
            raise InputError(f"laterality must be 'L' or 'R' for breast level; got {bad}")
        keys.append("laterality")
    grouped = frame.assign(_hist=hist.astype(np.int64)).groupby(keys, sort=False, dropna=False)
    out = grouped.agg(label=("label", "max"), _hist=("_hist", "max"),
                      score=("score", how)).reset_index()
    if level == "breast":
        out["case_id"] = out["exam_id"].astype(str) + "/" + out["laterality"].astype(str)
    else:
        out["case_id"] = out["exam_id"]
        out["laterality"] = None
    out["image_id"] = None
    out["histology"] = np.asarray(HISTOLOGY_PRIORITY, dtype=object)[out["_hist"].to_numpy()]
    out["score"] = out["score"].astype(np.float64)
    columns = list(FRAME_COLUMNS) + (["test_set"] if "test_set" in frame.columns else [])
    return out[columns]
