"""Progress reporting shared by the CLI (tqdm on stderr) and the pages (st.progress).

Long functions in core/ and models/ take ``progress: ProgressFn | None`` and call
``progress(done, total, message)``; they never print.
"""
from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

ProgressFn = Callable[[int, int, str], None]

LINE_STEP = 0.1   # off a terminal, one line per this fraction of the work
# tqdm's own fields, one line each: the "%|" marks a progress line as a bar's segment does
LINE_FORMAT = ("{desc}: {percentage:3.0f}%| {n_fmt}/{total_fmt} "
               "[{elapsed}<{remaining}, {rate_fmt}{postfix}]")


def report(progress: ProgressFn | None, done: int, total: int, message: str = "") -> None:
    """Call ``progress`` if given (keeps the ``if progress`` out of every loop)."""
    if progress is not None:
        progress(done, total, message)


@contextlib.contextmanager
def tqdm_progress(desc: str, *, disable: bool = False,
                  file: TextIO | None = None) -> Iterator[ProgressFn]:
    """A ProgressFn drawing a tqdm bar on stderr (or ``file``; stdout stays clean for ``--json``).

    The bar appears at the first update, so input that fails validation prints its one-line
    error alone, with no empty bar before it. Off a terminal (a file, a CI log) the stream gets
    a line at 0 % and each further 10 % instead (`LINE_STEP`), at most 11 per bar: a bar's
    carriage-return redraws there are a line each (a demo build wrote ~800).
    """
    stream = sys.stderr if file is None else file
    if disable:
        yield lambda done, total, message="": None
    elif not _is_terminal(stream):
        yield _lines(desc, stream)
    else:
        with _bar(desc, stream) as update:
            yield update


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:   # a closed stream
        return False


@contextlib.contextmanager
def _bar(desc: str, stream: TextIO) -> Iterator[ProgressFn]:
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int, message: str = "") -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(desc=desc, total=total, file=stream, dynamic_ncols=True, leave=False)
        if bar.total != total:
            bar.total = total
        bar.n = done
        if message:
            bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


def _lines(desc: str, stream: TextIO) -> ProgressFn:
    """A ProgressFn writing a line (tqdm's fields: percent, counts, elapsed, ETA, rate, message)
    each time the work crosses the next `LINE_STEP`; the rest print nothing."""
    from tqdm import tqdm

    start, first = None, 0   # the clock and the count at the first update: rates from there
    printed = -1             # steps printed so far; -1: none yet

    def update(done: int, total: int, message: str = "") -> None:
        nonlocal start, first, printed
        if start is None:
            start, first = time.monotonic(), done
        if total <= 0:
            return
        step = int(min(done / total, 1.0) / LINE_STEP + 1e-9)
        if step <= printed:
            return
        printed = step
        line = tqdm.format_meter(min(done, total), total, time.monotonic() - start, prefix=desc,
                                 postfix=message or None, bar_format=LINE_FORMAT, initial=first)
        stream.write(line + "\n")
        stream.flush()

    return update
