"""What a headline number rests on, said once for every page: few positives, a CI clipped at
1.0, the prevalence beside a "per 1,000", image-level DeLong.

Why one place: the same AUC shows on Benchmark, Density, the Overview and the CLI; its caveat
must use the same threshold and the same words wherever it appears. Pure: numbers in, sentences
(or None) out; the pages decide how to show them.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

__all__ = ["FEW_POSITIVES", "IMAGE_LEVEL_DELONG", "SCREENING_PREVALENCE", "auc_caveats",
           "clipped_ci", "few_positives", "prevalence"]

# Below this many positive cases an AUC, a sensitivity or a CI rests on too few cases to read
# alone (Hanley & McNeil's variance grows fast below ~10 positives).
FEW_POSITIVES = 10
# Cancers per screened woman in population screening programmes (about 5-8 per 1,000).
SCREENING_PREVALENCE = 0.006
IMAGE_LEVEL_DELONG = ("Image level: DeLong treats each view as an independent case, but a "
                      "woman's views are correlated, so its CIs and p-values are too narrow. "
                      "Use breast or exam level for inference.")


def few_positives(n_pos: float, what: str = "") -> str | None:
    """A warning when there are some, but fewer than `FEW_POSITIVES`, positive cases."""
    if n_pos is None or (isinstance(n_pos, float) and math.isnan(n_pos)):
        return None
    n = int(n_pos)
    if n >= FEW_POSITIVES or n == 0:   # none at all: the page says so in its own words
        return None
    where = f"{what}: " if what else ""
    return (f"{where}only {n} positive case{'s' if n != 1 else ''} (fewer than "
            f"{FEW_POSITIVES}): the number and its CI rest on very few cancers.")


def clipped_ci(ci_high: float, what: str = "") -> str | None:
    """A note when a CI's upper limit sits at 1.0 (clipped: the interval is wider than shown)."""
    if ci_high is None or not math.isfinite(ci_high) or ci_high < 1 - 1e-9:
        return None
    where = f"{what}: " if what else ""
    return f"{where}the CI's upper limit is clipped at 1.0 (the true interval is wider)."


def prevalence(cancers: int, total: int, unit: str = "cases") -> str:
    """The test set's prevalence beside a "per 1,000" figure, said enriched when it is."""
    if total <= 0:
        return f"No {unit} in this test set."
    share = cancers / total
    text = f"Prevalence here: {cancers} cancers in {total:,} {unit} ({share:.1%})"
    if share > 2 * SCREENING_PREVALENCE:
        return (text + f"; a screening population has about {SCREENING_PREVALENCE:.1%}, so "
                "this test set is enriched and per-1,000 figures are not screening rates.")
    return text + "."


def _name(row, columns: Sequence[str]) -> str:
    return " · ".join(str(row[c]) for c in columns if c in row and pd.notna(row[c]))


def auc_caveats(table: pd.DataFrame, *, names: Sequence[str] = ("model", "test_set", "stratum"),
                n_pos: str = "n_pos", ci_high: str = "ci_high") -> list[str]:
    """Sentences for the rows of an AUC table with few positives or a CI clipped at 1.0.

    ``table`` has one row per number shown (model, test set, stratum ...); ``names`` are the
    columns that identify a row in the sentence. Rows without an AUC are skipped.
    """
    if table.empty or n_pos not in table:
        return []
    rows = table[table["auc"].notna()] if "auc" in table else table
    few = rows[rows[n_pos] < FEW_POSITIVES]
    notes = []
    if not few.empty:
        listed = "; ".join(f"{_name(r, names)} ({int(r[n_pos])})" for _, r in few.iterrows())
        notes.append(f"Fewer than {FEW_POSITIVES} positive cases, so these AUCs and CIs rest "
                     f"on very few cancers: {listed}.")
    if ci_high in rows:
        clipped = rows[rows[ci_high] >= 1 - 1e-9]
        if not clipped.empty:
            listed = "; ".join(_name(r, names) for _, r in clipped.iterrows())
            notes.append(f"CI upper limit clipped at 1.0 (the true interval is wider): {listed}.")
    return notes
