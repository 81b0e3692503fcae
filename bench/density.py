"""Benchmark breast density: the classical estimator and the NYU histogram features, in one run.

    python bench/density.py            # full (about a minute on 2 shared cores)
    python bench/density.py --quick    # one repeat each, for a smoke test

Rows:
- classical `percent_density` per image on a 1024 x 1024 mini-MIAS MLO (8-bit) and on a
  3328 x 2560 16-bit (12-bit range) synthetic MLO: the default (block-mean copy, long side 256)
  beside the naive full-resolution run (``max_side=None``: mask upsampled, every pixel
  thresholded), and the breast mask alone (`core.image.segmentation.breast_mask`, the usual bottleneck);
- NYU histogram features per exam (4 x 2600 x 2000, uint8): `exam_features` with each recipe
  beside the naive official way (float32 copy, -= mean, /= std, np.histogram(50) per view, which
  under NumPy 2.x gives the 'modern' counts), plus the MLP forward.
Needs ../shared (mini-MIAS and the NYU fixture); rows whose data is absent are skipped.
Other helpers share the cores: read the ratios, not the seconds.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")   # 2 cores, as the target says; set before numpy loads

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))
from bench._timing import best_of  # noqa: E402
from core.density import estimator as dn  # noqa: E402
from core.image.segmentation import breast_mask  # noqa: E402
from core.demo.images import render_view  # noqa: E402
from core.density import histogram as hist  # noqa: E402
from models.networks import density_nyu as nyu  # noqa: E402


def row(name: str, seconds: float, ref: float | None = None, note: str = "") -> None:
    ratio = f"{ref / seconds:7.1f}x" if ref else "        "
    print(f"  {name:<46s} {seconds * 1000:9.1f} ms  {ratio}  {note}")


def naive_histogram(img: np.ndarray) -> np.ndarray:
    """The official per-view feature, as written upstream (in our words)."""
    a = img.astype(np.float32)
    a -= a.mean()
    a /= a.std()
    counts = np.histogram(a, bins=50)[0]
    return counts / counts.sum()


def bench_classical(name: str, img: np.ndarray, repeat: int, threshold: float | None = None) -> None:
    print(f"\nclassical percent density, {name}: {img.shape[0]} x {img.shape[1]} {img.dtype}, MLO"
          + (f", threshold {threshold}" if threshold else ""))
    kw = {"view": "MLO", "threshold": threshold}
    t_naive, p_naive = best_of(lambda: dn.percent_density(img, max_side=None, **kw),
                               repeat=repeat)
    t_fast, p_fast = best_of(lambda: dn.percent_density(img, **kw), repeat=repeat)
    small = dn._block_mean(img, int(np.ceil(max(img.shape) / dn.DEFAULT_MAX_SIDE)))
    t_mask, _ = best_of(lambda: breast_mask(small, view="MLO"), repeat=repeat)
    t_mask_cc, _ = best_of(lambda: breast_mask(small, view="CC"), repeat=repeat)
    row("naive: full resolution (max_side=None)", t_naive, note=f"{p_naive:.2f} %")
    row("percent_density (default, long side 256)", t_fast, t_naive, note=f"{p_fast:.2f} %")
    row("  of which breast_mask, MLO (with pectoral)", t_mask)
    row("  breast_mask as CC (no pectoral step)", t_mask_cc)


def bench_nyu(repeat: int) -> None:
    root = SHARED / "data" / "nyu_density"
    if not (root / "L-CC.png").is_file():
        print(f"\n(skipped NYU rows: {root} is absent)")
        return
    exam = {v: np.array(Image.open(root / f"{v}.png")) for v in hist.VIEWS}
    print("\nNYU histogram features per exam (4 x 2600 x 2000 uint8)")
    t_naive, f_naive = best_of(
        lambda: np.concatenate([naive_histogram(exam[v]) for v in hist.VIEWS]), repeat=repeat)
    row("naive: np.histogram per view (official way)", t_naive)
    for recipe in hist.RECIPES:
        t, f = best_of(lambda r=recipe: hist.exam_features(exam, recipe=r), repeat=repeat)
        note = ""
        if recipe == "modern":
            note = "same counts as naive" if np.array_equal(f, f_naive.astype(np.float32)) else "DIFFERS from naive"
        row(f"exam_features(recipe={recipe!r})", t, t_naive, note)
    weights = root / "histogram_model.p"
    if weights.is_file():
        model = nyu.load_nyu_density(weights)
        x = torch.from_numpy(hist.exam_features(exam, recipe="exact"))[None]
        with torch.no_grad():
            t, _ = best_of(lambda: model(x), repeat=max(repeat, 10))
        row("MLP forward (200 -> 100 -> 4)", t)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one repeat per row")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    repeat = 1 if args.quick else 3
    mias = SHARED / "data" / "mias" / "mdb001.png"
    if mias.is_file():
        bench_classical("mini-MIAS mdb001", np.array(Image.open(mias)), repeat)
    else:
        print(f"(skipped MIAS row: {mias} is absent)")
    t0 = time.perf_counter()
    synth, _ = render_view(np.random.default_rng(0), laterality="L", view="MLO", density=2,
                           percent_density=40.0, shape=(3328, 2560))
    print(f"\n(synthetic 3328 x 2560 view rendered in {time.perf_counter() - t0:.1f} s)")
    # The synthetic attenuation scale puts fat at 0.3 and dense tissue at 0.7 of full scale, so the
    # MIAS-calibrated 0.70 finds almost nothing; 0.4 splits them (tests/test_density.py).
    bench_classical("synthetic FFDM-sized (drawn: 40 %)", synth, repeat, threshold=0.4)
    bench_nyu(repeat)


if __name__ == "__main__":
    main()
