"""The demo store's models: the classical baseline and, when its checkpoint ships, a small GMIC.

Both score every demo image and land through the store's ingest path like any other job.
"""
from __future__ import annotations

import tempfile

import pandas as pd

from core.baseline import BASELINE_MODEL, DESCRIPTION, baseline_score
from core.imageio import read_pixels
from core.progress import ProgressFn, report
from core.store import Store, write_result


def add_baseline_predictions(store: Store, *, test_set: str | None = None,
                             progress: ProgressFn | None = None) -> int:
    """Score every image with pixels (of a test set) with the classical baseline."""
    images = store.images(test_set=test_set)
    images = images[images["abs_path"].notna()]
    scores = []
    for i, row in enumerate(images.itertuples()):
        scores.append(baseline_score(read_pixels(row.abs_path), view=row.view))
        report(progress, i + 1, len(images), "classical baseline")
    predictions = pd.DataFrame({
        "model": BASELINE_MODEL, "level": "image", "case_id": images["image_id"],
        "exam_id": images["exam_id"], "laterality": images["laterality"],
        "image_id": images["image_id"], "malignant": scores})
    models = pd.DataFrame([{"model": BASELINE_MODEL, "kind": "classical",
                            "description": DESCRIPTION, "synthetic": False}])
    with tempfile.TemporaryDirectory() as tmp:
        store.ingest(write_result(tmp, {"models": models, "predictions": predictions}))
    return len(predictions)


def add_demo_models(store: Store, *, progress: ProgressFn | None = None) -> dict[str, int]:
    """Predictions of every demo model on the demo dataset; returns rows per model."""
    return {BASELINE_MODEL: add_baseline_predictions(store, test_set="demo", progress=progress)}
