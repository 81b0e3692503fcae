"""The Annotate page's canvas geometry: which part of the image the canvas shows, and the
strokes drawn there back on the full-resolution image. Pure (numpy, PIL, scikit-image).

Coordinates. Image positions are continuous (row, col) with pixel *edges* at integers: pixel
(r, c) covers [r, r + 1) x [c, c + 1), its centre is (r + 0.5, c + 0.5). The canvas shows the
crop box ``CanvasView.crop`` of the image through a background picture of ``CanvasView.natural``
pixels (the crop resampled so the browser gets a small PNG); the canvas places that picture by
its *background fit* (``scale_x``, ``scale_y``, ``offset_x``, ``offset_y`` as
``CanvasResult.background_fit`` reports them), so a canvas point (x, y) lies at background
pixel ((y - offset_y) / scale_y, (x - offset_x) / scale_x) and at image position
``crop_origin + background_position * crop_size / natural``. `canvas_to_image` is that map;
`drawing_mask` rasterises the canvas's Fabric.js objects through it at full resolution: a
pixel is drawn when its centre lies within half the stroke width of a stroke, or inside a
filled shape. Why full resolution: the mask is the radiologist's drawing for Algorithm 3
(`core.annotations.fill_drawing`), which works in the image's own pixels.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from skimage.draw import polygon as fill_polygon

from core.errors import InputError

__all__ = ["DRAW_COLOUR", "ERASER_COLOUR", "FALLBACK_COLUMN_PX", "MAX_CANVAS_PX", "CanvasView",
           "background_picture", "canvas_size", "canvas_to_image", "default_window",
           "drawing_mask", "plan_view", "windowed"]

DRAW_COLOUR = "#ff3b30"      # strokes that draw
ERASER_COLOUR = "#00e5ff"    # strokes that erase: the page's eraser is free drawing in this colour
_ORIGIN = {"left": -0.5, "top": -0.5, "center": 0.0, "right": 0.5, "bottom": 0.5}
_CURVE_STEPS_PX = 2.0        # a Bezier curve is flattened into chords of about 2 canvas pixels
_MIN_HALF_WIDTH = 0.75       # image px: a thin stroke still joins diagonal neighbours
FALLBACK_COLUMN_PX = 320     # before the browser reports its column: fits a 360 px phone
MAX_CANVAS_PX = 900          # widest canvas: past this the background picture is upscaled
_WIDTH_STEP_PX = 16          # widths snap down to this step, so a few px of resize keep it


@dataclass(frozen=True)
class CanvasView:
    """What the canvas shows.

    crop : (row0, col0, height, width) of the shown part of the image, full-resolution pixels.
    natural : (rows, cols) of the background picture drawn on the canvas.
    """

    crop: tuple[int, int, int, int]
    natural: tuple[int, int]


def plan_view(image_shape: Sequence[int], *, zoom: float = 1.0,
              centre: tuple[float, float] = (0.5, 0.5), max_side: int = 1280) -> CanvasView:
    """The crop of an image of ``image_shape`` (rows, cols) magnified ``zoom`` times about
    ``centre`` (fractions of the image height and width), kept inside the image; its
    background picture is the crop shrunk (never enlarged) so its longer side is at most
    ``max_side`` pixels."""
    rows, cols = (int(v) for v in image_shape)
    if zoom < 1:
        raise InputError(f"zoom is {zoom}; pass 1 (whole image) or more")
    h, w = max(1, round(rows / zoom)), max(1, round(cols / zoom))
    r0 = min(max(round(centre[0] * rows - h / 2), 0), rows - h)
    c0 = min(max(round(centre[1] * cols - w / 2), 0), cols - w)
    shrink = max(h, w) / max_side
    natural = (h, w) if shrink <= 1 else (max(1, round(h / shrink)), max(1, round(w / shrink)))
    return CanvasView(crop=(r0, c0, h, w), natural=natural)


def canvas_size(column_px: int | None, natural: Sequence[int]) -> tuple[int, int]:
    """(width, height) in CSS pixels of a canvas that fits a column ``column_px`` wide and
    shows a picture of ``natural`` (rows, cols) at its aspect ratio.

    The width never exceeds the column (a wider canvas hides its right part: on an R view the
    chest wall), snaps down to 16 px steps (so a resize by a few pixels does not remount the
    canvas) and is at most `MAX_CANVAS_PX`; None (width unknown yet) gives
    `FALLBACK_COLUMN_PX`. The stroke->pixel map stays exact whatever the size: it goes
    through the background fit the canvas reports (`canvas_to_image`).
    """
    column = FALLBACK_COLUMN_PX if column_px is None else int(column_px)
    if column < _WIDTH_STEP_PX:
        raise InputError(f"the column is {column} px wide; widen the window to draw")
    width = min(column, MAX_CANVAS_PX) // _WIDTH_STEP_PX * _WIDTH_STEP_PX
    rows, cols = int(natural[0]), int(natural[1])
    return width, max(1, round(width * rows / cols))


def default_window(pixels: np.ndarray) -> tuple[float, float]:
    """The 0.5th and 99.5th percentiles of the pixels above the image's minimum (the tissue,
    not the background): the window `core.io.pixels.to_display` uses, as a starting level."""
    pixels = np.asarray(pixels)
    body = pixels[pixels > pixels.min()] if pixels.size else pixels
    if body.size == 0:
        return float(pixels.min(initial=0)), float(pixels.min(initial=0)) + 1
    low, high = np.percentile(body, [0.5, 99.5])
    return float(low), float(max(high, low + 1))


def windowed(pixels: np.ndarray, low: float, high: float) -> np.ndarray:
    """8-bit grey of ``pixels`` with the window [low, high] spread over 0..255 (clipped):
    window/level for 12- and 16-bit images."""
    scaled = (np.asarray(pixels, np.float32) - low) / max(float(high) - float(low), 1e-6)
    return (np.clip(scaled, 0, 1) * 255).round().astype(np.uint8)


def background_picture(grey: np.ndarray, view: CanvasView) -> Image.Image:
    """The picture the canvas shows: ``grey`` (uint8, full resolution) cut to ``view.crop`` and
    area-averaged to ``view.natural``; its edges span the crop's edges exactly."""
    r0, c0, h, w = view.crop
    picture = Image.fromarray(np.ascontiguousarray(grey[r0:r0 + h, c0:c0 + w]))
    if (h, w) != view.natural:
        picture = picture.resize(view.natural[::-1], Image.Resampling.BOX)
    return picture


def canvas_to_image(points_xy, fit: Mapping[str, float], view: CanvasView) -> np.ndarray:
    """Canvas points to image positions.

    Parameters
    ----------
    points_xy : array-like of shape (N, 2)
        (x, y) in canvas pixels, as Fabric.js reports them.
    fit : mapping
        The canvas's background fit: natural_width, natural_height, scale_x, scale_y,
        offset_x, offset_y (`CanvasResult.background_fit`).
    view : CanvasView
        What the canvas shows; its ``natural`` must be the fit's natural size.

    Returns
    -------
    ndarray of float64, shape (N, 2)
        (row, col) on the full-resolution image, pixel edges at integers.
    """
    _check_fit(fit, view)
    xy = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    r0, c0, h, w = view.crop
    rows = r0 + (xy[:, 1] - fit["offset_y"]) / fit["scale_y"] * (h / view.natural[0])
    cols = c0 + (xy[:, 0] - fit["offset_x"]) / fit["scale_x"] * (w / view.natural[1])
    return np.column_stack([rows, cols])


def _check_fit(fit: Mapping[str, float], view: CanvasView) -> None:
    natural = (int(fit["natural_height"]), int(fit["natural_width"]))
    if natural != tuple(view.natural):
        raise InputError(f"the canvas reports a background of {natural[1]} x {natural[0]} px but "
                         f"shows a view of {view.natural[1]} x {view.natural[0]}; wait for the "
                         "image to load, then draw again")
    if not (fit["scale_x"] > 0 and fit["scale_y"] > 0):
        raise InputError(f"the canvas reports background scales {fit['scale_x']}, "
                         f"{fit['scale_y']}; reload the page")


def drawing_mask(drawing: Mapping | None, fit: Mapping[str, float] | None, view: CanvasView,
                 shape: Sequence[int], *, base: np.ndarray | None = None) -> np.ndarray:
    """The canvas's drawing as a full-resolution mask.

    Parameters
    ----------
    drawing : Fabric.js canvas JSON (``CanvasResult.json_data``) or None
        Objects are applied in order: each draws (its stroke, and its inside when it has a
        visible fill), or erases when its stroke is `ERASER_COLOUR`.
    fit, view : as in `canvas_to_image`. ``fit`` may be None only for an empty drawing.
    shape : (rows, cols) of the image.
    base : bool array of ``shape`` or None, keyword-only
        What was drawn before (in another view); a copy is drawn on and erased from.

    Returns
    -------
    ndarray of bool, shape ``shape``
    """
    shape = (int(shape[0]), int(shape[1]))
    mask = np.zeros(shape, bool) if base is None else np.array(base, dtype=bool)
    if mask.shape != shape:
        raise InputError(f"base has shape {mask.shape}; pass a mask of the image's {shape}")
    objects = (drawing or {}).get("objects") or []
    if not objects:
        return mask
    if fit is None:
        raise InputError("the canvas has not reported its background fit yet; wait for the "
                         "image to load, then draw again")
    _check_fit(fit, view)
    r0, c0, h, w = view.crop
    # image pixels per canvas pixel (the fit keeps the aspect ratio up to rounding)
    per_canvas = 0.5 * (h / view.natural[0] / fit["scale_y"] + w / view.natural[1] / fit["scale_x"])
    for obj in objects:
        value = _colour_key(obj.get("stroke")) != _colour_key(ERASER_COLOUR)
        matrix, outlines = _outlines(obj)
        linear = abs(np.linalg.det(matrix[:2, :2]))
        width = float(obj.get("strokeWidth") or 0)
        width = width if obj.get("strokeUniform") else width * math.sqrt(linear)
        for local, closed in outlines:
            canvas = local @ matrix[:2, :2].T + matrix[:2, 2]
            points = canvas_to_image(canvas, fit, view)
            if closed and _visible(obj.get("fill")) and len(points) >= 3:
                rr, cc = fill_polygon(points[:, 0] - 0.5, points[:, 1] - 0.5, shape)
                mask[rr, cc] = value
            if _visible(obj.get("stroke")) and width > 0:
                ring = np.vstack([points, points[:1]]) if closed else points
                _stroke(mask, ring, max(width * per_canvas / 2, _MIN_HALF_WIDTH), value)
    return mask


def _stroke(mask: np.ndarray, points: np.ndarray, half: float, value: bool) -> None:
    """Set every pixel whose centre is within ``half`` of the polyline ``points`` (row, col):
    segment by segment, each in its own small window (round joins and caps follow)."""
    rows, cols = mask.shape
    segments = zip(points[:-1], points[1:]) if len(points) > 1 else [(points[0], points[0])]
    for a, b in segments:
        lo = np.floor(np.minimum(a, b) - half - 0.5).astype(int)
        hi = np.ceil(np.maximum(a, b) + half + 0.5).astype(int)
        r_lo, c_lo = max(lo[0], 0), max(lo[1], 0)
        r_hi, c_hi = min(hi[0], rows), min(hi[1], cols)
        if r_lo >= r_hi or c_lo >= c_hi:
            continue
        pr = np.arange(r_lo, r_hi)[:, None] + 0.5 - a[0]
        pc = np.arange(c_lo, c_hi)[None, :] + 0.5 - a[1]
        d = b - a
        length2 = float(d @ d)
        t = np.clip((pr * d[0] + pc * d[1]) / length2, 0, 1) if length2 else 0.0
        near = (pr - t * d[0]) ** 2 + (pc - t * d[1]) ** 2 <= half * half
        window = mask[r_lo:r_hi, c_lo:c_hi]
        window[near] = value


# --- Fabric.js objects -----------------------------------------------------------------------


def _outlines(obj: Mapping) -> tuple[np.ndarray, list[tuple[np.ndarray, bool]]]:
    """An object's 3 x 3 canvas-from-object matrix and its outlines in object coordinates,
    each (points of shape (N, 2) as (x, y), closed). Fabric.js v6 semantics: the object's
    centre comes from (left, top) and its origin; points are relative to that centre."""
    kind = str(obj.get("type", "")).lower()
    if kind == "path":
        outlines = _path_outlines(obj.get("path") or [])
        points = np.vstack([p for p, _ in outlines]) if outlines else np.zeros((1, 2))
        centre = (points.min(axis=0) + points.max(axis=0)) / 2   # Fabric's pathOffset
        outlines = [(p - centre, closed) for p, closed in outlines]
    elif kind in ("polygon", "polyline"):
        points = np.array([[p["x"], p["y"]] for p in obj.get("points") or []], float)
        points = points.reshape(-1, 2)
        centre = (points.min(axis=0) + points.max(axis=0)) / 2 if len(points) else 0
        outlines = [(points - centre, kind == "polygon")]
    elif kind in ("circle", "ellipse"):
        rx = float(obj.get("rx", obj.get("radius", 0)))
        ry = float(obj.get("ry", obj.get("radius", 0)))
        start = math.radians(float(obj.get("startAngle", 0)))
        end = math.radians(float(obj.get("endAngle", 360)))
        full = abs(end - start) >= 2 * math.pi - 1e-9
        n = max(16, math.ceil(abs(end - start) * max(rx, ry) / _CURVE_STEPS_PX))
        t = np.linspace(start, end, n, endpoint=not full)
        outlines = [(np.column_stack([rx * np.cos(t), ry * np.sin(t)]), full)]
    elif kind == "rect":
        w, h = float(obj.get("width", 0)) / 2, float(obj.get("height", 0)) / 2
        outlines = [(np.array([[-w, -h], [w, -h], [w, h], [-w, h]]), True)]
    elif kind == "line":
        w, h = float(obj.get("width", 0)) / 2, float(obj.get("height", 0)) / 2
        sx = -1 if obj.get("x1", 0) <= obj.get("x2", 0) else 1
        sy = -1 if obj.get("y1", 0) <= obj.get("y2", 0) else 1
        outlines = [(np.array([[sx * w, sy * h], [-sx * w, -sy * h]]), False)]
    else:
        raise InputError(f"the drawing holds a {obj.get('type')!r} object, which annotation does "
                         "not use; undo it or reset the canvas")
    return _matrix(obj), outlines


def _matrix(obj: Mapping) -> np.ndarray:
    """Fabric.js's object matrix: translate to the centre, rotate, scale (and flip)."""
    if obj.get("skewX") or obj.get("skewY"):
        raise InputError("the drawing holds a skewed shape; undo the skew or redraw the shape")
    sx = float(obj.get("scaleX", 1)) * (-1 if obj.get("flipX") else 1)
    sy = float(obj.get("scaleY", 1)) * (-1 if obj.get("flipY") else 1)
    stroke = float(obj.get("strokeWidth") or 0)
    # the box Fabric positions the origin on: size plus stroke, scaled
    if obj.get("strokeUniform"):
        box = (abs(sx) * float(obj.get("width", 0)) + stroke,
               abs(sy) * float(obj.get("height", 0)) + stroke)
    else:
        box = (abs(sx) * (float(obj.get("width", 0)) + stroke),
               abs(sy) * (float(obj.get("height", 0)) + stroke))
    angle = math.radians(float(obj.get("angle", 0)))
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    shift = np.array([(0 - _origin(obj.get("originX", "left"))) * box[0],
                      (0 - _origin(obj.get("originY", "top"))) * box[1]])
    centre = np.array([float(obj.get("left", 0)), float(obj.get("top", 0))]) + rot @ shift
    matrix = np.eye(3)
    matrix[:2, :2] = rot @ np.diag([sx, sy])
    matrix[:2, 2] = centre
    return matrix


def _origin(value) -> float:
    if isinstance(value, (int, float)):
        return float(value) - 0.5   # Fabric also takes a number, 0 = left/top .. 1 = right/bottom
    if value not in _ORIGIN:
        raise InputError(f"the drawing holds an object with origin {value!r}; reset the canvas")
    return _ORIGIN[value]


def _path_outlines(commands: Sequence[Sequence]) -> list[tuple[np.ndarray, bool]]:
    """SVG path commands (absolute M, L, Q, C, Z as Fabric stores them) as polylines: one per
    subpath, with curves flattened into short chords."""
    outlines, current, closed = [], [], False
    for command in commands:
        op, args = str(command[0]), [float(v) for v in command[1:]]
        if op == "M":
            if len(current) > 0:
                outlines.append((np.array(current), closed))
            current, closed = [args[:2]], False
        elif op == "L":
            current.append(args[:2])
        elif op in ("Q", "C"):
            controls = np.array([current[-1], *np.reshape(args, (-1, 2))])
            current.extend(_bezier(controls)[1:])
        elif op in ("Z", "z"):
            closed = True
        else:
            raise InputError(f"the drawing holds a path command {op!r}; undo that stroke")
    if len(current) > 0:
        outlines.append((np.array(current, float), closed))
    return outlines


def _bezier(controls: np.ndarray) -> np.ndarray:
    """Points along a quadratic or cubic Bezier curve (de Casteljau), about every
    `_CURVE_STEPS_PX` along its control polygon, ends included."""
    length = float(np.linalg.norm(np.diff(controls, axis=0), axis=1).sum())
    t = np.linspace(0, 1, max(2, math.ceil(length / _CURVE_STEPS_PX) + 1))[:, None]
    points = [np.broadcast_to(c, (len(t), 2)) for c in controls]
    while len(points) > 1:
        points = [(1 - t) * p + t * q for p, q in zip(points[:-1], points[1:])]
    return points[0]


_RGBA = re.compile(r"rgba?\(([^)]*)\)")


def _colour_key(colour) -> str:
    return re.sub(r"\s", "", str(colour or "")).lower()


def _visible(colour) -> bool:
    """Whether a CSS colour paints: not empty, 'transparent' or of zero alpha."""
    key = _colour_key(colour)
    if key in ("", "none", "transparent", "null"):
        return False
    match = _RGBA.fullmatch(key)
    parts = match.group(1).split(",") if match else []
    return not (len(parts) == 4 and float(parts[3]) == 0)
