"""Image helpers for the pages: `image_pixels`, the one cached read of an image file, and
pure helpers (grey arrays in, RGB arrays out)."""
from __future__ import annotations

import math
import os

import numpy as np
import streamlit as st

from core.errors import InputError
from core.io.images import read_pixels

__all__ = ["EMPTY_GREY", "empty_tile", "image_pixels", "outline_box"]

EMPTY_GREY = 32   # an empty tile's grey level: darker than tissue, lighter than the page


def image_pixels(path: str) -> np.ndarray:
    """The pixels of the image file at ``path``, read once per (path, size, mtime).

    Why the file's size and mtime in the key: a file replaced in place (a re-import, a
    re-encoded copy) is read again instead of showing the old pixels. `st.cache_data` hands
    each caller its own copy, so no session can change another's array.
    """
    try:
        stat = os.stat(path)
    except OSError:
        raise InputError(f"the image file {path} is missing; re-import its dataset") from None
    return _read_pixels(str(path), stat.st_size, stat.st_mtime_ns)


@st.cache_data(show_spinner="Reading the image…", max_entries=4)
def _read_pixels(path: str, size: int, mtime_ns: int) -> np.ndarray:
    return read_pixels(path)


def empty_tile(shape: tuple[int, int]) -> np.ndarray:
    """A uniform dark RGB tile of ``shape`` (rows, cols): where a view is missing."""
    return np.full((*shape, 3), EMPTY_GREY, np.uint8)


def outline_box(grey: np.ndarray, box: tuple[float, float, float, float], *,
                colour: tuple[int, int, int] = (230, 60, 60), width: int = 2) -> np.ndarray:
    """An RGB copy of ``grey`` (uint8, (H, W)) with ``box`` = (row, col, height, width), in
    this image's pixels (edges), outlined ``width`` pixels thick inside the box, clipped to the
    image."""
    if grey.ndim != 2:
        raise InputError(f"grey has shape {grey.shape}; pass a 2-D grey image")
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)
    h, w = grey.shape
    r0, c0 = int(max(0, math.floor(box[0]))), int(max(0, math.floor(box[1])))
    r1 = int(min(h, math.ceil(box[0] + box[2])))
    c1 = int(min(w, math.ceil(box[1] + box[3])))
    if r1 <= r0 or c1 <= c0:
        return rgb
    colour = np.asarray(colour, np.uint8)
    rgb[r0:min(r0 + width, r1), c0:c1] = colour
    rgb[max(r1 - width, r0):r1, c0:c1] = colour
    rgb[r0:r1, c0:min(c0 + width, c1)] = colour
    rgb[r0:r1, max(c1 - width, c0):c1] = colour
    return rgb
