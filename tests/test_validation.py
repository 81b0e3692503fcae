"""core.validation: every check refuses each kind of bad input with a message that names the
parameter and the value; the callers that adopted it agree with each other (the level check, the
four public image entry points, alpha and n_boot in core.stats and core.complement)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from core import complement as cp
from core import stats
from core.density import estimator as density
from core.errors import InputError
from core.image import filters, segmentation
from core.reports import benchmark
from core.reports import complement as complement_report
from core.validation import (check_aggregation, check_alpha, check_choice, check_fraction,
                             check_image, check_level, check_n_boot, check_positive_int)
from core.vocabulary import AGGREGATIONS, LEVELS
from models.inference.preprocess import preprocess_image


def raises_naming(call, *words):
    """Run ``call``; it must raise a one-line InputError (a ValueError) containing ``words``."""
    with pytest.raises(InputError) as info:
        call()
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in message
    for word in words:
        assert word in message, (word, message)
    return message


# ---------------------------------------------------------------------------- choices

@pytest.mark.parametrize("value", ["patient", "Image", "", 3, None, True, ["image"]])
def test_check_level_refuses_and_names_the_value(value):
    message = raises_naming(lambda: check_level(value), "level", repr(value))
    assert all(level in message for level in LEVELS)


@pytest.mark.parametrize("level", LEVELS)
def test_check_level_returns_a_known_level(level):
    assert check_level(level) == level


@pytest.mark.parametrize("value", ["median", "MAX", 0, None, ("max",)])
def test_check_aggregation_refuses_and_names_the_value(value):
    message = raises_naming(lambda: check_aggregation(value, name="how"), "how", repr(value))
    assert all(repr(how) in message for how in AGGREGATIONS)


def test_check_choice_uses_the_given_name_and_returns_the_value():
    assert check_choice("b", ("a", "b"), name="letter") == "b"
    raises_naming(lambda: check_choice("c", ("a", "b"), name="letter"), "letter", "'c'", "a, b")


def test_every_level_check_gives_the_same_message():
    """aggregate_scores, the benchmark and the complement report share one level check."""
    frame = pd.DataFrame({c: [] for c in stats.FRAME_COLUMNS})
    levels = pd.DataFrame({"model": ["m"], "level": ["image"], "n": [1]})
    calls = [
        lambda: stats.aggregate_scores(frame, level="ward"),
        lambda: benchmark.usable_models(levels, "ward"),
        lambda: complement_report.load_cases(None, test_set="t", model="m", reader="r",
                                             level="ward"),
    ]
    messages = {raises_naming(call, "level", "'ward'") for call in calls}
    assert len(messages) == 1


def test_every_aggregation_check_gives_the_same_message():
    frame = pd.DataFrame({c: [] for c in stats.FRAME_COLUMNS})
    expected = raises_naming(lambda: check_aggregation("median"), "how", "'median'")
    assert raises_naming(lambda: stats.aggregate_scores(frame, level="exam", how="median")) \
        == expected
    assert raises_naming(lambda: benchmark.load_scores(None, models=["m"], test_sets=["t"],
                                                       how="median")) == expected


# ---------------------------------------------------------------------------- numbers

@pytest.mark.parametrize("value", [0.05, 0.5, np.float32(0.1), np.float64(0.01)])
def test_check_alpha_accepts_a_level_in_the_open_interval(value):
    assert check_alpha(value) == float(value) and type(check_alpha(value)) is float


@pytest.mark.parametrize("value", [None, "0.05", True, False, math.nan, math.inf, 0, 1, 0.0, 1.0,
                                   -0.05, 1.5, [0.05]])
def test_check_alpha_refuses(value):
    raises_naming(lambda: check_alpha(value), "alpha", repr(value))


@pytest.mark.parametrize("value", [2, 2000, np.int64(500), np.uint16(3)])
def test_check_n_boot_accepts_integers_from_two(value):
    assert check_n_boot(value) == int(value) and type(check_n_boot(value)) is int


@pytest.mark.parametrize("value", [1, 0, -5, True, 2000.0, "2000", None, math.nan])
def test_check_n_boot_refuses(value):
    raises_naming(lambda: check_n_boot(value), "n_boot", repr(value), ">= 2")


def test_check_n_boot_minimum_one_for_counts_only_callers():
    assert check_n_boot(1, minimum=1) == 1
    raises_naming(lambda: check_n_boot(0, minimum=1), "n_boot", ">= 1", "got 0")


@pytest.mark.parametrize("value, minimum", [(0, 1), (-1, 1), (True, 1), (2.0, 1), ("3", 1),
                                            (None, 1), (4, 5)])
def test_check_positive_int_refuses(value, minimum):
    raises_naming(lambda: check_positive_int(value, name="bins", minimum=minimum), "bins",
                  repr(value), f">= {minimum}")


def test_check_positive_int_accepts():
    assert check_positive_int(np.int32(30), name="bins") == 30
    assert check_positive_int(5, name="bins", minimum=5) == 5


@pytest.mark.parametrize("value", [0, 1, 0.9, np.float32(0.5)])
def test_check_fraction_accepts_the_closed_interval(value):
    assert check_fraction(value, name="target") == pytest.approx(float(value))


@pytest.mark.parametrize("value", [90, -0.1, 1.01, math.nan, math.inf, True, "0.9", None])
def test_check_fraction_refuses(value):
    raises_naming(lambda: check_fraction(value, name="target", what="specificity"), "target",
                  "specificity", repr(value), "not 90")


# ---------------------------------------------------------------------------- the adopters

def test_wilson_ci_refuses_alpha_none_like_the_other_statistics():
    message = raises_naming(lambda: stats.wilson_ci(3, 10, alpha=None), "alpha", "None")
    assert message == raises_naming(lambda: stats.delong_auc([0, 1], [0.1, 0.2], alpha=None))
    assert cp.wilson_ci is stats.wilson_ci   # complement uses the one in core.stats


def test_bootstrap_difference_refuses_n_boot_one_like_bootstrap_auc():
    y, a, b = [0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1]
    message = raises_naming(lambda: cp.bootstrap_difference(y, a, b, n_boot=1), "n_boot", "1")
    assert message == raises_naming(lambda: stats.bootstrap_auc(y, [0.1, 0.4, 0.3, 0.8],
                                                                n_boot=1))


@pytest.mark.parametrize("alpha", [None, 0, 1.5, math.nan, "0.05"])
def test_complement_functions_check_alpha_like_core_stats(alpha):
    y, s, r = [0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], [0, 1, 0, 1]
    expected = raises_naming(lambda: check_alpha(alpha))
    for call in (lambda: cp.complement(y, s, r, threshold=0.5, alpha=alpha),
                 lambda: cp.workflows(y, s, r, threshold=0.5, alpha=alpha),
                 lambda: cp.bootstrap_difference(y, r, r, alpha=alpha)):
        assert raises_naming(call) == expected


def test_target_rates_use_check_fraction():
    y, s = [0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9]
    raises_naming(lambda: stats.threshold_for_specificity(y, s, 90), "target", "specificity",
                  "90", "not 90")
    raises_naming(lambda: stats.threshold_for_sensitivity(y, s, math.nan), "target",
                  "sensitivity", "nan")


# ---------------------------------------------------------------------------- images

def test_check_image_squeezes_a_single_channel_and_reads_bool_as_zero_one():
    img = np.arange(20, dtype=np.uint16).reshape(4, 5)
    assert np.array_equal(check_image(img[..., None]), img)
    out = check_image(np.eye(3, dtype=bool))
    assert out.dtype == np.uint8 and np.array_equal(out, np.eye(3))
    assert check_image(img) is img   # a clean array is handed on, not copied


@pytest.mark.parametrize("bad, words", [
    (np.zeros((4, 5, 3)), ["shape (4, 5, 3)", "2-D", "grey"]),
    (np.zeros((2, 4, 5)), ["shape (2, 4, 5)"]),
    (np.zeros(7), ["shape (7,)"]),
    (np.zeros((0, 5)), ["shape (0, 5)", "at least 1 x 1"]),
    (np.zeros((3, 3), dtype=object), ["dtype object"]),
    (np.zeros((3, 3), dtype=complex), ["dtype complex128"]),
    (np.array([["a", "b"], ["c", "d"]]), ["dtype <U1"]),
    (np.array([[0.0, np.nan], [1.0, 2.0]]), ["NaN"]),
    (np.array([[0.0, np.inf], [1.0, 2.0]]), ["infinite"]),
])
def test_check_image_refuses(bad, words):
    raises_naming(lambda: check_image(bad, name="pixels"), "pixels", *words)


def test_check_image_min_side_and_name():
    raises_naming(lambda: check_image(np.zeros((8, 64)), name="other", min_side=16), "other",
                  "(8, 64)", "16 x 16")
    assert check_image(np.zeros((16, 16)), min_side=16).shape == (16, 16)


def _phantom() -> np.ndarray:
    """A bright half-disc (the breast) on a dark background, chest wall on the left."""
    yy, xx = np.mgrid[:128, :96]
    breast = (yy - 64) ** 2 + xx ** 2 < 60 ** 2
    noise = np.random.default_rng(0).integers(0, 40, breast.shape)
    return (breast * 180 + noise + 20 * ((yy + xx) % 7 == 0) * breast).astype(np.uint8)


ENTRY_POINTS = {
    "density.percent_density": lambda px: np.float64(density.percent_density(px)),
    "segmentation.breast_mask": lambda px: segmentation.breast_mask(px),
    "filters.apply_method": lambda px: filters.apply_method("M2", px),
    "preprocess.preprocess_image": lambda px: preprocess_image(px, (64, 48)).image.numpy(),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_image_entry_points_squeeze_one_channel(entry):
    run = ENTRY_POINTS[entry]
    img = _phantom()
    assert np.array_equal(run(img[..., None]), run(img))


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("kind, words", [
    ("nan", ["pixels", "NaN"]),
    ("inf", ["pixels", "infinite"]),
    ("colour", ["pixels", "shape (128, 96, 3)", "2-D"]),
])
def test_image_entry_points_refuse_the_same_inputs(entry, kind, words):
    img = _phantom().astype(np.float64)
    bad = {"nan": np.where(img > 150, np.nan, img), "inf": np.where(img > 150, np.inf, img),
           "colour": np.repeat(img[..., None], 3, axis=-1)}[kind]
    raises_naming(lambda: ENTRY_POINTS[entry](bad), *words)


@pytest.mark.parametrize("entry", ["segmentation.breast_mask", "preprocess.preprocess_image"])
def test_bool_pixels_are_read_as_zero_one(entry):
    """A mask drawn as an image is still an image: the same result as its 0/1 uint8 copy."""
    run = ENTRY_POINTS[entry]
    mask = _phantom() > 100
    assert np.array_equal(run(mask), run(mask.astype(np.uint8)))


def test_filters_keep_a_bool_image_on_the_unit_scale():
    mask = _phantom() > 100
    assert np.array_equal(filters.apply_method("original", mask), mask.astype(np.float32))
    assert np.array_equal(filters.apply_method("M2", mask),
                          filters.apply_method("M2", mask.astype(np.uint8)))


def test_density_refuses_bool_pixels_and_points_to_mask():
    """Density is a share of pixels above a fraction of the full intensity scale; a 0/1 array
    has none (the one documented exception to the shared image rule)."""
    raises_naming(lambda: density.percent_density(_phantom() > 100), "pixels", "dtype bool",
                  "mask=")


@pytest.mark.parametrize("entry", ["density.percent_density", "segmentation.breast_mask",
                                   "preprocess.preprocess_image"])
def test_sixteen_pixels_a_side_is_the_least(entry):
    """The callers that segment need 16 x 16 (filters take any size: M3 segments inside)."""
    img = np.zeros((16, 16), np.uint8)
    img[:, :8] = 200
    img[3, 3] = 255
    ENTRY_POINTS[entry](img)
    raises_naming(lambda: ENTRY_POINTS[entry](img[:15]), "pixels", "(15, 16)", "16 x 16")


def test_filters_refuse_negative_integers():
    img = _phantom().astype(np.int16) - 10
    raises_naming(lambda: filters.apply_method("original", img), "pixels", "negative", "min -10")
