"""The door of every statistic: label and score checks that hand clean arrays on.

Public functions call `_binary` (one model) or `_multi` (k models on the same cases) once;
private helpers then assume ``y`` bool of shape (n_cases,) and scores float64 of shape
(n_cases,) or (k, n_cases), without NaN, with both classes where the statistic needs them.
A NaN score is excluded and counted; results without an ``n_excluded`` field warn instead.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from core.errors import InputError

__all__ = ["ExcludedScoresWarning"]


class ExcludedScoresWarning(UserWarning):
    """NaN scores were excluded by a function whose result has no ``n_excluded`` field."""


def _as_array(values) -> np.ndarray:
    """numpy view of an array-like; pandas nullable columns (Int8, boolean, Float64) become
    float64 with NaN for NA, so a missing label or score is seen, not turned into an object."""
    if isinstance(values, (pd.Series, pd.Index, pd.api.extensions.ExtensionArray)):
        dt = values.dtype
        if isinstance(dt, pd.api.extensions.ExtensionDtype) and (
                pd.api.types.is_bool_dtype(dt) or pd.api.types.is_numeric_dtype(dt)):
            return pd.Series(values).to_numpy(dtype=np.float64, na_value=np.nan)
    return np.asarray(values)


def _labels(y_true, name: str = "y_true") -> np.ndarray:
    """0/1 or bool labels -> bool array of shape (n,)."""
    y = _as_array(y_true)
    if y.ndim != 1:
        raise InputError(f"{name} must be 1-D, one label per case; got shape {y.shape}")
    if y.dtype == bool:
        return y
    if y.dtype.kind not in "iuf":
        example = next(iter(y.tolist()), None)
        raise InputError(f"{name} must be 0/1 or bool (1 = cancer); got dtype {y.dtype} "
                         f"(e.g. {example!r}). Map the labels to 0/1 first.")
    if y.dtype.kind == "f":
        n_nan = int(np.count_nonzero(np.isnan(y)))
        if n_nan:
            raise InputError(f"{name} has {n_nan} missing labels (NaN); drop those cases or "
                             f"fill in their labels.")
    is_pos = y == 1
    bad = ~is_pos & (y != 0)
    if bad.any():
        shown = np.unique(y[bad])[:5].tolist()
        raise InputError(f"{name} must be 0/1 or bool (1 = cancer); got other values {shown}. "
                         f"Map the labels to 0/1 first.")
    return is_pos


def _scores(y_score, name: str, ndim: int) -> np.ndarray:
    """Numeric scores -> float64 array with ``ndim`` dimensions; NaN kept, ±inf rejected."""
    try:
        s = _as_array(y_score).astype(np.float64, copy=False)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numeric (higher = more suspicious); got dtype "
                         f"{getattr(y_score, 'dtype', type(y_score).__name__)}") from None
    if s.ndim != ndim:
        want = "(n_cases,)" if ndim == 1 else "(n_models, n_cases)"
        raise InputError(f"{name} must have shape {want}; got shape {s.shape}")
    n_inf = int(np.count_nonzero(np.isinf(s)))
    if n_inf:
        raise InputError(f"{name} has {n_inf} infinite values; pass finite scores (use NaN for a "
                         f"missing score, or clip logits).")
    return s


def _same_length(y: np.ndarray, s: np.ndarray, name: str) -> None:
    if s.shape[-1] != y.shape[0]:
        hint = " (transpose it?)" if s.ndim == 2 and s.shape[0] == y.shape[0] else ""
        raise InputError(f"y_true has {y.shape[0]} cases but {name} has shape {s.shape}{hint}; "
                         f"pass one score per case.")


def _classes(y: np.ndarray, n_excluded: int, need: str, what: str) -> None:
    """Raise if ``y`` lacks a class that ``need`` ('both' | 'pos' | 'neg' | 'any') requires."""
    n_pos = int(np.count_nonzero(y))
    n_neg = y.size - n_pos
    after = f" after excluding {n_excluded} NaN scores" if n_excluded else ""
    if y.size == 0:
        raise InputError(f"no cases to score{after}; {what} needs at least one case. "
                         f"Check the scores or widen the exam filter.")
    missing = {"both": n_pos == 0 or n_neg == 0, "pos": n_pos == 0, "neg": n_neg == 0,
               "any": False}[need]
    if missing:
        lack = "both" if need == "both" else ("positives" if need == "pos" else "negatives")
        raise InputError(f"y_true has one class only ({n_neg} negatives, {n_pos} positives{after});"
                         f" {what} needs {lack}. Check the label column or widen the exam filter.")


def _binary(y_true, y_score, *, need: str = "both", what: str = "AUC"):
    """The door for one model: (y bool, s float64 without NaN, n_excluded)."""
    y = _labels(y_true)
    s = _scores(y_score, "y_score", 1)
    _same_length(y, s, "y_score")
    keep = ~np.isnan(s)
    n_excluded = int(y.size - np.count_nonzero(keep))
    if n_excluded:
        y, s = y[keep], s[keep]
    _classes(y, n_excluded, need, what)
    return y, s, n_excluded


def _multi(y_true, scores, name: str = "scores"):
    """The door for k models on the same cases: (y, S (k, n) float64 without NaN, n_excluded)."""
    y = _labels(y_true)
    s = _scores(scores, name, 2)
    if s.shape[0] == 0:
        raise InputError(f"{name} has no models (shape {s.shape}); pass at least one row")
    _same_length(y, s, name)
    keep = ~np.isnan(s).any(axis=0)
    n_excluded = int(y.size - np.count_nonzero(keep))
    if n_excluded:
        y, s = y[keep], s[:, keep]
    _classes(y, n_excluded, "both", "AUC")
    return y, np.ascontiguousarray(s), n_excluded


def _warn_excluded(n_excluded: int, where: str) -> None:
    if n_excluded:
        warnings.warn(f"{where}: {n_excluded} cases with a NaN score were excluded",
                      ExcludedScoresWarning, stacklevel=3)


def _require(frame, columns: Sequence[str], what: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"{what} needs a pandas DataFrame; got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"{what}: the scores frame lacks column(s) {missing}; it needs "
                         f"{list(columns)} (the store's long scores frame)")
