"""A template table per import kind: the columns the importer reads, with two example rows.

Why: the Import page offers them as CSV downloads so a user sees the expected columns before
the first error. Built from the importers' own column names (`core.importers.reshape`'s
aliases, CSAW-CC's exam columns), so a template never drifts from what is accepted.
"""
from __future__ import annotations

import pandas as pd

from core.importers.csaw import EXAM_COLUMNS
from core.importers.reshape import (ID_ALIASES, LABEL_ALIASES, NAME_COLUMN, SCORE_ALIASES,
                                    SIDE_ALIASES)

__all__ = ["FOLDER_KINDS", "template"]

# kinds read from a folder of images, not a table: no template
FOLDER_KINDS = {"dicom": "a folder of DICOM files (.dcm), or a ZIP of one",
                "mias": "the mini-MIAS folder: Info.txt and the mdbNNN.pgm images"}


def _scores(kind: str) -> pd.DataFrame:
    """Long layout: one row per (case, side, model or reader) with its score."""
    name = NAME_COLUMN[kind]
    values = [0.82, 0.07] if kind == "predictions" else [1, 0]
    return pd.DataFrame({ID_ALIASES[0]: ["E00001", "E00001"], SIDE_ALIASES[0]: ["L", "R"],
                         name: [f"my-{name}"] * 2, SCORE_ALIASES[kind][0]: values,
                         LABEL_ALIASES[0]: [1, 0]})


def _png() -> pd.DataFrame:
    return pd.DataFrame({"exam": ["E00001", "E00001"], "file": ["E00001_L_CC.png",
                                                                  "E00001_R_CC.png"],
                         "laterality": ["L", "R"], "view": ["CC", "CC"], "cancer": [1, 0],
                         "histology": ["ILC", "none"], "split": ["test", "test"],
                         "density": [2, 2], "age": [61, 61]})


def _csaw() -> pd.DataFrame:
    exam = {"x_case": 1, "x_cancer_laterality": "Left", "x_type": 1, "rad_timing": 1,
            "rad_r1": 1, "rad_r2": 0, "rad_recall": 1, "rad_recall_type_left": 1,
            "rad_recall_type_right": 0}
    return pd.DataFrame([{"anon_patientid": "P0001", "exam_year": 2015,
                          "anon_filename": f"P0001_2015_{side}_CC.dcm",
                          "imagelaterality": side, "viewposition": "CC",
                          **{c: exam[c] for c in EXAM_COLUMNS}} for side in ("Left", "Right")])


def template(kind: str) -> pd.DataFrame | None:
    """The template table of import ``kind``; None for the folder kinds (`FOLDER_KINDS`)."""
    if kind in FOLDER_KINDS:
        return None
    if kind in NAME_COLUMN:
        return _scores(kind)
    return {"png": _png, "csaw": _csaw}[kind]()
