"""Benchmark core.stats beside the straightforward way and scikit-learn, in one run.

    python bench/metrics.py            # full sizes (about a minute on 2 cores)
    python bench/metrics.py --quick    # smaller sizes, for a smoke test

Rows: AUC + DeLong CI for 7 models x 1,000,000 cases (target < 2 s on 2 cores), as 7
`delong_auc` calls and as one `delong_covariance`; the paired
7-model DeLong matrix; 2,000 stratified bootstrap resamples at 100,000 cases; `auc_table` on a
100,000-case long frame with 3 models x 2 test sets (the benchmark page's rerun, target < 300 ms).
References: DeLong by definition (the m x n kernel, O(m n), timed at smaller n and extrapolated by
m n), Sun & Xu as written (three scipy rankdata calls per model), scikit-learn's roc_auc_score
(AUC only, no CI), and a per-resample bootstrap loop (timed on a few resamples, extrapolated).
Other helpers share the cores: read the ratios, not the seconds.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")   # 2 cores, as the target says; set before numpy loads

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import rankdata  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._timing import best_of_with_cpu  # noqa: E402
from core import stats as M  # noqa: E402


def simulate(n: int, k: int, prevalence: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k correlated models, scores rounded to 3 decimals (ties, as stored probabilities have)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(np.int8)
    common = rng.normal(size=n)
    scores = np.empty((k, n))
    for r in range(k):
        scores[r] = np.round(0.6 * common + rng.normal(size=n) + (0.5 + 0.15 * r) * y, 3)
    return y, scores


# ---------------------------------------------------------------------------- references

def delong_by_definition(y, scores):
    """O(m n) DeLong: the kernel matrix per model, its row and column means, their covariance."""
    v10, v01 = [], []
    for s in scores:
        pos, neg = s[y == 1][:, None], s[y == 0][None, :]
        kernel = (pos > neg) + 0.5 * (pos == neg)
        v10.append(kernel.mean(axis=1))
        v01.append(kernel.mean(axis=0))
    v10, v01 = np.array(v10), np.array(v01)
    cov = np.cov(v10) / v10.shape[1] + np.cov(v01) / v01.shape[1]
    return v10.mean(axis=1), cov


def sun_xu_rankdata(y, scores):
    """Sun & Xu (2014) as written: three midrankings per model with scipy's rankdata."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    tz = rankdata(np.hstack([pos, neg]), axis=1)
    v10 = (tz[:, :m] - rankdata(pos, axis=1)) / n
    v01 = 1 - (tz[:, m:] - rankdata(neg, axis=1)) / m
    return v10.mean(axis=1), np.cov(v10) / m + np.cov(v01) / n


def bootstrap_loop(y, s, n_boot, seed, auc=roc_auc_score):
    """One resample at a time: draw positives and negatives, build the sample, score it."""
    rng = np.random.default_rng(seed)
    pos, neg = s[y == 1], s[y == 0]
    labels = np.r_[np.ones(pos.size), np.zeros(neg.size)]
    out = np.empty(n_boot)
    for b in range(n_boot):
        sample = np.r_[pos[rng.integers(0, pos.size, pos.size)],
                       neg[rng.integers(0, neg.size, neg.size)]]
        out[b] = auc(labels, sample)
    return out


# ---------------------------------------------------------------------------- runs

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke test)")
    args = parser.parse_args(argv)
    n_big = 100_000 if args.quick else 1_000_000
    n_boot_cases = 20_000 if args.quick else 100_000
    k = 7
    rows = []

    def row(task, ours, cpu, ref_name, ref_s, note=""):
        rows.append((task, ours, cpu, ref_name, ref_s, ref_s / ours, note))

    print(f"numpy {np.__version__}, {os.cpu_count()} CPUs visible, BLAS threads "
          f"{os.environ['OPENBLAS_NUM_THREADS']}", flush=True)

    # 1. AUC + DeLong CI, 7 models x n_big cases
    y, scores = simulate(n_big, k, 0.1, seed=0)
    t_auc, cpu_auc, results = best_of_with_cpu(lambda: [M.delong_auc(y, s) for s in scores])
    t_cov, cpu_cov, _ = best_of_with_cpu(lambda: M.delong_covariance(y, scores))   # 7 at once
    t_sk, _, sk = best_of_with_cpu(lambda: [roc_auc_score(y, s) for s in scores], repeat=2)
    assert max(abs(r.auc - a) for r, a in zip(results, sk)) < 1e-9
    t_rank, _, (_, cov_rank) = best_of_with_cpu(lambda: sun_xu_rankdata(y, scores), repeat=1)
    np.testing.assert_allclose([r.var for r in results], np.diag(cov_rank), rtol=1e-9)
    n0 = 4_000 if args.quick else 8_000       # O(m n): timed at n0 cases, scaled by pairs
    y0, s0 = simulate(n0, k, 0.1, seed=1)
    t0, _, (_, cov0) = best_of_with_cpu(lambda: delong_by_definition(y0, s0), repeat=1)
    np.testing.assert_allclose(M.delong_covariance(y0, s0)[1], cov0, atol=1e-12)
    scale = (int(y.sum()) * int((1 - y).sum())) / (int(y0.sum()) * int((1 - y0).sum()))
    name = f"7 x delong_auc, {n_big:,} cases"
    row(name, t_auc, cpu_auc, "scikit-learn roc_auc_score (AUC only)", t_sk)
    row(name, t_auc, cpu_auc, "Sun & Xu with 3 x rankdata", t_rank)
    row(name, t_auc, cpu_auc, f"DeLong O(mn), x{scale:,.0f} from {n0:,}", t0 * scale,
        "extrapolated")
    row(f"delong_covariance, 7 x {n_big:,}", t_cov, cpu_cov, "Sun & Xu with 3 x rankdata", t_rank)

    # 2. the paired 7-model DeLong matrix (21 pairs) on the same cases
    names = [f"model_{r}" for r in range(k)]
    t_mat, cpu_mat, _ = best_of_with_cpu(lambda: M.delong_matrix(y, scores, names, holm=True))
    t_pairs, _, _ = best_of_with_cpu(lambda: [M.delong_paired_test(y, scores[a], scores[b])
                                              for a, b in zip(*np.triu_indices(k, 1))], repeat=1)
    name = f"delong_matrix, 7 x {n_big:,}"
    row(name, t_mat, cpu_mat, "21 delong_paired_test calls", t_pairs)
    row(name, t_mat, cpu_mat, "DeLong O(mn), covariance of 7", t0 * scale, "extrapolated")

    # 3. 2,000 stratified bootstrap resamples at n_boot_cases
    yb, sb = simulate(n_boot_cases, 1, 0.3, seed=2)
    sb = sb[0]
    t_boot, cpu_boot, boot = best_of_with_cpu(lambda: M.bootstrap_auc(yb, sb, n_boot=2000),
                                              repeat=1)
    few = 20
    t_loop, _, loop = best_of_with_cpu(lambda: bootstrap_loop(yb, sb, few, 0), repeat=1)
    t_loop_fast, _, _ = best_of_with_cpu(lambda: bootstrap_loop(yb, sb, few, 0, M.roc_auc),
                                         repeat=1)
    assert abs(boot.se / np.std(loop, ddof=1) - 1) < 0.6          # same spread (20 draws: loose)
    name = f"bootstrap_auc, 2,000 x {n_boot_cases:,}"
    row(name, t_boot, cpu_boot, f"loop of roc_auc_score, x{2000 // few} from {few}",
        t_loop * 2000 / few, "extrapolated")
    row(name, t_boot, cpu_boot, f"loop of core roc_auc, x{2000 // few} from {few}",
        t_loop_fast * 2000 / few, "extrapolated")

    # 4. auc_table: 100k cases x 3 models x 2 test sets, as the benchmark page reruns it
    parts = []
    for test_set, seed in (("test-all", 3), ("test-ILC", 4)):
        yt, st = simulate(100_000, 3, 0.05, seed)
        for r, model in enumerate(("gmic", "gmic-ft", "reader")):
            parts.append(pd.DataFrame({"test_set": test_set, "model": model,
                                       "case_id": [f"c{i}" for i in range(yt.size)],
                                       "label": yt, "score": st[r]}))
    frame = pd.concat(parts, ignore_index=True)
    frame["label"] = frame["label"].astype("Int8")       # as the store returns it
    t_table, cpu_table, _ = best_of_with_cpu(lambda: M.auc_table(frame), repeat=5)

    def per_group():
        return [M.delong_auc(g.label.to_numpy(int), g.score.to_numpy())
                for _, g in frame.groupby(["test_set", "model"], sort=False)]

    t_group, _, _ = best_of_with_cpu(per_group)
    row("auc_table, 100k x 3 models x 2 sets", t_table, cpu_table,
        "groupby + delong_auc per group", t_group)

    width, ref_w = max(len(r[0]) for r in rows), max(len(r[3]) for r in rows)
    print(f"\n{'task':<{width}}  {'ours s':>7}  {'cpu s':>6}  {'reference':<{ref_w}}  "
          f"{'ref s':>9}  {'ratio':>8}")
    for task, ours, cpu, ref_name, ref_s, ratio, note in rows:
        print(f"{task:<{width}}  {ours:7.3f}  {cpu:6.2f}  {ref_name:<{ref_w}}  {ref_s:9.2f}  "
              f"{ratio:7.1f}x  {note}")
    print("ours s, ref s: fastest wall time; cpu s: process CPU time of that run, all threads; "
          "ratio = ref s / ours s")
    t_7 = min(t_auc, t_cov)
    print(f"targets: 7 x {n_big:,} DeLong {t_7:.2f} s (< 2 s: {'met' if t_7 < 2 else 'MISSED'}); "
          f"auc_table {t_table * 1e3:.0f} ms (< 300 ms: {'met' if t_table < 0.3 else 'MISSED'})")
    print(f"load average while running: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
