"""Benchmark: the NYU heatmap step, a per-patch loop beside our batched producer, in one run.

Input: the fixture's 1000 x 800 heatmap-step image (108 patches of 256 px at stride 70) and the
fixture's rule weights for the DenseNet-121 patch classifier (``shared/fixtures/nyu_dmv_reference``).

* official -- the official loop restated, one patch at a time: slice the float64 standardised
             image, stack it to 3 channels, ``torch.FloatTensor``, softmax, under ``no_grad``,
             through the official network structure (torchvision's DenseNet: every dense layer
             re-concatenates all earlier maps; every conv and max-pool behind a SAME ``F.pad``),
             same weights; then the float32 accumulation;
* loop     -- the same loop through our network as built (NCHW, one buffer per dense block);
* batched -- ``produce_heatmaps`` with ``optimize_for_inference`` (BN folded, grey conv0,
             channels_last) and ``--batch-size`` patches per forward, under ``inference_mode``.

Rounds are interleaved and each variant reports its best round (other jobs share the cores):
patches/s and the ratios. The loops time ``--naive-patches`` patches (they are slow); the
batched producer makes the whole image. All are checked against the fixture.

    python bench/heatmaps.py                       # 2 threads, 2 rounds
    python bench/heatmaps.py --threads 1 --rounds 3 --naive-patches 12
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from models.inference.heatmaps import (  # noqa: E402
    HeatmapConfig,
    accumulate_heatmap,
    patch_origins,
    produce_heatmaps,
    standardise_float64,
    stride_list,
)
from models.networks.nyu_patch import PatchDenseNet121, optimize_for_inference, same_padding  # noqa: E402

FIXTURE = REPO.parent / "shared" / "fixtures" / "nyu_dmv_reference"


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rule_model() -> PatchDenseNet121:
    rule = _import(FIXTURE / "weight_rule.py", "nyu_weight_rule")
    keys = json.loads((FIXTURE / "keys.json").read_text())["networks"]["DenseNet121_patch_model"]["keys"]
    model = PatchDenseNet121()
    model.load_state_dict({e["key"]: torch.from_numpy(rule.rule_array(e["key"], e["shape"])) for e in keys},
                          strict=True)
    return model.eval()


def _pad_same(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    (t, b), (left, r) = same_padding(x.shape[-2], k, s), same_padding(x.shape[-1], k, s)
    return F.pad(x, (left, r, t, b))


def official_structure(model: PatchDenseNet121, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Our weights through the official structure: cat per dense layer, F.pad before every
    conv / max-pool (3x3 convs then run with padding 0)."""
    f = model.features

    def conv(m, h):
        return F.conv2d(_pad_same(h, m.kernel_size[0], m.stride[0]), m.weight, m.bias, m.stride)

    h = F.max_pool2d(_pad_same(F.relu(f.norm0(conv(f.conv0, x))), 3, 2), 3, 2)
    for name, block in f.named_children():
        if name.startswith("denseblock"):
            feats = [h]
            for layer in block.values():
                a = conv(layer.conv1, F.relu(layer.norm1(torch.cat(feats, 1))))
                feats.append(conv(layer.conv2, F.relu(layer.norm2(a))))
            h = torch.cat(feats, 1)
        elif name.startswith("transition"):
            h = block.pool(conv(block.conv, F.relu(block.norm(h))))
    h = F.relu(f.norm5(h))
    return {"logits": model.classifier(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))}


def loop_probs(forward, image: np.ndarray, origins: np.ndarray) -> np.ndarray:
    """One patch at a time, as run_producer.py's loop would with a minibatch of one."""
    std = standardise_float64(image)
    out = np.zeros((len(origins), 4))
    with torch.no_grad():
        for i, (r, c) in enumerate(origins):
            patch = std[r:r + 256, c:c + 256][None, :, :, None]
            x = np.stack((patch,) * 3, axis=-1).reshape(-1, 256, 256, 3).transpose(0, 3, 1, 2)
            out[i] = F.softmax(forward(torch.FloatTensor(x))["logits"], dim=1).numpy()
    return out.astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--naive-patches", type=int, default=12)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    ref = np.load(FIXTURE / "outputs.npz")
    image = _import(FIXTURE / "input_rule.py", "nyu_input_rule").make_heatmap_step_image()
    model = _rule_model()
    fast = optimize_for_inference(model)
    rng = random.Random(0)
    origins = patch_origins(stride_list(image.shape[0], rng=rng), stride_list(image.shape[1], rng=rng))
    subset = origins[:args.naive_patches]

    loops = {"official": lambda x: official_structure(model, x), "loop": model}
    best = dict.fromkeys([*loops, "batched"], float("inf"))
    errors = {}
    for _ in range(args.rounds):
        for name, forward in loops.items():
            t0 = time.perf_counter()
            probs = loop_probs(forward, image, subset)
            with np.errstate(invalid="ignore"):           # pixels no timed patch covers
                accumulate_heatmap(probs[:, 0], subset, image.shape)
            best[name] = min(best[name], (time.perf_counter() - t0) / len(subset))
            errors[f"{name}_probs"] = float(np.abs(probs - ref["heatmap_all_prob"][:len(subset)]).max())
        t0 = time.perf_counter()
        heat = produce_heatmaps(fast, image, rng=random.Random(0),
                                config=HeatmapConfig(batch_size=args.batch_size))
        best["batched"] = min(best["batched"], (time.perf_counter() - t0) / len(origins))

    errors["batched_probs"] = float(np.abs(heat.probs - ref["heatmap_all_prob"]).max())
    errors["batched_malignant_block20_mean"] = float(np.abs(
        heat.malignant.reshape(50, 20, 40, 20).mean((1, 3)) - ref["heatmap_malignant_block20_mean"]).max())
    print(json.dumps({
        "device": "cpu", "threads": args.threads, "rounds": args.rounds, "batch_size": args.batch_size,
        "patches_per_s": {k: round(1 / v, 3) for k, v in best.items()},
        "ratio_batched_vs_official_loop": round(best["official"] / best["batched"], 2),
        "ratio_batched_vs_our_loop": round(best["loop"] / best["batched"], 2),
        "max_abs_diff_vs_fixture": errors,
    }, indent=1))


if __name__ == "__main__":
    main()
