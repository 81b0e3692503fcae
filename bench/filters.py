"""Benchmark: filters M1-M7 and the pixel AUC per image, beside the naive AUC.

Two images: a mini-MIAS film (1024 x 1024, 8-bit, mdb023 with its malignant mass) and a
synthetic full-field digital size (3328 x 2560, 16-bit: mdb023 resized, scaled to 16 bits with
Gaussian noise so that every level is used, the mass scaled with it). Healthy region: the
20-pixel ring (same image). For each method: the filter time, our `pixel_auc` time and the naive
time (scikit-learn's `roc_auc_score` on the concatenated region pixels, as one would write it),
and their ratio; then `filter_aucs` end to end, with local methods cropped to the regions (the
default) and on the whole image. Targets (issue): < 1 s and < 5 s per image for all methods plus AUCs on 2 cores;
AUC part >= 5x faster than naive.

Run: ``python bench/filters.py [--repeat 3]``. Timings are the best of `--repeat` runs; other
processes share the cores, so compare ratios.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")   # the budget: 2 cores (set before numpy loads)

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from skimage.transform import resize  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._timing import best_of  # noqa: E402
from core.image.filters import METHODS, apply_method  # noqa: E402
from core.image.regions import filter_aucs, healthy_region, pixel_auc  # noqa: E402

MIAS = REPO.parent / "shared" / "data" / "mias"
REFNUM, X, Y, RADIUS = 23, 538, 681, 29          # Info.txt: mdb023 G CIRC M 538 681 29


def naive_auc(t: np.ndarray, h: np.ndarray) -> float:
    y = np.r_[np.ones(t.size), np.zeros(h.size)]
    return roc_auc_score(y, np.r_[t, h])


def cases():
    img = np.asarray(Image.open(MIAS / f"mdb{REFNUM:03d}.png"))
    rr, cc = np.mgrid[:1024, :1024]
    tumour = (rr - (1023 - Y)) ** 2 + (cc - X) ** 2 <= RADIUS**2
    yield "mias 1024x1024 8-bit", img, tumour
    shape = (3328, 2560)
    big = resize(img.astype(np.float32) / 255.0, shape, order=1)
    noise = np.random.default_rng(0).normal(0.0, 64.0, shape)
    big16 = np.clip(big * 65535.0 + noise, 0, 65535).astype(np.uint16)
    sr, sc = shape[0] / 1024, shape[1] / 1024
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    tumour16 = ((rr - (1023 - Y) * sr) / (RADIUS * sr)) ** 2 + (
        (cc - X * sc) / (RADIUS * sc)) ** 2 <= 1.0
    yield "synthetic 3328x2560 16-bit", big16, tumour16


def run(repeat: int) -> None:
    print(f"cores visible: {os.cpu_count()}, threads: {os.environ['OMP_NUM_THREADS']}, "
          f"best of {repeat}")
    for label, img, tumour in cases():
        region_s, healthy = best_of(lambda: healthy_region(tumour, img, view="MLO"),
                                    repeat=repeat)
        print(f"\n== {label}: tumour {tumour.sum()} px, ring {healthy.mask.sum()} px, "
              f"healthy_region {region_s:.3f} s")
        print(f"{'method':<9}{'filter s':>10}{'auc ms':>9}{'naive ms':>10}{'ratio':>8}"
              f"{'auc':>9}{'|diff|':>10}")
        tot_f = tot_a = tot_n = 0.0
        for code in METHODS:
            f_s, out = best_of(lambda: apply_method(code, img), repeat=repeat)
            t, h = out[tumour], out[healthy.mask]
            a_s, ours = best_of(lambda: pixel_auc(t, h), repeat=repeat)
            n_s, ref = best_of(lambda: naive_auc(t, h), repeat=repeat)
            tot_f, tot_a, tot_n = tot_f + f_s, tot_a + a_s, tot_n + n_s
            print(f"{code:<9}{f_s:>10.3f}{a_s * 1e3:>9.2f}{n_s * 1e3:>10.2f}{n_s / a_s:>7.1f}x"
                  f"{ours.auc:>9.4f}{abs(ours.auc - ref):>10.1e}")
        print(f"{'sum':<9}{tot_f:>10.3f}{tot_a * 1e3:>9.2f}{tot_n * 1e3:>10.2f}"
              f"{tot_n / tot_a:>7.1f}x")
        e2e_s, _ = best_of(lambda: filter_aucs(img, tumour, healthy), repeat=repeat)
        whole_s, _ = best_of(lambda: filter_aucs(img, tumour, healthy, crop=False),
                             repeat=repeat)
        print(f"filter_aucs, all 8 methods: {e2e_s:.3f} s (local methods on the regions' box), "
              f"{whole_s:.3f} s (whole image), ratio {whole_s / e2e_s:.1f}x; "
              f"+ healthy_region: {e2e_s + region_s:.3f} s per image")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    run(parser.parse_args().repeat)
