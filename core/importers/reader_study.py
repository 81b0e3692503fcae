"""Reader studies in: ``python -m core import reader-study FILE --study S`` and the store's reads.

A reader study is readers x modalities (conditions: ``unaided``, ``aided-by-gmic`` ...) x cases,
one rating per read, the truth per case and a level (`core.store.studies`). Three sources:

long    a CSV/Parquet table (`core.io.tables.read_table`), one row per read: reader, modality,
        case, rating and truth columns (found by name or alias, or named by the ``*_column``
        arguments). Without a modality column, ``modality`` names the file's one condition.
imrmc   the FDA iMRMC input file: free header lines, a line ``BEGIN DATA:``, then one row per
        read ``readerID, caseID, modalityID, score``; truth rows have readerID ``-1`` (or
        ``truth``), any modalityID (``0``, ``truth``) and score 0/1. Fields are trimmed.
store   `import_store_reads`: the store's reads at a level (the readers' clinical reads),
        as the modality ``unaided``.

Any source can add models as fixed readers (``models``; reader kind 'model'), whose rating is
the model's score at the study's level (image scores aggregated by max), in ``model_modality``.

Cases: a study of store cases uses the store's case ids at its level (`Store.cases`: image_id,
``<exam_id>/<L|R>``, exam_id) and the store's labels as truth; a file's truth must agree. A
study of its own cases (an iMRMC file from elsewhere) keeps the file's ids and truth.
``store_cases`` None detects it: every id a store case (at ``level``, else at the level that
matches them all) -> store cases; none -> the file's own cases (level 'exam' unless given);
some -> refused, naming the unknown ids.

Each import is one transaction (all or nothing) and idempotent: it replaces the reads of the
readers and modalities it brings (other readers, e.g. a model added later, stay) and upserts
the study's cases. Refused with one line, the store unchanged: duplicate (reader, modality,
case) rows, non-numeric ratings, a case without truth, truth that contradicts the store's
label, unknown case ids. Blank ratings, split-plot designs and other missing reads are allowed;
the report counts the missing reads per reader and modality.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import InputError
from core.importers import ImportReport
from core.importers.columns import check_ids, find_column, parse_binary, parse_numbers
from core.io.tables import read_table
from core.progress import ProgressFn, report as report_progress
from core.store import Store, study_delete_plan
from core.validation import check_choice, check_level
from core.vocabulary import LEVELS, UNAIDED

__all__ = ["STUDY_FORMATS", "UNAIDED", "StudyImportReport", "import_reader_study",
           "import_store_reads", "parse_imrmc", "study_design"]

STUDY_FORMATS = ("long", "imrmc")
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
READER_ALIASES = ("reader", "reader_id", "readerid", "radiologist")
MODALITY_ALIASES = ("modality", "modality_id", "modalityid", "condition", "treatment")
CASE_ALIASES = ("case", "case_id", "caseid", "id", "image_id", "exam_id")
TRUTH_ALIASES = ("truth", "label", "cancer")
RATING_ALIASES = ("rating", "score", "value")
TRUTH_READERS = ("-1", "truth")
BEGIN_DATA = "BEGIN DATA:"


@dataclass
class StudyImportReport(ImportReport):
    """An `ImportReport` with the study's design as stored after the import.

    design : n_readers, n_modalities, n_cases, n_reads, n_missing, fully_crossed.
    missing : one entry per (reader, modality): reader, modality, n_reads, n_missing (cases
        of the study that reader did not read in that modality).
    """

    study: str = ""
    design: dict = field(default_factory=dict)
    missing: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {**super().as_dict(), "study": self.study, "design": self.design,
                "missing": self.missing}


@dataclass(frozen=True)
class _Reads:
    """A source in canonical form: reads (reader, modality, case_id, rating: float, NaN =
    blank) and truth per case id (float 0/1, NaN = none given)."""

    reads: pd.DataFrame
    truth: pd.Series


# ---------------------------------------------------------------------------- public API
def import_reader_study(store: Store, path: str | Path, *, study: str, format: str | None = None,
                        level: str | None = None, store_cases: bool | None = None,
                        reader_column: str | None = None, modality_column: str | None = None,
                        case_column: str | None = None, truth_column: str | None = None,
                        rating_column: str | None = None, modality: str | None = None,
                        rating_scale: str | None = None, description: str | None = None,
                        models: Sequence[str] = (), model_modality: str = UNAIDED,
                        progress: ProgressFn | None = None) -> StudyImportReport:
    """Import a reader study from a long table or an iMRMC file (see the module docstring).

    ``format`` None: 'imrmc' for a ``.imrmc`` file, else 'long'. Returns the report, with the
    study's design and its missing reads per reader and modality.

    Example: ``import_reader_study(store, "study.imrmc", study="pilot")``.
    """
    path = Path(path)
    _check_options(study, level)
    fmt = format or ("imrmc" if path.suffix.lower() == ".imrmc" else "long")
    check_choice(fmt, STUDY_FORMATS, name="format")
    report_progress(progress, 0, 2, "reading")
    if fmt == "imrmc":
        if not path.is_file():
            raise InputError(f"iMRMC file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise InputError(f"{path.name}: not UTF-8 text; save the iMRMC file as UTF-8 "
                             "(or ASCII)") from None
        source = parse_imrmc(text, path.name)
    else:
        source = _long_reads(read_table(path), path.name, reader_column, modality_column,
                             case_column, truth_column, rating_column, modality)
    report = _write(store, source, path.name, study=study, level=level,
                    store_cases=store_cases, rating_scale=rating_scale, description=description,
                    models=models, model_modality=model_modality, synthetic=False)
    report_progress(progress, 2, 2, "written")
    return report


def import_store_reads(store: Store, *, study: str, level: str,
                       readers: Sequence[str] | None = None, test_set: str | None = None,
                       models: Sequence[str] = (), modality: str = UNAIDED,
                       description: str | None = None,
                       progress: ProgressFn | None = None) -> StudyImportReport:
    """A study of store cases from the store's reads at ``level`` (their scores, as the
    ``modality`` condition), on the cases of ``test_set`` (None: all), with ``models`` as
    fixed readers. Recall-only reads (no score) are left out and counted."""
    _check_options(study, level)
    report_progress(progress, 0, 2, "reading")
    stored = store.reads(level=level, readers=readers, test_set=test_set)
    if readers is not None:
        absent = sorted(set(readers) - set(stored["reader"]))
        if absent:
            raise InputError(f"reader(s) {', '.join(absent)} have no {level}-level reads"
                             + (f" in test set {test_set!r}" if test_set else "")
                             + f"; known readers: {', '.join(store.reader_names()) or 'none'}")
    if stored.empty and not models:
        raise InputError(f"the store has no {level}-level reads"
                         + (f" in test set {test_set!r}" if test_set else "")
                         + "; import reader reads first, or pass models")
    cases = store.cases(level=level, test_set=test_set)
    scored = stored[stored["score"].notna()]
    source = _Reads(pd.DataFrame({"reader": scored["reader"], "modality": modality,
                                  "case_id": scored["case_id"], "rating": scored["score"]}),
                    pd.Series(np.nan, index=pd.Index(cases["case_id"], name="case_id")))
    report = _write(store, source, "store reads", study=study, level=level, store_cases=True,
                    rating_scale=None, description=description, models=models,
                    model_modality=modality, synthetic=False,
                    note=f"{len(stored) - len(scored)} recall-only read(s) without a score "
                         "left out" if len(scored) < len(stored) else "")
    report_progress(progress, 2, 2, "written")
    return report


def parse_imrmc(text: str, file: str) -> _Reads:
    """The reads and truth of an iMRMC input file's text (format in the module docstring)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines)
                  if line.strip().upper().rstrip(":").strip() == BEGIN_DATA[:-1]), None)
    if start is None:
        raise InputError(f"{file}: no line {BEGIN_DATA!r}; an iMRMC file has header lines, "
                         f"then {BEGIN_DATA!r}, then rows readerID, caseID, modalityID, score")
    reads, truth, truth_line = [], {}, {}
    for number, line in enumerate(lines[start + 1:], start=start + 2):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 4 or not all(fields[:3]):
            raise InputError(f"{file}: line {number} has {len(fields)} field(s) "
                             f"({line.strip()[:60]!r}); expected readerID, caseID, modalityID, "
                             "score")
        reader, case, modality, score = fields
        value = _number(score, file, number)
        if reader.lower() in TRUTH_READERS:
            if value not in (0.0, 1.0):
                raise InputError(f"{file}: line {number}: truth of case {case!r} is {score!r}; "
                                 "truth rows hold 0 (no cancer) or 1 (cancer)")
            if case in truth:
                raise InputError(f"{file}: case {case!r} has two truth rows (lines "
                                 f"{truth_line[case]} and {number}); keep one")
            truth[case], truth_line[case] = value, number
        else:
            reads.append((reader, modality, case, value, number))
    if not reads:
        raise InputError(f"{file}: no reads after {BEGIN_DATA!r} (only truth rows)")
    frame = pd.DataFrame(reads, columns=["reader", "modality", "case_id", "rating", "line"])
    _check_duplicates(frame, file, lambda row: f"lines {row}")
    return _Reads(frame.drop(columns="line"),
                  pd.Series(truth, dtype="float64").rename_axis("case_id"))


# ---------------------------------------------------------------------------- sources
# A plain decimal number (ASCII digits, optional sign, point and exponent): Python's `float`
# also takes '1_000', 'inf', 'nan' and non-ASCII digits, none of which a rating is.
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def _number(text: str, file: str, line: int) -> float:
    value = float(text) if _DECIMAL.fullmatch(text) else float("nan")
    if not np.isfinite(value):
        raise InputError(f"{file}: line {line} has the score {text[:40]!r}; scores and truth "
                         "must be plain decimal numbers (e.g. 87 or 0.5)")
    return value


def _long_reads(table: pd.DataFrame, file: str, reader_column, modality_column, case_column,
                truth_column, rating_column, modality) -> _Reads:
    """A long table in canonical form: ids as text, ratings and truth checked."""
    columns = {
        "reader": find_column(table, reader_column, READER_ALIASES, "reader", file,
                              param="reader_column"),
        "modality": find_column(table, modality_column, MODALITY_ALIASES, "modality", file,
                                required=modality is None, param="modality_column"),
        "case_id": find_column(table, case_column, CASE_ALIASES, "case", file,
                               param="case_column"),
        "truth": find_column(table, truth_column, TRUTH_ALIASES, "truth", file,
                             required=False),
        "rating": find_column(table, rating_column, RATING_ALIASES, "rating", file,
                              param="rating_column"),
    }
    frame = pd.DataFrame({
        "reader": check_ids(table[columns["reader"]], columns["reader"], file),
        "modality": (check_ids(table[columns["modality"]], columns["modality"], file)
                     if columns["modality"] else modality),
        "case_id": check_ids(table[columns["case_id"]], columns["case_id"], file),
        "rating": parse_numbers(table[columns["rating"]], columns["rating"], file),
        "line": np.arange(2, len(table) + 2)})  # the CSV line: header is line 1
    for name in ("reader", "modality", "case_id"):
        blank = frame[name].isna()
        if blank.any():
            raise InputError(f"{file}: column {columns[name]!r} is blank on row "
                             f"{int(np.flatnonzero(blank)[0]) + 1}; every read needs a {name}")
    _check_duplicates(frame, file, lambda row: f"rows {row}")
    truth = pd.Series(dtype="float64", index=pd.Index([], name="case_id"))
    if columns["truth"]:
        values = parse_binary(table[columns["truth"]], columns["truth"], file)
        given = pd.DataFrame({"case_id": frame["case_id"], "truth": values}).dropna()
        spread = given.groupby("case_id")["truth"].nunique()
        if (spread > 1).any():
            raise InputError(f"{file}: case {spread.index[spread > 1][0]!r} has truth 0 on "
                             "some rows and 1 on others; one case has one truth")
        truth = given.groupby("case_id")["truth"].first()
    return _Reads(frame.drop(columns="line"), truth)


def _check_duplicates(frame: pd.DataFrame, file: str, where) -> None:
    dup = frame.duplicated(["reader", "modality", "case_id"], keep=False)
    if dup.any():
        first = frame[dup].iloc[0]
        rows = frame.loc[dup & (frame["reader"] == first["reader"])
                         & (frame["modality"] == first["modality"])
                         & (frame["case_id"] == first["case_id"]), "line"]
        raise InputError(f"{file}: reader {first['reader']!r} read case {first['case_id']!r} "
                         f"in modality {first['modality']!r} twice ("
                         f"{where(' and '.join(map(str, rows.head(2))))}); keep one read")


# ---------------------------------------------------------------------------- the write
def _check_options(study: str, level: str | None) -> None:
    if not isinstance(study, str) or not STUDY_NAME.match(study):
        raise InputError(f"study name {study!r} is not usable; use 1-64 letters, digits, '.', "
                         "'_' or '-' (no spaces or '/'), e.g. 'pilot-2024'")
    if level is not None:
        check_level(level)


def _write(store: Store, source: _Reads, file: str, *, study: str, level: str | None,
           store_cases: bool | None, rating_scale, description, models, model_modality: str,
           synthetic: bool, note: str = "") -> StudyImportReport:
    """Check ``source`` against the store, then write the study in one transaction."""
    reads = source.reads
    case_ids = sorted(set(reads["case_id"]) | set(source.truth.index))
    level, labels = _resolve_cases(store, case_ids, file, level, store_cases)
    truth = _case_truth(case_ids, source.truth, labels, file)
    existing = store.reader_studies().set_index("study")
    if study in existing.index:
        old = existing.loc[study]
        if old["level"] != level or bool(old["store_cases"]) != (labels is not None):
            kind = "store" if old["store_cases"] else "its own"
            raise InputError(f"reader study {study!r} holds {old['level']}-level cases of "
                             f"{kind}; this file's are {level}-level cases of "
                             f"{'store' if labels is not None else 'its own'}: import it under "
                             "another study name")
    model_reads = _model_reads(store, models, level, case_ids, labels, reads, model_modality)
    blank = int(reads["rating"].isna().sum())
    reads = pd.concat([reads[reads["rating"].notna()], model_reads], ignore_index=True)
    kinds = {**{r: "radiologist" for r in reads["reader"]}, **{m: "model" for m in models}}
    frames = {
        "reader_studies": pd.DataFrame([{
            "study": study, "level": level, "store_cases": labels is not None,
            "rating_scale": rating_scale if rating_scale is not None else (
                existing.loc[study, "rating_scale"] if study in existing.index else None),
            "description": description if description is not None else (
                existing.loc[study, "description"] if study in existing.index
                else f"imported from {file}"),
            "synthetic": synthetic}]),
        "study_cases": pd.DataFrame({"study": study, "case_id": case_ids,
                                     "truth": truth.to_numpy().astype(np.int8)}),
        "study_readers": pd.DataFrame({"study": study, "reader": list(kinds),
                                       "kind": list(kinds.values())}),
        "study_reads": reads.assign(study=study),
    }
    delete = study_delete_plan(study, readers=sorted(kinds),
                               modalities=sorted(set(reads["modality"])))
    store.write_tables(frames, delete=delete)
    notes = [n for n in (note, f"{blank} blank rating(s) read as missing reads" if blank else "")
             if n]
    report = StudyImportReport(kind="reader-study", dataset="", study=study)
    report.add(file, "imported", "; ".join(notes), rows=len(reads))
    report.design, report.missing = study_design(store, study)
    return report


def _resolve_cases(store: Store, case_ids: list[str], file: str, level: str | None,
                   store_cases: bool | None) -> tuple[str, pd.Series | None]:
    """The study's level and, for store cases, the store's label per case id (None: the
    file's own cases)."""
    if store_cases is False:
        return level or "exam", None
    levels = [level] if level is not None else list(LEVELS)
    best, best_labels, best_found = levels[0], None, -1
    for candidate in levels:
        cases = store.cases(level=candidate)
        labels = cases.set_index("case_id")["label"]
        found = int(pd.Index(case_ids).isin(labels.index).sum())
        if found == len(case_ids):
            return candidate, labels.reindex(case_ids)
        if found > best_found:
            best, best_labels, best_found = candidate, labels, found
    if best_found <= 0 and store_cases is None:
        return level or "exam", None
    unknown = [c for c in case_ids if c not in best_labels.index]
    raise InputError(f"{file}: {len(unknown)} of {len(case_ids)} case ids are not {best}-level "
                     f"cases of the store (first {unknown[0]!r}); use the store's case ids "
                     "(image_id, <exam_id>/<L|R>, exam_id), or pass store_cases=False for a "
                     "study of its own cases")


def _case_truth(case_ids: list[str], given: pd.Series, labels: pd.Series | None,
                file: str) -> pd.Series:
    """0/1 per case id: the store's label for store cases (a given truth must agree), else
    the file's truth; a case with neither is refused."""
    given = given.reindex(case_ids)
    if labels is None:
        truth = given
    else:
        stored = pd.to_numeric(labels.reindex(case_ids), errors="coerce").astype("float64")
        clash = given.notna() & stored.notna() & (given != stored)
        if clash.any():
            case = clash.index[clash.to_numpy()][0]
            raise InputError(f"{file}: case {case!r} has truth {int(given[case])} but the "
                             f"store's label is {int(stored[case])}; fix the truth column (or "
                             "the store's label) so they agree")
        truth = stored.fillna(given)
    missing = truth.isna()
    if missing.any():
        raise InputError(f"{file}: case {truth.index[missing.to_numpy()][0]!r} has no truth "
                         f"({int(missing.sum())} case(s) without); give each case 0 or 1 (a "
                         "truth column, or iMRMC truth rows with readerID -1)")
    return truth


def _model_reads(store: Store, models: Sequence[str], level: str, case_ids: list[str],
                 labels: pd.Series | None, reads: pd.DataFrame,
                 modality: str) -> pd.DataFrame:
    """Each model's score on the study's cases as a fixed reader's reads (NaN: no read)."""
    columns = ["reader", "modality", "case_id", "rating"]
    if not models:
        return pd.DataFrame(columns=columns)
    if labels is None:
        raise InputError("models can join a study of store cases only (their scores are the "
                         "store's); import the study with the store's case ids")
    clash = sorted(set(models) & set(reads["reader"]))
    if clash:
        raise InputError(f"model {clash[0]!r} has the name of a reader in the study; rename "
                         "the reader or leave the model out")
    from core.reports.scores import model_scores

    scores = model_scores(store, models=list(models), level=level)
    scores = scores[scores["case_id"].isin(case_ids) & scores["score"].notna()]
    return pd.DataFrame({"reader": scores["model"], "modality": modality,
                         "case_id": scores["case_id"], "rating": scores["score"]})[columns]


def study_design(store: Store, study: str) -> tuple[dict, list[dict]]:
    """The stored study's size and its missing reads per (reader, modality)."""
    reads = store.study_reads(study)
    n_cases = int(store.reader_studies().set_index("study").loc[study, "n_cases"])
    counts = reads.groupby(["reader", "modality"]).size()
    grid = pd.MultiIndex.from_product([sorted(set(reads["reader"])),
                                       sorted(set(reads["modality"]))],
                                      names=["reader", "modality"])
    counts = counts.reindex(grid, fill_value=0)
    missing = [{"reader": r, "modality": m, "n_reads": int(n), "n_missing": n_cases - int(n)}
               for (r, m), n in counts.items()]
    n_missing = sum(m["n_missing"] for m in missing)
    return ({"n_readers": len(grid.levels[0]), "n_modalities": len(grid.levels[1]),
             "n_cases": n_cases, "n_reads": len(reads), "n_missing": n_missing,
             "fully_crossed": n_missing == 0}, missing)
