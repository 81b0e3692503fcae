"""Benchmark: GMIC training throughput (images/s) and peak memory, the trainer beside a plain loop.

Both variants train the same network (Adam, the study's loss from `models.training.loss`) on the
same random batches in the same run:

* plain   -- float32, NCHW, no autotuning: the straightforward loop;
* trainer -- what `models.training.recipe` does on the device: on CUDA bf16 autocast, channels_last,
             cuDNN autotuning and fused Adam (``--compile`` adds torch.compile); on a CPU the
             same float32 NCHW step (bf16 and channels_last do not pay on a CPU), so the CPU
             figures say what a CPU run costs, not a speed-up.

CPU part (always): the given config ("demo" by default) on ``torch.set_num_threads(2)``. GPU
part (only when ``torch.cuda.is_available()``): the paper config (2944 x 1920), batch 16.
Peak memory: ``torch.cuda.max_memory_allocated`` on a GPU, the process RSS high-water mark
(``ru_maxrss``) on a CPU (it only grows, so the CPU variants run plain first).

Data pipeline: the rate at which `models.training.data` (cached float16 tensors, augmentation, a
DataLoader with workers) delivers images, beside the rate the trainer consumes them.

    python bench/train.py                    # CPU: demo config, batch 8
    python bench/train.py --steps 20 --compile
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.networks.gmic import CONFIGS, build_gmic  # noqa: E402
from models.training.data import CachedImages, LabelledImages, make_loader  # noqa: E402
from models.training.loss import gmic_loss  # noqa: E402


def _step_fn(model, device, *, fast: bool, compile_: bool):
    opt = torch.optim.Adam(model.parameters(), lr=1e-5, fused=fast and device.type == "cuda")
    forward = torch.compile(model) if compile_ else model
    use_bf16 = fast and device.type == "cuda"

    def step(x, y):
        if use_bf16:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = forward(x, intermediates=True)
        loss = gmic_loss(out, y, percent_t=model.config.percent_t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss
    return step


def measure(config: str, device: torch.device, batch: int, steps: int, *, fast: bool,
            compile_: bool = False) -> dict:
    """Images/s over ``steps`` steps after two warm-up steps, and peak memory (GiB)."""
    torch.manual_seed(0)
    cfg = CONFIGS[config]
    model = build_gmic(config).to(device).train()
    if fast and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    else:
        torch.backends.cudnn.benchmark = False
    gen = torch.Generator().manual_seed(1)
    xs = torch.randn(batch, 1, *cfg.input_shape, generator=gen).to(device)
    ys = torch.zeros(batch, 2)
    ys[: batch // 2, 1] = 1
    step = _step_fn(model, device, fast=fast, compile_=compile_)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        step(xs, ys)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step(xs, ys)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"images_per_s": batch * steps / (time.perf_counter() - start), "peak_gib": peak}


def pipeline_rate(config: str, n: int, batch: int, workers: int) -> float:
    """Images/s the DataLoader delivers from cached tensors with augmentation."""
    shape = CONFIGS[config].input_shape
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(n):
            path = Path(tmp) / f"{i}.pt"
            torch.save(torch.randn(1, *shape).half(), path)
            files.append(path)
        frame = pd.DataFrame({"image_id": [str(i) for i in range(n)]})
        labels = torch.zeros(n, 2)
        data = CachedImages(LabelledImages(frame, labels, tuple(files)), augment_seed=0)
        start = time.perf_counter()
        for _ in make_loader(data, None, batch_size=batch, workers=workers, pin_memory=False):
            pass
        return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="demo")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    cpu = torch.device("cpu")
    print(f"CPU, {args.config} config {CONFIGS[args.config].input_shape}, batch {args.batch}, "
          f"2 threads")
    rows = {}
    for name, fast in (("plain float32 NCHW", False), ("trainer", True)):
        rows[name] = measure(args.config, cpu, args.batch, args.steps, fast=fast)
        print(f"  {name:20s} {rows[name]['images_per_s']:8.1f} images/s   "
              f"peak RSS {rows[name]['peak_gib']:.2f} GiB")
    consumed = rows["trainer"]["images_per_s"]
    for workers in (0, 2):
        rate = pipeline_rate(args.config, 64, args.batch, workers)
        print(f"  data pipeline, {workers} workers: {rate:8.1f} images/s delivered "
              f"({rate / consumed:.1f}x what the trainer consumes)")
    if not torch.cuda.is_available():
        print("GPU: none visible; the paper-config GPU figures are unmeasured here")
        return
    gpu = torch.device("cuda")
    print("GPU, paper config (2944 x 1920), batch 16")
    plain = measure("paper", gpu, 16, args.steps, fast=False)
    print(f"  plain float32 NCHW   {plain['images_per_s']:8.1f} images/s  "
          f"peak {plain['peak_gib']:.1f} GiB")
    variants = [("trainer (bf16, cl)", False)] + ([("trainer + compile", True)]
                                                 if args.compile else [])
    for name, comp in variants:
        r = measure("paper", gpu, 16, args.steps, fast=True, compile_=comp)
        print(f"  {name:20s} {r['images_per_s']:8.1f} images/s  peak {r['peak_gib']:.1f} GiB"
              f"  ({r['images_per_s'] / plain['images_per_s']:.2f}x plain)")
    rate = pipeline_rate("paper", 64, 16, 8)
    print(f"  data pipeline, 8 workers: {rate:.1f} images/s delivered")


if __name__ == "__main__":
    main()
