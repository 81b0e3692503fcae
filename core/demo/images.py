"""Procedurally rendered mammogram-like views for the synthetic demo cohort (`core.demo.cohort`).

Orientation follows the standard display convention: a left breast has its chest wall on the
left edge and points right; a right breast is its mirror image (chest wall on the right edge).
Everything is drawn in the left-breast ("canonical") frame and right views are flipped at the
end. MLO views carry the pectoral muscle in the upper chest-wall corner and their tissue runs
off the top edge (the axillary tail); CC views show the whole outline.

Pixels are MONOCHROME2 (brighter = denser) in a 12-bit range, 0..`MAX_VALUE`, held in uint16.

Why procedural: the demo and the tests must run with no patient data, yet a small CNN trained on
the demo should learn something and the filters (M1-M7) should separate lesions by type. So IDC
masses are compact and clearly brighter than tissue, while ILC lesions are faint, diffuse and
made of thin strands and distorted tissue, like lobular cancer's single-file growth.

Speed: texture is made on a half-resolution grid with Gaussian filters and upsampled once;
lesions are drawn inside their bounding boxes only (~30 ms per 512 x 320 view on one core).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from core.errors import InputError

MAX_VALUE = 4095                 # 12-bit range stored in 16-bit files
FIELD_HEIGHT_MM = 240.0          # detector height the image spans; spacing = this / rows
LESION_KINDS = ("mass", "spiculated mass", "benign mass",                        # circumscribed
                "architectural distortion", "asymmetry", "ill-defined")          # ILC-like
# Percent dense area drawn for each density category 0..3 (fatty .. extremely dense).
DENSITY_PERCENT = ((3.0, 12.0), (12.0, 30.0), (30.0, 55.0), (55.0, 85.0))
# Peak contrast of each kind on the 0..1 attenuation scale, where fat is ~0.3, dense ~0.7.
BASE_CONTRAST = {"mass": 0.24, "spiculated mass": 0.22, "benign mass": 0.17,
                 "architectural distortion": 0.06, "asymmetry": 0.055, "ill-defined": 0.065}

_FAT, _GLAND, _PECT, _BACKGROUND = 0.30, 0.40, 0.62, 0.02


@dataclass(frozen=True)
class Geometry:
    """Breast outline in the canonical frame, as fractions of the image size.

    The outline is a superellipse ``a**power + |b|**power = 1`` with ``a = col / (depth * W)``
    (0 at the chest wall, 1 at the nipple) and ``b = (row - centre * H) / (extent * H)``, where
    the extent is ``up`` above the nipple row and ``down`` below it. ``up > centre`` makes the
    tissue run off the top edge (MLO). The pectoral muscle (MLO) spans ``pect_width * W`` on the
    top row and ``pect_height * H`` along the chest wall; both are 0 on CC.
    """

    depth: float
    centre: float
    up: float
    down: float
    power: float
    pect_width: float = 0.0
    pect_height: float = 0.0


@dataclass(frozen=True)
class LesionSpec:
    """One lesion to draw: kind (`LESION_KINDS`), centre and radius in final image pixels.

    ``contrast`` multiplies the kind's `BASE_CONTRAST` (the cohort ties it to how conspicuous
    the simulated readers found the lesion).
    """

    kind: str
    row: float
    col: float
    radius: float
    contrast: float = 1.0


def draw_geometries(rng: np.random.Generator, is_mlo: np.ndarray) -> dict[str, np.ndarray]:
    """Random outlines for many views at once: one array per `Geometry` field, shape (n,)."""
    is_mlo = np.asarray(is_mlo, dtype=bool)
    n = is_mlo.size
    u = rng.random((7, n))
    depth = np.where(is_mlo, 0.62 + 0.22 * u[0], 0.56 + 0.24 * u[0])
    centre = np.where(is_mlo, 0.56 + 0.06 * u[1], 0.46 + 0.08 * u[1])
    up = np.where(is_mlo, centre + 0.10 + 0.15 * u[2], 0.33 + 0.09 * u[2])
    down = np.where(is_mlo, 0.28 + 0.08 * u[3], 0.33 + 0.09 * u[3])
    power = 1.8 + 0.5 * u[4]
    # Pectoral muscle: a fraction of the tissue width on the top row, down to above the nipple.
    top_b = np.minimum(centre / up, 1.0)
    top_width = depth * (1.0 - top_b ** power) ** (1.0 / power)
    pect_width = np.where(is_mlo, (0.45 + 0.3 * u[5]) * top_width, 0.0)
    pect_height = np.where(is_mlo, (0.55 + 0.3 * u[6]) * centre, 0.0)
    return {"depth": depth, "centre": centre, "up": up, "down": down, "power": power,
            "pect_width": pect_width, "pect_height": pect_height}


def breast_to_px(geom: dict[str, np.ndarray] | Geometry, a, b, shape: tuple[int, int]):
    """Canonical (row, col) pixels of breast coordinates ``a`` (depth) and ``b`` (height)."""
    g = geom if isinstance(geom, dict) else vars(geom)
    height, width = shape
    b = np.asarray(b, dtype=float)
    row = (g["centre"] + b * np.where(b < 0, g["up"], g["down"])) * height
    col = np.asarray(a, dtype=float) * g["depth"] * width
    return row, col


def pectoral_col(geom: dict[str, np.ndarray] | Geometry, row, shape: tuple[int, int]):
    """Column of the pectoral edge at ``row`` in the canonical frame (0 below the muscle)."""
    g = geom if isinstance(geom, dict) else vars(geom)
    height, width = shape
    t = np.clip(1.0 - np.asarray(row, float) / np.maximum(g["pect_height"] * height, 1e-9), 0, 1)
    return g["pect_width"] * width * t ** 0.8   # slightly convex, as the muscle's edge


def render_view(rng: np.random.Generator, *, laterality: str, view: str, density: int,
                lesions: Sequence[LesionSpec] = (), shape: tuple[int, int] = (512, 320),
                geometry: Geometry | None = None,
                percent_density: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render one mammogram-like view and the exact mask of its lesions.

    Parameters
    ----------
    rng : numpy Generator  all randomness (outline if not given, texture, lesion shape, noise).
    laterality : 'L' | 'R'  R is mirrored: chest wall on the right edge.
    view : 'CC' | 'MLO'  MLO adds the pectoral muscle.
    density : int 0..3  category; sets the percent dense area unless ``percent_density`` is given.
    lesions : LesionSpec sequence, centres in final (displayed) pixel coordinates.
    shape : (rows, cols), each >= 32.
    geometry : outline; drawn from ``rng`` when None.
    percent_density : dense area as percent of the breast (0..100).

    Returns
    -------
    image : uint16 array of shape ``shape``, values 0..4095 (12-bit range), MONOCHROME2.
    mask : bool array of shape ``shape``; True where a lesion's footprint (core, strands, the
        distorted zone) lies inside the breast.
    """
    if laterality not in ("L", "R"):
        raise InputError(f"laterality {laterality!r}: expected 'L' or 'R'")
    if view not in ("CC", "MLO"):
        raise InputError(f"view {view!r}: expected 'CC' or 'MLO' (synthetic views only)")
    if density not in (0, 1, 2, 3):
        raise InputError(f"density {density!r}: expected a category 0, 1, 2 or 3")
    if len(shape) != 2 or min(shape) < 32:
        raise InputError(f"shape {tuple(shape)!r}: expected (rows, cols), each at least 32")
    if percent_density is not None and not 0.0 <= float(percent_density) <= 100.0:
        raise InputError(f"percent_density {percent_density!r}: expected 0 .. 100 (percent of "
                         "the breast area that is dense)")
    for spec in lesions:
        if spec.kind not in LESION_KINDS:
            raise InputError(f"lesion kind {spec.kind!r}: expected one of {LESION_KINDS}")
    height, width = int(shape[0]), int(shape[1])
    if geometry is None:
        geometry = Geometry(**{k: float(v[0]) for k, v in
                               draw_geometries(rng, np.array([view == "MLO"])).items()})
    if percent_density is None:
        percent_density = float(rng.uniform(*DENSITY_PERCENT[density]))
    if laterality == "R":  # draw in the left-breast frame, mirror at the end
        lesions = [LesionSpec(s.kind, s.row, width - 1 - s.col, s.radius, s.contrast)
                   for s in lesions]
    image, mask = _render_canonical(rng, geometry, percent_density, lesions, height, width)
    if laterality == "R":
        image, mask = image[:, ::-1].copy(), mask[:, ::-1].copy()
    return image, mask


def _outline(g: Geometry, rows: np.ndarray, cols: np.ndarray, height: int, width: int):
    """Superellipse radius ``rho`` (< 1 inside) and approximate distance to the skin in pixels."""
    depth_px = g.depth * width
    a = np.maximum(cols, 0.0) / depth_px                                  # (1, w)
    dy = rows - g.centre * height
    ext = np.where(dy < 0, g.up, g.down) * height                         # (h, 1)
    b = np.abs(dy) / ext
    p = g.power
    ap, bp = a ** p, b ** p
    rho = (ap + bp) ** (1.0 / p)
    # First-order distance to the outline: (1 - rho) / |grad rho| (exact enough near the skin).
    with np.errstate(divide="ignore", invalid="ignore"):
        grad = np.hypot(ap / np.maximum(a, 1e-9) / depth_px, bp / np.maximum(b, 1e-9) / ext)
        grad = grad * np.maximum(rho, 1e-6) ** (1 - p)
        dist = (1.0 - rho) / np.maximum(grad, 1e-9)
    return rho, np.minimum(dist, 4.0 * width)


def _smooth_noise(rng, shape, sigma: float | tuple[float, float]) -> np.ndarray:
    """Unit-variance Gaussian-filtered white noise; wide kernels run on a coarser grid (speed)."""
    step = max(1, int(min(np.atleast_1d(sigma)) // 3))
    if step == 1:
        field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    else:
        coarse = (-(-shape[0] // step) + 1, -(-shape[1] // step) + 1)
        field = ndimage.gaussian_filter(rng.standard_normal(coarse, dtype=np.float32),
                                        np.divide(sigma, step))
        field = ndimage.zoom(field, step, order=1, grid_mode=True, mode="nearest")
        field = field[:shape[0], :shape[1]]
    return field / max(float(field.std()), 1e-6)


def _upsample2(field: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear x2 upsampling of the last two axes, pixel-area aligned (i sits at i/2 - 1/4)."""
    def along(x: np.ndarray, axis: int) -> np.ndarray:   # axis 0 or 1 of the last two
        x = np.moveaxis(x, axis, 0)
        prev = np.concatenate([x[:1], x[:-1]])
        nxt = np.concatenate([x[1:], x[-1:]])
        out = np.empty((2 * x.shape[0],) + x.shape[1:], x.dtype)
        out[0::2] = 0.75 * x + 0.25 * prev
        out[1::2] = 0.75 * x + 0.25 * nxt
        return np.moveaxis(out, 0, axis)
    return along(along(field, -2), -1)[..., :height, :width]


def _body(rng, g: Geometry, pd: float, height: int, width: int) -> np.ndarray:
    """Breast tissue, pectoral muscle and distance to the skin, on a half-resolution grid.

    Returns shape (2, ceil(height / 2), ceil(width / 2)): attenuation (fat ~0.3, dense ~0.7),
    defined beyond the outline too so that upsampling never blends in the background, and the
    signed distance to the skin in full-resolution pixels (> 0 inside), smooth enough near the
    outline for bilinear upsampling to place the skin line to a fraction of a pixel.
    """
    f = 2                                   # grid step in full-resolution pixels (_upsample2)
    h, w = -(-height // f), -(-width // f)
    rows = (np.arange(h, dtype=np.float32)[:, None] + 0.5) * f - 0.5
    cols = (np.arange(w, dtype=np.float32)[None, :] + 0.5) * f - 0.5
    rho, dist = _outline(g, rows, cols, height, width)
    inside = rho < 1.0
    # Polar frame around the nipple: noise stretched along the radius gives the ducts and
    # ligaments converging on the nipple that make a mammogram look like one.
    dx = g.depth * width - cols
    dy = rows - g.centre * height
    theta = np.arctan2(dy, np.maximum(dx, 0.0))                          # -pi/2 .. pi/2
    radius = np.hypot(dx, dy)
    n_theta, n_r = 240, 96
    coords = np.stack([(theta + np.pi / 2) / np.pi * (n_theta - 1),
                       radius / float(np.hypot(width, height)) * (n_r - 1)])
    polar = (0.6 * _smooth_noise(rng, (n_theta, n_r), (3.0, 7.0))
             + 0.3 * _smooth_noise(rng, (n_theta, n_r), (1.2, 5.0)))
    streaks = ndimage.map_coordinates(polar, coords, order=1, mode="nearest")
    lig = ndimage.map_coordinates(_smooth_noise(rng, (n_theta, n_r), (6.0, 5.0)), coords,
                                  order=1, mode="nearest")
    # Streaks fade near the nipple, where the polar grid would crowd them into a star.
    near = 1.0 - np.exp(-(radius / (0.35 * g.depth * width)) ** 2)
    texture = (near * streaks + (1.0 - near) * 0.9 * _smooth_noise(rng, (h, w), 3.0)
               + 0.45 * _smooth_noise(rng, (h, w), 2.0) + 0.8 * _smooth_noise(rng, (h, w), 9.0))
    # Glandular envelope: behind the nipple, upper-outer on MLO, a fat layer under the skin.
    a = cols / (g.depth * width)
    b = dy / (np.where(dy < 0, g.up, g.down) * height)
    b0 = -0.25 if g.pect_width > 0 else -0.05
    envelope = np.exp(-((a - 0.55) / 0.38) ** 2 - ((b - b0) / 0.6) ** 2)
    envelope = envelope * (1.0 - np.exp(-np.maximum(dist, 0) / (0.04 * width)))
    score = texture + 2.5 * envelope
    # The threshold makes the dense share of the breast equal the requested percent density.
    body = score[inside] if inside.any() else score.ravel()
    threshold = np.quantile(body, 1.0 - np.clip(pd, 0.5, 99.5) / 100.0)
    fraction = 0.5 + 0.5 * np.tanh((score - threshold) / (0.6 * float(body.std()) + 1e-6))
    # Dense tissue is not flat (a fine cloud modulates it); fat is mottled (lobules) and
    # crossed by thin ligaments.
    fine = _smooth_noise(rng, (h, w), 1.0)
    fraction = fraction * (0.85 + 0.15 * np.tanh(_smooth_noise(rng, (h, w), 2.5)))
    fraction = np.clip(fraction + 0.25 * fine * fraction * (1 - fraction), 0, 1)
    fat = np.exp(-(lig / 0.07) ** 2) + 0.5 * _smooth_noise(rng, (h, w), 3.0)
    tissue = _FAT + _GLAND * fraction + 0.035 * fat * (1.0 - fraction) + 0.01 * fine
    # Compressed breast: constant thickness in the middle, rounded off towards the skin.
    edge = np.clip(dist / (0.16 * width), 0.0, 1.0)
    thick = np.sqrt(1.0 - (1.0 - edge) ** 2) * (1.0 - 0.12 * a)
    value = (0.25 + 0.75 * thick) * tissue
    if g.pect_width > 0:
        edge_col = pectoral_col(g, rows, (height, width))
        in_pect = 1.0 / (1.0 + np.exp(np.clip((cols - edge_col) / 1.2, -30, 30)))
        pect = (_PECT + 0.06 * (1.0 - rows / height) - 0.08 * cols / np.maximum(edge_col, 1.0)
                + 0.03 * fine)
        value = value * (1 - in_pect) + pect * in_pect
    return np.stack([value, dist]).astype(np.float32)


def _render_canonical(rng, g: Geometry, pd: float, lesions, height: int, width: int):
    value, dist = _upsample2(_body(rng, g, pd, height, width), height, width)
    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    inside = dist > 0
    mask = np.zeros((height, width), bool)
    for spec in lesions:
        _draw_lesion(rng, spec, value, dist, mask, width)
    if g.pect_width > 0:
        mask &= cols >= pectoral_col(g, rows, (height, width))
    value = value + 0.10 * np.exp(-0.5 * (dist - 1.5) ** 2)                # skin line
    value = np.where(inside, value, _BACKGROUND)
    # Quantum noise grows with the signal; electronic noise everywhere.
    noise = rng.standard_normal((height, width), dtype=np.float32)
    value = value + noise * (0.012 * np.sqrt(np.maximum(value, 0.0)) + 0.003)
    image = np.clip(np.rint(value * (MAX_VALUE - 200) + 40), 0, MAX_VALUE).astype(np.uint16)
    return image, mask & inside


def _irregular_radius(rng, theta, radius, roughness, harmonics):
    """A lumpy outline: ``radius`` times 1 + random cosines of orders 2..harmonics."""
    r = np.ones_like(theta)
    for k in range(2, harmonics + 1):
        amplitude = roughness * rng.uniform(0, 1) / k ** 0.6
        r = r + amplitude * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return radius * r


def _strands(y, x, starts, angles, lengths, width_px, *, both_ends=False):
    """Thin tapered lines (max over lines): starts (2, n) as (y, x); angles, lengths, widths (n,).

    Lines fade towards their far end (spicules) or towards both ends (strands crossing a lesion).
    """
    uy, ux = np.sin(angles)[:, None, None], np.cos(angles)[:, None, None]
    py = y[None] - starts[0][:, None, None]
    px = x[None] - starts[1][:, None, None]
    along = np.clip((py * uy + px * ux) / lengths[:, None, None], 0.0, 1.0)
    dy = py - along * lengths[:, None, None] * uy
    dx = px - along * lengths[:, None, None] * ux
    taper = np.sqrt(np.sin(np.pi * along)) if both_ends else np.sqrt(1.0 - along)
    width_px = np.broadcast_to(np.asarray(width_px, np.float32), angles.shape)[:, None, None]
    lines = np.exp(-0.5 * (dy * dy + dx * dx) / width_px ** 2) * taper
    return lines.max(axis=0)


def _draw_lesion(rng, spec: LesionSpec, value, dist, mask, width):
    """Draw one lesion inside its box: add to ``value``, distort it, or both; mark ``mask``."""
    height = value.shape[0]
    radius = max(float(spec.radius), 1.5)
    half = int(np.ceil(3.2 * radius)) + 2
    r0, c0 = float(spec.row), float(spec.col)
    top, bottom = max(int(r0) - half, 0), min(int(r0) + half + 1, height)
    left, right = max(int(c0) - half, 0), min(int(c0) + half + 1, width)
    if top >= bottom or left >= right:
        return
    y = np.arange(top, bottom, dtype=np.float32)[:, None] - r0
    x = np.arange(left, right, dtype=np.float32)[None, :] - c0
    y, x = np.broadcast_arrays(y, x)
    r = np.hypot(y, x)
    theta = np.arctan2(y, x)
    c = BASE_CONTRAST[spec.kind] * spec.contrast
    box = (slice(top, bottom), slice(left, right))
    thin = max(0.6, 0.035 * radius)
    kind = spec.kind
    strands = np.zeros_like(r)
    if kind in ("mass", "spiculated mass", "benign mass"):
        if kind == "benign mass":   # smooth oval with a thin fat halo
            elong = rng.uniform(0.7, 1.0)
            phi = rng.uniform(0, np.pi)
            rr = np.hypot(y * np.cos(phi) - x * np.sin(phi),
                          (y * np.sin(phi) + x * np.cos(phi)) / elong)
            core = 1.0 / (1.0 + np.exp(-(radius - rr) / (0.05 * radius + 0.3)))
            halo = np.exp(-0.5 * ((rr - 1.12 * radius) / (0.06 * radius + 0.5)) ** 2)
            signal = c * core - 0.25 * c * halo
        else:
            spiculated = kind == "spiculated mass"
            boundary = _irregular_radius(rng, theta, radius * (0.9 if spiculated else 1.0),
                                         0.25 if spiculated else 0.12, 7 if spiculated else 4)
            margin = 0.1 * radius if spiculated else 0.05 * radius + 0.3     # defined margin
            core = 1.0 / (1.0 + np.exp(-(boundary - r) / margin))
            dome = 0.75 + 0.25 * np.sqrt(np.clip(1.0 - (r / radius) ** 2, 0.0, 1.0))
            signal = c * core * dome
            if spiculated:
                n = int(rng.integers(9, 18))
                angles = rng.uniform(0, 2 * np.pi, n)
                starts = 0.5 * radius * np.stack([np.sin(angles), np.cos(angles)])
                strands = _strands(y, x, starts, angles, rng.uniform(1.0, 2.2, n) * radius,
                                   max(0.7, 0.05 * radius))
                signal = np.maximum(signal, 0.55 * c * strands)
        footprint = (core > 0.5) | (strands > 0.5)
    else:
        boundary = _irregular_radius(rng, theta, radius, 0.25, 6)
        if kind == "architectural distortion":
            # Pull the tissue towards the centre, then draw radiating strands without a mass.
            pull = 0.7 * np.exp(-(r / (1.3 * radius)) ** 2)
            src = np.stack([r0 + y * (1.0 + pull), c0 + x * (1.0 + pull)])
            value[box] = ndimage.map_coordinates(value, src, order=1, mode="nearest")
            core = 1.0 / (1.0 + np.exp(-(0.45 * boundary - r) / (0.2 * radius)))
            n = int(rng.integers(10, 20))
            angles = rng.uniform(0, 2 * np.pi, n)
            starts = 0.1 * radius * np.stack([np.sin(angles), np.cos(angles)])
            strands = _strands(y, x, starts, angles, rng.uniform(1.0, 2.4, n) * radius, thin)
            signal = 0.4 * c * core + 0.8 * c * strands
            footprint = (r < boundary) | (strands > 0.5)
        else:
            # Diffuse density interleaved with fat, crossed by single-file strands in one
            # dominant direction (asymmetry: broader, fainter and with fewer strands).
            soft = 0.35 if kind == "asymmetry" else 0.25
            core = 1.0 / (1.0 + np.exp(-(boundary - r) / (soft * radius)))
            grain = ndimage.gaussian_filter(rng.standard_normal(r.shape).astype(np.float32),
                                            max(1.0, 0.12 * radius))
            grain = 0.6 + 0.4 * grain / max(float(grain.std()), 1e-6)
            n = int(rng.integers(4, 8) if kind == "asymmetry" else rng.integers(6, 13))
            angles = rng.uniform(0, np.pi) + rng.normal(0, 0.45, n)
            offsets = rng.uniform(-0.9, 0.9, n) * radius
            lengths = rng.uniform(1.2, 2.6, n) * radius
            starts = np.stack([-np.sin(angles) * lengths / 2 + offsets * np.cos(angles),
                               -np.cos(angles) * lengths / 2 - offsets * np.sin(angles)])
            strands = _strands(y, x, starts, angles, lengths, thin * rng.uniform(0.7, 1.4, n),
                               both_ends=True)
            signal = c * core * np.clip(grain, 0.0, None) + 0.8 * c * strands
            footprint = (core > 0.5) | (strands > 0.5)
    # Lesions attenuate less where the compressed breast is thin (near the skin).
    thick = np.sqrt(1.0 - (1.0 - np.clip(dist[box] / (0.16 * width), 0.0, 1.0)) ** 2)
    value[box] += (0.25 + 0.75 * thick) * signal
    mask[box] |= footprint
