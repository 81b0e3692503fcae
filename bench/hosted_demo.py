"""The hosted demo measured (issue 20): cold start and resident memory after every page.

In ``ILCSCOPE_MODE=demo`` on an empty store path, AppTest runs ``app.py`` (the first-run build:
render the demo, score its models), which ends on the Overview with its findings: the cold
start. It then opens every page in the navigation and reads the process's resident memory
(VmRSS now, and its peak). Beside them: the demo build alone (`build_demo`) and the findings
alone on the built store, the parts a cold start is made of, and the Overview's warm load
(a second session, cached results). Targets: cold start < 60 s, memory < 1 GB on 2 cores.

    python bench/hosted_demo.py
"""
from __future__ import annotations

import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]


def _rss_mb() -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024


def main() -> None:
    from streamlit.testing.v1 import AppTest

    from bench._timing import best_of_with_cpu
    from core.demo.build import build_demo
    from core.reports.findings import findings
    from core.store import open_store

    pages = re.findall(r'(?:st\.Page|page)\("(pages/[a-z_]+\.py)"', (REPO / "app.py").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(ILCSCOPE_MODE="demo", ILCSCOPE_DB=str(Path(tmp) / "ilcscope.duckdb"))
        t0, c0 = time.perf_counter(), time.process_time()
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
        at.run()
        cold_s, cold_cpu = time.perf_counter() - t0, time.process_time() - c0
        assert not at.exception, [e.value for e in at.exception]
        assert any(s.value == "Findings" for s in at.subheader), "no findings on the Overview"
        for page in pages:
            at.switch_page(page)
            at.run()
            assert not at.exception, (page, [e.value for e in at.exception])
        rss, peak = _rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        store = open_store(os.environ["ILCSCOPE_DB"], read_only=True)
        f_wall, f_cpu, _ = best_of_with_cpu(lambda: findings(store))
        t0 = time.perf_counter()
        AppTest.from_file(str(REPO / "app.py"), default_timeout=600).run()
        warm_s = time.perf_counter() - t0
        files = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file()) / 1e6
    print(f"cold start (empty store -> Overview with findings): {cold_s:.1f} s wall, "
          f"{cold_cpu:.1f} s CPU (target < 60 s)")
    print(f"  findings on the built store: {f_wall * 1e3:.0f} ms wall, {f_cpu * 1e3:.0f} ms CPU")
    print(f"Overview, second session (cached): {warm_s:.1f} s")
    print(f"resident memory after all {len(pages)} pages: {rss:.0f} MB now, {peak:.0f} MB peak "
          "(target < 1024 MB)")
    print(f"store + files: {files:.0f} MB (target < 100 MB)", flush=True)
    del os.environ["ILCSCOPE_MODE"]    # the build alone writes a store
    with tempfile.TemporaryDirectory() as tmp:
        b_wall, b_cpu, _ = best_of_with_cpu(
            lambda: build_demo(open_store(Path(tmp) / "b.duckdb")), repeat=1)
    print(f"the demo build alone (render + load, no models): {b_wall:.1f} s wall, "
          f"{b_cpu:.1f} s CPU (target < 30 s)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
