"""Raster pixels in and out: PNG (8/16-bit), PGM (P5/P2, 8/16-bit); masks; display copies.

Any stored image (DICOM too) is read with `core.io.images.read_pixels`.

Everything returns 2-D arrays with row 0 at the top and *brighter = denser* (MONOCHROME1 is
inverted on read), so filters, density and models never care where a file came from.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from core.errors import InputError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_SIDE = 20000  # pixels; no mammogram is larger, a bigger header is corrupt or hostile


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_raster(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            width, height = im.size
            check_dimensions(path.name, height, width)
            if im.mode not in ("L", "I;16", "I;16B", "I;16L", "I", "P", "LA", "1"):
                raise InputError(f"{path.name}: colour image (mode {im.mode}); mammograms are "
                                 "greyscale, convert it first")
            array = np.array(im)
    except InputError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{path.name}: unreadable image ({exc})") from exc
    if array.ndim == 3:  # LA: grey + alpha
        array = array[..., 0]
    if array.dtype == np.int32:  # PIL mode I for 16-bit PGM
        if array.min() < 0 or array.max() > 65535:
            raise InputError(f"{path.name}: pixel values outside 0..65535")
        array = array.astype(np.uint16)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    return array


def check_dimensions(name: str, height: int, width: int) -> None:
    if not (8 <= height <= MAX_SIDE and 8 <= width <= MAX_SIDE):
        raise InputError(f"{name}: impossible image size {height} x {width} pixels "
                         f"(expected 8..{MAX_SIDE} per side)")


def bit_depth(array: np.ndarray) -> int:
    """Stored bits: 8 for uint8, else the smallest of 10/12/14/16 that holds the maximum."""
    if array.dtype == np.uint8:
        return 8
    top = int(array.max()) if array.size else 0
    for bits in (10, 12, 14, 16):
        if top < 2**bits:
            return bits
    return 16


def write_mask(path: str | Path, mask: np.ndarray) -> None:
    """A boolean mask as an 8-bit PNG (0 / 255)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255).save(path, optimize=True)


def read_mask(path: str | Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im.convert("L")) > 127


def to_display(pixels: np.ndarray, *, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """An 8-bit copy for the screen, windowed to the given percentiles of non-zero pixels."""
    pixels = np.asarray(pixels, dtype=np.float32)
    body = pixels[pixels > pixels.min()] if pixels.size else pixels
    if body.size == 0:
        return np.zeros(pixels.shape, np.uint8)
    lo, hi = np.percentile(body, [low_pct, high_pct])
    scaled = (pixels - lo) / max(hi - lo, 1e-6)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def write_png(path: str | Path, pixels: np.ndarray) -> None:
    """8- or 16-bit greyscale PNG, written to a temporary name first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(np.asarray(pixels)).save(tmp, format="PNG")
    tmp.replace(path)
