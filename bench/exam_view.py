"""Benchmark: the Exam view's four tiles from full-size 16-bit files, beside the naive way.

Four synthetic views at full-field digital size (3328 x 2560, 16-bit PNG; `core.demo.images`
rendered at that size, 12 bits scaled to 16). Ours: `core.reports.exam.hanging_image` (decode,
block means to a 512-pixel long side, percentile window and chest-wall side on the small copy).
Naive: decode, window the full image (`core.io.pixels.to_display`), find the chest wall on it,
then downscale. Also the decoding alone, the floor both share.

Run: ``python bench/exam_view.py [--repeat 3]``. Best of ``--repeat`` runs; other processes
share the cores, so compare ratios.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")   # the project's budget: 2 cores (set before numpy loads)

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._timing import best_of  # noqa: E402
from core.demo.images import render_view  # noqa: E402
from core.density.estimator import block_mean  # noqa: E402
from core.image.segmentation import chest_wall_side  # noqa: E402
from core.io.images import read_pixels  # noqa: E402
from core.io.pixels import to_display, write_png  # noqa: E402
from core.reports.exam import HANGING_ORDER, hanging_image  # noqa: E402

SHAPE = (3328, 2560)


def naive(path: Path, laterality: str) -> np.ndarray:
    grey = to_display(read_pixels(path))
    if chest_wall_side(grey) != ("right" if laterality == "R" else "left"):
        grey = grey[:, ::-1]
    return block_mean(grey, 7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, (lat, view) in enumerate(HANGING_ORDER):
            raw, _ = render_view(np.random.default_rng(i), laterality=lat, view=view, density=2,
                                 shape=SHAPE)
            path = Path(tmp) / f"{lat}-{view}.png"
            write_png(path, (raw.astype(np.uint32) * 16).astype(np.uint16))
            files.append((path, lat))
        decode_s, _ = best_of(lambda: [read_pixels(p) for p, _ in files], repeat=args.repeat)
        ours_s, tiles = best_of(lambda: [hanging_image(p, laterality=lat) for p, lat in files],
                                repeat=args.repeat)
        naive_s, _ = best_of(lambda: [naive(p, lat) for p, lat in files], repeat=args.repeat)
    print(f"4 views of {SHAPE[0]} x {SHAPE[1]} px, 16-bit PNG; tiles {tiles[0].pixels.shape}")
    print(f"decode only      {decode_s:6.2f} s")
    print(f"hanging_image    {ours_s:6.2f} s  ({ours_s - decode_s:5.2f} s beyond decoding)")
    print(f"naive            {naive_s:6.2f} s  ({naive_s - decode_s:5.2f} s beyond decoding)")
    print(f"ratio naive / ours: {naive_s / ours_s:.1f}x (beyond decoding: "
          f"{(naive_s - decode_s) / max(ours_s - decode_s, 1e-9):.1f}x)")


if __name__ == "__main__":
    main()
