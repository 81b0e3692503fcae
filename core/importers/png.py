"""PNG folders with a label manifest: ``python -m core import png DIR --manifest FILE``.

Images are 16- or 8-bit greyscale PNGs named as in the screening-mammography metarepository
(nyukat/mammography_metarepository): ``<exam>_<L|R>_<CC|MLO>.png`` or ``<exam>_<L|R>-<CC|MLO>.png``
(a trailing ``_<n>`` marks a repeat), anywhere under DIR. Files whose names do not follow the
pattern are skipped unless the manifest lists them in a ``file`` column.

Manifest (CSV)
--------------
One row per breast (or per image, with a ``file`` column). Column names are case-insensitive;
the first name listed is the one to use, the others are accepted:

===============  ========================================================================
exam             exam key as in the file names (exam_id, exam_key, index, study). Required
laterality       L/R/left/right (side, breast). Required unless the row is per exam with
                 ``left_malignant``/``right_malignant`` (the metarepository's cancer_label)
cancer           0/1: malignant finding in this breast (label, malignant, cancer_label,
                 malignant_label)
histology        ILC | IDC | other | none | unknown (also lobular, ductal); default
                 'unknown' for cancer 1, 'none' for 0
presentation     comma-separated: mass, spiculated mass (spiculated-mass), architectural
                 distortion, asymmetry, calcification, ill-defined, none
pathology        malignant | benign | none
split            train | val | test (validation, valid)
density          0-3 or a-d (BI-RADS): the exam's labelled density (density table, source
                 'label'); rows of one exam must agree
age              years
patient          patient identifier; stored only as a keyed pseudonym (`Store.pseudonym`)
file             image path relative to DIR (then ``view`` or the file name gives the view);
                 absolute paths and '..' are refused
view             CC | MLO | other (with ``file``)
===============  ========================================================================

Example::

    exam,laterality,cancer,histology,split
    0,L,0,none,test
    0,R,1,ILC,test

The metarepository's own exam list (``data.pkl``: a list of dicts with ``L-CC`` ... ``R-MLO``
file-name lists and ``cancer_label``) is accepted as ``--manifest data.pkl``; exam keys are then
the list positions (0, 1, ...), as in its breast-level prediction files. It is read as plain
data only (`core.io.tables.load_plain_pickle`); a pickled DataFrame manifest is refused: save
it as CSV.

Rows for an exam that has no image file are not stored (reported as unmatched). Each image is
validated on its own (decoded whole: a truncated file fails) and written with its exam's rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import InputError
from core.importers import ImportReport
from core.importers.common import (
    NOT_UTF8, Batch, FileRows, Skipped, Snapshot, check_dataset, check_utf8_folder,
    escaped_name, exam_id_for, finish, image_id_for, parse_image_name, parse_laterality,
    raster_record, safe_relative,
)
from core.importers.columns import check_ids, find_column, id_text, parse_binary, parse_numbers
from core.io.tables import PICKLE_SUFFIXES, load_plain_pickle, read_table
from core.progress import ProgressFn, report as report_progress
from core.vocabulary import HISTOLOGIES, MAX_AGE_YEARS, PATHOLOGIES, PRESENTATIONS, VIEWS
from core.store import Store

__all__ = ["import_png", "read_manifest", "Manifest"]

_HISTOLOGY_WORDS = {h.lower(): h for h in HISTOLOGIES} | {"lobular": "ILC", "ductal": "IDC"}
_SPLIT_WORDS = {"train": "train", "val": "val", "validation": "val", "valid": "val",
                "test": "test"}
_DENSITY_WORDS = {"0": 0, "1": 1, "2": 2, "3": 3, "a": 0, "b": 1, "c": 2, "d": 3}
_PKL_VIEWS = ("L-CC", "R-CC", "L-MLO", "R-MLO")
# the largest screening set we know lists about a million images (NYU's, 1,001,093); a longer
# data.pkl is a crafted one whose shared references multiply the work, not a data set
MAX_LISTED_FILES = 2_000_000


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: exams, breast labels and (optionally) listed image files.

    exams : {exam_key: exams-table values (split, age, patient) + 'density'}.
    breasts : {(exam_key, 'L'|'R'): breasts-table values}.
    files : [(relative path, exam_key, laterality, view)] when the manifest lists files.
    """

    exams: dict
    breasts: dict
    files: list


def read_manifest(path: str | Path, root: Path) -> Manifest:
    """Parse and validate a CSV or metarepository-pickle manifest; raises `InputError`."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        data = load_plain_pickle(path)
        if not isinstance(data, list):
            raise InputError(f"{path.name}: the pickle holds a {type(data).__name__}, not the "
                             "metarepository's exam list (a list of dicts); save other "
                             "manifests as CSV")
        return _metarepository_list(data, path.name)
    return _manifest_table(read_table(path), path.name, root)


def _metarepository_list(data: list, file: str) -> Manifest:
    exams, breasts, files = {}, {}, []
    for index, exam in enumerate(data):
        where = f"{file}: exam {index}"
        if not isinstance(exam, dict):
            raise InputError(f"{where} is a {type(exam).__name__}, not a dict with L-CC, R-CC, "
                             "L-MLO, R-MLO and cancer_label")
        key = str(index)
        exams[key] = {"split": None, "age": None, "patient": None, "density": None}
        labels = exam.get("cancer_label")
        labels = {} if labels is None else labels
        if not isinstance(labels, dict):
            raise InputError(f"{where}: cancer_label is a {type(labels).__name__}, not a dict "
                             "with left_malignant and right_malignant")
        for laterality, word in (("L", "left"), ("R", "right")):
            cancer = labels.get(f"{word}_malignant")
            if cancer is not None:
                cancer = _binary_value(cancer, f"{where} {word}_malignant")
            breasts[(key, laterality)] = _breast_values(cancer, None, None, None, where)
        for view_key in _PKL_VIEWS:
            names = exam.get(view_key)
            names = [] if names is None else names
            if not isinstance(names, (list, tuple)) or not all(isinstance(n, str)
                                                                for n in names):
                raise InputError(f"{where}: {view_key} is not a list of file names (without "
                                 ".png)")
            if len(files) + len(names) > MAX_LISTED_FILES:
                raise InputError(f"{file}: lists more than {MAX_LISTED_FILES:,} images")
            for n, name in enumerate(names, 1):
                laterality, view = view_key.split("-")
                files.append((f"{name}.png", key, laterality, view, n))
    return Manifest(exams, breasts, files)


def _binary_value(value, where: str) -> int:
    text = str(value).strip().lower()
    if text in ("1", "1.0", "true", "yes"):
        return 1
    if text in ("0", "0.0", "false", "no"):
        return 0
    raise InputError(f"{where}: label {str(value)[:40]!r} is not 0/1")


def _manifest_table(table: pd.DataFrame, file: str, root: Path) -> Manifest:
    exam_col = find_column(table, None, ("exam", "exam_id", "exam_key", "index", "study"),
                           "exam", file)
    file_col = find_column(table, None, ("file", "path", "filename", "image", "image_path"),
                           "file", file, required=False)
    wide = {"left_malignant", "right_malignant"} <= {c.lower() for c in table.columns}
    side_col = find_column(table, None, ("laterality", "side", "breast"), "laterality", file,
                           required=not wide and file_col is None)
    cancer_col = find_column(table, None, ("cancer", "label", "malignant", "cancer_label",
                                           "malignant_label"), "cancer", file, required=False)
    optional = {name: find_column(table, None, aliases, name, file, required=False)
                for name, aliases in (
                    ("histology", ("histology", "histology_type")),
                    ("presentation", ("presentation",)), ("pathology", ("pathology",)),
                    ("split", ("split", "split_group")), ("density", ("density",)),
                    ("age", ("age",)), ("patient", ("patient", "patient_id")),
                    ("view", ("view", "viewposition")))}
    keys = check_ids(table[exam_col], exam_col, file)
    if keys.isna().any():
        raise InputError(f"{file}: the exam is empty in row {int(keys.isna().idxmax()) + 1}")
    slashed = [k for k in keys if "/" in k]
    if slashed:
        raise InputError(f"{file}: exam keys must not contain '/' (e.g. {slashed[0]!r})")
    ages = parse_numbers(table[optional["age"]], optional["age"], file) \
        if optional["age"] else pd.Series(np.nan, index=table.index)
    odd = ages[(ages < 0) | (ages > MAX_AGE_YEARS)]
    if not odd.empty:
        raise InputError(f"{file}: age {odd.iloc[0]} (row {odd.index[0] + 1}) is outside "
                         f"0-{MAX_AGE_YEARS} years")
    exams: dict[str, dict] = {}
    breasts: dict[tuple[str, str], dict] = {}
    files: list = []
    for i, key in enumerate(keys):
        where = f"{file} row {i + 1}"
        row = table.iloc[i]
        exam = {"split": _word(row, optional["split"], _SPLIT_WORDS, where, "split"),
                "age": None if np.isnan(ages.iloc[i]) else float(ages.iloc[i]),
                "patient": id_text(row[optional["patient"]]) if optional["patient"] else None,
                "density": _word(row, optional["density"], _DENSITY_WORDS, where, "density")}
        _merge(exams, key, exam, where, "exam")
        histology = _word(row, optional["histology"], _HISTOLOGY_WORDS, where, "histology")
        pathology = _word(row, optional["pathology"], {p: p for p in PATHOLOGIES}, where,
                          "pathology")
        presentation = _presentation(row, optional["presentation"], where)
        if wide:
            lower = {c.lower(): c for c in table.columns}
            for laterality, column in (("L", lower["left_malignant"]),
                                       ("R", lower["right_malignant"])):
                cancer = parse_binary(table[column].iloc[[i]], column, file).iloc[0]
                values = _breast_values(None if np.isnan(cancer) else int(cancer), histology,
                                        presentation, pathology, where)
                _merge(breasts, (key, laterality), values, where, "breast")
            continue
        laterality = parse_laterality(row[side_col]) if side_col else None
        if file_col is not None:
            rel = id_text(row[file_col])
            if rel is None:
                raise InputError(f"{where}: the file column is empty")
            safe_relative(root, rel)
            parsed = parse_image_name(Path(rel).stem)
            laterality = laterality or (parsed[1] if parsed else None)
            view = _word(row, optional["view"], {v.lower(): v for v in VIEWS}, where, "view") \
                or (parsed[2] if parsed else "other")
            if laterality is None:
                raise InputError(f"{where}: no laterality for {rel!r} (no laterality column and "
                                 "no _L_/_R_ in the name)")
            files.append((rel, key, laterality, view, parsed[3] if parsed else 1))
        if side_col is not None and laterality is None:
            raise InputError(f"{where}: laterality {row[side_col]!r} is not L/R/left/right")
        cancer = None
        if cancer_col is not None:
            value = parse_binary(table[cancer_col].iloc[[i]], cancer_col, file).iloc[0]
            cancer = None if np.isnan(value) else int(value)
        _merge(breasts, (key, laterality),
               _breast_values(cancer, histology, presentation, pathology, where), where,
               "breast")
    return Manifest(exams, breasts, files)


def _word(row, column: str | None, words: dict, where: str, what: str):
    if column is None:
        return None
    text = id_text(row[column])
    if text is None:
        return None
    value = words.get(text.lower())
    if value is None:
        raise InputError(f"{where}: {what} {text!r} is not one of "
                         f"{', '.join(dict.fromkeys(map(str, words.values())))}")
    return value


def _presentation(row, column: str | None, where: str) -> str | None:
    text = id_text(row[column]) if column else None
    if text is None:
        return None
    parts = [p.strip().replace("-", " ") for p in text.split(",") if p.strip()]
    bad = [p for p in parts if p not in PRESENTATIONS]
    if bad:
        raise InputError(f"{where}: presentation {bad[0]!r} is not one of "
                         f"{', '.join(PRESENTATIONS)}")
    return ",".join(parts) or None


def _breast_values(cancer, histology, presentation, pathology, where: str) -> dict:
    if histology in ("ILC", "IDC", "other") and cancer == 0:
        raise InputError(f"{where}: histology {histology} with cancer 0; a histology type "
                         "needs cancer 1")
    if histology == "none" and cancer == 1:
        raise InputError(f"{where}: histology none with cancer 1; use unknown if it is not known")
    if histology is None:
        histology = "unknown" if cancer != 0 else "none"
    return {"cancer": cancer, "histology": histology, "presentation": presentation,
            "pathology": pathology}


def _merge(target: dict, key, values: dict, where: str, what: str) -> None:
    """Rows describing the same exam/breast (per-image manifests) must agree."""
    if key not in target:
        target[key] = values
        return
    old = target[key]
    for name, value in values.items():
        if value is None:
            continue
        if old.get(name) is None:
            old[name] = value
        elif old[name] != value:
            raise InputError(f"{where}: {what} {key} has {name} {value!r} here but "
                             f"{old[name]!r} in an earlier row; make them agree")


# ---------------------------------------------------------------------------- importing
def import_png(store: Store, root: str | Path, manifest: str | Path, *,
               dataset: str | None = None, progress: ProgressFn | None = None) -> ImportReport:
    """Import the PNGs under ``root`` labelled by ``manifest`` into ``dataset``.

    ``dataset`` defaults to the folder's name. The manifest is validated whole first (a bad
    manifest raises `InputError` and nothing is written); then each image is validated on its
    own and written with its exam's rows. Returns the `ImportReport`.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; pass the folder that holds the PNG files")
    root = check_utf8_folder(root.resolve())
    dataset = check_dataset(dataset or root.name)
    if not manifest or not Path(manifest).is_file():
        raise InputError(f"manifest {str(manifest) or '(none)'!r} is not a file; pass the CSV "
                         "(or data.pkl) that labels the exams")
    spec = read_manifest(manifest, root)
    report = ImportReport(kind="png", dataset=dataset)
    images = _listed_images(root, spec) if spec.files else _found_images(root, report)
    seen_exams = set()
    snapshot = Snapshot(store, dataset, ("datasets", "exams", "images", "breasts", "density"))
    # No connection around the loop: decoding and hashing hold no lock.
    with Batch(store, report) as batch:
        for done, (rel, exam_key, laterality, view, repeat) in enumerate(images):
            if exam_key not in spec.exams:
                report.add(rel, "skipped", f"exam {exam_key!r} is not in the manifest")
                continue
            seen_exams.add(exam_key)
            batch.run(rel, lambda: _image_rows(store, snapshot, root, dataset, spec, rel,
                                               exam_key, laterality, view, repeat))
            report_progress(progress, done + 1, len(images), rel)
    report.unmatched.extend(f"manifest exam {k}" for k in spec.exams if k not in seen_exams)
    return finish(store, report)


def _listed_images(root: Path, spec: Manifest) -> list[tuple]:
    return [(Path(rel).as_posix(), key, lat, view, n) for rel, key, lat, view, n in spec.files]


def _found_images(root: Path, report: ImportReport) -> list[tuple]:
    images = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() != ".png":
            continue
        rel = path.relative_to(root).as_posix()
        if escaped_name(rel) != rel:  # never parsed, matched or stored
            report.add(escaped_name(rel), "failed", f"{escaped_name(rel)}: {NOT_UTF8}")
            continue
        parsed = parse_image_name(path.stem)
        if parsed is None:
            report.add(rel, "skipped", "name is not <exam>_<L|R>_<CC|MLO>.png; list it in the "
                                       "manifest's file column")
            continue
        images.append((rel, *parsed))
    return images


def _image_rows(store: Store, snapshot: Snapshot, root: Path, dataset: str, spec: Manifest,
                rel: str, exam_key: str, laterality: str, view: str,
                repeat: int) -> FileRows | Skipped:
    path = safe_relative(root, rel)
    if not path.is_file():
        raise InputError(f"{rel}: the manifest lists it but there is no such file under {root}")
    exam_id = exam_id_for(dataset, exam_key)
    image_id = image_id_for(dataset, exam_key, laterality, view) + (
        f"-{repeat}" if repeat > 1 else "")
    record = raster_record(path, snapshot.get("images", image_id=image_id))
    source = "file-name" if parse_image_name(Path(rel).stem) else "manifest"
    previous = snapshot.get("images", image_id=image_id)
    if previous is not None and previous["laterality_source"] == "corrected":
        laterality, source = previous["laterality"], "corrected"
    exam = dict(spec.exams[exam_key])
    density = exam.pop("density")
    if exam["patient"] is not None:
        exam["patient"] = store.pseudonym(exam["patient"])
    rows = {
        "datasets": [{"dataset": dataset, "kind": "imported", "source": "png",
                      "root": str(root)}],
        "exams": [dict(exam, exam_id=exam_id, dataset=dataset, exam_key=exam_key)],
        "images": [dict(record, image_id=image_id, exam_id=exam_id, dataset=dataset,
                        image_key=Path(rel).stem, laterality=laterality,
                        laterality_source=source, view=view, path=rel)],
        "breasts": [dict(values, exam_id=exam_id, laterality=side)
                    for (key, side), values in spec.breasts.items() if key == exam_key],
    }
    if snapshot.get("breasts", exam_id=exam_id, laterality=laterality) is None and not any(
            b["laterality"] == laterality for b in rows["breasts"]):
        rows["breasts"].append({"exam_id": exam_id, "laterality": laterality,
                                "histology": "unknown"})
    if density is not None:
        rows["density"] = [{"source": "label", "level": "exam", "case_id": exam_id,
                            "exam_id": exam_id, "category": density}]
    if snapshot.unchanged(rows):
        return Skipped("unchanged")
    return FileRows(rows)

