"""Filter batches: the pixel AUC of every filter on every annotated cancer image of a test set.

The study's first question is whether conventional image processing makes ILC more visible.
`run_filters` answers it per image: the latest annotation is the tumour region, the healthy
region is its mirror image on the contralateral same-view image (else a ring around the tumour),
and `core.image.regions.filter_aucs` gives each method's tumour-vs-healthy AUC. `core.reports.filters`
reads the stored AUCs back for the Filters page and ``python -m core filters run``.

Cache key. A stored row is keyed by (image_id, method, params_hash, annotation_version), so a
run computes only what is missing: a new annotation version recomputes that image, changed
parameters that method. `result_key` is `core.image.filters.params_hash` for the study's healthy
region (mirror, else a 20-px ring); another ring width is folded into the hash, because the
table has no column for it and results of two ring widths must never mix.

Work. Images are independent; a process pool filters them. Workers never open the store: the
parent writes each chunk of rows to a result folder (`core.store.write_result`) and
`Store.ingest`s it in one transaction with the run's ``runs`` row (`core.jobs.run_folder`), so
a stopped run keeps the chunks it finished and the next run computes only the rest. Workers are
forked where the platform can: spawned (or forkserver) workers re-run the parent's ``__main__``
file, and under Streamlit that is the app script itself (Streamlit installs it as
``sys.modules['__main__']``), which would draw the app, or build a demo store, in every worker.
"""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from core import progress as _progress
from core.errors import InputError
from core.image.filters import METHODS, params_hash, resolve_params
from core.io.pixels import read_mask
from core.io.images import read_pixels
from core.image.regions import ALL_METHODS, filter_aucs, healthy_region, tumour_region
from core.jobs.run_folder import RunFolder
from core.store import Store
from core.validation import check_positive_int

__all__ = [
    "DEFAULT_RING_PX", "PARAM_CHOICES", "FilterPlan", "FilterTask", "RunSummary",
    "check_settings", "compute_task", "default_workers", "load_task", "make_task",
    "plan_filter_run", "result_key", "run_filters", "select_images", "shared_depth",
    "stored_keys", "wanted_keys",
]

DEFAULT_RING_PX = 20  # the study's ring width
RESULT_COLUMNS = ["image_id", "method", "params_hash", "annotation_version", "healthy_region",
                  "auc", "n_tumour", "n_healthy"]
# Valid values of the text parameters (core.image.filters validates them; pickers offer these).
PARAM_CHOICES: Mapping[str, Mapping[str, tuple]] = {
    "M3": {"method": ("otsu", "manual"), "roi": ("breast", "image")},
    "M4": {"method": ("gaussian", "mean", "median")},
    "M5": {"operator": ("sobel", "prewitt")},
    "M7": {"wavelet": ("db4", "db2", "haar", "sym4", "coif1", "bior2.2")},
}
_SELECTION_COLUMNS = ["image_id", "exam_id", "laterality", "view", "histology", "label",
                      "annotation_version", "mask_path", "abs_path", "bit_depth", "spacing_mm",
                      "other_image_id", "other_path", "other_bit_depth"]


@dataclass(frozen=True)
class FilterTask:
    """One image's work, picklable for the pool: files, the methods missing, their settings."""

    image_id: str
    annotation_version: int
    image_path: str
    mask_path: str                 # absolute path of the annotation's mask PNG
    view: str | None
    other_image_id: str | None     # the contralateral same-view image, when there is one
    other_path: str | None
    bit_depth: int | None          # stored bits of the image and of the contralateral one
    other_bit_depth: int | None
    spacing_mm: float | None
    methods: tuple[str, ...]
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    ring_px: int = DEFAULT_RING_PX
    ring_mm: float | None = None


@dataclass(frozen=True)
class FilterPlan:
    """What a run over a test set would do: every selected image, and the tasks still missing."""

    images: pd.DataFrame           # `select_images` rows
    tasks: tuple[FilterTask, ...]  # images with at least one missing (method, key)

    @property
    def n_pending(self) -> int:
        return len(self.tasks)


@dataclass(frozen=True)
class RunSummary:
    """What `run_filters` did: images selected, computed, already stored, failed (with why)."""

    test_set: str
    n_images: int
    n_computed: int
    n_cached: int
    n_failed: int
    n_rows: int                               # filter_results rows written
    failures: tuple[tuple[str, str], ...]     # (image_id, reason)
    elapsed_s: float

    def to_dict(self) -> dict:
        return {"test_set": self.test_set, "n_images": self.n_images,
                "n_computed": self.n_computed, "n_cached": self.n_cached,
                "n_failed": self.n_failed, "n_rows": self.n_rows,
                "failures": [{"image_id": i, "reason": r} for i, r in self.failures],
                "elapsed_s": round(self.elapsed_s, 3)}


# --- selection and keys -----------------------------------------------------------------------


def select_images(store: Store, *, test_set: str, malignant_only: bool = True) -> pd.DataFrame:
    """Annotated images of a test set with pixels, their latest annotation and contralateral.

    Returns
    -------
    DataFrame, one row per image: image_id, exam_id, laterality, view, histology, label,
    annotation_version, mask_path (absolute), abs_path, bit_depth, spacing_mm, other_image_id,
    other_path, other_bit_depth (the other breast's image of the same CC/MLO view in the same
    exam, with pixels; None where there is none). ``malignant_only`` keeps cancer images (the
    study's tumours; benign findings are annotated too in mini-MIAS and the demo).
    """
    ann = store.latest_annotations(test_set=test_set)
    if ann.empty:
        return pd.DataFrame(columns=_SELECTION_COLUMNS)
    images = store.images(test_set=test_set)
    images = images[images["abs_path"].notna()]
    cases = store.cases(test_set=test_set, level="image")[["image_id", "label", "histology"]]
    sel = ann[["image_id", "version", "mask_path"]].rename(
        columns={"version": "annotation_version"})
    sel = sel.assign(mask_path=[str(store.files_dir / p) for p in sel["mask_path"]])
    sel = sel.merge(images[["image_id", "exam_id", "laterality", "view", "abs_path",
                            "bit_depth", "spacing_mm"]], on="image_id")
    sel = sel.merge(cases, on="image_id", how="left")
    if malignant_only:
        sel = sel[sel["label"] == 1]
    other = images[images["view"].isin(["CC", "MLO"])].sort_values("image_id")
    other = other.assign(laterality=other["laterality"].map({"L": "R", "R": "L"})).drop_duplicates(
        ["exam_id", "view", "laterality"])[["exam_id", "view", "laterality", "image_id",
                                            "abs_path", "bit_depth"]]
    other.columns = ["exam_id", "view", "laterality", "other_image_id", "other_path",
                     "other_bit_depth"]
    sel = sel.merge(other, on=["exam_id", "view", "laterality"], how="left")
    sel = sel.astype(object).where(sel.notna(), None)   # NaN -> None: a missing file is falsy
    return sel[_SELECTION_COLUMNS].sort_values("image_id", ignore_index=True)


def result_key(code: str, params: Mapping[str, Any] | None = None, *,
               ring_px: int = DEFAULT_RING_PX, ring_mm: float | None = None) -> str:
    """The ``params_hash`` a result is stored under: the method's parameters and the ring.

    Equals `core.image.filters.params_hash` for the study's 20-px ring; another ring width (or a
    width in mm) gives another 12-hex-digit key.
    """
    key = params_hash(code, params)
    if ring_mm is None and int(ring_px) == DEFAULT_RING_PX:
        return key
    ring = f"ring_mm={float(ring_mm):g}" if ring_mm is not None else f"ring_px={int(ring_px)}"
    return hashlib.sha256(f"{key}|{ring}".encode()).hexdigest()[:12]


def check_settings(methods: Sequence[str], params: Mapping | None, ring_px: int,
                   ring_mm: float | None) -> tuple[tuple[str, ...], dict[str, dict]]:
    """Methods (deduplicated) and their parameter overrides, checked; the ring width too."""
    methods = tuple(dict.fromkeys(methods))
    if not methods:
        raise InputError("methods is empty; pass at least one of " + ", ".join(METHODS))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InputError(f"method {unknown[0]!r} is unknown; pass codes from "
                         + ", ".join(METHODS))
    params = dict(params or {})
    for code, p in params.items():
        resolve_params(code, p)   # an unknown code or parameter name is an InputError here
    params = {code: dict(p) for code, p in params.items() if code in methods}
    if ring_mm is not None and not float(ring_mm) > 0:
        raise InputError(f"ring_mm is {ring_mm}; pass a ring width in mm > 0, e.g. 4")
    if ring_mm is None and not int(ring_px) >= 1:
        raise InputError(f"ring_px is {ring_px}; pass a ring width of at least 1 pixel")
    return methods, params


def stored_keys(store: Store, wanted: pd.DataFrame) -> pd.DataFrame:
    """The filter_results rows among ``wanted`` (its key columns)."""
    keys = wanted[["image_id", "method", "params_hash", "annotation_version"]]
    return store.rows("filter_results", keys)


def wanted_keys(images: pd.DataFrame, methods, params, ring_px, ring_mm) -> pd.DataFrame:
    """The filter_results keys these settings need for ``images`` (`select_images` rows)."""
    keys = {m: result_key(m, params.get(m), ring_px=ring_px, ring_mm=ring_mm) for m in methods}
    return pd.DataFrame(
        [(r.image_id, m, keys[m], int(r.annotation_version))
         for r in images.itertuples() for m in methods],
        columns=["image_id", "method", "params_hash", "annotation_version"])


def plan_filter_run(store: Store, *, test_set: str, methods: Sequence[str] = ALL_METHODS,
                    params: Mapping[str, Mapping[str, Any]] | None = None,
                    ring_px: int = DEFAULT_RING_PX, ring_mm: float | None = None,
                    malignant_only: bool = True) -> FilterPlan:
    """The images of ``test_set`` and, per image, the methods without a stored result."""
    methods, params = check_settings(methods, params, ring_px, ring_mm)
    images = select_images(store, test_set=test_set, malignant_only=malignant_only)
    if ring_mm is not None and images["spacing_mm"].isna().any():
        n = int(images["spacing_mm"].isna().sum())
        raise InputError(f"ring_mm is {ring_mm} but {n} image(s) of {test_set} have no pixel "
                         "spacing; use ring_px instead")
    if images.empty:
        return FilterPlan(images, ())
    wanted = wanted_keys(images, methods, params, ring_px, ring_mm)
    done = stored_keys(store, wanted)
    done_pairs = set(zip(done["image_id"], done["method"]))
    tasks = []
    for r in images.itertuples():
        missing = tuple(m for m in methods if (r.image_id, m) not in done_pairs)
        if missing:
            tasks.append(make_task(r, missing, params, ring_px, ring_mm))
    return FilterPlan(images, tuple(tasks))


def make_task(row, methods, params, ring_px, ring_mm) -> FilterTask:
    """The `FilterTask` of one `select_images` row."""
    return FilterTask(
        image_id=row.image_id, annotation_version=int(row.annotation_version),
        image_path=row.abs_path, mask_path=row.mask_path, view=row.view,
        other_image_id=row.other_image_id, other_path=row.other_path,
        bit_depth=_int_or_none(row.bit_depth), other_bit_depth=_int_or_none(row.other_bit_depth),
        spacing_mm=None if row.spacing_mm is None else float(row.spacing_mm),
        methods=tuple(methods), params={m: dict(params[m]) for m in methods if m in params},
        ring_px=int(ring_px), ring_mm=None if ring_mm is None else float(ring_mm))


def _int_or_none(value) -> int | None:
    return None if value is None else int(value)


def shared_depth(task: FilterTask, contralateral: bool) -> int | None:
    """One bit depth for the images compared (the larger stored one), None to infer it."""
    depths = [d for d in (task.bit_depth, task.other_bit_depth if contralateral else None)
              if d is not None]
    return max(depths) if depths else None


# --- the work ---------------------------------------------------------------------------------


def load_task(task: FilterTask):
    """Pixels, tumour mask, healthy region and the contralateral pixels of one task."""
    pixels = read_pixels(task.image_path)
    tumour = tumour_region(read_mask(task.mask_path), pixels.shape)
    other = read_pixels(task.other_path) if task.other_path else None
    healthy = healthy_region(tumour, pixels, view=task.view, other_image=other,
                             ring_px=task.ring_px, ring_mm=task.ring_mm,
                             spacing_mm=task.spacing_mm)
    return pixels, tumour, healthy, other if healthy.source_image == "contralateral" else None


def compute_task(task: FilterTask) -> pd.DataFrame:
    """One image's filter_results rows (`RESULT_COLUMNS`): `filter_aucs` with the stored keys."""
    pixels, tumour, healthy, other = load_task(task)
    table = filter_aucs(pixels, tumour, healthy, other_pixels=other, methods=task.methods,
                        params=task.params, bit_depth=shared_depth(task, other is not None))
    keys = [result_key(m, task.params.get(m), ring_px=task.ring_px, ring_mm=task.ring_mm)
            for m in table["method"]]
    table = table.assign(image_id=task.image_id, params_hash=keys,
                         annotation_version=task.annotation_version)
    return table[RESULT_COLUMNS]


def _attempt(task: FilterTask) -> tuple[str, pd.DataFrame | None, str | None]:
    try:
        return task.image_id, compute_task(task), None
    except Exception as exc:  # one bad file must not lose the batch; reported per image
        return task.image_id, None, f"{type(exc).__name__}: {exc}"


def _outcomes(tasks: Sequence[FilterTask], workers: int) -> Iterator[tuple]:
    if workers == 1 or len(tasks) <= 1:
        yield from map(_attempt, tasks)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)),
                               mp_context=multiprocessing.get_context(method))
    try:
        futures = [pool.submit(_attempt, t) for t in tasks]
        for future in as_completed(futures):
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def default_workers() -> int:
    """Processes when none are asked for: two at most (each holds a few images in memory)."""
    return min(2, os.cpu_count() or 1)


def run_filters(store: Store, *, test_set: str, methods: Sequence[str] = ALL_METHODS,
                params: Mapping[str, Mapping[str, Any]] | None = None,
                ring_px: int = DEFAULT_RING_PX, ring_mm: float | None = None,
                malignant_only: bool = True, workers: int | None = None,
                chunk_images: int = 32, progress: _progress.ProgressFn | None = None,
                resume: str | None = None) -> RunSummary:
    """Compute and store the missing filter AUCs of a test set's annotated images.

    Parameters
    ----------
    store : Store, writable.
    test_set : str, a named test set (each dataset's own name is one).
    methods : codes of `core.image.filters.METHODS`; default all ('original', 'M1'..'M7').
    params : {code: {name: value}}, optional; overrides of the defaults.
    ring_px, ring_mm : the ring width where no contralateral image exists: pixels (the study's
        20) or mm (converted with each image's ``spacing_mm``).
    malignant_only : bool, only images of cancer breasts (default; the study's tumours).
    workers : int, optional; processes (default ``min(2, cpu count)``; 1 runs in this process).
    chunk_images : int, images per ingest transaction (a chunk of the run).
    progress : ProgressFn, optional; called once per image finished.
    resume : str, optional; the run_id of a failed or cancelled run with these settings: its
        row continues (the images it stored are skipped, as by any run).

    Returns
    -------
    RunSummary. Images that fail (an unreadable file, a mask of the wrong size) are listed in
    ``failures`` and store nothing; the others are stored. A cancel request
    (`core.jobs.run_folder.request_cancel`) stops the run before its next chunk with
    `RunCancelled`; the ``runs`` row records the run either way.
    """
    start = time.perf_counter()
    workers = default_workers() if workers is None else check_positive_int(workers, name="workers")
    check_positive_int(chunk_images, name="chunk_images")
    if store.read_only:
        raise InputError(f"store {store.path} is open read-only (demo mode); filter runs "
                         "are disabled")
    plan = plan_filter_run(store, test_set=test_set, methods=methods, params=params,
                           ring_px=ring_px, ring_mm=ring_mm, malignant_only=malignant_only)
    settings = {"test_set": test_set, "methods": list(dict.fromkeys(methods)),
                "params": params or {}, "ring_px": ring_px, "ring_mm": ring_mm,
                "malignant_only": malignant_only}
    total = plan.n_pending
    pending: list[pd.DataFrame] = []
    failures: list[tuple[str, str]] = []
    n_rows = 0
    # keep=False: once done, every result is in the store and the folder goes
    with RunFolder.open(store, "filters", settings, resume=resume, keep=False) as run:
        progress = run.tee(progress)
        _progress.report(progress, 0, total, f"{total} image(s) to compute")
        for done, (image_id, table, error) in enumerate(_outcomes(plan.tasks, workers), 1):
            if error is not None:
                failures.append((image_id, error))
            else:
                pending.append(table)
            if len(pending) >= chunk_images:
                n_rows += _ingest(run, pending)
                pending = []
            _progress.report(progress, done, total, image_id)
        if pending:
            n_rows += _ingest(run, pending)
    failures.sort()
    return RunSummary(test_set, len(plan.images), total - len(failures),
                      len(plan.images) - total, len(failures), n_rows, tuple(failures),
                      time.perf_counter() - start)


def _ingest(run: RunFolder, tables: list[pd.DataFrame]) -> int:
    """One chunk; a resumed run numbers its chunks after those it ingested before."""
    frame = pd.concat(tables, ignore_index=True)
    return run.ingest(f"chunk-{len(run.chunks):05d}", {"filter_results": frame})["filter_results"]
