"""Score-table rows to store rows: match each id to a stored case, or create the cases.

The rules are in `core.importers.tables` ("Levels and matching", "New datasets"). An id that
matches several cases matches none: it is reported as unmatched, never guessed.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from core.errors import InputError
from core.importers import ImportReport
from core.importers.common import FileRows, exam_id_for, parse_image_name
from core.importers.reshape import LongTable, TableOptions
from core.store import Store

__all__ = ["Targets", "table_rows"]

_CONSENSUS = re.compile(r"consensus|recall|arbitrat", re.IGNORECASE)
_IMAGE_SUFFIX = re.compile(r"\.(png|dcm|dicom|pgm)$", re.IGNORECASE)


def table_rows(store: Store, path: Path, kind: str, options: TableOptions, long: LongTable,
               values: pd.DataFrame, note: str, report: ImportReport) -> FileRows:
    """The rows to write for a parsed table: its values matched to stored cases (or to the
    cases it creates for a new dataset), and any new models or readers; unmatched ids go to
    ``report.unmatched``."""
    dataset = options.dataset
    known = set(store.dataset_names())
    rows: dict[str, list[dict]] = {}
    notes = [note] if note else []
    level = long.level
    if dataset is not None and dataset not in known:
        level = level or _guess_new_level(values)
        rows.update(_new_cases(dataset, kind, path.name, level, values))
        targets = Targets.from_rows(rows)
    else:
        targets = Targets.from_store(store, dataset)
        if long.has_label:
            notes.append("label column ignored: the cases exist")
    level = level or targets.best_level(values)
    matched = values.apply(lambda r: targets.match(level, r["id"], r["side"]), axis=1)
    unmatched = values[matched.isna()]
    report.unmatched.extend(sorted({f"{r.id}/{r.side}" if r.side else str(r.id)
                                    for r in unmatched.itertuples()}))
    values = values[matched.notna()]
    matched = matched[matched.notna()]
    if values.empty:
        raise InputError(f"{path.name}: none of its {len(unmatched)} rows matches a stored "
                         f"{level} (first id {unmatched['id'].iloc[0]!r}); check level, "
                         "id_column and dataset, or create the cases with a new dataset and "
                         "label_column")
    if not unmatched.empty:
        notes.append(f"{len(unmatched)} row(s) match no stored {level}")
    table_rows = []
    seen = set()
    for (case_id, exam_id, laterality, image_id), row in zip(matched, values.itertuples()):
        if (row.name, case_id) in seen:
            raise InputError(f"{path.name}: two rows ({row.id}) resolve to the same {level} "
                             f"case {case_id} for {row.name}; keep one")
        seen.add((row.name, case_id))
        base = {"level": level, "case_id": case_id, "exam_id": exam_id,
                "laterality": laterality, "image_id": image_id}
        if kind == "predictions":
            table_rows.append(dict(base, model=row.name, malignant=float(row.score)))
        else:
            table_rows.append(dict(base, reader=row.name,
                                   score=None if math.isnan(row.score) else float(row.score),
                                   recall=None if math.isnan(row.recall) else bool(row.recall)))
    rows["predictions" if kind == "predictions" else "reads"] = table_rows
    names = sorted(values["name"].unique())
    if kind == "predictions":
        new = [n for n in names if n not in set(store.model_names())]
        rows["models"] = [{"model": n, "kind": "external", "synthetic": False,
                           "description": f"imported from {path.name}"} for n in new]
    else:
        new = [n for n in names if n not in set(store.reader_names())]
        rows["readers"] = [{"reader": n, "synthetic": False,
                            "kind": "consensus" if _CONSENSUS.search(n) else "radiologist"}
                           for n in new]
    return FileRows(rows, note="; ".join(notes))


def _guess_new_level(values: pd.DataFrame) -> str:
    if values["side"].notna().any():
        return "breast"
    parsed = values["id"].map(lambda i: parse_image_name(_IMAGE_SUFFIX.sub("", i)))
    return "image" if parsed.notna().all() else "exam"


def _new_cases(dataset: str, kind: str, file: str, level: str,
               values: pd.DataFrame) -> dict[str, list[dict]]:
    """Exams, breasts (and images) for a predictions-only dataset, labelled from the table."""
    exams: dict[str, dict] = {}
    breasts: dict[tuple[str, str], dict] = {}
    images: dict[str, dict] = {}
    assumed = False
    labels = values.dropna(subset=["label"]).groupby(["id", "side"], dropna=False)["label"].max()
    if labels.empty:
        raise InputError(f"{file}: the label column is empty; labels are needed to create cases")
    for (case, side), label in labels.items():
        side = side if isinstance(side, str) else None
        if level == "image":
            parsed = parse_image_name(_IMAGE_SUFFIX.sub("", case))
            if parsed is not None:
                exam_key, laterality, view, _ = parsed
                source = "file-name"
            else:
                exam_key, view = case, "other"
                laterality, source = (side, "manifest") if side else ("L", "assumed")
                assumed |= side is None
            exam_id = exam_id_for(dataset, exam_key)
            images[case] = {"image_id": f"{dataset}/{case}", "exam_id": exam_id,
                            "dataset": dataset, "image_key": case, "laterality": laterality,
                            "laterality_source": source, "view": view}
        elif level == "breast":
            if side is None:
                raise InputError(f"{file}: breast-level cases need a side column (or the "
                                 "metarepository's left_/right_malignant columns)")
            exam_key, laterality = case, side
        else:
            exam_key, laterality = case, "L"
        exam_id = exam_id_for(dataset, exam_key)
        exams[exam_id] = {"exam_id": exam_id, "dataset": dataset, "exam_key": exam_key}
        key = (exam_id, laterality)
        cancer = int(max(label, breasts[key]["cancer"]) if key in breasts else label)
        breasts[key] = {"exam_id": exam_id, "laterality": laterality, "cancer": cancer,
                        "histology": "unknown" if cancer else "none"}
    notes = {"image": "image-level cases created from a score table; laterality from "
                      "<exam>_<L|R>_<view> ids or the side column"
                      + ("; ids without side information got laterality 'L' (assumed)"
                         if assumed else ""),
             "breast": "breast-level cases created from a score table",
             "exam": "exam-level cases created from a score table; each exam's label sits on "
                     "one placeholder breast 'L'"}[level]
    return {"datasets": [{"dataset": dataset, "kind": "predictions-only", "source": kind,
                          "root": None, "notes": notes}],
            "exams": list(exams.values()), "breasts": list(breasts.values()),
            "images": list(images.values())}


class Targets:
    """Stored (or about-to-be-created) cases, indexed by every id a table may use."""

    def __init__(self, images: pd.DataFrame, exams: pd.DataFrame, breasts: set[str]):
        self.images: dict[str, tuple | None] = {}
        self.exams: dict[str, tuple | None] = {}
        self.breasts = breasts  # case ids <exam_id>/<L|R>
        for r in images.itertuples():
            value = (r.image_id, r.exam_id, r.laterality, r.image_id)
            for key in {r.image_id, r.image_key}:
                self._put(self.images, key, value)
            exam_key = r.exam_id.split("/", 1)[1]
            self._put(self.images, ("view", exam_key, r.laterality, r.view), value)
            parsed = parse_image_name(str(r.image_key))
            if parsed is not None:
                self._put(self.images, ("view",) + parsed[:3], value)
        for r in exams.itertuples():
            for key in {r.exam_id, r.exam_key}:
                self._put(self.exams, key, r.exam_id)

    @staticmethod
    def _put(index: dict, key, value) -> None:
        if key in index and index[key] != value:
            index[key] = None  # ambiguous: matches several cases
        else:
            index[key] = value

    @classmethod
    def from_store(cls, store: Store, dataset: str | None) -> Targets:
        if dataset is not None and dataset not in store.dataset_names():
            raise InputError(f"dataset {dataset!r} is not in the store")
        exams = store.exams(dataset=dataset)
        breasts = store.cases(level="breast")
        breasts = set(breasts.loc[breasts["exam_id"].isin(set(exams["exam_id"])), "case_id"])
        return cls(store.images(dataset=dataset), exams, breasts)

    @classmethod
    def from_rows(cls, rows: dict[str, list[dict]]) -> Targets:
        images = pd.DataFrame(rows["images"], columns=["image_id", "exam_id", "laterality",
                                                       "view", "image_key"])
        exams = pd.DataFrame(rows["exams"], columns=["exam_id", "exam_key"])
        return cls(images, exams, {f"{b['exam_id']}/{b['laterality']}" for b in rows["breasts"]})

    def _image(self, case: str):
        case = _IMAGE_SUFFIX.sub("", case)
        if case in self.images:
            return self.images[case]
        parsed = parse_image_name(case)
        return self.images.get(("view",) + parsed[:3]) if parsed is not None else None

    def match(self, level: str, case: str, side: str | None) -> tuple | None:
        """(case_id, exam_id, laterality, image_id) or None (unmatched or ambiguous)."""
        if level == "image":
            return self._image(case)
        if level == "exam":
            exam_id = self.exams.get(case)
            return None if exam_id is None else (exam_id, exam_id, None, None)
        if side is None and "/" in case and case.rsplit("/", 1)[1] in ("L", "R"):
            case, side = case.rsplit("/", 1)
        exam_id = self.exams.get(case)
        if exam_id is None or side is None or f"{exam_id}/{side}" not in self.breasts:
            return None
        return (f"{exam_id}/{side}", exam_id, side, None)

    def best_level(self, values: pd.DataFrame) -> str:
        sample = values.drop_duplicates(subset=["id"])
        images = sum(self._image(c) is not None for c in sample["id"])
        exams = sum(self.exams.get(c) is not None for c in sample["id"])
        return "exam" if exams > images else "image"
