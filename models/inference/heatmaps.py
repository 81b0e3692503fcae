"""Sliding-window benign and malignant heatmaps from the NYU patch classifier, batched.

The image+heatmaps model of Wu et al. (IEEE TMI 2020) reads two extra input channels made by
sliding the DenseNet-121 patch classifier (``models.networks.nyu_patch``) over the cropped image;
semantics of nyukat/breast_cancer_classifier's ``src/heatmaps/run_producer.py`` (AGPL; read, not
copied), checked against ``shared/fixtures/nyu_dmv_reference``:

* the image (as the model sees it: cropped, flipped to face right) is standardised over the
  whole image in float64; patches are 256 x 256, cut in float32;
* the patch grid: along each axis ``(size - 256) // 70 + 1`` steps of 70 plus one more patch, flush
  with the border, with the surplus spread by shortening ``overlap % steps`` randomly chosen
  steps by one pixel, chosen by Python's ``random.sample``. The official producer seeds
  ``random.seed(0)`` once per run and draws the row list then the column list of every image in
  exam / view order, so a port replays that sequence with one ``random.Random(0)`` handed from
  image to image (``rng``);
* patch order: columns outer, rows inner; the heatmap is, per pixel, the float32 mean of the
  covering patches' softmax column (0 -> malignant, 1 -> benign), accumulated in that order.

Why batched: a full-size view has ~1,000 patches; the official loop feeds minibatches of 100
numpy patches through the model; here the image goes to the model's device once and the patches
are gathered there, ``batch_size`` at a time (CPU or CUDA, whatever device the model is on).
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from core.errors import InputError
from core.progress import ProgressFn, report

__all__ = [
    "HeatmapConfig",
    "Heatmaps",
    "accumulate_heatmap",
    "exam_heatmaps",
    "heatmaps_from_probs",
    "patch_origins",
    "patch_probabilities",
    "produce_heatmaps",
    "standardise_float64",
    "stride_list",
]

MALIGNANT_COLUMN, BENIGN_COLUMN = 0, 1   # run_producer.py's heatmap_type = [0, 1]


@dataclass(frozen=True)
class HeatmapConfig:
    """The producer's settings; defaults are the official run (run_producer.py, run.sh).

    Args:
        patch_size: side of the square patches, pixels (256).
        stride: nominal step between patches, pixels (``stride_fixed`` = 70).
        batch_size: patches per forward pass (100 officially; larger is faster on a GPU).
    """

    patch_size: int = 256
    stride: int = 70
    batch_size: int = 100

    def __post_init__(self) -> None:
        for name in ("patch_size", "stride", "batch_size"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise InputError(f"HeatmapConfig.{name} is {value!r}; pass a positive integer")


@dataclass(frozen=True)
class Heatmaps:
    """One image's heatmaps, in the orientation of the input image.

    Attributes:
        malignant: (H, W) float32, mean malignant probability of the patches covering each pixel.
        benign: (H, W) float32, same for the benign column.
        probs: (N, C) float32 softmax of every patch, rows in ``origins`` order.
        origins: (N, 2) int64 (row, col) of each patch's top-left pixel; columns outer, rows inner.
        row_strides: the N_rows - 1 steps down the rows (the official ``width_stride_list``).
        col_strides: the N_cols - 1 steps across the columns (``length_stride_list``).
    """

    malignant: np.ndarray
    benign: np.ndarray
    probs: np.ndarray
    origins: np.ndarray
    row_strides: tuple[int, ...]
    col_strides: tuple[int, ...]


def stride_list(size: int, *, patch_size: int = 256, stride: int = 70, rng: random.Random) -> list[int]:
    """Steps between consecutive patch origins along an axis of ``size`` pixels.

    The last patch ends flush with the border. When ``(size - patch_size) % stride`` is not 0,
    one patch more than fits at ``stride`` is used and the overlap is spread evenly; the
    ``overlap % steps`` steps shortened by one more pixel are ``rng.sample(range(steps), k)``
    (the official draw; ``rng`` is advanced only in that case).

    >>> stride_list(1000, rng=random.Random(0))
    [67, 68, 68, 68, 67, 68, 67, 68, 68, 68, 67]
    """
    if size < patch_size:
        raise InputError(f"image axis of {size} px is shorter than the {patch_size} px patch; "
                         "pass the cropped image at full resolution")
    steps = (size - patch_size) // stride
    left = (size - patch_size) % stride
    if left == 0:
        return [stride] * steps
    steps += 1
    overlap = stride - left
    strides = [stride - overlap // steps] * steps
    for step in rng.sample(range(steps), overlap % steps):
        strides[step] -= 1
    return strides


def patch_origins(row_strides: Sequence[int], col_strides: Sequence[int]) -> np.ndarray:
    """(N, 2) int64 top-left (row, col) of every patch, columns outer, rows inner (official order)."""
    rows = np.concatenate([[0], np.cumsum(row_strides, dtype=np.int64)])
    cols = np.concatenate([[0], np.cumsum(col_strides, dtype=np.int64)])
    return np.stack([np.tile(rows, len(cols)), np.repeat(cols, len(rows))], axis=1).astype(np.int64)


def standardise_float64(image: np.ndarray) -> np.ndarray:
    """Whole-image mean 0, population sd 1 (floored at 1e-5), in float64 as the producer does."""
    out = np.array(image, dtype=np.float64, copy=True)
    out -= out.mean()
    out /= max(float(out.std()), 1e-5)
    return out


def _input_layout(model: nn.Module) -> tuple[torch.device, int, bool]:
    """(device, input channels, channels_last?) read from the model's first conv."""
    conv0 = model.features.conv0
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)
               and m.in_channels > 1]
    channels_last = bool(weights) and weights[0].is_contiguous(memory_format=torch.channels_last) \
        and not weights[0].is_contiguous()
    return conv0.weight.device, conv0.in_channels, channels_last


@torch.inference_mode()
def patch_probabilities(model: nn.Module, image: np.ndarray, origins: np.ndarray, *, patch_size: int = 256,
                        batch_size: int = 100, progress: ProgressFn | None = None) -> np.ndarray:
    """Softmax of the patch classifier for every patch, batched on the model's device.

    Parameters
    ----------
    model : a ``PatchDenseNet121`` (or its ``optimize_for_inference`` copy, which takes one
        grey channel) in eval mode, on any device; its forward returns ``{"probs": (B, C)}``.
    image : (H, W) standardised image (float64 or float32); cut in float32.
    origins : (N, 2) int patch origins, as :func:`patch_origins` returns them.

    Returns
    -------
    (N, C) float32, row i = the softmax of the patch at ``origins[i]``.
    """
    device, channels, channels_last = _input_layout(model)
    img = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(device)
    offsets = torch.arange(patch_size, device=device)
    origins_t = torch.as_tensor(np.asarray(origins, dtype=np.int64), device=device)
    out = []
    for start in range(0, len(origins_t), batch_size):
        o = origins_t[start:start + batch_size]
        rows, cols = o[:, 0, None] + offsets, o[:, 1, None] + offsets           # (B, P) each
        x = img[rows[:, :, None], cols[:, None, :]].unsqueeze(1)                  # (B, 1, P, P)
        x = x.expand(-1, channels, -1, -1)
        x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        out.append(model(x)["probs"].float().cpu())
        report(progress, min(start + batch_size, len(origins_t)), len(origins_t), "patches")
    return torch.cat(out).numpy() if out else np.zeros((0, 4), np.float32)


def accumulate_heatmap(values: np.ndarray, origins: np.ndarray, shape: tuple[int, int], *,
                       patch_size: int = 256) -> np.ndarray:
    """(H, W) float32: per pixel, the mean of ``values[i]`` over the patches covering it.

    Sums in float32 in patch order, then divides by the float32 count, as the official producer
    does (so the result matches it bit for bit, not only to rounding).
    """
    total = np.zeros(shape, np.float32)
    count = np.zeros(shape, np.float32)
    for v, (r, c) in zip(np.asarray(values, np.float32), origins):
        total[r:r + patch_size, c:c + patch_size] += v
        count[r:r + patch_size, c:c + patch_size] += 1
    return total / count


def produce_heatmaps(model: nn.Module, image: np.ndarray, *, rng: random.Random,
                     config: HeatmapConfig = HeatmapConfig(),
                     progress: ProgressFn | None = None) -> Heatmaps:
    """Malignant and benign heatmaps of one image.

    Parameters
    ----------
    model : the patch classifier (see :func:`patch_probabilities`), on the device to use.
    image : (H, W) the cropped image as the view-wise model sees it (flipped to face right),
        raw intensities, H and W >= ``patch_size``; standardised here.
    rng : ``random.Random(0)`` for the first image of a run, then the same object for the next
        images in exam / view order (the official seeded jitter of the stride lists).

    Returns
    -------
    Heatmaps in the input's orientation (flip back to store them as the official producer does).
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise InputError(f"image has shape {image.shape}; pass one (H, W) grey image")
    p = config.patch_size
    row_strides = stride_list(image.shape[0], patch_size=p, stride=config.stride, rng=rng)
    col_strides = stride_list(image.shape[1], patch_size=p, stride=config.stride, rng=rng)
    probs = patch_probabilities(model, standardise_float64(image), patch_origins(row_strides, col_strides),
                                patch_size=p, batch_size=config.batch_size, progress=progress)
    return heatmaps_from_probs(probs, row_strides, col_strides, image.shape, patch_size=p)


def heatmaps_from_probs(probs: np.ndarray, row_strides: Sequence[int], col_strides: Sequence[int],
                        shape: tuple[int, int], *, patch_size: int = 256) -> Heatmaps:
    """The heatmaps of an image of ``shape`` from its patches' softmax (rows in origin order) and
    its stride lists: what :func:`produce_heatmaps` returns, rebuilt exactly (the heatmap cache
    keeps only these few numbers per patch)."""
    origins = patch_origins(row_strides, col_strides)
    probs = np.asarray(probs, np.float32)
    if len(probs) != len(origins):
        raise InputError(f"{len(probs)} patch probabilities for {len(origins)} patches; pass one "
                         "row per patch")
    return Heatmaps(
        malignant=accumulate_heatmap(probs[:, MALIGNANT_COLUMN], origins, shape, patch_size=patch_size),
        benign=accumulate_heatmap(probs[:, BENIGN_COLUMN], origins, shape, patch_size=patch_size),
        probs=probs, origins=origins, row_strides=tuple(int(s) for s in row_strides),
        col_strides=tuple(int(s) for s in col_strides))


def exam_heatmaps(model: nn.Module, images: Sequence[np.ndarray], *, seed: int = 0,
                  config: HeatmapConfig = HeatmapConfig(),
                  progress: ProgressFn | None = None) -> list[Heatmaps]:
    """Heatmaps of ``images`` in the official order (L-CC, R-CC, L-MLO, R-MLO), from a fresh
    ``random.Random(seed)``: what ``run_producer.py --seed`` gives for a one-exam data file."""
    rng = random.Random(seed)
    return [produce_heatmaps(model, im, rng=rng, config=config, progress=progress) for im in images]
