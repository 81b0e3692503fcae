"""The NYU histogram density baseline's input features (Wu et al., ICASSP 2018), without torch.

Why in core: the features are plain float32 arithmetic on gray-level counts, needed wherever
an exam's histogram is checked or timed; only the small network that reads them
(`models.networks.density_nyu`) needs PyTorch.

Histogram baseline, per exam:

1. each of the four views (8-bit PNG, 2600 x 2000 in the official data contract) is cast to
   float32, centred by its mean and divided by its std (population, float32, in place);
2. a 50-bin histogram from the view's own min to its max, normalised to sum to 1;
3. the four 50-vectors are concatenated in the order **L-CC, R-CC, L-MLO, R-MLO** (`VIEWS`; the
   upstream README lists the views in a different order, which is *not* the feature order);
4. (in `models.networks.density_nyu`) ``fc1`` 200 -> 100, ReLU, ``fc2`` 100 -> 4, softmax over the
   BI-RADS density classes (0 almost entirely fatty .. 3 extremely dense).

In exact arithmetic step 1 does not change the histogram. It matters only through float32
rounding: the exact edges of 50 bins over 0..255 fall on gray levels 51, 102, 153 and 204, and
whether those pixels go to the lower or the upper bin depends on how NumPy summed the mean and
the std (NumPy version, even pixel order). Hence three recipes (`RECIPES`):

- ``'reference'``: NumPy 1.14.3 (the stack the official README's numbers came from): float32
  pairwise sums over consecutive 8192-pixel buffers, each added to a float32 accumulator; the
  mean is float32(float64(sum) / N); float64 ``linspace`` bin edges. Reproduces the README
  probabilities to ~3e-7.
- ``'modern'``: NumPy 2.x on the official code: one pairwise sum over the whole array, float32
  divisions, float32 bin edges ``i * step + min`` compared in float32.
- ``'exact'``: bin = min(floor(50 (k - kmin) / (kmax - kmin)), 49) on the integer gray levels;
  every edge level goes to the upper bin. Independent of the numerical stack and of pixel order.

All three run on the gray-level counts plus (for the first two) a bit-exact emulation of NumPy's
float32 pairwise summation; per-gray-level lookup tables give every pixel's normalised value
exactly as the elementwise float32 code would. The recipes differ by up to ~2e-3 in probability
on the sample exam (5e-3 on a gamma-changed one); the predicted class never changed in the fixture.

Sizes: the histogram does not depend on the image size, so other sizes are accepted (the
official code requires 2600 x 2000; ``require_official_size=True`` enforces it). The model was
trained on 8-bit images; 16-bit input works (the bins span each view's own range) but is outside
what the weights have seen.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from core.errors import InputError

__all__ = ["NUM_BINS", "OFFICIAL_SHAPE", "RECIPES", "VIEWS", "HistogramDetails", "check_exam",
           "exam_features", "histogram_counts", "histogram_details", "histogram_features",
           "numpy_float32_sum"]

VIEWS = ("L-CC", "R-CC", "L-MLO", "R-MLO")   # feature / concatenation order of both models
OFFICIAL_SHAPE = (2600, 2000)                 # (H, W) the official code requires per view
NUM_BINS = 50
RECIPES = ("reference", "modern", "exact")

_BUFSIZE = 8192        # NumPy 1.14's ufunc buffer: the reduction sees the array in these chunks
_PW_BLOCKSIZE = 128    # NumPy's pairwise-sum leaf size (unrolled 8-lane loop below it)
_MAX_LEVELS = 1 << 16  # gray levels a lookup table may span (16-bit images)


# --- NumPy's float32 summation, bit for bit ---------------------------------------------------


def _leaf_sums(x: np.ndarray) -> np.ndarray:
    """NumPy's pairwise-sum leaf on each row of ``x`` (B, n), n <= 128, in float32.

    n < 8: a running sum from 0. Otherwise eight running sums over the complete groups of eight,
    combined as ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)), then the n % 8 leftovers one by one.
    """
    b, n = x.shape
    if n < 8:
        res = np.zeros(b, np.float32)
        for j in range(n):
            res = res + x[:, j]
        return res
    full = n - n % 8
    groups = x[:, :full].reshape(b, full // 8, 8)
    r = groups[:, 0, :].copy()
    for g in range(1, full // 8):
        r += groups[:, g, :]
    res = ((r[:, 0] + r[:, 1]) + (r[:, 2] + r[:, 3])) + ((r[:, 4] + r[:, 5]) + (r[:, 6] + r[:, 7]))
    for j in range(full, n):
        res = res + x[:, j]
    return res


@dataclass(frozen=True)
class _PairwisePlan:
    """The split tree of NumPy's pairwise sum over segments of one flat array, as index arrays.

    NumPy splits a segment of n > 128 at h = (n // 2) rounded down to a multiple of 8 and adds
    the two halves' sums. Every node of one depth is handled at once: ``levels[d]`` says, for
    each node at depth d, whether it splits and where its first child sits at depth d + 1
    (unsplit nodes are carried down unchanged), so the leaves end up in array order.
    """

    leaf_groups: tuple[tuple[int, np.ndarray, np.ndarray], ...]  # (length, leaf ids, starts)
    levels: tuple[tuple[np.ndarray, np.ndarray], ...]           # (splits, first child)
    n_leaves: int


def _pairwise_plan(starts: np.ndarray, lengths: np.ndarray) -> _PairwisePlan:
    starts = np.asarray(starts, np.int64)
    lengths = np.asarray(lengths, np.int64)
    levels = []
    while (lengths > _PW_BLOCKSIZE).any():
        split = lengths > _PW_BLOCKSIZE
        half = lengths // 2
        half -= half % 8
        n_children = np.where(split, 2, 1)
        first = np.cumsum(n_children) - n_children
        m = int(n_children.sum())
        new_starts, new_lengths = np.empty(m, np.int64), np.empty(m, np.int64)
        new_starts[first] = starts
        new_lengths[first] = np.where(split, half, lengths)
        second = first[split] + 1
        new_starts[second] = starts[split] + half[split]
        new_lengths[second] = lengths[split] - half[split]
        levels.append((split, first))
        starts, lengths = new_starts, new_lengths
    groups = []
    for length in np.unique(lengths):
        ids = np.flatnonzero(lengths == length)
        groups.append((int(length), ids, starts[ids]))
    return _PairwisePlan(tuple(groups), tuple(levels), len(lengths))


class _Float32Summer:
    """Sums ``lut[codes]`` in float32 exactly as NumPy would, for several lookup tables.

    ``codes`` (flat, row-major) is gathered into the plan's leaf layout once; each `sum` then only
    indexes its table, so the three sums of one histogram (mean, centred mean, squares) share it.
    """

    def __init__(self, codes: np.ndarray, recipe: str) -> None:
        n = codes.size
        if recipe == "reference":   # NumPy 1.14: one pairwise sum per 8192-element buffer
            starts = np.arange(0, n, _BUFSIZE, dtype=np.int64)
            lengths = np.minimum(_BUFSIZE, n - starts)
        else:                       # NumPy 2.x: one pairwise sum over the contiguous array
            starts, lengths = np.zeros(1, np.int64), np.full(1, n, np.int64)
        self._plan = _pairwise_plan(starts, lengths)
        self._gathered = []
        for length, _, leaf_starts in self._plan.leaf_groups:
            if np.array_equal(np.diff(leaf_starts), np.full(leaf_starts.size - 1, length)):
                s0 = int(leaf_starts[0])     # one contiguous run: a reshape, no gather
                block = codes[s0:s0 + length * leaf_starts.size].reshape(-1, length)
            else:
                block = codes[leaf_starts[:, None] + np.arange(length)]
            self._gathered.append(block)

    def sum(self, lut: np.ndarray) -> np.float32:
        plan = self._plan
        vals = np.empty(plan.n_leaves, np.float32)
        for (_, ids, _), block in zip(plan.leaf_groups, self._gathered):
            vals[ids] = _leaf_sums(lut[block])
        for split, first in reversed(plan.levels):
            parent = vals[first]
            parent[split] = vals[first[split]] + vals[first[split] + 1]
            vals = parent
        total = np.float32(0.0)       # the reduction's float32 accumulator starts at 0
        for v in vals:
            total = np.float32(total + v)
        return total


def numpy_float32_sum(values: np.ndarray, *, recipe: str = "modern") -> np.float32:
    """``values.sum()`` of a float32 array as NumPy 1.14.3 ('reference') or 2.x ('modern') does it.

    Row-major order. Exposed for tests and debugging; the histogram code sums via lookup tables.
    """
    if recipe not in ("reference", "modern"):
        raise InputError(f"recipe is {recipe!r}; numpy_float32_sum emulates 'reference' or 'modern'")
    flat = np.ascontiguousarray(values, dtype=np.float32).ravel()
    return _Float32Summer(np.arange(flat.size), recipe).sum(flat)


# --- histograms -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistogramDetails:
    """One view's histogram and the float32 statistics behind it (for checks against fixtures).

    counts: int64 (bins,), pixels per bin. mean, std: the float32 mean of the image and std of
    the centred image (None for 'exact'). normalized_min, normalized_max: the range of the
    normalised image (gray levels for 'exact'). bin_edges: (bins + 1,), float64 for 'reference',
    float32 for 'modern', float64 gray levels for 'exact'.
    """

    counts: np.ndarray
    mean: np.float32 | None
    std: np.float32 | None
    normalized_min: float
    normalized_max: float
    bin_edges: np.ndarray


def histogram_details(image: np.ndarray, *, recipe: str = "reference",
                      bins: int = NUM_BINS) -> HistogramDetails:
    """Histogram of one view after the official mean/std normalisation, with its intermediates.

    Parameters
    ----------
    image : ndarray of shape (H, W), integer dtype
        Gray levels as read from the PNG (uint8 in the official data; uint16 works too).
    recipe : {'reference', 'modern', 'exact'}, keyword-only
        Which float32 arithmetic to follow (see the module docstring); 'reference' reproduces
        the published numbers.
    bins : int, keyword-only
        Number of equal-width bins over the view's own range (the model uses 50).

    Returns
    -------
    HistogramDetails
    """
    return _histogram(_check_view("image", image), "image", recipe, bins)


def _histogram(img: np.ndarray, name: str, recipe: str, bins: int) -> HistogramDetails:
    _check_recipe(recipe)
    if not (isinstance(bins, (int, np.integer)) and bins >= 1):
        raise InputError(f"bins is {bins!r}; pass a positive integer (the model uses {NUM_BINS})")
    flat = img.ravel()
    # Lookup tables are indexed by `codes`: the raw levels for uint8/uint16, else level - kmin.
    if flat.dtype in (np.uint8, np.uint16):
        offset, codes = 0, flat
        level_counts = np.bincount(codes)
        present = np.flatnonzero(level_counts)      # table indices of the levels that occur
        kmin, kmax = int(present[0]), int(present[-1])
        _check_range(name, kmin, kmax)
    else:
        kmin, kmax = int(flat.min()), int(flat.max())
        _check_range(name, kmin, kmax)
        offset, codes = kmin, (flat.astype(np.int64) - kmin).astype(np.uint16)
        level_counts = np.bincount(codes)
        present = np.flatnonzero(level_counts)
    if recipe == "exact":
        span = kmax - kmin
        idx = np.minimum((bins * (present + offset - kmin)) // span, bins - 1)
        counts = np.bincount(idx, weights=level_counts[present], minlength=bins).astype(np.int64)
        edges = kmin + np.arange(bins + 1, dtype=np.float64) * (span / bins)
        edges[-1] = kmax
        return HistogramDetails(counts, None, None, float(kmin), float(kmax), edges)

    n = flat.size
    summer = _Float32Summer(codes, recipe)
    gray = np.arange(offset, kmax + 1, dtype=np.float64).astype(np.float32)  # float32(k) per code

    def mean_of(lut: np.ndarray) -> np.float32:
        # float32(float64(sum) / N): NumPy 1.14 divides the float32 scalar by a Python int, and
        # NumPy 2.x (numpy/_core/_methods.py) by an intp scalar, which promotes to float64. The
        # fixture describes 'modern' as a float32 division; the two differ only on the rare
        # double-rounding tie, and both reproduce every fixture mean and std bit for bit.
        return np.float32(np.float64(summer.sum(lut)) / n)

    mean = mean_of(gray)
    centred = gray - mean                  # image -= image.mean(), elementwise in float32
    mean2 = mean_of(centred)               # np.std recomputes the mean of the centred image
    dev = centred - mean2
    std = np.sqrt(mean_of(dev * dev))      # float32 sqrt of the float32 variance
    z = centred / std                      # image /= std
    zmin, zmax = z[present[0]], z[present[-1]]  # monotone in k: extremes at the extreme levels
    if recipe == "reference":              # float64 linspace; float32 values compared in float64
        lo, hi = float(zmin), float(zmax)
        edges = np.arange(bins + 1, dtype=np.float64) * ((hi - lo) / bins) + lo
        edges[-1] = hi
        values = z[present].astype(np.float64)
    else:                                  # float32 edges i * step + min; float32 comparisons
        step = np.float32((zmax - zmin) / np.float32(bins))
        edges = np.arange(bins + 1, dtype=np.float32) * step + zmin
        edges[-1] = zmax
        values = z[present]
    # bin i holds edge[i] <= v < edge[i+1]; the last bin also holds the maximum.
    idx = np.searchsorted(edges[1:-1], values, side="right")
    counts = np.bincount(idx, weights=level_counts[present], minlength=bins).astype(np.int64)
    return HistogramDetails(counts, mean, np.float32(std), float(zmin), float(zmax), edges)


def histogram_counts(image: np.ndarray, *, recipe: str = "reference",
                     bins: int = NUM_BINS) -> np.ndarray:
    """int64 (bins,) pixel counts of one view's histogram (see `histogram_details`)."""
    return histogram_details(image, recipe=recipe, bins=bins).counts


def histogram_features(image: np.ndarray, *, recipe: str = "reference",
                       bins: int = NUM_BINS) -> np.ndarray:
    """float64 (bins,) histogram of one view normalised to sum to 1 (the model's 50 inputs)."""
    counts = histogram_counts(image, recipe=recipe, bins=bins)
    return counts / counts.sum()


def exam_features(images: Mapping[str, np.ndarray], *, recipe: str = "reference",
                  require_official_size: bool = False) -> np.ndarray:
    """The histogram model's input: float32 (200,), views in `VIEWS` order, 50 bins each.

    Parameters
    ----------
    images : mapping view name -> ndarray (H, W), integer
        Exactly the keys 'L-CC', 'R-CC', 'L-MLO', 'R-MLO'.
    recipe : {'reference', 'modern', 'exact'}, keyword-only
    require_official_size : bool, keyword-only
        Raise unless every view is 2600 x 2000, as the official code does. Off by default:
        the histogram does not depend on the size.

    Returns
    -------
    ndarray float32 of shape (200,); ``out[50 * v + i]`` is bin i of view ``VIEWS[v]``.
    """
    views = check_exam(images, require_official_size=require_official_size)
    counts = [_histogram(views[v], v, recipe, NUM_BINS).counts for v in VIEWS]
    return np.concatenate([c / c.sum() for c in counts]).astype(np.float32)


# --- validation -------------------------------------------------------------------------------


def _check_recipe(recipe: str) -> None:
    if recipe not in RECIPES:
        raise InputError(f"recipe is {recipe!r}; pass 'reference' (reproduces the paper), 'modern' or 'exact'")


def _check_view(name: str, image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise InputError(f"view {name} has shape {arr.shape}; pass one 2-D greyscale array (H, W)")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"view {name} has dtype {arr.dtype}; pass the integer gray levels as read from "
                         "the PNG (uint8 in the official data)")
    if arr.size < 2:
        raise InputError(f"view {name} has shape {arr.shape}; a histogram needs at least 2 pixels")
    return arr


def _check_range(name: str, kmin: int, kmax: int) -> None:
    if kmin == kmax:
        raise InputError(f"view {name} is constant (every pixel = {kmin}); the normalisation divides "
                         "by its std, so pass a real image")
    if kmax - kmin >= _MAX_LEVELS:
        raise InputError(f"view {name} spans gray levels {kmin}..{kmax}; pass at most 16-bit data")


def check_exam(images: Mapping[str, np.ndarray], *, require_official_size: bool) -> dict[str, np.ndarray]:
    """The four views as 2-D integer arrays, checked (and sized, when required)."""
    if not isinstance(images, Mapping):
        raise InputError(f"images is a {type(images).__name__}; pass a dict with keys {', '.join(VIEWS)}")
    missing = [v for v in VIEWS if v not in images]
    extra = sorted(str(k) for k in images if k not in VIEWS)
    if missing or extra:
        raise InputError(f"images has views {sorted(map(str, images))}: missing {missing}, unknown {extra}; "
                         f"pass exactly {', '.join(VIEWS)}")
    out = {}
    for v in VIEWS:
        arr = _check_view(v, images[v])
        if require_official_size and arr.shape != OFFICIAL_SHAPE:
            raise InputError(f"view {v} is {arr.shape[0]} x {arr.shape[1]}; the official model expects "
                             f"{OFFICIAL_SHAPE[0]} x {OFFICIAL_SHAPE[1]} (crop/resize it, or drop "
                             "require_official_size: the histogram does not depend on the size)")
        out[v] = arr
    return out
