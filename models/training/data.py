"""Training data for GMIC fine-tuning: labelled images, a tensor cache, per-epoch sampling,
augmentation and the DataLoader.

Why a cache: decoding a 16-bit PNG or a DICOM and cropping, filtering and resizing it costs far
more than a GPU's forward pass, and every epoch needs every image again. So each image is
prepared once (`models.inference.preprocess.model_input`, the path `models.inference.predict` takes too) and kept
as a float16 tensor file under ``<store files>/cache/train/``, keyed by the image's sha256, the
preprocessing and the input size (`cache_key`): a second run, or another learning rate, reads
tensors only. A DataLoader with workers and pinned memory reads them, so on a GPU the reading
overlaps the training (``bench/train.py`` measures delivery against consumption).

Sampling is the study's: every positive image and as many negatives, drawn afresh each epoch
(`epoch_sample`). Augmentation is a random size change and a random crop back to the input
size (`augment`). Both are seeded by (seed, epoch, image), never by a worker's state, so a run
gives the same batches with any number of workers and a resumed run continues the sequence.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from core.errors import InputError
from core.io.images import read_pixels
from core.progress import ProgressFn, report
from core.store import Store
from models.inference.preprocess import model_input

__all__ = ["CACHE_FOLDER", "CachedImages", "LabelledImages", "augment", "build_cache",
           "cache_key", "epoch_sample", "labelled_images", "make_loader"]

CACHE_FOLDER = Path("cache") / "train"   # under the store's files folder
_CACHE_VERSION = 1                       # bump when model_input's output changes
SIZE_NOISE = 0.1                          # image scaled by a factor in [0.9, 1.1]
CROP_MARGIN = 0.05                        # crop offset up to 5 % of each side


@dataclass(frozen=True)
class LabelledImages:
    """The images of one set with their labels and cache files.

    Attributes
    ----------
    frame : DataFrame, one row per image: image_id, exam_id, laterality, abs_path, sha256,
        histology, malignant (0/1), benign (0/1)
    labels : Tensor of shape (N, 2), float32, columns (benign, malignant) as GMIC's outputs
    files : cache file per image (after `build_cache`), else empty
    """

    frame: pd.DataFrame
    labels: torch.Tensor
    files: tuple[Path, ...] = ()

    @property
    def n_positive(self) -> int:
        return int(self.labels[:, 1].sum())


def labelled_images(store: Store, test_set: str) -> LabelledImages:
    """Images of ``test_set`` with pixels and labels: malignant = the breast's cancer label,
    benign = a lesion of benign pathology on the image (0 where the data has none, as the
    study). Images without pixels are left out."""
    cases = store.cases(test_set=test_set, level="image")[["image_id", "label", "histology"]]
    images = store.images(test_set=test_set)
    frame = images[images["abs_path"].notna()][
        ["image_id", "exam_id", "laterality", "abs_path", "sha256"]].merge(
        cases, on="image_id", how="inner")
    frame = frame[frame["label"].notna()]
    lesions = store.lesions(test_set=test_set)
    benign = set(lesions.loc[lesions["pathology"] == "benign", "image_id"]) if len(lesions) \
        else set()
    frame = frame.assign(malignant=frame["label"].astype(int),
                         benign=frame["image_id"].isin(benign).astype(int) * (1 - frame["label"]
                                                                              .astype(int)))
    frame = frame.drop(columns="label").sort_values("image_id", ignore_index=True)
    labels = torch.tensor(frame[["benign", "malignant"]].to_numpy(np.float32)).reshape(-1, 2)
    return LabelledImages(frame, labels)


def cache_key(sha256: str, preprocess: str, input_shape: Sequence[int]) -> str:
    """The tensor file's name: what the cached tensor depends on, hashed."""
    text = f"v{_CACHE_VERSION}|{sha256}|{preprocess}|{int(input_shape[0])}x{int(input_shape[1])}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def build_cache(store: Store, images: LabelledImages, *, input_shape: tuple[int, int],
                preprocess: str, workers: int = 2,
                progress: ProgressFn | None = None) -> LabelledImages:
    """Prepare the images not yet cached (threads); returns ``images`` with their files."""
    folder = store.files_dir / CACHE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rows = list(images.frame.itertuples(index=False))
    files = [folder / f"{cache_key(_content_hash(r), preprocess, input_shape)}.pt" for r in rows]
    todo = [(r, f) for r, f in zip(rows, files, strict=True) if not f.is_file()]

    def one(item):
        row, path = item
        pre = model_input(read_pixels(row.abs_path), input_shape, laterality=row.laterality,
                          preprocess=preprocess)
        tmp = path.with_name(f"{path.stem}.{time.monotonic_ns()}.tmp")
        torch.save(pre.image.half().clone(), tmp)
        tmp.replace(path)   # atomic: a reader never sees half a tensor

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, _ in enumerate(pool.map(one, todo), 1):
            report(progress, done, len(todo), "caching input tensors")
    return LabelledImages(images.frame, images.labels, tuple(files))


def _content_hash(row) -> str:
    """The stored sha256, else the file's (images imported before hashing)."""
    if isinstance(row.sha256, str) and row.sha256:
        return row.sha256
    return hashlib.sha256(Path(row.abs_path).read_bytes()).hexdigest()


def epoch_sample(malignant: np.ndarray, *, epoch: int, seed: int) -> np.ndarray:
    """Indices of one epoch: every positive and as many negatives (all if fewer), drawn afresh
    per epoch from (seed, epoch), in a shuffled order."""
    malignant = np.asarray(malignant).astype(bool)
    rng = np.random.default_rng([int(seed), int(epoch)])
    pos, neg = np.flatnonzero(malignant), np.flatnonzero(~malignant)
    neg = rng.choice(neg, size=min(len(pos), len(neg)), replace=False)
    return rng.permutation(np.concatenate([pos, neg]))


def augment(image: torch.Tensor, generator: torch.Generator, *, size_noise: float = SIZE_NOISE,
            margin: float = CROP_MARGIN) -> torch.Tensor:
    """Random size change (factor in [1 - size_noise, 1 + size_noise]) and a random crop back
    to the input size: (1, H, W) -> (1, H, W). Padding takes the image's minimum (background)."""
    _, h, w = image.shape
    factor = 1.0 + size_noise * (2.0 * float(torch.rand((), generator=generator)) - 1.0)
    size = (max(8, round(h * factor)), max(8, round(w * factor)))
    scaled = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    pad_r, pad_c = round(margin * h), round(margin * w)
    extra_r, extra_c = max(0, h - size[0]), max(0, w - size[1])
    padded = F.pad(scaled[None], (pad_c, pad_c + extra_c, pad_r, pad_r + extra_r),
                   mode="constant", value=float(image.min()))[0]
    top = int(torch.randint(0, padded.shape[1] - h + 1, (), generator=generator))
    left = int(torch.randint(0, padded.shape[2] - w + 1, (), generator=generator))
    return padded[:, top:top + h, left:left + w].contiguous()


class CachedImages(Dataset):
    """Cached tensors with labels; ``augment_seed`` (with `set_epoch`) turns augmentation on."""

    def __init__(self, images: LabelledImages, *, augment_seed: int | None = None) -> None:
        if len(images.files) != len(images.frame):
            raise InputError("images are not cached; call build_cache first")
        self.files, self.labels = images.files, images.labels
        self.augment_seed = augment_seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose augmentation to draw (before a loader iterates)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.load(self.files[index], weights_only=True).float()
        if self.augment_seed is not None:
            seed = hashlib.sha256(f"{self.augment_seed}|{self.epoch}|{index}".encode()).digest()
            image = augment(image, torch.Generator().manual_seed(int.from_bytes(seed[:8], "big")
                                                                 >> 1))
        return image, self.labels[index]


def make_loader(dataset: CachedImages, indices: Sequence[int] | None, *, batch_size: int,
                workers: int, pin_memory: bool,
                batches: Sequence[Sequence[int]] | None = None) -> DataLoader:
    """Batches in the order of ``indices`` (None: all, in order), read by ``workers`` processes;
    or, with ``batches``, exactly those batches (a rank's shares of the global batches)."""
    if batches is not None:
        return DataLoader(dataset, batch_sampler=[[int(i) for i in b] for b in batches],
                          num_workers=workers, pin_memory=pin_memory)
    order = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    return DataLoader(dataset, batch_size=batch_size, sampler=order, num_workers=workers,
                      pin_memory=pin_memory, drop_last=False)
