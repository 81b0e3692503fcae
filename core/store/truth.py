"""Case truth and model scores at scale, read from the derived ``cases`` table.

The truth of a test set (one row per case, in case_id order) is the same for every model and
survives a predictions import, and reading it is the larger part of `Store.scores` on big
stores: so a `Store` keeps the last few in a `TruthCache`, keyed by the store's truth token,
which every write that can change a truth renews (`core.store.derived`). Each model's scores
are then placed on the truth by the integer ``case_hash`` (`core.store.schema`), not by a
string join.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import duckdb
import numpy as np
import pandas as pd
import pyarrow.compute as pc


SCORE_CASE_COLUMNS = ("case_id", "exam_id", "laterality", "image_id", "label", "histology",
                      "density")
SCORE_FRAME = ["model", *SCORE_CASE_COLUMNS, "score", "benign"]


class Truth(NamedTuple):
    frame: pd.DataFrame    # the cases, in case_id order
    index: pd.Index        # their case_hash, to place each model's scores (hash table kept)


class TruthCache:
    """A small thread-safe LRU of case-truth frames (pandas copy-on-write keeps them intact)."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._frames: OrderedDict[tuple, Truth] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> Truth | None:
        with self._lock:
            if key in self._frames:
                self._frames.move_to_end(key)
                return self._frames[key]
            return None

    def put(self, key: tuple, frame: Truth) -> None:
        with self._lock:
            self._frames[key] = frame
            while len(self._frames) > self.size:
                self._frames.popitem(last=False)


def truth_token(con: duckdb.DuckDBPyConnection) -> str | None:
    """The token every truth-changing write renews: a cached truth under an older one is stale."""
    rows = con.execute("SELECT value FROM meta WHERE key = 'truth_token'").fetchall()
    return rows[0][0] if rows else None


def read_truth(con: duckdb.DuckDBPyConnection, level: str, where: str, params: list,
               density_source: str, columns: Sequence[str]) -> Truth:
    """``columns`` of the ``cases`` rows ``c`` at ``level`` where ``where`` holds, in case_id
    order, with ``density`` (the exam category from ``density_source``) and ``case_hash``."""
    fetched = [c for c in dict.fromkeys(["case_id", *columns]) if c != "image_id"]
    fetched += ["density_label AS density"] if density_source == "label" else ["exam_hash"]
    table = con.sql(f"""
        SELECT c.case_hash, {", ".join("c." + c for c in fetched)}
        FROM cases c WHERE c.level = ? AND {where}""", params=[level, *params]).to_arrow_table()
    ids = table["case_id"]
    if len(ids) > 1 and pc.any(pc.less(ids[1:], ids[:-1])).as_py():  # rows appended by an update
        table = table.take(pc.sort_indices(ids))
    frame = table.to_pandas()
    if "image_id" in columns:
        frame["image_id"] = frame["case_id"] if level == "image" else pd.Series(
            pd.NA, index=frame.index, dtype=frame["case_id"].dtype)
    frame["label"] = frame["label"].astype("Int8")
    if density_source != "label":
        density = con.sql("SELECT exam_hash, category FROM density WHERE level = 'exam' "
                          "AND source = ?", params=[density_source]).to_arrow_table()
        frame["density"] = _lookup(density["exam_hash"], density["category"],
                                   frame.pop("exam_hash"))
    frame["density"] = frame["density"].astype("Int8")
    return Truth(frame, pd.Index(frame["case_hash"].to_numpy()))


def read_scores(con: duckdb.DuckDBPyConnection, truth: Truth, models: Sequence[str],
                level: str) -> pd.DataFrame:
    """Each model's malignant and benign scores placed on every case of ``truth`` (NaN where
    the model has none). Columns: `SCORE_FRAME`."""
    parts = []
    n = len(truth.index)
    for model in dict.fromkeys(models):
        scored = con.sql("SELECT case_hash, malignant, benign FROM predictions "
                         "WHERE model = ? AND level = ?", params=[model, level]).to_arrow_table()
        at = truth.index.get_indexer(scored["case_hash"].to_numpy())
        parts.append(truth.frame.assign(model=model, score=_place(scored["malignant"], at, n),
                                        benign=_place(scored["benign"], at, n)))
    if not parts:
        return truth.frame.iloc[:0].assign(model="", score=np.nan, benign=np.nan)[SCORE_FRAME]
    frame = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    return frame[SCORE_FRAME]


def _lookup(keys, values, targets) -> np.ndarray:
    """``values`` (float64) at the unique integer ``keys`` equal to ``targets``; NaN where a
    target has no key or the value is NULL."""
    at = pd.Index(np.asarray(keys, dtype=np.uint64)).get_indexer(
        np.asarray(targets, dtype=np.uint64))
    values = values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    out = np.full(len(at), np.nan)
    found = at >= 0
    out[found] = values[at[found]]
    return out


def _place(values, at: np.ndarray, n: int) -> np.ndarray:
    """``n`` NaN with ``values[i]`` put at position ``at[i]`` (skipping -1; NULL stays NaN)."""
    values = values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    out = np.full(n, np.nan)
    found = np.flatnonzero(at >= 0)
    out[at[found]] = values[found]
    return out
