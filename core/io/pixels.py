"""Raster pixels in and out: PNG (8/16-bit), PGM (P5/P2, 8/16-bit); masks; screen windows.

Any stored image (DICOM too) is read with `core.io.images.read_pixels`.

Everything returns 2-D arrays with row 0 at the top and *brighter = denser* (MONOCHROME1 is
inverted on read), so filters, density and models never care where a file came from.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
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


def block_mean(img: np.ndarray, factor: int) -> np.ndarray:
    """float32 means of factor x factor blocks; the ragged last (< factor) rows/columns are dropped.

    Integers are summed exactly (uint64 / int64), so the means do not depend on summation order.
    """
    if factor == 1:
        return img.astype(np.float32, copy=False)
    h, w = (img.shape[0] // factor) * factor, (img.shape[1] // factor) * factor
    if np.issubdtype(img.dtype, np.unsignedinteger):
        acc = np.uint64
    elif np.issubdtype(img.dtype, np.integer):
        acc = np.int64
    else:
        acc = np.float64
    rows = img[:h, :w].reshape(h, w // factor, factor).sum(axis=2, dtype=acc)
    blocks = rows.reshape(h // factor, factor, w // factor).sum(axis=1, dtype=acc)
    return (blocks / float(factor * factor)).astype(np.float32)


def write_png(path: str | Path, pixels: np.ndarray, *, compress_level: int = 6) -> None:
    """8- or 16-bit greyscale PNG, written to a temporary name first (see `write_bytes`)."""
    image = Image.fromarray(np.asarray(pixels))
    _replace(Path(path), lambda f: image.save(f, format="PNG", compress_level=compress_level))


def write_bytes(path: str | Path, data: bytes) -> None:
    """``data`` to ``path`` through a temporary name, so a reader never sees half a file."""
    _replace(Path(path), lambda f: f.write(data))


def _replace(path: Path, write) -> None:
    """Write through a temporary file of its own (two viewers caching the same screen copy at
    once must not share one), then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# A pulled copy's display window: a second image in the PGM file (netpbm allows several), one
# row of uint8 grey values indexed by pixel value, marked by this comment line.
_WINDOW_HEADER = b"P5\n# ILCscope display window\n%d 1\n255\n"
_WINDOW_RE = re.compile(rb"P5\n# ILCscope display window\n(256|65536) 1\n255\n")
_PGM_RE = re.compile(rb"P5\n(\d{1,5}) (\d{1,5})\n(255|65535)\n")


def pgm_bytes(pixels: np.ndarray, *, window: np.ndarray | None = None) -> bytearray:
    """A binary PGM (P5) of a uint8 or uint16 image: lossless, no metadata, no compression.

    Why PGM for kept pixel copies: writing it costs a byte swap (~1.5 ms for 2,048 x 1,536
    16-bit, done straight into the output) where Pillow's 16-bit PNG encoder takes about a
    second even at level 0; every reader here (`read_raster`) opens it.

    window : uint8 of shape (256,) for uint8 pixels or (65536,) for uint16, the grey level
        each pixel value is shown at (a DICOM's own window, `core.io.dicom.display_window`);
        written after the pixels as a second, one-row image that `pgm_window` reads back and
        every PGM reader skips.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"pgm_bytes needs a 2-D uint8 or uint16 array, got {pixels.dtype} "
                         f"{pixels.shape}")
    maxval = 255 if pixels.dtype == np.uint8 else 65535
    header = b"P5\n%d %d\n%d\n" % (pixels.shape[1], pixels.shape[0], maxval)
    trailer = b""
    if window is not None:
        window = np.asarray(window)
        if window.shape != (maxval + 1,) or window.dtype != np.uint8:
            raise ValueError(f"pgm_bytes: window must be uint8 of shape ({maxval + 1},) for "
                             f"{pixels.dtype} pixels, got {window.dtype} {window.shape}")
        trailer = _WINDOW_HEADER % window.size + window.tobytes()
    out = bytearray(len(header) + pixels.nbytes + len(trailer))
    out[:len(header)] = header
    body = np.frombuffer(out, ">u2" if maxval > 255 else np.uint8, pixels.size, len(header))
    body.reshape(pixels.shape)[...] = pixels   # big-endian, as PGM wants, in one pass
    out[len(header) + pixels.nbytes:] = trailer
    return out


def pgm_window(path: str | Path) -> np.ndarray | None:
    """The display window `pgm_bytes` wrote after a PGM's pixels, or None (none written, or
    not a PGM as `pgm_bytes` writes it)."""
    with open(path, "rb") as f:
        head = _PGM_RE.match(f.read(32))
        if head is None:
            return None
        width, height, maxval = (int(v) for v in head.groups())
        f.seek(head.end() + width * height * (1 if maxval == 255 else 2))
        rest = f.read(64 + 65536 + 1)
    found = _WINDOW_RE.match(rest)
    if found is None or int(found[1]) != maxval + 1 or len(rest) != found.end() + maxval + 1:
        return None
    return np.frombuffer(rest[found.end():], np.uint8).copy()
