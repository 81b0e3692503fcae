"""Train the demo GMIC: the small network behind the demo's Benchmark and Saliency pages.

Why: the demo should show real predictions of a real network, not invented numbers, yet it must
ship with the repository (a checkpoint of ~3.6 MB) and be re-trainable by anyone on a laptop.
This script is the whole recipe; its defaults made ``models/demo/checkpoints/gmic-demo.pt``::

    python -m models.demo.train_gmic --out models/demo/checkpoints/gmic-demo.pt

Shipped run (2 threads): data 1 min, training 3.3 min; final validation AUC 0.83 (ILC 0.75,
IDC 0.91, image level); on the demo store's test split (seed 0, never seen) the image / breast /
exam AUCs are 0.85 / 0.87 / 0.85 (ILC 0.75 / 0.74 / 0.72, IDC 0.94 / 0.99 / 0.97).

Recipe (`DemoRecipe`, all fixed by the seeds):

- data: ``core.demo.cohort.generate_cohort`` into a temporary folder (deleted afterwards) with
  ``cohort_seed=7``, 600 exams and ``cancer_fraction=0.5``: the demo's renderer and image size
  (512 x 320), enriched with cancers so that a few hundred images teach something. Its ``train``
  split trains, its ``test`` split is the validation printed each epoch. The demo store itself
  (seed 0) is never seen, so its test *and* train splits are unseen data for this network.
- labels, per image from its breast (``breasts`` table): malignant = ``cancer``, benign =
  ``pathology == 'benign'``, in GMIC's column order (benign, malignant).
- inputs: ``models.inference.preprocess.preprocess_image`` with the image's laterality, the same call
  ``models.inference.predict`` makes (crop to the breast, chest wall left, 512 x 320, standardised).
- network: ``CONFIGS["demo"]`` (the "tiny" grid with narrow ResNets), He init, ``torch_seed``.
- phase 1, the global module (``global_epochs``): BCE of each saliency cell against the share of
  it the image's lesion masks cover (/ ``MASK_FULL``, capped at 1; the malignant map learns
  cancers, the benign map benign masses). Why: the paper's global network starts from a patch
  classifier trained on annotated lesions; trained from scratch on a few hundred images with
  the image labels alone (the paper's loss, BCE of y_global + y_local + y_fusion) this network
  memorised the training images and stayed at chance on the validation images (AUC ~0.5 after
  12 epochs), while the exact masks of the synthetic cohort teach it to localise in minutes.
- phase 2, the rest (``epochs``): global module frozen (its BatchNorms in eval mode), local
  network, attention and fusion trained with BCE(y_local) + BCE(y_fusion) on the patches the
  saliency maps select, as GMIC selects them at inference. The network and its outputs are
  GMIC's, unchanged; only the training schedule differs from the paper's.
- augmentation: random up-down flip (image and mask targets together).
- optimiser: Adam (weight decay 1e-4), one-cycle schedule per phase (peak lr 3e-3 in phase 1,
  1e-3 in phase 2), batch 16.

It prints loss and validation AUC (image level, malignant: y_global in phase 1, y_fusion with
its ILC-only and IDC-only AUCs in phase 2) per epoch and saves ``{"state_dict", "config", "recipe", "history"}`` with ``torch.save``; the
loader (`models.networks.gmic.load_gmic_checkpoint`) unwraps ``state_dict`` and `models.inference.predict` reads
``config`` so ``--config`` need not be given. Threads: ``torch.set_num_threads(threads)`` (2 by
default: the recipe is sized to finish in ~15 minutes on two CPU cores).
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import InputError
from core.io.images import read_pixels
from core.stats import roc_auc
from models.networks.gmic import CONFIGS, GMIC, build_gmic, top_t_percent_pool
from models.inference.preprocess import Preprocessed, preprocess_image

__all__ = ["DemoData", "DemoRecipe", "TrainResult", "image_labels", "load_demo_data", "main",
           "train_demo"]

DEFAULT_OUT = Path(__file__).resolve().parent / "checkpoints" / "gmic-demo.pt"
MASK_FULL = 0.1  # a saliency cell whose area is >= 10 % lesion counts as fully positive


@dataclass(frozen=True)
class DemoRecipe:
    """Every setting of a demo training run; the defaults made the shipped checkpoint.

    Attributes
    ----------
    config : name in ``models.networks.gmic.CONFIGS``.
    cohort_seed, n_exams, cancer_fraction : the synthetic cohort (`generate_cohort`).
    torch_seed : initialisation, shuffling and augmentation.
    global_epochs, global_lr : phase 1 (global module on the mask targets).
    epochs, lr : phase 2 (local network, attention, fusion; global module frozen).
    batch_size, weight_decay : both phases (Adam, one-cycle schedule).
    max_train_images : keep only the first N training images (None: all); for quick checks.
    """

    config: str = "demo"
    cohort_seed: int = 7
    n_exams: int = 600
    cancer_fraction: float = 0.5
    torch_seed: int = 0
    global_epochs: int = 10
    global_lr: float = 3e-3
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 16
    weight_decay: float = 1e-4
    max_train_images: int | None = None

    def __post_init__(self) -> None:
        if self.config not in CONFIGS:
            raise InputError(f"config {self.config!r} is unknown; pass one of {sorted(CONFIGS)}")
        for name in ("n_exams", "global_epochs", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{name}={getattr(self, name)!r}; pass a whole number >= 1")
        if self.max_train_images is not None and self.max_train_images < 2:
            raise InputError(f"max_train_images={self.max_train_images!r}; pass >= 2 or None")


@dataclass(frozen=True)
class DemoData:
    """Preprocessed images of one split with their labels.

    Attributes
    ----------
    images : Tensor of shape (N, 1, H, W), float16 (standardised; half the memory of float32)
    labels : Tensor of shape (N, 2), float32, columns (benign, malignant)
    cells : Tensor of shape (N, 2, h, w), float32: saliency targets on the ``cam_size`` grid
        (lesion-mask coverage of each cell / ``MASK_FULL``, capped at 1), channels as ``labels``
    histology : ndarray of shape (N,), object: the breast's histology (ILC, IDC, none)
    """

    images: torch.Tensor
    labels: torch.Tensor
    cells: torch.Tensor
    histology: np.ndarray


@dataclass(frozen=True)
class TrainResult:
    """What `train_demo` returns: the trained model (eval mode), per-epoch history, seconds."""

    model: GMIC
    history: list[dict]
    elapsed_s: float


def image_labels(images, breasts):
    """Per-image (benign, malignant) labels and histology from the ``breasts`` table.

    Parameters
    ----------
    images : DataFrame with exam_id, laterality (one row per image)
    breasts : DataFrame with exam_id, laterality, cancer, pathology, histology

    Returns
    -------
    (ndarray of shape (N, 2) float32, ndarray of shape (N,) object)
    """
    merged = images[["exam_id", "laterality"]].merge(
        breasts[["exam_id", "laterality", "cancer", "pathology", "histology"]],
        on=["exam_id", "laterality"], how="left", validate="many_to_one")
    if merged["cancer"].isna().any():
        raise InputError(f"{int(merged['cancer'].isna().sum())} images have no breast label; "
                         "every image needs its breast in the breasts table")
    labels = np.stack([(merged["pathology"] == "benign").to_numpy(),
                       merged["cancer"].to_numpy() == 1], axis=1).astype(np.float32)
    return labels, merged["histology"].to_numpy(dtype=object)


def load_demo_data(recipe: DemoRecipe, folder: str | Path, *,
                   log: Callable[[str], None] = print) -> dict[str, DemoData]:
    """Render the recipe's cohort into ``folder`` and preprocess it; returns {'train', 'test'}."""
    from core.demo.cohort import generate_cohort

    start = time.perf_counter()
    cohort = generate_cohort(folder, n_exams=recipe.n_exams, seed=recipe.cohort_seed,
                             cancer_fraction=recipe.cancer_fraction)
    images = cohort.tables["images"].merge(cohort.tables["exams"][["exam_id", "split"]],
                                           on="exam_id")
    input_shape, cam_size = CONFIGS[recipe.config].input_shape, CONFIGS[recipe.config].cam_size
    out = {}
    for split in ("train", "test"):
        rows = images[images["split"] == split]
        if split == "train" and recipe.max_train_images is not None:
            rows = rows.iloc[:recipe.max_train_images]
        labels, histology = image_labels(rows, cohort.tables["breasts"])
        tensors, cells = [], []
        for row, label in zip(rows.itertuples(), labels):
            pre = preprocess_image(read_pixels(Path(folder) / row.path), input_shape,
                                   laterality=row.laterality)
            tensors.append(pre.image.half())
            cells.append(mask_cells(cohort.masks.get(row.image_id), label, pre, cam_size))
        out[split] = DemoData(torch.stack(tensors), torch.from_numpy(labels),
                              torch.stack(cells), histology)
    log(f"data: {recipe.n_exams} exams (seed {recipe.cohort_seed}), "
        f"{len(out['train'].labels)} train / {len(out['test'].labels)} validation images, "
        f"{int(out['train'].labels[:, 1].sum())} / {int(out['test'].labels[:, 1].sum())} "
        f"malignant, {time.perf_counter() - start:.0f} s")
    return out


def mask_cells(mask: np.ndarray | None, label: np.ndarray, pre: Preprocessed,
               cam_size: tuple[int, int]) -> torch.Tensor:
    """Saliency targets (2, h, w) for one image: its lesion mask, cropped, flipped and resized
    like the image (``pre``), averaged over each saliency cell, / ``MASK_FULL``, capped at 1.

    The mask goes to the channel of the image's label (benign 0, malignant 1); zeros without one.
    """
    out = torch.zeros(2, *cam_size)
    if mask is None or not label.any():
        return out
    r0, c0, h, w = pre.crop_box
    box = torch.from_numpy(np.ascontiguousarray(mask[r0:r0 + h, c0:c0 + w], dtype=np.float32))
    if pre.flipped:
        box = box.flip(-1)
    resized = F.interpolate(box[None, None], size=pre.input_shape, mode="bilinear",
                            align_corners=False)
    cover = F.adaptive_avg_pool2d(resized, cam_size)[0, 0]
    out[1 if label[1] else 0] = (cover / MASK_FULL).clamp(max=1.0)
    return out


def _flip_rows(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Up-down flip of the items of (N, C, H, W) ``x`` where ``flip`` (N,) is True."""
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-2), x)


@torch.inference_mode()
def _scores(model: GMIC, data: DemoData, key: str, batch_size: int = 64) -> np.ndarray:
    model.eval()
    parts = []
    for i in range(0, len(data.labels), batch_size):
        x = data.images[i:i + batch_size].float()
        if key == "y_global":     # phase 1: the global module alone (half the cost)
            saliency = torch.sigmoid(model.forward_global(x)[1])
            parts.append(top_t_percent_pool(saliency, model.config.percent_t)[:, 1])
        else:
            parts.append(model(x)[key][:, 1])
    return torch.cat(parts).numpy()


def _auc(labels: torch.Tensor, scores: np.ndarray, histology: np.ndarray, keep: str | None = None):
    y = labels[:, 1].numpy().astype(bool)
    mask = np.ones_like(y) if keep is None else np.isin(histology, [keep, "none"])
    y, s = y[mask], scores[mask]
    return roc_auc(y, s) if 0 < y.sum() < y.size else float("nan")


_AUC_LABELS = {"val_auc_global": "val AUC (y_global)", "val_auc": "val AUC (y_fusion)",
               "val_auc_ilc": "ILC", "val_auc_idc": "IDC"}


def _phase(model: GMIC, params: list, train: DemoData, *, epochs: int, lr: float,
           recipe: DemoRecipe, gen: torch.Generator, step, evaluate, log, name: str,
           history: list, start: float) -> None:
    """One training phase: Adam + one-cycle over ``params``; ``step(idx, flip)`` -> loss."""
    n = len(train.labels)
    steps = epochs * -(-n // recipe.batch_size)
    opt = torch.optim.Adam(params, lr=lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, pct_start=0.15, total_steps=steps)
    for epoch in range(1, epochs + 1):
        order = torch.randperm(n, generator=gen)
        total, seen = 0.0, 0
        for i in range(0, n, recipe.batch_size):
            idx = order[i:i + recipe.batch_size]
            flip = torch.rand(idx.numel(), generator=gen) < 0.5
            if idx.numel() < 2:      # BatchNorm needs two images
                continue
            loss = step(idx, flip)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, seen = total + float(loss.detach()) * idx.numel(), seen + idx.numel()
        row = {"phase": name, "epoch": epoch, "loss": total / max(seen, 1), **evaluate(),
               "elapsed_s": time.perf_counter() - start}
        history.append(row)
        aucs = "  ".join(f"{_AUC_LABELS[k]} {v:.3f}" for k, v in row.items() if k in _AUC_LABELS)
        log(f"{name} epoch {epoch}/{epochs}  loss {row['loss']:.4f}  {aucs}  "
            f"{row['elapsed_s']:.0f} s")


def train_demo(recipe: DemoRecipe, data: dict[str, DemoData], *,
               log: Callable[[str], None] = print) -> TrainResult:
    """Train ``CONFIGS[recipe.config]`` from scratch on ``data['train']`` (two phases, see the
    module docstring), logging loss and validation AUC per epoch."""
    start = time.perf_counter()
    torch.manual_seed(recipe.torch_seed)
    gen = torch.Generator().manual_seed(recipe.torch_seed)
    model = build_gmic(recipe.config)
    train, val = data["train"], data["test"]
    history: list[dict] = []

    def global_step(idx, flip):
        model.train()
        _, logits = model.forward_global(_flip_rows(train.images[idx].float(), flip))
        return F.binary_cross_entropy_with_logits(logits, _flip_rows(train.cells[idx], flip))

    def global_eval():
        return {"val_auc_global": _auc(val.labels, _scores(model, val, "y_global"), val.histology)}

    _phase(model, model.global_parameters(), train, epochs=recipe.global_epochs,
           lr=recipe.global_lr, recipe=recipe, gen=gen, step=global_step, evaluate=global_eval,
           log=log, name="global", history=history, start=start)

    for p in model.global_parameters():
        p.requires_grad_(False)

    def fusion_step(idx, flip):
        model.train()
        model.ds_net.eval()                  # frozen: keep its BatchNorm statistics
        model.left_postprocess_net.eval()
        out = model(_flip_rows(train.images[idx].float(), flip))
        target = train.labels[idx]
        return sum(F.binary_cross_entropy(out[k].clamp(1e-6, 1 - 1e-6), target)
                   for k in ("y_local", "y_fusion"))

    def fusion_eval():
        s = _scores(model, val, "y_fusion")
        return {"val_auc": _auc(val.labels, s, val.histology),
                "val_auc_ilc": _auc(val.labels, s, val.histology, "ILC"),
                "val_auc_idc": _auc(val.labels, s, val.histology, "IDC")}

    _phase(model, model.local_parameters() + model.head_parameters(), train, epochs=recipe.epochs,
           lr=recipe.lr, recipe=recipe, gen=gen, step=fusion_step, evaluate=fusion_eval, log=log,
           name="fusion", history=history, start=start)
    model.requires_grad_(True)
    return TrainResult(model.eval(), history, time.perf_counter() - start)


def save_checkpoint(result: TrainResult, recipe: DemoRecipe, out: str | Path) -> Path:
    """``torch.save`` the state dict with its config name, recipe and history (all plain types,
    so ``torch.load(weights_only=True)`` reads it)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"state_dict": {k: v.detach().clone() for k, v in result.model.state_dict().items()},
               "config": recipe.config, "recipe": dataclasses.asdict(recipe),
               "history": result.history}
    tmp = out.with_name(out.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(out)
    return out


def _parser() -> argparse.ArgumentParser:
    d = DemoRecipe()
    p = argparse.ArgumentParser(
        prog="python -m models.demo.train_gmic", description=__doc__.split("\n")[0],
        epilog="example: python -m models.demo.train_gmic --out models/demo/checkpoints/gmic-demo.pt")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="checkpoint file to write")
    p.add_argument("--config", default=d.config, help="name in models.networks.gmic.CONFIGS")
    p.add_argument("--cohort-seed", type=int, default=d.cohort_seed)
    p.add_argument("--n-exams", type=int, default=d.n_exams)
    p.add_argument("--cancer-fraction", type=float, default=d.cancer_fraction)
    p.add_argument("--seed", type=int, default=d.torch_seed, help="torch seed")
    p.add_argument("--global-epochs", type=int, default=d.global_epochs, help="phase 1 epochs")
    p.add_argument("--global-lr", type=float, default=d.global_lr, help="phase 1 peak lr")
    p.add_argument("--epochs", type=int, default=d.epochs, help="phase 2 epochs")
    p.add_argument("--lr", type=float, default=d.lr, help="phase 2 peak lr")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--max-train-images", type=int, default=None,
                   help="use only the first N training images (quick checks)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    start = time.perf_counter()
    try:
        recipe = DemoRecipe(
            config=args.config, cohort_seed=args.cohort_seed, n_exams=args.n_exams,
            cancer_fraction=args.cancer_fraction, torch_seed=args.seed,
            global_epochs=args.global_epochs, global_lr=args.global_lr, epochs=args.epochs,
            lr=args.lr, batch_size=args.batch_size, weight_decay=args.weight_decay,
            max_train_images=args.max_train_images)
        torch.set_num_threads(args.threads)
        folder = Path(tempfile.mkdtemp(prefix="ilcscope-train-demo-"))
        try:
            data = load_demo_data(recipe, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        result = train_demo(recipe, data)
        path = save_checkpoint(result, recipe, args.out)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"saved {path} ({path.stat().st_size / 1e6:.2f} MB); training {result.elapsed_s:.0f} s, "
          f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
