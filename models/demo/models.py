"""The demo store's models: the classical baseline and, when its checkpoint ships, a small GMIC
and its ILC-tuned child (`models.demo.finetune`).

The baseline and the GMIC score every demo image, the child the test split only; all land
through the store's ingest path like any other job. The GMIC is
``models/demo/checkpoints/gmic-demo.pt``, made by ``python -m models.demo.train_gmic`` (see there for the
recipe) and run by `models.inference.predict.predict_test_set`, saliency files included.
"""
from __future__ import annotations

import tempfile

import pandas as pd

from core.demo.reader_study import DEMO_STUDY, add_demo_reader_study
from core.image.baseline import BASELINE_MODEL, DESCRIPTION, baseline_score
from core.io.images import read_pixels
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


DEMO_GMIC = "gmic-demo"
DEMO_GMIC_DESCRIPTION = (
    "Small GMIC ('demo' config: 512 x 320 input, narrow ResNets) trained from scratch by "
    "models/demo/train_gmic.py on a synthetic cohort (seed 7, not the demo's exams); a demonstration "
    "of the pipeline, not a clinical model.")


def add_gmic_demo_predictions(store: Store, *, test_set: str | None = None,
                              progress: ProgressFn | None = None) -> int:
    """Score every image with pixels (of a test set) with the shipped demo GMIC; 0 if absent."""
    from models.inference.predict import DEMO_CHECKPOINT, predict_test_set

    if not DEMO_CHECKPOINT.is_file():
        return 0
    summary = predict_test_set(
        store, checkpoints=[DEMO_CHECKPOINT], name=DEMO_GMIC, test_set=test_set,
        description=DEMO_GMIC_DESCRIPTION, synthetic=True, device="cpu", batch_size=32,
        chunk_size=512, progress=progress)
    return summary.n_predicted


def add_demo_models(store: Store, *, progress: ProgressFn | None = None) -> dict[str, int]:
    """Predictions of every demo model on the demo dataset (the GMIC's fine-tuned child, with
    its training run, on the test split only: `models.demo.finetune`), then the demo reader
    study aided by the GMIC; returns rows per model and the study's reads."""
    from models.demo.finetune import DEMO_CHILD, add_demo_child

    out = {BASELINE_MODEL: add_baseline_predictions(store, test_set="demo", progress=progress)}
    out[DEMO_GMIC] = add_gmic_demo_predictions(store, test_set="demo", progress=progress)
    if DEMO_GMIC in set(store.models()["model"]):   # scored now or by an interrupted build
        out[DEMO_CHILD] = add_demo_child(store, parent=DEMO_GMIC, progress=progress)
    out[DEMO_STUDY] = add_demo_reader_study(store, model=DEMO_GMIC)  # reads, aided by the GMIC
    return out
