"""Raster pixels in and out: PNG (8/16-bit), PGM (P5/P2, 8/16-bit); masks; display copies.

Any stored image (DICOM too) is read with `core.io.images.read_pixels`.

Everything returns 2-D arrays with row 0 at the top and *brighter = denser* (MONOCHROME1 is
inverted on read), so filters, density and models never care where a file came from.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from core.errors import InputError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_SIDE = 20000  # pixels; no mammogram is larger, a bigger header is corrupt or hostile
# Decoded bytes a file may declare (rows x columns x bytes per sample x samples x frames),
# checked from the header before any pixel is decoded. The largest mammography detector
# (Fujifilm Amulet Innovality: 24 x 30 cm at 50 um) gives 4,728 x 5,928 pixels, 56 MB at 16
# bits; film digitised at 42 um (DDSM's scanners), about 5,700 x 7,100, 81 MB. 128 MiB holds
# both. A DICOM import's working memory is ~16x the decoded size (measured: +1.3 GB for the
# 81 MB film scan, MONOCHROME1 with a window), so ~2 GB at the limit, where a hostile 200 KB
# file declaring 20,000 x 20,000 would otherwise ask for 4 GB or more.
MAX_PIXEL_BYTES = 128 * 2**20
# Decoded bytes per pixel of the Pillow modes accepted for a grey mammogram (LA: grey + alpha).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "I;16": 2, "I;16B": 2, "I;16L": 2, "I": 4}


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_raster(path: Path) -> np.ndarray:
    """A PNG/PGM as a 2-D array: grey as stored, LA's grey plane, a grey palette's grey values.

    The size and mode come from the header (Pillow reads only the header on open) and are
    checked against `MAX_PIXEL_BYTES` before anything is decoded. Colour images, colour
    palettes included, are refused: converting them would invent a grey scale.
    """
    name = path.name
    try:
        with warnings.catch_warnings():  # Pillow's bomb warning: our own limit is checked below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                if im.mode not in _MODE_BYTES:
                    raise InputError(f"{name}: colour image (mode {im.mode}); mammograms are "
                                     "greyscale, convert it first")
                check_dimensions(name, height, width, bytes_per_pixel=_MODE_BYTES[im.mode])
                array = _palette_grey(im, name) if im.mode == "P" else np.array(im)
    except InputError:
        raise
    except Image.DecompressionBombError:  # only above MAX_PIXEL_BYTES: same verdict, our words
        raise InputError(f"{name}: the header declares an image too large to decode (over "
                         f"{MAX_PIXEL_BYTES // 2**20} MiB of pixels); a mammogram is smaller, "
                         "so the file is corrupt or hostile") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{name}: unreadable image ({type(exc).__name__}); the file is "
                         "truncated or corrupt") from None
    if array.ndim == 3:  # LA: grey + alpha
        array = array[..., 0]
    if array.dtype == np.int32:  # PIL mode I for 16-bit PGM
        if array.min() < 0 or array.max() > 65535:
            raise InputError(f"{name}: pixel values outside 0..65535")
        array = array.astype(np.uint16)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    return array


def _palette_grey(im: Image.Image, name: str) -> np.ndarray:
    """A palette image's grey values (never its indices), if every colour it uses is grey."""
    indices = np.array(im)
    palette = np.array(im.getpalette("RGB") or [], dtype=np.uint8).reshape(-1, 3)
    used = np.unique(indices)
    if used.size and used[-1] >= len(palette):
        raise InputError(f"{name}: palette image uses colours its palette does not define; "
                         "the file is corrupt")
    colours = palette[used]
    if not (np.all(colours[:, 0] == colours[:, 1]) and np.all(colours[:, 1] == colours[:, 2])):
        raise InputError(f"{name}: colour palette image; mammograms are greyscale, convert "
                         "it first")
    return palette[:, 0][indices]


def check_dimensions(name: str, height: int, width: int, *, bytes_per_pixel: int) -> None:
    """Refuse a declared size no mammogram has: a side outside 8..`MAX_SIDE`, or more than
    `MAX_PIXEL_BYTES` once decoded (call it before decoding, with the header's numbers)."""
    if not (8 <= height <= MAX_SIDE and 8 <= width <= MAX_SIDE):
        raise InputError(f"{name}: impossible image size {height} x {width} pixels "
                         f"(expected 8..{MAX_SIDE} per side)")
    if height * width * bytes_per_pixel > MAX_PIXEL_BYTES:
        raise InputError(f"{name}: the header declares {height} x {width} pixels x "
                         f"{bytes_per_pixel} bytes, over the {MAX_PIXEL_BYTES // 2**20} MiB a "
                         "mammogram needs; the file is corrupt or hostile, so it is not decoded")


def bit_depth(array: np.ndarray) -> int:
    """Stored bits: 8 for uint8, else the smallest of 10/12/14/16 that holds the maximum."""
    if array.dtype == np.uint8:
        return 8
    top = int(array.max()) if array.size else 0
    for bits in (10, 12, 14, 16):
        if top < 2**bits:
            return bits
    return 16


MASK_SUFFIXES = (".png",)   # masks are 0/255 PNGs: lossless, and what `read_mask` reads


def check_mask_path(path: str | Path) -> Path:
    """``path`` if a mask can be written there: a `MASK_SUFFIXES` name that is not a folder.

    Why: Pillow picks the format from the suffix, so ``--out mask`` (no suffix) ended in its
    ``unknown file extension`` traceback, and ``mask.jpg`` would have saved a lossy mask.
    """
    path = Path(path)
    if path.suffix.lower() not in MASK_SUFFIXES:
        raise InputError(f"{path}: a mask is written as {' or '.join(MASK_SUFFIXES)}; got "
                         f"{path.suffix or 'no extension'}, so name it e.g. "
                         f"{path.stem or 'mask'}.png")
    if path.is_dir():
        raise InputError(f"{path} is a folder; pass a file name ending in .png")
    return path


def write_mask(path: str | Path, mask: np.ndarray) -> None:
    """A boolean mask as an 8-bit PNG (0 / 255) at a `check_mask_path` name."""
    path = check_mask_path(path)
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


def write_png(path: str | Path, pixels: np.ndarray, *, compress_level: int = 6) -> None:
    """8- or 16-bit greyscale PNG, written to a temporary name first.

    ``compress_level`` 1 suits display copies: for an 8-bit 2,048 x 1,536 copy it halves the
    encoding time (~0.19 s against ~0.34 s here) for ~12% more bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(np.asarray(pixels)).save(tmp, format="PNG", compress_level=compress_level)
    tmp.replace(path)


def pgm_bytes(pixels: np.ndarray) -> bytes:
    """A binary PGM (P5) of a uint8 or uint16 image: lossless, no metadata, no compression.

    Why PGM for kept pixel copies: writing it costs a byte swap (~30 ms for 2,048 x 1,536
    16-bit) where Pillow's 16-bit PNG encoder takes about a second even at level 0; every
    reader here (`read_raster`) opens it.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"pgm_bytes needs a 2-D uint8 or uint16 array, got {pixels.dtype} "
                         f"{pixels.shape}")
    maxval = 255 if pixels.dtype == np.uint8 else 65535
    header = b"P5\n%d %d\n%d\n" % (pixels.shape[1], pixels.shape[0], maxval)
    return header + pixels.astype(">u2" if maxval > 255 else np.uint8).tobytes()


def write_bytes(path: str | Path, data: bytes) -> None:
    """``data`` to ``path`` through a temporary name, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
