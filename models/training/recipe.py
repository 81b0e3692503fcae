"""The epoch loop of one fine-tuning run: Adam on the study's loss, validation, checkpoints.

Why its own module: `models.training.sweep` decides *what* runs (store, run folders, evaluation); this
decides *how* one run trains, and knows nothing of the store. It writes two checkpoints into the
run folder: ``final.pt`` after every epoch (weights, Adam state, history: the resume point, and
after the last epoch the final model) and ``best.pt`` whenever the validation loss reaches a new
low. A resumed run loads ``final.pt`` and continues with the next epoch: sampling and
augmentation depend only on (seed, epoch, image), so it equals an uninterrupted run.

Modes (the study's): ``feature-extraction`` trains the final fully connected parts only
(attention, ``classifier_linear``, ``fusion_dnn``; every other tensor, BatchNorm statistics
included, stays as loaded), ``full`` trains every weight from the loaded ones, ``scratch`` every
weight from PyTorch's default initialisation (`reset_to_default_init`).

On CUDA the forward runs under bf16 autocast with channels_last inputs (the loss is computed
from logits in float32, `models.training.loss`), cuDNN autotuning on; ``compile`` wraps the model in
``torch.compile``. Unmeasured here (no GPU): see ``bench/train.py``.

Under torchrun (a `models.training.distributed.DistContext` with several processes) the same loop runs on
every rank: each takes its contiguous share of every global batch (`rank_batches`; the batch
size is the global one), DDP averages the gradients, validation scores are gathered, and only
rank 0 writes checkpoints, progress and epochs. BatchNorm must then be frozen (``freeze_bn``,
or feature extraction) or synchronised (CUDA): a shard's batch statistics are not the batch's.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.jobs.run_folder import RunCancelled
from core.stats import roc_auc
from models.training.distributed import (ONE_PROCESS, DistContext, all_reduce_sum, gather_array, rank_batches,
                                rank_slice, unwrap, wrap_model)
from models.networks.gmic import GMIC
from models.training.data import CachedImages, LabelledImages, epoch_sample, make_loader
from models.training.loss import gmic_loss

__all__ = ["MODES", "LoopSettings", "best_path", "final_path", "reset_to_default_init",
           "set_mode", "train_epochs"]

MODES = ("feature-extraction", "full", "scratch")


@dataclass(frozen=True)
class LoopSettings:
    """What one run's loop needs (the rest of a `models.training.sweep.TrainRequest` is orchestration).

    ``freeze_bn`` keeps every BatchNorm in eval mode (running statistics as loaded; affine
    weights still train in full and scratch modes)."""

    mode: str
    lr: float
    epochs: int
    batch_size: int
    seed: int
    beta: float
    device: torch.device
    workers: int = 0
    compile: bool = False
    freeze_bn: bool = False


def final_path(folder: Path) -> Path:
    return Path(folder) / "final.pt"


def best_path(folder: Path) -> Path:
    return Path(folder) / "best.pt"


def reset_to_default_init(model: nn.Module) -> nn.Module:
    """Every layer back to PyTorch's own initialisation (``reset_parameters``): the study's
    from-scratch control (GMIC's builder uses He init for its ResNets)."""
    for module in model.modules():
        if module is not model and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return model


def set_mode(model: GMIC, mode: str, freeze_bn: bool = False) -> GMIC:
    """Training mode; in feature extraction the backbones frozen, their BatchNorms in eval."""
    model.train()
    model.freeze_backbones(mode == "feature-extraction")
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    return model


def _autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


@torch.no_grad()
def validate(model: GMIC, val: LabelledImages, settings: LoopSettings,
             ctx: DistContext = ONE_PROCESS) -> tuple[float, float]:
    """(mean loss, image-level malignant AUC of y_fusion) on the validation images, eval mode;
    each rank scores its contiguous share, the shares are gathered in order."""
    model.eval()
    share = rank_slice(len(val.frame), ctx)
    loader = make_loader(CachedImages(val), range(share.start, share.stop),
                         batch_size=settings.batch_size, workers=settings.workers,
                         pin_memory=settings.device.type == "cuda")
    total, scores = 0.0, []
    for x, y in loader:
        with _autocast(settings.device):
            out = model(_to_device(x, settings.device), intermediates=True)
        total += float(gmic_loss(out, y, percent_t=model.config.percent_t, beta=settings.beta,
                                 reduction="sum"))
        scores.append(out["y_fusion"][:, 1].float().cpu())
    total = float(all_reduce_sum([total], ctx)[0])
    s = gather_array(torch.cat(scores).numpy() if scores else np.zeros(0), ctx)
    y = val.labels[:, 1].numpy().astype(bool)
    auc = roc_auc(y, s) if 0 < y.sum() < y.size else float("nan")
    return total / max(len(y), 1), float(auc)


def _synchronised(check_cancel: Callable[[], None], ctx: DistContext) -> Callable[[], None]:
    """``check_cancel`` run by rank 0 and obeyed by every rank at the same batch (a rank that
    stopped alone would leave the others waiting in DDP's all-reduce)."""
    if not ctx.distributed:
        return check_cancel

    def check() -> None:
        stop: BaseException | None = None
        if ctx.is_main:
            try:
                check_cancel()
            except Exception as exc:  # noqa: BLE001 - re-raised below, on every rank
                stop = exc
        if all_reduce_sum([stop is not None], ctx)[0]:
            raise stop or RunCancelled("rank 0 stopped the run")
    return check


def train_epochs(model: GMIC, train: LabelledImages, val: LabelledImages, *,
                 settings: LoopSettings, folder: Path, meta: dict,
                 on_epoch: Callable[[dict, dict], None] = lambda row, state: None,
                 check_cancel: Callable[[], None] = lambda: None,
                 progress: Callable[[int, int, str], None] | None = None,
                 ctx: DistContext = ONE_PROCESS) -> dict:
    """Train ``model`` (on CPU, as loaded) for the epochs not yet in ``final.pt``.

    ``meta`` (JSON-able: config name, preprocess, parent) is saved in both checkpoints.
    ``on_epoch(row, state)`` follows each epoch's checkpoint (row: epoch, train_loss, val_loss,
    val_auc, lr, images, elapsed_s; state: best_epoch, best_val_loss, history);
    ``check_cancel()`` runs before every batch and may raise. Returns the final state.
    ``ctx``: this process's place in a torchrun job (``settings.device`` must be its device);
    on other ranks than 0 nothing is written and ``on_epoch``/``progress`` are not called.
    """
    device = settings.device
    Path(folder).mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model.to(device)
    bn_frozen = settings.freeze_bn or settings.mode == "feature-extraction"
    set_mode(model, settings.mode, settings.freeze_bn)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=settings.lr, fused=device.type == "cuda")
    state = {"epoch": 0, "best_epoch": None, "best_val_loss": math.inf, "history": []}
    if final_path(folder).is_file():   # a resume: weights, Adam and history of the last epoch
        saved = torch.load(final_path(folder), map_location=device, weights_only=True)
        model.load_state_dict(saved["state_dict"])
        opt.load_state_dict(saved["optimizer"])
        state = {k: saved[k] for k in state}
    # DDP starts every rank from rank 0's weights; several shards need BatchNorm frozen or synced
    wrapped = wrap_model(model, ctx, batchnorm="frozen" if bn_frozen else "sync")
    forward = torch.compile(wrapped) if settings.compile else wrapped
    check = _synchronised(check_cancel, ctx)
    main = ctx.is_main
    train_set = CachedImages(train, augment_seed=settings.seed)
    malignant = train.labels[:, 1].numpy()
    batches = len(rank_batches(epoch_sample(malignant, epoch=1, seed=settings.seed),
                               settings.batch_size, ctx))
    total = settings.epochs * batches
    for epoch in range(state["epoch"] + 1, settings.epochs + 1):
        start = time.perf_counter()
        train_set.set_epoch(epoch)
        parts = rank_batches(epoch_sample(malignant, epoch=epoch, seed=settings.seed),
                             settings.batch_size, ctx)
        loader = make_loader(train_set, None, batch_size=settings.batch_size,
                             workers=settings.workers, pin_memory=device.type == "cuda",
                             batches=[part for part, _ in parts])
        set_mode(model, settings.mode, settings.freeze_bn)
        loss_sum, seen = 0.0, 0
        for b, ((x, y), (_, size)) in enumerate(zip(loader, parts, strict=True)):
            check()
            if size < 2 and not bn_frozen:
                continue   # BatchNorm in training mode needs two images
            with _autocast(device):
                out = forward(_to_device(x, device), intermediates=True)
            loss = gmic_loss(out, y, percent_t=model.config.percent_t, beta=settings.beta,
                             reduction="sum")
            opt.zero_grad(set_to_none=True)
            # DDP averages over the ranks: the mean over the global batch, however it is split
            (loss * ctx.world_size / size).backward()
            opt.step()
            loss_sum, seen = loss_sum + float(loss.detach()), seen + len(y)
            if progress is not None and main:
                progress((epoch - 1) * batches + b + 1, total,
                         f"epoch {epoch}/{settings.epochs}, loss {loss_sum / max(seen, 1):.4f}")
        loss_sum, seen = (float(v) for v in all_reduce_sum([loss_sum, seen], ctx))
        val_loss, val_auc = validate(model, val, settings, ctx)
        row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "val_loss": val_loss,
               "val_auc": val_auc, "lr": opt.param_groups[0]["lr"], "images": int(seen),
               "elapsed_s": time.perf_counter() - start}
        state["history"] = [*state["history"], row]
        state["epoch"] = epoch
        if val_loss < state["best_val_loss"]:
            state |= {"best_epoch": epoch, "best_val_loss": val_loss}
            if main:
                _save(best_path(folder), {"state_dict": _weights(model), **meta, "epoch": epoch})
        if main:
            _save(final_path(folder), {"state_dict": _weights(model),
                                       "optimizer": opt.state_dict(), **meta, **state})
            on_epoch(row, state)
    model.eval()
    return state


def _weights(model: nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}


def _save(path: Path, payload: dict) -> None:
    """Atomic ``torch.save``: a crash leaves the previous file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
