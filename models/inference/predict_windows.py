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
erosion iterations and buffer are ``100`` and ``50`` pixels at the official window height, and
the heatmap patches ``256`` and their stride ``70``.

Heatmaps (the image + heatmaps families): a first pass makes the benign and malignant heatmaps
of every view the cache (`models.inference.heatmap_cache`) lacks, with the patch classifier on
the cropped view facing right, as the official producer does; the scoring pass then reads
every view's heatmaps back from the cache and cuts them with the image's window, channels
[image, benign, malignant]. So a fresh and a cached run feed the model the same numbers, and a
second run makes none. Each view's heatmaps are also its saliency file (a grid over the cropped
view, `core.reports.saliency.saliency_file`), which the Saliency page and `report saliency` read.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from core.errors import InputError
from core.io.images import read_pixels
from core.jobs.run_folder import RunFolder
from core.progress import ProgressFn, report
from core.saliency import SaliencyGeometry
from core.store import Store
from core.validation import check_positive_int
from models.device import resolve_device
from models.families import Family
from models.networks.fold import optimize_for_inference
from models.inference.heatmap_cache import HeatmapCache, file_sha256
from models.inference.heatmaps import HeatmapConfig
from models.inference.windows import (NYU_VIEWS, WINDOWS, PreparedView, Window, breast_points,
                                      cut_window, draw_windows, prepare_view, window_geometry)

__all__ = ["MAX_DRAWS", "crop_settings", "heatmap_settings", "predict_windows", "windows_for"]

MAX_DRAWS = 100
OFFICIAL_ITERATIONS, OFFICIAL_BUFFER = 100, 50
OFFICIAL_PATCH, OFFICIAL_STRIDE = 256, 70     # run_producer.py's patch size and stride_fixed
SALIENCY_CELL = 8          # input pixels per stored saliency cell (2944 x 1920 -> 368 x 240)


def windows_for(fam: Family, input_shape: tuple[int, int] | None) -> dict[str, tuple[int, int]]:
    """The family's windows per view angle: the official ones for its paper config, else the
    network's own input shape (a small config: one window for both angles)."""
    official = WINDOWS[fam.windows]
    if input_shape is None or tuple(input_shape) in official.values():
        return dict(official)
    return {"CC": tuple(input_shape), "MLO": tuple(input_shape)}


def _ratio(windows: dict[str, tuple[int, int]], fam: Family) -> float:
    return windows["CC"][0] / WINDOWS[fam.windows]["CC"][0]


def crop_settings(windows: dict[str, tuple[int, int]], fam: Family) -> tuple[int, int]:
    """(erosion iterations, buffer) scaled to the window height (official: 100 and 50)."""
    ratio = _ratio(windows, fam)
    return max(1, round(OFFICIAL_ITERATIONS * ratio)), max(1, round(OFFICIAL_BUFFER * ratio))


def heatmap_settings(windows: dict[str, tuple[int, int]], fam: Family, *,
                     batch_size: int = 100) -> HeatmapConfig:
    """The heatmap producer's patch size and stride scaled to the window height (official:
    256 and 70 pixels), and ``batch_size`` patches per forward pass."""
    ratio = _ratio(windows, fam)
    return HeatmapConfig(patch_size=max(1, round(OFFICIAL_PATCH * ratio)),
                         stride=max(1, round(OFFICIAL_STRIDE * ratio)), batch_size=batch_size)


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
    patch_model: str | Path | None = None,
    heatmap_batch_size: int = 100,
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
    """Score every image (GLAM, NYU single-image) or every four-view exam (NYU view-wise, one
    score per breast) of ``test_set`` and store the scores (GLAM also its saliency files and
    patch boxes, the heatmap families their heatmaps as saliency files); see the module
    docstring for draws and heatmaps. ``windows`` overrides the family's window sizes (e.g. a
    scaled window for small images; the crop and heatmap settings scale with it, and the run
    records them). ``patch_model``: the patch classifier's checkpoint, required by the families
    that read heatmaps and refused by the others; ``heatmap_batch_size`` patches per pass.

    Returns a `models.inference.predict.PredictSummary`.
    """
    from models.inference.predict import PredictSummary, _ingest, _stored_path

    start = time.perf_counter()
    if fam.windows is None:
        raise InputError(f"family {fam.name} does not read the official windows; its own "
                         "`predict` path runs it")
    fam.check_patch_model(patch_model)
    draws = fam.default_draws if draws is None else draws
    if not isinstance(draws, int) or not 0 <= draws <= MAX_DRAWS:
        raise InputError(f"draws is {draws!r}; pass 0 (the exact window) to {MAX_DRAWS}")
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise InputError(f"model name {name!r} must be non-empty without surrounding spaces")
    for label, value in (("batch_size", batch_size), ("chunk_size", chunk_size),
                         ("workers", workers), ("heatmap_batch_size", heatmap_batch_size)):
        check_positive_int(value, name=label)
    images = store.images(test_set=test_set)             # unknown test set -> InputError
    dev = resolve_device(device)
    config = config or fam.default_config
    model = optimize_for_inference(fam.load(Path(checkpoint), config)).to(dev)   # BN folded
    if windows is None:
        windows = windows_for(fam, getattr(model.config, "input_shape", None))
    elif set(windows) != {"CC", "MLO"}:
        raise InputError(f"windows has keys {sorted(windows)}; pass sizes for 'CC' and 'MLO'")
    iterations, buffer = crop_settings(windows, fam)
    plain = _Cut(windows, iterations, buffer)
    with_pixels = images[images["abs_path"].notna()]
    breasts = fam.level == "breast"
    existing = set()
    if not overwrite:
        existing = set(store.predictions(models=[name], level=fam.level,
                                         test_set=test_set)["exam_id" if breasts else "case_id"])
    todo = with_pixels[~with_pixels["exam_id" if breasts else "image_id"].isin(existing)]
    stored = _stored_path(Path(checkpoint))
    preprocessing = {"windows": {k: list(v) for k, v in windows.items()}, "draws": draws,
                     "seed": seed, "crop_iterations": iterations, "crop_buffer": buffer}
    heat = None
    if fam.patch_model:
        heat = _HeatmapSource.open(store, Path(patch_model), todo, plain,
                                   heatmap_settings(windows, fam, batch_size=heatmap_batch_size),
                                   seed=seed, device=dev)
        preprocessing["heatmaps"] = heat.record(_stored_path(Path(patch_model)))
    model_row = pd.DataFrame([{
        "model": name, "kind": fam.name, "checkpoint": stored, "parent": parent,
        "synthetic": bool(synthetic), "preprocess": "official-window",
        "description": description or f"{fam.title} ({config} config) from {stored}; "
                                      f"official windows, {draws} draws"
                                      + (f"; heatmaps from {_stored_path(Path(patch_model))}"
                                         if heat else "")}])
    store_model = bool(len(todo)) or name not in store.model_names()
    job = _Job(store, fam, model, name, dev, windows, draws, np.random.RandomState(seed))
    n_predicted = n_failed = 0
    images_per_row = 2 if breasts else 1   # a breast row stands for CC + MLO

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
    units = _exams(todo) if breasts else [[r] for r in todo.itertuples(index=False)]
    score = _score_exams if breasts else _score_images
    with run or contextlib.nullcontext():
        cut = plain
        if heat is not None:
            heat.make_missing(batch_size, workers, progress, run)
            cut = replace(plain, heatmaps=heat)
        for batch in _prepared(units, cut, batch_size, workers):
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
                rows += score(job, ok)
                compute_s += time.perf_counter() - t0
            while len(rows) >= chunk_size:
                _ingest(run, model_row if store_model else None, rows[:chunk_size])
                n_predicted += chunk_size
                rows, store_model = rows[chunk_size:], False
            report(progress, n_scored(rows, n_predicted) + n_failed, len(todo), name)
        if rows or store_model:
            _ingest(run, model_row if store_model else None, rows)
            n_predicted += len(rows)
    if breasts:   # the summary counts images, as GMIC's does
        n_predicted = n_scored([], n_predicted)
    return PredictSummary(
        model=name, test_set=test_set, checkpoints=[stored], configs=[config], device=str(dev),
        n_images=len(images), n_no_pixels=len(images) - len(with_pixels),
        n_existing=len(with_pixels) - len(todo), n_predicted=n_predicted, n_failed=n_failed,
        elapsed_s=time.perf_counter() - start,
        s_per_image=compute_s / n_predicted if n_predicted else None,
        run_dir=None if run is None else str(run.path), failures=failures,
        heatmaps=None if heat is None else heat.counts())


@dataclass(frozen=True)
class _Job:
    """What the scorers share: where results go, the network and the draws' generator."""

    store: Store
    fam: Family
    model: torch.nn.Module
    name: str
    device: torch.device
    windows: dict[str, tuple[int, int]]
    draws: int
    rng: np.random.RandomState


@dataclass(frozen=True)
class _Cut:
    """How every view is cut: windows, crop settings and, for the heatmap families, where its
    heatmaps come from (None: the image alone)."""

    windows: dict[str, tuple[int, int]]
    iterations: int
    buffer: int
    heatmaps: _HeatmapSource | None = None


@dataclass
class _HeatmapSource:
    """The heatmaps of a run's views: the cache, each image's key in it, the patch model
    (loaded only when a view's heatmaps are missing) and why a view's could not be made."""

    cache: HeatmapCache
    keys: dict[str, str]
    todo: pd.DataFrame
    cut: _Cut
    patch_model: Path
    device: torch.device
    errors: dict[str, str] = field(default_factory=dict)
    computed: int = 0
    cached: int = 0
    compute_s: float = 0.0

    @classmethod
    def open(cls, store: Store, patch_model: Path, todo: pd.DataFrame, cut: _Cut,
             config: HeatmapConfig, *, seed: int, device: torch.device) -> _HeatmapSource:
        cache = HeatmapCache.open(store.files_dir, patch_model, config=config, seed=seed)
        keys = {r.image_id: cache.key(r.sha256 if isinstance(r.sha256, str) and r.sha256
                                      else file_sha256(r.abs_path),
                                      points=breast_points(r.laterality),
                                      iterations=cut.iterations, buffer=cut.buffer)
                for r in todo.itertuples(index=False)}
        return cls(cache, keys, todo, cut, patch_model, device)

    def record(self, stored_patch_model: str) -> dict:
        c = self.cache
        return {"patch_model": stored_patch_model, "patch_model_sha256": c.patch_sha256,
                "patch_size": c.config.patch_size, "stride": c.config.stride,
                "seed": c.seed, "seed_per_image": True}

    def counts(self) -> dict:
        return {"computed": self.computed, "cached": self.cached, "failed": len(self.errors),
                "compute_s": round(self.compute_s, 3),
                "s_per_view": round(self.compute_s / self.computed, 3) if self.computed else None}

    def make_missing(self, batch_size: int, workers: int, progress: ProgressFn | None,
                     run: RunFolder | None) -> None:
        """The first pass: heatmaps of every view the cache lacks, one view at a time (its
        patches batched on the device), crops prepared ahead in threads."""
        missing = self.todo[[not self.cache.has(self.keys[i]) for i in self.todo["image_id"]]]
        self.cached = len(self.todo) - len(missing)
        if missing.empty:
            return
        net = _patch_network(self.patch_model, self.cache.config.patch_size, self.device)
        units = [[r] for r in missing.itertuples(index=False)]
        done = 0
        for batch in _prepared(units, self.cut, batch_size, workers):
            for unit, prepared, error in batch:
                image_id = unit[0].image_id
                if error is None:
                    view = next(iter(prepared.values()))[0]

                    def patches(d: int, t: int, _message: str = "", k: int = done) -> None:
                        report(progress, k, len(missing),
                               f"heatmaps of {image_id}: {d}/{t} patches")
                    t0 = time.perf_counter()
                    try:
                        self.cache.compute(net, view.image, self.keys[image_id], progress=patches)
                        self.computed += 1
                        self.compute_s += time.perf_counter() - t0
                    except InputError as exc:    # e.g. a crop smaller than one patch
                        error = str(exc)
                if error is not None:
                    self.errors[image_id] = error
                done += 1
                report(progress, done, len(missing), "heatmaps")
                if run is not None:
                    run.check_cancel()

    def attach(self, image_id: str, view: PreparedView) -> PreparedView:
        """``view`` with its heatmaps as auxiliary channels (benign, malignant), from the cache."""
        heatmaps = self.cache.load(self.keys[image_id], view.image.shape)
        if heatmaps is None:
            raise InputError(self.errors.get(image_id) or
                             f"the heatmaps of {image_id} are not in the cache; rerun predict")
        return replace(view, auxiliary=np.stack([heatmaps.benign, heatmaps.malignant], axis=-1))


def _patch_network(path: Path, patch_size: int, device: torch.device) -> torch.nn.Module:
    """The patch classifier as the producer runs it (BN folded, one grey channel), checked on
    one patch of the run's size: a DenseNet too deep for small patches fails here, in one line."""
    from models.networks.nyu_patch import load_nyu_patch_checkpoint
    from models.networks.nyu_patch import optimize_for_inference as optimize_patch_model

    net = optimize_patch_model(load_nyu_patch_checkpoint(path, None)).to(device)
    channels = net.features.conv0.in_channels
    try:
        with torch.inference_mode():
            net(torch.zeros(1, channels, patch_size, patch_size, device=device))
    except RuntimeError as exc:
        raise InputError(f"patch model {path} cannot read {patch_size} px patches ("
                         f"{str(exc).splitlines()[0][:120]}); use larger windows or a shallower "
                         "patch model") from None
    return net


def _exams(todo: pd.DataFrame) -> list[list]:
    """The test set's exams, each a list of its image rows, in exam order."""
    return [list(g.itertuples(index=False)) for _, g in todo.groupby("exam_id", sort=True)]


def _prepare_unit(unit: list, cut: _Cut) -> tuple[list, object, str | None]:
    """Crop and centre every image of a unit (one image, or one exam's four views); add its
    heatmaps when the cut has them."""
    try:
        prepared = {}
        for row in unit:
            pixels = read_pixels(row.abs_path)
            view = prepare_view(pixels, row.laterality, row.view, cut.windows[row.view],
                                iterations=cut.iterations, buffer=cut.buffer)
            if cut.heatmaps is not None:
                view = cut.heatmaps.attach(row.image_id, view)
            prepared[f"{row.laterality}-{row.view}"] = (view, pixels.shape)
        if len(unit) > 1 or unit[0] is None:
            missing = [v for v in NYU_VIEWS if v not in prepared]
            if missing or len(prepared) != len(unit):
                raise InputError(f"exam {unit[0].exam_id} has views {sorted(prepared)}; the "
                                 f"four-view model needs one image of each of {list(NYU_VIEWS)}")
        return unit, prepared, None
    except InputError as exc:   # one unreadable or blank image must not stop the run
        return unit, None, str(exc)


def _prepared(units: Sequence[list], cut: _Cut, batch_size: int, workers: int) -> Iterator[list]:
    """Batches of (unit, prepared views | None, error | None), cropped and centred
    ``workers`` batches ahead in threads (the erosion is the slow part)."""
    chunks = (list(units[i:i + batch_size]) for i in range(0, len(units), batch_size))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        def submit(b):
            return pool.submit(lambda: [_prepare_unit(u, cut) for u in b])
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


def _channels(window: Window) -> np.ndarray:
    """(C, rows, cols): the window's image, then its heatmaps (benign, malignant) if it has any."""
    if window.auxiliary is None:
        return window.image[None]
    return np.concatenate([window.image[None], np.moveaxis(window.auxiliary, -1, 0)])


def _score_exams(job: _Job, batch: Sequence[tuple]) -> list[dict]:
    """Each exam's draws in the official order, the four views of every draw of the batch in
    one forward pass; breast probabilities averaged over the draws (official ``run_model``)."""
    from models.networks.nyu_dmv import LABELS

    cut = [draw_windows({v: p for v, (p, _) in views.items()}, job.windows, job.rng, job.draws)
           for _, views in batch]
    n_draws = max(job.draws, 1)
    x = {v: torch.from_numpy(np.stack([_channels(w) for exam in cut for w in exam[v]]))
         .to(job.device) for v in NYU_VIEWS}
    with torch.inference_mode():
        out = job.fam.forward(job.model, x, list(NYU_VIEWS))
    probs = out[job.fam.scores].float().view(len(batch), n_draws, -1).mean(1).cpu().numpy()
    at = {label: i for i, label in enumerate(LABELS)}
    rows = []
    for (unit, views), p in zip(batch, probs):
        if job.fam.saliency == "heatmaps":
            for row in unit:
                _save_heatmaps(job, row, *views[f"{row.laterality}-{row.view}"])
        exam = unit[0].exam_id
        for side, word in (("L", "left"), ("R", "right")):
            rows.append({"model": job.name, "level": "breast", "case_id": f"{exam}/{side}",
                         "exam_id": exam, "laterality": side, "image_id": None,
                         "malignant": float(p[at[f"{word}_malignant"]]),
                         "benign": float(p[at[f"{word}_benign"]]),
                         "saliency_path": None, "patch_boxes": None})
    return rows


def _score_images(job: _Job, batch: Sequence[tuple]) -> list[dict]:
    """Cut each image's windows (in order: the draws of one generator), run the network on
    every window of the batch at once, average the draws; save saliency files."""
    cut = []
    batch = [(unit[0], next(iter(views.values()))) for unit, views in batch]
    for row, (prepared, _) in batch:
        cut.append([cut_window(prepared.image, row.view, prepared.centre, job.windows[row.view],
                               job.rng, auxiliary=prepared.auxiliary, **_noise(job.draws))
                    for _ in range(max(job.draws, 1))])
    n_draws = max(job.draws, 1)
    x = torch.from_numpy(np.stack([_channels(w) for ws in cut for w in ws])).to(job.device)
    views = [f"{row.laterality}-{row.view}" for row, _ in batch for _ in range(n_draws)]
    with torch.inference_mode():
        out = job.fam.forward(job.model, x, views)
    y = out[job.fam.scores].float().view(len(batch), n_draws, -1).mean(1).cpu().numpy()
    segmentation = _segmentation(job, out, len(batch), n_draws, batch, cut) \
        if job.fam.saliency == "segmentation" else None
    rows = []
    for i, (row, (prepared, shape)) in enumerate(batch):
        path = boxes = None
        if segmentation is not None:
            path, boxes = segmentation[i]
        elif job.fam.saliency == "heatmaps":
            path = _save_heatmaps(job, row, prepared, shape)
        rows.append({"model": job.name, "level": "image", "case_id": row.image_id,
                     "exam_id": row.exam_id, "laterality": row.laterality,
                     "image_id": row.image_id, "malignant": float(y[i, 1]),
                     "benign": float(y[i, 0]), "saliency_path": path, "patch_boxes": boxes})
    return rows


def _segmentation(job: _Job, out: dict, n: int, n_draws: int, batch, cut) -> list[tuple[str, str]]:
    """GLAM: each image's first-draw segmentation map (pooled to ``SALIENCY_CELL``) and patch
    boxes saved as its saliency file; (relative path, boxes JSON) per image."""
    from models.inference.predict import _clip_boxes, _save_saliency, predict_saliency_path
    from models.inference.preprocess import boxes_to_original

    maps = F.avg_pool2d(out["saliency_map"].float(), SALIENCY_CELL, ceil_mode=True)
    maps = maps.view(n, n_draws, *maps.shape[1:])[:, 0].cpu().numpy()
    locations = out["patch_locations"].view(n, n_draws, -1, 2)[:, 0].cpu().numpy()
    crop_shape = job.model.config.crop_shape
    saved = []
    for i, ((row, (prepared, shape)), windows_i) in enumerate(zip(batch, cut)):
        geometry = window_geometry(prepared, windows_i[0], shape)
        boxes = _clip_boxes(boxes_to_original(locations[i], crop_shape, geometry), geometry)
        rel = predict_saliency_path(job.name, row.image_id)
        (job.store.files_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        _save_saliency(job.store.files_dir / rel, job.name, row.image_id, maps[i], geometry, boxes,
                       np.full(len(boxes), 1 / len(boxes)))
        saved.append((rel.as_posix(), json.dumps(np.round(boxes, 2).tolist())))
    return saved


def _save_heatmaps(job: _Job, row, view: PreparedView, shape: tuple[int, int]) -> str:
    """A view's heatmaps as its saliency file: a ``SALIENCY_CELL`` grid over the cropped view
    facing right (no resize: scale 1), benign and malignant; no patches. Returns its path."""
    from models.inference.predict import _save_saliency, predict_saliency_path

    top, bottom, left, right = view.crop.box
    geometry = SaliencyGeometry(tuple(int(v) for v in shape), (top, left, bottom - top, right - left),
                                view.points == "left", tuple(view.image.shape), (1.0, 1.0))
    maps = F.avg_pool2d(torch.from_numpy(np.moveaxis(view.auxiliary, -1, 0))[None], SALIENCY_CELL,
                        ceil_mode=True)[0].numpy()
    rel = predict_saliency_path(job.name, row.image_id)
    (job.store.files_dir / rel).parent.mkdir(parents=True, exist_ok=True)
    _save_saliency(job.store.files_dir / rel, job.name, row.image_id, maps, geometry,
                   np.zeros((0, 4)), np.zeros(0))
    return rel.as_posix()
