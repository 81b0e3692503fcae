"""A non-learned baseline scorer: how much focal, bright structure an image holds.

Why: every benchmark needs a floor that no training can flatter. The score is the 99.5th
percentile, inside the breast, of a difference-of-Gaussians response (a blob and strand
detector at lesion scale) in units of the breast's own intensity spread, squashed to 0..1.
No weights, no labels: it ranks images the same on any dataset.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from core.segmentation import breast_mask

BASELINE_MODEL = "classical-dog"
DESCRIPTION = ("Non-learned baseline: 99.5th percentile of a difference-of-Gaussians response "
               "inside the breast, in breast-intensity SDs (no training).")


def baseline_score(pixels: np.ndarray, *, view: str | None = None,
                   lesion_scale_px: float = 6.0) -> float:
    """A 0..1 suspicion score for one image (higher = more focal bright structure).

    ``lesion_scale_px`` is the blob radius the detector favours, in pixels of ``pixels``.
    """
    image = np.asarray(pixels, dtype=np.float32)
    mask = breast_mask(image, view=view)
    if mask.sum() < 100:
        return 0.0
    inside = image[mask]
    spread = float(inside.std()) or 1.0
    dog = (ndimage.gaussian_filter(image, lesion_scale_px)
           - ndimage.gaussian_filter(image, 4 * lesion_scale_px)) / spread
    strength = float(np.percentile(dog[mask], 99.5))
    return float(1.0 / (1.0 + np.exp(-4.0 * (strength - 0.5))))
