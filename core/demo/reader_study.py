"""The demo's reader study: five simulated readers read the demo test breasts unaided, then aided.

A sequential design, the usual one for decision support: each reader rates a breast (0-100)
unaided, then sees the model's score and revises,
``aided = (1 - w_r) * unaided + w_r * 100 * model_rank``, where ``model_rank`` is the model's
score as a mid-rank percentile among the study's breasts and ``w_r`` the reader's reliance on
the model. Unaided ratings follow a binormal model with a case effect shared by all readers
(a hard case is hard for everyone) and reader-specific skill: ``z = d_r * truth +
sqrt(rho) * c + sqrt(1 - rho) * e``, rating ``round(100 * Phi(z - d_r / 2))``. Less skilled
readers rely more on the model. Everything is seeded: a seed gives the same study.

It needs the model's scores, which exist only after ``models/demo/models.py`` has scored the
demo, so that module calls `add_demo_reader_study` when its GMIC is done (a separate
transaction: the model's predictions land in its run's chunks, `models.inference.predict`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import ndtr
from scipy.stats import rankdata

from core.store import Store, study_delete_plan
from core.vocabulary import UNAIDED, aided_modality

DEMO_STUDY = "demo-reader-study"
DEMO_STUDY_TEST_SET = "test-all"
DEMO_STUDY_LEVEL = "breast"
SKILL = (0.9, 1.1, 1.3, 1.5, 1.7)      # d_r: binormal separation of each reader's ratings
RELIANCE = (0.55, 0.5, 0.45, 0.4, 0.35)  # w_r: weight on the model's rank when aided
CASE_SHARE = 0.3                       # rho: share of rating variance common to all readers



def simulate_reads(truth: np.ndarray, model_score: np.ndarray, *, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Unaided and aided ratings, each of shape (n_readers, n_cases), on a 0-100 scale.

    truth : (n_cases,) 0/1. model_score : (n_cases,) any monotone scale, higher = more
    suspicious. Ratings are whole numbers (a reader's slider), so ties occur as in practice.
    """
    rng = np.random.default_rng(seed)
    truth = np.asarray(truth, dtype=np.float64)
    skill = np.asarray(SKILL)[:, None]
    reliance = np.asarray(RELIANCE)[:, None]
    case = rng.standard_normal(truth.shape)
    own = rng.standard_normal((len(SKILL), truth.size))
    z = skill * truth + np.sqrt(CASE_SHARE) * case + np.sqrt(1 - CASE_SHARE) * own
    unaided = np.round(100 * ndtr(z - skill / 2))
    rank = 100 * (rankdata(model_score) - 0.5) / truth.size
    aided = np.round((1 - reliance) * unaided + reliance * rank)
    return unaided, aided


def add_demo_reader_study(store: Store, *, model: str, seed: int = 0) -> int:
    """Write the demo reader study, aided by ``model``, over the demo's test breasts.

    Replaces an older demo study in one transaction; returns the number of reads written (0
    when ``model`` has no predictions, e.g. its checkpoint is not shipped).
    """
    from core.reports.scores import model_scores

    if model not in set(store.prediction_levels()["model"]):
        return 0
    scores = model_scores(store, models=[model], level=DEMO_STUDY_LEVEL,
                          test_set=DEMO_STUDY_TEST_SET)
    scores = scores[scores["score"].notna() & scores["label"].notna()]
    truth = scores["label"].to_numpy(dtype=np.int8)
    unaided, aided = simulate_reads(truth, scores["score"].to_numpy(), seed=seed)
    readers = [f"sim-reader-{i + 1}" for i in range(len(SKILL))]
    case_ids = scores["case_id"].to_numpy()
    parts = [pd.DataFrame({"study": DEMO_STUDY, "reader": reader, "modality": modality,
                           "case_id": case_ids, "rating": ratings[r]})
             for modality, ratings in ((UNAIDED, unaided), (aided_modality(model), aided))
             for r, reader in enumerate(readers)]
    frames = {
        "reader_studies": pd.DataFrame([{
            "study": DEMO_STUDY, "level": DEMO_STUDY_LEVEL, "store_cases": True,
            "rating_scale": "0-100", "synthetic": True,
            "description": (f"Simulated: {len(readers)} readers rate the demo's test breasts "
                            f"unaided, then aided by {model} (sequential design; see "
                            "core/demo/reader_study.py). Not real readers.")}]),
        "study_cases": pd.DataFrame({"study": DEMO_STUDY, "case_id": case_ids,
                                     "truth": truth}),
        "study_readers": pd.DataFrame({"study": DEMO_STUDY, "reader": readers,
                                       "kind": "radiologist"}),
        "study_reads": pd.concat(parts, ignore_index=True),
    }
    store.write_tables(frames, delete=study_delete_plan(DEMO_STUDY))
    return len(frames["study_reads"])
