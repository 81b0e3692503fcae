"""The ``runs`` table: what each job ran, with what code and parameters, and how it ended.

`core.jobs.run_folder` writes the rows (a chunk's row rides in the chunk's own result folder, so
it lands in the chunk's ingest transaction); pages, reports and the CLI read them here. The JSON
columns (params, ingested, chunks) come back decoded.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from core.store.schema import TABLE_COLUMNS

if TYPE_CHECKING:
    from core.store import Store

RUN_STATUSES = ("queued", "running", "done", "failed", "cancelled")
_JSON_COLUMNS = ("params", "ingested", "chunks")

__all__ = ["RUN_STATUSES", "get_run", "latest_run", "list_runs", "run_frame", "to_json",
           "write_run"]


def to_json(value) -> str:
    """JSON text of job parameters: NumPy scalars and arrays as numbers and lists, else str."""
    return json.dumps(value, default=_json_default)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def run_frame(row: Mapping) -> pd.DataFrame:
    """A one-row ``runs`` frame from a row dict (JSON columns given as Python objects)."""
    out = {c: row.get(c) for c in TABLE_COLUMNS["runs"]}
    for c in _JSON_COLUMNS:
        out[c] = None if out[c] is None else to_json(out[c])
    frame = pd.DataFrame([out])
    for c in ("started_at", "ended_at"):
        frame[c] = pd.to_datetime(frame[c])
    for c in ("progress_done", "progress_total"):
        frame[c] = frame[c].astype("Int64")
    return frame


def write_run(store: Store, row: Mapping) -> None:
    """Insert or update one run's row (its own short transaction)."""
    store.write_tables({"runs": run_frame(row)})


def get_run(store: Store, run_id: str) -> dict | None:
    """The row of run ``run_id`` as a dict (JSON columns decoded), or None."""
    rows = store.select("runs", run_id=run_id)
    return _decode(rows.iloc[0]) if len(rows) else None


def list_runs(store: Store, **match) -> list[dict]:
    """The rows matching ``match`` (`Store.select`'s equals: a value or a list of values), newest
    first, as dicts with the JSON columns decoded."""
    rows = store.select("runs", **match).sort_values(["started_at", "run_id"], ascending=False)
    return [_decode(row) for _, row in rows.iterrows()]


def latest_run(store: Store, kind: str, *, status: str | None = "done", landed: bool = False,
               **params) -> dict | None:
    """The newest run of ``kind`` (with ``status``; None: any) whose parameters include
    ``params`` (each key equal), or None. ``landed``: only runs that ingested a chunk."""
    match = {"kind": kind} | ({} if status is None else {"status": status})
    for run in list_runs(store, **match):
        if landed and not run["chunks"]:
            continue
        if all(run["params"].get(k) == v for k, v in params.items()):
            return run
    return None


def _decode(row: pd.Series) -> dict:
    run = {c: None if pd.isna(v) else v for c, v in row.items()}
    for c in _JSON_COLUMNS:
        run[c] = json.loads(run[c]) if run[c] is not None else None
    for c in ("progress_done", "progress_total"):
        run[c] = None if run[c] is None else int(run[c])
    return run
