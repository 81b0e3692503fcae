"""A seeded synthetic screening cohort: exams, four rendered views, lesions, density, readers.

Why: the demo, the tests and the benchmarks need a cohort with known truth and no patient data.
Everything it makes is labelled synthetic (``datasets.kind = 'synthetic'``, ``readers.synthetic
= true``, patients ``synthetic-P00001``...).

What is simulated, and the targets it is tuned to:

- density categories 0..3 in 10/40/40/10 % (exactly, within normal, benign, IDC and ILC
  exams, so small cohorts have cancers in every category), with a percent dense area drawn in the
  category's range (`core.demo.images.DENSITY_PERCENT`); the renderer draws exactly that
  share of the breast as dense;
- ``cancer_fraction`` of exams (default 20 %) have one cancer, half ILC and half IDC; IDC is a
  mass or spiculated mass, ILC an architectural distortion, asymmetry or ill-defined lesion,
  multifocal in a quarter of cases; 5 % of exams carry a benign mass instead. A lesion is seen
  in both views of its breast at the same depth from the nipple (row differs between CC/MLO);
- two radiologists (R1, R2) and a consensus read every breast. Each reader scores ``z = m +
  sqrt(rho) v + sqrt(1 - rho) e`` (``v`` shared by the readers of a breast, ``e`` their own),
  recalls when ``z > 0`` and reports ``score = 100 Phi(z)`` (0..100, recall iff score > 50).
  Consensus recalls when both readers do, or when one does and an arbitrator (a third such
  reader, not stored) agrees; its score is the mean of R1's and R2's. The means ``m`` are solved
  so that the consensus meets the screening sensitivities by density the study cites (87.7,
  77.6, 69.5, 61.0 % for categories 0..3), an exam-level specificity of 98 %, and ILC
  sensitivity ``HISTOLOGY_GAP`` below IDC (the mixture keeps the per-density targets).
  Conspicuity ``v`` also scales the rendered lesion's contrast, so missed cancers look subtler.
- exam-level reads are the maximum score and "any breast recalled" of the breast reads.

Determinism: tables come from one stream (``seed``), image ``i`` from its own stream
``(seed, 1, i)``, so the same seed gives identical tables and identical PNG bytes, and a
metadata-only build has the same tables as a full one (less the file columns).
"""
from __future__ import annotations

import hashlib
import io
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.special import ndtr

from core.errors import InputError
from core.progress import ProgressFn, report
from core.store.schema import TABLE_COLUMNS
from core.demo.images import (
    DENSITY_PERCENT, FIELD_HEIGHT_MM, Geometry, LesionSpec, breast_to_px, draw_geometries,
    pectoral_col, render_view,
)

__all__ = ["SyntheticCohort", "generate_cohort", "render_view", "VIEW_ORDER"]

VIEW_ORDER = (("L", "CC"), ("R", "CC"), ("L", "MLO"), ("R", "MLO"))  # images 4i .. 4i + 3
DENSITY_SHARES = (0.10, 0.40, 0.40, 0.10)
TARGET_SENSITIVITY = (0.877, 0.776, 0.695, 0.610)   # consensus, density categories 0..3
TARGET_SPECIFICITY = 0.98                            # consensus, exam level
HISTOLOGY_GAP = 0.16          # IDC sensitivity minus ILC sensitivity, per density category
ILC_SHARE = 0.5               # of cancers
BENIGN_FRACTION = 0.05        # of exams: a benign mass in one breast of a cancer-free exam
BENIGN_RECALL = 0.25          # consensus recall rate of a breast with a benign mass
READER_CORRELATION = 0.5      # rho: share of a reader's variance that both readers share
MULTIFOCAL_ILC = 0.25         # ILC cases with 2-3 foci
TEST_FRACTION = 0.4           # per stratum (normal, benign, IDC, ILC)
RADIUS_MM = {"IDC": (5.0, 11.0), "ILC": (7.0, 15.0), "satellite": (4.0, 8.0),
             "benign": (4.0, 9.0)}
PRESENTATIONS = {  # histology -> (presentation, probability); benign is a 'mass'
    "IDC": (("mass", 0.45), ("spiculated mass", 0.55)),
    "ILC": (("architectural distortion", 0.4), ("asymmetry", 0.3), ("ill-defined", 0.3)),
}
READERS = (("R1", "radiologist"), ("R2", "radiologist"), ("consensus", "consensus"))
BIT_DEPTH = 12                # stored range 0..4095 in 16-bit PNG files
MANUFACTURER = "ILCscope synthetic"
_NORMAL, _BENIGN, _IDC, _ILC = 0, 1, 2, 3
_DATE0, _N_DAYS = np.datetime64("2015-01-01"), 2192      # exam dates 2015-01-01 .. 2020-12-31


@dataclass(frozen=True)
class SyntheticCohort:
    """The cohort's store tables and lesion masks.

    tables : dict  datasets, exams, images, breasts, lesions, readers, reads, density; each a
        DataFrame with exactly `core.store.schema.TABLE_COLUMNS`' columns, in that order.
    masks : dict  image_id -> bool array of the image's shape, True on its lesions' footprints
        (every image with a lesion row, benign included); empty when metadata_only.
    """

    tables: dict[str, pd.DataFrame]
    masks: dict[str, np.ndarray]


def generate_cohort(root: Path | str | None, *, n_exams: int = 120, seed: int = 0,
                    dataset: str = "demo", image_shape: tuple[int, int] = (512, 320),
                    metadata_only: bool = False, cancer_fraction: float = 0.2,
                    test_fraction: float = TEST_FRACTION, workers: int = 2, progress: ProgressFn | None = None) -> SyntheticCohort:
    """Generate a synthetic screening cohort and, unless ``metadata_only``, its PNG files.

    Parameters
    ----------
    root : folder for the images (``root/<exam_key>/<L|R>-<CC|MLO>.png``, created, files
        overwritten); ignored, and may be None, with ``metadata_only``.
    n_exams : exams, 4 views each. The default 120 (480 images of 512 x 320) builds in ~10 s
        on two idle cores (~20 s on one).
    seed : int >= 0; the same seed gives identical tables and identical file bytes.
    dataset : name used in every id (``exam_id = f"{dataset}/{exam_key}"``).
    image_shape : (rows, cols), portrait like a mammogram; spacing_mm = 240 mm / rows.
    metadata_only : tables only, no pixels (images.path and sha256 are None): 100k exams in a
        few seconds, for benchmarks. Lesion coordinates still refer to ``image_shape``.
    cancer_fraction : share of exams with a cancer (exact count, rounded), half ILC, half IDC.
    test_fraction : share of each stratum (normal, benign, IDC, ILC) in the test split.
    workers : threads that render and write images; the output does not depend on it.
    progress : called as ``progress(done, total, message)`` per rendered image.

    Returns
    -------
    SyntheticCohort  tables and masks; ``datasets.root`` is ``root`` made absolute.
    """
    _check(root, n_exams, seed, dataset, image_shape, metadata_only, cancer_fraction, workers)
    if isinstance(test_fraction, bool) or not 0.0 <= float(test_fraction) <= 1.0:
        raise InputError(f"test_fraction={test_fraction!r}: expected 0 .. 1 (the default is "
                         f"{TEST_FRACTION:g})")
    shape = (int(image_shape[0]), int(image_shape[1]))
    plan = _plan(int(n_exams), int(seed), dataset, shape, float(cancer_fraction),
                 float(test_fraction))
    tables = plan["tables"]
    tables["datasets"] = pd.DataFrame([{
        "dataset": dataset, "kind": "synthetic", "source": "synthetic",
        "root": None if metadata_only else str(Path(root).resolve()),
        "notes": (f"ILCscope synthetic cohort (seed {seed}, {n_exams} exams, {shape[0]} x "
                  f"{shape[1]} px): procedural 12-bit MONOCHROME2 images in 16-bit PNG, "
                  "simulated readers. Not patient data."),
    }], columns=TABLE_COLUMNS["datasets"])
    masks: dict[str, np.ndarray] = {}
    if not metadata_only:
        masks = _render_all(Path(root), plan, int(seed), shape, int(workers), progress)
    return SyntheticCohort({k: tables[k] for k in _TABLES}, masks)


_TABLES = ("datasets", "exams", "images", "breasts", "lesions", "readers", "reads", "density")


def _check(root, n_exams, seed, dataset, image_shape, metadata_only, cancer_fraction,
           workers) -> None:
    if isinstance(n_exams, bool) or not isinstance(n_exams, (int, np.integer)) or n_exams < 1:
        raise InputError(f"n_exams={n_exams!r}: expected a whole number >= 1 (default 120)")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed={seed!r}: expected a whole number >= 0")
    if not isinstance(dataset, str) or not dataset or "/" in dataset or dataset != dataset.strip():
        raise InputError(f"dataset={dataset!r}: expected a non-empty name without '/' or "
                         "surrounding spaces, e.g. 'demo'")
    if (len(tuple(image_shape)) != 2 or
            any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 32
                for v in image_shape)):
        raise InputError(f"image_shape={image_shape!r}: expected (rows, cols), whole numbers "
                         ">= 32, e.g. (512, 320)")
    if (isinstance(cancer_fraction, bool) or not isinstance(cancer_fraction, (int, float, np.number))
            or not 0.0 <= cancer_fraction <= 1.0 - BENIGN_FRACTION):
        raise InputError(f"cancer_fraction={cancer_fraction!r}: expected 0 .. "
                         f"{1 - BENIGN_FRACTION:g} (the default is 0.2)")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise InputError(f"workers={workers!r}: expected a whole number >= 1 (default 2)")
    if root is None and not metadata_only:
        raise InputError("root is None: pass a folder for the PNG files, or metadata_only=True")


# --- readers -----------------------------------------------------------------------------------

_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(64)
_GH_WEIGHTS = _GH_WEIGHTS / _GH_WEIGHTS.sum()


def _consensus_rate(mean: float) -> float:
    """P(consensus recall) for reader mean ``mean``: majority of R1, R2 and the arbitrator."""
    rho = READER_CORRELATION
    p = ndtr((mean + np.sqrt(rho) * _GH_NODES) / np.sqrt(1.0 - rho))
    return float(_GH_WEIGHTS @ (p * p * (3.0 - 2.0 * p)))


def _solve_mean(rate: float) -> float:
    lo, hi = -12.0, 12.0
    for _ in range(80):                     # bisection: _consensus_rate is increasing
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _consensus_rate(mid) < rate else (lo, mid)
    return 0.5 * (lo + hi)


def _reader_means(cancer_fraction: float) -> np.ndarray:
    """Reader mean ``m`` per (status, density category): shape (4, 4)."""
    means = np.empty((4, 4))
    # Exam specificity = (1-beta) q^2 + beta q (1 - BENIGN_RECALL), q = 1 - normal breast rate.
    beta = min(BENIGN_FRACTION / max(1.0 - cancer_fraction, 1e-9), 1.0)
    qa, qb = 1.0 - beta, beta * (1.0 - BENIGN_RECALL)
    q = (-qb + np.sqrt(qb * qb + 4 * qa * TARGET_SPECIFICITY)) / (2 * qa) if qa > 0 else 1.0
    means[_NORMAL] = _solve_mean(1.0 - q)
    means[_BENIGN] = _solve_mean(BENIGN_RECALL)
    for k, target in enumerate(TARGET_SENSITIVITY):
        means[_IDC, k] = _solve_mean(target + HISTOLOGY_GAP * ILC_SHARE)
        means[_ILC, k] = _solve_mean(target - HISTOLOGY_GAP * (1.0 - ILC_SHARE))
    return means


def _reads(rng, status, density, exam_ids, cancer_fraction) -> tuple[pd.DataFrame, np.ndarray]:
    """Breast- and exam-level reads of R1, R2 and consensus; also the breasts' conspicuity."""
    n_breasts = status.size
    mean = _reader_means(cancer_fraction)[status, density]
    shared = rng.standard_normal(n_breasts)
    own = rng.standard_normal((3, n_breasts))
    rho = READER_CORRELATION
    z = mean + np.sqrt(rho) * shared + np.sqrt(1.0 - rho) * own        # R1, R2, arbitrator
    recall = z > 0
    score = 100.0 * ndtr(z[:2])
    consensus = (recall[0] & recall[1]) | ((recall[0] ^ recall[1]) & recall[2])
    b_score = np.vstack([score, score.mean(axis=0)])                   # (3, n_breasts)
    b_recall = np.vstack([recall[:2], consensus])
    e_score = b_score.reshape(3, -1, 2).max(axis=2)                    # breasts are L, R
    e_recall = b_recall.reshape(3, -1, 2).any(axis=2)
    n_exams = e_score.shape[1]
    exam_b = np.repeat(exam_ids, 2)
    lat_b = np.tile(np.array(["L", "R"], dtype=object), n_exams)
    case_b = np.array([f"{e}/{lat}" for e, lat in zip(exam_b, lat_b)], dtype=object)
    frames = []
    for r, (reader, _) in enumerate(READERS):
        frames.append(pd.DataFrame({
            "reader": reader, "level": "exam", "case_id": exam_ids, "exam_id": exam_ids,
            "laterality": None, "image_id": None, "score": e_score[r], "recall": e_recall[r]}))
        frames.append(pd.DataFrame({
            "reader": reader, "level": "breast", "case_id": case_b, "exam_id": exam_b,
            "laterality": lat_b, "image_id": None, "score": b_score[r], "recall": b_recall[r]}))
    reads = pd.concat(frames, ignore_index=True)[list(TABLE_COLUMNS["reads"])]
    return reads, shared


# --- the plan: every table, and what the renderer needs ----------------------------------------

def _plan(n: int, seed: int, dataset: str, shape: tuple[int, int], cancer_fraction: float,
          test_fraction: float = TEST_FRACTION) -> dict:
    rng = np.random.default_rng([seed, 0])
    width = max(5, len(str(n)))
    exam_keys = np.array([f"E{i + 1:0{width}d}" for i in range(n)], dtype=object)
    exam_ids = np.array([f"{dataset}/{k}" for k in exam_keys], dtype=object)

    # Exams: status by exact counts, density, age, date, the lesion side, a stratified split.
    n_cancer = int(round(cancer_fraction * n))
    n_ilc = int(round(n_cancer * ILC_SHARE))
    n_benign = min(int(round(BENIGN_FRACTION * n)), n - n_cancer)
    order = rng.permutation(n)
    status = np.full(n, _NORMAL)
    status[order[:n_ilc]] = _ILC
    status[order[n_ilc:n_cancer]] = _IDC
    status[order[n_cancer:n_cancer + n_benign]] = _BENIGN
    density = np.zeros(n, int)
    for s in (_NORMAL, _BENIGN, _IDC, _ILC):      # exact shares per stratum: every category
        members = np.flatnonzero(status == s)      # has ILC and IDC cases even at n = 120
        density[members] = rng.permutation(_exact_counts(members.size, DENSITY_SHARES))
    ranges = np.array(DENSITY_PERCENT)
    percent = np.round(rng.uniform(ranges[density, 0], ranges[density, 1]), 1)
    age = rng.integers(40, 75, n).astype(float)
    dates = _DATE0 + rng.integers(0, _N_DAYS, n).astype("timedelta64[D]")
    side = rng.integers(0, 2, n)                                     # 0 = L, 1 = R
    test = np.zeros(n, bool)
    for s in (_NORMAL, _BENIGN, _IDC, _ILC):
        members = rng.permutation(np.flatnonzero(status == s))
        test[members[:int(round(test_fraction * members.size))]] = True
    exams = pd.DataFrame({
        "exam_id": exam_ids, "dataset": dataset, "exam_key": exam_keys,
        "patient": [f"synthetic-P{i + 1:0{width}d}" for i in range(n)],
        "exam_date": pd.to_datetime(dates), "age": age,
        "split": np.where(test, "test", "train").astype(object)})

    # Presentation and foci per exam (drawn for all, used where there is a lesion).
    u = rng.random(n)
    kind = np.full(n, "", dtype=object)
    for s, hist in ((_IDC, "IDC"), (_ILC, "ILC")):
        names = [p for p, _ in PRESENTATIONS[hist]]
        cuts = np.cumsum([w for _, w in PRESENTATIONS[hist]])
        pick = np.minimum(np.searchsorted(cuts, u), len(names) - 1)
        kind[status == s] = np.array(names, dtype=object)[pick[status == s]]
    kind[status == _BENIGN] = "benign mass"
    extra = (rng.random(n) < MULTIFOCAL_ILC) * rng.integers(1, 3, n)
    n_foci = np.where(status == _ILC, 1 + extra, (status != _NORMAL).astype(int))

    # Breasts (L, R per exam) and their reads.
    b_exam = np.repeat(np.arange(n), 2)
    b_lat = np.tile([0, 1], n)
    lesion_breast = (status[b_exam] != _NORMAL) & (side[b_exam] == b_lat)
    b_status = np.where(lesion_breast, status[b_exam], _NORMAL)
    reads, conspicuity = _reads(rng, b_status, density[b_exam], exam_ids, cancer_fraction)
    histology = np.array(["none", "none", "IDC", "ILC"], dtype=object)[b_status]
    b_kind = np.where(lesion_breast, kind[b_exam], "none")
    breasts = pd.DataFrame({
        "exam_id": np.repeat(exam_ids, 2), "laterality": np.array(["L", "R"], object)[b_lat],
        "cancer": (b_status >= _IDC).astype(np.int8), "histology": histology,
        "presentation": np.where(b_kind == "benign mass", "mass", b_kind).astype(object),
        "pathology": np.array(["none", "benign", "malignant", "malignant"],
                              dtype=object)[b_status]})

    # Images: four per exam in VIEW_ORDER, each with its outline.
    lat_v = np.array([lat for lat, _ in VIEW_ORDER], dtype=object)
    view_v = np.array([view for _, view in VIEW_ORDER], dtype=object)
    i_exam = np.repeat(np.arange(n), 4)
    i_lat, i_view = np.tile(lat_v, n), np.tile(view_v, n)
    geometry = draw_geometries(rng, i_view == "MLO")
    image_keys = np.array([f"{k}/{lat}-{v}" for k, lat, v in
                           zip(exam_keys[i_exam], i_lat, i_view)], dtype=object)
    spacing = FIELD_HEIGHT_MM / shape[0]
    images = pd.DataFrame({
        "image_id": [f"{dataset}/{k}" for k in image_keys], "exam_id": exam_ids[i_exam],
        "dataset": dataset, "image_key": image_keys, "laterality": i_lat,
        "laterality_source": "synthetic", "view": i_view, "path": None, "sha256": None,
        "height": shape[0], "width": shape[1], "bit_depth": BIT_DEPTH, "spacing_mm": spacing,
        "photometric": "MONOCHROME2", "manufacturer": MANUFACTURER, "display_path": None})

    b_foci = np.where(lesion_breast, n_foci[b_exam], 0)
    lesions, render_lesions = _lesions(rng, b_status, b_kind, b_foci, conspicuity,
                                       geometry, images, spacing, shape)
    density_table = pd.DataFrame({
        "source": "label", "level": "exam", "case_id": exam_ids, "exam_id": exam_ids,
        "laterality": None, "image_id": None, "category": density.astype(np.int8),
        "score": percent, "p0": np.nan, "p1": np.nan, "p2": np.nan, "p3": np.nan})
    readers = pd.DataFrame({"reader": [r for r, _ in READERS], "kind": [k for _, k in READERS],
                            "synthetic": True})
    tables = {"exams": exams, "images": images, "breasts": breasts, "lesions": lesions,
              "readers": readers, "reads": reads, "density": density_table}
    tables = {k: v[list(TABLE_COLUMNS[k])] for k, v in tables.items()}
    return {"tables": tables, "geometry": geometry, "density": density[i_exam],
            "percent": percent[i_exam], "lesions": render_lesions}


def _exact_counts(n: int, shares) -> np.ndarray:
    """``n`` category labels in the given shares, rounded by largest remainder (sorted)."""
    quota = np.asarray(shares) * n
    counts = np.floor(quota).astype(int)
    counts[np.argsort(counts - quota, kind="stable")[:n - counts.sum()]] += 1
    return np.repeat(np.arange(len(shares)), counts)


def _lesions(rng, b_status, b_kind, b_foci, conspicuity, geometry, images, spacing, shape):
    """One row per lesion focus and view, placed consistently in the CC and MLO of a breast."""
    breast = np.repeat(np.arange(b_status.size), b_foci)
    focus = np.arange(breast.size) - np.repeat(np.cumsum(b_foci) - b_foci, b_foci) + 1
    status = b_status[breast]
    lo = np.select([status == _BENIGN, status == _IDC, focus > 1],
                   [RADIUS_MM["benign"][0], RADIUS_MM["IDC"][0], RADIUS_MM["satellite"][0]],
                   RADIUS_MM["ILC"][0])
    hi = np.select([status == _BENIGN, status == _IDC, focus > 1],
                   [RADIUS_MM["benign"][1], RADIUS_MM["IDC"][1], RADIUS_MM["satellite"][1]],
                   RADIUS_MM["ILC"][1])
    radius_px = rng.uniform(lo, hi) / spacing
    exam, lat = breast // 2, breast % 2
    img_cc, img_mlo = 4 * exam + lat, 4 * exam + 2 + lat             # VIEW_ORDER
    a, b_cc, b_mlo = _place(rng, geometry, img_cc, img_mlo, radius_px, focus, shape)
    contrast = np.clip(np.exp(0.3 * conspicuity[breast]), 0.6, 1.6)

    rows = []
    for img, b in ((img_cc, b_cc), (img_mlo, b_mlo)):
        g = {k: v[img] for k, v in geometry.items()}
        row, col = breast_to_px(g, a, b, shape)
        col = np.where(lat == 1, shape[1] - 1 - col, col)            # R is mirrored
        rows.append(pd.DataFrame({"img": img, "focus": focus, "breast": breast,
                                  "row_px": np.round(row, 2), "col_px": np.round(col, 2),
                                  "radius_px": np.round(radius_px, 2),
                                  "kind": b_kind[breast], "contrast": contrast}))
    both = pd.concat(rows, ignore_index=True).sort_values(["img", "focus"], kind="stable")
    image_id = images["image_id"].to_numpy()[both["img"].to_numpy()]
    s = b_status[both["breast"].to_numpy()]
    lesions = pd.DataFrame({
        "lesion_id": [f"{i}/lesion{k}" for i, k in zip(image_id, both["focus"])],
        "image_id": image_id, "exam_id": images["exam_id"].to_numpy()[both["img"].to_numpy()],
        "laterality": images["laterality"].to_numpy()[both["img"].to_numpy()],
        "presentation": both["kind"].replace({"benign mass": "mass"}).to_numpy(),
        "pathology": np.where(s == _BENIGN, "benign", "malignant").astype(object),
        "histology": np.array(["none", "none", "IDC", "ILC"], dtype=object)[s],
        "row_px": both["row_px"].to_numpy(), "col_px": both["col_px"].to_numpy(),
        "radius_px": both["radius_px"].to_numpy()})
    return lesions, both.reset_index(drop=True)


def _place(rng, geometry, img_cc, img_mlo, radius_px, focus, shape):
    """Breast coordinates (a, b_cc, b_mlo) that fit both views; satellites near focus 1."""
    n = radius_px.size
    a, b_cc, b_mlo = np.full(n, 0.5), np.zeros(n), np.full(n, 0.3)
    primary = np.flatnonzero(focus == 1)
    head = np.zeros(n, int)        # index of each focus' primary (focus 1 precedes its satellites)
    head[primary] = primary
    head = np.maximum.accumulate(head)
    for todo, satellites in ((primary, False), (np.flatnonzero(focus > 1), True)):
        for _ in range(200):
            if todo.size == 0:
                break
            u = rng.uniform(-1.0, 1.0, (3, todo.size))
            if satellites:
                p = head[todo]
                cand = (a[p] + 0.12 * u[0], b_cc[p] + 0.2 * u[1], b_mlo[p] + 0.2 * u[2])
            else:
                cand = (0.5 + 0.3 * u[0], 0.65 * u[1], 0.65 * u[2])
            ok = (_fits(geometry, img_cc[todo], cand[0], cand[1], radius_px[todo], shape)
                  & _fits(geometry, img_mlo[todo], cand[0], cand[2], radius_px[todo], shape))
            a[todo[ok]], b_cc[todo[ok]], b_mlo[todo[ok]] = (c[ok] for c in cand)
            todo = todo[~ok]
        if satellites and todo.size:   # rare: sit beside the primary
            p = head[todo]
            a[todo], b_cc[todo], b_mlo[todo] = a[p] - 0.05, b_cc[p], b_mlo[p]
    return a, b_cc, b_mlo


def _fits(geometry, img, a, b, radius_px, shape) -> np.ndarray:
    """Lesion well inside the outline, off the image edges and clear of the pectoral muscle."""
    g = {k: v[img] for k, v in geometry.items()}
    row, col = breast_to_px(g, a, b, shape)
    return ((a >= 0.15) & (a ** g["power"] + np.abs(b) ** g["power"] <= 0.55)
            & (row >= 1.2 * radius_px) & (row <= shape[0] - 1 - 1.2 * radius_px)
            & (col >= pectoral_col(g, row, shape) + 1.5 * radius_px))


# --- pixels ------------------------------------------------------------------------------------

def _render_all(root: Path, plan: dict, seed: int, shape, workers: int,
                progress) -> dict[str, np.ndarray]:
    """Render, encode and write every image; threads share the work (numpy, scipy and zlib
    release the GIL), and each image's own random stream keeps the bytes independent of them."""
    images = plan["tables"]["images"]
    by_image = dict(iter(plan["lesions"].groupby("img", sort=True)))
    geometry = plan["geometry"]
    laterality, view, keys = (images[c].to_numpy() for c in ("laterality", "view", "image_key"))

    def one(i: int) -> tuple[str, np.ndarray | None]:
        group = by_image.get(i)
        specs = [] if group is None else [
            LesionSpec(*spec) for spec in zip(group["kind"], group["row_px"], group["col_px"],
                                               group["radius_px"], group["contrast"])]
        pixels, mask = render_view(
            np.random.default_rng([seed, 1, i]), laterality=laterality[i], view=view[i],
            density=int(plan["density"][i]), lesions=specs, shape=shape,
            geometry=Geometry(**{f: float(v[i]) for f, v in geometry.items()}),
            percent_density=float(plan["percent"][i]))
        data = _png_bytes(pixels)
        target = root / f"{keys[i]}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return hashlib.sha256(data).hexdigest(), (mask if specs else None)

    masks, hashes, total = {}, [], len(images)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, (digest, mask) in enumerate(pool.map(one, range(total))):
            hashes.append(digest)
            if mask is not None:
                masks[images["image_id"].iat[i]] = mask
            report(progress, i + 1, total, keys[i])
    images["path"] = [f"{k}.png" for k in keys]
    images["sha256"] = hashes
    return masks


def _png_bytes(pixels: np.ndarray) -> bytes:
    """16-bit greyscale PNG, Huffman-only deflate: on noisy 12-bit pixels it is 14x faster
    than Pillow's default level 6 and the file is ~1 % larger (210 kB for 512 x 320)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1,
                                 compress_type=zlib.Z_HUFFMAN_ONLY)
    return buffer.getvalue()
