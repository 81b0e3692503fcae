"""Timing for the benches: the fastest of a few runs, or percentiles over many.

Other jobs share the cores, so a bench reports the least disturbed run (``best_of``) or the
median (``percentiles_ms``) and prints ratios to the naive way, not bare seconds.
"""
from __future__ import annotations

import time

import numpy as np


def _runs(fn, repeat: int) -> tuple[list[float], list[float], object]:
    """Wall and process-CPU seconds of ``repeat`` calls of ``fn``, and the last result."""
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return walls, cpus, out


def best_of(fn, *, repeat: int = 3) -> tuple[float, object]:
    """(wall s of the fastest of ``repeat`` runs, the last result)."""
    walls, _, out = _runs(fn, repeat)
    return min(walls), out


def best_of_with_cpu(fn, *, repeat: int = 3) -> tuple[float, float, object]:
    """(wall s, CPU s, last result) of the fastest run; CPU is the process's time over all
    threads, steadier than wall time on a loaded machine."""
    walls, cpus, out = _runs(fn, repeat)
    wall, cpu = min(zip(walls, cpus))
    return wall, cpu, out


def percentiles_ms(fn, *, repeat: int, q: tuple[float, ...] = (50,)) -> tuple:
    """(wall ms at each percentile in ``q``..., last result); the default is the median."""
    walls, _, out = _runs(fn, repeat)
    return (*(float(np.percentile(walls, p)) * 1e3 for p in q), out)
