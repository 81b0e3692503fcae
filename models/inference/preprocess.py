"""Mammogram -> GMIC input, and GMIC outputs -> original image coordinates.

GMIC was trained on images cropped to the breast, mirrored so the chest wall is at column 0
(breast pointing right), resized to a fixed input (2944 x 1920 for the paper) and standardised per
image. `preprocess_image` does exactly that for any 2-D integer or float array (DICOM, 16-bit PNG
and PGM are decoded elsewhere; higher = denser) and keeps the geometry, so
`saliency_to_original` (`core.saliency`, numpy) and `boxes_to_original` can put saliency maps and patches back onto the
original pixel grid for display, Dice and hit tests.

Geometry convention (pixel *edges*, as torch's ``align_corners=False``): original rows
``[row0, row0 + height)`` of the crop box map linearly onto input rows ``[0, H_in)``, so an edge at
box coordinate ``e`` sits at input coordinate ``e * scale``; columns alike, after the optional
left-right flip of the box.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import InputError
from core.saliency import SaliencyGeometry
from core.saliency import saliency_to_original as _saliency_to_original
from core.validation import check_image

__all__ = ["PREPROCESS_FILTERS", "Preprocessed", "boxes_to_original", "check_preprocess",
           "model_input", "preprocess_image", "saliency_to_original"]

# Optional preprocessing before GMIC (the study's fine-tuning experiments): name -> filter code
# of `core.image.filters` (M2 global histogram equalisation, M6 unsharp masking, M5 Sobel).
PREPROCESS_FILTERS = {"none": None, "histeq": "M2", "unsharp": "M6", "sobel": "M5"}

_SIDES = ("left", "right")


@dataclass(frozen=True)
class Preprocessed:
    """A model-ready image and the geometry that made it.

    Attributes
    ----------
    image : Tensor of shape (1, H_in, W_in), float32
        Standardised (mean 0, population sd 1), chest wall at column 0; ``torch.stack`` a list of
        them for a (N, 1, H_in, W_in) batch.
    original_shape : (rows, cols) of the array that was passed in.
    crop_box : (row0, col0, height, width) of the breast's bounding box, original pixels.
    flipped : whether the box was mirrored left-right (chest wall was on the right).
    chest_wall : 'left' or 'right', the chest-wall side in the original image.
    scale : (rows, cols) input pixels per original pixel (input_shape / box size).
    """

    image: torch.Tensor
    original_shape: tuple[int, int]
    crop_box: tuple[int, int, int, int]
    flipped: bool
    chest_wall: str
    scale: tuple[float, float]

    @property
    def input_shape(self) -> tuple[int, int]:
        return (int(self.image.shape[-2]), int(self.image.shape[-1]))

    @property
    def geometry(self) -> SaliencyGeometry:
        """The geometry alone (what a saliency file stores), without the pixels."""
        return SaliencyGeometry(self.original_shape, self.crop_box, self.flipped,
                                self.input_shape, self.scale)

    def saliency_to_original(self, saliency, *, mode: str = "bilinear") -> np.ndarray:
        """Shortcut for :func:`saliency_to_original` with this geometry."""
        return saliency_to_original(saliency, self, mode=mode)

    def boxes_to_original(self, locations, crop_shape) -> np.ndarray:
        """Shortcut for :func:`boxes_to_original` with this geometry."""
        return boxes_to_original(locations, crop_shape, self)


def preprocess_image(
    pixels: np.ndarray,
    input_shape: tuple[int, int] = (2944, 1920),
    *,
    chest_wall: str | None = None,
    laterality: str | None = None,
    crop_background: bool = True,
    mask: np.ndarray | None = None,
) -> Preprocessed:
    """Crop to the breast, flip to chest-wall-left, resize and standardise one mammogram.

    Parameters
    ----------
    pixels : ndarray of shape (H, W), any integer, float or bool dtype
        Higher = denser (invert MONOCHROME1 first). Not modified.
    input_shape : (rows, cols)
        Model input size, e.g. ``CONFIGS["paper"].input_shape``.
    chest_wall : {'left', 'right', None}, keyword-only
        Image side the breast is attached to. None: take ``laterality`` if given, else detect it
        as the half of the image holding more breast-mask pixels.
    laterality : {'L', 'R', None}, keyword-only
        Breast side, assuming the standard display (a right breast has its chest wall on the
        image's right). Ignored when ``chest_wall`` is given; they must agree if both are.
    crop_background : bool, keyword-only
        Crop to the bounding box of the breast mask (default); False keeps the whole image.
    mask : bool ndarray of shape (H, W) or None, keyword-only
        Breast mask to use; None computes ``core.image.segmentation.breast_mask(pixels)`` (Otsu on a
        downsampled copy + largest connected component). The pectoral muscle is not removed:
        GMIC saw it during training.

    Returns
    -------
    Preprocessed
        The (1, H_in, W_in) float32 tensor plus crop box, flip and scale.
    """
    img = check_image(pixels, min_side=16)
    shape = _check_shape(input_shape)
    side = _resolve_side(chest_wall, laterality)
    need_mask = crop_background or side is None
    if need_mask:
        mask = _breast_mask(img) if mask is None else _check_mask(mask, img.shape)
    if side is None:
        half = img.shape[1] // 2
        side = "right" if mask[:, img.shape[1] - half:].sum() > mask[:, :half].sum() else "left"
    box = _bounding_box(mask) if crop_background else None
    if box is None:
        box = (0, 0, img.shape[0], img.shape[1])
    r0, c0, h, w = box
    crop = torch.from_numpy(np.ascontiguousarray(img[r0:r0 + h, c0:c0 + w], dtype=np.float32))
    if side == "right":
        crop = crop.flip(-1)
    resized = F.interpolate(crop[None, None], size=shape, mode="bilinear", align_corners=False,
                            antialias=True)[0]
    return Preprocessed(
        image=_standardise(resized),
        original_shape=(int(img.shape[0]), int(img.shape[1])),
        crop_box=box,
        flipped=side == "right",
        chest_wall=side,
        scale=(shape[0] / h, shape[1] / w),
    )


def check_preprocess(name: str | None) -> str:
    """'none' for None; an unknown name is an InputError."""
    name = "none" if name is None else name
    if name not in PREPROCESS_FILTERS:
        raise InputError(f"preprocess is {name!r}; pass one of {', '.join(PREPROCESS_FILTERS)}")
    return name


def model_input(pixels: np.ndarray, input_shape: tuple[int, int], *, laterality: str | None,
                preprocess: str | None = "none") -> Preprocessed:
    """`preprocess_image` after the optional filter (`PREPROCESS_FILTERS`): the one path that
    training and inference share, so a fine-tuned model sees the same inputs in both.

    The breast box is found on the raw pixels (a Sobel image has no breast to segment), then the
    filtered image is cropped, flipped, resized and standardised like any other.
    """
    code = PREPROCESS_FILTERS[check_preprocess(preprocess)]
    if code is None:
        return preprocess_image(pixels, input_shape, laterality=laterality)
    from core.image.filters import apply_method

    raw = check_image(pixels, min_side=16)
    return preprocess_image(apply_method(code, raw), input_shape, laterality=laterality,
                            mask=_breast_mask(raw))


def saliency_to_original(saliency, pre: Preprocessed, *, mode: str = "bilinear") -> np.ndarray:
    """`core.saliency.saliency_to_original` (numpy, torch-free) that also takes a Tensor.

    ``saliency`` : (h, w) or (C, h, w) grid over the model input; returns float32 of shape
    original_shape or (C, *original_shape), zero outside the crop box.
    """
    if torch.is_tensor(saliency):
        saliency = saliency.detach().float().cpu().numpy()
    return _saliency_to_original(saliency, pre, mode=mode)


def boxes_to_original(locations, crop_shape: tuple[int, int], pre: Preprocessed) -> np.ndarray:
    """Map patch boxes (input-pixel upper-left corner + crop size) to original image boxes.

    Parameters
    ----------
    locations : array or Tensor of shape (K, 2) (or (..., 2))
        Upper-left (row, col) of each patch in input pixels (GMIC's ``patch_locations[i]``).
    crop_shape : (rows, cols) of the patches in input pixels (``config.crop_shape``).
    pre : Preprocessed

    Returns
    -------
    ndarray of float64, shape (K, 4) (or (..., 4))
        ``[row, col, height, width]`` in original pixels (edges, so a box covers rows
        ``[row, row + height)``); not clipped to the image.
    """
    loc = np.asarray(locations.detach().cpu() if torch.is_tensor(locations) else locations, dtype=np.float64)
    if loc.shape[-1:] != (2,):
        raise InputError(f"locations has shape {loc.shape}; pass (K, 2) upper-left (row, col) pairs")
    ch, cw = _check_shape(crop_shape)
    r0, c0, _, w = pre.crop_box
    sy, sx = pre.scale
    height = np.full(loc.shape[:-1], ch / sy)
    width = np.full(loc.shape[:-1], cw / sx)
    row = r0 + loc[..., 0] / sy
    col_box = loc[..., 1] / sx                       # left edge in the (possibly flipped) box
    if pre.flipped:
        col_box = w - (col_box + width)
    return np.stack([row, c0 + col_box, height, width], axis=-1)


# --- helpers ------------------------------------------------------------------------------------


def _check_shape(shape) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in shape)
        ok = rows >= 1 and cols >= 1 and (rows, cols) == tuple(shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"shape {shape!r} is not two positive integers (rows, cols)")
    return rows, cols


def _resolve_side(chest_wall: str | None, laterality: str | None) -> str | None:
    if chest_wall is not None and chest_wall not in _SIDES:
        raise InputError(f"chest_wall is {chest_wall!r}; pass 'left', 'right' or None to detect")
    from_lat = None
    if laterality is not None:
        lat = str(laterality).strip().upper()[:1]
        if lat not in ("L", "R"):
            raise InputError(f"laterality is {laterality!r}; pass 'L', 'R' or None")
        from_lat = "left" if lat == "L" else "right"
    if chest_wall is not None and from_lat is not None and chest_wall != from_lat:
        raise InputError(f"chest_wall={chest_wall!r} contradicts laterality={laterality!r} under the "
                         "standard display; pass only one")
    return chest_wall or from_lat


def _breast_mask(img: np.ndarray) -> np.ndarray:
    from core.image.segmentation import breast_mask  # Otsu on a downsampled copy + largest component

    return breast_mask(img)


def _check_mask(mask, shape) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise InputError(f"mask has shape {m.shape} but pixels have {tuple(shape)}; pass a mask of the same shape")
    return m.astype(bool, copy=False)


def _bounding_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None  # nothing found: keep the whole image rather than fail
    return (int(rows[0]), int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1))


def _standardise(t: torch.Tensor) -> torch.Tensor:
    """Mean 0, population sd 1, computed in float64 (a constant image becomes zeros)."""
    d = t.double()
    sd = d.std(correction=0)
    d = d - d.mean()
    if sd > 0:
        d = d / sd
    return d.float()
