"""Reader studies from the store: what the Reader-study page and ``python -m core report mrmc``
both show.

Why one module: the page and the CLI must print the same numbers to the digit, so both call
`mrmc_report`: `load_study` turns the store's long frame of reads (`Store.study_reads`) into the
(readers, modalities, cases) array that `core.stats.mrmc_test` takes, and the report adds the
tables the page draws (reader AUCs, ROC points, the sample-size table, a model against the
readers). Pure over a `Store`; no Streamlit.

Readers of kind 'model' (a model entered as a fixed reader) are not among the random readers
tested; they are offered for the model-versus-readers comparison, as is any store model with
scores at the study's level when the study reads the store's cases.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core import stats
from core.errors import InputError
from core.reports.benchmark import usable_models
from core.reports.scores import model_scores
from core.stats import (MRMCResult, ModelVsReadersResult, model_vs_readers, mrmc_test,
                        sample_size)
from core.store import Store
from core.validation import check_choice
from core.vocabulary import DENSITY_CATEGORY_NAMES, LEVELS, UNAIDED, aided_modality

__all__ = ["SUBGROUPS", "UNAIDED", "PLAN_READERS", "StudyArray", "MRMCReport", "order_modalities",
           "study_levels", "load_study", "roc_points", "model_options", "compare_model",
           "mrmc_report", "to_dict"]

DENSE = (2, 3)            # density categories counted as dense breasts
PLAN_READERS = (4, 6, 8, 10, 15, 20)   # the sample-size table's rows
SUBGROUPS = {
    "ILC": "the ILC cancers and every healthy case (as the test-ILC set)",
    "dense": f"cases of {' or '.join(DENSITY_CATEGORY_NAMES[c] for c in DENSE)} breasts "
             f"(density categories {DENSE[0]}-{DENSE[1]})",
}


@dataclass(frozen=True)
class StudyArray:
    """A reader study as arrays: what `core.stats.mrmc_test` takes.

    ratings : float64 array of shape (n_readers, n_modalities, n_cases); NaN = not read.
    truth : int8 array of shape (n_cases,), 1 = cancer.
    readers, modalities, case_ids : the names along each axis (readers and cases sorted,
        modalities in the order asked, else `order_modalities`).
    fixed : models entered in the study as fixed readers, one row per case (columns: their
        names; NaN = not read); not in ``ratings``.
    notes : plain sentences on what was left out or derived.
    """

    study: str
    level: str
    subgroup: str | None
    readers: tuple[str, ...]
    modalities: tuple[str, ...]
    case_ids: tuple[str, ...]
    ratings: np.ndarray
    truth: np.ndarray
    fixed: pd.DataFrame
    store_cases: bool
    notes: tuple[str, ...]

    @property
    def n_missing(self) -> int:
        return int(np.isnan(self.ratings).sum())


@dataclass(frozen=True)
class MRMCReport:
    """One MRMC analysis of a study, and every table the page shows.

    reader_auc : wide, one row per reader: the AUC in each modality (columns named by the
        modalities), and ``change`` (second modality minus first) with two modalities.
    reader_auc_long : reader, modality, auc (the slope chart's input).
    tables : `MRMCResult.tables()`: modalities, differences, components, test.
    roc : reader, modality, fpr, tpr, threshold (`roc_points`).
    sample_size : `core.stats.sample_size` from this study's components as a pilot: per number
        of readers, the fewest cases reaching ``power`` for an AUC difference ``effect``
        (empty for a one-reader study).
    comparison : the model against the readers, when a model was asked for.
    """

    data: StudyArray
    result: MRMCResult
    sentence: str
    reader_auc: pd.DataFrame
    reader_auc_long: pd.DataFrame
    tables: dict
    roc: pd.DataFrame
    sample_size: pd.DataFrame
    effect: float
    power: float
    comparison: ModelVsReadersResult | None


# ---------------------------------------------------------------------------- the study

def order_modalities(names) -> list[str]:
    """``unaided`` first, the others sorted: differences then read aided minus unaided."""
    names = sorted(set(names))
    return [n for n in names if n == UNAIDED] + [n for n in names if n != UNAIDED]


def _study_row(store: Store, study: str) -> pd.Series:
    studies = store.reader_studies()
    if study not in set(studies["study"]):
        known = ", ".join(studies["study"]) or "none yet (import one with `import reader-study`)"
        raise InputError(f"reader study {study!r} does not exist; known: {known}")
    return studies.set_index("study").loc[study]


def study_levels(store: Store, study: str) -> list[str]:
    """Levels the study can be analysed at: its own, and coarser ones for store cases (a
    breast's rating is the highest of its images', as `Store.study_reads` says)."""
    row = _study_row(store, study)
    own = LEVELS.index(row["level"])
    return list(LEVELS[own:]) if row["store_cases"] else [row["level"]]


def _subgroup_cases(store: Store, level: str, subgroup: str, reads: pd.DataFrame) -> set[str]:
    """Case ids of ``reads`` in the subgroup, from the store's truth at ``level``."""
    cases = store.cases(level=level).set_index("case_id").reindex(reads["case_id"].unique())
    if subgroup == "ILC":
        keep = (cases["label"] == 0) | (cases["histology"] == "ILC")
    else:
        keep = cases["density"].isin(DENSE)
    return set(cases.index[keep.fillna(False).astype(bool)])


def load_study(store: Store, study: str, *, level: str | None = None,
               modalities=None, subgroup: str | None = None) -> StudyArray:
    """The study's reads at ``level`` (None: its own) as a (readers, modalities, cases) array.

    ``modalities``: at least two of the study's (None: all, `order_modalities`); their order
    is kept, so the test's differences read later minus earlier. ``subgroup``: None, 'ILC' or
    'dense' (`SUBGROUPS`; studies of store cases only). Cases come from the radiologists'
    reads; a case a reader did not read is NaN in that reader's row.
    """
    row = _study_row(store, study)
    level = row["level"] if level is None else level
    reads = store.study_reads(study, level=level)
    known = order_modalities(reads["modality"])
    if modalities is None:
        modalities = known
    modalities = [modalities] if isinstance(modalities, str) else list(modalities)
    for m in modalities:
        if m not in known:
            raise InputError(f"modality {m!r} is not in reader study {study!r}; known: "
                             f"{', '.join(known) or 'none (the study has no reads)'}")
    if len(set(modalities)) < 2 or len(set(modalities)) != len(modalities):
        raise InputError(f"modalities must name at least 2 different modalities of reader study "
                         f"{study!r} to compare; got {modalities}; known: {', '.join(known)}")
    notes = []
    if subgroup is not None:
        subgroup = check_choice(subgroup, tuple(SUBGROUPS), name="subgroup")
        if not row["store_cases"]:
            raise InputError(f"subgroup {subgroup!r} needs the store's histology and density of "
                             f"each case; reader study {study!r} reads cases of its own. Pass "
                             f"subgroup None")
        keep = _subgroup_cases(store, level, subgroup, reads)
        notes.append(f"Subgroup {subgroup}: {SUBGROUPS[subgroup]}; "
                     f"{reads['case_id'].nunique() - len(keep)} cases left out.")
        reads = reads[reads["case_id"].isin(keep)]
    fixed = _fixed_readers(reads, known)
    reads = reads[(reads["reader_kind"] != "model") & reads["modality"].isin(modalities)]
    if reads.empty:
        raise InputError(f"reader study {study!r} has no radiologists' reads in {modalities} at "
                         f"{level} level" + (f" in subgroup {subgroup}" if subgroup else ""))
    readers = sorted(reads["reader"].unique())
    case_ids = sorted(reads["case_id"].unique())
    r = pd.Index(readers).get_indexer(reads["reader"])
    t = pd.Index(modalities).get_indexer(reads["modality"])
    c = pd.Index(case_ids).get_indexer(reads["case_id"])
    ratings = np.full((len(readers), len(modalities), len(case_ids)), np.nan)
    ratings[r, t, c] = reads["rating"].to_numpy(dtype=np.float64)
    truth = (reads.drop_duplicates("case_id").set_index("case_id")["truth"]
             .reindex(case_ids).to_numpy(dtype=np.int8))
    if level != row["level"]:
        notes.append(f"Read at {row['level']} level: a {level}'s rating is the highest of its "
                     f"{row['level']}s' ratings.")
    if missing := int(np.isnan(ratings).sum()):
        notes.append(f"{missing} of {ratings.size} reads are missing (a reader did not read a "
                     f"case in a modality).")
    return StudyArray(study, level, subgroup, tuple(readers), tuple(modalities), tuple(case_ids),
                      ratings, truth, fixed.reindex(case_ids), bool(row["store_cases"]),
                      tuple(notes))


def _fixed_readers(reads: pd.DataFrame, known: list[str]) -> pd.DataFrame:
    """Each model reader's ratings by case, from the first modality (unaided first) it read
    in: a model rates a case the same in every condition."""
    models = reads[reads["reader_kind"] == "model"]
    columns = {}
    for name, part in models.groupby("reader", sort=True):
        first = next(m for m in known if m in set(part["modality"]))
        columns[name] = part[part["modality"] == first].set_index("case_id")["rating"]
    return pd.DataFrame(columns, dtype=np.float64)


def roc_points(data: StudyArray) -> pd.DataFrame:
    """Empirical ROC points per reader and modality, on the cases each read.

    Columns: reader, modality, fpr, tpr, threshold (decreasing from +inf). Collinear points
    are dropped (`core.stats.roc_curve`), which leaves each curve unchanged.
    """
    parts = []
    for i, reader in enumerate(data.readers):
        for j, modality in enumerate(data.modalities):
            read = ~np.isnan(data.ratings[i, j])
            fpr, tpr, thr = stats.roc_curve(data.truth[read], data.ratings[i, j, read],
                                            drop_intermediate=True)
            parts.append(pd.DataFrame({"reader": reader, "modality": modality, "fpr": fpr,
                                       "tpr": tpr, "threshold": thr}))
    return pd.concat(parts, ignore_index=True)


# ---------------------------------------------------------------------------- a model

def model_options(store: Store, study: str, *, level: str | None = None) -> list[str]:
    """Models to compare with the readers: the study's fixed readers, then (for a study of
    store cases) every store model with scores at ``level`` (None: the study's), those that
    aided the readers (a modality ``aided-by-<model>``) first."""
    row = _study_row(store, study)
    level = row["level"] if level is None else level
    reads = store.study_reads(study, level=level)
    fixed = sorted(reads.loc[reads["reader_kind"] == "model", "reader"].unique())
    stored = usable_models(store.prediction_levels(), level) if row["store_cases"] else []
    aiding = [m for m in stored if aided_modality(m) in set(reads["modality"])]
    return list(dict.fromkeys([*fixed, *aiding, *stored]))


def _model_ratings(store: Store, data: StudyArray, model: str) -> np.ndarray:
    """The model's score per case of ``data`` (NaN = none), shape (n_cases,)."""
    if model in data.fixed.columns:
        return data.fixed[model].to_numpy(dtype=np.float64)
    if not data.store_cases:
        known = ", ".join(data.fixed.columns) or "none"
        raise InputError(f"model {model!r} is not a fixed reader of reader study {data.study!r} "
                         f"(its cases are its own, so store models cannot score them); known: "
                         f"{known}")
    scores = model_scores(store, models=[model], level=data.level)
    return (scores.set_index("case_id")["score"].reindex(list(data.case_ids))
            .to_numpy(dtype=np.float64))


def compare_model(store: Store, data: StudyArray, model: str, *, modality: str | None = None,
                  cov: str = "jackknife", alpha: float = 0.05, n_boot: int = 2000,
                  seed: int = 0) -> ModelVsReadersResult:
    """``model`` (a fixed reader) against the readers' mean AUC in ``modality`` (None: the
    first, unaided), on the cases the model scored (`core.stats.model_vs_readers`)."""
    modality = data.modalities[0] if modality is None else modality
    if modality not in data.modalities:
        raise InputError(f"modality {modality!r} is not among the analysed modalities "
                         f"{list(data.modalities)}; pass one of them")
    scores = _model_ratings(store, data, model)
    scored = ~np.isnan(scores)
    if not scored.any():
        raise InputError(f"model {model!r} has no scores on the cases of reader study "
                         f"{data.study!r} at {data.level} level; run it on these cases first")
    j = data.modalities.index(modality)
    return model_vs_readers(data.ratings[:, j, scored], scores[scored], data.truth[scored],
                            cov=cov, alpha=alpha, readers=data.readers, model=model,
                            n_boot=n_boot, seed=seed)


# ---------------------------------------------------------------------------- the report

def mrmc_report(store: Store, *, study: str, modalities=None, level: str | None = None,
                method: str = "or", cov: str = "jackknife", analysis: str = "rrrc",
                subgroup: str | None = None, model: str | None = None,
                model_modality: str | None = None, effect: float = 0.05, power: float = 0.8,
                alpha: float = 0.05, n_boot: int = 2000, seed: int = 0) -> MRMCReport:
    """The MRMC test of ``study`` (`core.stats.mrmc_test` on `load_study`'s array) and the
    tables the page shows; ``model`` adds `compare_model` in ``model_modality``. ``effect``
    and ``power`` set the sample-size table (the AUC difference to detect, the target)."""
    data = load_study(store, study, level=level, modalities=modalities, subgroup=subgroup)
    result = mrmc_test(data.ratings, data.truth, modalities=data.modalities,
                       readers=data.readers, method=method, cov=cov, analysis=analysis,
                       alpha=alpha, n_boot=n_boot, seed=seed)
    tables = result.tables()
    wide = result.auc.rename_axis(columns=None).reset_index()
    if len(data.modalities) == 2:
        wide["change"] = wide[data.modalities[1]] - wide[data.modalities[0]]
    comparison = None
    if model is not None:
        comparison = compare_model(store, data, model, modality=model_modality,
                                   cov=cov if method == "or" else "jackknife", alpha=alpha,
                                   n_boot=n_boot, seed=seed)
    if len(data.readers) > 1:
        plan = sample_size(result, effect=effect, power=power, alpha=alpha, analysis=analysis,
                           n_readers=PLAN_READERS)
    else:   # one reader (fixed readers) estimates no reader variance: nothing to plan from
        plan = pd.DataFrame({"n_readers": [], "n_cases": pd.array([], "Int64"), "power": []})
    return MRMCReport(data, result, result.summary(), wide, tables.pop("reader_auc"), tables,
                      roc_points(data), plan, effect, power, comparison)


def to_dict(report: MRMCReport) -> dict:
    """The report as plain values (the CLI's JSON; the page shows the same frames)."""
    data, res = report.data, report.result
    out = dict(
        study=data.study, level=data.level, subgroup=data.subgroup,
        modalities=list(data.modalities), readers=list(data.readers), method=res.method,
        cov=res.cov, analysis=res.analysis, alpha=res.alpha, n_cases=len(data.case_ids),
        n_pos=res.n_pos, n_neg=res.n_neg, n_missing_reads=data.n_missing,
        n_excluded=res.n_excluded, sentence=report.sentence,
        test=dict(statistic_name=res.statistic_name, statistic=res.statistic, df1=res.df1,
                  df2=res.df2, p=res.p),
        reader_auc=report.reader_auc, modality_auc=report.tables["modalities"],
        differences=report.tables["differences"], components=res.components,
        mean_squares=res.mean_squares, notes=list(data.notes),
        sample_size=dict(effect=report.effect, power=report.power, table=report.sample_size))
    if report.comparison is not None:
        c = report.comparison
        out["model_vs_readers"] = dict(sentence=c.summary(), **c.tables()["test"].iloc[0].to_dict(),
                                       reader_auc=c.tables()["reader_auc"],
                                       components=c.components)
    return out


def public_description(text) -> str:
    """A stored study description for the page: without the source file it may name ("see
    core/demo/reader_study.py" is for developers, not for readers of the results)."""
    return re.sub(r";?\s*see [\w./-]+\.py", "", str(text))
