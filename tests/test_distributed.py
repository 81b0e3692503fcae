"""DDP: two gloo processes on CPU take the same Adam step as one process on the same global batch
(tensor by tensor, within 1e-5), in full fine-tuning and in feature extraction; sharding helpers.

Gradients are compared too (rtol 1e-3, atol 1e-5: float32 sums in another order): Adam's first step
is about lr * sign(grad), so the parameters alone would only check signs. lr is 1e-5 (the top of the
study's range), so a gradient within rounding of zero cannot move a weight by more than 1e-5."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from core.errors import InputError
from models.distributed import DistContext, init_distributed, rank_batches, rank_slice, wrap_model
from models.gmic import build_gmic
from tests._ddp_step import one_step
from tests.conftest import REPO


def test_two_gloo_processes_equal_one(tmp_path):
    out = tmp_path / "ddp.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "tests._ddp_step", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = torch.load(out)
    assert ddp["world_size"] == 2
    for mode in ("full", "fx"):
        single = one_step(DistContext(), feature_extraction=mode == "fx")
        assert ddp[mode]["grads"].keys() == single["grads"].keys()
        for name, g in single["grads"].items():
            torch.testing.assert_close(ddp[mode]["grads"][name], g, rtol=1e-3, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
        assert ddp[mode]["params"].keys() == single["params"].keys()
        for name, p in single["params"].items():
            torch.testing.assert_close(ddp[mode]["params"][name], p, rtol=0, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
        torch.testing.assert_close(ddp[mode]["scores"], single["scores"], rtol=0, atol=1e-5)
        torch.testing.assert_close(ddp[mode]["loss_sum"], single["loss_sum"], rtol=1e-5, atol=0)
        assert ddp[mode]["loss_sum"][1].item() == 4
    # the step really moved the weights, and feature extraction moved only the heads
    torch.manual_seed(0)
    init = build_gmic("demo")
    heads = {id(p) for p in init.head_parameters()}
    fx_names = {n for n, p in init.named_parameters() if id(p) in heads}
    moved = {n for n, p in init.named_parameters()
             if (ddp["fx"]["params"][n] - p.detach()).abs().max() > 5e-6}
    assert moved == fx_names
    assert all((ddp["full"]["params"][n] - p.detach()).abs().max() > 5e-6
               for n, p in init.named_parameters() if n.endswith("weight") and "fusion" in n)


def test_rank_batches_rebuild_the_single_process_batches():
    idx = np.arange(11)
    single = rank_batches(idx, 4, DistContext())
    assert [b.tolist() for b, _ in single] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    parts = [rank_batches(idx, 4, DistContext(rank=r, world_size=3)) for r in range(3)]
    for b, (batch, size) in enumerate(single):
        assert np.concatenate([p[b][0] for p in parts]).tolist() == batch.tolist()
        assert all(p[b][1] == size for p in parts)
    # a 2-image tail cannot feed 3 ranks: dropped on every rank alike
    assert [len(p) for p in (rank_batches(np.arange(6), 4, DistContext(rank=r, world_size=3))
                             for r in range(3))] == [1, 1, 1]
    with pytest.raises(InputError, match="smaller than"):
        rank_batches(idx, 2, DistContext(rank=0, world_size=3))
    slices = [rank_slice(10, DistContext(rank=r, world_size=3)) for r in range(3)]
    assert [list(range(10))[s] for s in slices] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_single_process_and_bad_settings(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.device.type) == (0, 1, True, "cpu")
    model = build_gmic("demo")
    assert wrap_model(model, ctx) is model
    with pytest.raises(InputError, match="batchnorm"):
        wrap_model(model, ctx, batchnorm="local")
    with pytest.raises(InputError, match="GPU-only"):
        wrap_model(model, DistContext(rank=0, world_size=2), batchnorm="sync")
