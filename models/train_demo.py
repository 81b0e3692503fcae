"""Train the demo GMIC: the small network behind the demo's Benchmark and Saliency pages.

Why: the demo should show real predictions of a real network, not invented numbers, yet it must
ship with the repository (a checkpoint of ~3.6 MB) and be re-trainable by anyone on a laptop.
This script is the whole recipe; its defaults made ``models/checkpoints/gmic-demo.pt``::

    python -m models.train_demo --out models/checkpoints/gmic-demo.pt

Recipe (`DemoRecipe`, all fixed by the seeds):

- data: ``core.synthetic.generate_cohort`` into a temporary folder (deleted afterwards) with
  ``cohort_seed=7``, 400 exams and ``cancer_fraction=0.5``: the demo's renderer and image size
  (512 x 320), enriched with cancers so that a few hundred images teach something. Its ``train``
  split trains, its ``test`` split is the validation printed each epoch. The demo store itself
  (seed 0) is never seen, so its test *and* train splits are unseen data for this network.
- labels, per image from its breast (``breasts`` table): malignant = ``cancer``, benign =
  ``pathology == 'benign'``, in GMIC's column order (benign, malignant).
- inputs: ``models.preprocess.preprocess_image`` with the image's laterality, the same call
  ``models.predict`` makes (crop to the breast, chest wall left, 512 x 320, standardised).
- network: ``CONFIGS["demo"]`` (the "tiny" grid with narrow ResNets), He init, ``torch_seed``.
- loss, as the paper: BCE(y_global) + BCE(y_local) + BCE(y_fusion) + ``saliency_l1`` x mean
  saliency (the L1 term keeps the maps sparse, so they point at lesions); plus ``mask_weight`` x
  BCE of each saliency cell against the share of it the lesion masks cover (divided by
  ``MASK_FULL``, capped at 1; the malignant map learns cancers, the benign map benign masses).
  Why the masks: the paper's global network starts from a patch classifier trained on
  annotated lesions, and from scratch on a few hundred images the weak labels alone stay near
  chance for many epochs; the cohort's exact masks do that pre-training's job in minutes. The
  network and its outputs are GMIC's, unchanged; only the training signal is richer.
- augmentation: random up-down flip, intensity gain and offset (the standardised image times
  U(0.9, 1.1) plus U(-0.1, 0.1)).
- optimiser: Adam (lr 1e-3, weight decay 1e-5), cosine decay to 0 over the epochs, batch 16.

It prints loss and AUC (image level, malignant, on the train and validation images) per epoch
and saves ``{"state_dict", "config", "recipe", "history"}`` with ``torch.save``; the
loader (`models.gmic.load_gmic_checkpoint`) unwraps ``state_dict`` and `models.predict` reads
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
from core.imageio import read_pixels
from core.metrics import roc_auc
from models.gmic import CONFIGS, GMIC, build_gmic
from models.preprocess import Preprocessed, preprocess_image

__all__ = ["DemoData", "DemoRecipe", "TrainResult", "image_labels", "load_demo_data", "main",
           "train_demo"]

DEFAULT_OUT = Path(__file__).resolve().parent / "checkpoints" / "gmic-demo.pt"
MASK_FULL = 0.1  # a saliency cell whose area is >= 10 % lesion counts as fully positive


@dataclass(frozen=True)
class DemoRecipe:
    """Every setting of a demo training run; the defaults made the shipped checkpoint.

    Attributes
    ----------
    config : name in ``models.gmic.CONFIGS``.
    cohort_seed, n_exams, cancer_fraction : the synthetic cohort (`generate_cohort`).
    torch_seed : initialisation, shuffling and augmentation.
    epochs, batch_size, lr, weight_decay : optimisation (Adam, cosine decay to 0).
    saliency_l1 : weight of the mean-saliency penalty.
    mask_weight : weight of the saliency cells' BCE against the lesion masks (0: weak labels only).
    max_train_images : keep only the first N training images (None: all); for quick checks.
    """

    config: str = "demo"
    cohort_seed: int = 7
    n_exams: int = 400
    cancer_fraction: float = 0.5
    torch_seed: int = 0
    epochs: int = 8
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-5
    saliency_l1: float = 0.005
    mask_weight: float = 1.0
    max_train_images: int | None = None

    def __post_init__(self) -> None:
        if self.config not in CONFIGS:
            raise InputError(f"config {self.config!r} is unknown; pass one of {sorted(CONFIGS)}")
        for name in ("n_exams", "epochs", "batch_size"):
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
    from core.synthetic import generate_cohort

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


def _loss(out: dict[str, torch.Tensor], target: torch.Tensor, cells: torch.Tensor,
          recipe: DemoRecipe) -> torch.Tensor:
    bce = sum(F.binary_cross_entropy(out[k].clamp(1e-6, 1 - 1e-6), target)
              for k in ("y_global", "y_local", "y_fusion"))
    saliency = out["saliency_map"]
    loss = bce + recipe.saliency_l1 * saliency.mean()
    if recipe.mask_weight:
        loss = loss + recipe.mask_weight * F.binary_cross_entropy(
            saliency.clamp(1e-6, 1 - 1e-6), cells)
    return loss


def _augment(x: torch.Tensor, flip: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Up-down flip where ``flip`` (N,) is True, then intensity gain and offset per image."""
    n = x.shape[0]
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(-2), x)
    gain = 0.9 + 0.2 * torch.rand(n, 1, 1, 1, generator=gen)
    offset = 0.2 * torch.rand(n, 1, 1, 1, generator=gen) - 0.1
    return x * gain + offset


@torch.inference_mode()
def _scores(model: GMIC, data: DemoData, batch_size: int) -> np.ndarray:
    model.eval()
    parts = [model(data.images[i:i + batch_size].float())["y_fusion"][:, 1]
             for i in range(0, len(data.labels), batch_size)]
    return torch.cat(parts).numpy()


def _auc(labels: torch.Tensor, scores: np.ndarray, histology: np.ndarray, keep: str | None = None):
    y = labels[:, 1].numpy().astype(bool)
    mask = np.ones_like(y) if keep is None else np.isin(histology, [keep, "none"])
    y, s = y[mask], scores[mask]
    return roc_auc(y, s) if 0 < y.sum() < y.size else float("nan")


def train_demo(recipe: DemoRecipe, data: dict[str, DemoData], *,
               log: Callable[[str], None] = print) -> TrainResult:
    """Train ``CONFIGS[recipe.config]`` from scratch on ``data['train']``; log per epoch."""
    start = time.perf_counter()
    torch.manual_seed(recipe.torch_seed)
    gen = torch.Generator().manual_seed(recipe.torch_seed)
    model = build_gmic(recipe.config)
    train, val = data["train"], data["test"]
    n = len(train.labels)
    steps_per_epoch = -(-n // recipe.batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, pct_start=0.15,
                                                total_steps=recipe.epochs * steps_per_epoch)
    history = []
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=gen)
        total, seen, running = 0.0, [], []
        for i in range(0, n, recipe.batch_size):
            idx = order[i:i + recipe.batch_size]
            if idx.numel() < 2:      # BatchNorm needs two images
                continue
            flip = torch.rand(idx.numel(), generator=gen) < 0.5
            out = model(_augment(train.images[idx].float(), flip, gen))
            cells = torch.where(flip.view(-1, 1, 1, 1), train.cells[idx].flip(-2),
                                train.cells[idx])
            loss = _loss(out, train.labels[idx], cells, recipe)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * idx.numel()
            seen.append(idx)
            running.append(out["y_fusion"][:, 1].detach())
        seen = torch.cat(seen)
        val_s = _scores(model, val, 64)
        row = {"epoch": epoch, "loss": total / len(seen),
               "train_auc": _auc(train.labels[seen], torch.cat(running).numpy(),
                                 train.histology[seen.numpy()]),
               "val_auc": _auc(val.labels, val_s, val.histology),
               "val_auc_ilc": _auc(val.labels, val_s, val.histology, "ILC"),
               "val_auc_idc": _auc(val.labels, val_s, val.histology, "IDC"),
               "elapsed_s": time.perf_counter() - start}
        history.append(row)
        log(f"epoch {epoch}/{recipe.epochs}  loss {row['loss']:.4f}  train AUC (running) "
            f"{row['train_auc']:.3f}  val AUC {row['val_auc']:.3f} (ILC {row['val_auc_ilc']:.3f}, "
            f"IDC {row['val_auc_idc']:.3f})  {row['elapsed_s']:.0f} s")
    return TrainResult(model.eval(), history, time.perf_counter() - start)


def save_checkpoint(result: TrainResult, recipe: DemoRecipe, out: str | Path) -> Path:
    """``torch.save`` the state dict with its config name, recipe and history (weights_only-safe)."""
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
        prog="python -m models.train_demo", description=__doc__.split("\n")[0],
        epilog="example: python -m models.train_demo --out models/checkpoints/gmic-demo.pt")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="checkpoint file to write")
    p.add_argument("--config", default=d.config, help="name in models.gmic.CONFIGS")
    p.add_argument("--cohort-seed", type=int, default=d.cohort_seed)
    p.add_argument("--n-exams", type=int, default=d.n_exams)
    p.add_argument("--cancer-fraction", type=float, default=d.cancer_fraction)
    p.add_argument("--seed", type=int, default=d.torch_seed, help="torch seed")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--saliency-l1", type=float, default=d.saliency_l1)
    p.add_argument("--mask-weight", type=float, default=d.mask_weight,
                   help="saliency-cell BCE against the lesion masks (0: image labels only)")
    p.add_argument("--max-train-images", type=int, default=None,
                   help="use only the first N training images (quick checks)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        recipe = DemoRecipe(
            config=args.config, cohort_seed=args.cohort_seed, n_exams=args.n_exams,
            cancer_fraction=args.cancer_fraction, torch_seed=args.seed, epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
            saliency_l1=args.saliency_l1, mask_weight=args.mask_weight,
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
    print(f"saved {path} ({path.stat().st_size / 1e6:.2f} MB) after {result.elapsed_s:.0f} s "
          "of training")
    return 0


if __name__ == "__main__":
    sys.exit(main())
