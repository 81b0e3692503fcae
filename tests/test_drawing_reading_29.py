"""Issue 29, drawing and reading: Algorithm 3's element sizes scaled by the image's pixel
spacing, the Annotate canvas sized to its column, the Exam view's outlines, maps and reader
scales, every control of Annotate, Exam and Saliency in the URL, and the three pages on a
dataset without readers, models, density or masks (mini-MIAS)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from core.annotations import STUDY_SPACING_MM, fill_drawing, study_sizes_px
from tests.test_browser import browser, server  # noqa: F401  (fixtures)
from core.errors import InputError
from ui.canvas import FALLBACK_COLUMN_PX, canvas_size

REPO = Path(__file__).resolve().parents[1]


def ring(shape, centre, radius, width) -> np.ndarray:
    """Pixels whose centres lie within width / 2 of a circle: a hand-drawn closed outline."""
    rows, cols = np.mgrid[:shape[0], :shape[1]] + 0.5
    d = np.hypot(rows - centre[0], cols - centre[1])
    return np.abs(d - radius) <= width / 2


# ------------------------------------------------------------------ Algorithm 3's sizes (8)

def test_study_sizes_scale_with_the_pixel_spacing_by_hand():
    assert STUDY_SPACING_MM == 0.07
    # 50 px * 0.07 mm = 3.5 mm = 17.5 px of 0.2 mm (mini-MIAS); 75 -> 26.25, 100 -> 35
    assert study_sizes_px(0.2) == pytest.approx((17.5, 26.25, 35.0))
    assert study_sizes_px(0.07) == pytest.approx((50, 75, 100))
    assert study_sizes_px(0.035) == pytest.approx((100, 150, 200))
    assert study_sizes_px(None) == (50.0, 75.0, 100.0)
    with pytest.raises(InputError, match="spacing_mm must be a positive number"):
        study_sizes_px(0)


def test_a_closed_ring_on_a_small_image_is_closed_not_its_hull():
    """A 6 mm ring on a 0.2 mm image (radius 15 px): the unscaled 50 px disk (radius 25)
    fills it at once, filling changes nothing and it was reported 'never closed'; the study's
    disk at this spacing (17.5 px, radius 8.75 < the 13.5 px hole) leaves the hole for the
    filling: closed at step 1."""
    drawing = ring((128, 128), (64, 64), 15, 3)
    unscaled = fill_drawing(drawing, sizes_px=(50, 75, 100))
    assert unscaled.hull_used and "convex hull" in unscaled.describe(0.2)
    out = fill_drawing(drawing, spacing_mm=0.2)
    assert (out.closed, out.hull_used, out.step) == (True, False, 1)
    assert out.size_px == pytest.approx(17.5) and out.sizes_px == pytest.approx((17.5, 26.25, 35))
    assert out.describe(0.2) == "closed at step 1 (17.5 px = 3.5 mm)"
    reference = ndi.binary_fill_holes(drawing)        # the ring and its inside
    assert out.mask[reference].all()
    assert abs(int(out.mask.sum()) - int(reference.sum())) <= 0.01 * reference.sum()
    # the same elements given by hand in mm or px give the same mask
    np.testing.assert_array_equal(
        fill_drawing(drawing, spacing_mm=0.2, sizes_mm=(3.5, 5.25, 7)).mask, out.mask)
    np.testing.assert_array_equal(
        fill_drawing(drawing, sizes_px=(17.5, 26.25, 35)).mask, out.mask)
    with pytest.raises(InputError, match="not both"):
        fill_drawing(drawing, sizes_px=(1, 2, 3), sizes_mm=(1, 2, 3), spacing_mm=0.2)


# ------------------------------------------------------------------ the canvas's size (8)

@pytest.mark.parametrize("column, natural, expected", [
    (454, (1024, 1024), (448, 448)),      # 1400 px window, two columns: never wider
    (700, (512, 320), (688, 1101)),       # 800 px window, columns stacked
    (358, (1280, 832), (352, 542)),       # 390 px phone
    (1600, (100, 200), (896, 448)),         # capped at MAX_CANVAS_PX, snapped to 16
    (None, (512, 320), (FALLBACK_COLUMN_PX, 512)),
])
def test_canvas_fits_its_column_at_the_pictures_aspect(column, natural, expected):
    width, height = canvas_size(column, natural)
    assert (width, height) == expected
    assert width <= (column or FALLBACK_COLUMN_PX) and width % 16 == 0
    assert height == round(width * natural[0] / natural[1])


def test_a_column_too_narrow_to_draw_in_is_refused():
    with pytest.raises(InputError, match="widen the window"):
        canvas_size(10, (100, 100))


# ------------------------------------------------------------------ the Exam view (9)

from streamlit.testing.v1 import AppTest  # noqa: E402

from core.importers.mias import import_mias  # noqa: E402
from core.reports.exam import (exam_images, exam_overlays, exam_report,  # noqa: E402
                               score_scale)
from core.saliency import read_saliency  # noqa: E402
from core.store import open_store  # noqa: E402


def brute_block(img: np.ndarray, f: int) -> np.ndarray:
    """Block means by loops: the reference for the tiles' downscaling."""
    h, w = img.shape[0] // f, img.shape[1] // f
    out = np.empty((h, w))
    for r in range(h):
        for c in range(w):
            out[r, c] = img[r * f:(r + 1) * f, c * f:(c + 1) * f].astype(float).mean()
    return out


def annotated_exam(store, model="gmic-demo"):
    """An exam of the demo with a stored outline and the model's map on the same image."""
    notes = store.select("annotations")
    maps = store.select("predictions", model=model, level="image")
    maps = maps[maps["saliency_path"].notna()]
    image_id = sorted(set(notes["image_id"]) & set(maps["image_id"]))[0]
    return store.image(image_id)["exam_id"], image_id


def test_score_scale_by_hand():
    assert score_scale([0.2, 0.9, None]) == "0-1"
    assert score_scale([1, 3, 5]) == "1-5"
    assert score_scale([0, 2, 6]) == "0-6"
    assert score_scale([3.5, 73.2, 99.0]) == "0-100"
    assert score_scale([-2, 250]) == "-2-250"
    assert score_scale([None, np.nan]) == "decisions only"


def test_overlays_lie_on_the_tiles_as_the_pixels_do(demo_store_path):
    store = open_store(demo_store_path, read_only=True)
    exam_id, image_id = annotated_exam(store)
    tiles = exam_images(store, exam_id)
    geometry = [None if t is None else (t.factor, t.flipped, t.pixels.shape) for t in tiles]
    overlays = exam_overlays(store, exam_id, geometry, models=["gmic-demo"])
    position = exam_report(store, exam_id).tiles["image_id"].tolist().index(image_id)
    tile, overlay = tiles[position], overlays[position]
    versions = store.annotations(image_id)
    mask = store.load_mask(versions["mask_path"].iat[-1])
    reference = brute_block(mask, tile.factor) >= 0.5
    reference = reference[:, ::-1] if tile.flipped else reference
    np.testing.assert_array_equal(overlay.outline, reference)
    assert overlay.outline_version == int(versions["version"].iat[-1])
    entry = store.select("predictions", model="gmic-demo", level="image", image_id=image_id)
    full = read_saliency(store.files_dir / entry["saliency_path"].iat[0]).to_original()
    heat = brute_block(full, tile.factor)
    heat = heat[:, ::-1] if tile.flipped else heat
    np.testing.assert_allclose(overlay.maps["gmic-demo"], np.clip(heat, 0, 1), atol=1e-5)
    # the outline sits on the tissue the same way the pixels do: bright pixels under it
    assert tile.pixels[overlay.outline].mean() > tile.pixels.mean()


def open_page(page: str, params: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    at.run()
    for key, value in (params or {}).items():
        at.query_params[key] = value
    at.switch_page(page)
    at.run()
    assert not at.exception, [(e.value, e.stack_trace[-4:]) for e in at.exception]
    return at


def test_exam_view_draws_outline_and_map_and_names_reader_scales(demo_env):
    store = open_store(demo_env, read_only=True)
    exam_id, image_id = annotated_exam(store)
    at = open_page("pages/exam.py", {"exam": exam_id, "exam_map": "gmic-demo"})
    assert at.toggle(key="exam_outline").value is True
    assert at.get("pills")[0].value == "gmic-demo"
    captions = " ".join(c.value for c in at.caption)
    assert "annotation v" in captions and "gmic-demo's malignant map" in captions
    text = " ".join(m.value for m in at.markdown)
    assert "on 0-100" in text          # the demo's readers score 0..100
    assert len(at.get("image")) == 4
    at.toggle(key="exam_outline").set_value(False).run()
    assert not at.exception
    assert "annotation v" not in " ".join(c.value for c in at.caption)


# ------------------------------------------------------------------ every control in the URL (4)

def test_annotate_controls_open_from_the_url(demo_env):
    at = open_page("pages/annotate.py")
    label = at.selectbox(key="annotate_image").options[1]   # a bound selectbox's URL: its label
    image_id = label.split(" · ")[0]
    params = {"annotate_cancers": "false", "annotate_image": label, "annotate_zoom": "2",
              "annotate_across": "30", "annotate_down": "70", "annotate_tool": "Polygon",
              "annotate_stroke": "7", "annotate_custom_sizes": "true",
              "annotate_size_mm_0": "4", "annotate_author": "Dr A", "annotate_note": "URL"}
    at = open_page("pages/annotate.py", params)
    assert at.toggle(key="annotate_cancers").value is False
    assert at.selectbox(key="annotate_image").value == image_id
    assert at.select_slider(key="annotate_zoom").value == 2
    assert (at.slider(key="annotate_across").value, at.slider(key="annotate_down").value) == (30, 70)
    assert at.segmented_control(key="annotate_tool").value == "Polygon"
    assert at.slider(key="annotate_stroke").value == 7
    assert at.toggle(key="annotate_custom_sizes").value is True
    assert at.number_input(key="annotate_size_mm_0").value == 4
    assert at.text_input(key="annotate_author").value == "Dr A"
    assert at.text_input(key="annotate_note").value == "URL"


def test_exam_controls_open_from_the_url(demo_env):
    store = open_store(demo_env, read_only=True)
    exam_id, _ = annotated_exam(store)
    at = open_page("pages/exam.py", {"exam": exam_id, "exam_models": "gmic-demo",
                                     "exam_outline": "false", "exam_map": "gmic-demo",
                                     "exam_model_input": "true"})
    assert at.text_input(key="exam").value == exam_id
    assert at.multiselect(key="exam_models").value == ["gmic-demo"]
    assert at.toggle(key="exam_outline").value is False
    assert at.get("pills")[0].value == "gmic-demo"
    assert at.toggle(key="exam_model_input").value is True
    assert at.selectbox(key="exam_input_model").value is not None


def test_saliency_controls_open_from_the_url(demo_env):
    at = open_page("pages/saliency.py")
    label = at.selectbox(key="saliency_image").options[-1]
    image_id = label.split(" · ")[0]
    params = {"saliency_compare": "—", "saliency_which": "benign", "saliency_image": label,
              "saliency_opacity": "0.3", "saliency_threshold": "0.2", "saliency_sort": "Hits, then misses",
              "saliency_page": "1", "saliency_version": "1"}
    at = open_page("pages/saliency.py", params)
    assert at.selectbox(key="saliency_compare").value is None
    assert at.segmented_control(key="saliency_which").value == "benign"
    assert at.selectbox(key="saliency_image").value == image_id
    assert at.slider(key="saliency_opacity").value == pytest.approx(0.3)
    assert at.slider(key="saliency_threshold").value == pytest.approx(0.2)
    assert at.segmented_control(key="saliency_sort").value == "hit"
    assert at.number_input(key="saliency_version").value == 1


# ------------------------------------------------------------------ a dataset with less (5)

@pytest.fixture(scope="module")
def mias_path(shared_dir, tmp_path_factory):
    """mini-MIAS mdb003, 004 (normal: no outline), 023 (a cancer, Info.txt's circle as its
    outline), 024: no readers, no models."""
    import shutil

    mias = shared_dir / "data" / "mias"
    folder = tmp_path_factory.mktemp("mias29")
    names = ("mdb003", "mdb004", "mdb023", "mdb024")
    lines = (mias / "Info.txt").read_text().splitlines()
    (folder / "Info.txt").write_text("\n".join(ln for ln in lines if ln[:6] in names) + "\n")
    for n in names:
        shutil.copy(mias / f"{n}.png", folder)
    path = tmp_path_factory.mktemp("mias29store") / "s.duckdb"
    store = open_store(path)
    import_mias(store, folder)
    store.checkpoint()
    return path


@pytest.fixture
def mias_env(mias_path, monkeypatch):
    monkeypatch.setenv("ILCSCOPE_DB", str(mias_path))
    monkeypatch.delenv("ILCSCOPE_MODE", raising=False)
    return mias_path


def test_annotate_on_mias_scales_the_study_sizes(mias_env):
    at = open_page("pages/annotate.py")
    assert at.selectbox(key="annotate_image").value == "mias/mdb023"   # the one cancer
    captions = " ".join(c.value for c in at.caption)
    assert "0.2 mm pixels: 17.5, 26.25, 35 px" in captions
    assert len(at.dataframe) == 1          # Info.txt's circle, imported as version 1
    at = open_page("pages/annotate.py", {"annotate_cancers": "false",
                                         "annotate_image": "mias/mdb003 · none · L-MLO"})
    assert at.selectbox(key="annotate_image").value == "mias/mdb003"
    assert any("No saved version of this image" in i.value for i in at.info)


def test_exam_on_mias_says_what_is_missing(mias_env):
    at = open_page("pages/exam.py", {"exam": "mias/mdb003"})   # a normal exam: no outline
    assert len(at.get("image")) == 4
    captions = " ".join(c.value for c in at.caption)
    assert "No reader has read this exam" in captions
    assert "No model has scored this exam" in captions
    assert "No model has a saliency map on this exam" in captions
    assert "No outline is stored for this exam" in captions
    assert "No R-CC image" in captions
    at = open_page("pages/exam.py", {"exam": "mias/mdb023"})   # Info.txt's circle is drawn
    assert "outline: annotation v1 (green)" in " ".join(c.value for c in at.caption)


def test_saliency_on_mias_says_there_is_no_model(mias_env):
    at = open_page("pages/saliency.py")
    assert any("No model that leaves saliency maps" in i.value for i in at.info)


# ------------------------------------------------------------------ the canvas in a browser (8)

_CANVAS_IN_COLUMN = """() => {
  const host = [...document.querySelectorAll('*')].find(
    e => e.shadowRoot && e.shadowRoot.querySelector('canvas.upper-canvas'));
  const canvas = host.shadowRoot.querySelector('canvas.upper-canvas').getBoundingClientRect();
  const column = host.closest('[data-testid="stColumn"]').getBoundingClientRect();
  return {canvas: [canvas.left, canvas.right], column: [column.left, column.right],
          window: window.innerWidth};
}"""


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("window", [1400, 800, 390])
def test_the_canvas_fits_its_column_and_its_right_edge_takes_strokes(server, browser, window):
    """At 1400, 800 and 390 px the canvas's right edge lies within its column, and a ring drawn
    by the mouse at that edge (an R view's chest wall) is filled (the stroke map is exact)."""
    import math

    from tests.test_browser import ARTIFACTS, settle

    url, _ = server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": window, "height": 1800})
    page.goto(f"{url}/annotate", timeout=600_000)
    page.wait_for_selector("text=Annotate tumours", timeout=600_000)   # first run: demo build
    settle(page)
    canvas = page.locator("canvas.upper-canvas").first
    canvas.wait_for(timeout=60_000)
    settle(page)   # the column's width came back: the canvas was resized once
    where = page.evaluate(_CANVAS_IN_COLUMN)
    (c_left, c_right), (k_left, k_right) = where["canvas"], where["column"]
    assert k_left - 0.5 <= c_left and c_right <= k_right + 0.5, where
    assert c_right - c_left >= (k_right - k_left) - 16.5, where     # it uses the column
    box = page.locator("canvas.upper-canvas").first.bounding_box()
    cx, cy, radius = box["x"] + box["width"] - 40, box["y"] + box["height"] / 2, 25
    page.mouse.move(cx + radius, cy)
    page.mouse.down()
    for i in range(1, 49):   # a little past a full turn: a closed ring at the right edge
        angle = 2 * math.pi * i / 44
        page.mouse.move(cx + radius * math.cos(angle), cy + radius * math.sin(angle), steps=2)
    page.mouse.up()
    page.wait_for_selector("text=Segmentation: closed at step", timeout=120_000)
    settle(page)
    page.screenshot(path=str(ARTIFACTS / f"annotate_canvas_{window}.png"), full_page=True)
    assert page.locator("[data-testid='stException']").count() == 0
    page.close()


_BACKGROUND = """() => getComputedStyle(document.querySelector('[data-testid="stApp"]'))
    .backgroundColor"""


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["dark", "light"])
def test_the_app_follows_the_browsers_theme_and_the_exam_view_draws_overlays(server, browser,
                                                                             scheme):
    """A dark browser gets the dark theme (reading rooms), a light one the light theme; the
    settings menu that switches it is there; the Exam view with the outline and a map shows."""
    import re

    from tests.test_browser import ARTIFACTS, settle

    url, store = server
    page = browser.new_page(viewport={"width": 1400, "height": 2200}, color_scheme=scheme)
    page.goto(f"{url}/exam", timeout=600_000)
    page.wait_for_selector("text=Exam", timeout=600_000)
    settle(page)
    exam_id, _ = annotated_exam(open_store(store, read_only=True))
    page.goto(f"{url}/exam?exam={exam_id}&exam_map=gmic-demo", timeout=120_000)
    settle(page)
    page.wait_for_selector("text=gmic-demo's malignant map", timeout=120_000)
    rgb = [int(v) for v in re.findall(r"\d+", page.evaluate(_BACKGROUND))[:3]]
    assert (sum(rgb) / 3 < 60) if scheme == "dark" else (sum(rgb) / 3 > 200), rgb
    assert page.locator("[data-testid='stMainMenu']").count() == 1   # settings: theme switch
    page.screenshot(path=str(ARTIFACTS / f"exam_overlays_{scheme}.png"), full_page=True)
    assert page.locator("[data-testid='stException']").count() == 0
    page.close()
