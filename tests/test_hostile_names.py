"""Hostile names (issue 31, item 11): a model, reader, study, test set or dataset named
``![t](http://127.0.0.1:9/TRACK.png)`` was an image on the Exam view and the Overview (the
browser fetched it), and ``**bold**`` bold. Every page is run on a store holding such names,
and every piece of text Streamlit renders as Markdown is rendered here by an independent
CommonMark renderer (markdown-it-py): no image, no link to the host, no bold, no HTML."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.importers.common import frame
from core.importers.reader_study import import_reader_study
from core.importers.tables import import_predictions, import_readers
from core.store import open_store
from tests.conftest import copy_store
from ui.text import md_escape

markdown_it = pytest.importorskip("markdown_it")

REPO = Path(__file__).resolve().parents[1]
IMAGE = "![t](http://127.0.0.1:9/TRACK.png)"
BOLD = "**bold** <img src=x> `tick` _it_"
STUDY = "hostile-study"   # study and dataset names are letters, digits, '.', '_', '-' only
PAGES = ["pages/overview.py", "pages/exam.py", "pages/benchmark.py", "pages/complement.py",
         "pages/reader_study.py", "pages/density.py", "pages/saliency.py", "pages/filters.py",
         "pages/annotate.py", "pages/finetune.py", "pages/import_data.py"]
_MD = markdown_it.MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


def rendered(text: str) -> str:
    return _MD.render(text)


def hostile(html: str) -> list[str]:
    """What a hostile name made of the Markdown: an image, a link to its host, bold, HTML."""
    found = []
    if "<img" in html:
        found.append("image")
    if re.search(r'(href|src)="https?://127\.0\.0\.1', html):
        found.append("link to the host")
    if "<strong>bold</strong>" in html or "<em>it</em>" in html:
        found.append("emphasis")
    return found


# ---------------------------------------------------------------------------- md_escape
@pytest.mark.parametrize("text", [
    IMAGE, BOLD, "# heading", "- item", "+ item", "1. item", "> quote", "a | b | c",
    "~~strike~~", "<script>x</script>", "&amp; &copy;", "[x]: http://h/", "a\\*b\\", "$x^2$",
    "line\n    code", "x\n===", "=== x", "--- x", "* item", "1) x", "  - x",
    "http://127.0.0.1:9/x www.example.org", "`a``b`", "",
])
def test_md_escape_renders_as_the_plain_text(text):
    """CommonMark renders the escaped text as one paragraph holding exactly the text (HTML-
    escaped, line breaks as spaces): nothing the text held became Markdown."""
    import html

    out = rendered(md_escape(text))
    plain = " ".join(text.split())   # white space runs render as one space anyway
    assert out == (f"<p>{html.escape(plain, quote=False)}</p>\n" if plain else "")


def test_md_escape_by_hand():
    assert md_escape(IMAGE) == r"\!\[t\]\(http\://127\.0\.0\.1\:9/TRACK\.png\)"
    assert md_escape("**b** <i>") == r"\*\*b\*\* \<i\>"
    assert md_escape("a\nb\r\n  c") == "a b c"
    assert md_escape(None) == "" and md_escape(3.5) == r"3\.5"
    assert md_escape("plain name 42") == "plain name 42"
    assert md_escape("gmic-demo") == "gmic-demo" and md_escape("- x") == r"\- x"   # start only
    assert md_escape("+1") == r"\+1" and md_escape("  ==") == r"\=="


# ---------------------------------------------------------------------------- the store
@pytest.fixture(scope="module")
def hostile_store(demo_store_path, tmp_path_factory) -> Path:
    """The demo store plus a model, a reader, a reader study (its readers and description)
    and a test set under each hostile name, and a dataset row named like the image (the
    importers refuse such a dataset or study name; an older store may hold one)."""
    folder = tmp_path_factory.mktemp("hostile")
    path = copy_store(demo_store_path, folder)
    store = open_store(path)
    preds = store.select("predictions", model="gmic-demo", level="image")
    table = pd.concat([preds.assign(model=name) for name in (IMAGE, BOLD)])
    table[["image_id", "model", "malignant"]].rename(columns={"malignant": "score"}).to_csv(
        folder / "p.csv", index=False)
    import_predictions(store, folder / "p.csv", format="long", level="image")
    reads = store.select("reads", level="exam")
    first = reads[reads["reader"] == reads["reader"].iloc[0]]
    pd.concat([first.assign(reader=name) for name in (IMAGE, BOLD)])[
        ["exam_id", "reader", "recall"]].assign(recall=lambda d: d["recall"].astype(int)).to_csv(
        folder / "r.csv", index=False)
    import_readers(store, folder / "r.csv", format="long", level="exam")
    study = store.select("study_reads")
    readers = {r: (IMAGE if i % 2 else BOLD) + f" {i}" for i, r in
               enumerate(sorted(study["reader"].unique()))}
    study.assign(reader=study["reader"].map(readers)).drop(columns="study").to_csv(
        folder / "s.csv", index=False)
    level = store.select("reader_studies")["level"].iloc[0]
    import_reader_study(store, folder / "s.csv", study=STUDY, level=level,   # names: checked
                        description=f"{BOLD} {IMAGE}",
                        case_column="case_id", reader_column="reader",
                        modality_column="modality", rating_column="rating")
    store.create_testsets({IMAGE: "dataset=demo split=test",
                           BOLD.replace(" ", ""): "dataset=demo split=test"})   # no spaces
    store.write_tables({"datasets": frame("datasets", [{"dataset": IMAGE, "kind": "png",
                                                        "notes": BOLD}])})
    store.checkpoint()
    return path


def markdown_texts(at: AppTest) -> list[tuple[str, str]]:
    """(where, text) for everything on the page that Streamlit renders as Markdown: bodies of
    text elements and alerts, labels and help of widgets and metrics, the options of radios,
    pills and segmented controls, expander and tab labels, toasts."""
    out = []

    def visit(node):
        proto = getattr(node, "proto", None)
        kind = getattr(node, "type", type(node).__name__)
        if proto is not None:
            for name in ("body", "label", "help", "caption", "placeholder"):
                value = getattr(proto, name, None)
                if isinstance(value, str) and value and not (kind == "metric" and name == "body"):
                    out.append((f"{kind}.{name}", value))
            if kind == "radio":
                out.extend(("radio.option", o) for o in proto.options)
            if kind == "button_group":
                out.extend(("button_group.option", o.content) for o in proto.options)
            for block in ("expandable", "tab", "popover"):   # a Block's label, if it is one
                if _has(proto, block) and proto.HasField(block):
                    out.append((block, getattr(proto, block).label))
        for child in getattr(node, "children", {}).values():
            visit(child)

    visit(at._tree)
    return out


def _has(proto, field: str) -> bool:
    return field in {f.name for f in proto.DESCRIPTOR.fields}


def _open(page: str, params: dict) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    at.switch_page(page)
    at.run()
    assert not at.exception, [(e.value, e.stack_trace[-4:]) for e in at.exception]
    return at


@pytest.mark.parametrize("page", PAGES)
def test_no_page_renders_a_hostile_name_as_markdown(hostile_store, monkeypatch, page):
    monkeypatch.setenv("ILCSCOPE_DB", str(hostile_store))
    monkeypatch.delenv("ILCSCOPE_MODE", raising=False)
    store = open_store(hostile_store, read_only=True)
    exam_id = store.select("predictions", model=IMAGE)["exam_id"].iloc[0]
    params = {"test_set": IMAGE, "overview_model": IMAGE, "exam": exam_id,
              "bench_models": [IMAGE, BOLD, "gmic-demo"], "complement_model": IMAGE,
              "complement_reader": IMAGE, "complement_level": "exam", "mrmc_study": STUDY,
              "density_models": [IMAGE, BOLD], "mrmc_model": IMAGE}
    at = _open(page, params)
    texts = markdown_texts(at)
    shown = " ".join(t for _, t in texts)
    bad = [(where, text, found) for where, text in texts if (found := hostile(rendered(text)))]
    assert not bad, bad
    if page in ("pages/overview.py", "pages/exam.py"):   # the names are there, escaped
        assert md_escape(IMAGE) in shown
