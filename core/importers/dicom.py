"""DICOM mammograms: ``python -m core import dicom DIR``.

Every file under DIR is read with pydicom (compressed transfer syntaxes, JPEG 2000 and JPEG
lossless among them, decode through the pylibjpeg plugins). One image per file; multi-frame
files (tomosynthesis) are refused.

What is kept, and from where
----------------------------
=================  ==========================================================================
exam               StudyInstanceUID, *hashed* with the store's salt (`Store.pseudonym`): the
                   exam key is ``S`` + 16 hex digits, never the UID and never AccessionNumber
patient            PatientID, hashed the same way (``P`` + 16 hex digits)
age                PatientAge (``045Y``, ``540M``, ...) or, without it, completed years between
                   PatientBirthDate and StudyDate; only the age is kept, never the birth date.
                   An age outside 0-130 years (``999Y``; the PNG manifest's range) is stored
                   as NULL and the file's report line says so: the image is still good, and
                   an impossible covariate must not reach age-stratified statistics
exam_date          StudyDate, kept as a date: screening rounds and prior exams need it. A full
                   date is an indirect identifier under HIPAA's safe harbour; share a store only
                   where that is allowed, or blank ``exams.exam_date`` before sharing
laterality         ImageLaterality, else Laterality (``laterality_source`` 'dicom-tag'), else
                   an ``_L_``/``_R_`` token in the file name ('file-name'); else the file fails
view               ViewPosition (CC, MLO), else ViewCodeSequence (code meanings 'cranio-caudal',
                   'medio-lateral oblique' or their SNOMED codes), else the file name; anything
                   else (ML, XCCL, ...) is 'other'
geometry           Rows, Columns, BitsStored, PixelSpacing (else ImagerPixelSpacing) in mm,
                   PhotometricInterpretation, Manufacturer (not PHI; any identifying value
                   of the same header found in it is redacted)
image key          ``<L|R>-<view>-<8 hex>`` from the hashed SOPInstanceUID (repeats stay apart)
=================  ==========================================================================

Nothing else from the header is stored, logged or put in an error message: not PatientName,
PatientID, birth date, AccessionNumber, institution, physician or operator names, UIDs. Errors
name the file by its path relative to DIR and the problem in our own words (a decoder's message
is scrubbed of the file's identifying values first). File and folder *names* are kept as
``images.path``; if they hold names or hospital numbers, rename the files before importing.

Pixels: `dicom_pixels` returns the stored values (uint8/uint16), MONOCHROME1 inverted so that
brighter = denser everywhere; models and filters read the file itself. No display copy is
written: the screen copy is made on first view (`core.io.display`), with the header's own
window (VOI LUT or the first window) read from the file then.
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.io.dicom import (PHI_KEYWORDS, display_window, denser_brighter, dicom_pixels,
                           grey_photometric, header_errors, manufacturer, read_dataset,
                           read_header, stored_pixels)
from core.io.pixels import pgm_bytes, sha256_file, write_bytes
from core.vocabulary import DICOM_SUFFIXES, MAX_AGE_YEARS
from core.importers import ImportReport
from core.importers.common import (
    Batch, FileRows, Skipped, Snapshot, check_dataset, check_utf8_folder, escaped_name,
    exam_id_for, finish, parse_image_name,
)
from core.progress import ProgressFn, report as report_progress
from core.store import Store

__all__ = ["dicom_pixels", "read_dicom", "read_header", "header_errors", "import_dicom",
           "DicomImage", "PHI_KEYWORDS", "image_rows", "PIXEL_COPIES"]

PIXEL_COPIES = "pixels"  # <files>/pixels/<dataset>/: de-identified copies of pulled pixels

_CC_CODES = {"R-10242", "399162004"}
_MLO_CODES = {"R-10226", "399368009"}
_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$", re.IGNORECASE)
_NAME_TOKEN = re.compile(r"(?:^|[_\-. ])(?P<lat>[LR])[_\-. ]?(?P<view>CC|MLO)(?:$|[_\-. ])",
                         re.IGNORECASE)


@dataclass(frozen=True)
class DicomImage:
    """One decoded DICOM mammogram; ``identifiers`` are for hashing only, never for storing.

    pixels : (H, W) uint8 or uint16, brighter = denser (MONOCHROME1 inverted).
    window : the header's display mapping as a uint8 table over pixel values
        (`core.io.dicom.display_window`), or None; a pulled copy keeps it.
    meta : images/exams columns that are not identifying (laterality, view, age, ...).
    identifiers : StudyInstanceUID, SOPInstanceUID, PatientID (may be None).
    note : a one-line remark for the import report (e.g. an impossible age not stored).
    """

    pixels: np.ndarray
    window: np.ndarray | None
    meta: dict
    identifiers: dict
    note: str = ""


def read_dicom(path: str | Path | bytes, *, name: str | None = None) -> DicomImage:
    """Decode one mammogram and pick out what ILCscope keeps (see the module docstring).

    ``path`` may be the file's bytes, in memory (a PACS instance), with ``name`` then required.
    ``name`` (default: the file name) is how errors refer to the file; for bytes, its last part
    stands in for the file name where laterality and view fall back on one.
    """
    in_memory = isinstance(path, (bytes, bytearray, memoryview))
    if in_memory and name is None:
        raise ValueError("read_dicom: pass name= with a file's bytes")
    source = path if in_memory else Path(path)
    name = name or source.name
    ds = read_dataset(source, name)
    with header_errors(name):
        return _decode(ds, Path(name) if in_memory else source, name)


def _decode(ds, path: Path, name: str) -> DicomImage:
    stored = stored_pixels(ds, name)
    pixels = denser_brighter(ds, stored)
    laterality, laterality_source = _laterality(ds, path)
    if laterality is None:
        raise InputError(f"{name}: no laterality (ImageLaterality and Laterality are empty and "
                         "the file name has no _L_/_R_ token); fix the header or rename the file")
    meta = {
        "laterality": laterality,
        "laterality_source": laterality_source,
        "view": _view(ds, path),
        "height": int(stored.shape[0]),
        "width": int(stored.shape[1]),
        "bit_depth": int(ds.get("BitsStored", 8 * stored.dtype.itemsize)),
        "spacing_mm": _spacing(ds),
        "photometric": grey_photometric(ds, name),
        "manufacturer": manufacturer(ds),
        "exam_date": dicom_date(ds.get("StudyDate")),
        "age": _age(ds),
    }
    note = ""
    if meta["age"] is not None and not 0 <= meta["age"] <= MAX_AGE_YEARS:
        meta["age"] = None  # the value is not quoted: the note is printed and stored
        note = f"age not stored: PatientAge or the birth date gives over {MAX_AGE_YEARS} years"
    identifiers = {"study": _text(ds.get("StudyInstanceUID")),
                   "sop": _text(ds.get("SOPInstanceUID")),
                   "patient": _text(ds.get("PatientID"))}
    return DicomImage(pixels, display_window(ds, pixels.dtype), meta, identifiers, note)


def _text(value) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _laterality(ds, path: Path) -> tuple[str | None, str]:
    for keyword in ("ImageLaterality", "Laterality"):
        value = (_text(ds.get(keyword)) or "").upper()
        if value in ("L", "R"):
            return value, "dicom-tag"
    parsed = parse_image_name(path.stem)
    if parsed is not None:
        return parsed[1], "file-name"
    match = _NAME_TOKEN.search(path.stem)
    if match is not None:
        return match["lat"].upper(), "file-name"
    return None, ""


def _view(ds, path: Path) -> str:
    position = (_text(ds.get("ViewPosition")) or "").upper()
    if position in ("CC", "MLO"):
        return position
    if position:
        return "other"
    for item in ds.get("ViewCodeSequence") or []:
        meaning = (_text(item.get("CodeMeaning")) or "").lower()
        code = _text(item.get("CodeValue")) or ""
        if meaning == "cranio-caudal" or code in _CC_CODES:
            return "CC"
        if meaning == "medio-lateral oblique" or code in _MLO_CODES:
            return "MLO"
        if meaning or code:
            return "other"
    parsed = parse_image_name(path.stem)
    if parsed is not None:
        return parsed[2]
    match = _NAME_TOKEN.search(path.stem)
    return match["view"].upper() if match is not None else "other"


def _spacing(ds) -> float | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            spacing = float(value[0]) if value is not None else None
        except (TypeError, ValueError, IndexError):
            spacing = None
        if spacing is not None and math.isfinite(spacing) and spacing > 0:
            return spacing
    return None


def study_key(store: Store, study_uid: str) -> str:
    """The exam key a study is stored under: a pseudonym of its Study Instance UID."""
    return "S" + store.pseudonym("study:" + study_uid)[1:]


def instance_key(store: Store, sop_uid: str) -> str:
    """The short pseudonym of a SOP Instance UID that ends an image's key."""
    return store.pseudonym("sop:" + sop_uid)[1:9]


def dicom_date(value) -> date | None:
    """A DICOM DA value (YYYYMMDD) as a date; None when absent or not a real date."""
    text = _text(value)
    if text is None or not re.fullmatch(r"\d{8}", text):
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def _age(ds) -> float | None:
    """Completed years from PatientAge, else from birth and study dates (only the age is kept)."""
    match = _AGE.match(str(ds.get("PatientAge") or ""))
    if match is not None:
        n, unit = int(match[1]), match[2].upper()
        days = {"D": 1, "W": 7, "M": 365.25 / 12, "Y": 365.25}[unit] * n
        return float(n) if unit == "Y" else float(math.floor(days / 365.25))
    birth, study = dicom_date(ds.get("PatientBirthDate")), dicom_date(ds.get("StudyDate"))
    if birth is None or study is None or study < birth:
        return None
    years = study.year - birth.year - ((study.month, study.day) < (birth.month, birth.day))
    return float(years)


# ---------------------------------------------------------------------------- importing
def import_dicom(store: Store, root: str | Path, *, dataset: str | None = None,
                 progress: ProgressFn | None = None) -> ImportReport:
    """Import every DICOM file under ``root`` into ``dataset`` (default: the folder's name).

    Each file is validated on its own (a failed file adds nothing); valid files are written in
    batched transactions. Files that are not DICOM (no 'DICM' marker) are skipped, unless their
    suffix says DICOM (.dcm/.dicom), in which case they fail. An unchanged file (same pixels
    and header fields) is skipped. Returns the `ImportReport`.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; pass the folder that holds the DICOM files")
    root = check_utf8_folder(root.resolve())
    dataset = check_dataset(dataset or root.name)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    report = ImportReport(kind="dicom", dataset=dataset)
    snapshot = Snapshot(store, dataset, ("datasets", "exams", "images", "breasts"))
    # No connection around the loop: decoding and hashing hold no lock.
    with Batch(store, report) as batch:
        for done, path in enumerate(files):
            rel = path.relative_to(root).as_posix()
            batch.run(rel, lambda: _import_file(store, snapshot, root, path, rel, dataset))
            report_progress(progress, done + 1, len(files), escaped_name(rel))
    return finish(store, report)


def _import_file(store: Store, snapshot: Snapshot, root: Path, path: Path, rel: str,
                 dataset: str) -> FileRows | Skipped:
    with open(path, "rb") as f:
        head = f.read(132)
    if head[128:132] != b"DICM" and path.suffix.lower() not in DICOM_SUFFIXES:
        return Skipped("not a DICOM file")
    image = read_dicom(path, name=rel)
    return image_rows(store, snapshot, image, dataset=dataset, name=rel,
                      source={"source": "dicom", "root": str(root)},
                      pixel_file=(rel, sha256_file(path)))


def image_rows(store: Store, snapshot: Snapshot, image: DicomImage, *, dataset: str, name: str,
               source: dict, pixel_file: tuple[str, str] | None) -> FileRows | Skipped:
    """The rows (and, for a pull, the pixel copy) of one decoded image, or `Skipped` when all
    are stored.

    source : the ``datasets`` row's ``source``, ``root`` and ``notes``.
    pixel_file : (path relative to ``root``, its sha256) of the file the pixels stay in; None
        when the source file does not stay (a PACS pull): a de-identified PGM (8/16-bit) of the
        pixels (brighter = denser, no metadata; the header's display window after them) is kept
        under ``<files>/pixels/<dataset>/`` and ``root`` must be ``@files/pixels/<dataset>``.

    No display copy is written (`core.io.display` makes one on first view). A row imported
    before that keeps its ``display_path`` while its file's sha256 is unchanged: the copy still
    shows these pixels, and the re-import stays a skip.
    """
    ids = image.identifiers
    if ids["study"] is None:
        raise InputError(f"{name}: no StudyInstanceUID, so the image cannot be grouped into an "
                         "exam; fix the header")
    meta = dict(image.meta)
    exam_key = study_key(store, ids["study"])
    sop_hash = instance_key(store, ids["sop"] or name)
    exam_id = exam_id_for(dataset, exam_key)
    image_key = f"{meta['laterality']}-{meta['view']}-{sop_hash}"
    image_id = f"{exam_id}/{image_key}"
    previous = snapshot.get("images", image_id=image_id)
    if previous is not None and previous["laterality_source"] == "corrected":
        meta["laterality"], meta["laterality_source"] = previous["laterality"], "corrected"
    copy = None
    if pixel_file is None:  # the copy is stored brighter = denser, so MONOCHROME2
        copy = pgm_bytes(image.pixels, window=image.window)
        pixel_file = (f"{exam_key}/{image_key}.pgm", hashlib.sha256(copy).hexdigest())
        meta["photometric"] = "MONOCHROME2"
    display = None  # a pre-issue-33 display copy stays while it shows these very pixels
    if previous is not None and previous["sha256"] == pixel_file[1] and \
            isinstance(previous["display_path"], str):
        display = previous["display_path"]
    rows = {
        "datasets": [dict(source, dataset=dataset, kind="imported")],
        "exams": [{"exam_id": exam_id, "dataset": dataset, "exam_key": exam_key,
                   "patient": store.pseudonym(ids["patient"]) if ids["patient"] else None,
                   "exam_date": meta.pop("exam_date"), "age": meta.pop("age")}],
        "images": [dict(meta, image_id=image_id, exam_id=exam_id, dataset=dataset,
                        image_key=image_key, path=pixel_file[0], sha256=pixel_file[1],
                        display_path=display)],
    }
    breast = {"exam_id": exam_id, "laterality": meta["laterality"]}
    if snapshot.get("breasts", **breast) is None:  # never overwrite labels
        rows["breasts"] = [dict(breast, histology="unknown")]
    target = None if copy is None else store.files_dir / PIXEL_COPIES / dataset / pixel_file[0]
    if (target is None or target.is_file()) and snapshot.unchanged(rows):
        return Skipped("unchanged (same file and header fields already stored)")
    if target is None:
        return FileRows(rows, note=image.note)
    new_files = [] if target.is_file() else [target]
    write_bytes(target, copy)
    return FileRows(rows, new_files=new_files, note=image.note)
