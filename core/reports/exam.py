"""One exam as a radiologist hangs it: the four views, their truth, the reads and every score.

What the Exam view shows (the Saliency and Radiologist-complement pages link to it): why one
module is that the view's numbers must be the store's own, so the scores here follow
`core.reports.scores.model_scores`'s rule (a level's stored predictions if the model has any
there, else the maximum of its image scores over the case's views, `core.stats.aggregate_scores`)
and the reads are the ``reads`` rows as stored. Pure over a `Store`: no Streamlit, no torch.

Display convention (the hanging protocol). Screen positions in `HANGING_ORDER`: R-CC beside
L-CC on the top row, R-MLO beside L-MLO below, chest walls facing: a right breast's chest wall on
the right edge of its tile, a left breast's on the left (the breasts meet back to back in the
middle, nipples pointing outwards). Each image is oriented by its *pixels*, not by its stored
laterality alone: `core.image.segmentation.chest_wall_side` finds where the chest wall is, and
the tile is mirrored when that side is not the one its laterality should show. The flip is
recorded (`HangingImage.flipped`), so a mirrored file, or a laterality that contradicts the
pixels, is visible instead of silently "fixed". The image's rows are never flipped.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import InputError
from core.image.segmentation import chest_wall_side
from core.saliency.maps import read_saliency
from core.io.display import ScreenImage, display_image, render_display
from core.io.pixels import block_mean
from core.stats import aggregate_scores
from core.reports.scores import prediction_levels_of
from core.store import Store
from core.validation import check_aggregation
from core.vocabulary import HISTOLOGY_RANK, LEVELS

__all__ = [
    "DISPLAY_LONG_SIDE",
    "HANGING_ORDER",
    "ExamReport",
    "HangingImage",
    "TileOverlay",
    "exam_id_of",
    "exam_images",
    "exam_overlays",
    "exam_report",
    "saliency_models",
    "hanging_image",
    "score_scale",
    "screen_chest_wall",
]

# (laterality, view) at screen positions 0..3: top-left, top-right, bottom-left, bottom-right.
HANGING_ORDER = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))
DISPLAY_LONG_SIDE = 512   # pixels: four tiles fit a page, ~0.25 MB each as 8-bit


def screen_chest_wall(laterality: str) -> str:
    """The tile edge a breast's chest wall is shown on: 'right' for R, 'left' for L."""
    return "right" if laterality == "R" else "left"


@dataclass(frozen=True)
class ExamReport:
    """Everything the Exam view shows for one exam, from the store's own rows.

    exam : the ``exams`` row (dataset, exam_key, age, exam_date, split) as a dict, plus the
        exam's truth: label (1 = cancer in either breast) and histology (ILC > IDC > other >
        unknown > none, as the store's ``cases`` table).
    tiles : 4 rows in `HANGING_ORDER`: position, laterality, view, image_id (None: the view is
        missing), abs_path, display_abs (8-bit display copy on disk, or None), height, width,
        spacing_mm, laterality_source, screen_chest_wall.
    extra_images : images of the exam that no tile shows (other views, repeated views), with
        the same columns but no position.
    breasts : one row per stored breast (L, R): laterality, label, histology, presentation,
        pathology.
    reads : every read of the exam: reader, kind, level, case_id, laterality, image_id, score,
        recall, scale; readers in `Store.readers` order (radiologists first), then level,
        case_id. ``scale`` names the range the reader's scores lie on (`score_scale`).
    study_reads : the exam's reads in reader studies over store cases: study, reader,
        modality, level, case_id, laterality, image_id, rating, rating_scale (the study's
        stated scale, e.g. 'BI-RADS 1-5'; 'not stated' where the study gave none).
    scores : one row per (model, case) of the exam at each level (image, breast, exam):
        model, level, case_id, laterality, image_id, view, score (malignant; NaN = none),
        benign, score_source ('stored', 'image max' / 'image mean', or 'none').
    notes : sentences the view shows (missing views, extra images).
    """

    exam_id: str
    exam: dict
    tiles: pd.DataFrame
    extra_images: pd.DataFrame
    breasts: pd.DataFrame
    reads: pd.DataFrame
    scores: pd.DataFrame
    notes: tuple[str, ...]
    study_reads: pd.DataFrame | None = None


@dataclass(frozen=True)
class HangingImage:
    """One view ready for the screen.

    pixels : uint8 array of shape (h, w), long side <= the asked ``long_side``; brighter =
        denser; mirrored when ``flipped``.
    chest_wall : 'left' or 'right', where the chest wall is in the stored file's pixels.
    flipped : whether the tile is the file's mirror image (chest wall moved to its hanging side).
    source : 'display copy' (a pre-issue-33 store's 8-bit copy), 'DICOM window' (the file's
        own) or 'percentile window' (0.5-99.5 % of the non-air pixels of the downscaled image,
        `core.io.pixels.to_display`); see `core.io.display`.
    original_shape : (rows, cols) of the file that was read.
    factor : the file's pixels per tile pixel along each axis (block means of factor x factor).
    """

    pixels: np.ndarray
    chest_wall: str
    flipped: bool
    source: str
    original_shape: tuple[int, int]
    factor: int


def exam_id_of(store: Store, case_id: str) -> str:
    """The exam a case id belongs to: an exam id, an image id or a breast's ``<exam_id>/<L|R>``.

    So a link from any table (image, breast or exam level) opens the right exam.
    """
    text = str(case_id).strip()
    if not text:
        raise InputError("exam id is empty; pass an exam id such as demo/E0001 or any case id")
    if len(store.select("exams", exam_id=text)):
        return text
    image = store.select("images", image_id=text)
    if len(image):
        return str(image["exam_id"].iat[0])
    head, _, lat = text.rpartition("/")
    if lat in ("L", "R") and len(store.select("exams", exam_id=head)):
        return head
    raise InputError(f"exam {text!r} is not in the store; pass an exam id, an image id or a "
                     f"breast id (<exam_id>/L or /R) from the store's tables")


def exam_report(store: Store, exam_id: str, *, models: Sequence[str] | None = None,
                how: str = "max") -> ExamReport:
    """The exam's views in hanging order, its truth, reads and scores (see `ExamReport`).

    ``exam_id`` may be any case id of the exam (`exam_id_of`). ``models`` None: every model
    with a prediction on this exam, in `Store.model_names` order. ``how`` aggregates image
    scores for a level where a model has no stored predictions ('max', the benchmark's
    default, or 'mean').
    """
    how = check_aggregation(how)
    exam_id = exam_id_of(store, exam_id)
    exam = store.select("exams", exam_id=exam_id).iloc[0].to_dict()
    ids = store.select("images", exam_id=exam_id)["image_id"].tolist()
    images = store.images(image_ids=ids) if ids else store.select("images", exam_id=exam_id)
    tiles, extra, notes = _tiles(store, images)
    breasts = (store.select("breasts", exam_id=exam_id).sort_values("laterality")
               .rename(columns={"cancer": "label"}).reset_index(drop=True))
    breasts = breasts[["laterality", "label", "histology", "presentation", "pathology"]]
    labels = breasts["label"].dropna()
    exam["label"] = int(labels.max()) if len(labels) else None
    ranks = breasts["histology"].map(HISTOLOGY_RANK)
    exam["histology"] = (breasts["histology"].iat[int(ranks.to_numpy().argmax())]
                         if len(breasts) else None)
    predictions = store.select("predictions", exam_id=exam_id)
    if models is None:
        present = set(predictions["model"])
        models = [m for m in store.model_names() if m in present]
    scores = _scores(store, exam_id, images, breasts, predictions, list(models), how)
    return ExamReport(exam_id=exam_id, exam=exam, tiles=tiles, extra_images=extra,
                      breasts=breasts, reads=_reads(store, exam_id), scores=scores,
                      notes=tuple(notes), study_reads=_study_reads(store, exam_id, images))


def _tiles(store: Store, images: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The image of each hanging position (the first by image_id when a view repeats)."""
    images = images.sort_values("image_id").copy()
    display = images["display_path"]
    images["display_abs"] = [None if not isinstance(p, str) else str(store.files_dir / p)
                             for p in display]
    if "abs_path" not in images:
        images["abs_path"] = None
    images["screen_chest_wall"] = images["laterality"].map(screen_chest_wall)
    columns = ["laterality", "view", "image_id", "abs_path", "display_abs", "height", "width",
               "spacing_mm", "laterality_source", "screen_chest_wall"]
    rows, used, notes = [], set(), []
    for position, (lat, view) in enumerate(HANGING_ORDER):
        match = images[(images["laterality"] == lat) & (images["view"] == view)]
        if match.empty:
            rows.append(dict(position=position, laterality=lat, view=view,
                             screen_chest_wall=screen_chest_wall(lat)))
            notes.append(f"No {lat}-{view} image in this exam.")
            continue
        row = match.iloc[0]
        used.add(row["image_id"])
        rows.append(dict(position=position, **{c: row[c] for c in columns}))
        if len(match) > 1:
            notes.append(f"{len(match)} {lat}-{view} images: the tile shows {row['image_id']}; "
                         "the others are listed below.")
    tiles = pd.DataFrame(rows, columns=["position", *columns])
    for column in ("image_id", "abs_path", "display_abs"):   # None, not NaN, where absent
        tiles[column] = pd.Series([v if isinstance(v, str) else None for v in tiles[column]],
                                  dtype=object)
    extra = images.loc[~images["image_id"].isin(used), columns].reset_index(drop=True)
    if len(extra):
        notes.append(f"{len(extra)} more image(s) not in the four standard views: "
                     f"{', '.join(extra['image_id'])}.")
    return tiles, extra, notes


def _reads(store: Store, exam_id: str) -> pd.DataFrame:
    reads = store.select("reads", exam_id=exam_id)
    readers = store.readers()
    order = {r: i for i, r in enumerate(readers["reader"])}
    kinds = dict(zip(readers["reader"], readers["kind"]))
    reads = reads.assign(kind=reads["reader"].map(kinds),
                         _reader=reads["reader"].map(order),
                         _level=reads["level"].map({lv: i for i, lv in enumerate(LEVELS)}))
    reads = reads.sort_values(["_reader", "_level", "case_id"]).reset_index(drop=True)
    scales = {}
    for reader in reads["reader"].unique():   # the reader's scores over the whole store
        scales[reader] = score_scale(store.select("reads", reader=reader)["score"])
    reads["scale"] = reads["reader"].map(scales)
    return reads[["reader", "kind", "level", "case_id", "laterality", "image_id", "score",
                  "recall", "scale"]]


def score_scale(scores) -> str:
    """The scale a reader's scores are on, named from their range, since the ``reads`` table
    stores no scale: '0-1' (a probability), '1-5' or '0-6' (whole numbers, a BI-RADS-like
    category), '0-100', else the observed 'min-max'; 'decisions only' without scores.

    Why a name at all: a 4 means little until one knows whether it is out of 5 or of 100.
    """
    values = pd.to_numeric(pd.Series(scores, dtype=object), errors="coerce").dropna()
    values = values.to_numpy(dtype=float)
    if values.size == 0:
        return "decisions only"
    low, high = float(values.min()), float(values.max())
    whole = bool(np.all(values == np.round(values)))
    if low >= 0 and high <= 1:
        return "0-1"
    if whole and low >= 1 and high <= 5:
        return "1-5"
    if whole and low >= 0 and high <= 6:
        return "0-6"
    if low >= 0 and high <= 100:
        return "0-100"
    return f"{low:g}-{high:g}"


def _study_reads(store: Store, exam_id: str, images: pd.DataFrame) -> pd.DataFrame:
    """The exam's ratings in reader studies whose cases are the store's own."""
    columns = ["study", "reader", "modality", "level", "case_id", "laterality", "image_id",
               "rating", "rating_scale"]
    studies = store.select("reader_studies")
    studies = studies[studies["store_cases"].fillna(False).astype(bool)]
    laterality = dict(zip(images["image_id"], images["laterality"]))
    cases = {exam_id: ("exam", None, None)}
    cases |= {f"{exam_id}/{lat}": ("breast", lat, None) for lat in set(laterality.values())}
    cases |= {i: ("image", lat, i) for i, lat in laterality.items()}
    if studies.empty:
        return pd.DataFrame(columns=columns)
    reads = store.select("study_reads", study=studies["study"].tolist(), case_id=list(cases))
    scale = dict(zip(studies["study"], studies["rating_scale"]))
    reads = reads.assign(
        level=reads["case_id"].map(lambda c: cases[c][0]),
        laterality=reads["case_id"].map(lambda c: cases[c][1]),
        image_id=reads["case_id"].map(lambda c: cases[c][2]),
        rating_scale=[scale.get(st) if isinstance(scale.get(st), str) else "not stated"
                      for st in reads["study"]])
    return reads.sort_values(["study", "reader", "modality", "case_id"]).reset_index(
        drop=True)[columns]


def _cases(exam_id: str, images: pd.DataFrame, breasts: pd.DataFrame) -> pd.DataFrame:
    """The exam's case ids at every level, with the image truth aggregate_scores needs."""
    image_cases = images.sort_values("image_id").merge(
        breasts[["laterality", "label", "histology"]], on="laterality", how="left")
    rows = [dict(level="image", case_id=r.image_id, laterality=r.laterality,
                 image_id=r.image_id, view=r.view) for r in image_cases.itertuples()]
    rows += [dict(level="breast", case_id=f"{exam_id}/{lat}", laterality=lat, image_id=None,
                  view=None) for lat in breasts["laterality"]]
    rows.append(dict(level="exam", case_id=exam_id, laterality=None, image_id=None, view=None))
    return pd.DataFrame(rows), image_cases


def _scores(store: Store, exam_id: str, images: pd.DataFrame, breasts: pd.DataFrame,
            predictions: pd.DataFrame, models: list[str], how: str) -> pd.DataFrame:
    """Each model's score per case, from the level's stored rows or the image aggregate."""
    cases, image_truth = _cases(exam_id, images, breasts)
    known = store.prediction_levels()
    parts = []
    for model in models:
        levels = prediction_levels_of(known, model)   # the benchmark's rule, one exam
        mine = predictions[predictions["model"] == model]
        image_rows = mine[mine["level"] == "image"].set_index("case_id")
        for level in LEVELS:
            part = cases[cases["level"] == level].assign(model=model)
            if level in levels:
                stored = mine[mine["level"] == level].set_index("case_id")
                part = part.assign(score=part["case_id"].map(stored["malignant"]),
                                   benign=part["case_id"].map(stored["benign"]),
                                   score_source="stored")
            elif "image" in levels:
                frame = image_truth.assign(model=model, case_id=image_truth["image_id"],
                                           score=image_truth["image_id"].map(
                                               image_rows["malignant"]).astype(float))
                agg = aggregate_scores(frame, level=level, how=how).set_index("case_id")
                part = part.assign(score=part["case_id"].map(agg["score"]), benign=math.nan,
                                   score_source=f"image {how}")
            else:
                part = part.assign(score=math.nan, benign=math.nan, score_source="none")
            parts.append(part)
    columns = ["model", "level", "case_id", "laterality", "image_id", "view", "score", "benign",
               "score_source"]
    if not parts:
        return pd.DataFrame(columns=columns)
    out = pd.concat(parts, ignore_index=True)
    return out.astype({"score": float, "benign": float})[columns]


# ---------------------------------------------------------------------------- pixels

def hanging_image(path: str | Path | None, *, laterality: str,
                  display_path: str | Path | None = None,
                  long_side: int = DISPLAY_LONG_SIDE) -> HangingImage:
    """Read one image file (nothing cached) and turn it into its hanging-protocol tile.

    Grey levels as `core.io.display.render_display` makes them (a pre-issue-33 display copy
    when ``display_path`` exists, else the file's own DICOM window, else percentiles).
    """
    return _hang(render_display(path, long_side=long_side, display_path=display_path),
                 laterality)


def _hang(shown: ScreenImage, laterality: str) -> HangingImage:
    """Why the order downscale -> orient: `chest_wall_side` then runs on ~512 x 400 pixels, so a
    3328 x 2560 16-bit view costs its decoding plus a few tens of milliseconds, and nothing
    at all once its screen copy is cached (bench/exam_view.py)."""
    if laterality not in ("L", "R"):
        raise InputError(f"laterality is {laterality!r}; pass 'L' or 'R'")
    side = chest_wall_side(shown.pixels)
    flipped = side != screen_chest_wall(laterality)
    grey = shown.pixels
    return HangingImage(pixels=np.ascontiguousarray(grey[:, ::-1] if flipped else grey),
                        chest_wall=side, flipped=flipped, source=shown.source,
                        original_shape=shown.original_shape, factor=shown.factor)


def exam_images(store: Store, exam_id: str, *,
                long_side: int = DISPLAY_LONG_SIDE) -> list[HangingImage | None]:
    """The four tiles of `exam_report` in `HANGING_ORDER` (None where a view is missing or has
    no pixels). Each view's screen copy is made on its first view and cached under the store's
    files folder (`core.io.display.display_image`). Takes the store first so a page can cache
    it per store state."""
    tiles = exam_report(store, exam_id, models=[]).tiles
    ids = [i for i in tiles["image_id"] if i is not None]
    rows = store.images(image_ids=ids).set_index("image_id") if ids else None
    out = []
    for row in tiles.itertuples():
        if row.abs_path is None and row.display_abs is None:
            out.append(None)
            continue
        image = rows.loc[row.image_id].to_dict()
        out.append(_hang(display_image(store.files_dir, image, long_side=long_side),
                         row.laterality))
    return out


# ---------------------------------------------------------------------------- overlays

@dataclass(frozen=True)
class TileOverlay:
    """What can be drawn over one tile, on the tile's own grid (its ``pixels``' shape, mirrored
    as the tile is).

    outline : bool (h, w) of the newest stored annotation, or None (none stored).
    outline_version : that annotation's version number, or None.
    maps : model -> float32 (h, w) saliency map in [0, 1] (the ``which`` map, block means).
    notes : what could not be drawn and why, one sentence each.
    """

    outline: np.ndarray | None
    outline_version: int | None
    maps: dict
    notes: tuple[str, ...]


def exam_overlays(store: Store, exam_id: str, geometry: Sequence, *,
                  models: Sequence[str] = (), which: str = "malignant"
                  ) -> list[TileOverlay | None]:
    """The stored outline and each model's saliency map of every view, on the tiles' grids.

    geometry : per `HANGING_ORDER` position, None (no tile) or (factor, flipped, (h, w)) of its
        `HangingImage`: maps and masks are block-averaged by ``factor`` exactly as the pixels
        were (`core.io.display.display_grey`), then mirrored with the tile, so they lie on what
        is shown.
    models : the models whose maps to read (their image-level predictions' saliency files).
    which : 'malignant' or 'benign'.
    """
    tiles = exam_report(store, exam_id, models=[]).tiles
    if len(geometry) != len(tiles):
        raise InputError(f"geometry has {len(geometry)} entries; pass one per hanging position")
    out = []
    for row, geo in zip(tiles.itertuples(), geometry):
        if geo is None or row.image_id is None:
            out.append(None)
            continue
        factor, flipped, shape = int(geo[0]), bool(geo[1]), tuple(int(v) for v in geo[2])
        notes, outline, version = [], None, None
        versions = store.annotations(row.image_id)
        if len(versions):
            version = int(versions["version"].iat[-1])
            outline = _on_tile(store.load_mask(versions["mask_path"].iat[-1]), factor, flipped,
                               shape)
            if outline is None:
                notes.append(f"outline v{version} has another size than the image; not drawn")
            else:
                outline = outline >= 0.5
        maps = {}
        for model in models:
            rows = store.select("predictions", model=model, level="image", image_id=row.image_id)
            paths = rows["saliency_path"].dropna() if len(rows) else rows
            if not len(paths):
                notes.append(f"{model} has no saliency map for this view")
                continue
            grid = read_saliency(store.files_dir / paths.iat[0]).to_original(which)
            tile = _on_tile(grid, factor, flipped, shape)
            if tile is None:
                notes.append(f"{model}'s map has another size than the image; not drawn")
            else:
                maps[model] = np.clip(tile, 0, 1)
        out.append(TileOverlay(outline, version, maps, tuple(notes)))
    return out


def saliency_models(store: Store, exam_id: str) -> list[str]:
    """The models with a saliency map on at least one image of the exam, in
    `Store.model_names` order."""
    exam_id = exam_id_of(store, exam_id)
    rows = store.select("predictions", exam_id=exam_id, level="image")
    have = set(rows.loc[rows["saliency_path"].notna(), "model"])
    return [m for m in store.model_names() if m in have]


def _on_tile(array: np.ndarray, factor: int, flipped: bool, shape: tuple[int, int]
             ) -> np.ndarray | None:
    """``array`` (the file's grid) as the tile shows it: block means, mirrored; None when it
    does not land on the tile's shape (a mask of another size than the image)."""
    small = block_mean(np.asarray(array, np.float32), factor)
    if small.shape != shape:
        return None
    return np.ascontiguousarray(small[:, ::-1] if flipped else small)
