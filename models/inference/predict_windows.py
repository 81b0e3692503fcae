"""Prediction for the families that read the official NYU windows (GLAM, the NYU models).

Why beside `models.inference.predict` and not inside it: GMIC in ILCscope resizes the breast box, one
image at a time, and may run as an ensemble; these families cut the official window around the
best centre (`models.inference.windows`) and may average several augmented draws, as the
official runs do. Everything else is shared with GMIC's job: the run folder, chunked atomic
ingest, resumability, the saliency file format and the `PredictSummary`.

Draws: ``draws == 0`` scores the exact window (no noise); ``draws == N`` scores N augmented
windows per image and averages the scores, the draws coming from one ``RandomState(seed)``
for the whole run in image order, as the official ``run_model`` keeps one generator across its
exam list. The saliency file holds the first draw's map with that draw's geometry.

Small configs (the demo's 512 x 320 models) scale the official crop settings with the window:
erosion iterations and buffer are ``100`` and ``50`` pixels at the official window height.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from core.errors import InputError
from core.io.images import read_pixels
from core.jobs.run_folder import RunFolder
from core.progress import ProgressFn, report
from core.store import Store
from core.validation import check_positive_int
from models.device import resolve_device
from models.families import Family
from models.inference.windows import (NYU_VIEWS, WINDOWS, cut_window, draw_windows,
                                      prepare_view, window_geometry)

__all__ = ["MAX_DRAWS", "crop_settings", "predict_windows", "windows_for"]

MAX_DRAWS = 100
OFFICIAL_ITERATIONS, OFFICIAL_BUFFER = 100, 50
SALIENCY_CELL = 8          # input pixels per stored saliency cell (2944 x 1920 -> 368 x 240)


def windows_for(fam: Family, input_shape: tuple[int, int] | None) -> dict[str, tuple[int, int]]:
    """The family's windows per view angle: the official ones for its paper config, else the
    network's own input shape (a small config: one window for both angles)."""
    official = WINDOWS[fam.windows]
    if input_shape is None or tuple(input_shape) in official.values():
        return dict(official)
    return {"CC": tuple(input_shape), "MLO": tuple(input_shape)}


def crop_settings(windows: dict[str, tuple[int, int]], fam: Family) -> tuple[int, int]:
    """(erosion iterations, buffer) scaled to the window height (official: 100 and 50)."""
    ratio = windows["CC"][0] / WINDOWS[fam.windows]["CC"][0]
    return max(1, round(OFFICIAL_ITERATIONS * ratio)), max(1, round(OFFICIAL_BUFFER * ratio))


def predict_windows(
    store: Store,
    *,
    fam: Family,
    checkpoint: str | Path,
    name: str,
    test_set: str | None,
    config: str | None = None,
    draws: int | None = None,
    windows: dict[str, tuple[int, int]] | None = None,
    seed: int = 0,
    parent: str | None = None,
    description: str | None = None,
    synthetic: bool = False,
    device: str = "auto",
    batch_size: int = 4,
    overwrite: bool = False,
    chunk_size: int = 64,
    workers: int = 2,
    progress: ProgressFn | None = None,
    resume: str | None = None,
):
    """Score every image (GLAM) or every four-view exam (NYU, one score per breast) of
    ``test_set`` and store the scores (GLAM also its saliency files and patch boxes); see the
    module docstring for draws. ``windows`` overrides the family's window sizes (e.g. a scaled
    window for small images; the crop settings scale with it, and the run records both).

    Returns a `models.inference.predict.PredictSummary`.
    """
    from models.inference.predict import PredictSummary, _ingest, _stored_path

    start = time.perf_counter()
    if fam.windows is None:
        raise InputError(f"family {fam.name} does not read the official windows; its own "
                         "`predict` path runs it")
    draws = fam.default_draws if draws is None else draws
    if not isinstance(draws, int) or not 0 <= draws <= MAX_DRAWS:
        raise InputError(f"draws is {draws!r}; pass 0 (the exact window) to {MAX_DRAWS}")
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise InputError(f"model name {name!r} must be non-empty without surrounding spaces")
    for label, value in (("batch_size", batch_size), ("chunk_size", chunk_size),
                         ("workers", workers)):
        check_positive_int(value, name=label)
    images = store.images(test_set=test_set)             # unknown test set -> InputError
    dev = resolve_device(device)
    config = config or fam.default_config
    model = fam.load(Path(checkpoint), config).to(dev).eval()
    if windows is None:
        windows = windows_for(fam, getattr(model.config, "input_shape", None))
    elif set(windows) != {"CC", "MLO"}:
        raise InputError(f"windows has keys {sorted(windows)}; pass sizes for 'CC' and 'MLO'")
    iterations, buffer = crop_settings(windows, fam)
    with_pixels = images[images["abs_path"].notna()]
    existing = set()
    if not overwrite:
        existing = set(store.predictions(models=[name], level=fam.level,
                                         test_set=test_set)["exam_id" if fam.level == "breast"
                                                            else "case_id"])
    todo = with_pixels[~with_pixels["exam_id" if fam.level == "breast" else "image_id"]
                       .isin(existing)]
    stored = _stored_path(Path(checkpoint))
    preprocessing = {"windows": {k: list(v) for k, v in windows.items()}, "draws": draws,
                     "seed": seed, "crop_iterations": iterations, "crop_buffer": buffer}
    model_row = pd.DataFrame([{
        "model": name, "kind": fam.name, "checkpoint": stored, "parent": parent,
        "synthetic": bool(synthetic), "preprocess": "official-window",
        "description": description or f"{fam.title} ({config} config) from {stored}; "
                                      f"official windows, {draws} draws"}])
    store_model = bool(len(todo)) or name not in store.model_names()
    rng = np.random.RandomState(seed)
    n_predicted = n_failed = 0
    images_per_row = 2 if fam.level == "breast" else 1   # a breast row stands for CC + MLO

    def n_scored(pending: list, landed: int) -> int:
        return (landed + len(pending)) * images_per_row

    failures: list[str] = []
    rows: list[dict] = []
    compute_s = 0.0
    run = None
    if store_model:
        run = RunFolder.open(store, "predict", {
            "model": name, "family": fam.name, "test_set": test_set, "checkpoints": [stored],
            "configs": [config], "overwrite": overwrite, "preprocess": preprocessing},
            resume=resume)
        run.record(device=str(dev), batch_size=batch_size, chunk_size=chunk_size, workers=workers)
        progress = run.tee(progress)
    settings = (windows, iterations, buffer)
    units = _exams(todo) if fam.level == "breast" else [[r] for r in todo.itertuples(index=False)]
    score = _score_exams if fam.level == "breast" else _score_images
    with run or contextlib.nullcontext():
        for batch in _prepared(units, settings, batch_size, workers):
            ok = []
            for unit, prepared, error in batch:
                if error is None:
                    ok.append((unit, prepared))
                    continue
                n_failed += len(unit)
                if len(failures) < 5:
                    failures.append(f"{unit[0].exam_id if len(unit) > 1 else unit[0].image_id}: "
                                    f"{error}")
            if ok:
                t0 = time.perf_counter()
                rows += score(store, model, ok, windows, draws, rng, name, dev)
                compute_s += time.perf_counter() - t0
            while len(rows) >= chunk_size:
                _ingest(run, model_row if store_model else None, rows[:chunk_size])
                n_predicted += chunk_size
                rows, store_model = rows[chunk_size:], False
            report(progress, n_scored(rows, n_predicted) + n_failed, len(todo), name)
        if rows or store_model:
            _ingest(run, model_row if store_model else None, rows)
            n_predicted += len(rows)
    if fam.level == "breast":   # the summary counts images, as GMIC's does
        n_predicted = n_scored([], n_predicted)
    return PredictSummary(
        model=name, test_set=test_set, checkpoints=[stored], configs=[config], device=str(dev),
        n_images=len(images), n_no_pixels=len(images) - len(with_pixels),
        n_existing=len(with_pixels) - len(todo), n_predicted=n_predicted, n_failed=n_failed,
        elapsed_s=time.perf_counter() - start,
        s_per_image=compute_s / n_predicted if n_predicted else None,
        run_dir=None if run is None else str(run.path), failures=failures)


def _exams(todo: pd.DataFrame) -> list[list]:
    """The test set's exams, each a list of its image rows, in exam order."""
    return [list(g.itertuples(index=False)) for _, g in todo.groupby("exam_id", sort=True)]


def _prepare_unit(unit: list, settings) -> tuple[list, object, str | None]:
    """Crop and centre every image of a unit (one image, or one exam's four views)."""
    windows, iterations, buffer = settings
    try:
        prepared = {}
        for row in unit:
            pixels = read_pixels(row.abs_path)
            prepared[f"{row.laterality}-{row.view}"] = (
                prepare_view(pixels, row.laterality, row.view, windows[row.view],
                             iterations=iterations, buffer=buffer), pixels.shape)
        if len(unit) > 1 or unit[0] is None:
            missing = [v for v in NYU_VIEWS if v not in prepared]
            if missing or len(prepared) != len(unit):
                raise InputError(f"exam {unit[0].exam_id} has views {sorted(prepared)}; the "
                                 f"four-view model needs one image of each of {list(NYU_VIEWS)}")
        return unit, prepared, None
    except InputError as exc:   # one unreadable or blank image must not stop the run
        return unit, None, str(exc)


def _prepared(units: Sequence[list], settings, batch_size: int, workers: int) -> Iterator[list]:
    """Batches of (unit, prepared views | None, error | None), cropped and centred
    ``workers`` batches ahead in threads (the erosion is the slow part)."""
    chunks = (list(units[i:i + batch_size]) for i in range(0, len(units), batch_size))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        def submit(b):
            return pool.submit(lambda: [_prepare_unit(u, settings) for u in b])
        pending = deque(submit(b) for b in itertools.islice(chunks, workers + 1))
        while pending:
            result = pending.popleft().result()
            nxt = next(chunks, None)
            if nxt is not None:
                pending.append(submit(nxt))
            yield result


def _noise(draws: int) -> dict:
    return ({"max_crop_noise": (100, 100), "max_crop_size_noise": 100} if draws
            else {"max_crop_noise": (0, 0), "max_crop_size_noise": 0})


def _score_exams(store: Store, model, batch: Sequence[tuple], windows, draws: int,
                 rng: np.random.RandomState, name: str, device: torch.device) -> list[dict]:
    """Each exam's draws in the official order, the four views of every draw of the batch in
    one forward pass; breast probabilities averaged over the draws (official ``run_model``)."""
    from models.networks.nyu_dmv import LABELS

    cut = [draw_windows({v: p for v, (p, _) in views.items()}, windows, rng, draws)
           for _, views in batch]
    n_draws = max(draws, 1)
    x = {v: torch.from_numpy(np.stack([w.image for exam in cut for w in exam[v]])[:, None])
         .to(device) for v in NYU_VIEWS}
    with torch.inference_mode():
        probs = model(x)["breast_probs"].float().view(len(batch), n_draws, -1).mean(1)
    probs = probs.cpu().numpy()
    at = {label: i for i, label in enumerate(LABELS)}
    rows = []
    for (unit, _), p in zip(batch, probs):
        exam = unit[0].exam_id
        for side, word in (("L", "left"), ("R", "right")):
            rows.append({"model": name, "level": "breast", "case_id": f"{exam}/{side}",
                         "exam_id": exam, "laterality": side, "image_id": None,
                         "malignant": float(p[at[f"{word}_malignant"]]),
                         "benign": float(p[at[f"{word}_benign"]]),
                         "saliency_path": None, "patch_boxes": None})
    return rows


def _score_images(store: Store, model, batch: Sequence[tuple], windows, draws: int,
                  rng: np.random.RandomState, name: str, device: torch.device) -> list[dict]:
    """Cut each image's windows (in order: the draws of one generator), run the network on
    every window of the batch at once, average the draws; save saliency files."""
    from models.inference.predict import _clip_boxes, _save_saliency, predict_saliency_path

    cut = []
    batch = [(unit[0], next(iter(views.values()))) for unit, views in batch]
    for row, (prepared, _) in batch:
        cut.append([cut_window(prepared.image, row.view, prepared.centre, windows[row.view], rng,
                               **_noise(draws)) for _ in range(max(draws, 1))])
    n_draws = max(draws, 1)
    x = torch.from_numpy(np.stack([w.image for ws in cut for w in ws])[:, None]).to(device)
    with torch.inference_mode():
        out = model(x)
    y = out["y_global"].float().view(len(batch), n_draws, -1).mean(1).cpu().numpy()
    maps = F.avg_pool2d(out["saliency_map"].float(), SALIENCY_CELL, ceil_mode=True)
    maps = maps.view(len(batch), n_draws, *maps.shape[1:])[:, 0].cpu().numpy()
    locations = out["patch_locations"].view(len(batch), n_draws, -1, 2)[:, 0].cpu().numpy()
    crop_shape = model.config.crop_shape
    rows = []
    for i, ((row, (prepared, shape)), windows_i) in enumerate(zip(batch, cut)):
        geometry = window_geometry(prepared, windows_i[0], shape)
        boxes = _clip_boxes(_boxes(locations[i], crop_shape, geometry), geometry)
        rel = predict_saliency_path(name, row.image_id)
        (store.files_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        _save_saliency(store.files_dir / rel, name, row.image_id, maps[i], geometry, boxes,
                       np.full(len(boxes), 1 / len(boxes)))
        rows.append({"model": name, "level": "image", "case_id": row.image_id,
                     "exam_id": row.exam_id, "laterality": row.laterality,
                     "image_id": row.image_id, "malignant": float(y[i, 1]),
                     "benign": float(y[i, 0]), "saliency_path": rel.as_posix(),
                     "patch_boxes": json.dumps(np.round(boxes, 2).tolist())})
    return rows


def _boxes(locations: np.ndarray, crop_shape, geometry) -> np.ndarray:
    from models.inference.preprocess import boxes_to_original
    return boxes_to_original(locations, crop_shape, geometry)
