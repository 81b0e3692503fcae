"""One Adam step of the demo GMIC with the study's loss, on this process's share of a fixed global
batch. ``python -m torch.distributed.run --nproc-per-node 2 -m tests._ddp_step OUT`` (test_distributed)."""
from __future__ import annotations

import sys

import numpy as np
import torch

from models.training.distributed import (DistContext, all_reduce_sum, gather_array, init_distributed, leave_process,
                                leave_together, rank_batches, rank_slice, set_training, teardown, unwrap,
                                wrap_model)
from models.networks.gmic import build_gmic
from models.training.loss import gmic_labels, gmic_loss

GLOBAL_BATCH = 4


def one_step(ctx: DistContext, *, feature_extraction: bool = False) -> dict:
    torch.manual_seed(0)
    model = build_gmic("demo")
    if feature_extraction:
        model.train()
        model.freeze_backbones(True)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(GLOBAL_BATCH, 1, 512, 320, generator=gen)
    labels = gmic_labels([1, 0, 1, 0], [0, 1, 0, 0])
    model = set_training(wrap_model(model, ctx), frozen_backbones=feature_extraction)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5)  # the top of the study's range; Adam's first step is ~lr * sign(grad)
    ((idx, size),) = rank_batches(np.arange(GLOBAL_BATCH), GLOBAL_BATCH, ctx)
    idx = torch.as_tensor(idx)
    out = model(x[idx], intermediates=True)
    loss = gmic_loss(out, labels[idx], percent_t=unwrap(model).config.percent_t, reduction="sum")
    (loss * ctx.world_size / size).backward()
    grads = {n: p.grad.detach().clone() for n, p in unwrap(model).named_parameters() if p.grad is not None}
    opt.step()
    share = rank_slice(GLOBAL_BATCH, ctx)
    scores = out["y_fusion"][:, 1].detach().numpy()  # this rank's shard: rank_slice == its batch part
    assert (share.start, share.stop) == (int(idx[0]), int(idx[-1]) + 1)
    return {"params": {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()},
            "grads": grads, "scores": torch.from_numpy(gather_array(scores, ctx)),
            "loss_sum": torch.from_numpy(all_reduce_sum([float(loss.detach()), len(idx)], ctx))}


if __name__ == "__main__":
    ctx = init_distributed("cpu")
    result = {mode: one_step(ctx, feature_extraction=mode == "fx") for mode in ("full", "fx")}
    if ctx.is_main:
        torch.save({**result, "world_size": ctx.world_size}, sys.argv[1])
    leave_together(ctx)
    teardown(ctx)
    leave_process(ctx, 0)
