"""mini-MIAS as distributed: ``python -m core import mias DIR``.

DIR holds ``Info.txt`` and the images ``mdbNNN.pgm`` (the distribution) or ``mdbNNN.png``
(lossless copies); a PGM wins when both exist. Only ``Info.txt`` lines that start with ``mdb``
are read: ``REFNUM BG CLASS [SEVERITY [X Y RADIUS]]`` (see ``../shared/data/mias/SOURCE.md``).

Mapping
-------
exams        consecutive films are one woman's two MLO views (README note 1): mdb001+mdb002
             is exam ``mdb001-002``, ..., 161 exams; no dates, ages or patient ids exist
laterality   the README says even = left, odd = right, but the films' own (mirror-reversed)
             markers read odd = L, even = R. Default ``laterality_rule='film-marker'``:
             odd = L, even = R, ``laterality_source = 'film-marker'``;
             ``laterality_rule='readme'``: even = L, odd = R, ``laterality_source =
             'info-note'``. Treat it as uncertain either way; a hand correction
             (`core.importers.common.correct_laterality`) survives re-imports. Pixels are kept
             as distributed (they look mirrored relative to the films; see SOURCE.md)
views        MLO for every image; spacing 0.2 mm (the mini-MIAS resampling); 8-bit
density      background tissue -> ``density`` rows (source 'label') at image, breast and exam
             level: F (fatty) -> 0, G (fatty-glandular) -> 1, D (dense-glandular) -> 2.
             MIAS has three classes where ILCscope has four (BI-RADS a-d); F and G read as
             BI-RADS a and b, and D ("dense-glandular") as c, because MIAS does not single out
             extremely dense breasts; category 3 is never assigned. The map is one-to-one, so
             the letter is recoverable (it is also written in ``datasets.notes``). The exam's
             category is the denser film's (as BI-RADS takes the denser breast)
findings     CLASS -> lesion presentation: CALC calcification, CIRC mass, SPIC spiculated mass,
             MISC ill-defined, ARCH architectural distortion, ASYM asymmetry, NORM none;
             SEVERITY B/M -> pathology benign/malignant. One ``lesions`` row per finding line
             (``lesion_id = <image_id>/<k>``); (X, Y) has its origin at the *bottom-left*
             corner, so ``row = height - 1 - Y``, ``col = X``; lines without coordinates (a
             spread calcification, mdb059) get NULL coordinates and no mask
masks        the union of an image's finding circles is one annotation (source 'imported',
             author 'MIAS'); a re-import adds no version when the latest mask is identical
breasts      cancer 1 if any malignant finding; histology 'unknown' for malignant (MIAS has no
             histology), 'none' otherwise; pathology malignant > benign > none
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from core.errors import InputError
from core.io.mias import MIAS_PRESENTATION, MiasFinding, parse_info
from core.importers import ImportReport
from core.importers.common import (
    Batch, FileRows, Skipped, Snapshot, annotation_rows, check_dataset, check_utf8_folder,
    disk_mask, exam_id_for, finish, raster_record,
)
from core.progress import ProgressFn, report as report_progress
from core.store import Store
from core.vocabulary import MIAS_DENSITY

__all__ = ["import_mias", "parse_info", "MiasFinding", "LATERALITY_RULES", "MIAS_DENSITY",
           "MIAS_PRESENTATION", "SPACING_MM"]

SPACING_MM = 0.2
LATERALITY_RULES = {"film-marker": ("film-marker", {1: "L", 0: "R"}),   # odd L, even R
                    "readme": ("info-note", {1: "R", 0: "L"})}          # odd R, even L


def import_mias(store: Store, root: str | Path, *, dataset: str | None = None,
                laterality_rule: str = "film-marker",
                progress: ProgressFn | None = None) -> ImportReport:
    """Import mini-MIAS from ``root`` (Info.txt + mdbNNN.pgm/.png) into ``dataset`` ('mias').

    Each image is validated on its own (decoded whole) and written with its exam, breast,
    lesion, density and annotation rows; valid images are written in batched transactions.

    ``laterality_rule``: 'film-marker' (odd = L, even = R; default) or 'readme' (even = L,
    odd = R); see the module docstring for why they disagree.
    """
    if laterality_rule not in LATERALITY_RULES:
        raise InputError(f"laterality rule {laterality_rule!r} is not one of "
                         f"{', '.join(LATERALITY_RULES)}")
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} does not exist; pass the folder that holds Info.txt and the "
                         ".pgm/.png files")
    root = check_utf8_folder(root.resolve())
    dataset = check_dataset(dataset or "mias")
    findings = parse_info(root / "Info.txt")
    by_ref: dict[str, list[MiasFinding]] = defaultdict(list)
    for finding in findings:
        by_ref[finding.refnum].append(finding)
    report = ImportReport(kind="mias", dataset=dataset)
    abnormal = [f for f in findings if f.cls != "NORM"]
    no_coords = [f.refnum for f in abnormal if f.x is None]
    several = sorted(r for r, fs in by_ref.items() if len(fs) > 1)
    report.add("Info.txt", "imported", (
        f"{len(by_ref)} images, {len(abnormal)} findings; {len(no_coords)} without coordinates "
        f"(lesion rows with NULL centre, no mask: {', '.join(no_coords) or 'none'}); "
        f"{len(several)} images with several findings ({', '.join(several) or 'none'}); "
        f"laterality rule {laterality_rule}"))
    source, sides = LATERALITY_RULES[laterality_rule]
    snapshot = Snapshot(store, dataset, ("datasets", "exams", "images", "breasts", "lesions",
                                         "annotations", "density"))
    lateralities = {}
    for refnum in by_ref:
        stored = snapshot.get("images", image_id=f"{dataset}/{refnum}")
        if stored is not None and stored["laterality_source"] == "corrected":
            lateralities[refnum] = (stored["laterality"], "corrected")
        else:
            lateralities[refnum] = (sides[int(refnum[3:]) % 2], source)
    context = _Context(store, snapshot, root, dataset, laterality_rule, by_ref, lateralities)
    # No connection around the loop: decoding holds no lock; each batch's write is one transaction.
    with Batch(store, report) as batch:
        for done, refnum in enumerate(sorted(by_ref)):
            batch.run(_file_name(root, refnum), lambda: _import_image(context, refnum))
            report_progress(progress, done + 1, len(by_ref), refnum)
    return finish(store, report)


@dataclass(frozen=True)
class _Context:
    store: Store
    snapshot: Snapshot
    root: Path
    dataset: str
    rule: str
    by_ref: dict
    lateralities: dict


def _file_name(root: Path, refnum: str) -> str:
    for suffix in (".pgm", ".png"):
        if (root / (refnum + suffix)).is_file():
            return refnum + suffix
    return refnum + ".pgm"


def _pair(refnum: str) -> tuple[str, list[str]]:
    number = int(refnum[3:])
    first = number - 1 + number % 2  # the odd film of the pair
    return f"mdb{first:03d}-{first + 1:03d}", [f"mdb{first:03d}", f"mdb{first + 1:03d}"]


def _import_image(ctx: _Context, refnum: str) -> FileRows | Skipped:
    name = _file_name(ctx.root, refnum)
    path = ctx.root / name
    if not path.is_file():
        raise InputError(f"{refnum}: neither {refnum}.pgm nor {refnum}.png is in {ctx.root}")
    store, dataset = ctx.store, ctx.dataset
    exam_key, members = _pair(refnum)
    exam_id = exam_id_for(dataset, exam_key)
    image_id = f"{dataset}/{refnum}"
    record = raster_record(path, ctx.snapshot.get("images", image_id=image_id))
    laterality, source = ctx.lateralities[refnum]
    findings = [f for f in ctx.by_ref[refnum] if f.cls != "NORM"]
    lesions, circles = [], []
    for k, f in enumerate(findings, 1):
        row = None if f.y is None else record["height"] - 1 - f.y
        lesions.append({
            "lesion_id": f"{image_id}/{k}", "image_id": image_id, "exam_id": exam_id,
            "laterality": laterality, "presentation": MIAS_PRESENTATION[f.cls],
            "pathology": "malignant" if f.severity == "M" else "benign",
            "histology": "unknown" if f.severity == "M" else "none",
            "row_px": row, "col_px": f.x, "radius_px": f.radius})
        if f.x is not None:
            circles.append((row, f.x, f.radius))
    # The breast holds every finding of the pair's films on its side (one film, unless corrected).
    side_findings = [f for m in members if m in ctx.by_ref and ctx.lateralities[m][0] == laterality
                     for f in ctx.by_ref[m] if f.cls != "NORM"]
    letters = {m: ctx.by_ref[m][0].background for m in members if m in ctx.by_ref}
    exam_category = max(MIAS_DENSITY[b] for b in letters.values())
    category = MIAS_DENSITY[ctx.by_ref[refnum][0].background]
    density = [
        {"level": "image", "case_id": image_id, "laterality": laterality, "image_id": image_id,
         "category": category},
        {"level": "breast", "case_id": f"{exam_id}/{laterality}", "laterality": laterality,
         "category": max(MIAS_DENSITY[ctx.by_ref[m][0].background] for m in members
                         if m in ctx.by_ref and ctx.lateralities[m][0] == laterality)},
        {"level": "exam", "case_id": exam_id, "category": exam_category},
    ]
    rows = {
        "datasets": [{
            "dataset": dataset, "kind": "imported", "source": "mias", "root": str(ctx.root),
            "notes": (f"mini-MIAS; laterality rule {ctx.rule} (README note 1 and the film "
                      "markers disagree); density label F->0 G->1 D->2; spacing 0.2 mm")}],
        "exams": [{"exam_id": exam_id, "dataset": dataset, "exam_key": exam_key,
                   "patient": store.pseudonym("mias:" + exam_key)}],
        "images": [dict(record, image_id=image_id, exam_id=exam_id, dataset=dataset,
                        image_key=refnum, laterality=laterality, laterality_source=source,
                        view="MLO", path=name, spacing_mm=SPACING_MM)],
        "breasts": [_breast(exam_id, laterality, side_findings)],
        "lesions": lesions,
        "density": [dict(d, source="label", exam_id=exam_id) for d in density],
    }
    new_files = []
    if circles:
        note = "; ".join(f"{f.cls} {f.severity} x={f.x} y={f.y} r={f.radius}"
                         for f in findings if f.x is not None)
        mask = disk_mask((record["height"], record["width"]), circles)
        rows["annotations"], new_files = annotation_rows(
            store, ctx.snapshot, image_id, mask, source="imported", author="MIAS",
            note=f"Info.txt circles (origin bottom-left, row = height - 1 - y): {note}")
    stored_lesions = len(ctx.snapshot.of_image("lesions", image_id))
    if not new_files and stored_lesions == len(lesions) and ctx.snapshot.unchanged(rows):
        return Skipped("unchanged")
    # Replace the image's lesions, so a finding removed from Info.txt disappears.
    return FileRows(rows, new_files=new_files, replace=[("lesions", "image_id", image_id)])


def _breast(exam_id: str, laterality: str, findings: list[MiasFinding]) -> dict:
    malignant = any(f.severity == "M" for f in findings)
    presentations = list(dict.fromkeys(MIAS_PRESENTATION[f.cls] for f in findings))
    return {"exam_id": exam_id, "laterality": laterality, "cancer": int(malignant),
            "histology": "unknown" if malignant else "none",
            "presentation": ",".join(presentations) or "none",
            "pathology": "malignant" if malignant else "benign" if findings else "none"}
