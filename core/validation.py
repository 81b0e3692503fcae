"""Checks at the door: one function per kind of argument, one message per condition.

Public functions in `core` validate their arguments once, here, and hand clean values to private
helpers. Each message names the parameter, the value received and what to pass instead (the
scikit-learn habit); it never names a command-line flag (the CLI maps parameter names to its
flags when it prints: `cli.flag_names`). Every error is an `InputError`, a `ValueError`.
"""
from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

from core.errors import InputError
from core.vocabulary import AGGREGATIONS, LEVELS

__all__ = ["check_aggregation", "check_alpha", "check_choice", "check_fraction", "check_image",
           "check_level", "check_n_boot", "check_positive_int"]


def check_choice(value, choices, *, name: str) -> str:
    """``value`` if it is one of ``choices``; else an error listing them."""
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{name} {value!r} is not one of {', '.join(map(str, choices))}; "
                         f"{name} must be one of these")
    return value


def check_level(level, *, name: str = "level") -> str:
    """A case level: 'image', 'breast' or 'exam'."""
    return check_choice(level, LEVELS, name=name)


def check_aggregation(how, *, name: str = "how") -> str:
    """How image scores combine into breast or exam scores: 'max' or 'mean'."""
    if not isinstance(how, str) or how not in AGGREGATIONS:
        raise InputError(f"{name} must be {' or '.join(map(repr, AGGREGATIONS))} (over a case's "
                         f"views); got {how!r}")
    return how


def check_alpha(alpha, *, name: str = "alpha") -> float:
    """A significance level in (0, 1): 0.05 gives 95 % intervals."""
    if (isinstance(alpha, bool) or not isinstance(alpha, Real) or not math.isfinite(alpha)
            or not 0 < alpha < 1):
        raise InputError(f"{name} must lie in (0, 1), e.g. 0.05 for a 95% interval; got {alpha!r}")
    return float(alpha)


def check_n_boot(n_boot, *, name: str = "n_boot", minimum: int = 2) -> int:
    """A number of bootstrap resamples: an integer of at least 2 (2000 is usual).

    An interval needs two resamples; ``minimum=1`` is for functions whose interval is a
    by-product, so a caller that wants only their counts can skip the bootstrap's cost.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, Integral) or n_boot < minimum:
        raise InputError(f"{name} must be an integer >= {minimum} (2000 is usual); got {n_boot!r}")
    return int(n_boot)


def check_positive_int(value, *, name: str, minimum: int = 1) -> int:
    """An integer of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def check_fraction(value, *, name: str, what: str = "fraction") -> float:
    """A number in [0, 1] (a specificity of 0.9, not 90)."""
    if (isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value)
            or not 0 <= value <= 1):
        raise InputError(f"{name} must be a {what} in [0, 1] (e.g. 0.9, not 90); got {value!r}")
    return float(value)


def check_image(pixels, *, name: str = "pixels", min_side: int = 1) -> np.ndarray:
    """One greyscale image as a 2-D numeric array, the same rule everywhere.

    - shape (H, W); (H, W, 1) is squeezed to (H, W); anything else (colour, stacks) is refused;
    - both sides at least ``min_side`` pixels;
    - integer or float values; bool is taken as 0/1 (uint8), since a mask drawn as an image is
      still an image; complex, object and text arrays are refused;
    - floats must be finite (NaN marks missing pixels: fill or crop them first).
    """
    arr = np.asarray(pixels)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise InputError(f"{name} has shape {arr.shape}; pass one 2-D greyscale image (H, W): "
                         "convert colour images to grey first")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(f"{name} has dtype {arr.dtype}; pass integer or float pixel values")
    if min(arr.shape) < max(min_side, 1):
        raise InputError(f"{name} has shape {arr.shape}; need at least {max(min_side, 1)} x "
                         f"{max(min_side, 1)} pixels")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise InputError(f"{name} has NaN or infinite values; replace them (e.g. with the "
                         "background value) or crop them first")
    return arr
