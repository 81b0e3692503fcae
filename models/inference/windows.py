"""The official NYU preprocessing: crop to the breast, find the best window centre, cut the
window (with the official augmentation draws), standardise.

Why a port: GLAM and the NYU view-wise models were trained on windows cut this way (nyukat's
``crop_mammogram``, ``get_optimal_centers`` and ``augmentations``, shared by GMIC, GLAM and
breast_cancer_classifier); their scores are only comparable with the papers' when every step
matches: the erosion/dilation crop with its one-sided buffer, the best centre constrained to the
rightmost (CC) or bottom-rightmost (MLO) breast pixel, zero padding only where the official code
pads, OpenCV's bicubic resize of a noisy window, and the draws of numpy's legacy ``RandomState``
in the official order. Learned from the official code (AGPL-3.0); written here, nothing copied.

Steps, each a pure function of numpy arrays:

1. `crop_to_breast` (original image, the side the breast points to) -> `Crop`: the box and the
   rightmost / bottommost breast pixels, in the cropped, flipped frame.
2. `face_right`: mirror the cropped image so every breast points right (chest wall at column 0).
3. `best_centre` -> (row, col) of the window centre for the model's window size.
4. `cut_window` -> the standardised float32 window (and the auxiliary channels, e.g. heatmaps,
   cut with it) plus its borders; ``rng`` draws the official noise.
5. `draw_windows`: an exam's four views for N draws, in the official draw order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from core.errors import InputError
from core.saliency import SaliencyGeometry

__all__ = ["NYU_VIEWS", "WINDOWS", "Crop", "PreparedView", "Window", "best_centre",
           "breast_points", "crop_to_breast", "cut_window", "draw_windows", "face_right",
           "prepare_view", "standardise", "window_geometry"]

NYU_VIEWS = ("L-CC", "R-CC", "L-MLO", "R-MLO")   # the official order: draws follow it
WINDOWS = {                                     # (rows, cols) of each model's input window
    "glam": {"CC": (2944, 1920), "MLO": (2944, 1920)},
    "nyu": {"CC": (2677, 1942), "MLO": (2974, 1748)},
}
TRAINING_NOISE = {"max_crop_noise": (100, 100), "max_crop_size_noise": 100}  # run_model's


@dataclass(frozen=True)
class Crop:
    """Where the breast is (official ``crop_img_from_largest_connected``).

    box : (top, bottom, left, right), original pixels, bottom/right exclusive.
    rightmost : ((row_first, row_last), col) of the breast's outermost column in the lower
        two thirds, in the cropped image after it faces right.
    bottommost : (row, (col_first, col_last)) of the breast's last row, same frame.
    distance_from_starting_side : empty columns between the chest-wall edge and the breast
        (the official code rejects images where it is not 0; we only record it).
    """

    box: tuple[int, int, int, int]
    rightmost: tuple[tuple[int, int], int]
    bottommost: tuple[int, tuple[int, int]]
    distance_from_starting_side: int


@dataclass(frozen=True)
class Window:
    """One cut window: ``image`` (rows, cols) float32 standardised; ``auxiliary`` (rows, cols, C)
    float32 or None; ``borders`` (top, bottom, left, right) in the padded, right-facing crop;
    ``padding`` (top, bottom, right) zeros added before cutting."""

    image: np.ndarray
    auxiliary: np.ndarray | None
    borders: tuple[int, int, int, int]
    padding: tuple[int, int, int]


def breast_points(laterality: str, *, horizontal_flip: bool = False) -> str:
    """The side the breast points to in the stored image (official ``image_orientation``):
    a left breast points right unless the exam was stored mirrored."""
    if laterality not in ("L", "R"):
        raise InputError(f"laterality is {laterality!r}; pass 'L' or 'R'")
    points_right = (laterality == "L") != horizontal_flip
    return "right" if points_right else "left"


def crop_to_breast(image: np.ndarray, points: str, *, iterations: int = 100,
                   buffer: int = 50, rightmost_from: float = 1 / 3) -> Crop:
    """The breast's box: erode the non-zero mask ``iterations`` times (drops thin lines and
    labels), keep the largest component, dilate it back, add ``buffer`` pixels above, below
    and on the nipple side only.

    image : (rows, cols) array; zero is background. points : 'left' or 'right' (`breast_points`).
    Raises InputError when nothing survives the erosion (the official run skips such images).
    """
    if points not in ("left", "right"):
        raise InputError(f"points is {points!r}; pass 'left' or 'right'")
    if image.ndim != 2:
        raise InputError(f"image has shape {image.shape}; pass a 2-D grey image")
    mask = image > 0
    if iterations:
        mask = ndimage.binary_erosion(mask, iterations=iterations)
    labels, n = ndimage.label(mask)
    if n == 0:
        raise InputError(f"no breast left after {iterations} erosions of the non-zero pixels; "
                         "the image is blank or its background is not zero")
    sizes = np.bincount(labels.ravel())[1:]
    largest = labels == (int(np.argmax(sizes)) + 1)     # the first of equal largest, as idxmax
    if iterations:
        largest = ndimage.binary_dilation(largest, iterations=iterations)
    rows, cols = np.flatnonzero(largest.any(axis=1)), np.flatnonzero(largest.any(axis=0))
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    left, right = int(cols[0]), int(cols[-1]) + 1
    bottom_row = bottom - 1
    bottom_cols = np.flatnonzero(largest[bottom_row])
    height, width = image.shape
    top -= min(top, buffer)
    bottom += min(height - bottom, buffer)
    distance = width - right if points == "left" else left
    if points == "left":
        left -= min(left, buffer)
    else:
        right += min(width - right, buffer)

    bottom_row -= top
    if points == "left":   # in the mirrored crop; order reversed as the official code leaves it
        bottom_cols = (right - bottom_cols)[::-1]
    else:
        bottom_cols = bottom_cols - left
    cropped = largest[top:bottom, left:right]
    skip = int(cropped.shape[0] * rightmost_from)
    search = cropped[skip:]
    filled = np.flatnonzero(search.any(axis=0))
    outer = int(filled[-1] if points == "right" else filled[0])
    outer_rows = np.flatnonzero(search[:, outer]) + skip
    if points == "left":
        outer = cropped.shape[1] - outer
    return Crop((top, bottom, left, right),
                ((int(outer_rows[0]), int(outer_rows[-1])), int(outer)),
                (int(bottom_row), (int(bottom_cols[0]), int(bottom_cols[-1]))), int(distance))


def face_right(cropped: np.ndarray, points: str) -> np.ndarray:
    """Mirror a crop whose breast points left, so every breast points right (official
    ``flip_image``: the chest wall ends at column 0)."""
    return np.fliplr(cropped) if points == "left" else cropped


def best_centre(image: np.ndarray, view: str, window: tuple[int, int], crop: Crop) -> tuple[int, int]:
    """The window centre (row, col) that covers the most breast pixels (official
    ``get_optimal_centers``) in the cropped, right-facing ``image``.

    CC: the window's right edge sits on the rightmost breast column; rows are searched, ties
    go to the centre nearest the image centre. MLO: the window's bottom-right corner sits on
    the bottom-right breast pixel (one candidate). Both constraints keep the official
    off-by-one (the centre is one pixel up/left of the half-window offset).
    """
    if view not in ("CC", "MLO"):
        raise InputError(f"view is {view!r}; pass 'CC' or 'MLO'")
    dims = np.array(image.shape)
    win = np.array(window)
    half, rest = win // 2, win - win // 2
    com = dims // 2
    tl, br = half.copy(), dims - rest
    for axis in (0, 1):          # a window larger than the image: its centre stays in the middle
        if tl[axis] >= br[axis]:
            tl[axis] = br[axis] = com[axis]
    br = br + 1
    rightmost_col = crop.rightmost[1]
    if view == "CC":
        tl[1], br[1] = rightmost_col - half[1] - 1, rightmost_col - half[1]
    else:
        bottom_row = crop.bottommost[0]
        filled = np.flatnonzero((image[:, -window[1]:] != 0).any(axis=1))
        if filled.size:
            bottom_row = min(int(filled[-1]), bottom_row)
        br = np.array([bottom_row, rightmost_col]) - half
        tl = br - 1
    ys, xs = np.arange(tl[0], br[0]), np.arange(tl[1], br[1])
    centres = np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1).reshape(-1, 2)
    if len(centres) == 1:
        return int(centres[0, 0]), int(centres[0, 1])
    sums = _window_sums(image > 0, centres, win)
    best = centres[sums == sums.max()]
    if len(best) > 1:
        best = best[[np.argmin(((best - com) ** 2).sum(axis=1))]]
    return int(best[0, 0]), int(best[0, 1])


def _window_sums(binary: np.ndarray, centres: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Breast pixels inside each candidate window (clipped to the image, shifted inwards where
    it starts before row/col 0), from one summed-area table."""
    half = window // 2
    tl = centres - half
    offset = np.clip(-tl, 0, None)
    tl = np.clip(tl, 0, None)
    br = np.minimum(centres + (window - half) + offset, binary.shape)
    table = np.zeros((binary.shape[0] + 1, binary.shape[1] + 1), np.int64)
    table[1:, 1:] = binary.cumsum(0).cumsum(1)
    return (table[br[:, 0], br[:, 1]] - table[tl[:, 0], br[:, 1]]
            - table[br[:, 0], tl[:, 1]] + table[tl[:, 0], tl[:, 1]]).astype(np.float64)


def standardise(image: np.ndarray) -> np.ndarray:
    """Mean 0, population sd 1, in float32 as the official code computes it (sd floored at 1e-5)."""
    out = np.array(image, dtype=np.float32, copy=True)
    out -= np.mean(out)
    out /= np.maximum(np.std(out), 10 ** (-5))
    return out


def cut_window(image: np.ndarray, view: str, centre: tuple[int, int], window: tuple[int, int],
               rng: np.random.RandomState, *, auxiliary: np.ndarray | None = None,
               max_crop_noise: tuple[int, int] = (0, 0), max_crop_size_noise: int = 0) -> Window:
    """Cut the model's window around ``centre`` from the cropped, right-facing ``image``
    (official ``random_augmentation_best_center`` then standardisation).

    With zero noise the window is exact (no resize); with noise, ``rng`` draws two uniforms
    for the shift (only when ``max_crop_noise`` is non-zero) and always four for the size, in
    that order, and a window whose size changed is resized back with OpenCV's bicubic filter.
    CC windows are zero-padded above and below, MLO windows below only, both on the right.
    """
    import cv2  # opencv-python-headless: the official resize, bit for bit

    if view not in ("CC", "MLO"):
        raise InputError(f"view is {view!r}; pass 'CC' or 'MLO'")
    joint = image.astype(np.float32, copy=False)[:, :, None]
    if auxiliary is not None:
        joint = np.concatenate([joint, auxiliary.astype(np.float32, copy=False)], axis=2)
    joint, borders, padding = _shifted_borders(joint, view, centre, window, rng,
                                               np.array(max_crop_noise), max_crop_size_noise)
    borders = _resized_borders(joint.shape, window, borders, rng, max_crop_size_noise)
    cut = joint[borders[0]:borders[1], borders[2]:borders[3]]
    if cut.shape[:2] != tuple(window):
        resized = cv2.resize(cut, (window[1], window[0]), interpolation=cv2.INTER_CUBIC)
        cut = resized[:, :, None] if resized.ndim == 2 else resized
    return Window(standardise(cut[:, :, 0]), None if auxiliary is None else cut[:, :, 1:],
                  tuple(int(b) for b in borders), padding)


def _pad_and_align(size: int, window: int, noise: int, both_ends: bool) -> tuple[int, int, int, int]:
    """(start, end, pad_front, pad_back) for an axis shorter than window + noise margin."""
    pad = window - size + noise * (2 if both_ends else 1)
    front, start = (int(pad / 2), noise) if both_ends else (0, 0)
    return start, start + window, front, pad - front


def _inside(start: int, end: int, size: int, window: int) -> tuple[int, int]:
    if start < 0:
        return 0, window
    if end > size:
        return size - window, size
    return start, end


def _shifted_borders(joint, view, centre, window, rng, max_crop_noise, size_noise):
    multiplier = np.zeros(2, dtype=np.float32)
    if max_crop_noise.any():
        multiplier = rng.uniform(low=-1.0, high=1.0, size=2)
    (cy, cx), (h, w) = centre, window
    top, bottom = cy - h // 2, cy + h - h // 2
    left, right = cx - w // 2, cx + w - w // 2
    pad_top = pad_bottom = pad_right = 0
    rows, cols = joint.shape[:2]
    if view == "CC" and rows < h + (max_crop_noise[0] + size_noise) * 2:
        top, bottom, pad_top, pad_bottom = _pad_and_align(rows, h, max_crop_noise[0] + size_noise,
                                                          True)
    elif view == "MLO" and rows < h + max_crop_noise[0] + size_noise:
        top, bottom, _, pad_bottom = _pad_and_align(rows, h, max_crop_noise[0] + size_noise, False)
    if cols < w + max_crop_noise[1] + size_noise:
        left, right, _, pad_right = _pad_and_align(cols, w, max_crop_noise[1] + size_noise, False)
    if pad_top or pad_bottom or pad_right:
        padded = np.zeros((rows + pad_top + pad_bottom, cols + pad_right, joint.shape[2]),
                          joint.dtype)
        padded[pad_top:pad_top + rows, :cols] = joint
        joint = padded
    top, bottom = _inside(top, bottom, joint.shape[0], h)
    left, right = _inside(left, right, joint.shape[1], w)
    for axis, (start, end) in enumerate(((top, bottom), (left, right))):
        if start == 0:
            multiplier[axis] = np.abs(multiplier[axis])
        elif end == joint.shape[axis]:
            multiplier[axis] = -np.abs(multiplier[axis])
    borders = np.array((top, bottom, left, right), dtype=np.int32)
    margin_v = joint.shape[0] - bottom if multiplier[0] >= 0 else top
    margin_h = joint.shape[1] - right if multiplier[1] >= 0 else left
    max_crop_noise = max_crop_noise.copy()
    max_crop_noise[0] = min(max_crop_noise[0], margin_v)
    max_crop_noise[1] = min(max_crop_noise[1], margin_h)
    shift = np.round(max_crop_noise * multiplier)
    borders = borders + np.array((shift[0], shift[0], shift[1], shift[1]), dtype=np.int32)
    _check_borders(borders, joint.shape)
    return joint, borders, (pad_top, pad_bottom, pad_right)


def _resized_borders(shape, window, borders, rng, size_noise):
    multiplier = rng.uniform(low=-1.0, high=1.0, size=4)   # drawn even when the noise is 0
    margins = (borders[0], shape[0] - borders[1], borders[2], shape[1] - borders[3])
    size_noise = min(size_noise, *margins)
    h, w = window
    if h >= w:
        vertical, horizontal = size_noise, np.round(size_noise * (w / h))
    else:
        vertical, horizontal = np.round(size_noise * (h / w)), size_noise
    limit = np.array((vertical, vertical, horizontal, horizontal), dtype=np.int32)
    borders = borders + np.array(np.round(limit * multiplier), dtype=np.int32)
    _check_borders(borders, shape)
    if borders[1] <= borders[0] or borders[3] <= borders[2]:
        raise InputError(f"window borders {borders.tolist()} are empty; the image is too small")
    return borders


def _check_borders(borders, shape) -> None:
    if borders[0] < 0 or borders[1] > shape[0] or borders[2] < 0 or borders[3] > shape[1]:
        raise InputError(f"window borders {borders.tolist()} fall outside the padded image "
                         f"{shape[:2]}; the breast box is inconsistent with the image")


def draw_windows(views: dict[str, "PreparedView"], windows: dict[str, tuple[int, int]],
                 rng: np.random.RandomState, draws: int) -> dict[str, list[Window]]:
    """An exam's windows: ``max(draws, 1)`` per view, drawn in the official order (for each
    draw, L-CC, R-CC, L-MLO, R-MLO; one ``rng`` for the whole run, as ``run_model`` keeps
    one ``RandomState(seed)`` across exams). ``draws == 0`` cuts the exact window without
    noise (no size jitter is drawn then either: the noise is zero, only the draws are made).

    views : view name ('L-CC', ...) -> `PreparedView` (missing views are skipped).
    windows : {'CC': (rows, cols), 'MLO': (rows, cols)}.
    """
    noise = TRAINING_NOISE if draws > 0 else {"max_crop_noise": (0, 0), "max_crop_size_noise": 0}
    out: dict[str, list[Window]] = {v: [] for v in NYU_VIEWS if v in views}
    for _ in range(max(draws, 1)):
        for name in NYU_VIEWS:
            if name not in views:
                continue
            prepared = views[name]
            if draws > 0:
                rng.randint(low=0, high=1)   # the official draw of which image of the view
            angle = name.split("-")[1]
            out[name].append(cut_window(prepared.image, angle, prepared.centre, windows[angle],
                                        rng, auxiliary=prepared.auxiliary, **noise))
    return out


@dataclass(frozen=True)
class PreparedView:
    """A view ready for `draw_windows`: the cropped, right-facing image (float32), its best
    centre, its crop (for geometry) and optional auxiliary channels (heatmaps) cut alike."""

    image: np.ndarray
    centre: tuple[int, int]
    crop: Crop
    points: str
    auxiliary: np.ndarray | None = None


def prepare_view(pixels: np.ndarray, laterality: str, view: str, window: tuple[int, int], *,
                 horizontal_flip: bool = False, auxiliary: np.ndarray | None = None,
                 iterations: int = 100, buffer: int = 50) -> PreparedView:
    """Steps 1-3 for one stored image: crop, face right, best centre (``auxiliary``, e.g. the
    heatmaps of the same image, (rows, cols, C) on the original grid, is cropped alike)."""
    points = breast_points(laterality, horizontal_flip=horizontal_flip)
    crop = crop_to_breast(pixels, points, iterations=iterations, buffer=buffer)
    top, bottom, left, right = crop.box
    image = face_right(np.asarray(pixels, np.float32)[top:bottom, left:right], points)
    aux = None
    if auxiliary is not None:
        aux = face_right(np.asarray(auxiliary, np.float32)[top:bottom, left:right], points)
    return PreparedView(np.ascontiguousarray(image), best_centre(image, view, window, crop), crop,
                        points, None if aux is None else np.ascontiguousarray(aux))


def window_geometry(prepared: PreparedView, window: Window,
                    original_shape: tuple[int, int]) -> SaliencyGeometry:
    """Where a window's input grid lies on the stored image (what a saliency file records):
    the window's borders undone through padding, mirroring and the crop. The box may reach
    past the image where the window was zero-padded; `core.saliency` maps only the inside."""
    top, bottom, left, right = prepared.crop.box
    b0, b1, b2, b3 = window.borders
    pad_top = window.padding[0]
    rows = window.image.shape
    flipped = prepared.points == "left"
    col0 = right - b3 if flipped else left + b2
    box = (top + b0 - pad_top, col0, b1 - b0, b3 - b2)
    return SaliencyGeometry(tuple(int(v) for v in original_shape), tuple(int(v) for v in box),
                            flipped, (int(rows[0]), int(rows[1])),
                            (rows[0] / (b1 - b0), rows[1] / (b3 - b2)))
