"""Saliency vs segmentation over a test set: what the Saliency page and its CLI both show.

For each image of the test set that has an annotation (the newest version, or
``annotation_version``) and a saliency file from the model, the map is read in the original
image's coordinates (`core.saliency.read_saliency`) and scored against the mask
(`core.saliency.saliency_metrics`); the aggregates are `core.saliency.summarise_saliency`, per
model and per histology, and with ``compare`` the paired tests on the images both models scored
(`core.saliency.compare_saliency`). Pure over a `Store`; no Streamlit, no torch.

Where an image's saliency file is (`saliency_files`): an image-level prediction names it
(GMIC, GLAM); a model that scores breasts (NYU image + heatmaps) leaves one file per image at
the path `saliency_file` gives, which `models.inference` writes to for every family.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import InputError
from core.progress import ProgressFn, report
from core.saliency import (DEFAULT_THRESHOLDS, compare_saliency, read_saliency,
                           saliency_metrics, summarise_saliency)
from core.saliency.maps import MAP_NAMES
from core.store import Store
from core.validation import check_choice

__all__ = ["PER_IMAGE_COLUMNS", "SaliencyReport", "patch_boxes", "saliency_file", "saliency_files",
           "saliency_report"]

PER_IMAGE_COLUMNS = [
    "model", "image_id", "exam_id", "label", "histology", "annotation_version", "best_dice",
    "best_threshold", "hit", "argmax_row", "argmax_col", "distance_px", "distance_mm",
    "relevance_mass", "relevance_rank", "n_mask", "patch_hit", "n_patches_hit",
    "patch_attention"]


@dataclass(frozen=True)
class SaliencyReport:
    """Saliency metrics of one model (and ``compare``) on one test set.

    per_image : one row per (model, image), ``PER_IMAGE_COLUMNS``.
    dice_curves : float array (len(per_image), len(thresholds)): Dice at each threshold, rows
        as in ``per_image``.
    summary : model -> aggregates (`core.saliency.SUMMARY_COLUMNS`).
    by_histology : the aggregates per model and histology.
    paired : None, or `compare_saliency` of model vs compare.
    skipped : reason -> image ids left out (no annotation, no saliency file).
    """

    test_set: str
    model: str
    compare: str | None
    which: str
    annotation_version: int | None
    thresholds: np.ndarray
    per_image: pd.DataFrame
    dice_curves: np.ndarray
    summary: dict
    by_histology: pd.DataFrame
    paired: dict | None
    skipped: dict = field(default_factory=dict)

    def to_dict(self, *, per_image: bool = False) -> dict:
        """JSON-able: the summary, by histology, paired tests (and the rows if ``per_image``)."""
        out = {"test_set": self.test_set, "model": self.model, "compare": self.compare,
               "class": self.which, "annotation_version": self.annotation_version,
               "n_images": {m: s["n_images"] for m, s in self.summary.items()},
               "summary": self.summary,
               "by_histology": self.by_histology.to_dict(orient="records"),
               "paired": self.paired,
               "skipped": {reason: len(ids) for reason, ids in self.skipped.items()}}
        if per_image:
            out["per_image"] = self.per_image.to_dict(orient="records")
        return out


def saliency_report(store: Store, *, test_set: str, model: str, compare: str | None = None,
                    which: str = "malignant", annotation_version: int | None = None,
                    thresholds=DEFAULT_THRESHOLDS,
                    progress: ProgressFn | None = None) -> SaliencyReport:
    """Score ``model``'s ``which`` saliency maps (and ``compare``'s) against the annotations.

    Parameters
    ----------
    test_set : a named test set. model, compare : models with saliency files in the store.
    which : 'malignant' or 'benign' map.
    annotation_version : None for each image's newest version, else that version number
        (images without it are skipped).
    thresholds : the Dice sweep (default 0, 0.05, ..., 1).
    """
    check_choice(which, MAP_NAMES, name="which")
    if compare is not None and compare == model:
        raise InputError(f"compare is the same model as model ({model!r}); pass another model")
    images = store.images(test_set=test_set).set_index("image_id")   # unknown set -> InputError
    truth = store.cases(test_set=test_set, level="image").set_index("case_id")
    masks = _annotations(store, images.index, annotation_version)
    models = [model] if compare is None else [model, compare]
    files = {m: saliency_files(store, m, images.index) for m in models}
    skipped = {"no annotation": sorted(set(images.index) - set(masks.index))}
    for m in models:
        skipped[f"no saliency file from {m}"] = sorted(set(masks.index) - set(files[m].index))
    todo = [i for i in masks.index if any(i in files[m].index for m in models)]
    rows, curves = [], []
    for done, image_id in enumerate(todo):
        mask = store.load_mask(masks.at[image_id, "mask_path"])
        spacing = images.at[image_id, "spacing_mm"]
        for m in models:
            if image_id not in files[m].index:
                continue
            entry = files[m].loc[image_id]
            size = images.loc[image_id, ["height", "width"]]   # checked before allocating
            saliency = read_saliency(store.files_dir / entry["saliency_path"],
                                     image_shape=tuple(size) if size.notna().all() else None)
            values = saliency.to_original(which)
            if values.shape != mask.shape:
                raise InputError(f"annotation of {image_id} is {mask.shape[0]} x {mask.shape[1]} "
                                 f"but {m}'s saliency maps to {values.shape[0]} x "
                                 f"{values.shape[1]}; re-save the annotation on the full image")
            boxes = patch_boxes(saliency, entry["patch_boxes"])
            metrics = saliency_metrics(values, mask, spacing_mm=_spacing(spacing),
                                       patch_boxes=boxes, attention=saliency.patch_attention,
                                       thresholds=thresholds)
            curves.append(metrics.pop("dice"))
            metrics.pop("thresholds")
            rows.append({"model": m, "image_id": image_id,
                         "exam_id": images.at[image_id, "exam_id"],
                         "label": truth.at[image_id, "label"] if image_id in truth.index else None,
                         "histology": truth.at[image_id, "histology"]
                         if image_id in truth.index else None,
                         "annotation_version": int(masks.at[image_id, "version"]), **metrics})
        report(progress, done + 1, len(todo), "saliency metrics")
    per_image = pd.DataFrame(rows, columns=PER_IMAGE_COLUMNS)
    if per_image.empty:
        raise InputError(f"no image of {test_set} has both an annotation and a saliency file "
                         f"from {' or '.join(models)}; annotate images or run predict first")
    summary = {m: _first(summarise_saliency(per_image[per_image["model"] == m]))
               for m in models}
    by_histology = pd.concat(
        [summarise_saliency(per_image[per_image["model"] == m], by="histology").assign(model=m)
         for m in models if (per_image["model"] == m).any()], ignore_index=True)
    paired = None
    if compare is not None:
        paired = compare_saliency(per_image[per_image["model"] == model],
                                  per_image[per_image["model"] == compare])
    return SaliencyReport(test_set, model, compare, which, annotation_version,
                          np.asarray(thresholds, np.float64), per_image,
                          np.array(curves).reshape(len(rows), -1), summary,
                          by_histology[["model", *by_histology.columns[:-1]]], paired,
                          {k: v for k, v in skipped.items() if v})


def _annotations(store: Store, image_ids, version: int | None) -> pd.DataFrame:
    """image_id -> (version, mask_path) of the annotation to use, for images of the set."""
    if version is None:
        rows = store.select("annotations", image_id=list(image_ids))
        rows = rows.sort_values("version").groupby("image_id").tail(1)
    else:
        if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 1:
            raise InputError(f"annotation_version must be a version number >= 1 or None; "
                             f"got {version!r}")
        rows = store.select("annotations", image_id=list(image_ids), version=int(version))
    return rows.set_index("image_id")[["version", "mask_path"]]


def saliency_file(model: str, image_id: str) -> Path:
    """Where a model's saliency file for an image lives, relative to the store's files folder:
    ``saliency/<model>/<image>-<8 hex>.npz`` (the digest keeps two ids that differ only in
    characters unsafe in file names apart)."""
    digest = hashlib.sha1(image_id.encode()).hexdigest()[:8]
    return Path("saliency") / _safe(model) / f"{_safe(image_id)}-{digest}.npz"


def saliency_files(store: Store, model: str, image_ids) -> pd.DataFrame:
    """image_id -> saliency_path (relative to the files folder), patch_boxes (JSON or None) of
    ``model``'s files on ``image_ids``: from its image-level predictions, else (a model that
    scores breasts or exams) the files at `saliency_file` that exist."""
    ids = list(image_ids)
    rows = store.select("predictions", model=model, level="image")
    if rows.empty:
        if model not in store.model_names():
            raise InputError(f"model {model!r} has no predictions in the store (models: "
                             f"{', '.join(store.model_names()) or 'none'}); run predict first")
        found = [(i, saliency_file(model, i).as_posix()) for i in ids]
        found = [(i, p) for i, p in found if (store.files_dir / p).is_file()]
        return pd.DataFrame({"saliency_path": [p for _, p in found], "patch_boxes": None},
                            index=pd.Index([i for i, _ in found], name="image_id"))
    rows = rows[rows["image_id"].isin(ids) & rows["saliency_path"].notna()]
    return rows.set_index("image_id")[["saliency_path", "patch_boxes"]]


def patch_boxes(saliency, stored_json) -> np.ndarray | None:
    """An image's patch boxes (K x 4, image pixels): format 2 files carry them beside their
    attention weights; older files only the prediction row's JSON (attention then NaN); None
    for maps that come without patches (the NYU heatmaps)."""
    if saliency.patch_boxes is not None and len(saliency.patch_boxes):
        return saliency.patch_boxes
    if not isinstance(stored_json, str):
        return None
    return np.asarray(json.loads(stored_json), dtype=np.float64).reshape(-1, 4)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def _spacing(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _first(frame: pd.DataFrame) -> dict:
    return frame.to_dict(orient="records")[0]  # keeps each column's type
