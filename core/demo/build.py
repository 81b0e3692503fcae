"""The synthetic demo cohort in the store: images, labels, reads, masks and the study's test sets.

`build_demo` renders the cohort (`core.demo.cohort`), then replaces the ``demo`` dataset in one
transaction, so a rebuilt demo never mixes with an older one. Everything it writes is marked
synthetic (datasets.kind, readers.synthetic, models.synthetic).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from core.progress import ProgressFn
from core.store import FILES_ROOT, Store, dataset_delete_plan

DEMO_DATASET = "demo"
DEMO_IMAGES = "demo_images"  # folder inside the store's files folder
# The study's named test sets, as rules over the demo (see core.store.testsets).
DEMO_TESTSETS = {
    "test-all": "dataset=demo split=test",
    "test-ILC": "dataset=demo split=test histology=ILC,none",
    "test-IDC": "dataset=demo split=test histology=IDC,none",
    "train": "dataset=demo split=train",
}


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


def build_demo(store: Store, *, n_exams: int = 120, seed: int = 0, metadata_only: bool = False,
               progress: ProgressFn | None = None) -> DemoSummary:
    """Render the synthetic cohort and load it into ``store`` (replacing an older demo)."""
    from core.demo.cohort import generate_cohort

    start = time.perf_counter()
    root = None if metadata_only else demo_root(store)
    cohort = generate_cohort(root, n_exams=n_exams, seed=seed, dataset=DEMO_DATASET,
                             metadata_only=metadata_only, progress=progress)
    frames = dict(cohort.tables)
    frames["datasets"] = frames["datasets"].assign(
        root=f"{FILES_ROOT}/{DEMO_IMAGES}" if root else None)
    # One transaction drops the old demo and writes the new one (mask versions continue).
    frames["annotations"] = store.stage_masks(
        cohort.masks, source="imported", author="synthetic generator",
        note="exact mask of the rendered lesion")
    store.write_tables(frames, delete=dataset_delete_plan(DEMO_DATASET))
    store.create_testsets(dict(DEMO_TESTSETS))
    store.refresh_testsets()
    breasts = frames["breasts"]
    return DemoSummary(DEMO_DATASET, len(frames["exams"]), len(frames["images"]),
                       int(breasts["cancer"].sum()), str(root) if root else None,
                       time.perf_counter() - start)
