"""The study's image filters M1-M7, as pure functions on arrays of any bit depth.

Each method maps a 2-D greyscale image to a 2-D array of the same shape whose values are compared
between a tumour region and a healthy region (`core.image.regions.filter_aucs`). They are data:
`METHODS` maps a code to a `FilterMethod` (name, default parameters, function), `apply_method`
runs one with parameter overrides, and `params_hash` gives the cache key the store keys results by.

Input scaling. Every method first maps the pixels to float32 in [0, 1] with `to_unit`: integers
are divided by ``2**bit_depth - 1`` (the bit depth is inferred from the largest value, at least 8,
unless given), floats already in [0, 1] are kept, other floats are min-max rescaled. The map is
strictly increasing, so 'original' keeps every pixel AUC, and with one `bit_depth` for both
breasts the two images share one scale (the contralateral comparison needs that).

Outputs are float32, except M3 and M4 (segmentations), which return bool masks.

Defaults. The issue names the methods but not their settings; the defaults below are ILCscope's
(stated per method, and chosen as the libraries' own defaults where those suit a 1024-pixel
mini-MIAS image at 200 micron). Results are always stored with `params_hash` of the resolved
parameters, so a changed default never mixes with old results.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pywt
from skimage import exposure, filters

from core.errors import InputError
from core.image.segmentation import breast_mask
from core.validation import check_image

__all__ = [
    "METHODS", "FilterMethod", "apply_method", "params_hash", "resolve_params", "to_unit",
    "wavelet_subbands",
]

# Bump when a method's output changes for the same parameters: old cached results then miss.
_IMPL_VERSION = 1


@dataclass(frozen=True)
class FilterMethod:
    """One filter of the study.

    Attributes
    ----------
    code : str        'original' or 'M1'..'M7' (the study's names).
    name : str        Human-readable name for tables and pickers.
    defaults : Mapping[str, Any]   Read-only default parameters (JSON-serialisable values).
    func : Callable   ``func(unit, source, **params) -> ndarray``; `unit` is the float32 [0, 1]
        image, `source` the array as given (M2 uses its integer levels).
    summary : str     One line for the UI.
    support : Callable or None
        ``support(resolved_params) -> (margin, align)`` for local methods: each output pixel
        depends only on input pixels within `margin` of it, and a crop must start on a multiple
        of `align` (the DWT's dyadic grid) to give the same values there. None: the output
        depends on the whole image (histograms, tiles, global thresholds).
    """

    code: str
    name: str
    defaults: Mapping[str, Any]
    func: Callable[..., np.ndarray]
    summary: str
    support: Callable[[Mapping[str, Any]], tuple[int, int]] | None = None


# --- scaling ----------------------------------------------------------------------------------


def to_unit(pixels: np.ndarray, *, bit_depth: int | None = None) -> np.ndarray:
    """Float32 copy of `pixels` in [0, 1] by a strictly increasing map.

    Parameters
    ----------
    pixels : ndarray of shape (H, W)
        bool, unsigned or non-negative signed integers, or finite floats.
    bit_depth : int, optional
        Bits stored (e.g. 12 for most DR detectors, from DICOM BitsStored). Integers are divided
        by ``2**bit_depth - 1``. None infers it as ``max(8, max_value.bit_length())``: pass it
        explicitly when two images must share one scale.

    Returns
    -------
    ndarray of float32, shape (H, W), values in [0, 1].
    """
    arr = _check_pixels(pixels)
    if np.asarray(pixels).dtype == bool:   # a mask: 0/1 is already the unit scale
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        bits = infer_bit_depth(arr) if bit_depth is None else int(bit_depth)
        top = float(arr.max())
        if not 1 <= bits <= 32 or top > 2**bits - 1:
            raise InputError(
                f"bit_depth is {bit_depth!r} but the largest pixel value is {top:.0f}; "
                "pass the bits stored (e.g. 12) or None to infer it"
            )
        return (arr.astype(np.float32) / np.float32(2**bits - 1)).astype(np.float32, copy=False)
    lo, hi = float(arr.min()), float(arr.max())
    out = arr.astype(np.float32)
    if lo < 0.0 or hi > 1.0:
        out = (out - np.float32(lo)) / np.float32(hi - lo if hi > lo else 1.0)
    return out


def infer_bit_depth(pixels: np.ndarray) -> int:
    """Bits needed for the largest value of an integer image, at least 8."""
    return max(8, int(np.asarray(pixels).max()).bit_length())


def _check_pixels(pixels: np.ndarray) -> np.ndarray:
    """`check_image`, and no negative integers: `to_unit` divides by the bit depth's top."""
    arr = check_image(pixels)
    if np.issubdtype(arr.dtype, np.signedinteger) and arr.min() < 0:
        raise InputError(f"pixels has negative values (min {arr.min()}); pass display values "
                         "(apply the DICOM rescale/VOI first)")
    return arr


# --- the methods ------------------------------------------------------------------------------


def _original(unit: np.ndarray, source: np.ndarray) -> np.ndarray:
    """No filter: the [0, 1] image (the reference every method is compared with)."""
    return unit


def _clahe(unit: np.ndarray, source: np.ndarray, *, clip_limit: float, kernel_frac: float,
           nbins: int) -> np.ndarray:
    """M1, CLAHE (`skimage.exposure.equalize_adapthist`).

    clip_limit (0.01): histogram clip, fraction of a tile's pixels; higher = more contrast.
    kernel_frac (0.125): tile side as a fraction of the image side (scikit-image's 1/8), so the
        tiles cover the same anatomy at any resolution.
    nbins (256): grey-level bins of the tile histograms.
    """
    if not 0.0 < clip_limit <= 1.0:
        raise InputError(f"M1 clip_limit is {clip_limit}; pass a value in (0, 1], e.g. 0.01")
    if not 0.0 < kernel_frac <= 1.0:
        raise InputError(f"M1 kernel_frac is {kernel_frac}; pass a value in (0, 1], e.g. 0.125")
    kernel = tuple(max(2, int(round(s * kernel_frac))) for s in unit.shape)
    out = exposure.equalize_adapthist(unit, kernel_size=kernel, clip_limit=clip_limit,
                                      nbins=int(nbins))
    return out.astype(np.float32, copy=False)


def _hist_eq(unit: np.ndarray, source: np.ndarray, *, nbins: int) -> np.ndarray:
    """M2, global histogram equalisation (scikit-image's cumulative distribution).

    nbins (256): bins for float images only; integer images get one bin per grey level.
    Output: the fraction of pixels at or below each pixel's level, in (0, 1].
    """
    if np.issubdtype(source.dtype, np.integer):
        # One bin per grey level (scikit-image's rule for integers), applied as a look-up table:
        # the mapping is then strictly increasing on the levels present, so HE keeps the AUC.
        cdf, centers = exposure.cumulative_distribution(source)
        return cdf.astype(np.float32)[source - int(centers[0])]
    return exposure.equalize_hist(unit, nbins=int(nbins)).astype(np.float32, copy=False)


def _global_threshold(unit: np.ndarray, source: np.ndarray, *, method: str,
                      threshold: float | None, roi: str) -> np.ndarray:
    """M3, global threshold segmentation: True above one grey level.

    method ('otsu'): 'otsu' (`skimage.filters.threshold_otsu`) or 'manual'.
    threshold (None): the manual level in [0, 1] (fraction of the full grey range).
    roi ('breast'): pixels Otsu sees: 'breast' (`core.image.segmentation.breast_mask`) or 'image'.
    """
    if method == "manual":
        if threshold is None or not 0.0 <= threshold <= 1.0:
            raise InputError(
                f"M3 threshold is {threshold!r}; with method='manual' pass a value in [0, 1] "
                "(fraction of the full grey range)"
            )
        return unit > np.float32(threshold)
    if method != "otsu":
        raise InputError(f"M3 method is {method!r}; pass 'otsu' or 'manual'")
    if roi == "breast":
        # Over the whole image Otsu separates air from breast, which says nothing about a lesion
        # inside the breast; within the breast it splits dense from fatty tissue.
        values = unit[breast_mask(unit)]
    elif roi == "image":
        values = unit
    else:
        raise InputError(f"M3 roi is {roi!r}; pass 'breast' or 'image'")
    if values.size == 0 or values.min() == values.max():
        return np.zeros(unit.shape, dtype=bool)
    return unit > np.float32(filters.threshold_otsu(values))


def _local_threshold(unit: np.ndarray, source: np.ndarray, *, block_size: int, method: str,
                     offset: float) -> np.ndarray:
    """M4, local threshold segmentation: True above the neighbourhood's weighted mean
    (`skimage.filters.threshold_local`).

    block_size (51): odd neighbourhood side in pixels (51 px = 10 mm at 200 micron).
    method ('gaussian'): 'gaussian' (sigma = (block_size - 1) / 6), 'mean' or 'median'.
    offset (0.0): subtracted from the local threshold, in [0, 1] grey units.
    """
    if block_size < 3 or block_size % 2 == 0:
        raise InputError(f"M4 block_size is {block_size}; pass an odd number of pixels >= 3")
    if method not in ("gaussian", "mean", "median"):
        raise InputError(f"M4 method is {method!r}; pass 'gaussian', 'mean' or 'median'")
    local = filters.threshold_local(unit, block_size=int(block_size), method=method,
                                    offset=float(offset))
    return unit > local


def _gradient(unit: np.ndarray, source: np.ndarray, *, operator: str) -> np.ndarray:
    """M5, gradient magnitude. operator ('sobel'): 'sobel' or 'prewitt' (scikit-image)."""
    ops = {"sobel": filters.sobel, "prewitt": filters.prewitt}
    if operator not in ops:
        raise InputError(f"M5 operator is {operator!r}; pass 'sobel' or 'prewitt'")
    return ops[operator](unit).astype(np.float32, copy=False)


def _unsharp(unit: np.ndarray, source: np.ndarray, *, radius: float, amount: float) -> np.ndarray:
    """M6, unsharp masking (`skimage.filters.unsharp_mask`): u + amount * (u - blur(u)).

    radius (5.0): Gaussian sigma of the blur, pixels (1 mm at 200 micron).
    amount (1.0): gain of the detail added back.
    """
    if radius <= 0:
        raise InputError(f"M6 radius is {radius}; pass a Gaussian sigma in pixels > 0, e.g. 5")
    # preserve_range: no clipping to [0, 1], which would tie the brightest pixels together.
    return filters.unsharp_mask(unit, radius=float(radius), amount=float(amount),
                                preserve_range=True).astype(np.float32, copy=False)


def _wavelet(unit: np.ndarray, source: np.ndarray, *, wavelet: str, level: int,
             detail_levels: tuple[int, ...] | list[int], detail_gain: float,
             approx_gain: float) -> np.ndarray:
    """M7, wavelet detail-subband enhancement (PyWavelets `wavedec2` / `waverec2`).

    In the manner of Strickland and Hahn (IEEE TMI 1996), who read findings off the detail
    subbands at the scales that match them and leave the finest scale (mostly noise) out: the
    detail subbands at `detail_levels` are multiplied by `detail_gain` before reconstruction.
    They used an undecimated spline transform; this is the decimated DWT (fast, exactly
    invertible: unit gains return the image).

    wavelet ('db4'): PyWavelets discrete wavelet name.
    level (3): decomposition levels.
    detail_levels ((2, 3)): scales to enhance, 1 = finest.
    detail_gain (2.0): gain on those subbands (LH, HL and HH).
    approx_gain (1.0): gain on the coarsest approximation (LL); 0 keeps details only.
    """
    coeffs = _wavedec(unit, wavelet, level)
    keep = _check_detail_levels(detail_levels, level)
    out = [coeffs[0] * np.float32(approx_gain)]
    # coeffs[1] is the coarsest detail (scale `level`), coeffs[-1] the finest (scale 1).
    for i, bands in enumerate(coeffs[1:]):
        scale = level - i
        g = np.float32(detail_gain if scale in keep else 1.0)
        out.append(tuple(b * g for b in bands))
    rec = pywt.waverec2(out, wavelet)
    return rec[: unit.shape[0], : unit.shape[1]].astype(np.float32, copy=False)


def _wavedec(unit: np.ndarray, wavelet: str, level: int) -> list:
    if wavelet not in pywt.wavelist(kind="discrete"):
        raise InputError(f"wavelet is {wavelet!r}; pass a discrete PyWavelets name, e.g. 'db4'")
    max_level = pywt.dwtn_max_level(unit.shape, wavelet)
    if not 1 <= level <= max(1, max_level):
        raise InputError(
            f"wavelet level is {level}; pass 1..{max_level} for a {unit.shape} image and {wavelet}"
        )
    return pywt.wavedec2(unit, wavelet, level=int(level))


def _check_detail_levels(detail_levels, level: int) -> set[int]:
    keep = {int(s) for s in detail_levels}
    if not keep or not keep <= set(range(1, level + 1)):
        raise InputError(
            f"M7 detail_levels is {list(detail_levels)}; pass scales within 1..{level} "
            "(1 = finest)"
        )
    return keep


def _method(code, name, func, summary, support=None, **defaults) -> FilterMethod:
    return FilterMethod(code, name, MappingProxyType(defaults), func, summary, support)


# Context each local method needs (scipy.ndimage's Gaussian kernels reach int(4 sigma + 0.5)).
def _support_m4(p):
    return int(p["block_size"]) + 1, 1


def _support_m6(p):
    return int(4 * float(p["radius"]) + 0.5) + 2, 1


def _support_m7(p):
    reach = 2 ** int(p["level"])
    return 2 * pywt.Wavelet(p["wavelet"]).dec_len * reach, reach


METHODS: Mapping[str, FilterMethod] = MappingProxyType({m.code: m for m in (
    _method("original", "Original", _original, "The image as acquired (scaled to [0, 1]).",
            support=lambda p: (0, 1)),
    # CLAHE: scikit-image's defaults (clip 0.01, 256 bins, tiles 1/8 of each side).
    _method("M1", "Adaptive histogram equalisation (CLAHE)", _clahe,
            "Contrast-limited equalisation in tiles of 1/8 of each side.",
            clip_limit=0.01, kernel_frac=0.125, nbins=256),
    # Global HE: one bin per grey level for integer images (exact); 256 bins for floats.
    _method("M2", "Histogram equalisation", _hist_eq,
            "Global equalisation: grey level -> cumulative fraction of pixels.", nbins=256),
    _method("M3", "Global threshold segmentation", _global_threshold,
            "Binary mask above one threshold: Otsu within the breast, or a manual level.",
            method="otsu", threshold=None, roi="breast"),
    # 51 px = 10 mm at mini-MIAS's 200 micron: about one small mass across.
    _method("M4", "Local (adaptive) threshold segmentation", _local_threshold,
            "Binary mask above a Gaussian-weighted local mean (block 51 px).",
            support=_support_m4, block_size=51, method="gaussian", offset=0.0),
    _method("M5", "Gradient magnitude (Sobel)", _gradient,
            "Edge strength, Sobel (or Prewitt) operator.", support=lambda p: (2, 1),
            operator="sobel"),
    # radius 5 px = 1 mm at 200 micron; amount 1 doubles the detail above that scale.
    _method("M6", "Unsharp masking", _unsharp,
            "Image + amount x (image - Gaussian blur of sigma = radius).", support=_support_m6,
            radius=5.0, amount=1.0),
    _method("M7", "Wavelet detail enhancement", _wavelet,
            "DWT, detail subbands at the chosen scales x gain, inverse DWT.", support=_support_m7,
            wavelet="db4", level=3, detail_levels=(2, 3), detail_gain=2.0, approx_gain=1.0),
)})


# --- public API -------------------------------------------------------------------------------


def resolve_params(code: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The method's defaults updated with `params`; unknown names are an InputError."""
    method = _get(code)
    params = dict(params or {})
    unknown = sorted(set(params) - set(method.defaults))
    if unknown:
        allowed = ", ".join(method.defaults) or "none"
        raise InputError(f"{code} has no parameter {', '.join(unknown)}; allowed: {allowed}")
    resolved = dict(method.defaults)
    for name, value in params.items():
        default = resolved[name]
        # Coerce to the default's type so that equal settings hash alike (2 vs 2.0, list/tuple).
        if isinstance(default, float) and isinstance(value, (int, np.integer)) \
                and not isinstance(value, bool):
            value = float(value)
        elif isinstance(default, tuple) and isinstance(value, (list, np.ndarray)):
            value = tuple(value)
        elif isinstance(value, np.generic):
            value = value.item()
        resolved[name] = value
    return resolved


def apply_method(code: str, pixels: np.ndarray, *, bit_depth: int | None = None,
                 **params: Any) -> np.ndarray:
    """Apply filter `code` to one image.

    Parameters
    ----------
    code : str
        'original' or 'M1'..'M7' (see `METHODS`).
    pixels : ndarray of shape (H, W)
        Any bit depth; higher = denser. See `to_unit` for the scaling.
    bit_depth : int, optional
        Bits stored; pass one value for images that are compared with each other.
    **params
        Overrides of ``METHODS[code].defaults``.

    Returns
    -------
    ndarray of shape (H, W)
        float32 (bool for M3 and M4).
    """
    method = _get(code)
    resolved = resolve_params(code, params)
    source = _check_pixels(pixels)
    return method.func(to_unit(pixels, bit_depth=bit_depth), source, **resolved)


def params_hash(code: str, params: Mapping[str, Any] | None = None) -> str:
    """Stable 12-hex-digit key of (code, resolved parameters, implementation version).

    Equal for equal resolved parameters whatever their order, whether a default was passed
    explicitly, or whether a float parameter came as an int (2 and 2.0) or a tuple as a list.
    """
    resolved = resolve_params(code, params)
    blob = json.dumps({"code": code, "params": resolved, "v": _IMPL_VERSION},
                      sort_keys=True, separators=(",", ":"), default=_jsonable)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def wavelet_subbands(pixels: np.ndarray, wavelet: str = "db4", level: int = 1, *,
                     bit_depth: int | None = None) -> dict[str, np.ndarray]:
    """The 2-D DWT's subbands, for display.

    Parameters
    ----------
    pixels : ndarray of shape (H, W), any bit depth.
    wavelet : str, PyWavelets discrete wavelet name.
    level : int, number of decomposition levels.

    Returns
    -------
    dict of str -> float32 ndarray
        'LL': the approximation at `level` (about H / 2**level x W / 2**level); for each scale
        s = 1..level (1 = finest): 'LH{s}' (horizontal details: low-pass along rows, high-pass
        down columns), 'HL{s}' (vertical details), 'HH{s}' (diagonal details).
    """
    coeffs = _wavedec(to_unit(pixels, bit_depth=bit_depth), wavelet, int(level))
    out = {"LL": coeffs[0].astype(np.float32, copy=False)}
    for i, (ch, cv, cd) in enumerate(coeffs[1:]):
        s = level - i
        out[f"LH{s}"], out[f"HL{s}"], out[f"HH{s}"] = (
            b.astype(np.float32, copy=False) for b in (ch, cv, cd))
    return out


def _get(code: str) -> FilterMethod:
    try:
        return METHODS[code]
    except KeyError:
        raise InputError(f"filter code is {code!r}; pass one of {', '.join(METHODS)}") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    raise TypeError(f"parameter value {value!r} is not JSON-serialisable")
