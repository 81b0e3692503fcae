"""One run folder for every job (filters, predict, density; training next).

Why: a job is long, may run in its own process (``python -m core ...``), and must never hold the
store's write lock while it computes. So each run gets a folder
``<store files>/runs/<kind>-<timestamp>-<random>/`` holding

- ``params.json``: the parameters and the code version (git commit, else a hash of the package
  files), written when the run starts (and again when the job records a result-dependent
  setting, such as the calibration a density run fitted);
- ``progress.json``: done, total, message, rewritten atomically at most every
  `PROGRESS_EVERY_S` seconds, so another process (a page) can follow the run;
- one sub-folder per chunk of results (`core.store.write_result`), each loaded by one
  `Store.ingest` transaction together with the run's ``runs`` row (status, progress, rows
  ingested per table, chunks ingested): the store never shows a chunk without its bookkeeping;
- ``cancel``: created by `request_cancel` (any process); the job checks for it before each
  chunk and stops with status 'cancelled', the store holding whole chunks only.

A run that failed or was cancelled is resumed with `RunFolder.open(..., resume=run_id)`: the
chunks it ingested are skipped (`RunFolder.ingested`), the rest run under the same row.
"""
from __future__ import annotations

import functools
import hashlib
import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import pandas as pd

from core.errors import InputError
from core.progress import ProgressFn, report
from core.store import Store, write_result
from core.store.runs import get_run, run_frame, to_json, write_run

__all__ = ["CANCEL_FILE", "PROGRESS_EVERY_S", "RUNS_FOLDER", "RunCancelled", "RunFolder", "code_version",
           "read_progress", "request_cancel"]

RUNS_FOLDER = "runs"             # under the store's files folder
CANCEL_FILE = "cancel"           # in a run's folder: a stop request, from any process
PROGRESS_EVERY_S = 0.5           # progress.json rewrites at most this often (the last always)
_REPO = Path(__file__).resolve().parents[2]
_PACKAGES = ("core", "models", "cli", "ui", "pages")


class RunCancelled(Exception):
    """The run stopped at a cancel request; every chunk before it is stored."""


@functools.cache
def code_version() -> str:
    """The git commit of the checkout, else ``sha256:`` + a hash of the package files."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True,
                             text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    digest = hashlib.sha256()
    for package in _PACKAGES:
        for path in sorted((_REPO / package).rglob("*.py")):
            digest.update(path.relative_to(_REPO).as_posix().encode())
            digest.update(path.read_bytes())
    return "sha256:" + digest.hexdigest()[:16]


class RunFolder:
    """A job's folder and ``runs`` row. Use as a context manager around the job's work.

    Leaving the block normally marks the run 'done'; `RunCancelled` or KeyboardInterrupt
    'cancelled'; any other exception 'failed' with its message, on one line, in ``error``.
    ``keep=False`` removes the folder once the run is done (filters: every result is in the
    store) and each chunk's files once ingested; a failed or cancelled run keeps it for a resume.
    """

    def __init__(self, store: Store, row: dict, *, keep: bool) -> None:
        self.store = store
        self.keep = keep
        self._row = row
        self._written = 0.0

    # ------------------------------------------------------------------ start
    @classmethod
    def open(cls, store: Store, kind: str, params: Mapping, *, resume: str | None = None,
             keep: bool = True) -> RunFolder:
        """Start a run of ``kind`` with ``params`` (JSON-able), or resume run ``resume``.

        A resumed run must be of the same kind, not done, and started with the same
        ``params`` (each key given); its status returns to 'running'.
        """
        if store.read_only:
            raise InputError(f"store {store.path} is open read-only (demo mode); jobs are disabled")
        params = json.loads(to_json(dict(params)))   # as stored: tuples become lists
        if resume is not None:
            run = cls._resumed(store, kind, params, resume, keep)
        else:
            run = cls._new(store, kind, params, "running", keep)
        run._start()
        return run

    @classmethod
    def queue(cls, store: Store, kind: str, params: Mapping, *, resume: str | None = None) -> RunFolder:
        """A run waiting for its worker (`core.jobs.detached`): status 'queued', no work yet; the
        job's own ``open(..., resume=run_id)`` takes it over. ``resume`` queues a stopped run again."""
        if store.read_only:
            raise InputError(f"store {store.path} is open read-only (demo mode); jobs are disabled")
        if resume is None:
            run = cls._new(store, kind, json.loads(to_json(dict(params))), "queued", True)
        else:
            row = get_run(store, resume)
            if row is None or row["kind"] != kind or row["status"] == "done":
                raise InputError(f"resume is {resume!r}, which is no unfinished {kind} run in this store")
            run = cls(store, row | {"status": "queued", "ended_at": None, "error": None}, keep=True)
            (run.path / CANCEL_FILE).unlink(missing_ok=True)
        run._start()
        return run

    @classmethod
    def _new(cls, store: Store, kind: str, params: dict, status: str, keep: bool) -> RunFolder:
        started = datetime.now()
        run_id = f"{kind}-{started:%Y%m%dT%H%M%S%f}-{secrets.token_hex(2)}"  # sorts by time
        return cls(store, {
            "run_id": run_id, "kind": kind, "params": params, "code_version": code_version(),
            "status": status, "started_at": started, "progress_done": 0,
            "ingested": {}, "chunks": [], "folder": f"{RUNS_FOLDER}/{run_id}"}, keep=keep)

    def _start(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self._write_params()
        write_run(self.store, self._row)

    @classmethod
    def _resumed(cls, store: Store, kind: str, params: dict, run_id: str, keep: bool) -> RunFolder:
        row = get_run(store, run_id)
        if row is None or row["kind"] != kind:
            raise InputError(f"resume is {run_id!r}, which is no {kind} run in this store; pass "
                             f"the run_id of a failed or cancelled {kind} run")
        if row["status"] == "done":
            raise InputError(f"run {run_id} is done; start a new run instead of resuming it")
        differ = sorted(k for k, v in params.items() if row["params"].get(k) != v)
        if differ:
            raise InputError(f"run {run_id} was started with other {', '.join(differ)}; resume it "
                             "with its own parameters or start a new run")
        run = cls(store, row | {"status": "running", "ended_at": None, "error": None,
                                "code_version": code_version()}, keep=keep)
        (run.path / CANCEL_FILE).unlink(missing_ok=True)
        return run

    # ------------------------------------------------------------------ state
    @property
    def run_id(self) -> str:
        return self._row["run_id"]

    @property
    def path(self) -> Path:
        return self.store.files_dir / self._row["folder"]

    @property
    def row(self) -> dict:
        """The run's ``runs`` row as it stands (JSON columns as Python objects)."""
        return dict(self._row)

    @property
    def params(self) -> dict:
        return self._row["params"]

    @property
    def chunks(self) -> tuple[str, ...]:
        """Names of the chunks ingested so far, in order."""
        return tuple(self._row["chunks"])

    def ingested(self, chunk: str) -> bool:
        """Whether chunk ``chunk`` landed already (a resumed job skips it)."""
        return chunk in self._row["chunks"]

    def record(self, **params) -> None:
        """Add settings found while running (a fitted calibration) to the run's parameters;
        they are stored with the next chunk (or the end of the run)."""
        self._row["params"] = self.params | json.loads(to_json(params))
        self._write_params()

    # ------------------------------------------------------------------ progress and cancel
    def progress(self, done: int, total: int, message: str = "") -> None:
        """A `core.progress.ProgressFn`: progress.json, throttled (the last update always)."""
        self._row |= {"progress_done": int(done), "progress_total": int(total),
                      "message": str(message)[:500]}
        now = time.monotonic()
        if now - self._written >= PROGRESS_EVERY_S or done >= total:
            self._written = now
            _write_json(self.path / "progress.json",
                        {"done": int(done), "total": int(total), "message": str(message),
                         "updated_at": datetime.now().isoformat(timespec="seconds")})

    def tee(self, progress: ProgressFn | None) -> ProgressFn:
        """A ProgressFn reporting to this run and to ``progress`` (a bar), if given."""
        def both(done: int, total: int, message: str = "") -> None:
            self.progress(done, total, message)
            report(progress, done, total, message)
        return both

    def cancel_requested(self) -> bool:
        """Whether `request_cancel` was called for this run (a file, so any process can)."""
        return (self.path / CANCEL_FILE).exists()

    def check_cancel(self) -> None:
        """Raise `RunCancelled` if a cancel was requested (the job calls it between chunks)."""
        if self.cancel_requested():
            raise RunCancelled(f"run {self.run_id} was cancelled; resume it with its run_id")

    # ------------------------------------------------------------------ results
    def ingest(self, chunk: str, frames: Mapping[str, pd.DataFrame], *,
               delete: Sequence[Mapping] = ()) -> dict[str, int]:
        """Store one chunk of results and the run's row in one transaction.

        Checks for a cancel request first; a chunk ingested before (a resume) is skipped and
        returns {}. Returns rows written per table.
        """
        if "runs" in frames:
            raise InputError("a job's frames cannot hold the runs table; the run writes its own row")
        if self.ingested(chunk):
            return {}
        self.check_cancel()
        written = {t: len(f) for t, f in frames.items()}   # upserts write every row given
        row = self._row | {
            "ingested": _add(self._row["ingested"], written), "chunks": [*self.chunks, chunk]}
        chunk_dir = self.path / chunk
        write_result(chunk_dir, {**frames, "runs": run_frame(row)}, delete=delete)
        written = self.store.ingest(chunk_dir)
        written.pop("runs")
        self._row = row
        if not self.keep:
            shutil.rmtree(chunk_dir, ignore_errors=True)
        return written

    # ------------------------------------------------------------------ end
    def finish(self, status: str, error: str | None = None) -> None:
        """Write the final row ('done', 'failed' or 'cancelled')."""
        self._row |= {"status": status, "ended_at": datetime.now(), "error": error}
        write_run(self.store, self._row)
        if status == "done" and not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None:
            self.finish("done")
            return False
        cancelled = isinstance(exc, (RunCancelled, KeyboardInterrupt))
        # one line, as tables and `runs list` show it (a library's message may span several)
        error = " ".join(f"{type(exc).__name__}: {exc}".split())[:2000]
        try:
            self.finish("cancelled" if cancelled else "failed", None if cancelled else error)
        except Exception as second:  # the job's own error matters more than the bookkeeping's
            exc.add_note(f"(run {self.run_id} could not record its end: {second})")
        return False

    def _write_params(self) -> None:
        _write_json(self.path / "params.json", {
            "run_id": self.run_id, "kind": self._row["kind"], "params": self.params,
            "code_version": self._row["code_version"],
            "started_at": self._row["started_at"].isoformat()})


def request_cancel(store: Store, run_id: str) -> None:
    """Ask run ``run_id`` to stop before its next chunk (works from any process)."""
    row = get_run(store, run_id)
    if row is None:
        raise InputError(f"run_id {run_id!r} is not in this store; see the runs table")
    if row["status"] != "running":
        raise InputError(f"run {run_id} is {row['status']}, not running; nothing to cancel")
    (store.files_dir / row["folder"] / CANCEL_FILE).touch()


def read_progress(store: Store, run_id: str) -> dict | None:
    """The run's live progress (done, total, message, updated_at), or None before the first."""
    row = get_run(store, run_id)
    path = None if row is None else store.files_dir / row["folder"] / "progress.json"
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def _add(counts: Mapping[str, int], more: Mapping[str, int]) -> dict[str, int]:
    return {t: int(counts.get(t, 0)) + int(more.get(t, 0)) for t in {**counts, **more}}


def _write_json(path: Path, value) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1, default=str))
    tmp.replace(path)
