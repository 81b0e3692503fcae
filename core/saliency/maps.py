"""Saliency files and their maps on the original image grid, in numpy only.

`models.inference.predict` writes one ``.npz`` per image (format in its module docstring): the raw grid
over the *model input* (cropped to the breast, chest wall at column 0, resized) and the geometry
that made that input. Reading a file and mapping a grid back (undoing resize, flip and crop)
needs no torch, so the Saliency page, the reports and the CLI work without it.

The mapping reproduces ``torch.nn.functional.interpolate`` from the grid straight onto the
crop box (``align_corners=False`` bilinear, or legacy 'nearest'), in float32 with torch's index
arithmetic, so maps equal what `models.inference.preprocess` produced with torch to float32 rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.io.pixels import MAX_SIDE

__all__ = ["SALIENCY_FORMAT", "SaliencyFile", "SaliencyGeometry", "read_saliency",
           "saliency_to_original"]

SALIENCY_FORMAT = 2           # 2 added the patch boxes and their attention weights
READABLE_FORMATS = (1, 2)
MAP_NAMES = ("malignant", "benign")


@dataclass(frozen=True)
class SaliencyGeometry:
    """How a model input was cut from the original image (pixel *edges*, see
    `models.inference.preprocess`).

    original_shape : (rows, cols) of the stored image.
    crop_box : (row0, col0, height, width) of the breast box, original pixels.
    flipped : the box was mirrored left-right (chest wall on the image's right).
    input_shape : (rows, cols) of the model input.
    scale : (rows, cols) input pixels per original pixel.
    """

    original_shape: tuple[int, int]
    crop_box: tuple[int, int, int, int]
    flipped: bool
    input_shape: tuple[int, int]
    scale: tuple[float, float]

    @property
    def chest_wall(self) -> str:
        return "right" if self.flipped else "left"

    def to_original(self, saliency, *, mode: str = "bilinear") -> np.ndarray:
        """Shortcut for :func:`saliency_to_original` with this geometry."""
        return saliency_to_original(saliency, self, mode=mode)


@dataclass(frozen=True)
class SaliencyFile:
    """One stored saliency file.

    model, image_id : str
    malignant, benign : ndarray of shape (h, w), float32 (stored as float16): grids over the
        model input.
    geometry : SaliencyGeometry
    patch_boxes : float64 (P, 4) or None: [row, col, height, width] in original pixels (edges),
        every member's K patches for an ensemble; None in format 1 files.
    patch_attention : float64 (P,) or None: each patch's attention weight (GMIC's
        ``patch_attns``; divided by the number of members, so they sum to 1); None in format 1.
    format : the file's format number.
    """

    model: str
    image_id: str
    malignant: np.ndarray
    benign: np.ndarray
    geometry: SaliencyGeometry
    patch_boxes: np.ndarray | None = None
    patch_attention: np.ndarray | None = None
    format: int = SALIENCY_FORMAT

    def to_original(self, which: str = "malignant", *, mode: str = "bilinear") -> np.ndarray:
        """The ``which`` map on the original pixel grid: float32 of shape original_shape."""
        if which not in MAP_NAMES:
            raise InputError(f"which is {which!r}; pass 'malignant' or 'benign'")
        return saliency_to_original(getattr(self, which), self.geometry, mode=mode)


def read_saliency(path: str | Path, *,
                  image_shape: tuple[int, int] | None = None) -> SaliencyFile:
    """Load a saliency ``.npz`` written by `models.inference.predict` (no pickles are read); formats 1
    (maps and geometry) and 2 (plus the patch boxes and attention weights).

    The geometry is checked before anything is allocated from it (`to_original` makes an
    ``original_shape`` array): sides 1..`MAX_SIDE`, a crop box of positive size no larger,
    2-D grids; with ``image_shape`` (the image's stored height, width), ``original_shape`` must
    equal it. A crop box may reach past the image's edges (the NYU windows do)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"saliency file {path} does not exist; run `python -m core predict` first")
    try:
        with np.load(path, allow_pickle=False) as z:
            version = int(z["format"])
            if version not in READABLE_FORMATS:
                raise InputError(f"saliency file {path} has format {version}; this ILCscope "
                                 f"reads formats {', '.join(map(str, READABLE_FORMATS))}")
            geometry = SaliencyGeometry(
                original_shape=tuple(int(v) for v in z["original_shape"]),
                crop_box=tuple(int(v) for v in z["crop_box"]),
                flipped=bool(z["flipped"]),
                input_shape=tuple(int(v) for v in z["input_shape"]),
                scale=tuple(float(v) for v in z["scale"]))
            malignant, benign = z["malignant"], z["benign"]
            _check_geometry(path, geometry, (malignant, benign), image_shape)
            boxes = attention = None
            if version >= 2:
                boxes = z["patch_boxes"].astype(np.float64).reshape(-1, 4)
                attention = z["patch_attention"].astype(np.float64).ravel()
                if attention.shape != (len(boxes),):
                    raise ValueError(f"{attention.size} attention weights for {len(boxes)} "
                                     "patch boxes")
            return SaliencyFile(str(z["model"]), str(z["image_id"]),
                                malignant.astype(np.float32), benign.astype(np.float32),
                                geometry, boxes, attention, version)
    except (KeyError, ValueError, OSError, TypeError, OverflowError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"saliency file {path} is not a saliency .npz ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); rerun predict") from None


def _check_geometry(path: Path, geometry: SaliencyGeometry, grids, image_shape) -> None:
    bad = f"saliency file {path} is damaged or not this image's"
    if len(geometry.original_shape) != 2 or \
            not all(1 <= v <= MAX_SIDE for v in geometry.original_shape):
        raise InputError(f"{bad}: original_shape {geometry.original_shape} is not two sides of "
                         f"1..{MAX_SIDE} pixels; rerun predict")
    if len(geometry.crop_box) != 4 or not all(1 <= v <= MAX_SIDE for v in geometry.crop_box[2:]) \
            or not all(abs(v) <= MAX_SIDE for v in geometry.crop_box[:2]):
        raise InputError(f"{bad}: crop_box {geometry.crop_box} is not a box of 1..{MAX_SIDE} "
                         "pixels a side near the image; rerun predict")
    if any(g.ndim != 2 or 0 in g.shape for g in grids):
        raise InputError(f"{bad}: its maps are not 2-D grids; rerun predict")
    if image_shape is not None and tuple(int(v) for v in image_shape) != \
            geometry.original_shape:
        h, w = geometry.original_shape
        raise InputError(f"{bad}: it maps to {h} x {w} pixels but the image is stored as "
                         f"{int(image_shape[0])} x {int(image_shape[1])}; rerun predict for it")


def saliency_to_original(saliency, geometry, *, mode: str = "bilinear") -> np.ndarray:
    """Map saliency grids back onto the original pixel grid.

    Parameters
    ----------
    saliency : array-like of shape (h, w) or (C, h, w)
        A grid over the model input (GMIC's ``saliency_map[i]``, 46 x 30 for the paper).
    geometry : SaliencyGeometry, or anything with ``original_shape``, ``crop_box`` and
        ``flipped`` (`models.inference.preprocess.Preprocessed`).
    mode : {'bilinear', 'nearest'}, keyword-only
        Interpolation between cell centres; 'nearest' keeps the blocky cells.

    Returns
    -------
    ndarray of float32, shape original_shape or (C, *original_shape)
        The map with resize and flip undone, zero outside the crop box.
    """
    if mode not in ("bilinear", "nearest"):
        raise InputError(f"mode is {mode!r}; pass 'bilinear' or 'nearest'")
    s = np.asarray(saliency, dtype=np.float32)
    if s.ndim not in (2, 3):
        raise InputError(f"saliency has shape {s.shape}; pass (h, w) or (C, h, w)")
    squeeze = s.ndim == 2
    s = s[None] if squeeze else s
    r0, c0, h, w = (int(v) for v in geometry.crop_box)
    out = np.zeros((s.shape[0], *(int(v) for v in geometry.original_shape)), dtype=np.float32)
    if mode == "nearest":
        rows, cols = _nearest(s.shape[1], h), _nearest(s.shape[2], w)
    else:
        rows, cols = _bilinear(s.shape[1], h), _bilinear(s.shape[2], w)
    if geometry.flipped:
        cols = cols[::-1]
    # A window may reach past the image (the official NYU windows pad with zeros): only the
    # part of the box inside the image is mapped.
    top, left = max(r0, 0), max(c0, 0)
    bottom, right = min(r0 + h, out.shape[1]), min(c0 + w, out.shape[2])
    if bottom <= top or right <= left:
        return out[0] if squeeze else out
    rows, cols = rows[top - r0:bottom - r0], cols[left - c0:right - c0]
    if mode == "nearest":
        out[:, top:bottom, left:right] = s[:, rows[:, None], cols[None, :]]
    else:  # grid -> box is separable: rows @ grid @ cols.T with two-tap interpolation matrices
        out[:, top:bottom, left:right] = rows @ s @ cols.T
    return out[0] if squeeze else out


def _nearest(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output index, as torch's legacy 'nearest' computes it (float32)."""
    if n_out == n_in:
        return np.arange(n_out)
    if n_out == 2 * n_in:
        return np.arange(n_out) >> 1
    scale = np.float32(n_in) / np.float32(n_out)
    src = np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(src, n_in - 1)


def _bilinear(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 matrix of torch's ``align_corners=False`` linear weights."""
    scale = np.float32(n_in) / np.float32(n_out)
    src = scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    src = np.maximum(src, np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
    weights = np.zeros((n_out, n_in), np.float32)
    out = np.arange(n_out)
    weights[out, i0] += 1 - lam
    weights[out, i1] += lam
    return weights
