"""Model scores at any level: stored there, or aggregated from image level (max or mean).

The one place that decides where a (model, level) score comes from, so the benchmark, density,
complement pages and the CLI agree to the digit.
"""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from core.errors import InputError
from core.stats import aggregate_scores
from core.store import SCORE_CASE_COLUMNS, Store


def model_scores(store: Store, *, models: Sequence[str], level: str,
                 test_set: str | None = None, how: str = "max",
                 density_source: str = "label") -> pd.DataFrame:
    """Every case of ``test_set`` at ``level`` once per model, with the model's score.

    Returns ``model``, the truth columns (`core.store.SCORE_CASE_COLUMNS`), ``score`` (NaN where the model has no
    score for the case) and ``score_source`` ('stored' or 'image max' / 'image mean').
    A model with predictions at ``level`` uses them; otherwise its image-level predictions
    are aggregated over the case's views with ``how``.
    """
    if not models:
        raise InputError("no models chosen; pick at least one model")
    known = store.prediction_levels()
    parts = []
    for model in models:
        levels = prediction_levels_of(known, model)
        if level in levels:
            frame = store.scores(models=[model], level=level, test_set=test_set,
                                 density_source=density_source)
            parts.append(frame.assign(score_source="stored"))
        elif level != "image" and "image" in levels:
            images = store.scores(models=[model], level="image", test_set=test_set,
                                  density_source=density_source)
            agg = aggregate_scores(images, level=level, how=how)
            cases = store.cases(test_set=test_set, level=level, density_source=density_source)
            frame = cases[list(SCORE_CASE_COLUMNS)].merge(agg[["case_id", "score"]],
                                                           on="case_id", how="left")
            parts.append(frame.assign(model=model, benign=float("nan"),
                                      score_source=f"image {how}"))
        else:
            raise InputError(f"model {model!r} has predictions at {', '.join(sorted(levels))} "
                             f"level only; {level} level needs image-level predictions")
    out = pd.concat(parts, ignore_index=True)
    first = ["model", "case_id", "exam_id", "laterality", "image_id", "label", "histology",
             "score"]
    return out[first + [c for c in out.columns if c not in first]]


def prediction_levels_of(known: pd.DataFrame, model: str) -> set[str]:
    """The levels ``model`` has stored predictions at (``known``: `Store.prediction_levels`);
    a model without any is refused, naming the models that have some."""
    levels = set(known.loc[known["model"] == model, "level"])
    if not levels:
        raise InputError(f"model {model!r} has no predictions in the store; "
                         f"known: {', '.join(sorted(known['model'].unique())) or 'none'}")
    return levels
