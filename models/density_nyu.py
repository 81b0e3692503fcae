"""NYU breast density models (Wu et al., ICASSP 2018): the histogram baseline and the view-wise CNN.

Nan Wu, Krzysztof J. Geras, Yiqiu Shen, et al., "Breast density classification with deep
convolutional neural networks", ICASSP 2018; reference code nyukat/breast_density_classifier
(BSD 2-Clause). This file is our own re-implementation from the paper's description and the
fixture in ``shared/data/nyu_density`` (README + expected.json); module names follow the official
state-dict keys so the released ``model.p`` files load with ``strict=True``. Weights are never
shipped: the user passes the path of ``saved_models/BreastDensity_*/model.p``.

Histogram baseline, per exam:

1. each of the four views (8-bit PNG, 2600 x 2000 in the official data contract) is cast to
   float32, centred by its mean and divided by its std (population, float32, in place);
2. a 50-bin histogram from the view's own min to its max, normalised to sum to 1;
3. the four 50-vectors are concatenated in the order **L-CC, R-CC, L-MLO, R-MLO** (`VIEWS`; the
   upstream README lists the views in a different order, which is *not* the feature order);
4. ``fc1`` 200 -> 100, ReLU, ``fc2`` 100 -> 4, softmax over the BI-RADS density classes
   (0 almost entirely fatty .. 3 extremely dense).

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
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.density.estimator import CATEGORY_NAMES
from core.errors import InputError

__all__ = [
    "CLASS_NAMES",
    "CNN_MIN_SHAPE",
    "NUM_BINS",
    "OFFICIAL_SHAPE",
    "RECIPES",
    "VIEWS",
    "HistogramDetails",
    "NYUDensityCNN",
    "NYUDensityPrediction",
    "NYUHistogramMLP",
    "build_nyu_density",
    "cnn_inputs",
    "exam_features",
    "histogram_counts",
    "histogram_details",
    "histogram_features",
    "load_nyu_density",
    "numpy_float32_sum",
    "predict_density",
]

VIEWS = ("L-CC", "R-CC", "L-MLO", "R-MLO")   # feature / concatenation order of both models
OFFICIAL_SHAPE = (2600, 2000)                 # (H, W) the official code requires per view
CNN_MIN_SHAPE = (1159, 1135)                  # smallest (H, W) whose conv5c output is >= 1 x 1
NUM_BINS = 50
RECIPES = ("reference", "modern", "exact")
CLASS_NAMES = CATEGORY_NAMES                  # 0 almost entirely fatty .. 3 extremely dense

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
    views = _check_exam(images, require_official_size=require_official_size)
    counts = [_histogram(views[v], v, recipe, NUM_BINS).counts for v in VIEWS]
    return np.concatenate([c / c.sum() for c in counts]).astype(np.float32)


# --- networks ---------------------------------------------------------------------------------


class NYUHistogramMLP(nn.Module):
    """The histogram baseline: ``fc1`` 200 -> 100, ReLU, ``fc2`` 100 -> 4 (20,504 parameters)."""

    def __init__(self, num_bins: int = NUM_BINS) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4 * num_bins, 100)
        self.fc2 = nn.Linear(100, 4)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """x: (N, 200) float32 from `exam_features`. Returns ``logits`` and ``probabilities``, (N, 4)."""
        logits = self.fc2(F.relu(self.fc1(x)))
        return {"logits": logits, "probabilities": F.softmax(logits, dim=1)}


class _ViewPairConv(nn.Module):
    """One 3x3 valid conv layer with two weight sets: ``cc`` for both CC views, ``mlo`` for both MLOs."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.cc = nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride)
        self.mlo = nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride)

    def forward(self, views: dict[str, Tensor]) -> dict[str, Tensor]:
        return {v: F.relu((self.cc if v.endswith("CC") else self.mlo)(x)) for v, x in views.items()}


# (out channels, stride) of the 13 conv layers; the pooling between them is in `NYUDensityCNN`.
_CNN_LAYERS = ((32, 2), (64, 2), (64, 1), (64, 1), (128, 1), (128, 1), (128, 1),
               (128, 1), (128, 1), (128, 1), (256, 1), (256, 1), (256, 1))
_POOL_AFTER = {0: 3, 3: 2, 6: 2, 9: 2}   # layer index -> max-pool size (and stride) after it
_PAD_BEFORE_POOL = 6                      # one zero column on the right before that pool


class NYUDensityCNN(nn.Module):
    """The paper's multi-view CNN (5,813,252 parameters; weights not in the fixture).

    conv1 32 s2 -> 3x3 max-pool -> conv2a 64 s2, 2b, 2c -> 2x2 pool -> conv3a/b/c 128 -> one zero
    column on the right -> 2x2 pool -> conv4a/b/c 128 -> 2x2 pool -> conv5a/b/c 256 -> global
    average pool -> concat (L-CC, R-CC, L-MLO, R-MLO) = 1024 -> fc1 1024 ReLU -> fc2 4.
    All convs are 3x3, unpadded, ReLU; CC views share one weight set and MLO views the other.
    ``_conv_layer_ls`` keeps the official module name so the released state dict loads strictly.
    """

    def __init__(self) -> None:
        super().__init__()
        layers, in_ch = [], 1
        for out_ch, stride in _CNN_LAYERS:
            layers.append(_ViewPairConv(in_ch, out_ch, stride))
            in_ch = out_ch
        self._conv_layer_ls = nn.ModuleList(layers)
        self.fc1 = nn.Linear(4 * in_ch, 4 * in_ch)
        self.fc2 = nn.Linear(4 * in_ch, 4)

    def forward(self, views: dict[str, Tensor]) -> dict[str, Tensor]:
        """views: the four `VIEWS`, each (N, 1, H, W) float32 standardised (`cnn_inputs`).

        Returns ``logits`` and ``probabilities``, each (N, 4).
        """
        x = {v: views[v] for v in VIEWS}
        for i, layer in enumerate(self._conv_layer_ls):
            x = layer(x)
            if i == _PAD_BEFORE_POOL:
                x = {v: F.pad(t, (0, 1, 0, 0)) for v, t in x.items()}
            if i in _POOL_AFTER:
                k = _POOL_AFTER[i]
                x = {v: F.max_pool2d(t, kernel_size=k, stride=k) for v, t in x.items()}
        h = torch.cat([x[v].flatten(2).mean(-1) for v in VIEWS], dim=1)
        logits = self.fc2(F.relu(self.fc1(h)))
        return {"logits": logits, "probabilities": F.softmax(logits, dim=1)}


_BUILDERS = {"histogram": NYUHistogramMLP, "cnn": NYUDensityCNN}


def build_nyu_density(variant: str = "histogram") -> nn.Module:
    """A freshly initialised NYU density model: 'histogram' (the default) or 'cnn'."""
    if variant not in _BUILDERS:
        raise InputError(f"variant is {variant!r}; pass 'histogram' or 'cnn'")
    return _BUILDERS[variant]()


def _state_keys(variant: str) -> set[str]:
    with torch.device("meta"):      # names only: no memory, no random init
        return set(_BUILDERS[variant]().state_dict())


def _variant_of(keys: set[str]) -> str | None:
    for variant in _BUILDERS:
        if keys == _state_keys(variant):
            return variant
    if any(k.startswith("_conv_layer_ls.") for k in keys):
        return "cnn"
    if any(k.startswith(("fc1.", "fc2.")) for k in keys) and len(keys) <= 4:
        return "histogram"
    return None


def load_nyu_density(path: str | Path, *, variant: str | None = None) -> nn.Module:
    """Load the released NYU density weights (legacy or zip ``torch.save`` state dict) on the CPU.

    Parameters
    ----------
    path : path to ``BreastDensity_BaselineHistogramModel/model.p`` (or the CNN's ``model.p``).
    variant : {'histogram', 'cnn', None}, keyword-only
        None detects the variant from the state-dict keys.

    Returns
    -------
    NYUHistogramMLP or NYUDensityCNN, in eval mode, on the CPU.
    """
    path = Path(path)
    if variant is not None and variant not in _BUILDERS:
        raise InputError(f"variant is {variant!r}; pass 'histogram', 'cnn' or None to detect it")
    if not path.is_file():
        raise InputError(f"NYU density weights {path} do not exist; pass the path of the released model.p")
    try:
        raw = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # pickle / zip errors come in many types
        msg = str(exc).splitlines()[0] if str(exc) else ""
        raise InputError(f"NYU density weights {path} could not be read ({type(exc).__name__}: {msg}); "
                         "pass a torch.save file of a state dict") from exc
    if not isinstance(raw, Mapping) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise InputError(f"NYU density weights {path} hold a {type(raw).__name__}, not a state dict "
                         "of tensors; pass the released model.p")
    found = _variant_of(set(raw))
    if found is None:
        raise InputError(f"NYU density weights {path} have keys {sorted(raw)[:4]}... matching neither the "
                         "histogram model (fc1/fc2) nor the CNN (_conv_layer_ls.*); pass the released model.p")
    if variant is not None and found != variant:
        raise InputError(f"NYU density weights {path} are the {found} variant's, not the {variant}'s; "
                         f"pass variant={found!r} or None")
    own = _state_keys(found)
    if set(raw) != own:
        missing, unexpected = sorted(own - set(raw)), sorted(set(raw) - own)
        raise InputError(f"NYU density weights {path} ({found}) miss {missing[:3]} ({len(missing)}) and have "
                         f"unexpected {unexpected[:3]} ({len(unexpected)}); pass the released model.p")
    model = _BUILDERS[found]()
    try:
        model.load_state_dict(dict(raw), strict=True)
    except RuntimeError as exc:
        raise InputError(f"NYU density weights {path} ({found}) have tensors of the wrong shape: "
                         f"{str(exc).splitlines()[-1].strip()}") from exc
    return model.eval()


# --- inference --------------------------------------------------------------------------------


def cnn_inputs(images: Mapping[str, np.ndarray], *, require_official_size: bool = False,
               device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """The CNN's input: each view as float32 (1, 1, H, W), minus its mean, over its std."""
    views = _check_exam(images, require_official_size=require_official_size)
    out = {}
    for v in VIEWS:
        h, w = views[v].shape
        if h < CNN_MIN_SHAPE[0] or w < CNN_MIN_SHAPE[1]:
            raise InputError(f"view {v} is {h} x {w}; the CNN's unpadded convs need at least "
                             f"{CNN_MIN_SHAPE[0]} x {CNN_MIN_SHAPE[1]} (official: 2600 x 2000)")
        x = views[v].astype(np.float32)
        x -= x.mean()
        x /= x.std()
        out[v] = torch.from_numpy(x)[None, None].to(device)
    return out


@dataclass(frozen=True)
class NYUDensityPrediction:
    """probabilities, logits: float64 (4,), class i = ``CLASS_NAMES[i]``; category: argmax;
    variant: 'histogram' or 'cnn'; features: float32 (200,) histogram input (None for the CNN)."""

    probabilities: np.ndarray
    logits: np.ndarray
    category: int
    variant: str
    features: np.ndarray | None


def predict_density(model: nn.Module, images: Mapping[str, np.ndarray], *, recipe: str = "reference",
                    require_official_size: bool = False) -> NYUDensityPrediction:
    """Run a loaded NYU density model on one exam.

    Parameters
    ----------
    model : NYUHistogramMLP or NYUDensityCNN (from `load_nyu_density`); its device is used.
    images : mapping with the four `VIEWS` -> ndarray (H, W) integer gray levels.
    recipe : histogram arithmetic (histogram model only), see `histogram_details`.
    require_official_size : raise unless every view is 2600 x 2000.

    Returns
    -------
    NYUDensityPrediction
    """
    device = next(model.parameters()).device
    if isinstance(model, NYUHistogramMLP):
        features = exam_features(images, recipe=recipe, require_official_size=require_official_size)
        x, variant = torch.from_numpy(features)[None].to(device), "histogram"
    elif isinstance(model, NYUDensityCNN):
        features, variant = None, "cnn"
        x = cnn_inputs(images, require_official_size=require_official_size, device=device)
    else:
        raise InputError(f"model is a {type(model).__name__}; pass one from load_nyu_density")
    with torch.no_grad():
        out = model(x)
    probs = out["probabilities"][0].double().cpu().numpy()
    return NYUDensityPrediction(probs, out["logits"][0].double().cpu().numpy(),
                                int(np.argmax(probs)), variant, features)


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


def _check_exam(images: Mapping[str, np.ndarray], *, require_official_size: bool) -> dict[str, np.ndarray]:
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
