"""Classical breast density: percent dense area by thresholding inside the breast, 4 categories.

Pipeline per image (`percent_density`): block-mean downsample (long side <= ``max_side``) ->
breast mask (`core.image.segmentation.breast_mask`: air, labels and, on MLO views, the pectoral muscle
removed) -> pixels counted *dense* by a threshold -> percent of breast pixels that are dense.
An exam's score is the mean over its images (`estimate_exam`); `density_category` maps it to
0 almost entirely fatty .. 3 extremely dense through three cut points.

Thresholds (``method``):

- ``'fixed'`` (default): dense = intensity above ``threshold`` x the intensity scale.
  ``scale='full'`` (default) measures it against the full range of the stored values (0..255 for
  8-bit, 0..2**bits - 1 for 10..16-bit; see `full_scale`); ``scale='breast'`` against the breast's
  own range (1st..99th percentile), the study's figure-2.5 definition.
- ``'adaptive'``: Otsu's threshold computed on the breast's pixels.

Why ``scale='full'`` is the default: on mini-MIAS (322 film MLOs with fatty / fatty-glandular /
dense-glandular labels) the breast-relative threshold and Otsu both *anti*-correlate with the
labels (Spearman -0.44 and -0.48; linear kappa <= 0.02 even with cut points fitted to them):
stretching each breast to its own range discards the absolute brightness that separates the
classes (median 99th percentile of breast pixels 177 for fatty, 197 fatty-glandular, 213
dense-glandular, out of 255), and a uniformly grey fatty breast then looks "dense". A threshold
at 70 % of full scale gives Spearman 0.71, an in-sample linear kappa of 0.64 and a 5-fold
cross-validated one of 0.61 (tests/test_density.py prints them).
The price: it assumes a comparable exposure / display mapping across images, true within one
digitiser or one FFDM vendor's "for presentation" processing, not across them. Recalibrate
(`calibrate_cut_points`) on labelled local data before trusting categories elsewhere.

Cut points. `CALIBRATED_CUT_POINTS` (for the default method) come from mini-MIAS by
`calibrate_mias`: the fatty | scattered and scattered | heterogeneous cuts maximise the linear
weighted kappa against F / G / D (D = categories 2 and 3 together); MIAS has no label that
separates 2 from 3, so the last cut puts the top fifth of D images in category 3 (BI-RADS
reports ~10 % extremely dense and ~40 % heterogeneously dense women, i.e. a fifth of the dense
group). `BIRADS_CUT_POINTS` (25 / 50 / 75 %) are the textbook quartiles, used for any other
method, whose percentages live on another scale.
"""
from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.io.mias import parse_info
from core.io.pixels import block_mean
from core.vocabulary import DENSITY_CATEGORY_NAMES, MIAS_DENSITY
from core.stats.kappa import KAPPA_WEIGHTS, weighted_kappas
from core.progress import ProgressFn, report
from core.validation import check_image
from core.image.segmentation import breast_mask

__all__ = [
    "BIRADS_CUT_POINTS",
    "CALIBRATED_CUT_POINTS",
    "CALIBRATED_SOFT_WIDTH",
    "CATEGORY_NAMES",
    "DEFAULT_MAX_SIDE",
    "DEFAULT_THRESHOLD",
    "MIAS_CLASSES",
    "CutPointCalibration",
    "DensityEstimate",
    "calibrate_cut_points",
    "calibrate_mias",
    "category_probabilities",
    "density_category",
    "estimate_exam",
    "full_scale",
    "mias_percent_densities",
    "otsu_threshold",
    "percent_density",
    "read_mias_labels",
]

CATEGORY_NAMES = DENSITY_CATEGORY_NAMES   # core.vocabulary: 0 almost entirely fatty .. 3 extremely dense
METHODS = ("fixed", "adaptive")
SCALES = ("full", "breast")
# Fraction of full scale (method='fixed', scale='full'). Chosen on mini-MIAS from 0.60..0.80 in
# steps of 0.02 (5-fold CV linear kappa plateaus at ~0.60 for 0.68..0.72); the CV kappa we report
# does not include this choice, so it is slightly optimistic.
DEFAULT_THRESHOLD = 0.70
_BREAST_THRESHOLD = 0.5    # default for scale='breast': half-way up the breast's range
DEFAULT_MAX_SIDE = 256     # working long side, pixels; the calibration used this
BIRADS_CUT_POINTS = (25.0, 50.0, 75.0)

# Obtained by `calibrate_mias(<shared>/data/mias)` with the defaults above (322 images; the
# first two cuts maximise the linear kappa vs F/G/D, the last is the 80th percentile of D
# images; the width is the maximum-likelihood slope of a cumulative-logit model on F/G/D with
# those cuts). tests/test_density.py recomputes them.
CALIBRATED_CUT_POINTS = (3.7104, 11.5072, 38.6338)
CALIBRATED_SOFT_WIDTH = 6.9984
MIAS_CLASSES = MIAS_DENSITY   # fatty, fatty-glandular, dense-glandular (core.vocabulary)


_VIEW_RE = re.compile(r"(MLO|CC)", re.IGNORECASE)


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DensityEstimate:
    """One exam's classical density.

    score: mean percent dense area over the images, 0..100. category: 0..3 (`CATEGORY_NAMES`).
    probabilities: (p0, p1, p2, p3), a soft assignment around the cut points (cumulative
    logistic of width ``soft_width`` percentage points), or None when no width is known.
    per_image: percent dense area of each input image, by the caller's key.
    cut_points: the three cut points used, percent.
    """

    score: float
    category: int
    probabilities: tuple[float, float, float, float] | None
    per_image: dict[str, float]
    cut_points: tuple[float, float, float]


@dataclass(frozen=True)
class CutPointCalibration:
    """Cut points fitted to ordinal labels (`calibrate_cut_points`).

    cut_points: (c1, c2, c3) percent; category k holds c_k <= score < c_{k+1}.
    soft_width: maximum-likelihood width (percentage points) of the cumulative-logit soft
    assignment. kappa: weighted kappa of the fitted categories vs the labels (on the labels'
    classes, i.e. categories 2 and 3 merged for 3-class labels), in-sample. weights: 'linear'
    or 'quadratic'. n: number of images. confusion: int (k, k), rows = label, columns = predicted.
    """

    cut_points: tuple[float, float, float]
    soft_width: float
    kappa: float
    weights: str
    n: int
    confusion: np.ndarray


# --- per image --------------------------------------------------------------------------------


def full_scale(pixels: np.ndarray) -> float:
    """The top of the stored intensity range: what ``scale='full'`` divides by.

    uint8 -> 255; other integers -> 2**bits - 1 with bits the smallest of 10, 12, 14, 16 that
    holds the maximum (a 12-bit detector stored in uint16 -> 4095); floats -> 1.0 if all values
    lie in [0, 1], else the maximum.
    """
    arr = np.asarray(pixels)
    if arr.dtype == np.uint8:
        return 255.0
    top = float(arr.max()) if arr.size else 0.0
    if np.issubdtype(arr.dtype, np.integer):
        for bits in (10, 12, 14, 16):
            if top < 2**bits:
                return float(2**bits - 1)
        return top
    return 1.0 if top <= 1.0 else top


def otsu_threshold(values: np.ndarray, *, nbins: int = 256) -> float:
    """Otsu's threshold of a 1-D sample (256-bin histogram over its range; dense = value > t).

    The textbook between-class-variance maximiser, written the way scikit-image's
    ``threshold_otsu`` is for float data (it is the test's reference), kept in numpy.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if lo == hi:
        return lo
    hist, edges = np.histogram(v, bins=nbins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    hist = hist.astype(np.float64)
    w1 = np.cumsum(hist)
    w2 = np.cumsum(hist[::-1])[::-1]
    m1 = np.cumsum(hist * centres) / np.maximum(w1, 1e-300)
    m2 = (np.cumsum((hist * centres)[::-1]) / np.maximum(w2[::-1], 1e-300))[::-1]
    between = w1[:-1] * w2[1:] * (m1[:-1] - m2[1:]) ** 2
    return float(centres[int(np.argmax(between))])


def percent_density(
    pixels: np.ndarray,
    *,
    view: str | None = None,
    method: str = "fixed",
    threshold: float | None = None,
    scale: str = "full",
    mask: np.ndarray | None = None,
    chest_wall: str | None = None,
    max_side: int | None = DEFAULT_MAX_SIDE,
) -> float:
    """Percent of the breast's area that is dense (fibroglandular), 0..100.

    Parameters
    ----------
    pixels : ndarray of shape (H, W)
        Integer (8..16-bit) or float; brighter = denser (invert MONOCHROME1 first).
    view : {'CC', 'MLO', None}, keyword-only
        'MLO' removes the pectoral muscle from the breast mask (it is bright but not breast).
    method : {'fixed', 'adaptive'}, keyword-only
        'fixed': a threshold at a fixed fraction of ``scale``; 'adaptive': Otsu on the breast.
    threshold : float in (0, 1), keyword-only
        For 'fixed' only: the fraction of the scale above which a pixel is dense. Default
        `DEFAULT_THRESHOLD` (0.70) for scale 'full', 0.5 for 'breast'.
    scale : {'full', 'breast'}, keyword-only
        'full': 0..`full_scale(pixels)`; 'breast': the breast's own 1st..99th percentile.
    mask : bool ndarray of shape (H, W), keyword-only
        A breast mask to use instead of `breast_mask` (e.g. an edited one).
    chest_wall : {'left', 'right', None}, keyword-only
        Passed to `breast_mask` (None detects it).
    max_side : int or None, keyword-only
        Work on a block-mean copy whose long side is at most this (None: full resolution).
        Density is a coarse property; the default 256 is what the calibration used, and the
        fraction above a threshold depends a little on the pixel noise, so on the resolution.

    Returns
    -------
    float
        100 x (dense breast pixels) / (breast pixels).
    """
    img = _check_pixels(pixels)
    method, threshold, scale = _check_method(method, threshold, scale)
    if max_side is not None and not (isinstance(max_side, (int, np.integer)) and max_side >= 32):
        raise InputError(f"max_side is {max_side!r}; pass an integer >= 32 or None for full resolution")
    top = full_scale(img)
    factor = 1 if max_side is None else max(1, math.ceil(max(img.shape) / max_side))
    small = block_mean(img, factor)
    if mask is None:
        breast = breast_mask(small, view=view, chest_wall=chest_wall)
    else:
        m = np.asarray(mask)
        if m.shape != img.shape:
            raise InputError(f"mask has shape {m.shape} but pixels {img.shape}; pass a mask of the image's shape")
        breast = block_mean(m.astype(np.float32), factor) >= 0.5
    values = small[breast]
    if values.size == 0:
        raise InputError("pixels: the breast mask is empty (blank image, or MONOCHROME1 not inverted?); "
                         "check the image or pass a mask")
    return 100.0 * float(np.mean(_dense(values, method, threshold, scale, top)))


def _dense(values: np.ndarray, method: str, threshold: float, scale: str, top: float) -> np.ndarray:
    if method == "adaptive":
        return values > otsu_threshold(values)
    if scale == "full":
        return values > threshold * top
    lo, hi = np.percentile(values, [1.0, 99.0])
    if hi <= lo:
        return np.zeros(values.shape, bool)
    return (values - lo) > threshold * (hi - lo)


def density_category(percent: float, *, cut_points: Sequence[float] = CALIBRATED_CUT_POINTS) -> int:
    """Category 0..3 of a percent density: the number of cut points at or below it.

    ``c1 <= percent < c2`` -> 1, etc.; a value exactly on a cut point goes to the upper category.
    `CALIBRATED_CUT_POINTS` suit the default `percent_density`; pass `BIRADS_CUT_POINTS` or your
    own for other methods.
    """
    p = _check_percent("percent", percent)
    cuts = _check_cut_points(cut_points)
    return int(np.searchsorted(np.asarray(cuts), p, side="right"))


def category_probabilities(percent: float, *, cut_points: Sequence[float] = CALIBRATED_CUT_POINTS,
                           width: float = CALIBRATED_SOFT_WIDTH) -> tuple[float, float, float, float]:
    """Soft category assignment: P(category >= k) = logistic((percent - c_k) / width).

    A cumulative-logit model: the probabilities sum to 1, are 0.5 / 0.5 for neighbours on a cut
    point and harden as ``width`` -> 0. The width is in percentage points (`calibrate_cut_points`
    fits it by maximum likelihood).
    """
    p = _check_percent("percent", percent)
    cuts = np.asarray(_check_cut_points(cut_points))
    if not (isinstance(width, (int, float, np.floating)) and math.isfinite(width) and width > 0):
        raise InputError(f"width is {width!r}; pass a positive number of percentage points")
    at_least = np.concatenate([[1.0], _expit((p - cuts) / float(width)), [0.0]])
    probs = at_least[:-1] - at_least[1:]
    return tuple(float(x) for x in probs)


def _expit(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))   # overflow-free logistic


# --- per exam ---------------------------------------------------------------------------------


def estimate_exam(
    images: Mapping[str, np.ndarray],
    *,
    method: str = "fixed",
    threshold: float | None = None,
    scale: str = "full",
    cut_points: Sequence[float] | None = None,
    soft_width: float | None = None,
    masks: Mapping[str, np.ndarray] | None = None,
    max_side: int | None = DEFAULT_MAX_SIDE,
    progress: ProgressFn | None = None,
) -> DensityEstimate:
    """Classical density of one exam: percent dense area per image, mean, category.

    Parameters
    ----------
    images : mapping key -> ndarray (H, W)
        One or more images of the exam. A key containing 'MLO' (e.g. 'L-MLO', 'RMLO') marks an
        MLO view (pectoral muscle removed); 'CC' a CC view; other keys get no pectoral removal.
    method, threshold, scale, max_side : see `percent_density`.
    cut_points : three increasing percents, keyword-only
        Default: `CALIBRATED_CUT_POINTS` for the default method (fixed, full scale, default
        threshold), else `BIRADS_CUT_POINTS`.
    soft_width : float, keyword-only
        Width for `category_probabilities`; default `CALIBRATED_SOFT_WIDTH` with the calibrated
        cut points, else None (no probabilities).
    masks : mapping key -> bool ndarray, keyword-only
        Breast masks for some or all images (others are segmented).
    progress : ProgressFn, keyword-only
        Called after each image.

    Returns
    -------
    DensityEstimate
    """
    if not isinstance(images, Mapping) or len(images) == 0:
        what = "an empty mapping" if isinstance(images, Mapping) else f"a {type(images).__name__}"
        raise InputError(f"images is {what}; pass a dict of view name -> 2-D pixel array with at least one image")
    masks = {} if masks is None else masks
    unknown = sorted(str(k) for k in masks if k not in images)
    if unknown:
        raise InputError(f"masks has keys {unknown} that are not in images; use the images' keys")
    method, threshold_used, scale = _check_method(method, threshold, scale)
    calibrated = method == "fixed" and scale == "full" and math.isclose(threshold_used, DEFAULT_THRESHOLD)
    if cut_points is None:
        cuts = CALIBRATED_CUT_POINTS if calibrated else BIRADS_CUT_POINTS
    else:
        cuts = _check_cut_points(cut_points)
    if soft_width is None and cut_points is None and calibrated:
        soft_width = CALIBRATED_SOFT_WIDTH
    per_image = {}
    for i, (key, pixels) in enumerate(images.items()):
        match = _VIEW_RE.search(str(key))
        view = match.group(1).upper() if match else None
        try:
            per_image[str(key)] = percent_density(pixels, view=view, method=method, threshold=threshold,
                                                  scale=scale, mask=masks.get(key), max_side=max_side)
        except InputError as exc:
            raise InputError(f"image {key!r}: {exc}") from exc
        report(progress, i + 1, len(images), str(key))
    score = float(np.mean(list(per_image.values())))
    probs = None if soft_width is None else category_probabilities(score, cut_points=cuts, width=soft_width)
    return DensityEstimate(score, density_category(score, cut_points=cuts), probs, per_image, tuple(cuts))


# --- calibration ------------------------------------------------------------------------------


def calibrate_cut_points(
    scores: Sequence[float],
    labels: Sequence[int],
    *,
    weights: str = "linear",
    top_share: float = 0.2,
    max_candidates: int | None = None,
) -> CutPointCalibration:
    """Cut points that best reproduce ordinal density labels (maximum weighted kappa).

    Parameters
    ----------
    scores : array-like of shape (n,)
        Percent densities (0..100) from the method being calibrated.
    labels : array-like of int, shape (n,)
        Either 3 classes 0, 1, 2 (as mini-MIAS: fatty, fatty-glandular, dense-glandular, where 2
        stands for categories 2 and 3 together) or 4 classes 0..3 (BI-RADS a..d).
    weights : {'linear', 'quadratic'}, keyword-only
        Kappa weighting maximised (scikit-learn's ``cohen_kappa_score`` definition).
    top_share : float in (0, 1), keyword-only
        3-class labels only: share of class-2 images put in category 3 (the last cut is that
        upper quantile of their scores). 0.2 follows the BI-RADS population split (~10 %
        extremely dense vs ~40 % heterogeneously dense).
    max_candidates : int, keyword-only
        Candidate cuts are the midpoints between consecutive distinct scores, thinned to this many
        (quantile-spaced) for speed; default 400 for 3 classes, 80 for 4. The search over all
        increasing pairs (triples) of candidates is exhaustive.

    Returns
    -------
    CutPointCalibration
        Ties in kappa go to the lowest cut points. ``soft_width`` is the maximum-likelihood width
        of `category_probabilities` on the labels' classes with the fitted cuts.
    """
    s, y, k = _check_labels(scores, labels)
    if weights not in KAPPA_WEIGHTS:
        raise InputError(f"weights is {weights!r}; pass 'linear' or 'quadratic'")
    if not (0.0 < float(top_share) < 1.0):
        raise InputError(f"top_share is {top_share!r}; pass a fraction in (0, 1)")
    m = max_candidates if max_candidates is not None else (400 if k == 3 else 80)
    if not (isinstance(m, (int, np.integer)) and m >= k - 1):
        raise InputError(f"max_candidates is {max_candidates!r}; pass an integer >= {k - 1} (or None)")
    cand = _candidate_cuts(s, int(m))
    if cand.size < k - 1:
        raise InputError(f"scores take only {np.unique(s).size} distinct values; fitting {k - 1} "
                         "cut points needs more spread: check the threshold or the images")
    combos = np.array(list(itertools.combinations(range(cand.size), k - 1)), dtype=np.int64)
    # below[c, j] = number of class-c scores below candidate j: confusion matrices by differences.
    below = np.stack([np.searchsorted(np.sort(s[y == c]), cand, side="left") for c in range(k)])
    n_c = np.bincount(y, minlength=k)
    cols = [np.zeros((k, len(combos)), np.int64)] + [below[:, combos[:, j]] for j in range(k - 1)] \
        + [np.repeat(n_c[:, None], len(combos), axis=1)]
    cm = np.stack([cols[j + 1] - cols[j] for j in range(k)], axis=-1)   # (k, P, k)
    kappas = weighted_kappas(np.moveaxis(cm, 1, 0).astype(np.float64), weights)
    best = int(np.argmax(np.nan_to_num(kappas, nan=-np.inf)))
    fitted = [float(c) for c in cand[combos[best]]]
    if k == 3:
        top = float(np.quantile(s[y == 2], 1.0 - float(top_share)))
        fitted.append(top if top > fitted[-1] else float(np.nextafter(fitted[-1], np.inf)))
    cuts = tuple(fitted)
    width = _fit_soft_width(s, y, np.asarray(cuts[: k - 1]))
    return CutPointCalibration(cuts, width, float(kappas[best]), weights, int(s.size),
                               cm[:, best, :].astype(np.int64))


def _candidate_cuts(s: np.ndarray, m: int) -> np.ndarray:
    u = np.unique(s)
    mids = (u[1:] + u[:-1]) / 2
    if mids.size > m:
        mids = mids[np.unique(np.round(np.linspace(0, mids.size - 1, m)).astype(np.int64))]
    if mids.size < 2:
        raise InputError(f"scores have {u.size} distinct values; calibration needs more variety")
    return mids


def _fit_soft_width(s: np.ndarray, y: np.ndarray, cuts: np.ndarray) -> float:
    """Maximum-likelihood width of the cumulative logit P(y >= j) = logistic((s - c_j) / width).

    A grid over log10(width) in [-2, 2] (801 points): deterministic, no optimiser to tune;
    evaluated in chunks of widths so memory stays ~30 MB whatever the number of images.
    """
    widths = np.logspace(-2, 2, 801)
    step = max(1, 4_000_000 // (s.size * (cuts.size + 2)))
    nll = np.empty(widths.size)
    for a in range(0, widths.size, step):
        w = widths[a:a + step]
        z = (s[None, :, None] - cuts[None, None, :]) / w[:, None, None]           # (W, n, k-1)
        ones = np.ones(z.shape[:2] + (1,))
        at_least = np.concatenate([ones, _expit(z), 0 * ones], axis=-1)         # (W, n, k+1)
        probs = at_least[..., :-1] - at_least[..., 1:]
        p_true = np.take_along_axis(probs, y[None, :, None], axis=-1)[..., 0]
        nll[a:a + step] = -np.log(np.maximum(p_true, 1e-300)).sum(axis=1)
    return float(round(widths[int(np.argmin(nll))], 6))


# --- mini-MIAS ---------------------------------------------------------------------------------


def read_mias_labels(info_path: str | Path) -> dict[str, int]:
    """Background-tissue class per refnum from mini-MIAS ``Info.txt``: F -> 0, G -> 1, D -> 2.

    An image with several findings repeats its class; the first line wins.
    """
    labels: dict[str, int] = {}
    for finding in parse_info(info_path):
        labels.setdefault(finding.refnum, MIAS_DENSITY[finding.background])
    return labels


def mias_percent_densities(mias_dir: str | Path, *, refnums: Sequence[str] | None = None,
                           progress: ProgressFn | None = None, **options) -> dict[str, tuple[int, float]]:
    """Percent density of mini-MIAS images (all MLO): refnum -> (label 0..2, percent).

    ``options`` go to `percent_density` (method, threshold, scale, max_side); ``refnums``
    restricts the set (default: every refnum in Info.txt, sorted).
    """
    from core.io.images import read_pixels

    root = Path(mias_dir)
    labels = read_mias_labels(root / "Info.txt")
    chosen = sorted(labels) if refnums is None else list(refnums)
    out = {}
    for i, ref in enumerate(chosen):
        if ref not in labels:
            raise InputError(f"refnum {ref!r} is not in {root / 'Info.txt'}; pass mdb001..mdb322")
        path = next((p for p in (root / f"{ref}.png", root / f"{ref}.pgm") if p.is_file()), None)
        if path is None:
            raise InputError(f"{root} has no {ref}.png or {ref}.pgm; pass the mini-MIAS folder")
        out[ref] = (labels[ref], percent_density(read_pixels(path), view="MLO", **options))
        report(progress, i + 1, len(chosen), ref)
    return out


def calibrate_mias(mias_dir: str | Path, *, weights: str = "linear", progress: ProgressFn | None = None,
                   **options) -> CutPointCalibration:
    """Recompute `CALIBRATED_CUT_POINTS` / `CALIBRATED_SOFT_WIDTH` from mini-MIAS (all 322 images)."""
    data = mias_percent_densities(mias_dir, progress=progress, **options)
    labels = np.array([lab for lab, _ in data.values()])
    scores = np.array([pct for _, pct in data.values()])
    return calibrate_cut_points(scores, labels, weights=weights)


# --- validation -------------------------------------------------------------------------------


def _check_pixels(pixels: np.ndarray) -> np.ndarray:
    """`check_image` at 16 px, and no bool: density is a share of bright pixels, which needs
    intensities with a full scale (`full_scale`); a 0/1 array is a mask (pass it as ``mask``)."""
    if np.asarray(pixels).dtype == bool:
        raise InputError("pixels has dtype bool; pass the image's integer or float intensities "
                         "(a breast mask goes in mask=)")
    return check_image(pixels, min_side=16)


def _check_method(method: str, threshold: float | None, scale: str) -> tuple[str, float, str]:
    if method not in METHODS:
        raise InputError(f"method is {method!r}; pass 'fixed' (default) or 'adaptive' (Otsu)")
    if scale not in SCALES:
        raise InputError(f"scale is {scale!r}; pass 'full' (default) or 'breast'")
    if method == "adaptive":
        if threshold is not None:
            raise InputError(f"threshold is {threshold!r} but method='adaptive' picks its own (Otsu); "
                             "drop threshold or use method='fixed'")
        return method, float("nan"), scale
    if threshold is None:
        threshold = DEFAULT_THRESHOLD if scale == "full" else _BREAST_THRESHOLD
    if not (isinstance(threshold, (int, float, np.floating)) and 0.0 < float(threshold) < 1.0):
        raise InputError(f"threshold is {threshold!r}; pass a fraction of the intensity scale in (0, 1)")
    return method, float(threshold), scale


def _check_percent(name: str, value: float) -> float:
    try:
        p = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} is {value!r}; pass a number of percent in [0, 100]") from None
    if not (math.isfinite(p) and 0.0 <= p <= 100.0):
        raise InputError(f"{name} is {value!r}; pass a number of percent in [0, 100]")
    return p


def _check_cut_points(cut_points: Sequence[float]) -> tuple[float, float, float]:
    try:
        cuts = tuple(float(c) for c in cut_points)
    except (TypeError, ValueError):
        raise InputError(f"cut_points is {cut_points!r}; pass three increasing percents") from None
    if len(cuts) != 3 or not all(math.isfinite(c) for c in cuts) or not (cuts[0] < cuts[1] < cuts[2]):
        raise InputError(f"cut_points is {cut_points!r}; pass three strictly increasing percents "
                         f"(e.g. {BIRADS_CUT_POINTS})")
    return cuts


def _check_labels(scores, labels) -> tuple[np.ndarray, np.ndarray, int]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y_raw = np.asarray(labels).ravel()
    if s.size != y_raw.size:
        raise InputError(f"scores has {s.size} values but labels {y_raw.size}; pass one label per score")
    if not np.all(np.isfinite(s)):
        raise InputError("scores has NaN or infinite values; drop those images first")
    if not (np.issubdtype(y_raw.dtype, np.integer) or (y_raw.size and np.all(np.mod(y_raw, 1) == 0))):
        raise InputError(f"labels has dtype {y_raw.dtype}; pass integer classes 0..2 or 0..3 "
                         "(mini-MIAS: F=0, G=1, D=2)")
    y = y_raw.astype(np.int64)
    present = sorted(set(y.tolist()))
    if present not in ([0, 1, 2], [0, 1, 2, 3]):
        raise InputError(f"labels has classes {present}; pass every class of 0..2 (3-class) or 0..3 (BI-RADS)")
    return s, y, len(present)
