"""Store at scale: a 100k-exam metadata-only store with 1M predictions.

Prints build time, file size, and p50/p95 of the queries the pages run, beside the naive way
in the same run (row-by-row inserts; pulling whole tables into pandas and joining there).
Target (issue 2): each page query under 100 ms at this size.

    python bench/store.py [--n-exams 100000] [--repeats 20]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.demo import build_demo  # noqa: E402
from core.store import open_store, write_result  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.percentile(times, 50)) * 1e3, float(np.percentile(times, 95)) * 1e3, out


def fake_predictions(images: pd.DataFrame, breasts: pd.DataFrame, rng) -> pd.DataFrame:
    """1M rows: two image-level models (2 x 400k) and one breast-level model (200k)."""
    frames = []
    for model in ("model-a", "model-b"):
        frames.append(pd.DataFrame({
            "model": model, "level": "image", "case_id": images["image_id"],
            "exam_id": images["exam_id"], "laterality": images["laterality"],
            "image_id": images["image_id"], "malignant": rng.random(len(images)),
            "benign": rng.random(len(images))}))
    frames.append(pd.DataFrame({
        "model": "model-c", "level": "breast",
        "case_id": breasts["exam_id"] + "/" + breasts["laterality"],
        "exam_id": breasts["exam_id"], "laterality": breasts["laterality"], "image_id": None,
        "malignant": rng.random(len(breasts)), "benign": None}))
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-exams", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "bench.duckdb")
        t = time.perf_counter()
        summary = build_demo(store, n_exams=args.n_exams, metadata_only=True)
        t_demo = time.perf_counter() - t
        images = store.images()
        breasts = store.cases(level="breast")
        preds = fake_predictions(images, breasts, rng)
        models = pd.DataFrame({"model": ["model-a", "model-b", "model-c"], "kind": "external"})
        t = time.perf_counter()
        write_result(Path(tmp) / "result", {"models": models, "predictions": preds})
        store.ingest(Path(tmp) / "result")
        t_ingest = time.perf_counter() - t
        store.checkpoint()
        size_mb = store.path.stat().st_size / 2**20

        # naive insert: row by row (executemany), 5,000 rows, extrapolated to 1M
        sample = preds.head(5000).assign(model="naive")
        cols = ["model", "level", "case_id", "exam_id", "laterality", "image_id", "malignant"]
        with store.connection() as con:
            t = time.perf_counter()
            con.executemany(f"INSERT INTO predictions ({', '.join(cols)}) VALUES "
                            f"({', '.join('?' * len(cols))})",
                            sample[cols].astype(object).where(sample[cols].notna(), None)
                            .values.tolist())
            t_naive_rows = (time.perf_counter() - t) / len(sample) * len(preds)
            con.execute("DELETE FROM predictions WHERE model = 'naive'")

        print(f"store: {summary.n_exams:,} exams, {summary.n_images:,} images, "
              f"{len(preds):,} predictions; file {size_mb:.1f} MiB")
        print(f"build demo tables      {t_demo:8.2f} s")
        print(f"ingest 1M predictions  {t_ingest:8.2f} s   (row-by-row executemany, "
              f"extrapolated: {t_naive_rows:8.1f} s; ratio {t_naive_rows / t_ingest:5.1f}x)")
        print()

        def naive_join():
            with store.connection() as con:
                p = con.execute("SELECT * FROM predictions").df()
                i = con.execute("SELECT * FROM images").df()
                b = con.execute("SELECT * FROM breasts").df()
                m = con.execute("SELECT * FROM testset_exams WHERE name = 'test-all'").df()
            p = p[(p["model"] == "model-a") & (p["level"] == "image")]
            i = i[i["exam_id"].isin(m["exam_id"])]
            return i.merge(b, on=["exam_id", "laterality"]).merge(
                p, left_on="image_id", right_on="case_id", how="left")

        queries = {
            "labels + 1 model (image, test-all)":
                lambda: store.scores(models=["model-a"], level="image", test_set="test-all"),
            "labels + 1 model (breast, test-ILC)":
                lambda: store.scores(models=["model-c"], level="breast", test_set="test-ILC"),
            "labels (exam, test-all)":
                lambda: store.cases(level="exam", test_set="test-all"),
            "overview breakdowns incl. density (test-all)":
                lambda: store.summary(test_set="test-all")["density"],
            "naive: pandas join of whole tables": naive_join,
        }
        print(f"{'query':42s} {'rows':>9s} {'p50 ms':>9s} {'p95 ms':>9s}")
        results = {}
        for name, fn in queries.items():
            p50, p95, out = timed(fn, args.repeats if "naive" not in name else 3)
            results[name] = p50
            print(f"{name:42s} {len(out):9,d} {p50:9.1f} {p95:9.1f}")
        fast = results["labels + 1 model (image, test-all)"]
        print(f"\nnaive join / store.scores: {results['naive: pandas join of whole tables'] / fast:.1f}x")
        print("target: each page query < 100 ms at 100k exams / 1M predictions")


if __name__ == "__main__":
    main()
