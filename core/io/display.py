"""What the browser shows of a stored image: an 8-bit copy at the size the page shows, made on
first view and cached under the store's files folder.

Why not at import (issue 33): a full-resolution display PNG cost 0.19 s per 2,048 x 1,536
DICOM, more than retrieving the instance from a PACS, for images most of which nobody opens,
and the page shows 512 pixels of them. Models and filters never read a screen copy: they read
the imported file itself, or a pulled instance's de-identified PGM copy.

Grey levels. With a display window (a DICOM's modality LUT then VOI LUT or first window,
`core.io.dicom.display_window`; a pulled copy keeps it, `core.io.pixels.pgm_bytes`), the window
maps the full-resolution pixels, then block means shrink them: what the display copy at import
used to show. Without one, block means first, then the 0.5-99.5 percentile window of
`core.io.pixels.to_display` over ~200k pixels instead of the file's millions.

Stores from before issue 33 hold a full-resolution copy (``images.display_path``); where it is
on disk it is used (block means of it), so no store needs migrating.

The cache: ``<files>/display-cache/<sha[:2]>/<sha256>-<long side>-<kind>.png``, keyed by the
image file's sha256 (a re-imported, changed file gets a new copy) and the asked long side; the
kind says which grey levels it holds. A files folder that cannot be written (the hosted demo)
shows the image uncached.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.io.images import read_display_source, read_pixels
from core.io.pixels import block_mean, read_raster, to_display, write_png
from core.validation import check_positive_int

__all__ = ["CACHE_DIR", "ScreenImage", "display_grey", "display_image", "render_display",
           "cache_path"]

CACHE_DIR = "display-cache"
_KINDS = {"window": "DICOM window", "percentile": "percentile window"}   # cache name -> source
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ScreenImage:
    """One stored image as the screen gets it, oriented as the file is (never mirrored).

    pixels : uint8 of shape (h, w) = the file's (rows // factor, cols // factor); brighter =
        denser.
    factor : the file's pixels per screen pixel along each axis (block means of factor x
        factor; the ragged last rows and columns dropped).
    original_shape : (rows, cols) of the image file.
    source : 'display copy' (a pre-issue-33 store's 8-bit copy), 'DICOM window' or
        'percentile window'.
    """

    pixels: np.ndarray
    factor: int
    original_shape: tuple[int, int]
    source: str


def display_grey(pixels: np.ndarray, *, long_side: int,
                 window: bool = True) -> tuple[np.ndarray, int]:
    """(uint8 screen copy, factor): block means of factor x factor pixels so the long side is at
    most ``long_side``, then the 0.5-99.5 percentile window of `core.io.pixels.to_display`
    (``window``) or a plain rounding (pixels that are already 8-bit grey levels).

    Downscaling first makes the window's percentiles cost ~200k pixels, not the file's 8.5 M;
    8-bit grey levels lose nothing at this size that the screen could show.
    """
    long_side = check_positive_int(long_side, name="long_side", minimum=16)
    factor = _factor(pixels.shape, long_side)
    small = block_mean(np.asarray(pixels), factor)
    if window:
        return to_display(small), factor
    return np.clip(np.rint(small), 0, 255).astype(np.uint8), factor


def render_display(path: str | Path | None, *, long_side: int,
                   display_path: str | Path | None = None) -> ScreenImage:
    """The screen copy of the image file at ``path``, made now (nothing cached).

    display_path : a pre-issue-33 full-resolution 8-bit display copy; used when it exists.
    """
    if display_path is not None and Path(display_path).is_file():
        pixels = read_pixels(display_path)
        grey, factor = display_grey(pixels, long_side=long_side, window=False)
        return ScreenImage(grey, factor, _shape(pixels), "display copy")
    if path is None:
        raise InputError("this image has no pixels in the store (a predictions-only dataset) "
                         "and no display copy; there is nothing to show")
    pixels, lut = read_display_source(path)
    if lut is not None:
        grey, factor = display_grey(lut[pixels], long_side=long_side, window=False)
        return ScreenImage(grey, factor, _shape(pixels), _KINDS["window"])
    grey, factor = display_grey(pixels, long_side=long_side)
    return ScreenImage(grey, factor, _shape(pixels), _KINDS["percentile"])


def display_image(files_dir: str | Path, image: Mapping, *, long_side: int) -> ScreenImage:
    """The screen copy of one stored image, from the cache or made and cached now.

    image : an `images` row as `Store.images` returns it (abs_path, display_path relative to
        ``files_dir``, sha256, height, width).
    """
    long_side = check_positive_int(long_side, name="long_side", minimum=16)
    files_dir = Path(files_dir)
    copy = image.get("display_path")
    if isinstance(copy, str) and (files_dir / copy).is_file():
        return render_display(None, long_side=long_side, display_path=files_dir / copy)
    path = image.get("abs_path")
    path = path if isinstance(path, str) else None
    sha = image.get("sha256")
    if not (isinstance(sha, str) and _SHA256.fullmatch(sha)):  # no key: made every time
        return render_display(path, long_side=long_side)
    cached = _cached(files_dir, sha, long_side, image)
    if cached is not None:
        return cached
    shown = render_display(path, long_side=long_side)
    kind = next(k for k, v in _KINDS.items() if v == shown.source)
    try:
        write_png(cache_path(files_dir, sha, long_side, kind), shown.pixels)
    except OSError:  # a read-only files folder: show it anyway
        pass
    return shown


def cache_path(files_dir: str | Path, sha256: str, long_side: int, kind: str) -> Path:
    """Where the screen copy of the file with this sha256 at this long side is cached."""
    return Path(files_dir) / CACHE_DIR / sha256[:2] / f"{sha256}-{long_side}-{kind}.png"


def _cached(files_dir: Path, sha: str, long_side: int, image: Mapping) -> ScreenImage | None:
    """The cached copy, if there is one of the shape the row's height and width give."""
    try:
        shape = (int(image["height"]), int(image["width"]))
    except (KeyError, TypeError, ValueError):
        return None
    factor = _factor(shape, long_side)
    for kind, source in _KINDS.items():
        path = cache_path(files_dir, sha, long_side, kind)
        if not path.is_file():
            continue
        try:
            grey = read_raster(path)
        except InputError:   # a damaged cache file is made again
            return None
        if grey.dtype == np.uint8 and grey.shape == (shape[0] // factor, shape[1] // factor):
            return ScreenImage(grey, factor, shape, source)
    return None


def _factor(shape, long_side: int) -> int:
    return max(1, math.ceil(max(shape) / long_side))


def _shape(pixels: np.ndarray) -> tuple[int, int]:
    return int(pixels.shape[0]), int(pixels.shape[1])
