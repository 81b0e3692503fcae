"""Train / validation / test splits by exam, for fine-tuning, stored as named test sets.

Why by exam: the views of one exam show the same breasts, so an exam split across training and
evaluation leaks; every image of an exam lands in one set. Why stratified by label and
histology: a few hundred exams hold a few dozen ILC cancers, and an unstratified draw can leave
the validation set without one. Each (label, histology) stratum is shuffled with one seeded
generator and cut by the largest-remainder rule, so the same exams and seed give the same split
whatever order the exams come in.

The sets are stored as test sets whose rule lists their exams (``exam=id1,id2,...``): a split is a
frozen selection, and a later import never moves an exam from one set to another.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from core.errors import InputError

__all__ = ["SPLITS", "create_splits", "split_exams", "split_rules"]

SPLITS = ("train", "val", "test")


def split_exams(exams: pd.DataFrame, *, fractions: Sequence[float] = (0.6, 0.2, 0.2),
                seed: int = 0) -> pd.DataFrame:
    """Assign each exam to train, val or test, stratified by (label, histology).

    Parameters
    ----------
    exams : DataFrame with exam_id (unique), label (0/1) and histology, one row per exam.
    fractions : (train, val, test) shares, each >= 0, summing to 1.
    seed : the generator's seed.

    Returns
    -------
    DataFrame with exam_id, label, histology, split; by exam_id. Per stratum of n exams, set k
    gets floor(n * f_k) exams plus one of the leftovers in order of the largest remainder.
    """
    fractions = _check_fractions(fractions)
    missing = {"exam_id", "label", "histology"} - set(exams.columns)
    if missing:
        raise InputError(f"exams lack column(s) {', '.join(sorted(missing))}")
    if exams.empty:
        raise InputError("exams is empty; pass a test set with at least one exam")
    if exams["exam_id"].duplicated().any():
        raise InputError("exams has repeated exam_id values; pass one row per exam")
    frame = exams[["exam_id", "label", "histology"]].sort_values("exam_id", ignore_index=True)
    frame["histology"] = frame["histology"].fillna("unknown").astype(str)
    rng = np.random.default_rng(seed)
    split = np.empty(len(frame), dtype=object)
    for _, members in frame.groupby(["label", "histology"], sort=True):
        index = members.index.to_numpy()[rng.permutation(len(members))]
        counts = _largest_remainder(len(members), fractions)
        split[index] = np.repeat(np.array(SPLITS, dtype=object), counts)
    return frame.assign(split=split)


def split_rules(prefix: str, assigned: pd.DataFrame) -> dict[str, str]:
    """Test-set rules ``{prefix-train: 'exam=...', ...}`` for the non-empty sets of a split."""
    if not prefix or any(c.isspace() for c in prefix):
        raise InputError(f"prefix {prefix!r} must be non-empty without spaces")
    bad = [e for e in assigned["exam_id"] if any(c.isspace() or c == "," for c in str(e))]
    if bad:
        raise InputError(f"exam id {bad[0]!r} holds a space or comma and cannot be listed in a "
                         "test-set rule; split a dataset whose exam ids have neither")
    return {f"{prefix}-{name}": "exam=" + ",".join(sorted(group["exam_id"]))
            for name, group in assigned.groupby("split", sort=False) if len(group)}


def create_splits(store, *, test_set: str, prefix: str,
                  fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0) -> pd.DataFrame:
    """Split the exams of ``test_set`` and store ``<prefix>-train|val|test`` as test sets
    (replacing sets of those names). Returns one row per set: name, split, exams, positives,
    and exams per histology."""
    exams = store.cases(test_set=test_set, level="exam")
    if exams.empty:
        raise InputError(f"test_set {test_set!r} has no exams; pass a non-empty test set")
    assigned = split_exams(exams, fractions=fractions, seed=seed)
    rules = split_rules(prefix, assigned)
    store.create_testsets(rules)
    rows = []
    for name in SPLITS:
        part = assigned[assigned["split"] == name]
        rows.append({"name": f"{prefix}-{name}" if len(part) else None, "split": name,
                     "exams": len(part), "positives": int(part["label"].sum()),
                     **{f"histology_{h}": int(n) for h, n in
                        part["histology"].value_counts().sort_index().items()}})
    table = pd.DataFrame(rows)
    counts = [c for c in table.columns if c.startswith("histology_")]
    table[counts] = table[counts].fillna(0).astype(int)
    return table


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    try:
        values = np.asarray([float(f) for f in fractions], dtype=np.float64)
    except (TypeError, ValueError):
        values = np.array([np.nan])
    if values.shape != (3,) or not np.all(np.isfinite(values)) or (values < 0).any() \
            or abs(values.sum() - 1.0) > 1e-6:
        raise InputError(f"fractions are {list(fractions)}; pass three shares (train, val, "
                         "test) >= 0 that sum to 1, e.g. 0.6,0.2,0.2")
    return values


def _largest_remainder(n: int, fractions: np.ndarray) -> np.ndarray:
    """Whole counts summing to n, proportional to ``fractions`` (ties: the earlier set)."""
    exact = n * fractions
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:n - counts.sum()]] += 1
    return counts
