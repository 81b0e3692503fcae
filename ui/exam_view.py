"""The Exam view: one exam in the radiologists' hanging protocol, with its labels, reads and
scores, and optionally one image as a model received it beside the original.

`exam_view` is a component: the Exam page draws it for ``?exam=<id>``, and the Saliency and
Radiologist-complement pages draw it (or link to the Exam page, `exam_url`) for a chosen case.
The numbers come from `core.reports.exam.exam_report`, the pixels from
`core.reports.exam.exam_images` (display convention in that module's docstring), the model
input from `ui.model_input.model_input`.
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
    exam_images,
    exam_report,
)
from ui.caching import cached
from ui.downloads import download_popover
from ui.images import empty_tile, outline_box
from ui.model_input import gmic_models, model_input
from ui.errors import show_input_error

__all__ = ["EXAM_PAGE", "exam_url", "exam_view"]

EXAM_PAGE = "pages/exam.py"
_EMPTY_SHAPE = (512, 320)   # an empty tile's size when no view of the exam has pixels


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
    for positions in ((0, 1), (2, 3)):
        for position, column in zip(positions, st.columns(2)):
            with column, st.container(border=True):
                _tile(report, position, tiles[position])
    for note in report.notes:
        st.caption(f":material/info: {note}")
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


def _truth(label, histology, presentation=None) -> str:
    if label is None or pd.isna(label):
        return "no label"
    if int(label) == 0:
        return "healthy"
    extra = f", {presentation}" if isinstance(presentation, str) and presentation != "none" else ""
    return f"**cancer** ({histology}{extra})"


def _decision(row) -> str:
    recall = row.recall
    said = ("no decision" if recall is None or pd.isna(recall)
            else "recall" if bool(recall) else "no recall")
    score = "" if row.score is None or pd.isna(row.score) else f" ({row.score:.2f})"
    return f"{row.reader} {said}{score}"


def _score(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def _header(report: ExamReport) -> None:
    exam = report.exam
    age = exam.get("age")
    facts = [f"dataset `{exam['dataset']}`", f"split {exam.get('split') or 'none'}"]
    if age is not None and not pd.isna(age):
        facts.append(f"age {age:.0f}")
    st.subheader(f"Exam {report.exam_id}")
    st.caption(" · ".join(facts))
    reads = report.reads[report.reads["level"] == "exam"]
    scores = report.scores[report.scores["level"] == "exam"]
    lines = [f"Exam: {_truth(exam['label'], exam['histology'])}"]
    if len(reads):
        lines.append("Readers (exam): " + " · ".join(_decision(r) for r in reads.itertuples()))
    if len(scores):
        lines.append("Models (exam): " + " · ".join(
            f"{r.model} {_score(r.score)} ({r.score_source})" for r in scores.itertuples()))
    st.markdown("  \n".join(lines))


def _tile(report: ExamReport, position: int, image: HangingImage | None) -> None:
    lat, view = HANGING_ORDER[position]
    tile = report.tiles.iloc[position]
    image_id = tile["image_id"]
    if image is None:
        st.image(empty_tile(_EMPTY_SHAPE), width="stretch")
        st.markdown(f"**{lat}-{view}**: " + ("no image in this exam" if image_id is None
                                             else f"`{image_id}` has no pixels in the store"))
    else:
        st.image(image.pixels, width="stretch")
        moved = ", mirrored to hang" if image.flipped else ""
        st.markdown(f"**{lat}-{view}** · `{image_id}`")
        st.caption(f"Chest wall found on the file's {image.chest_wall}{moved}; "
                   f"{image.source}; {image.original_shape[0]} x {image.original_shape[1]} px, "
                   f"shown at 1/{image.factor}.")
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
    scores = report.scores
    for model in scores["model"].unique():
        mine = scores[scores["model"] == model]
        on_image = mine.loc[(mine["level"] == "image") & (mine["image_id"] == image_id), "score"]
        on_breast = mine[(mine["level"] == "breast") & (mine["laterality"] == lat)]
        text = f"{model}: {_score(on_image.iat[0]) if len(on_image) else 'n/a'}"
        if len(on_breast):
            b = on_breast.iloc[0]
            text += f" (breast {_score(b['score'])}, {b['score_source']})"
        lines.append(text)
    st.markdown("  \n".join(lines))


def _model_input_section(report: ExamReport, tiles: list[HangingImage | None], key: str) -> None:
    st.subheader("As the model received it")
    models = cached(gmic_models)
    shown = [i for i, t in enumerate(tiles) if t is not None]
    if not models or not shown:
        st.info("This needs a GMIC model in the store and a view with pixels.")
        return
    left, right = st.columns(2)
    model = left.selectbox("Model", models, key=f"{key}_input_model")
    position = right.selectbox(
        "View", shown, key=f"{key}_input_view",
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
        st.caption(f"{model}'s input: {pre.input_shape[0]} x {pre.input_shape[1]} px, "
                   f"{'mirrored' if pre.flipped else 'not mirrored'} (laterality "
                   f"{HANGING_ORDER[position][0]}), standardised; "
                   f"config `{got.config}` from {got.config_source}.")
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
