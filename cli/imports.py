"""``python -m core import KIND ...``: each handler opens the store and calls one importer.

Output: the `ImportReport` (per file: imported / skipped / failed with a one-line reason) on
stdout, as JSON with ``--json``; a progress bar on stderr. When any file failed, the failures
are listed on stderr and the command exits 1 (after printing the report); bad input that stops
the whole import (a missing folder, a malformed manifest or table) is one ``error:`` line, exit 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli import CommandFailed, comma_list, open_from_args, to_json, to_text
from core.errors import InputError
from core.progress import tqdm_progress

FORMATTER = argparse.RawDescriptionHelpFormatter


def register(commands, report, common) -> None:
    """Add the ``import`` command group (``report`` is unused: imports print no report table)."""
    parser = commands.add_parser(
        "import", help="import images with labels, predictions or reader reads",
        description="Import a dataset or a score table into the store (idempotent: a re-import "
                    "updates rows and skips unchanged files).",
        formatter_class=FORMATTER,
        epilog="Example:\n  python -m core import mias ../shared/data/mias --json")
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)

    p = _kind(kinds, common, "dicom", "DICOM mammograms under a folder (de-identified)",
              "Every DICOM file under FOLDER becomes an image; exams are grouped by the hashed "
              "StudyInstanceUID, patients by a keyed hash of PatientID (the pseudonym key is kept outside the store); names, birth dates, "
              "accession numbers and institutions are never stored. Laterality and view come "
              "from the header (else the file name); the screen copy is made on first view.",
              "python -m core import dicom scans/ --dataset hospital-a")
    p.add_argument("folder", type=Path, help="folder searched recursively for DICOM files")
    p.add_argument("--dataset", help="dataset name (default: the folder's name)")
    p.set_defaults(func=_dicom)

    p = _kind(kinds, common, "dicomweb", "mammograms pulled from a PACS over DICOMweb",
              "Searches the PACS (QIDO-RS: studies, then series of --modality, BREAST where "
              "the body part is given), retrieves each instance (WADO-RS) into a private "
              "temporary folder and imports it as `import dicom` does (de-identified; one "
              "instance at a time, all-or-nothing; a re-pull skips what is stored). A "
              "de-identified pixel copy is kept in the store's files folder. Credentials come "
              "from environment variables only; the URL must carry none. --dry-run lists "
              "studies, series, instances and views under the store's pseudonyms.",
              "PACS_PASSWORD=... python -m core import dicomweb "
              "http://pacs:8042/dicom-web --user reader --password-env PACS_PASSWORD "
              "--study-date 20230101-20231231 --dry-run --json")
    p.add_argument("url", help="the DICOMweb root, e.g. http://pacs:8042/dicom-web")
    p.add_argument("--user", help="user name for HTTP basic authentication")
    p.add_argument("--password-env", metavar="VAR", help="environment variable holding the "
                                                         "password (never the password itself)")
    p.add_argument("--token-env", metavar="VAR", help="environment variable holding a bearer "
                                                      "token")
    p.add_argument("--patient", help="PatientID to match (never printed back)")
    p.add_argument("--study-date", metavar="FROM-TO", help="YYYYMMDD or YYYYMMDD-YYYYMMDD")
    p.add_argument("--accession", help="AccessionNumber to match")
    p.add_argument("--study-uid", help="StudyInstanceUID to match")
    p.add_argument("--modality", default="MG", help="series modality (default MG)")
    p.add_argument("--limit", type=int, help="at most N studies")
    p.add_argument("--dataset", default="pacs", help="dataset name (default: pacs)")
    p.add_argument("--dry-run", action="store_true",
                   help="list what would be pulled (pseudonyms only); retrieve no pixels")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for the PACS to connect or send more (default 30)")
    p.add_argument("--deadline", type=float, default=600.0,
                   help="seconds one request (a search, one instance) may take in all; a PACS "
                        "still sending then is cut off (default 600)")
    p.add_argument("--retries", type=int, default=2,
                   help="retries after a network failure or a busy PACS, with back-off "
                        "(default 2)")
    p.set_defaults(func=_dicomweb)

    p = _kind(kinds, common, "png", "16/8-bit PNG folder with a label manifest",
              "Images named <exam>_<L|R>_<CC|MLO>.png (or <exam>_<L|R>-<CC|MLO>.png) under "
              "FOLDER, labelled by a CSV manifest with columns exam, laterality, cancer "
              "[histology, presentation, pathology, split, density, age, patient, file, view], "
              "one row per breast, or the metarepository's data.pkl exam list. Manifest paths "
              "must stay inside FOLDER.\n\nManifest example:\n  exam,laterality,cancer,"
              "histology,split\n  0,L,0,none,test\n  0,R,1,ILC,test",
              "python -m core import png images/ --manifest labels.csv --dataset nyu-sample")
    p.add_argument("folder", type=Path, help="folder with the PNG files")
    p.add_argument("--manifest", type=Path, required=True, help="labels: CSV or data.pkl")
    p.add_argument("--dataset", help="dataset name (default: the folder's name)")
    p.set_defaults(func=_png)

    p = _kind(kinds, common, "mias", "mini-MIAS (Info.txt + mdbNNN.pgm/.png)",
              "Consecutive films are one woman's left and right MLO. The README (even = left) "
              "and the film markers (odd = left) disagree; the default follows the film "
              "markers. Findings become lesions and circular masks (origin bottom-left); "
              "background tissue F/G/D becomes density 0/1/2.",
              "python -m core import mias ../shared/data/mias --laterality-rule readme")
    p.add_argument("folder", type=Path, help="folder with Info.txt and the images")
    p.add_argument("--dataset", default="mias", help="dataset name (default: mias)")
    p.add_argument("--laterality-rule", choices=("film-marker", "readme"),
                   default="film-marker", help="odd = L (film markers, default) or odd = R "
                                               "(README note 1)")
    p.set_defaults(func=_mias)

    p = _kind(kinds, common, "csaw", "CSAW-CC screening table (one row per image)",
              "Exams (anon_patientid, exam_year), breast labels from x_case, "
              "x_cancer_laterality and rad_timing, reads rad_r1/rad_r2/rad_recall, LIBRA "
              "density. CSAW-CC's x_type is tumour type/size (1 in situ, 2-3 invasive), not "
              "ductal/lobular: in situ -> other, invasive -> unknown unless --histology-map "
              "says otherwise.",
              "python -m core import csaw CSAW-CC_breast_cancer_screening_data.csv "
              "--images csaw/ --json")
    p.add_argument("csv", type=Path, help="the CSAW-CC table (CSV or Parquet)")
    p.add_argument("--images", type=Path, help="folder the anon_filename paths are relative to")
    p.add_argument("--dataset", default="csaw", help="dataset name (default: csaw)")
    p.add_argument("--positive-timing", default="1,2",
                   help="rad_timing values that make the cancer breast positive (default 1,2)")
    p.add_argument("--histology-map", help="x_type codes to histology, e.g. 1=other,2=unknown,"
                                           "3=unknown (the default)")
    p.set_defaults(func=_csaw)

    for kind, what in (("predictions", "model"), ("readers", "reader")):
        p = _kind(kinds, common, kind, f"{what} scores from CSV or Parquet",
                  f"Long (id, {what}, score) or wide (one column per {what}) tables at image, "
                  "breast (with a side column) or exam level; the metarepository's "
                  "image_index/malignant_pred and left_malignant/right_malignant files are "
                  "recognised. Rows matching no stored case are listed as unmatched; with "
                  "--dataset NEW --label-column COL the cases are created from the table."
                  + (" Reader columns of 0/1 values are recall decisions; a column named like "
                     "consensus/recall is a consensus reader." if kind == "readers" else ""),
                  f"python -m core import {kind} "
                  + ("gmic_image_predictions.csv --model gmic --dataset mias --json"
                     if kind == "predictions" else
                     "reads.csv --format wide --reader-columns r1,r2,consensus --level exam"))
        p.add_argument("file", type=Path, help="the table (.csv, .tsv, .parquet)")
        p.add_argument("--format", choices=("long", "wide"), help="table layout (default: detect)")
        p.add_argument("--id-column", help="column with image/exam ids (default: detect)")
        p.add_argument("--side-column", help="column with L/R (breast level)")
        p.add_argument("--label-column", help="column with 0/1 labels (to create new cases)")
        p.add_argument(f"--{what}-columns", dest="value_columns",
                       help=f"wide format: comma-separated {what} columns")
        p.add_argument("--level", choices=("image", "breast", "exam"), help="default: detect")
        p.add_argument("--dataset", help="match (or create) cases in this dataset")
        p.add_argument(f"--{what}", dest="name",
                       help=f"{what} name for a single-score table (default: the file's name)")
        p.add_argument("--score-column", help="the score column (long, or a single wide column)")
        p.set_defaults(func=_predictions if kind == "predictions" else _readers)

    p = _kind(kinds, common, "reader-study",
              "a reader study (readers x modalities x cases) from a table, iMRMC or the store",
              "A long table (CSV/Parquet: reader, modality, case, rating, truth columns) or an "
              "iMRMC file (header lines, BEGIN DATA:, rows readerID, caseID, modalityID, score; "
              "truth rows have readerID -1). Case ids are the store's at --level (its labels are "
              "the truth) or, when none is in the store, the file's own. --from-store instead "
              "takes the store's reads at --level as the 'unaided' modality. --models adds "
              "models as fixed readers. A re-import replaces the reads of its readers and "
              "modalities; the report counts missing reads per reader and modality.",
              "python -m core import reader-study pilot.imrmc --study pilot --json")
    p.add_argument("file", type=Path, nargs="?", help="the table or .imrmc file")
    p.add_argument("--study", required=True, help="the study's name")
    p.add_argument("--format", choices=("long", "imrmc"),
                   help="default: imrmc for .imrmc files, else long")
    p.add_argument("--from-store", action="store_true",
                   help="build the study from the store's reads (no FILE)")
    p.add_argument("--level", choices=("image", "breast", "exam"),
                   help="the cases' level (default: the level the ids match)")
    p.add_argument("--own-cases", action="store_true",
                   help="the file's case ids are its own, not the store's")
    for column in ("reader", "modality", "case", "truth", "rating"):
        p.add_argument(f"--{column}-column", help=f"the {column} column (default: detect)")
    p.add_argument("--modality", help="the condition of a table without a modality column")
    p.add_argument("--rating-scale", help="e.g. 'BI-RADS 1-5' or '0-100'")
    p.add_argument("--description", help="what the study is")
    p.add_argument("--readers", type=comma_list, help="--from-store: these readers only")
    p.add_argument("--test-set", help="--from-store: the cases of this test set")
    p.add_argument("--models", type=comma_list, default=[],
                   help="comma-separated models added as fixed readers")
    p.add_argument("--model-modality", default="unaided",
                   help="the modality the models' reads go to (default: unaided)")
    p.set_defaults(func=_reader_study)


def _kind(kinds, common, name: str, help: str, description: str, example: str):
    return kinds.add_parser(name, parents=[common], help=help, description=description,
                            epilog=f"Example:\n  {example}", formatter_class=FORMATTER)


# ---------------------------------------------------------------------------- handlers
def _dicom(args):
    from core.importers.dicom import import_dicom

    return _run(args, "dicom", lambda store, progress: import_dicom(
        store, args.folder, dataset=args.dataset, progress=progress))


def _dicomweb(args):
    from core.importers.dicomweb import Filters, import_dicomweb
    from core.io.dicomweb import server_from_env

    server = server_from_env(args.url, user=args.user, password_env=args.password_env,
                             token_env=args.token_env, timeout_s=args.timeout,
                             deadline_s=args.deadline, retries=args.retries)
    filters = Filters(patient=args.patient, study_date=args.study_date,
                      accession=args.accession, study_uid=args.study_uid,
                      modality=args.modality, limit=args.limit)
    if args.dry_run:
        store = open_from_args(args)
        with tqdm_progress("search PACS") as progress:
            return import_dicomweb(store, server, filters, dataset=args.dataset, dry_run=True,
                                   progress=progress)
    return _run(args, "dicomweb", lambda store, progress: import_dicomweb(
        store, server, filters, dataset=args.dataset, progress=progress))


def _png(args):
    from core.importers.png import import_png

    return _run(args, "png", lambda store, progress: import_png(
        store, args.folder, args.manifest, dataset=args.dataset, progress=progress))


def _mias(args):
    from core.importers.mias import import_mias

    return _run(args, "mias", lambda store, progress: import_mias(
        store, args.folder, dataset=args.dataset, laterality_rule=args.laterality_rule,
        progress=progress))


def _csaw(args):
    from core.importers.csaw import import_csaw

    timing = tuple(_ints(args.positive_timing, "--positive-timing"))
    mapping = None
    if args.histology_map:
        mapping = {}
        for item in args.histology_map.split(","):
            code, sep, histology = item.partition("=")
            if not sep:
                raise InputError(f"--histology-map item {item!r} is not CODE=HISTOLOGY; "
                                 "example: 1=other,2=unknown")
            mapping[_ints(code, "--histology-map")[0]] = histology.strip()
    return _run(args, "csaw", lambda store, progress: import_csaw(
        store, args.csv, images=args.images, dataset=args.dataset, positive_timing=timing,
        histology_map=mapping, progress=progress))


def _predictions(args):
    from core.importers.tables import import_predictions

    return _table(args, import_predictions, model_columns=_columns(args), model=args.name)


def _readers(args):
    from core.importers.tables import import_readers

    return _table(args, import_readers, reader_columns=_columns(args), reader=args.name)


def _columns(args) -> tuple[str, ...] | None:
    if not args.value_columns:
        return None
    return tuple(c.strip() for c in args.value_columns.split(",") if c.strip())


def _table(args, importer, **names):
    return _run(args, args.kind, lambda store, progress: importer(
        store, args.file, format=args.format, id_column=args.id_column,
        side_column=args.side_column, label_column=args.label_column, level=args.level,
        dataset=args.dataset, score_column=args.score_column, progress=progress, **names))


def _reader_study(args):
    from core.importers.reader_study import import_reader_study, import_store_reads

    if args.from_store == (args.file is not None):
        raise InputError("pass either FILE or --from-store (one source per import)")
    if args.from_store:
        if args.level is None:
            raise InputError("--from-store needs --level (the level of the reads to use)")
        return _run(args, "reader-study", lambda store, progress: import_store_reads(
            store, study=args.study, level=args.level, readers=args.readers,
            test_set=args.test_set, models=args.models, modality=args.modality or "unaided",
            description=args.description, progress=progress))
    return _run(args, "reader-study", lambda store, progress: import_reader_study(
        store, args.file, study=args.study, format=args.format, level=args.level,
        store_cases=False if args.own_cases else None, reader_column=args.reader_column,
        modality_column=args.modality_column, case_column=args.case_column,
        truth_column=args.truth_column, rating_column=args.rating_column,
        modality=args.modality, rating_scale=args.rating_scale, description=args.description,
        models=args.models, model_modality=args.model_modality, progress=progress))


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise InputError(f"{flag} {text!r} is not a comma-separated list of integers") from None


def _run(args, desc: str, job) -> dict:
    store = open_from_args(args)
    with tqdm_progress(f"import {desc}") as progress:
        report = job(store, progress)  # an ImportReport, or a dict holding its fields
    result = report if isinstance(report, dict) else report.as_dict()
    failed = [o for o in result["files"] if o["status"] == "failed"]
    if failed:
        print(to_json(result) if args.json else to_text(result))
        for outcome in failed:
            print(f"failed: {outcome['file']}: {outcome['reason']}", file=sys.stderr)
        raise CommandFailed(f"{len(failed)} of {len(result['files'])} file(s) failed; nothing "
                            "was stored for them (reasons above)")
    return result
