"""The official NYU preprocessing (models.inference.windows) against hand-built cases: crop box
and buffers, the best centre against a brute-force search, padding rules per view, and the
draw sequence of numpy's legacy RandomState(0)."""
from __future__ import annotations

import numpy as np
import pytest

from core.errors import InputError
from core.saliency import saliency_to_original
from models.inference.windows import (Crop, PreparedView, best_centre, breast_points,
                                      crop_to_breast, cut_window, draw_windows, face_right,
                                      prepare_view, standardise, window_geometry)


def breast_image(points: str = "right") -> np.ndarray:
    """A 60 x 50 image: a 30 x 20 breast block against the chest wall plus a one-pixel label
    line elsewhere (erosion removes it)."""
    img = np.zeros((60, 50), np.uint16)
    img[15:45, 0:20] = 500          # breast, chest wall at column 0, pointing right
    img[5, 30:48] = 900             # a thin label line: gone after erosion
    return img if points == "right" else img[:, ::-1].copy()


def test_breast_points_follows_laterality_and_stored_flip():
    assert breast_points("L") == "right" and breast_points("R") == "left"
    assert breast_points("L", horizontal_flip=True) == "left"
    with pytest.raises(InputError, match="laterality"):
        breast_points("X")


def test_crop_box_buffers_the_nipple_side_only():
    crop = crop_to_breast(breast_image("right"), "right", iterations=2, buffer=3)
    # breast rows 15..44, cols 0..19; buffer 3 above, below and right (nipple side) only
    assert crop.box == (12, 48, 0, 23)
    assert crop.distance_from_starting_side == 0
    # erosion also eats in from the image border, and dilation with scipy's cross grows a
    # diamond back: the block's corners come back cut by 2 pixels. Bottommost: the last row
    # (44) holds columns 2..17; rightmost: column 19 holds rows 17..42, searched from the
    # lower two thirds of the 36-row crop (row 12 on), all in the crop frame
    assert crop.bottommost == (44 - 12, (2, 17))
    assert crop.rightmost == ((max(17 - 12, int(36 / 3)), 42 - 12), 19)


def test_crop_of_a_left_pointing_breast_is_mirrored():
    right = crop_to_breast(breast_image("right"), "right", iterations=2, buffer=3)
    left = crop_to_breast(breast_image("left"), "left", iterations=2, buffer=3)
    assert left.box == (12, 48, 50 - 23, 50)       # buffer on the left (nipple) side
    # the official mirror of a column c is width - c (not width - 1 - c): one pixel off
    assert left.rightmost[1] == 23 - (23 - 1 - 19)
    assert left.bottommost[0] == right.bottommost[0]
    cropped = breast_image("left")[12:48, 27:50]
    assert np.array_equal(face_right(cropped, "left"), breast_image("right")[12:48, 0:23])


def test_blank_image_is_one_clear_error():
    with pytest.raises(InputError, match="no breast"):
        crop_to_breast(np.zeros((20, 20)), "right", iterations=2)


def brute_centre(image, view, window, crop):
    """The official search restated as loops: every candidate centre, its window clipped to
    the image (shifted inwards at the top/left), the most breast pixels, ties nearest the
    image centre."""
    h, w = image.shape
    wh, ww = window
    com = np.array([h // 2, w // 2])
    ys = range(wh // 2, h - (wh - wh // 2) + 1) if wh // 2 < h - (wh - wh // 2) else [com[0]]
    if view == "CC":
        cands = [(y, crop.rightmost[1] - ww // 2 - 1) for y in ys]
    else:
        cands = [(crop.bottommost[0] - wh // 2 - 1, crop.rightmost[1] - ww // 2 - 1)]
    best, best_sum = None, -1
    for y, x in cands:
        t, l = y - wh // 2, x - ww // 2
        b, r = y + wh - wh // 2 + max(0, -t), x + ww - ww // 2 + max(0, -l)
        s = (image[max(t, 0):min(b, h), max(l, 0):min(r, w)] > 0).sum()
        d = (y - com[0]) ** 2 + (x - com[1]) ** 2
        if s > best_sum or (s == best_sum and d < best[1]):
            best, best_sum = ((y, x), d), s
    return best[0]


@pytest.mark.parametrize("seed", range(5))
def test_cc_centre_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    img = np.zeros((80, 40), np.float32)
    img[rng.integers(0, 20):rng.integers(50, 80), : rng.integers(15, 40)] = 1
    img[rng.integers(0, 80, 30), rng.integers(0, 40, 30)] = 1   # speckle makes ties rare
    crop = Crop((0, 80, 0, 40), ((30, 70), int(rng.integers(25, 40))), (79, (0, 10)), 0)
    assert best_centre(img, "CC", (30, 20), crop) == brute_centre(img, "CC", (30, 20), crop)


def test_cc_centre_ties_go_to_the_image_centre():
    img = np.ones((50, 30), np.float32)            # every window holds the same breast area
    crop = Crop((0, 50, 0, 30), ((20, 40), 29), (49, (0, 29)), 0)
    assert best_centre(img, "CC", (20, 10), crop) == (25, 29 - 5 - 1)


def test_mlo_centre_sits_on_the_bottom_right_corner():
    img = np.zeros((50, 30), np.float32)
    img[0:40, 0:25] = 1
    crop = Crop((0, 50, 0, 30), ((20, 39), 25), (45, (0, 20)), 0)
    # the bottommost row is lowered to the last non-empty row of the window's column band (39)
    assert best_centre(img, "MLO", (20, 10), crop) == (39 - 10 - 1, 25 - 5 - 1)


def test_exact_window_is_a_slice_standardised():
    img = np.arange(40 * 30, dtype=np.float32).reshape(40, 30)
    win = cut_window(img, "CC", (20, 15), (10, 8), np.random.RandomState(0))
    assert win.borders == (15, 25, 11, 19) and win.padding == (0, 0, 0)
    assert np.array_equal(win.image, standardise(img[15:25, 11:19]))
    assert win.image.dtype == np.float32
    assert abs(float(win.image.mean())) < 1e-5 and abs(float(win.image.std()) - 1) < 1e-5


def test_padding_rules_cc_both_ends_mlo_bottom_only():
    img = np.ones((6, 5), np.float32)
    img[:, 0] = 2
    cc = cut_window(img, "CC", (3, 2), (10, 8), np.random.RandomState(0))
    assert cc.padding == (2, 2, 3)                  # (10 - 6) split 2 / 2; 3 columns right
    mlo = cut_window(img, "MLO", (3, 2), (10, 8), np.random.RandomState(0))
    assert mlo.padding == (0, 4, 3)
    expected_cc = np.zeros((10, 8), np.float32)
    expected_cc[2:8, :5] = img
    assert np.allclose(cc.image, standardise(expected_cc))
    expected_mlo = np.zeros((10, 8), np.float32)
    expected_mlo[:6, :5] = img
    assert np.allclose(mlo.image, standardise(expected_mlo))


def test_noisy_window_follows_randomstate_draws_and_bicubic_resize():
    cv2 = pytest.importorskip("cv2")
    img = np.random.default_rng(1).random((400, 300)).astype(np.float32)
    window = (100, 50)
    win = cut_window(img, "CC", (200, 150), window, np.random.RandomState(0),
                     max_crop_noise=(20, 20), max_crop_size_noise=10)
    # by hand: two uniforms shift the window, four change its size (vertical 10, horizontal
    # round(10 * 50 / 100) = 5), in this order from RandomState(0)
    rng = np.random.RandomState(0)
    shift = np.round(np.array([20, 20]) * rng.uniform(-1, 1, 2))
    size = np.round(np.array([10, 10, 5, 5]) * rng.uniform(-1, 1, 4)).astype(int)
    top, bottom = 150 + int(shift[0]) + size[0], 250 + int(shift[0]) + size[1]
    left, right = 125 + int(shift[1]) + size[2], 175 + int(shift[1]) + size[3]
    assert win.borders == (top, bottom, left, right)
    expected = cv2.resize(img[top:bottom, left:right], (50, 100), interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(win.image, standardise(expected))


def test_draws_follow_the_official_view_order_with_one_generator():
    img = np.random.default_rng(2).random((300, 200)).astype(np.float32)
    crop = Crop((0, 300, 0, 200), ((100, 200), 150), (299, (0, 150)), 0)
    views = {v: PreparedView(img, (150, 100), crop, "right") for v in ("L-CC", "R-CC", "L-MLO")}
    windows = {"CC": (100, 80), "MLO": (120, 60)}
    got = draw_windows(views, windows, np.random.RandomState(0), 2)
    rng = np.random.RandomState(0)
    for draw in range(2):
        for name in ("L-CC", "R-CC", "L-MLO"):     # R-MLO missing: skipped, draws nothing
            rng.randint(low=0, high=1)
            angle = name.split("-")[1]
            want = cut_window(img, angle, (150, 100), windows[angle], rng,
                              max_crop_noise=(100, 100), max_crop_size_noise=100)
            assert got[name][draw].borders == want.borders
    exact = draw_windows(views, windows, np.random.RandomState(0), 0)
    assert [len(v) for v in exact.values()] == [1, 1, 1]
    assert exact["L-CC"][0].borders == (100, 200, 60, 140)


@pytest.mark.parametrize("laterality", ["L", "R"])
def test_window_geometry_maps_the_window_back_onto_the_stored_image(laterality):
    """A window that is zero-padded (taller than the crop) and mirrored for R: a map of ones
    over the input must land exactly on the window's pixels of the stored image."""
    img = np.zeros((60, 50), np.float32)
    img[20:40, :30] = np.arange(1, 31, dtype=np.float32)   # breast at the chest wall (left)
    if laterality == "R":
        img = img[:, ::-1].copy()
    window = (30, 16)
    prep = prepare_view(img, laterality, "CC", window, iterations=1, buffer=2)
    win = cut_window(prep.image, "CC", prep.centre, window, np.random.RandomState(0))
    geo = window_geometry(prep, win, img.shape)
    ones = saliency_to_original(np.ones(window, np.float32), geo, mode="nearest")
    # by hand: the crop is rows 18..41 (24 rows < 30: padded 3 above and below, so the window
    # spans stored rows 15..44), its columns end one pixel short of the breast's outer column
    # (the official off-by-one)
    box = prep.crop.box
    assert box[:2] == (18, 42) and win.padding[:2] == (3, 3)
    rows = np.flatnonzero(ones.any(axis=1))
    assert (rows[0], rows[-1]) == (15, 44)
    cols = np.flatnonzero(ones.any(axis=0))
    # L: the breast's outer column is 29; the centre sits at 29 - 8 - 1, so the window's last
    # column is 27. R (mirrored): the official mirror gives outer column 30 in the right-facing
    # crop (32 wide, stored columns 18..49), window columns 13..28 there = stored 36..21
    assert (cols[0], cols[-1]) == ((12, 27) if laterality == "L" else (21, 36))
    # the cut window is the stored pixels under it, mirrored for R
    under = img[15:45][:, cols[0]:cols[-1] + 1]       # rows 15-17 and 42-44 are background
    under = under if laterality == "L" else under[:, ::-1]
    assert np.allclose(win.image, standardise(under))
