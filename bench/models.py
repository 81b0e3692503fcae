"""Benchmark: images per second of every family ILCscope runs, beside the official loop, in one run.

For each family, at the official window sizes (``--size paper``; ``small`` for a quick look):

* official -- a plain re-statement of the official inference loop: the network as built, NCHW
              float32, under ``torch.no_grad()``, one image (GMIC, GLAM) or one exam (the NYU
              four-view models) per forward;
* ours     -- what ``predict`` runs: the inference copy (`models.networks.fold`: BatchNorm folded,
              grey stems, channels_last) under ``torch.inference_mode()``, ``--batch`` per forward.

The NYU heatmap step (the DenseNet-121 patch classifier over ~1,000 patches of 256 px per image)
is timed on ``--patches`` patches and stated per full image: the official loop one patch at a
time through the official structure (``bench/heatmaps.py``) against our batched producer. Its
target is 5x; on 2 CPU cores both are bound by the same convolutions (see the ratio printed).

GPU rows (only when CUDA is visible): fp32 NCHW against bf16 autocast + channels_last for every
family, batch ``--gpu-batch``; the faster is what ``predict --device cuda`` should use.

Rounds are interleaved and each variant reports its best round (other jobs share the cores).

    python bench/models.py                      # paper sizes, 2 threads, 2 rounds
    python bench/models.py --size small --rounds 3
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from heatmaps import loop_probs, official_structure  # noqa: E402

from models.inference.heatmaps import patch_origins, patch_probabilities, stride_list  # noqa: E402
from models.networks.fold import optimize_for_inference  # noqa: E402
from models.networks.glam import build_glam  # noqa: E402
from models.networks.gmic import build_gmic  # noqa: E402
from models.networks.nyu_dmv import INPUT_SIZES, VIEWS, DMVConfig, build_nyu_dmv  # noqa: E402
from models.networks.nyu_patch import PatchDenseNet121  # noqa: E402
from models.networks.nyu_patch import optimize_for_inference as optimize_patch_model  # noqa: E402

SIZES = {"paper": {"gmic": "paper", "glam": "paper", "nyu": ("image", "image-heatmaps")},
         "small": {"gmic": "cpu-small", "glam": "cpu-small",
                   "nyu": ("demo", DMVConfig(input_channels=3, width=4, input_shape=(512, 320)))}}


def _image_batch(shape: tuple[int, int], n: int, channels: int = 1, *, channels_last: bool = False):
    x = torch.randn(n, channels, *shape)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _exam_batch(model, n: int, *, channels_last: bool = False) -> dict[str, torch.Tensor]:
    cfg = model.config
    shape = (lambda v: cfg.input_shape) if cfg.input_shape else (lambda v: INPUT_SIZES[v.split("-")[1]])
    return {v: _image_batch(shape(v), n, cfg.input_channels, channels_last=channels_last) for v in VIEWS}


def family_cases(size: str, batch: int) -> dict[str, tuple[Callable, Callable, int]]:
    """family -> (official forward, our forward, images per call of ours): each call scores
    one image (official) or ``batch`` images (ours); NYU counts the four views of an exam."""
    names = SIZES[size]
    cases = {}
    for family, model in (("gmic", build_gmic(names["gmic"])), ("glam", build_glam(names["glam"]))):
        model.eval()
        fast = optimize_for_inference(model)
        shape = model.config.input_shape
        x1, xb = _image_batch(shape, 1), _image_batch(shape, batch, channels_last=True)
        cases[family] = (_no_grad(lambda m=model, x=x1: m(x)), _inference(lambda m=fast, x=xb: m(x)), batch)
    for family, config in zip(("nyu-image", "nyu-image-heatmaps"), names["nyu"]):
        model = build_nyu_dmv(config).eval()
        fast = optimize_for_inference(model)
        x1, xb = _exam_batch(model, 1), _exam_batch(model, batch, channels_last=True)
        cases[family] = (_no_grad(lambda m=model, x=x1: m(x)), _inference(lambda m=fast, x=xb: m(x)), 4 * batch)
    return cases


def _no_grad(fn: Callable) -> Callable:
    def run():
        with torch.no_grad():
            return fn()
    return run


def _inference(fn: Callable) -> Callable:
    def run():
        with torch.inference_mode():
            return fn()
    return run


def _best_seconds(fn: Callable, best: float) -> float:
    t0 = time.perf_counter()
    fn()
    return min(best, time.perf_counter() - t0)


def heatmap_case(shape: tuple[int, int], patches: int, batch: int) -> tuple[Callable, Callable, Callable, int, int]:
    """(official loop over ``patches`` patches, ours over the same in float32 and under bfloat16
    autocast (AMX on recent Xeons), timed patches, patches per image)."""
    model = PatchDenseNet121().eval()
    fast = optimize_patch_model(model)
    rng = random.Random(0)
    origins = patch_origins(stride_list(shape[0], rng=rng), stride_list(shape[1], rng=rng))
    image = np.random.default_rng(0).normal(size=shape)
    subset = origins[:patches]
    official = lambda: loop_probs(lambda x: official_structure(model, x), image, subset)  # noqa: E731
    ours = lambda: patch_probabilities(fast, image, subset, batch_size=batch)  # noqa: E731

    def ours_bf16():
        with torch.autocast("cpu", torch.bfloat16):
            return patch_probabilities(fast, image, subset, batch_size=batch)
    return official, ours, ours_bf16, len(subset), len(origins)


def gpu_rows(size: str, batch: int, rounds: int) -> list[dict]:
    """fp32 NCHW against bf16 autocast + channels_last on CUDA, ``batch`` images (exams) a call."""
    device = torch.device("cuda")
    names = SIZES[size]
    rows = []
    builds = {"gmic": lambda: build_gmic(names["gmic"]), "glam": lambda: build_glam(names["glam"]),
              "nyu-image": lambda: build_nyu_dmv(names["nyu"][0]),
              "nyu-image-heatmaps": lambda: build_nyu_dmv(names["nyu"][1])}
    for family, build in builds.items():
        model = build().eval().to(device)
        fast = optimize_for_inference(model).to(device)
        nyu = family.startswith("nyu")
        make = (lambda cl: {k: v.to(device) for k, v in _exam_batch(model, batch, channels_last=cl).items()}) \
            if nyu else (lambda cl: _image_batch(model.config.input_shape, batch, channels_last=cl).to(device))
        variants = {"fp32": (model, make(False), False), "bf16+channels_last": (fast, make(True), True)}
        best = dict.fromkeys(variants, float("inf"))
        for _ in range(rounds + 1):                      # the first round warms up cuDNN
            for name, (m, x, bf16) in variants.items():
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=bf16):
                    m(x)
                torch.cuda.synchronize()
                best[name] = min(best[name], time.perf_counter() - t0)
        per_call = batch * (4 if nyu else 1)
        rows.append({"family": family, "device": torch.cuda.get_device_name(0), "batch": batch,
                     "images_per_s": {k: round(per_call / v, 1) for k, v in best.items()},
                     "faster": min(best, key=best.get)})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="paper")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2, help="images (exams) per forward of ours on CPU")
    parser.add_argument("--patches", type=int, default=16, help="patches timed in the heatmap step")
    parser.add_argument("--patch-batch", type=int, default=16)
    parser.add_argument("--gpu-batch", type=int, default=16)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cases = family_cases(args.size, args.batch)
    heat_shape = (2944, 1920) if args.size == "paper" else (1000, 800)
    h_official, h_ours, h_bf16, timed, per_image = heatmap_case(heat_shape, args.patches, args.patch_batch)
    best = {f: [float("inf"), float("inf")] for f in cases} | {"heatmap-step": [float("inf")] * 3}
    for _ in range(args.rounds):
        for family, (official, ours, _) in cases.items():
            best[family] = [_best_seconds(official, best[family][0]), _best_seconds(ours, best[family][1])]
        best["heatmap-step"] = [_best_seconds(fn, b) for fn, b in zip((h_official, h_ours, h_bf16),
                                                                      best["heatmap-step"])]

    rows = []
    for family, (official_s, ours_s, *bf16_s) in best.items():
        if family == "heatmap-step":
            official_ips, ours_ips = timed / official_s / per_image, timed / ours_s / per_image
        else:
            per_official = 4 if family.startswith("nyu") else 1
            official_ips, ours_ips = per_official / official_s, cases[family][2] / ours_s
        row = {"family": family, "device": "cpu", "images_per_s": {
            "official": round(official_ips, 4), "ours": round(ours_ips, 4)},
            "ratio_ours_vs_official": round(ours_ips / official_ips, 2)}
        if bf16_s:
            bf16_ips = timed / bf16_s[0] / per_image
            row["images_per_s"]["ours_bf16"] = round(bf16_ips, 4)
            row["ratio_ours_bf16_vs_official"] = round(bf16_ips / official_ips, 2)
            row["bf16_max_abs_prob_diff"] = float(np.abs(h_bf16() - h_ours()).max())
        rows.append(row)
    report = {"size": args.size, "threads": args.threads, "rounds": args.rounds, "cpu_batch": args.batch,
              "heatmap_step": {"image": list(heat_shape), "patches_per_image": per_image,
                               "patches_timed": timed, "target_ratio": 5},
              "rows": rows}
    if torch.cuda.is_available():
        report["gpu_rows"] = gpu_rows(args.size, args.gpu_batch, args.rounds)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
