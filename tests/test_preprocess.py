"""Preprocessing: crop / flip / resize / standardise and the maps back to original pixels,
checked on synthetic arrays whose geometry is known by construction."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import InputError
from models.inference.preprocess import Preprocessed, boxes_to_original, preprocess_image, saliency_to_original

SHAPE = (700, 500)
BREAST_BOX = (100, 40, 512, 320)           # row0, col0, height, width (original pixels)
LESION = (300, 200, 40, 60)                # row, col, height, width, inside the breast box


def _phantom(*, chest_wall: str = "left", seed: int = 0, dtype=np.uint16) -> tuple[np.ndarray, np.ndarray]:
    """12-bit image: dark noisy air, a rectangular 'breast' with a brighter chest-wall side and a
    bright lesion box; returns (pixels, breast mask). chest_wall='right' mirrors everything."""
    rng = np.random.default_rng(seed)
    img = rng.normal(100, 10, SHAPE)
    r0, c0, h, w = BREAST_BOX
    ramp = np.linspace(1800, 1200, w)[None, :]          # denser at the chest wall
    img[r0:r0 + h, c0:c0 + w] = ramp + rng.normal(0, 20, (h, w))
    lr, lc, lh, lw = LESION
    img[lr:lr + lh, lc:lc + lw] = 3500
    mask = np.zeros(SHAPE, bool)
    mask[r0:r0 + h, c0:c0 + w] = True
    if chest_wall == "right":
        img, mask = img[:, ::-1], mask[:, ::-1]
    return np.clip(img, 0, 4095).astype(dtype), np.ascontiguousarray(mask)


def _mirror_box(box):
    r, c, h, w = box
    return (r, SHAPE[1] - c - w, h, w)


def _half_max_box(img: np.ndarray) -> tuple[float, float, float, float]:
    """Bounding box (row, col, height, width; pixel edges) of the pixels above half the max."""
    hot = img > 0.5 * (img.max() + np.median(img))
    rows, cols = np.flatnonzero(hot.any(1)), np.flatnonzero(hot.any(0))
    return rows[0], cols[0], rows[-1] + 1 - rows[0], cols[-1] + 1 - cols[0]


@pytest.mark.parametrize("side", ["left", "right"])
def test_geometry_crop_flip_scale(side):
    pixels, mask = _phantom(chest_wall=side)
    pre = preprocess_image(pixels, (256, 160), mask=mask)
    expected_box = BREAST_BOX if side == "left" else _mirror_box(BREAST_BOX)
    assert pre.crop_box == expected_box
    assert pre.flipped is (side == "right") and pre.chest_wall == side
    assert pre.scale == (0.5, 0.5) and pre.input_shape == (256, 160)
    assert pre.original_shape == SHAPE
    img = pre.image[0].numpy()
    assert img[:, :20].mean() > img[:, -20:].mean()    # canonical: chest wall (denser) at column 0


@pytest.mark.parametrize("side", ["left", "right"])
def test_lesion_box_round_trip_within_a_pixel(side):
    """The lesion found in the model input maps back onto where it was drawn (exact 2x scale)."""
    pixels, mask = _phantom(chest_wall=side)
    pre = preprocess_image(pixels, (256, 160), mask=mask)
    r, c, h, w = _half_max_box(pre.image[0].numpy())
    assert h == pytest.approx(LESION[2] / 2, abs=1) and w == pytest.approx(LESION[3] / 2, abs=1)
    # treat the found box as one 'patch' of its own size at its upper-left corner
    back = boxes_to_original(np.array([[r, c]]), (h, w), pre)[0]
    truth = LESION if side == "left" else _mirror_box(LESION)
    np.testing.assert_allclose(back, truth, atol=1.0)


def test_lesion_centroid_round_trip_non_integer_scale():
    pixels, mask = _phantom(chest_wall="right")
    pre = preprocess_image(pixels, (300, 230), mask=mask)      # scales 0.586, 0.719
    img = pre.image[0].numpy()
    hot = img > 0.5 * (img.max() + np.median(img))
    rows, cols = np.nonzero(hot)
    cy, cx = rows.mean() + 0.5, cols.mean() + 0.5             # pixel-edge coordinates
    # a 1 x 1 patch centred on the centroid: its centre maps like the point itself
    back = boxes_to_original(np.array([[cy - 0.5, cx - 0.5]]), (1, 1), pre)[0]
    r, c, h, w = _mirror_box(LESION)
    np.testing.assert_allclose(back[:2] + back[2:] / 2, (r + h / 2, c + w / 2), atol=1.0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_saliency_round_trip(side):
    """A saliency grid that is hot exactly over the lesion's cells comes back over the lesion."""
    pixels, mask = _phantom(chest_wall=side)
    pre = preprocess_image(pixels, (256, 160), mask=mask)
    # grid of 4x4-pixel cells over the input; lesion at input rows 100..120, cols 80..110
    grid = np.zeros((2, 64, 40), np.float32)
    grid[1, 25:30, 20:27] = 1.0                                   # input px rows 100..120, cols 80..108
    full = saliency_to_original(grid, pre, mode="nearest")
    assert full.shape == (2, *SHAPE) and full.dtype == np.float32
    assert not full[0].any()
    r0, c0, h, w = pre.crop_box
    outside = np.ones(SHAPE, bool)
    outside[r0:r0 + h, c0:c0 + w] = False
    assert not full[1][outside].any()                            # zero outside the crop box
    expected = (300, 200, 40, 56)                                 # 4-px cells -> 8 original px
    if side == "right":
        expected = _mirror_box(expected)
    np.testing.assert_allclose(_half_max_box(full[1]), expected, atol=1.0)
    smooth = saliency_to_original(torch.from_numpy(grid[1]), pre)  # bilinear, 2-D in, 2-D out
    assert smooth.shape == SHAPE
    np.testing.assert_allclose(_half_max_box(smooth), expected, atol=1.0)


def test_boxes_identity_geometry():
    pixels, _ = _phantom()
    pre = preprocess_image(pixels, SHAPE, crop_background=False, chest_wall="left")
    assert pre.crop_box == (0, 0, *SHAPE) and pre.scale == (1.0, 1.0)
    np.testing.assert_array_equal(pre.boxes_to_original(torch.tensor([[3, 4], [10, 20]]), (5, 6)),
                                  [[3, 4, 5, 6], [10, 20, 5, 6]])
    # identity geometry: the standardised image is the original's standardisation
    x = pixels.astype(np.float64)
    np.testing.assert_allclose(pre.image[0].numpy(), (x - x.mean()) / x.std(), atol=1e-5)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64])
def test_standardised_float32_any_dtype(dtype):
    pixels, mask = _phantom(dtype=np.uint16)
    pixels = (pixels // 16).astype(dtype) if dtype == np.uint8 else pixels.astype(dtype)
    pre = preprocess_image(pixels, (128, 96), mask=mask)
    assert isinstance(pre, Preprocessed)
    assert pre.image.dtype == torch.float32 and pre.image.shape == (1, 128, 96)
    assert abs(float(pre.image.double().mean())) < 1e-5
    assert float(pre.image.double().std(correction=0)) == pytest.approx(1.0, abs=1e-5)


def test_constant_image_gives_zeros():
    pre = preprocess_image(np.full((64, 48), 7, np.uint16), (32, 24), chest_wall="left",
                           crop_background=False)
    assert torch.equal(pre.image, torch.zeros(1, 32, 24))


def test_auto_mask_and_side_detection():
    """With core.image.segmentation's mask: the box hugs the breast and the side is found."""
    for side in ("left", "right"):
        pixels, _ = _phantom(chest_wall=side, seed=1)
        pre = preprocess_image(pixels, (256, 160))
        truth = BREAST_BOX if side == "left" else _mirror_box(BREAST_BOX)
        np.testing.assert_allclose(pre.crop_box, truth, atol=6)   # mask built on a ~256-px copy
        assert pre.chest_wall == side and pre.flipped is (side == "right")


def test_laterality_override():
    pixels, mask = _phantom(chest_wall="left")
    forced = preprocess_image(pixels, (256, 160), mask=mask, laterality="R")
    assert forced.flipped and forced.chest_wall == "right"
    assert not preprocess_image(pixels, (256, 160), mask=mask, laterality="L").flipped
    both = preprocess_image(pixels, (256, 160), mask=mask, chest_wall="right", laterality="R")
    assert both.flipped
    with pytest.raises(InputError, match="contradicts"):
        preprocess_image(pixels, (256, 160), mask=mask, chest_wall="left", laterality="R")
    with pytest.raises(InputError, match="laterality"):
        preprocess_image(pixels, (256, 160), mask=mask, laterality="X")


def test_input_errors():
    with pytest.raises(InputError, match="2-D"):
        preprocess_image(np.zeros((2, 64, 64)), (32, 32))
    with pytest.raises(InputError, match="NaN"):
        bad = np.ones((64, 64))
        bad[3, 3] = np.nan
        preprocess_image(bad, (32, 32))
    with pytest.raises(InputError, match="16 x 16"):
        preprocess_image(np.ones((8, 64)), (32, 32))
    with pytest.raises(InputError, match="mask has shape"):
        preprocess_image(np.ones((64, 64)), (32, 32), mask=np.ones((32, 32), bool))
    with pytest.raises(InputError, match="positive integers"):
        preprocess_image(np.ones((64, 64)), (0, 32))
    pre = preprocess_image(np.ones((64, 64)), (32, 32), chest_wall="left", crop_background=False)
    with pytest.raises(InputError, match="saliency has shape"):
        saliency_to_original(np.zeros(5), pre)
