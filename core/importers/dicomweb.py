"""Mammograms from a PACS: ``python -m core import dicomweb URL``.

`search` asks the PACS (QIDO-RS) for studies matching the filters, then their series of the
modality (MG; a series whose BodyPartExamined is given and is not BREAST is left out), then
their instances with laterality and view. The resulting `Plan` shows studies only through the
store's pseudonyms (`Plan.table`): exam key ``S`` + HMAC of the StudyInstanceUID and patient
``P`` + HMAC of the PatientID, exactly as the DICOM importer stores them, so a dry run never
prints an identifier and its keys are the ones the pull will write.

`pull` retrieves the chosen studies' instances one at a time (WADO-RS) into memory and imports
each through the DICOM importer (`core.importers.dicom`: the same de-identification, laterality
and view). Each instance is all-or-nothing; the DICOM file itself is never written, so nothing
identifiable reaches the disk. What is kept of the pixels is a de-identified PGM under
``<files>/pixels/<dataset>/`` (``datasets.root`` is ``@files/pixels/<dataset>``), since models
and filters need pixels the PACS cannot lend them; the header's display window follows the
pixels in the same file, so the screen copy made on first view (`core.io.display`) shows the
image as the modality meant it. ``datasets.notes`` names the PACS by its URL without
credentials. No display copy is written: it cost more than the retrieval itself
(bench/dicomweb.py).

Idempotent: an instance whose SOP Instance UID is already an image of the dataset (with its
pixel copy) is skipped without being retrieved; one retrieved again is compared field by field
and by the sha256 of its pixel copy, so a re-pull writes nothing. A failed instance (deleted
since the search, a bad file) fails alone, with its reason; when the PACS stops answering, the
instances not yet tried are reported "not retrieved" instead of each waiting out the timeout.
A cancel (``cancel()`` returning True, Ctrl-C, a closed page) keeps the instances already
written and writes nothing half.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from core.errors import InputError
from core.importers import ImportReport
from core.importers.common import Batch, FileRows, Skipped, Snapshot, check_dataset, finish
from core.importers.dicom import (PIXEL_COPIES, dicom_date, image_rows, instance_key,
                                  read_dicom, study_key)
from core.io.dicomweb import (PacsError, PacsUnreachable, Server, is_uid, open_session,
                              retrieve_instance, search_json)
from core.progress import ProgressFn, report as report_progress
from core.store import FILES_ROOT, Store

__all__ = ["Filters", "Plan", "search", "pull", "import_dicomweb"]

_DATE_RANGE = re.compile(r"^(\d{8})?-?(\d{8})?$")
_TAGS = {"StudyInstanceUID": "0020000D", "SeriesInstanceUID": "0020000E",
         "SOPInstanceUID": "00080018", "PatientID": "00100020", "StudyDate": "00080020",
         "BodyPartExamined": "00180015", "ImageLaterality": "00200062",
         "Laterality": "00200060", "ViewPosition": "00185101"}
BATCH_SIZE = 50  # instances per transaction: a cancel or failure loses at most this much work
# What a dry run may show of the PACS's laterality and view: DICOM's defined terms only
# (ImageLaterality / Laterality: L R B U; ViewPosition: the mammography views of CID 4014), since
# a PACS can put anything there, a patient's name included. Anything else shows as 'unknown'.
_SIDES = frozenset({"L", "R", "B", "U"})
_VIEWS = frozenset({"CC", "MLO", "ML", "LM", "LMO", "FB", "SIO", "XCC", "XCCL", "XCCM", "AT",
                    "CV", "RL", "RM", "ID", "TAN"})


@dataclass(frozen=True)
class Filters:
    """QIDO-RS study filters; the values are the PACS's (a patient ID is never printed back).

    study_date : ``YYYYMMDD``, ``FROM-TO``, ``FROM-`` or ``-TO`` (DICOM's range matching).
    limit : at most this many studies (the first the PACS returns).
    """

    patient: str | None = None
    study_date: str | None = None
    accession: str | None = None
    study_uid: str | None = None
    modality: str = "MG"
    limit: int | None = None

    def __post_init__(self):
        date = (self.study_date or "").strip()
        match = _DATE_RANGE.match(date)
        if date and (match is None or not (match[1] or match[2]) or
                     (match[1] and match[2] and "-" not in date)):
            raise InputError(f"study_date {date!r} is not YYYYMMDD or YYYYMMDD-YYYYMMDD; e.g. "
                             "20200101-20201231")
        if self.limit is not None and self.limit < 1:
            raise InputError(f"limit must be at least 1 (got {self.limit})")
        if not re.fullmatch(r"[A-Z]{2,3}", self.modality or ""):
            raise InputError(f"modality {self.modality!r} is not a DICOM modality code; e.g. MG")

    def qido(self) -> dict:
        values = {"PatientID": self.patient, "StudyDate": self.study_date,
                  "AccessionNumber": self.accession, "StudyInstanceUID": self.study_uid}
        return {k: v.strip() for k, v in values.items() if v and v.strip()}


@dataclass(frozen=True)
class _Instance:
    series: str = field(repr=False)
    sop: str = field(repr=False)
    key: str           # 8 hex digits of the SOP pseudonym: the end of the stored image key
    view: str          # e.g. "L-CC", "R-MLO", "?" when the search did not say


@dataclass(frozen=True)
class _Study:
    uid: str = field(repr=False)
    exam_key: str
    patient: str | None
    exam_date: str | None
    n_series: int
    instances: tuple[_Instance, ...]


@dataclass(frozen=True)
class Plan:
    """What a search found. UIDs stay inside (never in repr or `table`)."""

    url: str
    studies: tuple[_Study, ...]
    failed: tuple[tuple[str, str], ...] = ()  # (exam_key, one-line reason): search failed

    def failures(self) -> pd.DataFrame:
        """One row per study whose series or instances could not be searched: exam_key, error."""
        return pd.DataFrame(list(self.failed), columns=["exam_key", "error"])

    def table(self) -> pd.DataFrame:
        """One row per study: exam_key, patient (pseudonyms), exam_date, series, instances,
        views (e.g. ``L-CC:1, R-MLO:2``)."""
        rows = []
        for s in self.studies:
            views = pd.Series([i.view for i in s.instances], dtype=object).value_counts()
            rows.append({"exam_key": s.exam_key, "patient": s.patient, "exam_date": s.exam_date,
                         "series": s.n_series, "instances": len(s.instances),
                         "views": ", ".join(f"{v}:{n}" for v, n in sorted(views.items()))})
        return pd.DataFrame(rows, columns=["exam_key", "patient", "exam_date", "series",
                                           "instances", "views"])

    @property
    def n_instances(self) -> int:
        return sum(len(s.instances) for s in self.studies)


def _value(item: dict, keyword: str) -> str | None:
    """The first value of ``keyword`` in a DICOM JSON object (checked by `search_json`)."""
    values = (item.get(_TAGS[keyword]) or {}).get("Value") or []
    if not values or values[0] is None:
        return None
    if not isinstance(values[0], (str, int, float)):
        raise PacsError(f"the PACS sent a {type(values[0]).__name__} as {keyword}'s value")
    text = str(values[0]).strip()
    return text or None


def _term(text: str | None, terms: frozenset) -> str:
    """``text`` if it is one of DICOM's ``terms``; '?' when absent, 'unknown' otherwise."""
    if text is None:
        return "?"
    return text.upper() if text.upper() in terms else "unknown"


def _uid(item: dict, keyword: str) -> str | None:
    uid = _value(item, keyword)
    if uid is not None and not is_uid(uid):
        raise PacsError(f"the PACS sent a {keyword} that is not a DICOM UID")
    return uid


def search(store: Store, server: Server, filters: Filters = Filters(), *,
           progress: ProgressFn | None = None) -> Plan:
    """Find the studies to pull: QIDO-RS studies -> series of ``filters.modality`` -> instances.

    Studies with no matching series are left out. Raises `PacsError` (one line, no identifier)
    when the PACS cannot be searched; nothing is written.
    """
    session = open_session(server)
    params = dict(filters.qido(), **({"limit": filters.limit} if filters.limit else {}))
    found = search_json(server, session, "studies", params, "search studies")
    if filters.limit is not None:
        found = found[:filters.limit]
    studies, failed = [], []
    for done, item in enumerate(found):
        try:
            study = _search_study(store, server, session, filters, item, done)
        except _StudyFailed as exc:  # this study's answers are malformed: it alone is left out
            failed.append((exc.exam_key, exc.reason))
            study = None
        if study is not None:
            studies.append(study)
        report_progress(progress, done + 1, len(found), f"searched {done + 1} studies")
    return Plan(server.url, tuple(studies), tuple(failed))


class _StudyFailed(Exception):
    def __init__(self, exam_key: str, reason: str):
        super().__init__(reason)
        self.exam_key, self.reason = exam_key, reason


def _search_study(store: Store, server: Server, session, filters: Filters, item: dict,
                  index: int) -> _Study | None:
    """Study ``index`` of the QIDO answer with its series and instances; None when it has none.

    A malformed answer about it raises `_StudyFailed` (its exam key, one line); a PACS that
    stopped answering, `PacsUnreachable`."""
    try:
        uid = _uid(item, "StudyInstanceUID")
    except PacsError as exc:
        name = f"study {index + 1} of the search"
        raise _StudyFailed(name, f"search studies: {name}: {exc}") from None
    if uid is None:
        return None
    exam_key = study_key(store, uid)
    what = f"search study {exam_key}"
    try:
        series = search_json(server, session, f"studies/{uid}/series",
                             {"Modality": filters.modality, "includefield": "BodyPartExamined"},
                             what)
        series = [s for s in series
                  if (_value(s, "BodyPartExamined") or "BREAST").upper() == "BREAST"]
        instances = []
        for s in series:
            series_uid = _uid(s, "SeriesInstanceUID")
            if series_uid is None:
                continue
            found = search_json(server, session, f"studies/{uid}/series/{series_uid}/instances",
                                {"includefield": ["ImageLaterality", "Laterality",
                                                  "ViewPosition"]}, what)
            for i in found:
                sop = _uid(i, "SOPInstanceUID")
                if sop is None:
                    continue
                side = _term(_value(i, "ImageLaterality") or _value(i, "Laterality"), _SIDES)
                view = _term(_value(i, "ViewPosition"), _VIEWS)
                instances.append(_Instance(series_uid, sop, instance_key(store, sop),
                                           f"{side}-{view}"))
        if not instances:
            return None
        patient = _value(item, "PatientID")
        date = dicom_date(_value(item, "StudyDate"))
    except PacsUnreachable:
        raise
    except PacsError as exc:
        text = str(exc)
        raise _StudyFailed(exam_key, text if text.startswith(what) else f"{what}: {text}") \
            from None
    return _Study(uid, exam_key, store.pseudonym(patient) if patient else None,
                  date.isoformat() if date else None, len(series), tuple(instances))


def pull(store: Store, server: Server, plan: Plan, *, dataset: str = "pacs",
         exam_keys: Sequence[str] | None = None, progress: ProgressFn | None = None,
         cancel: Callable[[], bool] | None = None) -> ImportReport:
    """Retrieve and import the instances of ``plan`` (or of its studies ``exam_keys``).

    Returns the `ImportReport`: one outcome per instance, named ``<exam_key>/<8 hex>`` (the
    stored image key ends with the same 8 hex digits).
    """
    dataset = check_dataset(dataset)
    studies = list(plan.studies)
    if exam_keys is not None:
        wanted = list(dict.fromkeys(exam_keys))
        unknown = sorted(set(wanted) - {s.exam_key for s in studies})
        if unknown:
            raise InputError(f"exam_keys {', '.join(unknown[:3])} are not in the search "
                             "results; search again and pick from its table")
        studies = [s for s in studies if s.exam_key in set(wanted)]
    items = [(s, i) for s in studies for i in s.instances]
    report = ImportReport(kind="dicomweb", dataset=dataset)
    for exam_key, reason in plan.failed:
        if exam_keys is None:
            report.add(exam_key, "failed", reason)
    snapshot = Snapshot(store, dataset, ("datasets", "exams", "images", "breasts"))
    have = _pulled(store, snapshot)
    source = {"source": "dicomweb", "root": f"{FILES_ROOT}/{PIXEL_COPIES}/{dataset}",
              "notes": f"pulled over DICOMweb from {server.url}"}
    session = open_session(server)
    stopped = ""  # why the rest is not retrieved: the PACS stopped answering, or a cancel
    with Batch(store, report, size=BATCH_SIZE) as batch:
        for done, (study, instance) in enumerate(items):
            name = f"{study.exam_key}/{instance.key}"
            if not stopped and cancel is not None and cancel():
                stopped = "cancelled before it was retrieved"
            if stopped:
                report.add(name, "failed", f"{name}: not retrieved: {stopped}")
            elif (study.exam_key, instance.key) in have:
                report.add(name, "skipped", "already in the store (same SOP Instance UID)")
            else:
                unreachable: list[PacsUnreachable] = []

                def job(study=study, instance=instance, name=name, unreachable=unreachable):
                    try:
                        return _pull_one(store, snapshot, session, server, study, instance,
                                         name, dataset, source)
                    except PacsUnreachable as exc:
                        unreachable.append(exc)
                        raise  # Batch reports it as this instance's failure

                batch.run(name, job)
                if unreachable:
                    stopped = "the PACS stopped answering (see the first failure)"
            report_progress(progress, done + 1, len(items), f"{done + 1} / {len(items)} "
                                                            f"instances · {name}")
    return finish(store, report)


def _pulled(store: Store, snapshot: Snapshot) -> set[tuple[str, str]]:
    """(exam_key, 8 hex of the SOP pseudonym) of the dataset's images whose pixel copy exists
    (a display copy, in stores from before issue 33, is not needed: the screen makes one)."""
    have = set()
    for row in snapshot.rows("images"):
        exam_key = row["exam_id"].rsplit("/", 1)[1]
        root = store.files_dir / PIXEL_COPIES / row["dataset"]
        if row["path"] and (root / row["path"]).is_file():
            have.add((exam_key, row["image_key"].rsplit("-", 1)[1]))
    return have


def _pull_one(store: Store, snapshot: Snapshot, session, server: Server, study: _Study,
              instance: _Instance, name: str, dataset: str, source: dict) -> FileRows | Skipped:
    """One instance: retrieve it into memory, import it. PacsUnreachable propagates.

    The bytes are read only by `read_dicom`, which refuses a deflated file that inflates past
    what a mammogram needs while inflating it (a DICOM bomb costs a few MB, not gigabytes)."""
    data = retrieve_instance(server, session, study.uid, instance.series, instance.sop,
                             f"retrieve {name}")
    image = read_dicom(data, name=name)
    if image.identifiers["study"] != study.uid or image.identifiers["sop"] != instance.sop:
        raise InputError(f"{name}: the PACS sent another instance than the one asked for; "
                         "the PACS's index is inconsistent")
    return image_rows(store, snapshot, image, dataset=dataset, name=name, source=source,
                      pixel_file=None)


def import_dicomweb(store: Store, server: Server, filters: Filters = Filters(), *,
                    dataset: str = "pacs", dry_run: bool = False,
                    progress: ProgressFn | None = None,
                    cancel: Callable[[], bool] | None = None) -> dict:
    """Search, then pull everything found (the CLI's one step); ``dry_run`` only searches.

    Returns a dict: url, dataset, dry_run, studies (`Plan.table` records), n_instances and,
    unless ``dry_run``, the pull's `ImportReport` fields (counts, files).
    """
    dataset = check_dataset(dataset)
    plan = search(store, server, filters, progress=progress)
    result = {"url": plan.url, "dataset": dataset, "dry_run": dry_run,
              "studies": plan.table(), "n_instances": plan.n_instances,
              "search_failed": plan.failures()}
    if not dry_run:
        result.update(pull(store, server, plan, dataset=dataset, progress=progress,
                           cancel=cancel).as_dict())
    return result
