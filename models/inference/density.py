"""The NYU histogram density model over one exam folder or a store's test set.

Why here: the model is PyTorch (`models.networks.density_nyu`) and core never imports torch; storage,
agreement and reports stay in `core.jobs.density` and `core.reports.density`.

The model needs the four views L-CC, R-CC, L-MLO, R-MLO of an exam (its input concatenates
their histograms in that order). In a store, an exam lacking one of them is skipped and
counted; a view present twice uses the first image by image_id (counted too). The default
histogram arithmetic is ``recipe='reference'``, the one that reproduces the published numbers
(NumPy 1.14.3's float32 summation; see `models.networks.density_nyu`): the fixture's reference
probabilities to ~1e-7. Rows are exam level only (the model sees the exam, not an image):
category = argmax, score = expected category sum(k p_k) in 0..3, p0..p3 the softmax.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from core.jobs.density import DensityRun, density_run, store_density
from core.errors import InputError
from core.io.images import read_pixels
from core.progress import ProgressFn, report
from core.store import Store
from core.density.histogram import VIEWS
from models.networks.density_nyu import NYUDensityPrediction, load_nyu_density, predict_density

__all__ = ["IMAGE_SUFFIXES", "estimate_nyu", "predict_exam_folder", "read_exam_folder"]

IMAGE_SUFFIXES = (".png", ".pgm", ".dcm")


def read_exam_folder(folder: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The four views of one exam folder: files named L-CC.png, R-MLO.dcm, ... (any case).

    Returns (view -> pixel array, view -> file name). A missing view is one `InputError` line
    naming it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; pass the folder holding L-CC, R-CC, L-MLO and "
                         "R-MLO images (.png, .pgm or .dcm)")
    by_stem = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            by_stem.setdefault(p.stem.upper().replace("_", "-"), p)
    missing = [v for v in VIEWS if v not in by_stem]
    if missing:
        raise InputError(f"{folder} has no {' / '.join(missing)} image (looked for "
                         f"{missing[0]}.png, .pgm or .dcm); the histogram model needs all four views "
                         f"{', '.join(VIEWS)}")
    return {v: read_pixels(by_stem[v]) for v in VIEWS}, {v: by_stem[v].name for v in VIEWS}


def predict_exam_folder(weights: str | Path, folder: str | Path, *,
                        recipe: str = "reference") -> tuple[NYUDensityPrediction, dict[str, str]]:
    """Run the NYU histogram model (weights: the released ``model.p``) on one exam folder."""
    model = load_nyu_density(weights, variant="histogram")
    images, files = read_exam_folder(folder)
    return predict_density(model, images, recipe=recipe), files


def _exam_views(images: pd.DataFrame) -> tuple[dict[str, dict[str, str]], dict[str, int]]:
    """exam_id -> {view: path} for exams with all four views; skip reasons -> counts."""
    images = images.assign(key=images["laterality"] + "-" + images["view"])
    complete, skipped = {}, {}
    for exam_id, g in images.sort_values("image_id").groupby("exam_id", sort=True):
        g = g[g["key"].isin(VIEWS)]
        if g["abs_path"].isna().any():
            g = g[g["abs_path"].notna()]
        have = set(g["key"])
        if not have.issuperset(VIEWS):
            reason = f"missing {', '.join(v for v in VIEWS if v not in have)}"
            key = "exams without all four views (" + ("no pixels" if g.empty else reason) + ")"
            skipped[key] = skipped.get(key, 0) + 1
            continue
        if g["key"].duplicated().any():
            skipped["exams with a view twice (first image_id used)"] = \
                skipped.get("exams with a view twice (first image_id used)", 0) + 1
        first = g.drop_duplicates("key")
        complete[exam_id] = dict(zip(first["key"], first["abs_path"]))
    return complete, skipped


def estimate_nyu(store: Store, *, test_set: str, weights: str | Path, recipe: str = "reference",
                 reference: str = "label", progress: ProgressFn | None = None) -> DensityRun:
    """NYU histogram density of every four-view exam of ``test_set``, written to the store.

    Parameters
    ----------
    weights : path of ``BreastDensity_BaselineHistogramModel/model.p``.
    recipe : {'reference', 'modern', 'exact'}   histogram arithmetic (`models.networks.density_nyu`).
    reference : density source to report agreement against, when present.

    Returns
    -------
    DensityRun   source 'nyu-histogram', exam-level rows; ``skipped`` counts exams left out.
    """
    start = time.perf_counter()
    model = load_nyu_density(weights, variant="histogram")
    images = store.images(test_set=test_set)
    if images.empty:
        raise InputError(f"test set {test_set!r} has no images; import images first")
    exams, skipped = _exam_views(images)
    if not exams:
        raise InputError(f"no exam of test set {test_set!r} has all four views {', '.join(VIEWS)} with "
                         f"pixels ({sum(skipped.values())} exams skipped); the histogram model needs them")
    with density_run(store, source="nyu-histogram", test_set=test_set,
                     method="nyu-histogram") as run:
        run.record(weights=str(Path(weights).resolve()), recipe=recipe,
                   describe=f"NYU histogram baseline (Wu et al. 2018), recipe '{recipe}'")
        progress = run.tee(progress)
        rows = []
        for i, (exam_id, paths) in enumerate(exams.items()):
            try:
                pred = predict_density(model, {v: read_pixels(paths[v]) for v in VIEWS},
                                       recipe=recipe)
            except InputError as exc:
                key = f"unreadable exam ({str(exc)[:80]})"
                skipped[key] = skipped.get(key, 0) + 1
                continue
            p = pred.probabilities
            rows.append({"source": "nyu-histogram", "level": "exam", "case_id": exam_id,
                         "exam_id": exam_id, "laterality": None, "image_id": None,
                         "category": pred.category, "score": float(np.dot(np.arange(4), p)),
                         **{f"p{k}": float(p[k]) for k in range(4)}})
            report(progress, i + 1, len(exams), exam_id)
        if not rows:
            raise InputError(f"no exam of test set {test_set!r} could be read; skipped: {skipped}")
        return store_density(run, pd.DataFrame(rows), skipped=skipped, reference=reference,
                             n_images=4 * len(rows), started=start)
