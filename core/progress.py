"""Progress reporting shared by the CLI (tqdm on stderr) and the pages (st.progress).

Long functions in core/ and models/ take ``progress: ProgressFn | None`` and call
``progress(done, total, message)``; they never print.
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

ProgressFn = Callable[[int, int, str], None]


def report(progress: ProgressFn | None, done: int, total: int, message: str = "") -> None:
    """Call ``progress`` if given (keeps the ``if progress`` out of every loop)."""
    if progress is not None:
        progress(done, total, message)


@contextlib.contextmanager
def tqdm_progress(desc: str, *, disable: bool = False) -> Iterator[ProgressFn]:
    """A ProgressFn drawing a tqdm bar on stderr (stdout stays clean for ``--json``).

    The bar appears at the first update, so input that fails validation prints its one-line
    error alone, with no empty bar before it.
    """
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int, message: str = "") -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(desc=desc, total=total, file=sys.stderr, disable=disable,
                       dynamic_ncols=True, leave=False)
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
