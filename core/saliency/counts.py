"""Counting a full-size map's pixels at or above thresholds exactly, without sorting it.

Why: the Dice sweep needs ``count(map >= t)`` at 21 thresholds over ~8.5 million pixels. A loop
makes 21 passes; one sort (what this replaced) costs about as much as 10 of them. A saliency map
is a coarse grid upsampled, so it is smooth: cut into 32 x 32 blocks, almost every block lies
wholly above or below each threshold and counts by its minimum and maximum alone; only blocks a
threshold runs through are compared pixel by pixel. The counts are exact for any map; a rough
map only makes it slower (every block compared, as the loop does).
"""
from __future__ import annotations

import numpy as np

__all__ = ["BlockSummary"]

BLOCK = 32


class BlockSummary:
    """A 2-D map with the minimum and maximum of each ``BLOCK`` x ``BLOCK`` block (one pass).

    The rows and columns past the last whole block (``strips``) are kept as plain pixels.
    """

    def __init__(self, values: np.ndarray):
        height, width = values.shape
        h0, w0 = height // BLOCK * BLOCK, width // BLOCK * BLOCK
        core = values[:h0, :w0]
        self.blocks = core.reshape(h0 // BLOCK, BLOCK, w0 // BLOCK, BLOCK)
        bands = core.reshape(h0 // BLOCK, BLOCK, w0)   # min over rows first: contiguous rows
        self.low = bands.min(axis=1).reshape(h0 // BLOCK, -1, BLOCK).min(axis=2) if h0 else \
            np.empty((0, w0 // BLOCK), values.dtype)
        self.high = bands.max(axis=1).reshape(h0 // BLOCK, -1, BLOCK).max(axis=2) if h0 else \
            np.empty((0, w0 // BLOCK), values.dtype)
        self.strips = np.concatenate([values[h0:].ravel(), values[:h0, w0:].ravel()])

    def count_at_least(self, cuts: np.ndarray) -> np.ndarray:
        """``count(values >= cuts[j])`` for every j: int64 of shape (T,). ``cuts`` is in the
        map's dtype (the comparison is exact in it)."""
        counts = np.empty(cuts.size, np.int64)
        for j, cut in enumerate(cuts):
            rows, cols = np.nonzero((self.low < cut) & (self.high >= cut))
            counts[j] = (np.count_nonzero(self.low >= cut) * BLOCK * BLOCK
                         + np.count_nonzero(self.blocks[rows, :, cols, :] >= cut)
                         + np.count_nonzero(self.strips >= cut))
        return counts

    def at_least(self, bound) -> np.ndarray:
        """Every value ``>= bound``, 1-D in no particular order (reads only blocks reaching it)."""
        rows, cols = np.nonzero(self.high >= bound)
        values = np.concatenate([self.blocks[rows, :, cols, :].ravel(), self.strips])
        return values[values >= bound]
