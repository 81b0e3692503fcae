"""The NYU benign and malignant heatmaps on disk: computed once per image and patch model.

Why: the heatmap step is what makes the image + heatmaps models expensive (about 1,000
DenseNet-121 patches per full-size view, minutes on a CPU), and it depends only on the image,
the patch model and the producer's settings, not on the model that reads the heatmaps, the
draws or the test set. So every later run (another name, more draws, another test set) reads
them back, and they are recomputed only when the image or the patch model changes.

Key: sha256 of the image's sha256, the patch model file's sha256, the crop settings and the side
the breast points to (the heatmaps are made on the cropped view turned to face right, as the
official producer makes them), the patch size, stride and seed, and ``CACHE_VERSION``. The batch
size and the device are not in it (they change the probabilities by float32 rounding only).

Entry: ``<store files>/heatmaps/<key[:2]>/<key>.npz`` holding the patch softmax, the two stride
lists and the image shape: a few kB per view, where the two float32 maps would be ~50 MB; the
maps are rebuilt from them exactly (`models.inference.heatmaps.heatmaps_from_probs`).

Seeding: each image gets its own ``random.Random(seed)``. The official producer carries one
generator across its image list, which makes a view's stride jitter depend on the views before
it; per image it equals the producer run on a one-image list, and a cached map is a function of
its key alone.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from core.errors import InputError
from core.progress import ProgressFn
from models.inference.heatmaps import HeatmapConfig, Heatmaps, heatmaps_from_probs, produce_heatmaps

__all__ = ["CACHE_VERSION", "HeatmapCache", "file_sha256"]

CACHE_VERSION = 1


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    except OSError as exc:
        raise InputError(f"{path} could not be read ({exc.strerror}); pass an existing file") from None
    return digest.hexdigest()


@dataclass(frozen=True)
class HeatmapCache:
    """Heatmaps of one patch model and one producer setting, under ``root``.

    Attributes:
        root: the cache folder (``<store files>/heatmaps``).
        patch_sha256: sha256 of the patch model file.
        config: the producer's settings (patch size, stride; batch size is not keyed).
        seed: the seed of each image's stride jitter.
    """

    root: Path
    patch_sha256: str
    config: HeatmapConfig = HeatmapConfig()
    seed: int = 0

    @classmethod
    def open(cls, files_dir: str | Path, patch_model: str | Path, *,
             config: HeatmapConfig = HeatmapConfig(), seed: int = 0) -> HeatmapCache:
        """The cache of ``patch_model`` (hashed here) in a store's files folder."""
        return cls(Path(files_dir) / "heatmaps", file_sha256(patch_model), config, seed)

    def key(self, image_sha256: str, *, points: str, iterations: int, buffer: int) -> str:
        """The entry name of one image cropped with (``iterations``, ``buffer``), facing from
        ``points`` ('left' or 'right'; `models.inference.windows.breast_points`)."""
        if not (isinstance(image_sha256, str) and image_sha256):
            raise InputError(f"image sha256 is {image_sha256!r}; pass the image's hex digest")
        material = {"version": CACHE_VERSION, "image": image_sha256, "patch_model": self.patch_sha256,
                    "points": points, "crop_iterations": int(iterations), "crop_buffer": int(buffer),
                    "patch_size": self.config.patch_size, "stride": self.config.stride, "seed": self.seed}
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npz"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def load(self, key: str, shape: tuple[int, int]) -> Heatmaps | None:
        """The heatmaps stored under ``key`` for an image of ``shape``; None when absent, or
        when the entry does not fit (a damaged or foreign file is recomputed, not trusted)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                stored_shape = tuple(int(v) for v in z["shape"])
                probs, rows, cols = z["probs"], z["row_strides"], z["col_strides"]
        except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile):
            return None
        p = self.config.patch_size
        fits = (stored_shape == tuple(shape) and rows.ndim == cols.ndim == 1 and probs.ndim == 2
                and int(rows.sum()) + p == shape[0] and int(cols.sum()) + p == shape[1]
                and len(probs) == (len(rows) + 1) * (len(cols) + 1) and np.isfinite(probs).all())
        if not fits:
            return None
        return heatmaps_from_probs(probs, rows.tolist(), cols.tolist(), stored_shape, patch_size=p)

    def compute(self, model: nn.Module, image: np.ndarray, key: str, *,
                progress: ProgressFn | None = None) -> Heatmaps:
        """Produce the heatmaps of ``image`` (the cropped view facing right) with the patch
        model and store them under ``key``; the write is atomic (parallel runs may race)."""
        heatmaps = produce_heatmaps(model, image, rng=random.Random(self.seed), config=self.config,
                                    progress=progress)
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp.npz")
        os.close(fd)
        np.savez_compressed(tmp, probs=heatmaps.probs.astype(np.float32),
                            row_strides=np.asarray(heatmaps.row_strides, np.int64),
                            col_strides=np.asarray(heatmaps.col_strides, np.int64),
                            shape=np.asarray(np.shape(image), np.int64), key=np.str_(key))
        os.replace(tmp, path)
        return heatmaps
