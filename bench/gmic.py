"""Benchmark: GMIC inference time and peak memory, ours beside the naive way, in one run.

CPU (always, ``torch.set_num_threads(2)``), one 2944 x 1920 float32 image at a time, eval:

* naive       -- the model as built, NCHW, under ``torch.no_grad()`` (what the official script does);
* cl          -- same weights, ``channels_last``, under ``torch.inference_mode()``;
* ours        -- ``optimize_for_inference`` (BatchNorm folded into the convs + channels_last),
                 under ``torch.inference_mode()``.

Variants run interleaved, round after round, and each reports its median: other jobs share the
cores, so absolute seconds are noisy and the ratios are the result. Peak memory is the process
RSS high-water mark (``ru_maxrss``; tracemalloc does not see torch's allocations), measured in a
fresh subprocess per variant so one variant's peak cannot hide another's.

GPU (only when ``torch.cuda.is_available()``): batch throughput of naive fp32 NCHW against ours
with bf16 autocast and channels_last.

    python bench/gmic.py                    # paper config, 5 rounds
    python bench/gmic.py --config cpu-small --rounds 7
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.networks.gmic import CONFIGS, build_gmic, optimize_for_inference  # noqa: E402

PUBLIC_S_PER_IMAGE = 0.40   # quoted in the issue for the official code here (fp32, 2 threads)
VARIANTS = ("naive", "cl", "ours")


def _model(variant: str, config: str) -> tuple[torch.nn.Module, object]:
    torch.manual_seed(0)
    model = build_gmic(config).eval()
    if variant == "naive":
        return model, torch.no_grad
    if variant == "cl":
        return model.to(memory_format=torch.channels_last), torch.inference_mode
    return optimize_for_inference(model), torch.inference_mode


def _input(config: str, n: int = 1, device: str = "cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, *CONFIGS[config].input_shape, generator=g).to(device)


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _rss_mb() -> float:
    return _status_mb("VmRSS") or float("nan")


def _peak_mb() -> float:
    # VmHWM: this process image's RSS high-water mark. ru_maxrss would do elsewhere, but Linux
    # carries it across fork + exec, so a child would report the (bigger) parent's peak.
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_memory(variant: str, config: str) -> dict:
    """In a fresh process: RSS before the first forward and the high-water mark after two."""
    torch.set_num_threads(2)
    model, ctx = _model(variant, config)
    x = _input(config)
    before = _rss_mb()
    with ctx():
        for _ in range(2):
            model(x)
    return {"variant": variant, "rss_before_mb": before, "peak_mb": _peak_mb()}


def cpu_times(config: str, rounds: int) -> dict[str, list[float]]:
    torch.set_num_threads(2)
    models = {v: _model(v, config) for v in VARIANTS}
    x = _input(config)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for v, (model, ctx) in models.items():   # warm-up: oneDNN primitive creation, page faults
        with ctx():
            model(x)
    for _ in range(rounds):
        for v, (model, ctx) in models.items():
            with ctx():
                t0, c0 = time.perf_counter(), time.process_time()
                model(x)
                times[v].append(time.perf_counter() - t0)
                cpu[v].append(time.process_time() - c0)
    return times, cpu


def gpu_throughput(config: str, batch: int, rounds: int) -> dict[str, float]:
    """Images per second on CUDA: naive fp32 NCHW vs ours (fused, channels_last, bf16 autocast)."""
    out = {}
    x = _input(config, batch, "cuda")
    naive = build_gmic(config).eval().cuda()
    ours = optimize_for_inference(naive)
    runs = {
        "naive_fp32": (naive, lambda m: torch.no_grad()),
        "ours_bf16_cl": (ours, lambda m: torch.autocast("cuda", dtype=torch.bfloat16)),
    }
    for name, (model, amp) in runs.items():
        with torch.inference_mode(), amp(model):
            model(x)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            ts = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                model(x)
                torch.cuda.synchronize()
                ts.append(time.perf_counter() - t0)
        out[name] = batch / statistics.median(ts)
        out[name + "_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="paper", choices=sorted(CONFIGS))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--gpu-batch", type=int, default=8)
    p.add_argument("--json", action="store_true", help="print one JSON document only")
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child_memory(args.child, args.config)))
        return 0

    times, cpu = cpu_times(args.config, args.rounds)
    med = {v: statistics.median(ts) for v, ts in times.items()}
    med_cpu = {v: statistics.median(ts) for v, ts in cpu.items()}
    mem = {}
    for v in VARIANTS:
        res = subprocess.run([sys.executable, __file__, "--config", args.config, "--child", v],
                             capture_output=True, text=True, check=True)
        mem[v] = json.loads(res.stdout.strip().splitlines()[-1])
    gpu = gpu_throughput(args.config, args.gpu_batch, args.rounds) if torch.cuda.is_available() else None

    report = {"config": args.config, "input_shape": CONFIGS[args.config].input_shape,
              "threads": 2, "rounds": args.rounds, "cpu_s_per_image_median": med,
              "cpu_s_per_image_all": times,
              "cpu_core_seconds_per_image_median": med_cpu, "memory": mem, "gpu": gpu,
              "public_s_per_image_quoted": PUBLIC_S_PER_IMAGE}
    if args.json:
        print(json.dumps(report))
        return 0
    h, w = CONFIGS[args.config].input_shape
    print(f"GMIC '{args.config}' {h}x{w} float32, CPU, 2 threads, median of {args.rounds} interleaved rounds")
    print("(wall s/image; core-s = CPU seconds of all threads, less sensitive to other jobs)")
    print(f"{'variant':<8} {'s/image':>8} {'naive/this':>10} {'min':>7} {'max':>7} {'core-s':>7} "
          f"{'naive/this':>10} {'peak RSS MB':>12} {'forward +MB':>12}")
    for v in VARIANTS:
        m = mem[v]
        print(f"{v:<8} {med[v]:8.3f} {med['naive'] / med[v]:10.2f} {min(times[v]):7.3f} "
              f"{max(times[v]):7.3f} {med_cpu[v]:7.2f} {med_cpu['naive'] / med_cpu[v]:10.2f} "
              f"{m['peak_mb']:12.0f} {m['peak_mb'] - m['rss_before_mb']:12.0f}")
    print(f"public implementation, quoted for this machine: {PUBLIC_S_PER_IMAGE:.2f} s/image "
          f"(ours / quoted = {med['ours'] / PUBLIC_S_PER_IMAGE:.2f}; the naive row runs the same "
          "operations as the official code)")
    if gpu is None:
        print("GPU: none visible (torch.cuda.is_available() is False); bf16 + channels_last path skipped")
    else:
        print(f"GPU batch {args.gpu_batch}: naive fp32 {gpu['naive_fp32']:.1f} img/s "
              f"(peak {gpu['naive_fp32_peak_gib']:.1f} GiB), ours bf16+channels_last "
              f"{gpu['ours_bf16_cl']:.1f} img/s (peak {gpu['ours_bf16_cl_peak_gib']:.1f} GiB), "
              f"ratio {gpu['ours_bf16_cl'] / gpu['naive_fp32']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
