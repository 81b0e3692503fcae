"""A non-learned baseline scorer: the strongest focal bright blob inside the breast.

Why: every benchmark needs a floor that no training can flatter. The score is the maximum,
inside the (eroded) breast, of a difference-of-Gaussians response (a blob detector at lesion
scale) in units of the breast's own intensity spread, squashed to 0..1. It works on a copy
whose long side is at most 256 pixels, so one image takes tens of milliseconds. No weights,
no labels: it ranks images the same on any dataset. (On the demo cohort it reaches an image
AUC of about 0.65, lower on ILC than on IDC, as a blob detector should.)
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.transform import downscale_local_mean

from core.image.segmentation import breast_mask

BASELINE_MODEL = "classical-dog"
DESCRIPTION = ("Non-learned baseline: strongest difference-of-Gaussians blob inside the breast, "
               "in breast-intensity SDs (no training).")
WORK_SIDE = 256  # pixels: the long side of the working copy


def baseline_score(pixels: np.ndarray, *, view: str | None = None) -> float:
    """A 0..1 suspicion score for one image (higher = a stronger focal bright blob)."""
    image = np.asarray(pixels, dtype=np.float32)
    factor = max(1, int(np.ceil(max(image.shape) / WORK_SIDE)))
    small = downscale_local_mean(image, (factor, factor)).astype(np.float32)
    mask = ndimage.binary_erosion(breast_mask(small, view=view), iterations=4)
    if mask.sum() < 50:
        return 0.0
    spread = float(small[mask].std()) or 1.0
    # sigma 3 and 12 working pixels: blobs of roughly 5-15 mm on a 20 cm breast
    dog = (ndimage.gaussian_filter(small, 3) - ndimage.gaussian_filter(small, 12)) / spread
    strength = float(dog[mask].max())
    return float(1.0 / (1.0 + np.exp(-2.0 * (strength - 1.0))))
