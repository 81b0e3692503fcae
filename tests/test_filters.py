"""Filters M1-M7, regions and the pixel AUC, against independent references.

References: scikit-learn's roc_auc_score and a brute-force pair count for the AUC, PyWavelets'
own inverse transform for the subbands, scikit-image calls for the filters, brute-force distances
for the ring, and real mini-MIAS lesions (Info.txt, row = 1023 - Y) with their contralateral
image (odd/even pairs are one woman, SOURCE.md).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pywt
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from sklearn.metrics import roc_auc_score

from core.errors import InputError
from core.image.filters import METHODS, apply_method, params_hash, to_unit, wavelet_subbands
from core.image.regions import (
    HealthyRegion, filter_aucs, healthy_region, pixel_auc, tumour_region,
)
from core.image.segmentation import breast_mask


def brute_auc(t, h):                       # O(n_t * n_h), obviously right
    t, h = np.asarray(t, float)[:, None], np.asarray(h, float)[None, :]
    return ((t > h) + 0.5 * (t == h)).mean()


def sk_auc(t, h):
    t, h = np.ravel(t), np.ravel(h)
    y = np.r_[np.ones(t.size), np.zeros(h.size)]
    return roc_auc_score(y, np.r_[t.astype(np.float64), h.astype(np.float64)])


# --- pixel_auc --------------------------------------------------------------------------------

int_samples = hnp.arrays(np.int32, st.integers(1, 300), elements=st.integers(-5, 12))
float_samples = hnp.arrays(
    np.float64, st.integers(1, 300),
    elements=st.sampled_from([-1.5, 0.0, 0.25, 0.3, 1e-9, 2.0, 7.75]) | st.floats(-3, 3))


@given(int_samples, int_samples)
def test_pixel_auc_matches_sklearn_ints(t, h):
    res = pixel_auc(t, h)
    assert res.auc == pytest.approx(sk_auc(t, h), abs=1e-12)
    assert (res.n_tumour, res.n_healthy) == (t.size, h.size)


@given(float_samples, float_samples)
def test_pixel_auc_matches_sklearn_floats(t, h):
    assert pixel_auc(t, h).auc == pytest.approx(sk_auc(t, h), abs=1e-12)
    assert pixel_auc(t.astype(np.float32), h.astype(np.float32)).auc == pytest.approx(
        brute_auc(t.astype(np.float32), h.astype(np.float32)), abs=1e-12)


@given(int_samples, int_samples)
def test_pixel_auc_invariants(t, h):
    auc = pixel_auc(t, h).auc
    # a strictly increasing transform keeps the AUC (ranks only)
    assert pixel_auc(np.exp(t / 4.0) + 3 * t, np.exp(h / 4.0) + 3 * h).auc == pytest.approx(
        auc, abs=1e-12)
    # swapping the regions gives 1 - AUC; a sample against itself gives 0.5
    assert pixel_auc(h, t).auc == pytest.approx(1 - auc, abs=1e-12)
    assert pixel_auc(t, t.copy()).auc == 0.5
    # integer path (bincount) and sort path agree: a huge level range forces the sort path
    far = np.r_[t.astype(np.int64), 10**12]
    assert pixel_auc(far, h).auc == pytest.approx(sk_auc(far, h), abs=1e-12)


def test_pixel_auc_identical_distributions_half():
    rng = np.random.default_rng(1)
    values = rng.integers(0, 4096, 5000).astype(np.uint16)
    assert pixel_auc(values, rng.permutation(values)).auc == 0.5
    assert pixel_auc(values.astype(np.float32), values[::-1].astype(np.float32)).auc == 0.5


def test_pixel_auc_hand_case_and_edges():
    # pairs: (3>1) (3>2) (3=3 half) (5>1) (5>2) (5>3) -> 5.5 / 6
    assert pixel_auc([3, 5], [1, 2, 3]).auc == pytest.approx(5.5 / 6)
    assert pixel_auc(np.array([True, True]), np.array([False, True])).auc == 0.75
    res = pixel_auc([], [1, 2])
    assert np.isnan(res.auc) and res.n_tumour == 0 and res.n_healthy == 2
    with pytest.raises(InputError, match="NaN"):
        pixel_auc([1.0, np.nan], [0.5])


# --- methods ----------------------------------------------------------------------------------


def test_registry_holds_original_and_m1_to_m7():
    assert list(METHODS) == ["original"] + [f"M{i}" for i in range(1, 8)]
    for code, m in METHODS.items():
        assert m.code == code and m.name and m.summary
        with pytest.raises(TypeError):
            m.defaults["x"] = 1                        # read-only defaults


@pytest.fixture(scope="module")
def small_image():
    """A 12-bit MIAS-like test image: smooth background, a bright disc, noise."""
    rng = np.random.default_rng(0)
    rr, cc = np.mgrid[:256, :192]
    img = 1200 + 800 * np.exp(-((rr - 128) ** 2 + (cc - 60) ** 2) / 3000.0)
    img = img + 900 * (((rr - 100) ** 2 + (cc - 90) ** 2) < 15**2) + rng.normal(0, 40, rr.shape)
    img[:, 150:] = 30                                    # air
    return np.clip(img, 0, 4095).astype(np.uint16)


@pytest.mark.parametrize("code", list(METHODS))
@pytest.mark.parametrize("kind", ["uint16", "uint8", "float"])
def test_every_method_any_dtype(code, kind, small_image):
    pixels = {"uint16": small_image, "uint8": (small_image // 16).astype(np.uint8),
              "float": small_image / 4095.0}[kind]
    out = apply_method(code, pixels)
    assert out.shape == pixels.shape
    assert out.dtype == (bool if code in ("M3", "M4") else np.float32)
    assert np.isfinite(out).all()


def test_to_unit_is_strictly_increasing_and_shared():
    levels = np.arange(4096, dtype=np.uint16).reshape(64, 64)
    u = to_unit(levels)
    assert u.dtype == np.float32 and u.min() == 0 and u.max() == 1
    assert (np.diff(u.ravel()) > 0).all()
    assert to_unit(levels[:8], bit_depth=12).max() == pytest.approx(511 / 4095)
    with pytest.raises(InputError, match="bit_depth"):
        to_unit(levels, bit_depth=8)


def test_methods_against_library_calls(small_image):
    from skimage import filters as skf
    u = to_unit(small_image)
    assert (apply_method("M3", small_image, method="manual", threshold=0.4) == (u > 0.4)).all()
    assert np.allclose(apply_method("M5", small_image, operator="prewitt"), skf.prewitt(u))
    assert np.allclose(apply_method("M6", small_image, amount=0.0), u, atol=1e-6)
    # M7 with unit gains is the identity (perfect reconstruction)
    assert np.allclose(apply_method("M7", small_image, detail_gain=1.0), u, atol=1e-5)
    # M2 on integers: one bin per level, strictly increasing on the levels present
    eq = apply_method("M2", small_image)
    order = np.argsort(small_image.ravel(), kind="stable")
    assert (np.diff(eq.ravel()[order].astype(np.float64)) >= 0).all()
    assert len(np.unique(eq)) == len(np.unique(small_image))


def test_params_hash_stable_and_sensitive():
    h = params_hash("M6")
    assert h == params_hash("M6", {"radius": 5.0}) == params_hash("M6", {"radius": 5})
    assert h != params_hash("M6", {"radius": 3.0})
    assert params_hash("M7", {"detail_levels": [3, 2][::-1]}) == params_hash("M7")
    assert len(h) == 12 and h != params_hash("M5")
    assert h == "9eb628dc5a2e", "a changed hash orphans stored results: bump _IMPL_VERSION"


@pytest.mark.parametrize("code, params, match", [
    ("M9", {}, "filter code"),
    ("M6", {"sigma": 2}, "no parameter sigma"),
    ("M1", {"clip_limit": 0}, "clip_limit"),
    ("M3", {"method": "manual"}, "threshold"),
    ("M4", {"block_size": 50}, "odd"),
    ("M5", {"operator": "canny"}, "sobel"),
    ("M7", {"wavelet": "nope"}, "wavelet"),
    ("M7", {"level": 3, "detail_levels": (4,)}, "detail_levels"),
])
def test_bad_params(code, params, match, small_image):
    with pytest.raises(InputError, match=match):
        apply_method(code, small_image, **params)


def test_wavelet_subbands_reconstruct(small_image):
    bands = wavelet_subbands(small_image, "db2", 2)
    assert set(bands) == {"LL", "LH1", "HL1", "HH1", "LH2", "HL2", "HH2"}
    coeffs = [bands["LL"], (bands["LH2"], bands["HL2"], bands["HH2"]),
              (bands["LH1"], bands["HL1"], bands["HH1"])]
    rec = pywt.waverec2(coeffs, "db2")[:256, :192]
    assert np.allclose(rec, to_unit(small_image), atol=1e-5)


# --- regions ----------------------------------------------------------------------------------


def disc(shape, row, col, radius):
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    return (rr - row) ** 2 + (cc - col) ** 2 <= radius**2


def test_ring_is_within_width_outside_tumour_inside_breast(small_image):
    tumour = disc(small_image.shape, 100, 90, 15)
    region = healthy_region(tumour, small_image, view="CC")
    assert (region.source_image, region.kind) == ("same", "ring")
    ring = region.mask
    # brute force: distance of each ring pixel to the nearest tumour pixel
    tr, tc = np.nonzero(tumour)
    rr, cc = np.nonzero(ring)
    d = np.sqrt(((rr[:, None] - tr[None]) ** 2 + (cc[:, None] - tc[None]) ** 2).min(axis=1))
    assert d.max() <= 20 and d.min() >= 1
    assert not (ring & tumour).any()
    assert not (ring & ~breast_mask(small_image)).any()
    # 4 mm at 0.2 mm/pixel = 20 pixels
    same = healthy_region(tumour, small_image, view="CC", ring_mm=4.0, spacing_mm=0.2)
    assert (same.mask == ring).all()
    with pytest.raises(InputError, match="spacing_mm"):
        healthy_region(tumour, small_image, view="CC", ring_mm=4.0)


def test_mirror_keeps_distance_from_chest_wall(small_image):
    # the other breast: mirrored and padded by 25 columns on its chest-wall side
    other = np.full((256, 217), 30, np.uint16)
    other[:, :192] = small_image[:, ::-1]
    other = np.roll(other, -25, axis=1)[:, :192]          # chest wall now at column 191 - 25
    other = np.pad(other, ((0, 0), (0, 25)), constant_values=30)
    tumour = disc(small_image.shape, 100, 90, 15)
    region = healthy_region(tumour, small_image, view="CC", other_image=other)
    assert (region.source_image, region.kind) == ("contralateral", "mirrored")
    wall = np.flatnonzero(breast_mask(small_image).any(axis=0))[0]
    other_wall = np.flatnonzero(breast_mask(other).any(axis=0))[-1]
    expected = disc(other.shape, 100, other_wall - (90 - wall), 15)
    assert (region.mask == expected).all()


def test_tumour_region_checks():
    with pytest.raises(InputError, match="empty"):
        tumour_region(np.zeros((4, 4)))
    with pytest.raises(InputError, match="resize"):
        tumour_region(np.ones((4, 4)), (8, 8))


# --- real lesions -----------------------------------------------------------------------------

# (refnum, X, Y, radius) from Info.txt: malignant masses (CIRC, SPIC, MISC).
LESIONS = [(23, 538, 681, 29), (28, 338, 314, 56), (141, 470, 759, 29), (178, 492, 600, 70)]


def load(mias_dir: Path, refnum: int) -> np.ndarray:
    return np.asarray(Image.open(mias_dir / f"mdb{refnum:03d}.png"))


@pytest.mark.parametrize("refnum, x, y, radius", LESIONS)
def test_mias_lesions_all_methods(mias_dir, refnum, x, y, radius):
    img = load(mias_dir, refnum)
    other = load(mias_dir, refnum + 1 if refnum % 2 else refnum - 1)
    tumour = disc(img.shape, 1023 - y, x, radius)
    ring = healthy_region(tumour, img, view="MLO")
    mirrored = healthy_region(tumour, img, view="MLO", other_image=other)
    assert mirrored.kind == "mirrored" and ring.kind == "ring"
    by_ring = filter_aucs(img, tumour, ring)
    by_mirror = filter_aucs(img, tumour, mirrored, other_pixels=other)
    for table in (by_ring, by_mirror):
        assert list(table.columns) == ["method", "params_hash", "auc", "n_tumour", "n_healthy",
                                       "healthy_region"]
        assert list(table.method) == list(METHODS)
        assert np.isfinite(table.auc).all() and ((table.auc >= 0) & (table.auc <= 1)).all()
    # Global HE maps each grey level through the image's cumulative histogram: monotone, so
    # within one image the AUC is the original's up to levels it merges (none for 8-bit input,
    # where scikit-image bins each level). Against the other breast it need not be: each image
    # has its own histogram, so that case is not asserted.
    auc = by_ring.set_index("method").auc
    assert auc["M2"] == pytest.approx(auc["original"], abs=0.01)
    # each row equals scikit-learn on the same region pixels
    for code in ("original", "M1", "M4", "M7"):
        out, out_other = apply_method(code, img), apply_method(code, other)
        row = by_mirror.set_index("method").loc[code]
        assert row.auc == pytest.approx(
            sk_auc(out[tumour], out_other[mirrored.mask]), abs=1e-12)
        assert row.n_healthy == mirrored.mask.sum()


@pytest.mark.parametrize("row, col, radius", [(341, 538, 29), (3, 1019, 9), (517, 777, 13)])
def test_filter_aucs_crop_gives_whole_image_values(mias_dir, row, col, radius):
    """Local methods on the regions' box plus support equal the whole-image result, also at the
    image border and at offsets off the wavelet's dyadic grid."""
    img, other = load(mias_dir, 23), load(mias_dir, 24)
    tumour = disc(img.shape, row, col, radius)
    for other_image in (None, other):
        healthy = healthy_region(tumour, img, view="CC", other_image=other_image)
        fast = filter_aucs(img, tumour, healthy, other_pixels=other_image,
                           methods=("original", "M4", "M5", "M6", "M7"))
        slow = filter_aucs(img, tumour, healthy, other_pixels=other_image,
                           methods=("original", "M4", "M5", "M6", "M7"), crop=False)
        pd.testing.assert_frame_equal(fast, slow, check_exact=False, atol=1e-12, rtol=0)


def test_filter_aucs_checks(mias_dir):
    img = load(mias_dir, 23)
    tumour = disc(img.shape, 1023 - 681, 538, 29)
    contra = HealthyRegion(np.zeros_like(tumour), "contralateral", "mirrored")
    with pytest.raises(InputError, match="other_pixels"):
        filter_aucs(img, tumour, contra)
    ring = healthy_region(tumour, img, view="MLO")
    with pytest.raises(InputError, match="params"):
        filter_aucs(img, tumour, ring, methods=("M1",), params={"M6": {}})
    table = filter_aucs(img, tumour, ring, methods=("M6",), params={"M6": {"radius": 2}})
    assert table.params_hash[0] == params_hash("M6", {"radius": 2.0})
    assert isinstance(table, pd.DataFrame) and len(table) == 1
