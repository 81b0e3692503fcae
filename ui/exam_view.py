"""The Exam view: one exam in the radiologists' hanging protocol, with its labels, reads and
scores, and optionally one image as a model received it beside the original.

`exam_view` is a component: the Exam page draws it for ``?exam=<id>``, and the Saliency and
Radiologist-complement pages draw it (or link to the Exam page, `exam_url`) for a chosen case.
The numbers come from `core.reports.exam.exam_report`, the pixels from
`core.reports.exam.exam_images` (display convention in that module's docstring), the stored
outline and the models' saliency maps over every view from `core.reports.exam.exam_overlays`,
the model input from `ui.model_input.model_input`. Its controls live in the URL (keys start
with the component's ``key``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from urllib.parse import urlencode

import pandas as pd
import streamlit as st

from core.errors import InputError
from core.image.segmentation import chest_wall_side
from core.reports.exam import (
    HANGING_ORDER,
    ExamReport,
    HangingImage,
    TileOverlay,
    exam_images,
    exam_overlays,
    exam_report,
    saliency_models,
)
from ui.caching import cached
from ui.charts.saliency import saliency_overlay
from ui.downloads import download_popover
from ui.images import empty_tile, outline_box
from ui.model_input import gmic_models, model_input
from ui.errors import show_input_error
from ui.text import md_escape

__all__ = ["EXAM_PAGE", "exam_url", "exam_view"]

EXAM_PAGE = "pages/exam.py"
_EMPTY_SHAPE = (512, 320)   # an empty tile's size when no view of the exam has pixels
_MAP_OPACITY = 0.45


def exam_url(exam_id: str, *, test_set: str | None = None) -> str:
    """The Exam page's relative URL for an exam (or any case id of it): ``exam?exam=<id>``.

    Relative, so it works under any host and base path; the test set rides along, so the
    page opens in the same context (it is the sidebar's query parameter).
    """
    query = {"exam": exam_id} | ({"test_set": test_set} if test_set else {})
    return "exam?" + urlencode(query)


def exam_view(exam_id: str, *, models: Sequence[str] | None = None,
              show_model_input: bool = False, key: str = "exam") -> None:
    """Draw the exam: four tiles in hanging order with their truth, reads and scores.

    ``models`` None: every model with a prediction on the exam. ``show_model_input`` adds a
    section with a chosen GMIC model's input for a chosen view beside the original. ``key``
    prefixes the component's widget keys (draw it twice with two keys).
    """
    try:
        report = cached(exam_report, exam_id, models=None if models is None else tuple(models))
        tiles = cached(exam_images, report.exam_id)
    except InputError as exc:
        show_input_error(exc)
        return
    _header(report)
    overlays = _overlay_controls(report, tiles, key)
    for positions in ((0, 1), (2, 3)):
        for position, column in zip(positions, st.columns(2)):
            with column, st.container(border=True):
                _tile(report, position, tiles[position], overlays[position])
    for note in (*report.notes, *_missing(report)):
        st.caption(f":material/info: {md_escape(note)}")
    with st.expander("Reads and scores as tables"):
        stem = report.exam_id.replace("/", "_")
        st.dataframe(report.reads, hide_index=True)
        download_popover("exam_reads", f"{key}_reads_csv", frame=report.reads,
                         context=dict(exam=stem))
        st.dataframe(report.scores, hide_index=True,
                     column_config={"score": st.column_config.NumberColumn(format="%.4f"),
                                    "benign": st.column_config.NumberColumn(format="%.4f")})
        download_popover("exam_scores", f"{key}_scores_csv", frame=report.scores,
                         context=dict(exam=stem))
    if show_model_input:
        _model_input_section(report, tiles, key)


def _overlay_controls(report: ExamReport, tiles: list[HangingImage | None], key: str
                      ) -> list[TileOverlay | None]:
    """The outline toggle and the saliency-map choice; what to draw over each tile."""
    with_maps = cached(saliency_models, report.exam_id)
    left, right = st.columns([1, 2], vertical_alignment="center")
    outline = left.toggle("Stored outline", True, key=f"{key}_outline", bind="query-params",
                          help="The newest saved annotation of each view (Annotate page)")
    chosen = right.pills("Saliency map (malignant)", with_maps, key=f"{key}_map",
                         bind="query-params", help="One model's map over every view",
                         format_func=md_escape)   # pills render Markdown; names are text
    if not with_maps:
        right.caption("No model has a saliency map on this exam.")
    geometry = tuple(None if t is None else (t.factor, t.flipped, tuple(t.pixels.shape))
                     for t in tiles)
    if not outline and chosen is None:
        return [None] * len(tiles)
    overlays = cached(exam_overlays, report.exam_id, geometry,
                      models=() if chosen is None else (chosen,))
    if outline and all(o is None or o.outline_version is None for o in overlays):
        left.caption("No outline is stored for this exam: draw one on the Annotate page.")
    return [None if o is None else TileOverlay(o.outline if outline else None,
                                               o.outline_version, o.maps, o.notes)
            for o in overlays]


def _missing(report: ExamReport) -> list[str]:
    """What this exam lacks, said once under the tiles."""
    notes = []
    if report.reads.empty:
        notes.append("No reader has read this exam (the dataset has no reads).")
    if report.scores.empty:
        notes.append("No model has scored this exam.")
    if report.breasts["label"].isna().all():
        notes.append("This exam has no cancer label.")
    return notes


def _truth(label, histology, presentation=None) -> str:
    if label is None or pd.isna(label):
        return "no label"
    if int(label) == 0:
        return "healthy"
    extra = (f", {md_escape(presentation)}" if isinstance(presentation, str)
             and presentation != "none" else "")
    return f"**cancer** ({md_escape(histology)}{extra})"


def _decision(row) -> str:
    recall = row.recall
    said = ("no decision" if recall is None or pd.isna(recall)
            else "recall" if bool(recall) else "no recall")
    digits = {"0-1": 2, "1-5": 0, "0-6": 0}.get(row.scale, 1)
    score = ("" if row.score is None or pd.isna(row.score)
             else f" ({row.score:.{digits}f} on {md_escape(row.scale)})")
    return f"{md_escape(row.reader)} {said}{score}"


def _study_lines(study: pd.DataFrame, where: str = "") -> list[str]:
    """Reader-study ratings: one line per study naming it and its scale once, each reader's
    ratings by condition ("r1 unaided 40, aided 55"); repeating both on every rating made a
    card of ~14 lines."""
    lines = []
    for name, part in study.groupby("study", sort=False):
        readers = " · ".join(
            f"{md_escape(reader)} " + ", ".join(f"{md_escape(r.modality)} {r.rating:.4g}"
                                                 for r in mine.itertuples())
            for reader, mine in part.groupby("reader", sort=False))
        lines.append(f"Reader study {md_escape(name)}{where} "
                     f"({md_escape(part['rating_scale'].iloc[0])}): {readers}")
    return lines


def _score(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def _header(report: ExamReport) -> None:
    exam = report.exam
    age = exam.get("age")
    facts = [f"dataset {md_escape(exam['dataset'])}",
             f"split {md_escape(exam.get('split') or 'none')}"]
    if age is not None and not pd.isna(age):
        facts.append(f"age {age:.0f}")
    st.subheader(f"Exam {md_escape(report.exam_id)}")
    st.caption(" · ".join(facts))
    reads = report.reads[report.reads["level"] == "exam"]
    scores = report.scores[report.scores["level"] == "exam"]
    lines = [f"Exam: {_truth(exam['label'], exam['histology'])}"]
    if len(reads):
        lines.append("Readers (exam): " + " · ".join(_decision(r) for r in reads.itertuples()))
    study = _study_reads(report, level="exam")
    if len(study):
        lines += _study_lines(study, " (exam)")
    if len(scores):
        lines.append("Models (exam): " + " · ".join(
            f"{md_escape(r.model)} {_score(r.score)} ({md_escape(r.score_source)})"
            for r in scores.itertuples()))
    st.markdown("  \n".join(lines))


def _study_reads(report: ExamReport, *, level: str, laterality: str | None = None,
                 image_id: str | None = None) -> pd.DataFrame:
    study = report.study_reads
    if study is None or study.empty:
        return pd.DataFrame()
    keep = study["level"] == level
    if level == "breast":
        keep &= study["laterality"] == laterality
    if level == "image":
        keep &= study["image_id"] == image_id
    return study[keep]


def _tile(report: ExamReport, position: int, image: HangingImage | None,
          overlay: TileOverlay | None) -> None:
    lat, view = HANGING_ORDER[position]
    tile = report.tiles.iloc[position]
    image_id = tile["image_id"]
    if image is None:
        st.image(empty_tile(_EMPTY_SHAPE), width="stretch")
        st.markdown(f"**{lat}-{view}**: " + (
            "no image in this exam" if image_id is None
            else f"{md_escape(image_id)} has no pixels in the store"))
    else:
        st.image(_picture(image, overlay), width="stretch")
        moved = ", mirrored to hang" if image.flipped else ""
        st.markdown(f"**{lat}-{view}** · {md_escape(image_id)}")
        st.caption(f"Chest wall found on the file's {image.chest_wall}{moved}; "
                   f"{md_escape(image.source)}; "
                   f"{image.original_shape[0]} x {image.original_shape[1]} px, "
                   f"shown at 1/{image.factor}." + _overlay_caption(overlay))
    breast = report.breasts[report.breasts["laterality"] == lat]
    lines = [f"Breast {lat}: " + (_truth(*breast.iloc[0][["label", "histology",
                                                           "presentation"]])
                                  if len(breast) else "no label")]
    reads = report.reads[((report.reads["level"] == "breast") & (report.reads["laterality"] == lat))
                         | ((report.reads["level"] == "image")
                            & (report.reads["image_id"] == image_id))]
    if len(reads):
        lines.append("Readers: " + " · ".join(
            f"{_decision(r)}{' [image]' if r.level == 'image' else ''}"
            for r in reads.itertuples()))
    study = pd.concat([_study_reads(report, level="breast", laterality=lat),
                       _study_reads(report, level="image", image_id=image_id)])
    if len(study):
        lines += _study_lines(study)
    scores = report.scores
    for model in scores["model"].unique():
        mine = scores[scores["model"] == model]
        on_image = mine.loc[(mine["level"] == "image") & (mine["image_id"] == image_id), "score"]
        on_breast = mine[(mine["level"] == "breast") & (mine["laterality"] == lat)]
        text = f"{md_escape(model)}: {_score(on_image.iat[0]) if len(on_image) else 'n/a'}"
        if len(on_breast):
            b = on_breast.iloc[0]
            text += f" (breast {_score(b['score'])}, {md_escape(b['score_source'])})"
        lines.append(text)
    st.markdown("  \n".join(lines))


def _picture(image: HangingImage, overlay: TileOverlay | None):
    """The tile, with the chosen saliency map as a heatmap and the outline in green."""
    if overlay is None or (overlay.outline is None and not overlay.maps):
        return image.pixels
    heat = next(iter(overlay.maps.values()), None)
    return saliency_overlay(image.pixels, heat, opacity=_MAP_OPACITY, mask=overlay.outline)


def _overlay_caption(overlay: TileOverlay | None) -> str:
    if overlay is None:
        return ""
    said = [f"outline: annotation v{overlay.outline_version} (green)"
            if overlay.outline is not None else ""]
    said += [f"{md_escape(model)}'s malignant map (dark to bright = 0 to 1)"
             for model in overlay.maps]
    said += [md_escape(note) for note in overlay.notes]
    said = [s for s in said if s]
    return (" " + "; ".join(said) + ".") if said else ""


def _model_input_section(report: ExamReport, tiles: list[HangingImage | None], key: str) -> None:
    st.subheader("As the model received it")
    models = cached(gmic_models)
    shown = [i for i, t in enumerate(tiles) if t is not None]
    if not models or not shown:
        st.info("This needs a GMIC model in the store and a view with pixels.")
        return
    left, right = st.columns(2)
    model = left.selectbox("Model", models, key=f"{key}_input_model", bind="query-params")
    position = right.selectbox(
        "View", shown, key=f"{key}_input_view", bind="query-params",
        format_func=lambda i: "-".join(HANGING_ORDER[i]) + f" ({report.tiles['image_id'].iat[i]})")
    image_id, tile = report.tiles.iloc[position]["image_id"], tiles[position]
    try:
        got = cached(model_input, model, image_id)
    except InputError as exc:
        show_input_error(exc)
        return
    pre = got.preprocessed
    original = tile.pixels[:, ::-1] if tile.flipped else tile.pixels   # the file as stored
    box = [v / tile.factor for v in pre.crop_box]
    left, right = st.columns(2)
    with left:
        st.image(outline_box(original, box), width="stretch")
        st.caption(f"The stored image ({pre.original_shape[0]} x {pre.original_shape[1]} px) "
                   f"with the crop box (red): rows {pre.crop_box[0]}-"
                   f"{pre.crop_box[0] + pre.crop_box[2]}, columns {pre.crop_box[1]}-"
                   f"{pre.crop_box[1] + pre.crop_box[3]}.")
    with right:
        st.image(got.display, width="stretch")
        st.caption(f"{md_escape(model)}'s input: {pre.input_shape[0]} x {pre.input_shape[1]} px, "
                   f"{'mirrored' if pre.flipped else 'not mirrored'} (laterality "
                   f"{HANGING_ORDER[position][0]}), standardised; "
                   f"config {md_escape(got.config)} from {md_escape(got.config_source)}.")
    if chest_wall_side(got.display) != "left":
        st.warning("The model received this breast with its chest wall on the **right**; GMIC "
                   "expects it at column 0 (left). The stored laterality and the pixels "
                   "disagree: check the laterality or the file's orientation.",
                   icon=":material/warning:")
    if got.matches_record is False:
        st.warning("This preprocessing differs from the geometry stored with the model's "
                   f"prediction (recorded crop box {got.recorded.crop_box}, mirrored "
                   f"{got.recorded.flipped}, input {got.recorded.input_shape}): the prediction "
                   "was made with other settings or another version of the image.",
                   icon=":material/warning:")
    elif got.matches_record:
        st.caption(":material/check_circle: Same crop box, flip and size as recorded with the "
                   "model's prediction for this image.")
