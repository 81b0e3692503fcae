"""User-supplied text (model, reader, dataset, study and test-set names, ids, file names,
descriptions) made safe for Streamlit's Markdown.

Why: `st.markdown`, `st.write`, `st.caption`, the alert boxes, headers, metric labels, widget
labels and the options of radios, pills and segmented controls all render Markdown, so a model
named ``![t](http://host/TRACK.png)`` was an image the browser fetched, and ``**x**`` bold.
Every name a page or a ``ui`` module puts into such text goes through `md_escape`; text that
`core` builds around names (a finding's sentence) is plain text, so it is escaped whole where it
is rendered. The HTML report escapes for HTML instead (``html.escape``).
"""
from __future__ import annotations

import re

__all__ = ["md_code", "md_escape"]

# CommonMark lets any ASCII punctuation be backslash-escaped. These start or end Markdown
# anywhere in a line: links and images, emphasis, code, HTML and entities, tables,
# strikethrough, headings; Streamlit's $ (LaTeX) and :directives:; ":" and "." also stop GFM's
# autolinks (http://host, www.host).
_ACTIVE = re.compile(r"([\\`*_\[\](){}<>|~!&$:#.])")
# These only open a block (list item, setext heading) at a line's start: a name is one line, so
# only its own first character can be there. Escaping them elsewhere would only make the
# Markdown source harder to read ("gmic-demo" stays as written).
_LINE_START = re.compile(r"^([-+=])")


def md_escape(text) -> str:
    """``text`` (``str()`` of anything, None as "") as Markdown that renders exactly as written.

    Markdown-active characters are backslash-escaped, and runs of white space (line breaks
    included) become one space, as HTML shows them anyway: a name is one line, and a break
    followed by four spaces or ``===`` would start a code block or a heading that no escape
    inside the line can stop.

    >>> md_escape("![t](http://h/T.png) **b**")
    '\\\\!\\\\[t\\\\]\\\\(http\\\\://h/T\\\\.png\\\\) \\\\*\\\\*b\\\\*\\\\*'
    """
    shown = " ".join(("" if text is None else str(text)).split())
    return _LINE_START.sub(r"\\\1", _ACTIVE.sub(r"\\\1", shown))


def md_code(text) -> str:
    """``text`` as one Markdown code span (a shell command, a path, a name shown as code).

    Nothing inside a code span is Markdown, so no escaping is needed; only a backtick could
    end it, so the fence is one backtick longer than the longest run inside (CommonMark), and
    padded with a space where the text starts or ends with one. Line breaks become spaces.
    """
    shown = " ".join(("" if text is None else str(text)).splitlines()) or " "
    runs = re.findall(r"`+", shown)
    fence = "`" * (max(map(len, runs), default=0) + 1)
    pad = " " if shown.startswith("`") or shown.endswith("`") else ""
    return f"{fence}{pad}{shown}{pad}{fence}"
