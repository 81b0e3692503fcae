"""The fine-tuning recipe: one run of GMIC on the study's loss, as torchtune's recipes read.

Why its own module: `models.training.sweep` decides *what* runs (store, run folders, evaluation); this
decides *how* one run trains, and knows nothing of the store. `FineTuneRecipe` is used in three
lines (`models.training.sweep`, and every other rank in `models.training.worker`)::

    recipe = FineTuneRecipe(settings, folder=run_folder, meta=meta, ctx=ctx)
    recipe.setup(model, train, val)     # model, Adam, resume from final.pt, DDP, data
    state = recipe.train()              # train_epoch, validate, save_checkpoint per epoch

It writes two checkpoints into the run folder: ``final.pt`` after every epoch (weights, Adam
state, history: the resume point, and after the last epoch the final model) and ``best.pt``
whenever the validation loss reaches a new low. A resumed run loads ``final.pt`` and continues
with the next epoch: sampling and augmentation depend only on (seed, epoch, image), so it equals
an uninterrupted run.

Modes (the study's): ``feature-extraction`` trains the final fully connected parts only
(attention, ``classifier_linear``, ``fusion_dnn``; every other tensor, BatchNorm statistics
included, stays as loaded), ``full`` trains every weight from the loaded ones, ``scratch`` every
weight from PyTorch's default initialisation (`reset_to_default_init`).

On CUDA the forward runs under bf16 autocast with channels_last inputs (the loss is computed
from logits in float32, `models.training.loss`), cuDNN autotuning on; ``compile`` wraps the model in
``torch.compile``. Unmeasured here (no GPU): see ``bench/train.py``.

Under torchrun (a `models.training.distributed.DistContext` with several processes) the same recipe runs
on every rank: each takes its contiguous share of every global batch (`rank_batches`; the batch
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
from torch.nn.modules.batchnorm import _BatchNorm

from core.jobs.run_folder import RunCancelled
from core.stats import roc_auc
from models.networks.gmic import GMIC
from models.training.data import CachedImages, LabelledImages, epoch_sample, make_loader
from models.training.distributed import (ONE_PROCESS, DistContext, all_reduce_sum, gather_array, rank_batches,
                                         rank_slice, unwrap, wrap_model)
from models.training.loss import gmic_loss

__all__ = ["MODES", "FineTuneRecipe", "LoopSettings", "best_path", "final_path", "freeze_batchnorm",
           "reset_to_default_init", "set_mode"]

MODES = ("feature-extraction", "full", "scratch")


@dataclass(frozen=True)
class LoopSettings:
    """What one run's recipe needs (the rest of a `models.training.sweep.TrainRequest` is orchestration).

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


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm under ``module`` in eval mode: its running statistics stay as loaded (a
    small batch's, or a rank's share's, are not the data's); its affine weights still train."""
    for m in module.modules():
        if isinstance(m, _BatchNorm):
            m.eval()
    return module


def set_mode(model: nn.Module, mode: str, *, freeze_bn: bool = False) -> nn.Module:
    """Training mode for ``mode``, DDP-wrapped or not: the wrapper and the network in train(),
    then in feature extraction the backbones frozen (their BatchNorms in eval), and with
    ``freeze_bn`` every BatchNorm in eval. A bare ``train()`` would undo both: call this at the
    start of every epoch."""
    model.train()
    inner = unwrap(model)
    inner.freeze_backbones(mode == "feature-extraction")
    if freeze_bn:
        freeze_batchnorm(inner)
    return model


def _autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


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


class FineTuneRecipe:
    """GMIC fine-tuning, one run (one learning rate) on this process.

    Features: the study's three modes; Adam on the study's loss over balanced, augmented epochs
    (`models.training.data`); validation loss and image-level AUC of ``y_fusion`` each epoch;
    ``best.pt`` / ``final.pt`` and resume from ``final.pt``; frozen BatchNorm (``freeze_bn``); bf16
    autocast, channels_last and fused Adam on CUDA, ``torch.compile``; DDP under torchrun.

    ``meta`` (JSON-able: config name, preprocess, parent) is saved in both checkpoints.
    ``on_epoch(row, state)`` follows each epoch's checkpoint (row: epoch, train_loss, val_loss,
    val_auc, lr, images, elapsed_s; state: epoch, best_epoch, best_val_loss, history);
    ``check_cancel()`` runs before every batch and may raise; ``progress(done, total, message)``
    counts batches. ``ctx``: this process's place in a torchrun job (``settings.device`` must be
    its device); on other ranks than 0 nothing is written and the hooks are not called.
    """

    def __init__(self, settings: LoopSettings, *, folder: Path, meta: dict,
                 ctx: DistContext = ONE_PROCESS,
                 on_epoch: Callable[[dict, dict], None] = lambda row, state: None,
                 check_cancel: Callable[[], None] = lambda: None,
                 progress: Callable[[int, int, str], None] | None = None) -> None:
        self.settings, self.folder, self.meta, self.ctx = settings, Path(folder), meta, ctx
        self._on_epoch, self._progress = on_epoch, progress
        self._check_cancel = _synchronised(check_cancel, ctx)
        # feature extraction freezes the backbones, which hold every BatchNorm
        self.bn_frozen = settings.freeze_bn or settings.mode == "feature-extraction"
        self.state = {"epoch": 0, "best_epoch": None, "best_val_loss": math.inf, "history": []}

    # ------------------------------------------------------------------ setup
    def setup(self, model: GMIC, train: LabelledImages, val: LabelledImages) -> None:
        """Model (on CPU, as loaded) on the device in its mode, Adam, the last epoch of
        ``final.pt`` if there is one, DDP, and the data (cached by `models.training.data.build_cache`)."""
        self._setup_model(model)
        self._setup_optimizer()
        if final_path(self.folder).is_file():
            self._load_checkpoint(final_path(self.folder))
        self._setup_distributed()
        self._setup_data(train, val)

    def _setup_model(self, model: GMIC) -> None:
        if self.settings.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.model = model.to(self.settings.device)
        # before Adam and DDP read requires_grad
        set_mode(self.model, self.settings.mode, freeze_bn=self.settings.freeze_bn)

    def _setup_optimizer(self) -> None:
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=self.settings.lr,
                                          fused=self.settings.device.type == "cuda")

    def _load_checkpoint(self, path: Path) -> None:
        """A resume: weights, Adam and history as the last finished epoch left them."""
        saved = torch.load(path, map_location=self.settings.device, weights_only=True)
        self.model.load_state_dict(saved["state_dict"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.state = {k: saved[k] for k in self.state}

    def _setup_distributed(self) -> None:
        # DDP starts every rank from rank 0's weights; several shards need BatchNorm frozen or synced
        self.wrapped = wrap_model(self.model, self.ctx, batchnorm="frozen" if self.bn_frozen else "sync")
        self._forward = torch.compile(self.wrapped) if self.settings.compile else self.wrapped

    def _setup_data(self, train: LabelledImages, val: LabelledImages) -> None:
        self.train_set = CachedImages(train, augment_seed=self.settings.seed)
        self.val = val
        self._malignant = train.labels[:, 1].numpy()
        self.steps_per_epoch = len(self._batches(1))

    def _batches(self, epoch: int) -> list[tuple[np.ndarray, int]]:
        """This rank's parts of the epoch's global batches, with each global batch's size."""
        return rank_batches(epoch_sample(self._malignant, epoch=epoch, seed=self.settings.seed),
                            self.settings.batch_size, self.ctx)

    # ------------------------------------------------------------------ one epoch
    def train_epoch(self, epoch: int) -> tuple[float, int]:
        """One epoch of Adam steps; returns (mean training loss, images seen) over every rank."""
        s = self.settings
        self.train_set.set_epoch(epoch)
        parts = self._batches(epoch)
        loader = make_loader(self.train_set, None, batch_size=s.batch_size, workers=s.workers,
                             pin_memory=s.device.type == "cuda", batches=[part for part, _ in parts])
        set_mode(self.wrapped, s.mode, freeze_bn=s.freeze_bn)
        loss_sum, seen = 0.0, 0
        for b, ((x, y), (_, size)) in enumerate(zip(loader, parts, strict=True)):
            self._check_cancel()
            if size < 2 and not self.bn_frozen:
                continue   # BatchNorm in training mode needs two images
            loss_sum, seen = loss_sum + self._loss_step(x, y, size), seen + len(y)
            if self._progress is not None and self.ctx.is_main:
                self._progress((epoch - 1) * self.steps_per_epoch + b + 1, s.epochs * self.steps_per_epoch,
                               f"epoch {epoch}/{s.epochs}, loss {loss_sum / max(seen, 1):.4f}")
        loss_sum, seen = (float(v) for v in all_reduce_sum([loss_sum, seen], self.ctx))
        return loss_sum / max(seen, 1), int(seen)

    def _loss_step(self, x: torch.Tensor, y: torch.Tensor, size: int) -> float:
        """One Adam step on this rank's part of a global batch of ``size`` images; returns the
        part's summed loss."""
        with _autocast(self.settings.device):
            out = self._forward(_to_device(x, self.settings.device), intermediates=True)
        loss = gmic_loss(out, y, percent_t=self.model.config.percent_t, beta=self.settings.beta,
                         reduction="sum")
        self.optimizer.zero_grad(set_to_none=True)
        # DDP averages over the ranks: the mean over the global batch, however it is split
        (loss * self.ctx.world_size / size).backward()
        self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def validate(self) -> tuple[float, float]:
        """(mean loss, image-level malignant AUC of y_fusion) on the validation images, eval mode;
        each rank scores its contiguous share, the shares are gathered in order."""
        s = self.settings
        self.model.eval()
        share = rank_slice(len(self.val.frame), self.ctx)
        loader = make_loader(CachedImages(self.val), range(share.start, share.stop),
                             batch_size=s.batch_size, workers=s.workers, pin_memory=s.device.type == "cuda")
        total, scores = 0.0, []
        for x, y in loader:
            with _autocast(s.device):
                out = self.model(_to_device(x, s.device), intermediates=True)
            total += float(gmic_loss(out, y, percent_t=self.model.config.percent_t, beta=s.beta,
                                     reduction="sum"))
            scores.append(out["y_fusion"][:, 1].float().cpu())
        total = float(all_reduce_sum([total], self.ctx)[0])
        score = gather_array(torch.cat(scores).numpy() if scores else np.zeros(0), self.ctx)
        truth = self.val.labels[:, 1].numpy().astype(bool)
        auc = roc_auc(truth, score) if 0 < truth.sum() < truth.size else float("nan")
        return total / max(len(truth), 1), float(auc)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, epoch: int, *, best: bool) -> None:
        """``final.pt`` (weights, Adam, recipe state: the resume point) and, when ``best``,
        ``best.pt`` (weights); rank 0 only."""
        if not self.ctx.is_main:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        if best:
            _save(best_path(self.folder), {"state_dict": weights, **self.meta, "epoch": epoch})
        _save(final_path(self.folder), {"state_dict": weights, "optimizer": self.optimizer.state_dict(),
                                        **self.meta, **self.state})

    # ------------------------------------------------------------------ the loop
    def train(self) -> dict:
        """The epochs not yet in ``final.pt``; returns the recipe state (the model ends in eval mode)."""
        for epoch in range(self.state["epoch"] + 1, self.settings.epochs + 1):
            start = time.perf_counter()
            train_loss, images = self.train_epoch(epoch)
            val_loss, val_auc = self.validate()
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_auc": val_auc,
                   "lr": self.optimizer.param_groups[0]["lr"], "images": images,
                   "elapsed_s": time.perf_counter() - start}
            best = val_loss < self.state["best_val_loss"]
            self.state = self.state | {"epoch": epoch, "history": [*self.state["history"], row]}
            if best:
                self.state |= {"best_epoch": epoch, "best_val_loss": val_loss}
            self.save_checkpoint(epoch, best=best)
            if self.ctx.is_main:
                self._on_epoch(row, self.state)
        self.model.eval()
        return self.state


def _save(path: Path, payload: dict) -> None:
    """Atomic ``torch.save``: a crash leaves the previous file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
