"""A real browser: `streamlit run` on a free port with a fresh store (first run builds the demo),
every page opened in headless Chromium, no exception element, no traceback; a screenshot each."""
from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PAGES = re.findall(r'(?:st\.Page|page)\("pages/([a-z_]+)\.py"', (REPO / "app.py").read_text())

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason="Debian's chromium is not installed (.ci/run installs it)")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(store: Path, log_dir: Path):
    """`streamlit run app.py` on a free port over ``store``; yields its URL once healthy."""
    port = free_port()
    env = {**os.environ, "ILCSCOPE_DB": str(store), "ILCSCOPE_MODE": ""}
    log = open(log_dir / "streamlit.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        log.seek(0)
        pytest.fail("streamlit did not start: " + log.read()[-2000:])
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = tmp_path_factory.mktemp("browser") / "ilcscope.duckdb"  # does not exist yet
    with streamlit_server(store, tmp_path_factory.mktemp("log")) as url:
        yield url, store


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"])
        yield b
        b.close()


def settle(page, timeout_s: float = 240) -> None:
    """Wait until Streamlit has finished running the script (no 'running' widget)."""
    page.wait_for_selector("[data-testid='stApp']", timeout=60_000)
    deadline = time.time() + timeout_s
    quiet = 0
    while time.time() < deadline:
        running = page.locator("[data-testid='stStatusWidget']").count()
        quiet = quiet + 1 if not running else 0
        if quiet >= 4:
            return
        time.sleep(0.5)
    raise AssertionError("page kept running")


def test_first_run_builds_demo_then_every_page_renders(server, browser):
    url, store = server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 2000})
    page.goto(url, timeout=120_000)
    # first run: the demo store is built behind a progress indicator, then the Overview shows
    page.wait_for_selector("[data-testid='stMetricLabel'] >> text=Exams", timeout=600_000)
    assert store.exists(), "first run did not build the demo store"
    settle(page)
    for name in PAGES:
        path = "" if name == "overview" else name
        page.goto(f"{url}/{path}", timeout=120_000)
        settle(page)
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        assert page.locator("[data-testid='stException']").count() == 0, name
        assert "Traceback" not in page.content(), name
    # a case id in the URL opens its exam in the Exam view (how other pages link to it)
    page.goto(f"{url}/exam?exam=demo%2FE00001%2FL-CC", timeout=120_000)
    settle(page)
    page.screenshot(path=str(ARTIFACTS / "exam_from_case_id.png"), full_page=True)
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.get_by_text("Exam demo/E00001").count() >= 1
    assert page.locator("[data-testid='stImage']").count() >= 4
    # the Fine-tuning page: the launcher, and the demo's own run (its loss curves, its child)
    page.goto(f"{url}/finetune", timeout=120_000)
    settle(page)
    page.wait_for_selector("text=Learning rates", timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "finetune_launcher.png"), full_page=True)
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.get_by_text("One run per rate: 1e-06").count() == 1
    assert page.get_by_text("No training runs in this store yet.").count() == 0
    assert page.get_by_text("Loss curves of").count() == 1
    assert page.locator("[data-testid='stVegaLiteChart']").count() >= 1
    page.close()


def test_annotate_draws_a_stroke_saves_it_and_lists_the_new_version(server, browser):
    """Chromium draws a closed ring with the mouse on the Annotate canvas; the filled preview
    shows, Save stores a new 'drawn' version, and the page lists it."""
    from core.store import open_store

    url, store = server
    page = browser.new_page(viewport={"width": 1400, "height": 2000})
    page.goto(f"{url}/annotate", timeout=600_000)
    page.wait_for_selector("text=Annotate tumours", timeout=600_000)   # first run: demo build
    settle(page)
    canvas = page.locator("canvas.upper-canvas").first   # Fabric's drawing layer (shadow DOM)
    canvas.wait_for(timeout=60_000)
    box = canvas.bounding_box()
    cx, cy, radius = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, 60
    page.mouse.move(cx + radius, cy)
    page.mouse.down()
    for i in range(1, 49):   # a little past a full turn: a closed ring
        angle = 2 * math.pi * i / 44
        page.mouse.move(cx + radius * math.cos(angle), cy + radius * math.sin(angle), steps=2)
    page.mouse.up()
    page.wait_for_selector("text=Segmentation: closed at step", timeout=120_000)
    settle(page)
    page.get_by_label("Author").fill("browser test")
    page.get_by_label("Author").press("Enter")
    settle(page)
    page.get_by_role("button", name="Save as new version").click()
    page.wait_for_selector("text=Saved version", timeout=120_000)
    settle(page)
    page.screenshot(path=str(ARTIFACTS / "annotate_saved.png"), full_page=True)
    assert page.locator("[data-testid='stException']").count() == 0
    drawn = open_store(store, read_only=True).select("annotations", source="drawn")
    assert len(drawn) == 1 and drawn["author"].iloc[0] == "browser test"
    assert drawn["version"].iloc[0] >= 2   # the imported mask stays version 1
    assert page.get_by_text(f"Version {int(drawn['version'].iloc[0])} (green)").count() == 1
    page.close()


def test_findings_report_draws_every_chart_offline(browser, story_store_path, tmp_path):
    """The shared HTML report (issue 20) opens with no network and draws each of its charts."""
    from core.reports.findings_html import findings_html
    from core.store import open_store

    html = findings_html(open_store(story_store_path, read_only=True))
    path = tmp_path / "report.html"
    path.write_text(html, encoding="utf-8")
    n_charts = html.count("class='chart'")
    assert n_charts >= 3                         # models, density, radiologists on the demo
    context = browser.new_context(offline=True)
    requests = []
    context.on("request", lambda r: requests.append(r.url))
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_function(
        f"document.querySelectorAll('.chart canvas, .chart svg').length >= {n_charts}",
        timeout=60_000)
    drawn = page.eval_on_selector_all(
        ".chart", "els => els.map(e => e.querySelector('canvas, svg') !== null)")
    assert drawn == [True] * n_charts and not errors
    assert [u for u in requests if not u.startswith("file:")] == []
    assert page.locator("p.finding").count() == 6
    context.close()


# every element that draws a metric's label, its value and its delta
_CUT_METRICS = """() => [...document.querySelectorAll(
    '[data-testid="stMetricLabel"] *, [data-testid="stMetricValue"] *, [data-testid="stMetricValue"]')]
    .filter(e => e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1)
    .map(e => e.textContent)"""


@pytest.mark.parametrize("name", ["complement", "overview", "benchmark"])
def test_at_800_px_the_sidebar_collapses_and_no_metric_label_is_cut(server, browser, name):
    url, _ = server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 800, "height": 3000})
    page.goto(f"{url}/{'' if name == 'overview' else name}", timeout=600_000)
    # on a fresh store: after the demo build (the module's first test may be this one)
    page.wait_for_selector("[data-testid='stMetricLabel']" if name != "benchmark" else "h1",
                           timeout=600_000)
    settle(page)
    page.wait_for_selector("[data-testid='stSidebar'][data-collapsed='true']", state="attached",
                           timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / f"{name}_800px.png"), full_page=True)
    labels = page.locator("[data-testid='stMetricLabel']")
    if name != "benchmark":
        assert labels.count() >= 4
    assert page.evaluate(_CUT_METRICS) == []
    # nothing wider than the window: no column, chart or button runs off the right edge
    assert page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollWidth"
                         " <= window.innerWidth")
    page.close()
