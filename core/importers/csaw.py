"""CSAW-CC-style screening tables: ``python -m core import csaw CSV [--images DIR]``.

CSAW-CC (Karolinska Institutet; ``CSAW-CC_breast_cancer_screening_data.csv``) has one row per
image. Columns read (others are ignored):

=======================  ===================================================================
anon_patientid           the curators' pseudonym; stored only re-hashed (``exams.patient``)
exam_year                exam = (anon_patientid, exam_year); ``exam_key = <patient>_<year>``;
                         ``exams.exam_date`` = 1 January of that year (the table has years only)
anon_filename            the image file (``images.path`` relative to ``--images``); optional
imagelaterality          Left/Right; viewposition CC/MLO (else 'other')
x_case                   1 = the woman was diagnosed with breast cancer (patient level)
x_cancer_laterality      Left/Right: the breast with the cancer
rad_timing               1 = screen-detected (diagnosis < 60 days after this exam), 2 = interval
                         cancer (60-729 days), 3 = diagnosis 730 days or more later
x_type                   tumour type; see HISTOLOGY_BY_TYPE below
rad_r1, rad_r2           the two independent first readers' flags (0/1) -> readers
                         ``<dataset>-r1``/``-r2``, exam level, recall decisions (scores if the
                         values are not 0/1)
rad_recall               the consensus decision to recall -> ``<dataset>-consensus`` (exam
                         level); ``rad_recall_type_left/right`` > 0 -> breast-level recall
libra_percentdensity     LIBRA percent density -> ``density`` rows, source 'imported': image
                         level per row, exam level as the mean of the exam's images; no
                         category (LIBRA gives a percentage, not BI-RADS)
x_age                    an age band (1: 40-55, 2: 55+), not an age: ``exams.age`` stays NULL
=======================  ===================================================================

Labels: a breast is positive (cancer 1, pathology malignant) when x_case = 1, it is the
x_cancer_laterality side and rad_timing is in ``positive_timing`` (default 1 and 2: the cancer
was found at this screen or surfaced before the next). The same breast at an earlier exam
(rad_timing 3) gets cancer 0 with histology 'unknown' (a future cancer, not a clean negative:
``histology=none`` test sets leave it out); every other breast is cancer 0, histology 'none'.

Histology: CSAW-CC records no ductal/lobular type. Its ``x_type`` codes tumour type and size:
1 = in situ, 2 = invasive <= 15 mm, 3 = invasive > 15 mm (CSAW-CC README
``CSAW-CC_Readme_annon_230516.docx``, as tabulated in public analyses of the data; we could not
read the README itself). So HISTOLOGY_BY_TYPE maps 1 -> 'other' (in situ: neither invasive
lobular nor ductal) and 2, 3 -> 'unknown' (invasive, type not recorded). A release that does code
histology can pass its own map (``histology_map={4: 'ILC', 5: 'IDC'}``).

The CSV is one file: all its rows land in one transaction, or none. With ``--images``, each
listed file is hashed and its geometry read from its header (DICOM) or decoded (PNG); a missing
file leaves ``images.path`` NULL (counted in the report), an unreadable one is reported as
failed and its image is stored without pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import InputError
from core.io.pixels import sha256_file
from core.io.images import sniff_format
from core.importers import ImportReport
from core.importers.common import (
    Batch, FileRows, Skipped, Snapshot, check_dataset, check_utf8_folder, exam_id_for, finish,
    image_id_for, raster_record, safe_relative,
)
from core.importers.columns import id_text, is_binary, parse_binary, parse_numbers
from core.io.tables import read_table
from core.progress import ProgressFn, report as report_progress
from core.vocabulary import HISTOLOGIES
from core.store import Store

__all__ = ["import_csaw", "HISTOLOGY_BY_TYPE", "POSITIVE_TIMING"]

HISTOLOGY_BY_TYPE = {1: "other", 2: "unknown", 3: "unknown"}
POSITIVE_TIMING = (1, 2)
_SIDES = {"left": "L", "right": "R", "l": "L", "r": "R"}
EXAM_COLUMNS = ("x_case", "x_cancer_laterality", "x_type", "rad_timing", "rad_r1", "rad_r2",
                 "rad_recall", "rad_recall_type_left", "rad_recall_type_right")


@dataclass(frozen=True)
class _Options:
    dataset: str
    images: Path | None
    positive_timing: tuple[int, ...]
    histology_map: dict


def import_csaw(store: Store, csv: str | Path, *, images: str | Path | None = None,
                dataset: str | None = None, positive_timing: tuple[int, ...] = POSITIVE_TIMING,
                histology_map: dict | None = None,
                progress: ProgressFn | None = None) -> ImportReport:
    """Import a CSAW-CC-style table (see the module docstring) in one transaction."""
    csv = Path(csv)
    dataset = check_dataset(dataset or "csaw")
    if images is not None:
        images = Path(images)
        if not images.is_dir():
            raise InputError(f"images {str(images)!r} is not a folder; pass the folder that holds "
                             "the anon_filename files")
        images = check_utf8_folder(images.resolve())
    histology_map = dict(HISTOLOGY_BY_TYPE if histology_map is None else histology_map)
    bad = [h for h in histology_map.values() if h not in HISTOLOGIES]
    if bad:
        raise InputError(f"histology map value {bad[0]!r} is not one of {', '.join(HISTOLOGIES)}")
    options = _Options(dataset, images, tuple(positive_timing), histology_map)
    table = _validated(read_table(csv), csv.name)
    report = ImportReport(kind="csaw", dataset=dataset)
    snapshot = Snapshot(store, dataset, ("datasets", "exams", "images", "breasts", "reads",
                                         "density", "readers"))
    # No connection while the image files are hashed; the write is one transaction.
    with Batch(store, report) as batch:
        batch.run(csv.name, lambda: _rows(store, snapshot, table, options, report, progress))
    return finish(store, report)


def _validated(table: pd.DataFrame, file: str) -> pd.DataFrame:
    table = table.rename(columns=str.lower)
    missing = [c for c in ("anon_patientid", "exam_year") if c not in table.columns]
    if missing:
        raise InputError(f"{file}: no column {missing[0]!r}; a CSAW-CC table has anon_patientid, "
                         f"exam_year, ... (columns here: {', '.join(table.columns[:12])})")
    out = pd.DataFrame({"patient": table["anon_patientid"].map(id_text)})
    if out["patient"].isna().any():
        raise InputError(f"{file}: anon_patientid is empty in row "
                         f"{int(out['patient'].isna().to_numpy().argmax()) + 1}")
    years = parse_numbers(table["exam_year"], "exam_year", file)
    bad = years.isna() | (years % 1 != 0) | (years < 1900) | (years > 2100)
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise InputError(f"{file}: exam_year {table['exam_year'].iloc[row]!r} (row {row + 1}) is "
                         "not a year")
    out["year"] = years.astype(int)
    for column in ("imagelaterality", "x_cancer_laterality"):
        out[column] = _sides(table, column, file)
    out["view"] = (table["viewposition"].map(id_text).str.upper().where(
        lambda v: v.isin(["CC", "MLO"]), "other") if "viewposition" in table else "other")
    out["file"] = (table["anon_filename"].map(id_text) if "anon_filename" in table
                   else pd.Series(None, index=table.index, dtype=object))
    for column in ("x_case", "rad_timing", "x_type", "rad_recall_type_left",
                   "rad_recall_type_right", "libra_percentdensity"):
        out[column] = (parse_numbers(table[column], column, file) if column in table
                       else np.nan)
    for column in ("rad_r1", "rad_r2", "rad_recall"):
        if column not in table:
            out[column] = np.nan
        elif is_binary(table[column]):
            out[column] = parse_binary(table[column], column, file)
        else:
            out[column] = parse_numbers(table[column], column, file)
    if not out["x_case"].dropna().isin([0, 1]).all():
        raise InputError(f"{file}: x_case holds values other than 0/1")
    if not out["rad_timing"].dropna().isin([1, 2, 3]).all():
        raise InputError(f"{file}: rad_timing holds values other than 1, 2, 3")
    if out["file"].notna().any():
        if out["imagelaterality"].isna().any():
            row = int(out["imagelaterality"].isna().to_numpy().argmax())
            raise InputError(f"{file}: imagelaterality is empty in row {row + 1}; each image "
                             "row needs Left or Right")
        dup = out["file"].dropna().duplicated()
        if dup.any():
            raise InputError(f"{file}: anon_filename {out['file'].dropna()[dup].iloc[0]!r} "
                             "appears twice; one row per image")
    exam_cols = [c for c in EXAM_COLUMNS if out[c].notna().any()]
    per_exam = out.groupby(["patient", "year"])[exam_cols].nunique(dropna=True)
    conflict = per_exam[(per_exam > 1).any(axis=1)]
    if not conflict.empty:
        (patient, year), row = conflict.index[0], conflict.iloc[0]
        raise InputError(f"{file}: exam {patient}_{year} has different {row[row > 1].index[0]} "
                         "values in its rows; they are per exam and must agree")
    return out


def _sides(table: pd.DataFrame, column: str, file: str) -> pd.Series:
    if column not in table:
        return pd.Series(None, index=table.index, dtype=object)
    text = table[column].map(id_text)
    sides = text.map(lambda v: _SIDES.get(v.lower(), "?") if isinstance(v, str) else None)
    if (sides == "?").any():
        row = int((sides == "?").to_numpy().argmax())
        raise InputError(f"{file}: {column} {text.iloc[row]!r} (row {row + 1}) is not "
                         "Left/Right")
    return sides


def _rows(store: Store, snapshot: Snapshot, table: pd.DataFrame, options: _Options,
          report: ImportReport, progress: ProgressFn | None) -> FileRows | Skipped:
    dataset = options.dataset
    rows: dict[str, list[dict]] = {
        "datasets": [{"dataset": dataset, "kind": "imported", "source": "csaw",
                      "root": str(options.images) if options.images else None,
                      "notes": ("CSAW-CC table; exam_date = 1 January of exam_year; positive "
                                f"rad_timing {','.join(map(str, options.positive_timing))}; "
                                f"x_type -> histology {options.histology_map}")}],
        "exams": [], "breasts": [], "reads": [], "density": [], "images": [],
        "readers": [{"reader": f"{dataset}-{r}", "kind": k, "synthetic": False}
                    for r, k in (("r1", "radiologist"), ("r2", "radiologist"),
                                 ("consensus", "consensus"))],
    }
    grouped = table.groupby(["patient", "year"], sort=True)
    exams = grouped[list(EXAM_COLUMNS)].first()  # first non-null value per exam
    exams["density"] = grouped["libra_percentdensity"].mean()
    patients = {p: store.pseudonym(f"csaw:{p}") for p in table["patient"].unique()}
    for (patient, year), first in exams.iterrows():
        exam_key = f"{patient}_{year}"
        exam_id = exam_id_for(dataset, exam_key)
        rows["exams"].append({"exam_id": exam_id, "dataset": dataset, "exam_key": exam_key,
                              "patient": patients[patient], "exam_date": date(int(year), 1, 1)})
        for side in ("L", "R"):
            rows["breasts"].append(_breast(exam_id, side, first, options))
        for reader, column in (("r1", "rad_r1"), ("r2", "rad_r2"), ("consensus", "rad_recall")):
            rows["reads"] += _read(f"{dataset}-{reader}", exam_id, first[column])
        if not _nan(first["rad_recall"]):
            for side, column in (("L", "rad_recall_type_left"), ("R", "rad_recall_type_right")):
                if not _nan(first[column]):
                    rows["reads"].append({
                        "reader": f"{dataset}-consensus", "level": "breast",
                        "case_id": f"{exam_id}/{side}", "exam_id": exam_id, "laterality": side,
                        "recall": bool(first[column] > 0)})
        if not _nan(first["density"]):
            rows["density"].append({"source": "imported", "level": "exam", "case_id": exam_id,
                                    "exam_id": exam_id, "score": float(first["density"])})
    n_missing = _images(rows, table, options, snapshot, report, progress)
    for name in ("images", "density", "reads"):
        if not rows[name]:
            del rows[name]
    if snapshot.unchanged(rows):
        return Skipped("unchanged")
    note = (f"{len(exams)} exams, {len(rows.get('images', []))} images"
            + (f", {n_missing} without a readable file under the images folder" if options.images
               else ""))
    return FileRows(rows, note=note)


def _nan(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _breast(exam_id: str, side: str, first: pd.Series, options: _Options) -> dict:
    case = first["x_case"] == 1 and first["x_cancer_laterality"] == side
    timing = first["rad_timing"]
    positive = bool(case and not _nan(timing) and int(timing) in options.positive_timing)
    if positive:
        code = first["x_type"]
        histology = "unknown" if _nan(code) else options.histology_map.get(int(code), "unknown")
        return {"exam_id": exam_id, "laterality": side, "cancer": 1, "histology": histology,
                "pathology": "malignant"}
    return {"exam_id": exam_id, "laterality": side, "cancer": 0,
            "histology": "unknown" if case else "none", "pathology": "none"}


def _read(reader: str, exam_id: str, value) -> list[dict]:
    """An exam-level read: a recall decision for 0/1 values, else a score."""
    if _nan(value):
        return []
    value = float(value)
    binary = value in (0.0, 1.0)
    return [{"reader": reader, "level": "exam", "case_id": exam_id, "exam_id": exam_id,
             "score": None if binary else value, "recall": bool(value) if binary else None}]


def _images(rows: dict, table: pd.DataFrame, options: _Options, snapshot: Snapshot,
            report: ImportReport, progress: ProgressFn | None) -> int:
    """Image rows (and image-level density); returns how many files are missing or unreadable.

    Repeats of a (side, view) within an exam are numbered in file-name order (``-2``, ...).
    """
    if table["file"].isna().all():
        return 0
    dataset, missing = options.dataset, 0
    listed = table[table["file"].notna()].sort_values(["patient", "year", "file"])
    seen: dict[tuple, int] = {}
    for done, r in enumerate(listed.itertuples()):
        exam_key = f"{r.patient}_{r.year}"
        exam_id = exam_id_for(dataset, exam_key)
        side, view = r.imagelaterality, r.view
        n = seen[(exam_key, side, view)] = seen.get((exam_key, side, view), 0) + 1
        image_id = image_id_for(dataset, exam_key, side, view) + (f"-{n}" if n > 1 else "")
        previous = snapshot.get("images", image_id=image_id)
        source = "manifest"
        if previous is not None and previous["laterality_source"] == "corrected":
            side, source = previous["laterality"], "corrected"
        row = {"image_id": image_id, "exam_id": exam_id, "dataset": dataset,
               "image_key": Path(r.file).stem, "laterality": side, "laterality_source": source,
               "view": view}
        if options.images is not None:
            record = _file_record(options.images, r.file, report)
            if record is None:
                missing += 1
            else:
                row.update(record, path=r.file)
        rows["images"].append(row)
        if not _nan(r.libra_percentdensity):
            rows["density"].append({"source": "imported", "level": "image", "case_id": image_id,
                                    "exam_id": exam_id, "laterality": side, "image_id": image_id,
                                    "score": float(r.libra_percentdensity)})
        if done % 1000 == 0 or done == len(listed) - 1:
            report_progress(progress, done + 1, len(listed), r.file)
    return missing


def _file_record(root: Path, rel: str, report: ImportReport) -> dict | None:
    """sha256 and geometry of one listed image, or None if it is absent (failures reported)."""
    try:
        path = safe_relative(root, rel)
        if not path.is_file():
            return None
        if sniff_format(path) != "dicom":
            return raster_record(path)
        from core.io.dicom import (check_pixel_budget, grey_photometric, header_errors,
                                   manufacturer, read_header)

        ds = read_header(path, name=rel)
        with header_errors(rel):
            check_pixel_budget(ds, rel)
            height, width = int(ds.Rows), int(ds.Columns)
            spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
            return {"sha256": sha256_file(path), "height": height, "width": width,
                    "bit_depth": int(ds.get("BitsStored") or 0) or None,
                    "spacing_mm": float(spacing[0]) if spacing else None,
                    "photometric": grey_photometric(ds, rel),
                    "manufacturer": manufacturer(ds)}
    except InputError as exc:
        report.add(rel, "failed", " ".join(str(exc).split())[:300])
        return None
