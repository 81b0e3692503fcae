"""Nothing cut at 1400, 800 and 390 px (issue 29), in headless Chromium on the demo store:
every text of the complement charts (title, subtitle, axis titles, legend) lies inside its SVG
and the SVG inside its frame; every Reader study option shows its whole label, 'Fixed cases'
included. Screenshots go to artifacts/screenshots/layout_*.png."""
from __future__ import annotations

import json
import time

import pytest

from tests.conftest import copy_store
from tests.test_browser import ARTIFACTS, CHROMIUM, pytestmark, settle  # noqa: F401 (marks)

WIDTHS = (1400, 800, 390)

# each visible text of each chart, with how far (px) it sticks out of its SVG left and right;
# the SVG's own box against its frame (the element Streamlit sizes)
CHART_TEXTS = """() => [...document.querySelectorAll("[data-testid='stVegaLiteChart']")].map(c => {
  const frame = c.getBoundingClientRect(), svg = c.querySelector('svg.marks');
  if (!svg) return {renderer: 'not svg'};
  const box = svg.getBoundingClientRect();
  return {frame: [frame.left, frame.right], svg: [box.left, box.right],
          texts: [...svg.querySelectorAll('text')].filter(t => t.textContent.trim()).map(t => {
            const r = t.getBoundingClientRect();
            return {text: t.textContent, left: box.left - r.left, right: r.right - box.right}; })};
})"""

# each option of each segmented control: its label's full width against the width shown
OPTIONS = """() => [...document.querySelectorAll("[data-testid='stButtonGroup'] button")]
  .filter(b => b.innerText.trim()).map(b => {
    const r = b.getBoundingClientRect();
    return {text: b.innerText.trim(), scroll: b.scrollWidth, client: b.clientWidth,
            cut: [...b.querySelectorAll('*')].some(e => e.scrollWidth > e.clientWidth + 1),
            left: r.left, right: r.right, width: window.innerWidth}; })"""


@pytest.fixture(scope="module")
def layout_server(demo_store_path, tmp_path_factory):
    """`streamlit run` on a copy of the small demo store (no first-run build to wait for)."""
    from tests.test_browser import streamlit_server

    store = copy_store(demo_store_path, tmp_path_factory.mktemp("layout"))
    with streamlit_server(store, tmp_path_factory.mktemp("layout_log")) as url:
        yield url


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=["--no-sandbox", "--headless", "--disable-gpu"])
        yield b
        b.close()


def _open(chromium, url: str, width: int, ready: str):
    page = chromium.new_page(viewport={"width": width, "height": 1000})
    page.goto(url, timeout=120_000)
    page.wait_for_selector(ready, timeout=240_000)
    settle(page)
    time.sleep(1.5)          # Vega lays out after the element appears
    assert page.locator("[data-testid='stException']").count() == 0
    return page


@pytest.mark.parametrize("width", WIDTHS)
def test_complement_charts_keep_title_and_legend_inside(layout_server, chromium, width):
    page = _open(chromium, f"{layout_server}/complement", width,
                 "[data-testid='stVegaLiteChart'] svg.marks")
    charts = page.evaluate(CHART_TEXTS)
    chart = page.locator("[data-testid='stVegaLiteChart']").first
    chart.scroll_into_view_if_needed()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    chart.screenshot(path=str(ARTIFACTS / f"layout_complement_{width}.png"))
    page.close()
    assert len(charts) >= 2 and all("texts" in c for c in charts), charts
    texts = [t["text"] for c in charts for t in c["texts"]]
    for expected in ("Trade-off as the threshold moves", "89% specificity",
                     "Model scores by the radiologists' decision", "not flagged"):
        assert expected in texts, (expected, texts)
    for c in charts:
        assert c["svg"][0] >= c["frame"][0] - 0.5 and c["svg"][1] <= c["frame"][1] + 0.5, c
        cut = [t for t in c["texts"] if t["left"] > 0.5 or t["right"] > 0.5]
        assert not cut, (width, cut)


@pytest.mark.parametrize("width", WIDTHS)
def test_reader_study_options_show_their_whole_labels(layout_server, chromium, width):
    page = _open(chromium, f"{layout_server}/reader_study", width,
                 "[data-testid='stButtonGroup'] button")
    options = page.evaluate(OPTIONS)
    fixed = page.locator("[data-testid='stButtonGroup'] button", has_text="Fixed cases")
    fixed.scroll_into_view_if_needed()
    visible = fixed.is_visible()
    page.screenshot(path=str(ARTIFACTS / f"layout_reader_study_{width}.png"))
    page.close()
    labels = {o["text"] for o in options}
    assert {"Obuchowski-Rockette", "Dorfman-Berbaum-Metz", "bootstrap", "Fixed cases"} <= labels
    for o in options:
        assert o["scroll"] <= o["client"] and not o["cut"], (width, o)
        assert 0 <= o["left"] and o["right"] <= o["width"], (width, o)   # on screen, not scrolled
    assert visible


# every chart against the box it sits in: the drawn canvas/SVG no wider than its container
# (nothing left to scroll to inside the chart) and inside the window
CHART_WIDTHS = """() => [...document.querySelectorAll("[data-testid='stVegaLiteChart']")].map(c => {
  const drawn = c.querySelector('svg.marks, canvas.marks, canvas, svg');
  if (!drawn) return {drawn: null};
  const box = drawn.getBoundingClientRect(), holder = c.parentElement;
  return {title: (c.querySelector('svg.marks text') || {}).textContent || '',
          drawn: box.width, container: Math.min(c.clientWidth, holder.clientWidth),
          cut_texts: [...c.querySelectorAll('svg.marks text')].filter(t => t.textContent.trim())
            .filter(t => { const r = t.getBoundingClientRect();
                           return r.left < box.left - 1 || r.right > box.right + 1; })
            .map(t => t.textContent),
          right: box.right, window: window.innerWidth}; })"""

# every option of a segmented control or pills and every multiselect tag: no text cut
CUT_LABELS = """() => [...document.querySelectorAll(
    "[data-testid='stButtonGroup'] button, [data-testid='stMultiSelect'] [data-baseweb='tag']")]
  .filter(e => e.innerText.trim() && e.offsetParent !== null).map(e => ({
    text: e.innerText.trim(),
    cut: [e, ...e.querySelectorAll('*')].filter(x => x.scrollWidth > x.clientWidth + 1)
           .map(x => [x.tagName, x.scrollWidth, x.clientWidth])}))
  .filter(o => o.cut.length).concat([...document.querySelectorAll(
    "[data-testid='stMultiSelect'] [data-baseweb='tag']")].filter(t => {
      const box = t.closest("[data-baseweb='select']").getBoundingClientRect();
      const r = t.getBoundingClientRect(); return r.right > box.right + 1; })
    .map(t => ({text: t.innerText.trim(), cut: [['outside its box']]}))).concat([...document.querySelectorAll(
    "[data-testid='stButtonGroup'], [data-testid='stMultiSelect'] [data-baseweb='select'] > div")]
  .filter(g => g.offsetParent !== null && g.scrollWidth > g.clientWidth + 1)
  .map(g => ({text: g.innerText.trim().slice(0, 80), cut: [['group', g.scrollWidth, g.clientWidth]]})))"""

# page -> (url path, what shows when it is ready)
CHART_PAGES = {"finetune": "[data-testid='stVegaLiteChart']",
               "density": "[data-testid='stVegaLiteChart']",
               "benchmark": "[data-testid='stVegaLiteChart']",
               "filters": "[data-testid='stVegaLiteChart']",
               "reader_study": "[data-testid='stVegaLiteChart']",
               "": "[data-testid='stVegaLiteChart']"}     # the Overview


@pytest.mark.parametrize("width", WIDTHS)
def test_every_chart_and_option_fits_its_box(layout_server, chromium, width):
    """Issue 29 item 10: on each chart page, at each width, no chart wider than its container
    (a loss curve's validation panel, a forest plot's axis beyond 0.4) and no option, pill or
    multiselect tag ending in '...'. Screenshots: artifacts/screenshots/fit_PAGE_WIDTH.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    problems = {}
    for name, ready in CHART_PAGES.items():
        page = _open(chromium, f"{layout_server}/{name}", width, ready)
        time.sleep(1.0)        # the later charts of a long page
        charts, cut = page.evaluate(CHART_WIDTHS), page.evaluate(CUT_LABELS)
        tall = page.evaluate("() => document.querySelector(\"[data-testid='stMain']\")"
                             ".scrollHeight")
        page.set_viewport_size({"width": width, "height": min(int(tall), 9000)})  # whole page
        time.sleep(0.5)
        page.screenshot(path=str(ARTIFACTS / f"fit_{name or 'overview'}_{width}.png"))
        page.close()
        wide = [c for c in charts if c["drawn"] is None or c["drawn"] > c["container"] + 1
                or c["right"] > c["window"] + 1 or c["cut_texts"]]
        if wide or cut or not charts:
            problems[name or "overview"] = {"charts": len(charts), "too wide": wide, "cut": cut}
    assert not problems, json.dumps({"width": width, **problems}, indent=1)
