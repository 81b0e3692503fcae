"""The AUC each public model's own paper reports, beside what ILCscope measures.

The numbers are the study's Table 6.1, column "Original paper" (``ilc-thesis.txt``, section
6.2.1: "Resulting AUC values of existing deep learning model for breast cancer detection on test
datasets"): NYU image 0.83, NYU image + heatmaps 0.89, GMIC 0.89, GLAM 0.88, End2end 0.88,
Faster R-CNN 0.95 (on test set; 0.85 on challenge set). The same table measured 0.57-0.81 on
CSAW and EMC, and the thesis explains the gap (section 6.2.1 and the discussion): the papers
tested on their own data (mixed IDC and ILC, another case mix and other scanners). So a published
AUC is context, never a result: it was not measured on the store's cases, and a fine-tuned
child's row shows its parent's paper, labelled so.

Which paper a stored model belongs to (`published_auc_for`): models ILCscope runs itself carry
their family in ``models.kind`` ('gmic', 'glam', 'nyu-image', 'nyu-image-heatmaps'); imported
predictions (kind 'external') are recognised by the metarepository's model folder in their
name (nyukat/mammography_metarepository ``models/``: end2end, frcnn_cad, nyu_glam, nyu_gmic,
nyu_model, nyu_model_single), which its ``run.sh`` writes into the file it produces
(``<model>_<experiment>_predictions.csv``, and an import names the model after the file).
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

__all__ = ["PUBLISHED", "CONTAINER_ONLY", "METAREPOSITORY_COMMAND", "Published", "PublishedMatch",
           "published_auc_for", "published_table", "with_published"]

THESIS_TABLE = "thesis Table 6.1"


@dataclass(frozen=True)
class Published:
    """One family's published AUC: ``auc`` as the thesis' Table 6.1 quotes it, ``measured_on``
    the paper's own test data (the thesis gives only "Original paper"; the data set is from the
    cited paper)."""

    family: str
    title: str
    citation: str
    auc: float
    measured_on: str


PUBLISHED: dict[str, Published] = {p.family: p for p in (
    Published("nyu-image", "NYU DMV-CNN, image only", "Wu et al., IEEE TMI 2020", 0.83,
              "NYU Breast Cancer Screening Dataset test set, breast level"),
    Published("nyu-image-heatmaps", "NYU DMV-CNN, image + heatmaps", "Wu et al., IEEE TMI 2020",
              0.89, "NYU Breast Cancer Screening Dataset test set, breast level"),
    Published("gmic", "GMIC", "Y. Shen et al., 2019 (Medical Image Analysis 2021)", 0.89,
              "NYU Breast Cancer Screening Dataset test set"),
    Published("glam", "GLAM", "K. Liu et al., MIDL 2021", 0.88,
              "NYU Breast Cancer Screening Dataset test set"),
    Published("end2end", "End2end (all convolutional)", "L. Shen et al., Scientific Reports 2019",
              0.88, "CBIS-DDSM test set, image level"),
    Published("frcnn", "Faster R-CNN (frcnn_cad)", "Ribli et al., Scientific Reports 2018", 0.95,
              "INbreast test set (0.85 on the DREAM Digital Mammography challenge set)"),
)}

# Families that run only in the metarepository's containers (Keras/Theano; Caffe without a
# licence): ILCscope takes their predictions, never their code.
CONTAINER_ONLY = ("end2end", "frcnn")

# What a user runs in a clone of nyukat/mammography_metarepository (its README, "Run model on
# sample data"; frcnn_cad is GPU-only), then the import; ``png/`` holds the exams as 16-bit PNGs
# named <exam>_<L|R>_<CC|MLO>.png and ``png/data.pkl`` the metarepository's exam list.
METAREPOSITORY_COMMAND = """\
# in a clone of https://github.com/nyukat/mammography_metarepository (users.txt: see its README)
bash run.sh end2end ilc01 png/ preprocessed/ png/data.pkl predictions/ gpu 0 no_bootstrap
bash run.sh frcnn_cad ilc01 png/ preprocessed/ png/data.pkl predictions/ gpu 0 no_bootstrap
# then, here: image-level CSVs (image_index, malignant_pred, malignant_label)
python -m core import predictions predictions/end2end_ilc01_predictions.csv \\
    --model end2end --dataset DATASET
python -m core import predictions predictions/frcnn_cad_ilc01_predictions.csv \\
    --model frcnn_cad --dataset DATASET"""

# metarepository folder -> family; the longest folder name is tried first (nyu_model_single)
_FOLDERS = {"nyu_model_single": "nyu-image", "nyu_model": "nyu-image", "nyu_gmic": "gmic",
            "nyu_glam": "glam", "frcnn_cad": "frcnn", "end2end": "end2end"}
_FOLDER = re.compile(r"(?<![a-z0-9])(" + "|".join(sorted(_FOLDERS, key=len, reverse=True))
                     + r")(?![a-z0-9])")


@dataclass(frozen=True)
class PublishedMatch:
    """A stored model's published AUC: ``published`` is its family's paper; ``fine_tuned_from``
    names the parent when the model is a fine-tuned child (then the paper's AUC is the parent
    family's, not this model's); ``variant`` says how it differs from the paper's model."""

    model: str
    published: Published
    fine_tuned_from: str | None = None
    variant: str | None = None

    @property
    def label(self) -> str:
        """One line for a table: the paper, its test data, and whether this is that model."""
        p = self.published
        text = f"{p.title}: {p.citation}, tested on {p.measured_on}"
        if self.variant:
            text += f"; this is the {self.variant}"
        if self.fine_tuned_from:
            text += f"; fine-tuned from {self.fine_tuned_from}, not the published model"
        return text


def _get(row, key: str):
    value = row.get(key) if isinstance(row, Mapping) else getattr(row, key, None)
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):  # NaN, pd.NA
        return None
    return value


def _family(row) -> tuple[str | None, str | None]:
    """(family, variant) from the row's own kind and name."""
    kind = _get(row, "kind")
    if kind in PUBLISHED:
        return kind, None
    if kind != "external":
        return None, None
    name = str(_get(row, "model") or "").lower().replace("-", "_")
    found = _FOLDER.search(name)
    if found is None:
        return None, None
    folder = found.group(1)
    family = _FOLDERS[folder]
    if family == "nyu-image" and "heatmap" in name:   # run.sh with USE_HEATMAPS=True
        family = "nyu-image-heatmaps"
    return family, "single-image variant (nyu_model_single)" if folder == "nyu_model_single" \
        else None


def published_auc_for(model_row, *, models: pd.DataFrame | None = None) -> PublishedMatch | None:
    """The published AUC of a stored model's family, or None (classical baselines, unknown
    imports).

    Parameters
    ----------
    model_row : mapping or row with ``model``, ``kind`` and optionally ``parent``
        A row of `Store.models` (a Series, a dict or an ``itertuples`` row).
    models : DataFrame, optional
        `Store.models`, to find a child's family through its parents when its own kind and name
        do not say it (e.g. an imported child of an ILCscope GMIC).

    Returns
    -------
    PublishedMatch or None
        ``fine_tuned_from`` is the row's parent whenever it has one: a child is never the
        published model, even when its kind names the family; a row with ``synthetic`` true
        (the demo's models) gets that said in ``variant``.
    """
    parent = _get(model_row, "parent")
    family, variant = _family(model_row)
    seen = {_get(model_row, "model")}
    ancestor = parent
    while family is None and ancestor is not None and models is not None \
            and ancestor not in seen:   # a parent cycle stops here
        seen.add(ancestor)
        rows = models[models["model"] == ancestor]
        if rows.empty:
            break
        family, variant = _family(rows.iloc[0])
        ancestor = _get(rows.iloc[0], "parent")
    if family is None:
        return None
    if _get(model_row, "synthetic"):   # bool or numpy bool; NaN/None: not synthetic
        variant = "synthetic demo model of this architecture, not the published weights"
    return PublishedMatch(str(_get(model_row, "model")), PUBLISHED[family],
                          fine_tuned_from=None if parent is None else str(parent),
                          variant=variant)


def published_table(models: pd.DataFrame, names=None) -> pd.DataFrame:
    """One row per model of ``models`` (`Store.models`), or of ``names`` in their order.

    Returns
    -------
    DataFrame
        Columns model, family (missing if no paper applies), published_auc (NaN then), fine_tuned
        (bool), published_label (the paper, its test data, and whether this is that model).
    """
    names = list(models["model"]) if names is None else list(names)
    by_name = {r["model"]: r for r in models.to_dict("records")}
    rows = []
    for name in names:
        match = published_auc_for(by_name.get(name, {"model": name}), models=models)
        rows.append({"model": name,
                     "family": match.published.family if match else None,
                     "published_auc": match.published.auc if match else math.nan,
                     "fine_tuned": bool(match and match.fine_tuned_from),
                     "published_label": match.label if match else ""})
    return pd.DataFrame(rows, columns=["model", "family", "published_auc", "fine_tuned",
                                       "published_label"])


def with_published(wide: pd.DataFrame, models: pd.DataFrame) -> pd.DataFrame:
    """`benchmark.auc_wide`'s table with "Published AUC" and "Published in" after ``model``."""
    table = published_table(models, wide["model"]).set_index("model")
    out = wide.copy()
    out.insert(1, "Published AUC", table["published_auc"].reindex(wide["model"]).to_numpy())
    out.insert(2, "Published in", table["published_label"].reindex(wide["model"]).to_numpy())
    return out
