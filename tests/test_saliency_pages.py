"""The Annotate and Saliency pages: canvas strokes back on full-resolution pixels, the pictures
and charts they show, and both pages driven headless (AppTest) on the demo store."""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi
from streamlit.testing.v1 import AppTest

from core.annotations import annotation_versions, load_annotation
from core.errors import InputError
from core.reports.saliency import saliency_report
from core.store import open_store, write_result
from tests.conftest import copy_store
from ui.canvas import (ERASER_COLOUR, CanvasView, background_picture, canvas_size, canvas_to_image,
                       default_window, drawing_mask, plan_view, windowed)
from ui.charts import saliency as charts


# --- references ------------------------------------------------------------------------------


def fabric_fit(view: CanvasView, canvas_w: int, canvas_h: int, how: str = "contain") -> dict:
    """The background fit as the canvas's frontend computes it (its ``Zn``: 'contain' keeps
    the aspect ratio and centres the picture, 'stretch' fills the canvas)."""
    nh, nw = view.natural
    if how == "contain":
        a = min(canvas_w / nw, canvas_h / nh)
        return dict(natural_width=nw, natural_height=nh, scale_x=a, scale_y=a,
                    offset_x=(canvas_w - nw * a) / 2, offset_y=(canvas_h - nh * a) / 2)
    return dict(natural_width=nw, natural_height=nh, scale_x=canvas_w / nw,
                scale_y=canvas_h / nh, offset_x=0.0, offset_y=0.0)


def image_to_canvas(rows, cols, fit: dict, view: CanvasView):
    """Forward map, as the browser draws: image position -> background pixel -> canvas."""
    r0, c0, h, w = view.crop
    u = (np.asarray(cols, float) - c0) * view.natural[1] / w
    v = (np.asarray(rows, float) - r0) * view.natural[0] / h
    return fit["offset_x"] + u * fit["scale_x"], fit["offset_y"] + v * fit["scale_y"]


def pixel_centres_on_canvas(shape, fit, view):
    rr, cc = np.mgrid[0:shape[0], 0:shape[1]]
    return image_to_canvas(rr + 0.5, cc + 0.5, fit, view)


def distance_to_segment(x, y, a, b):
    """Brute force: distance of every (x, y) to the segment a-b."""
    d = np.subtract(b, a, dtype=float)
    t = np.clip(((x - a[0]) * d[0] + (y - a[1]) * d[1]) / (d @ d), 0, 1)
    return np.hypot(x - a[0] - t * d[0], y - a[1] - t * d[1])


SHAPE = (400, 300)
VIEW = plan_view(SHAPE, zoom=2, centre=(0.5, 0.5), max_side=100)   # crop shown at half size
FIT = fabric_fit(VIEW, 300, 300)


# --- canvas geometry -------------------------------------------------------------------------


def test_plan_view_crops_inside_the_image_and_shrinks_to_max_side():
    assert VIEW == CanvasView(crop=(100, 75, 200, 150), natural=(100, 75))
    assert plan_view(SHAPE, zoom=4, centre=(0.0, 1.0)).crop == (0, 225, 100, 75)  # clamped
    assert plan_view(SHAPE) == CanvasView(crop=(0, 0, 400, 300), natural=(400, 300))
    with pytest.raises(InputError, match="zoom"):
        plan_view(SHAPE, zoom=0.5)


def test_canvas_to_image_hand_computed():
    # contain: scale min(300/75, 300/100) = 3, picture 225 x 300 centred: offset_x 37.5
    assert FIT["scale_x"] == 3 and FIT["offset_x"] == 37.5 and FIT["offset_y"] == 0
    got = canvas_to_image([[37.5, 0], [262.5, 300], [150, 150]], FIT, VIEW)
    # each background pixel is 2 image pixels: (150 - 37.5) / 3 * 2 + 75 = 150
    np.testing.assert_allclose(got, [[100, 75], [300, 225], [200, 150]])


@pytest.mark.parametrize("how", ["contain", "stretch"])
@pytest.mark.parametrize("zoom, centre, max_side, canvas", [
    (1, (0.5, 0.5), 1280, (300, 400)), (3, (0.2, 0.7), 37, (640, 500)),
    (1.5, (0.9, 0.1), 64, (333, 517))])
def test_every_pixel_centre_maps_back_exactly(how, zoom, centre, max_side, canvas):
    view = plan_view(SHAPE, zoom=zoom, centre=centre, max_side=max_side)
    fit = fabric_fit(view, *canvas, how=how)
    r0, c0, h, w = view.crop
    rr, cc = np.mgrid[r0:r0 + h, c0:c0 + w]
    x, y = image_to_canvas(rr + 0.5, cc + 0.5, fit, view)
    back = canvas_to_image(np.column_stack([x.ravel(), y.ravel()]), fit, view)
    np.testing.assert_allclose(back[:, 0], rr.ravel() + 0.5, atol=1e-9)
    np.testing.assert_allclose(back[:, 1], cc.ravel() + 0.5, atol=1e-9)


def test_a_fit_of_another_picture_is_refused():
    with pytest.raises(InputError, match="wait for the image to load"):
        canvas_to_image([[0, 0]], {**FIT, "natural_width": 76}, VIEW)


def test_background_picture_spans_the_crop():
    grey = np.random.default_rng(0).integers(0, 256, SHAPE, dtype=np.uint8)
    full = plan_view(SHAPE)
    np.testing.assert_array_equal(np.asarray(background_picture(grey, full)), grey)
    half = np.asarray(background_picture(grey, VIEW), float)       # 2 x 2 box average
    crop = grey[100:300, 75:225].astype(float)
    blocks = crop.reshape(100, 2, 75, 2).mean(axis=(1, 3))
    assert half.shape == (100, 75)
    assert np.abs(half - blocks).max() <= 1  # PIL rounds in fixed point


def test_window_level():
    np.testing.assert_array_equal(windowed(np.array([0, 100, 150, 200, 4095]), 100, 200),
                                  [0, 0, 128, 255, 255])   # 127.5 rounds to 128
    pixels = np.concatenate([np.zeros(50), np.arange(1, 1001)])
    low, high = default_window(pixels)
    assert (low, high) == pytest.approx(np.percentile(np.arange(1, 1001), [0.5, 99.5]))


# --- strokes to a full-resolution mask -------------------------------------------------------


def rect(left, top, width, height, **extra):
    return {"type": "rect", "left": left, "top": top, "width": width, "height": height,
            "originX": "left", "originY": "top", "strokeWidth": 0, "stroke": None,
            "fill": "rgba(255,0,0,0.3)", **extra}


def line_path(a, b, width, colour="#ff3b30", shift=(0, 0)):
    """A free-drawn straight stroke a -> b as the canvas stores it (its box is the path's
    bounding box, origin top-left, grown by half the stroke), moved by ``shift``."""
    left = min(a[0], b[0]) - width / 2 + shift[0]
    top = min(a[1], b[1]) - width / 2 + shift[1]
    return {"type": "path", "path": [["M", *a], ["L", *b]], "left": left, "top": top,
            "width": abs(b[0] - a[0]), "height": abs(b[1] - a[1]), "originX": "left",
            "originY": "top", "strokeWidth": width, "stroke": colour, "fill": None}


def test_a_filled_rectangle_covers_exactly_the_pixels_whose_centres_it_covers():
    drawing = {"objects": [rect(80.3, 40.6, 101.7, 70.2)]}
    got = drawing_mask(drawing, FIT, VIEW, SHAPE)
    x, y = pixel_centres_on_canvas(SHAPE, FIT, VIEW)
    want = (x > 80.3) & (x < 182.0) & (y > 40.6) & (y < 110.8)
    assert want.sum() > 1000
    np.testing.assert_array_equal(got, want)


def test_a_stroke_covers_pixels_within_half_its_width_and_moves_with_its_object():
    a, b, width = (60.0, 200.0), (240.0, 90.0), 9.0
    x, y = pixel_centres_on_canvas(SHAPE, FIT, VIEW)
    for shift in [(0, 0), (-20.5, 35.0)]:
        got = drawing_mask({"objects": [line_path(a, b, width, shift=shift)]}, FIT, VIEW, SHAPE)
        moved_a, moved_b = np.add(a, shift), np.add(b, shift)
        d = distance_to_segment(x, y, moved_a, moved_b)
        assert got[d < width / 2 - 1e-6].all() and not got[d > width / 2 + 1e-6].any()
        assert got.sum() == pytest.approx((d <= width / 2).sum(), abs=2)


def test_a_rotated_ellipse_tool_circle_lands_where_the_canvas_draws_it():
    # the ellipse tool: origin (left, centre) at the press point, rotated towards the drag
    start, radius, width, angle = (120.0, 150.0), 30.0, 4.0, 35.0
    circle = {"type": "circle", "left": start[0], "top": start[1], "radius": radius,
              "width": 2 * radius, "height": 2 * radius, "originX": "left",
              "originY": "center", "angle": angle, "strokeWidth": width,
              "stroke": "#ff3b30", "fill": "rgba(0, 0, 0, 0.2)"}
    got = drawing_mask({"objects": [circle]}, FIT, VIEW, SHAPE)
    reach = radius + width / 2
    centre = np.add(start, reach * np.array([math.cos(math.radians(angle)),
                                             math.sin(math.radians(angle))]))
    x, y = pixel_centres_on_canvas(SHAPE, FIT, VIEW)
    d = np.hypot(x - centre[0], y - centre[1])       # canvas px; 1 image px = 1.5 canvas px
    assert got[d < reach - 0.2].all() and not got[d > reach + 0.2].any()


def test_an_unfilled_outline_draws_only_its_stroke_and_the_eraser_erases():
    ring = {"type": "circle", "left": 150, "top": 150, "radius": 40, "width": 80,
            "height": 80, "originX": "center", "originY": "center", "strokeWidth": 3,
            "stroke": "#ff3b30", "fill": "rgba(0, 0, 0, 0)"}
    outline = drawing_mask({"objects": [ring]}, FIT, VIEW, SHAPE)
    assert not outline[200, 150] and outline.any()           # the centre stays empty
    assert ndi.binary_fill_holes(outline).sum() > outline.sum()   # a closed ring
    eraser = line_path((100.0, 150.0), (200.0, 150.0), 12.0, colour=ERASER_COLOUR)
    both = drawing_mask({"objects": [ring, eraser]}, FIT, VIEW, SHAPE)
    x, y = pixel_centres_on_canvas(SHAPE, FIT, VIEW)
    erased = distance_to_segment(x, y, (100.0, 150.0), (200.0, 150.0)) <= 6 - 1e-6
    assert outline[erased].any() and not both[erased].any()
    np.testing.assert_array_equal(both[~erased], outline[~erased])


def test_a_base_drawing_is_kept_and_not_modified():
    base = np.zeros(SHAPE, bool)
    base[10:20, 10:20] = True
    before = base.copy()
    eraser = rect(0, 0, 300, 300, fill="#ff0000", stroke=ERASER_COLOUR)
    out = drawing_mask({"objects": [line_path((40.0, 20.0), (200.0, 20.0), 5.0)]}, FIT, VIEW,
                       SHAPE, base=base)
    assert out[10:20, 10:20].all() and out.sum() > 100
    np.testing.assert_array_equal(base, before)
    assert not drawing_mask({"objects": [eraser]}, FIT, VIEW, SHAPE, base=out)[
        100:300, 75:225].any()   # everything the view shows is erased ...
    assert drawing_mask({"objects": [eraser]}, FIT, VIEW, SHAPE, base=out)[10:20, 10:20].all()


def test_curves_and_bad_objects():
    # a quadratic curve through (150, 100): its middle pixel is drawn, its control point's not
    curve = {"type": "path", "path": [["M", 100, 150], ["Q", 150, 50, 200, 150]],
             "left": 100 - 1.5, "top": 100 - 1.5, "width": 100, "height": 50,
             "originX": "left", "originY": "top", "strokeWidth": 3, "stroke": "#ff3b30"}
    mask = drawing_mask({"objects": [curve]}, FIT, VIEW, SHAPE)
    on_curve = canvas_to_image([[150, 100]], FIT, VIEW)[0].astype(int)
    control = canvas_to_image([[150, 50]], FIT, VIEW)[0].astype(int)
    assert mask[tuple(on_curve)] and not mask[tuple(control)]
    with pytest.raises(InputError, match="'textbox' object"):
        drawing_mask({"objects": [{"type": "textbox"}]}, FIT, VIEW, SHAPE)
    with pytest.raises(InputError, match="background fit"):
        drawing_mask({"objects": [curve]}, None, VIEW, SHAPE)
    assert not drawing_mask({"objects": []}, None, VIEW, SHAPE).any()


# --- pictures and charts ---------------------------------------------------------------------


def test_heat_ramp_and_overlay():
    np.testing.assert_allclose(charts.heat_colours(np.array([0.0, 1.0, 2.0])),
                               [[0, 0, 4], [252, 255, 164], [252, 255, 164]])
    grey = np.full((20, 30), 100, np.uint8)
    sal = np.zeros((20, 30))
    sal[5:10, 5:10] = 1.0
    sal[12:15, 20:25] = 0.3
    mask = np.zeros((20, 30), bool)
    mask[4:11, 4:11] = True
    none = charts.saliency_overlay(grey, sal, opacity=0.0)
    np.testing.assert_array_equal(none, np.repeat(grey[..., None], 3, axis=2))
    out = charts.saliency_overlay(grey, sal, opacity=0.5, threshold=0.5, mask=mask,
                                  boxes=np.array([[0, 15, 10, 10]]))
    np.testing.assert_array_equal(out[7, 7], np.round(0.5 * 100 + 0.5 * np.array([252, 255, 164])))
    np.testing.assert_array_equal(out[13, 22], [100, 100, 100])   # below the threshold
    np.testing.assert_array_equal(out[4, 6], charts.CONTOUR_COLOUR)  # the mask's border
    np.testing.assert_array_equal(out[0, 18], charts.BOX_COLOUR)     # the box's top edge
    np.testing.assert_array_equal(out[5, 20], [100, 100, 100])       # inside the box


def test_dice_curve_rings_each_models_best_threshold():
    t = np.round(np.arange(0, 1.0001, 0.05), 2)
    curves = pd.concat([pd.DataFrame({"model": "a", "threshold": t, "dice": 1 - abs(t - 0.3)}),
                        pd.DataFrame({"model": "b", "threshold": t, "dice": t / 2})])
    spec = charts.dice_curve(curves, threshold=0.5).to_dict()
    datasets = list(spec["datasets"].values())
    best = next(d for d in datasets if len(d) == 2)
    assert {(r["model"], r["threshold"]) for r in best} == {("a", 0.3), ("b", 1.0)}


def test_gallery_order():
    frame = pd.DataFrame({"image_id": ["d", "a", "c", "b"], "best_dice": [0.2, 0.5, 0.5, 0.9],
                          "hit": [True, False, True, False]})
    assert charts.gallery_order(frame, "dice")["image_id"].tolist() == ["b", "a", "c", "d"]
    assert charts.gallery_order(frame, "hit")["image_id"].tolist() == ["c", "d", "b", "a"]


def test_display_step_and_png():
    assert charts.display_step((3328, 2560), 900) == 4 and charts.display_step((512, 320)) == 1
    assert charts.png_bytes(np.zeros((4, 4, 3), np.uint8)).startswith(b"\x89PNG")


# --- the pages, headless ---------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    at.run()
    at.switch_page(page)
    at.run()
    assert not at.exception, [(e.value, e.stack_trace[-4:]) for e in at.exception]
    return at


def ring_drawing(centre, radius, width):
    return {"objects": [{"type": "circle", "left": centre[0], "top": centre[1],
                         "radius": radius, "width": 2 * radius, "height": 2 * radius,
                         "originX": "center", "originY": "center", "strokeWidth": width,
                         "stroke": "#ff3b30", "fill": "rgba(0, 0, 0, 0)"}]}


@pytest.fixture
def writable_demo(demo_store_path, tmp_path, monkeypatch):
    path = copy_store(demo_store_path, tmp_path / "store")
    monkeypatch.setenv("ILCSCOPE_DB", str(path))
    monkeypatch.delenv("ILCSCOPE_MODE", raising=False)
    return path


def test_annotate_page_fills_a_drawn_ring_and_saves_a_new_version(writable_demo):
    at = open_page("pages/annotate.py")
    image_id = at.selectbox(key="annotate_image").value
    store = open_store(writable_demo, read_only=True)
    image = store.image(image_id)
    shape = (int(image["height"]), int(image["width"]))
    before = annotation_versions(store, image_id)
    old = {v: load_annotation(store, image_id, v) for v in before["version"]}
    view = plan_view(shape)
    width, height = canvas_size(None, view.natural)   # AppTest: no browser reports a column
    fit = fabric_fit(view, width, height)
    drawing = ring_drawing((160.0, 300.0), 50.0, 4.0)
    at.session_state[f"annotate_canvas_{image_id}_{view}_{width}_0"] = {
        "drawing": {"raw": drawing, "data": None},
        "backgroundFit": {"naturalWidth": fit["natural_width"],
                          "naturalHeight": fit["natural_height"], "scaleX": fit["scale_x"],
                          "scaleY": fit["scale_y"], "offsetX": fit["offset_x"],
                          "offsetY": fit["offset_y"]}}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    captions = [c for image in at.get("image") for c in image.captions]
    assert any("closed at step 1" in c for c in captions), captions
    at.text_input(key="annotate_author").set_value("AppTest").run()
    at.button(key="annotate_save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    after = annotation_versions(open_store(writable_demo, read_only=True), image_id)
    assert len(after) == len(before) + 1
    new = after.iloc[-1]
    assert (new["source"], new["author"], bool(new["latest"])) == ("drawn", "AppTest", True)
    saved = load_annotation(store, image_id)
    # reference: every pixel whose centre lies within the ring's outer edge (canvas px)
    x, y = pixel_centres_on_canvas(shape, fit, view)
    inside = np.hypot(x - 160.0, y - 300.0) <= 52.0
    dice = 2 * (saved & inside).sum() / (saved.sum() + inside.sum())
    assert dice > 0.98
    for v, mask in old.items():   # older versions never change
        np.testing.assert_array_equal(load_annotation(store, image_id, v), mask)
    assert at.selectbox(key=f"annotate_a_{image_id}_{len(after)}").value == new["version"]


def test_annotate_page_is_read_only_in_the_hosted_demo(demo_env, monkeypatch):
    monkeypatch.setenv("ILCSCOPE_MODE", "demo")
    at = open_page("pages/annotate.py")
    assert any("disabled in the hosted demo" in i.value for i in at.info)
    assert at.button(key="annotate_save").disabled


def test_saliency_page_shows_the_reports_numbers(demo_env):
    at = open_page("pages/saliency.py")
    model = at.selectbox(key="saliency_model").value
    compare = at.selectbox(key="saliency_compare").value
    assert (model, compare) == ("gmic-demo", "gmic-demo-ilc")   # the parent beside its child
    test_set = at.session_state["test_set"]
    report = saliency_report(open_store(demo_env, read_only=True), test_set=test_set,
                             model=model, compare=compare)
    frames = [d.value for d in at.dataframe]
    shown = next(f for f in frames if "hit_ci_low" in f and "histology" not in f)
    shown = shown.set_index("model")
    for column in ("n_images", "n_hits", "hit_rate", "mean_best_dice", "hit_ci_low"):
        assert shown.at[model, column] == pytest.approx(report.summary[model][column])
    per_image = next(f for f in frames if "best_threshold" in f)
    pd.testing.assert_frame_equal(per_image.reset_index(drop=True), report.per_image,
                                  check_dtype=False)
    at.segmented_control(key="saliency_which").set_value("benign").run()
    at.segmented_control(key="saliency_sort").set_value("hit").run()
    at.slider(key="saliency_threshold").set_value(0.5).run()
    assert not at.exception, [e.value for e in at.exception]


def add_child_model(path: Path, parent: str, child: str) -> None:
    """A second GMIC in the store: ``parent``'s saliency files with the malignant map squared
    and shifted one cell (another model's maps), registered as ``parent``'s fine-tuned child."""
    store = open_store(path)
    rows = store.select("predictions", model=parent, level="image")
    rows = rows[rows["saliency_path"].notna()].copy()
    for i, row in rows.iterrows():
        with np.load(store.files_dir / row["saliency_path"], allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["model"] = np.array(child)
        arrays["malignant"] = np.roll(arrays["malignant"].astype(np.float32) ** 2, 1,
                                      axis=1).astype(np.float16)
        rel = Path("saliency") / child / Path(row["saliency_path"]).name
        (store.files_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(store.files_dir / rel, **arrays)
        rows.at[i, "saliency_path"] = str(rel)
    rows["model"] = child
    models = pd.DataFrame([{"model": child, "kind": "gmic", "parent": parent,
                            "description": "test child", "synthetic": True}])
    with tempfile.TemporaryDirectory() as tmp:
        store.ingest(write_result(tmp, {"models": models, "predictions": rows}))


def test_saliency_page_sets_a_fine_tuned_child_beside_its_parent(writable_demo):
    parent = "gmic-demo"
    add_child_model(writable_demo, parent, "gmic-child")
    at = open_page("pages/saliency.py")
    assert at.selectbox(key="saliency_model").value == parent   # a parent comes first
    assert at.selectbox(key="saliency_compare").value == "gmic-child"   # the child, by default
    assert not at.exception, [(e.value, e.stack_trace[-4:]) for e in at.exception]
    captions = [c for image in at.get("image") for c in image.captions]
    assert any(c.startswith(f"{parent}: best Dice") for c in captions)
    assert any(c.startswith("gmic-child: best Dice") for c in captions)
    report = saliency_report(open_store(writable_demo, read_only=True),
                             test_set=at.session_state["test_set"], model=parent,
                             compare="gmic-child")
    paired = next(d.value for d in at.dataframe if "p_value" in d.value).set_index("test")
    for test in ("hit", "best_dice"):
        assert paired.at[test, "p_value"] == pytest.approx(report.paired[test]["p_value"],
                                                           nan_ok=True)
    assert report.per_image.groupby("model")["best_dice"].mean().nunique() == 2


def test_the_models_with_maps_come_from_the_family_registry():
    from ui.saliency import saliency_models

    models = pd.DataFrame({
        "model": ["ext", "nyu", "child", "heat", "glam", "parent", "single"],
        "kind": ["external", "nyu-image", "gmic", "nyu-image-heatmaps", "glam", "gmic",
                 "nyu-single-heatmaps"],
        "parent": [None, None, "parent", None, None, None, None]})
    # every family whose registry row leaves saliency, parents first, else the store's order
    assert saliency_models(models) == ["parent", "child", "heat", "glam", "single"]


def test_saliency_page_lists_a_glam_model_with_its_maps(writable_demo, tmp_path):
    import torch

    from models.families import FAMILIES
    from models.inference.predict_windows import predict_windows
    from models.networks.glam import build_glam

    torch.manual_seed(3)
    path = tmp_path / "glam-tiny.ckpt"
    torch.save(build_glam("tiny").state_dict(), path)
    test_set = "test-all"                                  # the sidebar's default test set
    predict_windows(open_store(writable_demo), fam=FAMILIES["glam"], checkpoint=path,
                    name="glam-tiny", test_set=test_set, config="tiny", device="cpu")
    at = open_page("pages/saliency.py")
    assert at.session_state["test_set"] == test_set
    box = at.selectbox(key="saliency_model")
    assert "glam-tiny" in box.options and "gmic-demo" in box.options
    box.set_value("glam-tiny").run()
    assert not at.exception, [(e.value, e.stack_trace[-4:]) for e in at.exception]
    captions = [c for image in at.get("image") for c in image.captions]
    assert any(c.startswith("glam-tiny: best Dice") and "patches on the tumour" in c
               for c in captions), captions
    report = saliency_report(open_store(writable_demo, read_only=True), test_set=test_set,
                             model="glam-tiny", compare=at.selectbox(key="saliency_compare").value)
    shown = next(d.value for d in at.dataframe if "hit_ci_low" in d.value
                 and "histology" not in d.value).set_index("model")
    assert shown.at["glam-tiny", "n_images"] == report.summary["glam-tiny"]["n_images"] > 0
    assert shown.at["glam-tiny", "mean_best_dice"] == pytest.approx(
        report.summary["glam-tiny"]["mean_best_dice"])
