"""The Benchmark page at 100k exams: core.reports.benchmark pieces and the page rerun, beside the naive way.

    python bench/benchmark_page.py [--n-exams 100000] [--repeats 10]

Builds a 100k-exam metadata-only demo store with three synthetic models (two image-level, one
breast-level: 1M predictions, as bench/store.py), then times
  * each core.reports.benchmark piece on the active test set (test-all) and the AUC table over test-all +
    test-ILC, beside the naive way (scikit-learn roc_auc_score per group; a per-resample
    bootstrap loop, extrapolated; the un-thinned ROC chart's data size);
  * the page itself with AppTest: the first (cold) run, which fills the caches, and warm reruns
    (what a widget click or a sidebar change back costs). Target: warm rerun < 300 ms.
Other helpers share the cores: read the ratios, not the seconds.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._timing import percentiles_ms  # noqa: E402
from core.reports import benchmark as benchmark  # noqa: E402
from core.demo.build import build_demo  # noqa: E402
from core.store import open_store, write_result  # noqa: E402

MODELS = ("model-a", "model-b", "model-c")


def build_store(path: Path, n_exams: int) -> None:
    """Metadata-only demo plus 1M synthetic predictions that carry some signal."""
    rng = np.random.default_rng(0)
    store = open_store(path)
    build_demo(store, n_exams=n_exams, metadata_only=True)
    images, breasts = store.cases(level="image"), store.cases(level="breast")
    frames = []
    for model, shift in (("model-a", 1.5), ("model-b", 1.0)):
        frames.append(pd.DataFrame({
            "model": model, "level": "image", "case_id": images["case_id"],
            "exam_id": images["exam_id"], "laterality": images["laterality"],
            "image_id": images["image_id"],
            "malignant": rng.normal(size=len(images)) + shift * images["label"].to_numpy(float)}))
    frames.append(pd.DataFrame({
        "model": "model-c", "level": "breast", "case_id": breasts["case_id"],
        "exam_id": breasts["exam_id"], "laterality": breasts["laterality"], "image_id": None,
        "malignant": rng.normal(size=len(breasts)) + 0.8 * breasts["label"].to_numpy(float)}))
    models = pd.DataFrame({"model": list(MODELS), "kind": "external"})
    with tempfile.TemporaryDirectory() as tmp:
        store.ingest(write_result(tmp, {"models": models,
                                        "predictions": pd.concat(frames, ignore_index=True)}))
    store.checkpoint()


def bench_core(store, repeats: int) -> None:
    level = "breast"   # all three models usable: image scores aggregated with max
    scope = dict(models=list(MODELS), level=level, how="max")
    t_load, table_scores = percentiles_ms(lambda: benchmark.load_scores(
        store, test_sets=["test-all", "test-ILC"], **scope), repeat=3)
    one = table_scores[table_scores["test_set"] == "test-all"]
    n_cases = one["case_id"].nunique()
    print(f"scores: {len(table_scores):,} rows ({n_cases:,} {level} cases in test-all, "
          f"{len(MODELS)} models); load_scores {t_load:.0f} ms (cached by the page)\n")
    print(f"{'piece':44s} {'ms':>9s} {'naive ms':>10s} {'ratio':>7s}")

    def row(name, ms, naive_ms=None):
        extra = f"{naive_ms:10.0f} {naive_ms / ms:6.1f}x" if naive_ms else ""
        print(f"{name:44s} {ms:9.1f} {extra}")

    def sklearn_aucs():
        return [roc_auc_score(g["label"], g["score"])
                for _, g in table_scores.groupby(["test_set", "model"], sort=False)]

    t_naive, _ = percentiles_ms(sklearn_aucs, repeat=repeats)
    t, table = percentiles_ms(lambda: benchmark.auc_summary(table_scores, ci="delong"),
                              repeat=repeats)
    row("auc_summary delong (AUC + CI, 6 rows)", t, t_naive)
    t_boot, _ = percentiles_ms(lambda: benchmark.auc_summary(table_scores, ci="bootstrap"),
                               repeat=1)
    y, s = one[one["model"] == "model-a"][["label", "score"]].to_numpy().T
    y = y.astype(bool)
    pos, neg, rng = np.flatnonzero(y), np.flatnonzero(~y), np.random.default_rng(0)

    def naive_boot(k=20):   # per-resample loop with scikit-learn, 20 of 2000 resamples
        for _ in range(k):
            idx = np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]
            roc_auc_score(y[idx], s[idx])

    t_nb, _ = percentiles_ms(naive_boot, repeat=1)
    row("auc_summary bootstrap (2000 resamples x 6)", t_boot, t_nb / 20 * 2000 * len(table))
    t, pairs = percentiles_ms(lambda: benchmark.pairwise_tests(one), repeat=repeats)
    row("pairwise_tests (3 pairs, Holm)", t)
    t, _ = percentiles_ms(lambda: benchmark.sensitivity_at_specificity(one),
                          repeat=repeats)
    row("sensitivity_at_specificity (98 %, 90 %)", t)
    t, roc = percentiles_ms(lambda: benchmark.roc_points(one), repeat=repeats)
    t_full, full = percentiles_ms(lambda: benchmark.roc_points(one, max_points=10**9),
                                  repeat=repeats)
    row("roc_points (thinned to <= 1000 / model)", t)
    print(f"{'':44s} chart rows {len(roc):,} vs un-thinned {len(full):,} "
          f"({len(full) / len(roc):.0f}x less JSON to the browser)")
    t, _ = percentiles_ms(lambda: benchmark.score_histograms(one), repeat=repeats)
    row("score_histograms (30 bins)", t)
    print()


def bench_page(path: Path, repeats: int) -> None:
    from streamlit.testing.v1 import AppTest

    os.environ["ILCSCOPE_DB"] = str(path)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
    at.run()
    at.switch_page("pages/benchmark.py")
    t = time.perf_counter()
    at.run()
    cold = (time.perf_counter() - t) * 1e3
    if at.exception:
        raise SystemExit(f"page failed: {at.exception[0].value}")
    warm, _ = percentiles_ms(at.run, repeat=repeats)
    at.segmented_control(key="bench_level").set_value("breast").run()   # 3 models, aggregated
    t = time.perf_counter()
    at.segmented_control(key="bench_level").set_value("image").run()
    back = (time.perf_counter() - t) * 1e3
    warm_breast, _ = percentiles_ms(lambda: at.segmented_control(key="bench_level")
                                    .set_value("breast").run(), repeat=repeats)
    print(f"{'page (AppTest, default choices)':44s} {'ms':>9s}")
    print(f"{'first run (cold caches)':44s} {cold:9.0f}")
    print(f"{'rerun (warm)':44s} {warm:9.0f}   cold / warm {cold / warm:.0f}x")
    print(f"{'switch level back to image (cached)':44s} {back:9.0f}")
    print(f"{'rerun at breast level (3 models, warm)':44s} {warm_breast:9.0f}")
    print("target: warm rerun < 300 ms at 100k exams")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-exams", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.duckdb"
        t = time.perf_counter()
        build_store(path, args.n_exams)
        print(f"store: {args.n_exams:,} exams, 1 image-level x 2 + breast-level model; "
              f"built in {time.perf_counter() - t:.0f} s")
        bench_core(open_store(path, read_only=True), args.repeats)
        bench_page(path, args.repeats)


if __name__ == "__main__":
    main()
