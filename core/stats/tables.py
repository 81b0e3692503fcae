"""AUC tables over a long scores frame: one row per (test set, model)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from core.errors import InputError
from core.stats._arrays import _labels, _require, _scores
from core.stats.auc import AUCResult, _auc
from core.stats.bootstrap import _bootstrap_result
from core.stats.delong import _delong_result
from core.validation import check_alpha, check_n_boot

__all__ = ["auc_table"]


def auc_table(scores: pd.DataFrame, *, ci: str = "delong", alpha: float = 0.05,
              n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One AUC row per (test set, model) of a long scores frame.

    Parameters
    ----------
    scores : DataFrame
        Columns model, label, score, optionally test_set (any level; aggregate first).
    ci : {'delong', 'bootstrap', 'none'}, default 'delong'
    alpha, n_boot, seed :
        As in :func:`delong_auc` / :func:`bootstrap_auc`; every row uses the same seed, so a
        row does not change when other models are added.

    Returns
    -------
    DataFrame
        Columns test_set (None without that column), model, n_pos, n_neg, n_excluded, auc,
        ci_low, ci_high, note; rows in order of first appearance. A group with one class gets
        NaN auc and note "n/a: no positives" / "n/a: no negatives" ("n/a: no scored cases" if
        every score is NaN); a DeLong CI with < 2 positives or negatives is NaN with a note.
    """
    if ci not in ("delong", "bootstrap", "none"):
        raise InputError(f"ci must be 'delong', 'bootstrap' or 'none'; got {ci!r}")
    alpha = check_alpha(alpha)
    n_boot = check_n_boot(n_boot) if ci == "bootstrap" else n_boot
    _require(scores, ("model", "label", "score"), "auc_table")
    y_all = _labels(scores["label"], "label")
    s_all = _scores(scores["score"], "score", 1)
    if "test_set" in scores.columns:
        ts_codes, ts_names = pd.factorize(scores["test_set"], use_na_sentinel=False)
    else:
        ts_codes, ts_names = np.zeros(len(scores), np.intp), np.array([None], dtype=object)
    model_codes, model_names = pd.factorize(scores["model"], use_na_sentinel=False)
    group = ts_codes * len(model_names) + model_codes       # (test set, model) in first-seen order
    order = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.r_[True, np.diff(group[order]) != 0, True])
    rows = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        idx = order[start:stop]
        ts, model = divmod(int(group[idx[0]]), len(model_names))
        y, s = y_all[idx], s_all[idx]
        keep = ~np.isnan(s)
        row = {"test_set": ts_names[ts], "model": model_names[model]}
        rows.append(row | _auc_row(y[keep], s[keep], idx.size - int(keep.sum()), ci, alpha,
                                   n_boot, seed))
    columns = ["test_set", "model", "n_pos", "n_neg", "n_excluded", "auc", "ci_low", "ci_high",
               "note"]
    return pd.DataFrame(rows, columns=columns).astype(
        {"n_pos": np.int64, "n_neg": np.int64, "n_excluded": np.int64})


def _auc_row(y: np.ndarray, s: np.ndarray, n_excluded: int, ci: str, alpha: float, n_boot: int,
             seed) -> dict:
    """One auc_table row; one class only becomes a note instead of the InputError."""
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0 or n_pos == y.size:
        note = ("n/a: no scored cases" if y.size == 0 else
                "n/a: no positives" if n_pos == 0 else "n/a: no negatives")
        return {"n_pos": n_pos, "n_neg": y.size - n_pos, "n_excluded": n_excluded,
                "auc": math.nan, "ci_low": math.nan, "ci_high": math.nan, "note": note}
    if ci == "delong":
        r = _delong_result(y, s, alpha, n_excluded)
    elif ci == "bootstrap":
        r = _bootstrap_result(y, s, n_boot, alpha, seed, n_excluded)
    else:
        r = AUCResult(_auc(y, s), math.nan, math.nan, math.nan, n_pos, y.size - n_pos,
                      n_excluded, "none")
    note = ("CI n/a: DeLong needs 2 positives and 2 negatives"
            if ci == "delong" and math.isnan(r.ci_low) else "")
    return {"n_pos": r.n_pos, "n_neg": r.n_neg, "n_excluded": n_excluded, "auc": r.auc,
            "ci_low": r.ci_low, "ci_high": r.ci_high, "note": note}
