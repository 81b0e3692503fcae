"""core.progress.tqdm_progress off a terminal (a file, a CI log): a line per 10 % of the work,
checked against an integer count of the tenths each update crosses; on a terminal (a real
pseudo-terminal) the bar still redraws in place."""
from __future__ import annotations

import fcntl
import io
import os
import re
import select
import struct
import termios

from hypothesis import given, settings
from hypothesis import strategies as st

from core.progress import tqdm_progress

LINE = re.compile(r"^demo: +(\d+)%\| (\d+)/(\d+) \[")


def _tenths_crossed(updates: list[int], total: int) -> list[int]:
    """Reference: the updates that reach a tenth of ``total`` not reached before (the first
    update always: 0 %), in exact integer arithmetic."""
    shown, best = [], -1
    for done in updates:
        tenth = min(10 * done // total, 10)
        if tenth > best:
            best = tenth
            shown.append(done)
    return shown


def _run(updates, total, stream):
    with tqdm_progress("demo", file=stream) as progress:
        for done in updates:
            progress(done, total, f"item {done}")


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5000).flatmap(lambda total: st.tuples(
    st.just(total), st.lists(st.integers(0, total), min_size=1, max_size=300).map(sorted))))
def test_a_line_per_tenth_off_a_terminal(case):
    total, updates = case
    stream = io.StringIO()
    _run(updates, total, stream)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) <= 11
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [int(m[2]) for m in parsed] == _tenths_crossed(updates, total)
    assert all(int(m[3]) == total and abs(int(m[1]) - 100 * int(m[2]) / total) <= 0.5
               for m in parsed)
    assert all(line.endswith(f", item {m[2]}]") for line, m in zip(lines, parsed))


def test_a_long_job_to_a_file_writes_eleven_lines(tmp_path):
    """What a demo build's log got: a redraw per update (~800 lines); now 0 %, 10 %, ... 100 %."""
    log = tmp_path / "build.log"
    with open(log, "w") as stream:
        _run(range(10_001), 10_000, stream)
    lines = log.read_text().splitlines()
    assert [int(LINE.match(line)[1]) for line in lines] == list(range(0, 101, 10))


def test_nothing_before_the_first_update_nor_when_disabled():
    stream = io.StringIO()
    with tqdm_progress("demo", file=stream):
        pass
    with tqdm_progress("demo", file=stream, disable=True) as progress:
        progress(5, 10, "x")
    assert stream.getvalue() == ""


def test_a_terminal_still_gets_a_bar_redrawn_in_place():
    main, replica = os.openpty()     # a real terminal: isatty() is true on its replica side
    fcntl.ioctl(replica, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    try:
        with open(replica, "w", closefd=False) as stream:
            assert stream.isatty()
            _run(range(11), 10, stream)
        written = b""
        while select.select([main], [], [], 0.5)[0]:
            written += os.read(main, 65536)
    finally:
        os.close(main)
        os.close(replica)
    text = written.decode()
    assert text.count("\r") >= 11 and "100%|" in text and text.count("\n") <= 1  # in place
