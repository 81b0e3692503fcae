"""Benchmark: batch GMIC inference over a demo store, ours beside the naive loop, in one run.

* naive -- one image at a time: read, preprocess, the network as loaded (NCHW, BN unfused)
           under ``torch.no_grad()``, scores only (no files, no store writes);
* ours  -- ``models.inference.predict.predict_test_set``: batches, background prefetch of reading and
           preprocessing, ``optimize_for_inference`` + ``torch.inference_mode``, and it also
           writes every saliency file and ingests the predictions.

Both use the shipped demo checkpoint on the synthetic demo images (512 x 320, "demo" config),
``torch.set_num_threads(2)``; rounds alternate and medians are reported (shared cores: the ratio
is the result).

    python bench/predict.py                 # 120 exams (the demo: 480 images), 3 rounds
    python bench/predict.py --n-exams 30 --rounds 5
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.demo.build import build_demo  # noqa: E402
from core.io.images import read_pixels  # noqa: E402
from core.store import open_store  # noqa: E402
from models.networks.gmic import load_gmic_checkpoint  # noqa: E402
from models.inference.predict import DEMO_CHECKPOINT, predict_test_set  # noqa: E402
from models.inference.preprocess import preprocess_image  # noqa: E402


def naive(store) -> float:
    model = load_gmic_checkpoint(DEMO_CHECKPOINT, "demo")
    images = store.images(test_set="demo")
    start = time.perf_counter()
    with torch.no_grad():
        for row in images.itertuples():
            pre = preprocess_image(read_pixels(row.abs_path), model.config.input_shape,
                                   laterality=row.laterality)
            model(pre.image[None])["y_fusion"]
    return time.perf_counter() - start


def ours(store, batch_size: int) -> float:
    start = time.perf_counter()
    predict_test_set(store, checkpoints=[DEMO_CHECKPOINT], name="bench", test_set="demo",
                     device="cpu", batch_size=batch_size, chunk_size=512, overwrite=True)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-exams", type=int, default=120)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "bench.duckdb")
        build_demo(store, n_exams=args.n_exams, seed=0)
        n = len(store.images(test_set="demo"))
        ours(store, args.batch_size)                  # warm-up (allocator, oneDNN kernels)
        times = {"naive": [], "ours": []}
        for _ in range(args.rounds):
            times["naive"].append(naive(store))
            times["ours"].append(ours(store, args.batch_size))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{n} images of 512 x 320, demo GMIC, 2 threads, median of {args.rounds} rounds")
    for k, v in med.items():
        print(f"  {k:6s} {v:6.2f} s  {1000 * v / n:6.1f} ms/image")
    print(f"  speed-up ours / naive: {med['naive'] / med['ours']:.2f}x "
          "(ours also writes saliency files and ingests)")


if __name__ == "__main__":
    main()
