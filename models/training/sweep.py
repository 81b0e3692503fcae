"""GMIC fine-tuning runs: launch, resume and summarise (the study's central experiment).

One `TrainRequest` (a parent model, a mode, training and validation sets, learning rates) makes
one run per learning rate, each a row of kind 'train' in the ``runs`` table with a run folder
(`core.jobs.run_folder`). A run caches its input tensors (`models.training.data`), trains
(`models.training.recipe.FineTuneRecipe`: two checkpoints in its folder, one ``train_epochs`` row
per epoch, written in a short transaction as the epoch ends: the store's write lock is never
held while training), then registers the child model (kind gmic, checkpoint = the best epoch's,
its parent and preprocessing) and scores each ``evaluate`` test set with it through
`models.inference.predict` (scores and saliency maps land through the store's safe ingest path).

``launch_runs(..., detach=True)`` starts the worker (`models.training.worker`) through the request's
launcher (local process, torchrun, Slurm), which runs the requested runs one after another: it
survives the page or terminal that started it.
A run stops at a cancel request (`core.jobs.run_folder.request_cancel`) before its next batch
with status 'cancelled'; `resume_run` continues a cancelled or crashed run from its last epoch.

A run's ``params`` in ``runs``: the request's fields, ``lr`` (this run's), ``sweep`` (the run id
of the sweep's first run: one line per learning rate in a figure), then, as training goes,
``parent_model``, ``config``, ``best_epoch``, ``best_val_loss`` and ``child_model``.
"""
from __future__ import annotations

import dataclasses
import math
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import InputError
from core.jobs.launchers import LAUNCHERS, LOG_NAME
from core.jobs.run_folder import CANCEL_FILE, RunCancelled, RunFolder
from core.reports.training import lr_label
from core.store import Store
from core.store.runs import get_run, write_run
from models.training.loss import DEFAULT_BETA

__all__ = ["TrainRequest", "create_runs", "execute_run", "launch_runs", "parse_lrs", "request_of", "resume_run",
           "run_summary", "validate_request"]

KIND = "train"


@dataclass(frozen=True)
class TrainRequest:
    """Everything a sweep of fine-tuning runs needs; one run per learning rate.

    ``config`` None takes the parent's GMIC config ("cpu-small" for a paper-sized parent on a
    CPU); ``workers`` are DataLoader processes (None: 4 on CUDA, 0 on a CPU, whose cores the
    network needs); ``compile`` wraps the model in torch.compile.

    Several processes (``launcher`` torchrun or slurm): ``nproc_per_node`` processes (one per
    GPU) on each of ``nodes`` machines, ``batch_size`` the global batch; torchrun on several
    nodes meets at ``rdzv_endpoint`` (HOST:PORT of this machine); a Slurm job takes
    ``partition``, ``time_min`` (its wall-clock limit) and ``account``.
    """

    model_init: str
    mode: str
    train_set: str
    val_set: str
    lrs: tuple[float, ...]
    epochs: int = 40
    batch_size: int = 8
    preprocess: str = "none"
    device: str = "auto"
    launcher: str = "local"
    evaluate: tuple[str, ...] = ()
    seed: int = 0
    config: str | None = None
    beta: float = DEFAULT_BETA
    mlflow_uri: str | None = None
    workers: int | None = None
    compile: bool = False
    freeze_bn: bool = False
    nproc_per_node: int = 1
    nodes: int = 1
    rdzv_endpoint: str | None = None
    partition: str | None = None
    time_min: int = 240
    account: str | None = None


_REQUEST_FIELDS = tuple(f.name for f in dataclasses.fields(TrainRequest))
MAX_RUNS = 100  # learning rates in one sweep: each is a runs row and folder, made up front
# (lowest, highest) accepted per integer option. The highs are far past any real use (the paper
# trains 40 epochs at batch 8) and stop a typo from starting 100,000 DataLoader processes or
# looping for centuries; a high bound is refused, not clipped.
BOUNDS = {"epochs": (1, 10_000), "batch_size": (1, 4096), "workers": (0, 64),
          "seed": (0, 2**32 - 1), "nproc_per_node": (1, 64), "nodes": (1, 1024),
          "time_min": (1, 30 * 24 * 60)}


def parse_lrs(text: str, runs: int | None = None) -> tuple[float, ...]:
    """``"1e-6:1e-5"`` with ``runs`` = n: n log-spaced rates (ends included); ``"1e-5,3e-5"``:
    the list; one number: itself."""
    text = str(text).strip()
    if ":" in text and runs is not None:
        _check_runs(runs)  # before np.geomspace makes them
    try:
        if ":" in text:
            low, high = (float(v) for v in text.split(":"))
            if runs is None or runs < 1:
                raise InputError(f"lr range {text!r} needs runs >= 1 (how many rates)")
            values = [low] if runs == 1 else np.geomspace(low, high, int(runs)).tolist() \
                if low > 0 and high > 0 else [low, high]
        else:
            values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise InputError(f"lr {text!r} is not a number, a list (1e-5,3e-5) or a range "
                         "(1e-6:1e-5 with runs)") from exc
    if not values or any(not (math.isfinite(v) and v > 0) for v in values):
        raise InputError(f"lr {text!r} holds a rate <= 0 or none; learning rates must be > 0")
    _check_runs(len(values))
    return tuple(float(f"{v:.6g}") for v in values)


def _check_runs(n: int) -> None:
    if n > MAX_RUNS:
        raise InputError(f"runs is {n}: at most {MAX_RUNS} learning rates per sweep (each is a "
                         "run with its own folder); split the sweep or widen the rate steps")


def validate_request(store: Store, request: TrainRequest) -> None:
    """Every check that can fail, before any work: an `InputError` names the first problem."""
    from models.device import resolve_device
    from models.networks.gmic import CONFIGS
    from models.inference.preprocess import check_preprocess
    from models.training.recipe import MODES

    if store.read_only:
        raise InputError(f"store {store.path} is open read-only (demo mode); training is disabled")
    if request.mode not in MODES:
        raise InputError(f"mode is {request.mode!r}; pass one of {', '.join(MODES)}")
    if not request.lrs or any(not (math.isfinite(v) and v > 0) for v in request.lrs):
        raise InputError(f"lr {list(request.lrs)} holds a rate <= 0 or none; pass rates > 0")
    _check_runs(len(request.lrs))
    for name, (low, high) in BOUNDS.items():
        value = getattr(request, name)
        if name == "workers" and value is None:
            continue
        if name == "batch_size" and request.mode != "feature-extraction":
            low = 2   # BatchNorm in training mode needs two images
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InputError(f"{name} must be an integer from {low} to {high}; got {value!r}")
    if not (math.isfinite(request.beta) and request.beta >= 0):
        raise InputError(f"beta must be a number >= 0; got {request.beta!r}")
    _check_launch(request)
    if request.config is not None and request.config not in CONFIGS:
        raise InputError(f"config {request.config!r} is unknown; pass one of {sorted(CONFIGS)}")
    check_preprocess(request.preprocess)
    resolve_device(request.device)
    _check_checkpoint(request, *_parent(store, request.model_init))
    known = set(store.testset_names())
    for name in (request.train_set, request.val_set, *request.evaluate):
        if name not in known:
            raise InputError(f"test set {name!r} is not in the store; create it (python -m core "
                             "split ...) or pick one of " + ", ".join(sorted(known)[:8]))
    from models.training.data import labelled_images

    exams = {}
    for role, name in (("train_set", request.train_set), ("val_set", request.val_set)):
        images = labelled_images(store, name)
        n_pos = images.n_positive
        if len(images.frame) == 0:
            raise InputError(f"{role} {name!r} has no images with pixels; pick a set with images")
        if n_pos == 0 or n_pos == len(images.frame):
            raise InputError(f"{role} {name!r} has one class only ({n_pos} malignant of "
                             f"{len(images.frame)} images); training needs both")
        exams[role] = set(images.frame["exam_id"])
    shared = exams["train_set"] & exams["val_set"]
    if shared:
        raise InputError(f"train_set and val_set share {len(shared)} exam(s); split by exam "
                         "(python -m core split) so that no exam is in both")


def _check_checkpoint(request: TrainRequest, parent: str | None, checkpoint: Path) -> None:
    """Load the starting network once, so a checkpoint that cannot start this request (torch
    refuses it, or it fits no config) is one line before any run exists, not a failed run."""
    from models.device import resolve_device

    device_type = ("cpu" if request.device == "cpu" else "cuda") \
        if request.launcher == "slurm" else resolve_device(request.device).type
    _initial_model(request, checkpoint, device_type)   # its errors are one line (InputError)


def _check_launch(request: TrainRequest) -> None:
    """How many processes, where, and whether BatchNorm can follow them."""
    from models.device import resolve_device
    from core.jobs.launchers import check_slurm

    if request.launcher not in LAUNCHERS:
        raise InputError(f"launcher is {request.launcher!r}; pass one of {', '.join(LAUNCHERS)}")
    world = request.nproc_per_node * request.nodes
    if request.launcher == "local" and world > 1:
        raise InputError(f"launcher local runs one process, not {world}; pass launcher torchrun "
                         "(this machine's GPUs) or slurm")
    if request.launcher == "torchrun" and request.nodes > 1 and not request.rdzv_endpoint:
        raise InputError("torchrun on several nodes needs rdzv_endpoint HOST:PORT (this machine)")
    if request.launcher == "slurm":
        check_slurm()
    if world > 1 and request.batch_size < world:
        raise InputError(f"batch_size {request.batch_size} is smaller than the {world} processes; "
                         "it is the global batch, split across them")
    cpu = request.device == "cpu" if request.launcher == "slurm" \
        else resolve_device(request.device).type == "cpu"
    if world > 1 and cpu and not (request.freeze_bn or request.mode == "feature-extraction"):
        raise InputError(f"{world} CPU processes need freeze_bn (--freeze-bn) in {request.mode} "
                         "mode: each sees a share of the batch, and synchronised BatchNorm needs GPUs")
    if request.launcher == "torchrun" and not cpu:
        import torch

        if request.nproc_per_node > torch.cuda.device_count():
            raise InputError(f"nproc_per_node {request.nproc_per_node} but this machine has "
                             f"{torch.cuda.device_count()} GPU(s); start one process per GPU")


def launch_runs(store: Store, request: TrainRequest, *, detach: bool) -> list[str]:
    """Validate, then create one run per learning rate and train them (a local request in this
    process unless ``detach``; torchrun and slurm through their launcher); returns the run ids,
    in the order of ``lrs``."""
    validate_request(store, request)
    run_ids = create_runs(store, request)
    _start(store, run_ids, detach)
    return run_ids


def create_runs(store: Store, request: TrainRequest) -> list[str]:
    """One ``runs`` row and folder per learning rate, not started (`launch_runs` starts them).

    Each is 'running' from here on, with this process recorded as its creator
    (`core.jobs.workers.record_creator`): if it dies before a worker starts, `orphaned_runs`
    finds the runs and `fail_orphaned_runs` fails them, rather than leaving them 'running'.
    """
    from core.jobs.workers import record_creator

    base = _jsonable(dataclasses.asdict(request))
    run_ids: list[str] = []
    for lr in request.lrs:
        params = base | {"lr": lr, "sweep": run_ids[0] if run_ids else None}
        run = RunFolder.open(store, KIND, params)
        record_creator(store, [run.run_id])   # killed before the worker starts: an orphan
        if not run_ids:   # the sweep's id is its first run's
            run.record(sweep=run.run_id)
            write_run(store, run.row)
        run_ids.append(run.run_id)
    return run_ids


def resume_run(store: Store, run_id: str, *, detach: bool) -> str:
    """Continue a cancelled, failed or interrupted training run from its last finished epoch."""
    row = get_run(store, run_id)
    if row is None or row["kind"] != KIND:
        raise InputError(f"run_id {run_id!r} is no training run in this store; see `python -m "
                         "core runs list`")
    from core.jobs.workers import claim_run, fail_run

    claim_run(store, run_id)   # of concurrent resumes exactly one gets past; the others: one line
    try:
        _start(store, [run_id], detach)
    except Exception as exc:   # before its worker began: free the run for the next resume
        fail_run(store, run_id, f"its resume failed: {type(exc).__name__}: {exc}"[:2000])
        raise
    return run_id


def _start(store: Store, run_ids: list[str], detach: bool) -> None:
    """Train in this process (local, not ``detach``), else through the launcher's worker."""
    from core.jobs.workers import record_worker, start_worker

    request = request_of(get_run(store, run_ids[0])["params"])
    if request.launcher == "local" and not detach:
        record_worker(store, run_ids)
        for run_id in run_ids:
            execute_run(store, run_id)
        return
    start_worker(store, run_ids, request, detach=detach)


def request_of(params: dict) -> TrainRequest:
    """The `TrainRequest` a run was started with (its stored ``params``)."""
    return TrainRequest(**{k: tuple(v) if isinstance(v, list) else v
                           for k, v in params.items() if k in _REQUEST_FIELDS})


def execute_run(store: Store, run_id: str, *, ctx=None, announcer=None) -> dict:
    """Train one created run to its end (or its cancel); returns its final ``runs`` row.

    A cancel that arrived before the run began ends it at once (the resume below would clear
    the cancel file). Failures end in the row (status 'failed', the error's one line) and in the
    run folder's ``worker.log`` (the traceback), never in the caller.
    ``ctx`` and ``announcer``: rank 0 of a torchrun job (`models.training.worker`).
    """
    from models.training.distributed import ONE_PROCESS, Announcer

    ctx = ctx or ONE_PROCESS
    announcer = announcer or Announcer(ctx)
    row = get_run(store, run_id)
    base = {k: row["params"][k] for k in (*_REQUEST_FIELDS, "lr", "sweep") if k in row["params"]}
    cancelled_early = (store.files_dir / row["folder"] / CANCEL_FILE).exists()
    run = RunFolder.open(store, KIND, base, resume=run_id)
    try:
        with run:   # records 'done', 'cancelled' or 'failed' with the error's message
            if cancelled_early:
                raise RunCancelled(f"run {run_id} was cancelled before it began")
            _train(store, run, ctx, announcer)
    except RunCancelled:   # recorded as 'cancelled'; no failure to explain
        pass
    except Exception:   # noqa: BLE001 - recorded; the next run of a sweep still runs
        _log_failure(run)
    finally:
        announcer.send(None)   # the other ranks learn that this run ended before training
    return get_run(store, run_id)


def _log_failure(run: RunFolder) -> None:
    """The traceback behind the row's one-line error, appended to the run folder's log (where a
    detached worker's own output goes too)."""
    with open(run.path / LOG_NAME, "a") as log:
        log.write(f"run {run.run_id} failed:\n{traceback.format_exc()}\n")


def _train(store: Store, run: RunFolder, ctx, announcer) -> None:
    from models.device import resolve_device
    from models.training.data import build_cache, labelled_images
    from models.training.recipe import FineTuneRecipe, LoopSettings, best_path
    from models.training.tracking import make_tracker

    p = run.params
    request = request_of(p)
    device = ctx.device if ctx.distributed else resolve_device(request.device)
    parent, checkpoint = _parent(store, request.model_init)
    model, config = _initial_model(request, checkpoint, device.type)
    run.record(parent_model=parent, config=config)
    shape = model.config.input_shape
    data = {}
    for role, name in (("train", request.train_set), ("val", request.val_set)):
        data[role] = build_cache(store, labelled_images(store, name), input_shape=shape,
                                 preprocess=request.preprocess, workers=2, progress=run.progress)
    workers = request.workers if request.workers is not None else \
        (4 if device.type == "cuda" else 0)
    settings = LoopSettings(mode=request.mode, lr=p["lr"], epochs=request.epochs,
                            batch_size=request.batch_size, seed=request.seed, beta=request.beta,
                            device=device, workers=workers, compile=request.compile,
                            freeze_bn=request.freeze_bn)
    meta = {"config": config, "preprocess": request.preprocess, "parent": parent,
            "mode": request.mode, "lr": p["lr"]}

    # a resumed run continues its MLflow run (the same epochs, steps and checkpoints)
    tracker = make_tracker(request.mlflow_uri, run_name=run.run_id,
                           resume_run_id=p.get("mlflow_run_id"))
    if tracker.run_id and tracker.run_id != p.get("mlflow_run_id"):   # a new MLflow run
        tracker.log_params(run.params)
        run.record(mlflow_run_id=tracker.run_id)
        write_run(store, run.row)   # before the first epoch: a kill then still resumes it

    def on_epoch(row: dict, state: dict) -> None:
        epochs = pd.DataFrame([{**r, "run_id": run.run_id} for r in state["history"]])
        store.write_tables({"train_epochs": epochs})   # a short write; idempotent on resume
        run.record(best_epoch=state["best_epoch"], best_val_loss=state["best_val_loss"])
        write_run(store, run.row)
        if row:
            tracker.log_epoch(row["epoch"], {k: v for k, v in row.items() if k != "epoch"})

    recipe = FineTuneRecipe(settings, folder=run.path, meta=meta, ctx=ctx, on_epoch=on_epoch,
                            check_cancel=run.check_cancel, progress=run.progress)
    announcer.send({"train": data["train"], "val": data["val"], "settings": settings,
                    "meta": meta, "config": config, "folder": str(run.path)})
    announcer.training = True
    try:
        recipe.setup(model, data["train"], data["val"])
        state = recipe.train()
    except (RunCancelled, KeyboardInterrupt):   # as the run folder records them
        tracker.finish("cancelled")
        raise
    except BaseException:
        tracker.finish("failed")
        raise
    announcer.training = False
    on_epoch({}, state)   # a resumed run that had finished training writes its rows again
    tracker.log_checkpoint("best.pt", best_path(run.path))
    tracker.finish("done")
    child = p.get("child_model") or _child_name(store, parent or Path(checkpoint).stem,
                                                request.mode, p["lr"], run.run_id)
    run.record(child_model=child)
    _register_and_evaluate(store, run, request, child, parent, best_path(run.path))


def _register_and_evaluate(store, run, request, child, parent, checkpoint) -> None:
    from models.inference.predict import GMIC_KIND, _stored_path, predict_test_set

    description = (f"GMIC fine-tuned ({request.mode}, lr {lr_label(run.params['lr'])}, best epoch "
                   f"{run.params['best_epoch']}) from {parent or request.model_init} on "
                   f"{request.train_set}; run {run.run_id}")
    run.ingest("model", {"models": pd.DataFrame([{
        "model": child, "kind": GMIC_KIND, "checkpoint": _stored_path(checkpoint),
        "parent": parent, "description": description, "synthetic": False,
        "preprocess": request.preprocess}])})
    device = request.device
    for test_set in request.evaluate:
        predict_test_set(store, checkpoints=[checkpoint], name=child, test_set=test_set,
                         parent=parent, description=description, device=device,
                         preprocess=request.preprocess, batch_size=request.batch_size)
        if parent is not None:   # a stored or shipped parent, scored on the same cases
            _, parent_checkpoint = _parent(store, parent)
            predict_test_set(store, checkpoints=[parent_checkpoint], name=parent,
                             test_set=test_set, device=device)   # skips what it has scored
        run.check_cancel()


def _parent(store: Store, spec: str) -> tuple[str | None, Path]:
    """(parent model name or None for a bare checkpoint file, its one checkpoint)."""
    from models.inference.predict import resolve_model

    name, paths = resolve_model(store, spec)
    if len(paths) != 1:
        raise InputError(f"model_init {spec!r} is an ensemble of {len(paths)} checkpoints; "
                         "fine-tune one checkpoint")
    if not Path(paths[0]).is_file():
        raise InputError(f"model_init {spec!r}: checkpoint {paths[0]} does not exist")
    return (None if Path(spec).is_file() else name), Path(paths[0])


def _initial_model(request: TrainRequest, checkpoint: Path, device_type: str):
    """The starting network and its config name (scratch: the parent's architecture,
    PyTorch's default initialisation)."""
    from models.networks.gmic import load_gmic_checkpoint
    from models.inference.predict import checkpoint_config
    from models.training.recipe import reset_to_default_init

    config = request.config or checkpoint_config(checkpoint)
    if request.config is None and device_type == "cpu" and config.startswith("paper"):
        config = "cpu-small"   # the paper's input is ~4x too slow to train on a CPU
    model = load_gmic_checkpoint(checkpoint, config)
    if request.mode == "scratch":
        import torch

        torch.manual_seed(request.seed)
        reset_to_default_init(model)
    return model, config


def _child_name(store: Store, parent: str, mode: str, lr: float, run_id: str) -> str:
    """``<parent>-<mode>-lr<rate>-<run id tail>``, the rate as `lr_label` writes it (lr1e-04,
    not lr0.0001 beside lr1e-05). A run that already named its child keeps that name."""
    name = f"{parent}-{mode}-lr{lr_label(lr)}-{run_id[-4:]}"
    taken = set(store.model_names())
    return name if name not in taken else f"{name}-{run_id[-15:-5]}"


def _jsonable(params: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


def run_summary(store: Store, run_id: str, *, level: str = "image") -> dict:
    """One run for ``train --json``: run id, status, lr, best epoch and validation loss, child
    model, and per evaluated test set the child's AUC [DeLong 95 % CI] beside the parent's
    with the paired DeLong p-value (None where the parent has no scores there)."""
    from core.reports.benchmark import auc_summary, load_scores, pairwise_tests

    row = get_run(store, run_id)
    if row is None:
        raise InputError(f"run_id {run_id!r} is not in this store")
    p = row["params"]
    out = {"run_id": run_id, "status": row["status"], "error": row.get("error"), "lr": p["lr"],
           "mode": p["mode"], "best_epoch": p.get("best_epoch"),
           "best_val_loss": p.get("best_val_loss"), "child_model": p.get("child_model"),
           "parent_model": p.get("parent_model"), "evaluations": []}
    child, parent = p.get("child_model"), p.get("parent_model")
    if row["status"] != "done" or child not in store.model_names():
        return out
    models = [child] + ([parent] if parent in store.model_names() else [])
    for test_set in p.get("evaluate") or []:
        scores = load_scores(store, models=models, test_sets=[test_set], level=level)
        table = auc_summary(scores).set_index("model")
        entry = {"test_set": test_set, "level": level}
        for who, name in (("", child), ("parent_", parent)):
            has = name in table.index and scores.loc[scores["model"] == name, "score"].notna().any()
            for k in ("auc", "ci_low", "ci_high"):
                entry[f"{who}{k}"] = float(table.at[name, k]) if has else None
        pairs = pairwise_tests(scores)
        entry["p_delong"] = float(pairs["p"].iat[0]) if len(pairs) else None
        out["evaluations"].append(entry)
    return out
