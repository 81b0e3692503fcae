"""Batch GMIC inference over a test set: scores, saliency files and patch boxes into the store.

Why a job and not a query: inference is long (hours for a large archive on a CPU), so it runs
outside the UI, reads the store only to list images, and lands its results through the store's
safe ingest path (`core.store.write_result` + `Store.ingest`) in chunks of ``chunk_size`` images:
an interrupted run keeps every finished chunk, the next run skips images that already have a
prediction from the model (unless ``overwrite``), and no write connection is held while the
network computes. Reading and preprocessing run ahead in background threads (DataLoader-style
prefetch) while the network works on the current batch.

Ensembles average like the official five-model ensemble: ``y_fusion`` (benign, malignant) and
the saliency maps are means over the members; the patch boxes are every member's patches, in
member order (each member reads its own K patches).

Saliency file format (``np.savez_compressed``, one per image, at
``store.files_dir / "saliency" / <model> / <image>.npz``; ``predictions.saliency_path`` holds the
path relative to ``store.files_dir``):

- ``format`` int: 2 (format 1 files, without the patch keys, are still read).
- ``model``, ``image_id`` str.
- ``malignant``, ``benign`` float16 (h, w): the raw saliency grid (``cam_size``, 8 x 5 for
  "tiny"/"demo", 46 x 30 for "paper") over the *model input*: cropped to the breast, chest
  wall at column 0, resized to ``input_shape``.
- ``input_shape`` int64 (2,): (rows, cols) of the model input.
- ``original_shape`` int64 (2,): (rows, cols) of the stored image.
- ``crop_box`` int64 (4,): (row0, col0, height, width) of the breast box, original pixels.
- ``flipped`` bool: the box was mirrored left-right (chest wall on the image's right).
- ``scale`` float64 (2,): input pixels per original pixel, (rows, cols).
- ``patch_boxes`` float64 (P, 4): the patch boxes below (format 2).
- ``patch_attention`` float64 (P,): each patch's attention weight, GMIC's ``patch_attns``,
  divided by the number of ensemble members so the P weights sum to 1 (format 2).

`read_saliency` loads one and ``SaliencyFile.to_original()`` maps a map back onto the image
(both live in `core.saliency`, torch-free; the geometry keys are exactly `Preprocessed`'s).
Patch boxes are ``[[row, col, height, width], ...]`` JSON in original pixels (edges), clipped
to the breast box (the part of the image the network saw).
"""
from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.errors import InputError
from core.io.images import read_pixels
from core.progress import ProgressFn, report
from core.reports.saliency import saliency_file
from core.saliency import SALIENCY_FORMAT, SaliencyFile, SaliencyGeometry, read_saliency
from core.jobs.run_folder import RunFolder
from core.store import Store
from core.validation import check_positive_int
from models.device import resolve_device
from models.families import FAMILIES
from models.networks.gmic import CONFIGS, GMIC, config_name, load_gmic_checkpoint, optimize_for_inference
from models.inference.preprocess import Preprocessed, check_preprocess, model_input

__all__ = ["DEMO_CHECKPOINT", "GMIC_KIND", "PredictSummary", "SaliencyFile", "checkpoint_config",
           "load_members", "predict_saliency_path", "predict_test_set", "read_saliency",
           "resolve_model"]

REPO = Path(__file__).resolve().parents[2]
DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "demo" / "checkpoints" / "gmic-demo.pt"
SHIPPED = {"gmic-demo": DEMO_CHECKPOINT}   # model names known without a store row
GMIC_KIND = "gmic"


@dataclass(frozen=True)
class PredictSummary:
    """What one `predict_test_set` run did.

    ``n_images`` = ``n_no_pixels`` + ``n_existing`` + ``n_predicted`` + ``n_failed``: images of the
    test set, those without pixels (prediction-only datasets), those skipped because the model
    already scored them, those scored now, and those whose file could not be read (the first
    few messages in ``failures``). ``heatmaps`` (image + heatmaps families): how many views'
    heatmaps were ``computed`` and how many read from the ``cached`` ones.
    """

    model: str
    test_set: str | None
    checkpoints: list[str]
    configs: list[str]
    device: str
    n_images: int
    n_no_pixels: int
    n_existing: int
    n_predicted: int
    n_failed: int
    elapsed_s: float
    s_per_image: float | None
    run_dir: str | None
    failures: list[str] = field(default_factory=list)
    heatmaps: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


# --- which checkpoints ---------------------------------------------------------------------------


def _checkpoint_path(text: str | Path) -> Path:
    """A stored or typed checkpoint path: as given if it exists, else relative to the repo."""
    path = Path(text)
    if path.exists() or path.is_absolute():
        return path
    return REPO / path if (REPO / path).exists() else path


def _stored_path(path: Path) -> str:
    """How a checkpoint is recorded in ``models.checkpoint``: repo-relative when inside it."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(REPO).as_posix()
    except ValueError:
        return str(resolved)


def resolve_model(store: Store, spec: str) -> tuple[str, list[Path]]:
    """A model spec -> (default model name, checkpoint paths).

    ``spec`` is a checkpoint file (name: its stem), a shipped model (``gmic-demo``) or a model
    of a family ILCscope runs (`models.families`) already in the store with a recorded
    checkpoint (an ensemble's are comma-separated).
    """
    path = Path(spec)
    if path.is_file():
        return path.stem, [path]
    if spec in SHIPPED:
        return spec, [SHIPPED[spec]]
    models = store.models()
    row = models[models["model"] == spec]
    stored = row["checkpoint"].iat[0] if not row.empty else None
    runnable = models["kind"].isin(list(FAMILIES))
    if not row.empty and runnable[row.index[0]] and isinstance(stored, str):
        return spec, [_checkpoint_path(p) for p in stored.split(",")]
    if path.suffix in (".p", ".pt", ".pth", ".pkl", ".ckpt") or "/" in spec:
        raise InputError(f"checkpoint {spec} does not exist; pass the path of a .p/.pt/.ckpt file")
    known = sorted(set(SHIPPED) | set(models.loc[runnable, "model"]))
    raise InputError(f"model {spec!r} is neither a checkpoint file nor a model in the store that "
                     f"ILCscope runs (known: {', '.join(known)}); pass a checkpoint path")


def checkpoint_config(path: str | Path) -> str:
    """The config a checkpoint was made for (`models.networks.gmic.config_name`), for callers
    that need the name only (a page's input preview, a fine-tuning request).

    Why ``mmap``: reading one string must not read every tensor; a zip checkpoint is mapped
    (tensors stay on disk), a legacy one is read. `load_members` reads it in its one load.
    """
    path = Path(path)
    try:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:   # legacy (non-zip) files cannot be mapped
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable: load_gmic_checkpoint raises the one-line error
        raw = None
    return config_name(path, raw)


def load_members(checkpoints: Sequence[str | Path], configs: str | Sequence[str] | None = None,
                 *, device: torch.device | str = "cpu") -> list[GMIC]:
    """Load checkpoints strictly and return inference copies on ``device``.

    Parameters
    ----------
    checkpoints : one or more checkpoint paths (an ensemble when several).
    configs : one config name for all, one per checkpoint, or None (each file's own,
        `models.networks.gmic.config_name`, read in its one load).
    device : where the copies live.

    Returns
    -------
    list of GMIC (``optimize_for_inference`` copies: BN folded, channels_last, no gradients).
    All share ``input_shape`` and ``cam_size`` (one preprocessing, averageable saliency maps).
    """
    if not checkpoints:
        raise InputError("checkpoints is empty; pass one checkpoint path, or several for an "
                         "ensemble")
    paths = [Path(p) for p in checkpoints]
    if configs is None:
        names = [None] * len(paths)
    elif isinstance(configs, str):
        names = [configs] * len(paths)
    else:
        names = list(configs)
        if len(names) == 1:
            names *= len(paths)
        if len(names) != len(paths):
            raise InputError(f"{len(names)} configs for {len(paths)} checkpoints; pass one config "
                             "or one per checkpoint")
    members = []
    for path, name in zip(paths, names):
        model = load_gmic_checkpoint(path, name)
        if model.config.num_classes != 2:
            raise InputError(f"GMIC checkpoint {path} has {model.config.num_classes} classes; "
                             "predict needs (benign, malignant)")
        members.append(optimize_for_inference(model).to(device))
    first = members[0].config
    for path, member in zip(paths[1:], members[1:]):
        c = member.config
        if (c.input_shape, c.cam_size) != (first.input_shape, first.cam_size):
            raise InputError(f"ensemble member {path} has input {c.input_shape} / grid "
                             f"{c.cam_size} but the first has {first.input_shape} / "
                             f"{first.cam_size}; use one input size for all members")
    return members


# --- the job -------------------------------------------------------------------------------------


def predict_test_set(
    store: Store,
    *,
    checkpoints: Sequence[str | Path],
    name: str,
    test_set: str | None,
    configs: str | Sequence[str] | None = None,
    parent: str | None = None,
    description: str | None = None,
    synthetic: bool = False,
    device: str = "auto",
    batch_size: int = 16,
    bf16: bool = False,
    overwrite: bool = False,
    chunk_size: int = 64,
    workers: int = 2,
    progress: ProgressFn | None = None,
    resume: str | None = None,
    preprocess: str | None = None,
) -> PredictSummary:
    """Score every image of ``test_set`` with GMIC (or an ensemble) and store the results.

    Parameters
    ----------
    store : Store
        Read for the image list; written only through the chunks of one run
        (`core.jobs.run_folder`: ``store.files_dir / "runs" / predict-<timestamp>-<random>``).
    checkpoints : one path, or several for an ensemble (mean ``y_fusion`` and saliency).
    name : the model's name in the store (``models.model``).
    test_set : named test set (None: every image in the store).
    configs : see `load_members`.
    parent, description, synthetic : written to the model's row (kind 'gmic').
    device : 'auto' (CUDA when present), 'cpu' or 'cuda'.
    batch_size : images per forward pass.
    bf16 : bfloat16 autocast (CUDA; works on CPU too, rarely faster there).
    overwrite : re-score images the model already has predictions for.
    chunk_size : images per ingest (a resumable unit).
    workers : background threads reading and preprocessing images.
    progress : ``progress(done, total, message)`` after each batch.
    resume : the run_id of a failed or cancelled run with these model, test set, checkpoints,
        configs and overwrite: its ``runs`` row continues (scored images are skipped anyway).
    preprocess : filter applied before GMIC's preprocessing (`models.inference.preprocess.model_input`:
        none, histeq, unsharp, sobel), recorded in the model's row; None: the stored model's
        (a fine-tuned model's training preprocessing), else 'none'.

    Returns
    -------
    PredictSummary
    """
    start = time.perf_counter()
    _check_options(name, batch_size, chunk_size, workers)
    images = store.images(test_set=test_set)            # unknown test set -> InputError
    dev = resolve_device(device)
    preprocess = _model_preprocess(store, name, preprocess)
    members = load_members(checkpoints, configs, device=dev)
    with_pixels = images[images["abs_path"].notna()]
    existing = set()
    if not overwrite:
        done = store.predictions(models=[name], level="image", test_set=test_set)
        existing = set(done["case_id"])
    todo = with_pixels[~with_pixels["image_id"].isin(existing)]
    stored_checkpoints = [_stored_path(Path(p)) for p in checkpoints]
    model_row = pd.DataFrame([{
        "model": name, "kind": GMIC_KIND, "checkpoint": ",".join(stored_checkpoints),
        "parent": parent, "synthetic": bool(synthetic), "preprocess": preprocess,
        "description": description or _default_description(members, stored_checkpoints)}])
    n_predicted, failures, n_failed = 0, [], 0
    rows: list[dict] = []
    # The model's row lands with the first chunk; a run with nothing to score writes nothing
    # unless the model is new (so `predict` on scored images leaves no empty run folders).
    store_model = bool(len(todo)) or name not in store.model_names()
    compute_s = 0.0
    run = None
    if store_model:
        run = RunFolder.open(store, "predict", {
            "model": name, "test_set": test_set, "checkpoints": stored_checkpoints,
            "configs": [_config_name(m) for m in members], "overwrite": overwrite,
            "preprocess": preprocess}, resume=resume)
        run.record(device=str(dev), batch_size=batch_size, bf16=bf16, chunk_size=chunk_size,
                   workers=workers)
        progress = run.tee(progress)
    with run or contextlib.nullcontext():
        for batch in _prefetched(todo, members[0].config.input_shape, batch_size, workers,
                                 preprocess):
            ok = [(row, pre) for row, pre, _ in batch if pre is not None]
            for row, _, error in batch:
                if error is not None:
                    n_failed += 1
                    if len(failures) < 5:
                        failures.append(f"{row.image_id}: {error}")
            if ok:
                t0 = time.perf_counter()
                rows += _predict_batch(store, members, ok, name, dev, bf16)
                compute_s += time.perf_counter() - t0
            while len(rows) >= chunk_size:
                _ingest(run, model_row if store_model else None, rows[:chunk_size])
                n_predicted += chunk_size
                rows, store_model = rows[chunk_size:], False
            report(progress, n_predicted + len(rows) + n_failed, len(todo), name)
        if rows or store_model:
            _ingest(run, model_row if store_model else None, rows)
            n_predicted += len(rows)
    return PredictSummary(
        model=name, test_set=test_set, checkpoints=stored_checkpoints,
        configs=[_config_name(m) for m in members], device=str(dev), n_images=len(images),
        n_no_pixels=len(images) - len(with_pixels), n_existing=len(with_pixels) - len(todo),
        n_predicted=n_predicted, n_failed=n_failed, elapsed_s=time.perf_counter() - start,
        s_per_image=compute_s / n_predicted if n_predicted else None,
        run_dir=None if run is None else str(run.path), failures=failures)


def _check_options(name: str, batch_size: int, chunk_size: int, workers: int) -> None:
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise InputError(f"model name {name!r} must be non-empty without surrounding spaces")
    for label, value in (("batch_size", batch_size), ("chunk_size", chunk_size),
                         ("workers", workers)):
        check_positive_int(value, name=label)


def _config_name(model: GMIC) -> str:
    return next((k for k, v in CONFIGS.items() if v == model.config), "custom")


def _default_description(members: list[GMIC], checkpoints: list[str]) -> str:
    config = _config_name(members[0])
    if len(members) == 1:
        return f"GMIC ({config} config) from {checkpoints[0]}"
    return (f"GMIC ensemble of {len(members)} checkpoints ({config} config): mean y_fusion and "
            "saliency over the members")


def _model_preprocess(store: Store, name: str, preprocess: str | None) -> str:
    """The preprocessing asked for, else the stored model's, else 'none'."""
    if preprocess is not None:
        return check_preprocess(preprocess)
    row = store.select("models", model=name)
    stored = row["preprocess"].iat[0] if len(row) else None
    return stored if isinstance(stored, str) else "none"


def _load_one(row, input_shape, preprocess) -> tuple[object, Preprocessed | None, str | None]:
    try:
        pixels = read_pixels(row.abs_path)
        pre = model_input(pixels, input_shape, laterality=row.laterality, preprocess=preprocess)
        return row, pre, None
    except InputError as exc:  # one unreadable file must not stop an archive-sized run
        return row, None, str(exc)


def _prefetched(todo: pd.DataFrame, input_shape, batch_size: int,
                workers: int, preprocess: str) -> Iterator[list[tuple]]:
    """Batches of (row, Preprocessed | None, error | None), read ``workers`` batches ahead."""
    batches = _batches(todo, batch_size)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = deque(pool.submit(_load_batch, b, input_shape, preprocess)
                        for b in itertools.islice(batches, workers + 1))
        while pending:
            result = pending.popleft().result()
            nxt = next(batches, None)
            if nxt is not None:
                pending.append(pool.submit(_load_batch, nxt, input_shape, preprocess))
            yield result


def _batches(frame: pd.DataFrame, size: int) -> Iterator[list]:
    rows = frame.itertuples(index=False)
    while batch := list(itertools.islice(rows, size)):
        yield batch


def _load_batch(rows, input_shape, preprocess) -> list[tuple]:
    return [_load_one(row, input_shape, preprocess) for row in rows]


def _predict_batch(store: Store, members: list[GMIC], batch: list[tuple], name: str,
                   device: torch.device, bf16: bool) -> list[dict]:
    """Run every member on one batch, average, save saliency files; return prediction rows."""
    x = torch.stack([pre.image for _, pre in batch]).to(device)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        outs = [m(x) for m in members]
    y = torch.stack([o["y_fusion"].float() for o in outs]).mean(0).cpu().numpy()
    saliency = torch.stack([o["saliency_map"].float() for o in outs]).mean(0).cpu().numpy()
    locations = [o["patch_locations"].cpu().numpy() for o in outs]
    attention = np.concatenate([o["patch_attns"].float().cpu().numpy() for o in outs],
                               axis=1) / len(outs)
    (store.files_dir / predict_saliency_path(name, "x")).parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (row, pre) in enumerate(batch):
        rel = predict_saliency_path(name, row.image_id)
        boxes = np.concatenate([_clip_boxes(pre.boxes_to_original(loc[i], m.config.crop_shape), pre)
                                for loc, m in zip(locations, members)])
        _save_saliency(store.files_dir / rel, name, row.image_id, saliency[i], pre, boxes,
                       attention[i])
        rows.append({"model": name, "level": "image", "case_id": row.image_id,
                     "exam_id": row.exam_id, "laterality": row.laterality,
                     "image_id": row.image_id, "malignant": float(y[i, 1]),
                     "benign": float(y[i, 0]), "saliency_path": rel.as_posix(),
                     "patch_boxes": json.dumps(np.round(boxes, 2).tolist())})
    return rows


def predict_saliency_path(model: str, image_id: str) -> Path:
    """Where a model's saliency file for an image lives, relative to the store's files folder
    (`core.reports.saliency.saliency_file`: the reports find breast-level models' files there)."""
    return saliency_file(model, image_id)


def _clip_boxes(boxes: np.ndarray, pre: Preprocessed) -> np.ndarray:
    """Boxes (K, 4) cut to the breast box: a patch may run past the input's edge."""
    r0, c0, h, w = pre.crop_box
    top = np.clip(boxes[:, 0], r0, r0 + h)
    left = np.clip(boxes[:, 1], c0, c0 + w)
    bottom = np.clip(boxes[:, 0] + boxes[:, 2], r0, r0 + h)
    right = np.clip(boxes[:, 1] + boxes[:, 3], c0, c0 + w)
    return np.stack([top, left, bottom - top, right - left], axis=1)


def _save_saliency(path: Path, model: str, image_id: str, maps: np.ndarray,
                   pre: Preprocessed | SaliencyGeometry, boxes: np.ndarray,
                   attention: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(
        tmp, format=np.int64(SALIENCY_FORMAT), model=np.str_(model), image_id=np.str_(image_id),
        benign=maps[0].astype(np.float16), malignant=maps[1].astype(np.float16),
        input_shape=np.asarray(pre.input_shape, np.int64),
        original_shape=np.asarray(pre.original_shape, np.int64),
        crop_box=np.asarray(pre.crop_box, np.int64), flipped=np.bool_(pre.flipped),
        scale=np.asarray(pre.scale, np.float64),
        patch_boxes=np.asarray(boxes, np.float64), patch_attention=np.asarray(attention, np.float64))
    tmp.replace(path)


def _ingest(run: RunFolder, model_row: pd.DataFrame | None, rows: list[dict]) -> None:
    """One chunk: its predictions (and the model's row with the first) in one transaction."""
    frames = {"predictions": pd.DataFrame(rows, columns=[
        "model", "level", "case_id", "exam_id", "laterality", "image_id", "malignant", "benign",
        "saliency_path", "patch_boxes"])}
    if model_row is not None:
        frames["models"] = model_row
    run.ingest(f"chunk-{len(run.chunks):05d}", frames)
