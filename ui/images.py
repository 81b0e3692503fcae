"""Pure image helpers for the pages: grey arrays in, RGB arrays out (no Streamlit)."""
from __future__ import annotations

import math

import numpy as np

from core.errors import InputError

__all__ = ["EMPTY_GREY", "empty_tile", "outline_box"]

EMPTY_GREY = 32   # an empty tile's grey level: darker than tissue, lighter than the page


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
