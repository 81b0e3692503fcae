"""The synthetic demo cohort in the store: images, labels, reads, masks and the study's test sets.

`build_demo` renders the cohort (`core.demo.cohort`), then replaces the ``demo`` dataset and the
study's test sets in one transaction, so a rebuilt demo never mixes with an older one and a kill
leaves the old demo or the new one. When the store already holds exactly this cohort (the same
seed and size: a re-run after ``demo`` was killed while its models were being scored), nothing
is rewritten and only stale test sets are repaired, so the re-run's models complete it and the
result equals an uninterrupted run. Everything it writes is marked synthetic (datasets.kind,
readers.synthetic, models.synthetic).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.progress import ProgressFn
from core.demo.reader_study import DEMO_STUDY
from core.store import FILES_ROOT, Store, dataset_delete_plan, study_delete_plan

DEMO_DATASET = "demo"
DEMO_IMAGES = "demo_images"  # folder inside the store's files folder
# The study's named test sets, as rules over the demo (see core.store.testsets).
DEMO_TESTSETS = {
    "test-all": "dataset=demo split=test",
    "test-ILC": "dataset=demo split=test histology=ILC,none",
    "test-IDC": "dataset=demo split=test histology=IDC,none",
    "train": "dataset=demo split=train",
}
# The story's cohort (issue 20): 100 exams = 400 images (~85 MB, the same as 120 exams before
# at a fifth of the cancers), enriched to half cancers, two thirds of each stratum in test, so
# the test split holds 32 cancers (16 ILC) and the consensus reader misses some. The renderer
# and image size are those `models/demo/train_gmic.py` trained gmic-demo on.
DEMO_N_EXAMS = 100
DEMO_CANCER_FRACTION = 0.5
DEMO_TEST_FRACTION = 0.65


@dataclass(frozen=True)
class DemoSummary:
    dataset: str
    n_exams: int
    n_images: int
    n_cancers: int
    root: str | None
    elapsed_s: float


def demo_root(store: Store) -> Path:
    """Where the demo's PNG files live: beside the store, in its files folder."""
    return store.files_dir / DEMO_IMAGES


def build_demo(store: Store, *, n_exams: int = DEMO_N_EXAMS, seed: int = 0,
               metadata_only: bool = False, cancer_fraction: float = DEMO_CANCER_FRACTION,
               test_fraction: float = DEMO_TEST_FRACTION,
               progress: ProgressFn | None = None) -> DemoSummary:
    """Render the synthetic cohort and load it into ``store`` (replacing an older demo)."""
    from core.demo.cohort import generate_cohort

    start = time.perf_counter()
    root = None if metadata_only else demo_root(store)
    cohort = generate_cohort(root, n_exams=n_exams, seed=seed, dataset=DEMO_DATASET,
                             metadata_only=metadata_only, cancer_fraction=cancer_fraction,
                             test_fraction=test_fraction, progress=progress)
    frames = dict(cohort.tables)
    frames["datasets"] = frames["datasets"].assign(
        root=f"{FILES_ROOT}/{DEMO_IMAGES}" if root else None)
    if _stored_already(store, frames, cohort.masks):
        store.refresh_testsets(DEMO_TESTSETS)
    else:  # one transaction drops the old demo, writes the new one and its test sets
        frames["annotations"] = store.stage_masks(  # mask versions continue
            cohort.masks, source="imported", author="synthetic generator",
            note="exact mask of the rendered lesion")
        store.write_tables(frames, delete=dataset_delete_plan(DEMO_DATASET)  # its study too
                           + study_delete_plan(DEMO_STUDY),
                           testsets=DEMO_TESTSETS, refresh_testsets=True)
    breasts = frames["breasts"]
    return DemoSummary(DEMO_DATASET, len(frames["exams"]), len(frames["images"]),
                       int(breasts["cancer"].sum()), str(root) if root else None,
                       time.perf_counter() - start)


def _stored_already(store: Store, frames: dict[str, pd.DataFrame],
                    masks: dict[str, np.ndarray]) -> bool:
    """True when the store's demo equals ``frames`` row for row and its newest masks equal
    ``masks`` (then rewriting it would only add mask versions)."""
    from core.importers.common import Snapshot

    snapshot = Snapshot(store, DEMO_DATASET, [*frames, "annotations"])
    for table, frame in frames.items():
        rows = frame.to_dict("records")
        if table != "readers" and len(snapshot.rows(table)) != len(rows):  # readers are global
            return False
        if not snapshot.unchanged({table: rows}):
            return False
    for image_id, mask in masks.items():
        versions = snapshot.of_image("annotations", image_id)
        if not versions or not (store.files_dir / versions[-1]["mask_path"]).is_file():
            return False
        if not np.array_equal(store.load_mask(versions[-1]["mask_path"]), mask > 0):
            return False
    return True
