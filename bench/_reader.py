"""A reader in its own process: opens the store read-only in a loop and times each read.

``python -m bench._reader STORE STOP_FILE BUSY_S`` prints ``ready`` after its first read, then
reads (``open_store(read_only=True).counts()``, what ``info`` does) every 20 ms until STOP_FILE
exists, and prints one JSON line: ``waits`` (s per successful read, the wait for the lock
included) and ``failures`` (`StoreBusy` messages: reads that waited BUSY_S and gave up). Used by
bench/import_lock.py and tests/test_import_atomicity.py.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from core.errors import StoreBusy
from core.store import open_store

PAUSE_S = 0.02  # between reads, like a page's queries: leaves the writer room to take the lock


def main(path: Path, stop: Path, busy_s: float) -> None:
    waits, failures = [], []
    while not stop.exists():
        start = time.perf_counter()
        try:
            open_store(path, read_only=True, busy_timeout_s=busy_s).counts()
            waits.append(time.perf_counter() - start)
            if len(waits) == 1:
                print("ready", flush=True)
        except StoreBusy as exc:
            failures.append(str(exc).splitlines()[0][:120])
        time.sleep(PAUSE_S)
    print(json.dumps({"waits": waits, "failures": failures}), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]))
