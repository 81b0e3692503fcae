"""One epoch of the real fine-tuning recipe (`models.training.recipe.FineTuneRecipe`: one Adam step of
the demo GMIC on a global batch of four images, then validation) on this process's shares.
``python -m torch.distributed.run --nproc-per-node 2 -m tests._ddp_step OUT`` (test_distributed)."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

from models.networks.gmic import build_gmic
from models.training.data import LabelledImages
from models.training.distributed import DistContext, init_distributed, leave_process, leave_together, teardown
from models.training.loss import DEFAULT_BETA, gmic_labels
from models.training.recipe import FineTuneRecipe, LoopSettings

GLOBAL_BATCH = 4
MODES = ("full", "feature-extraction")


def _images(folder: Path, name: str, malignant: list[int], benign: list[int], shape,
            gen: torch.Generator) -> LabelledImages:
    """Random images cached as `models.training.data.build_cache` leaves them (float16 files)."""
    files = tuple(folder / f"{name}-{i}.pt" for i in range(len(malignant)))
    for path in files:
        torch.save(torch.randn(1, *shape, generator=gen).half(), path)
    frame = pd.DataFrame({"image_id": [p.stem for p in files]})
    return LabelledImages(frame, gmic_labels(malignant, benign), files)


def one_epoch(ctx: DistContext, *, mode: str) -> dict:
    """The recipe's first epoch: the weights and gradients after its one step, its training
    (mean loss, images) and its validation (mean loss, AUC over six images)."""
    torch.manual_seed(0)
    model = build_gmic("demo")
    # lr is the top of the study's range; Adam's first step is ~lr * sign(grad)
    settings = LoopSettings(mode=mode, lr=1e-5, epochs=1, batch_size=GLOBAL_BATCH, seed=0,
                            beta=DEFAULT_BETA, device=ctx.device, freeze_bn=True)
    gen = torch.Generator().manual_seed(1)
    with tempfile.TemporaryDirectory() as tmp:
        shape = model.config.input_shape
        train = _images(Path(tmp), "train", [1, 0, 1, 0], [0, 1, 0, 0], shape, gen)
        val = _images(Path(tmp), "val", [1, 0, 0, 1, 0, 1], [0, 0, 1, 0, 0, 0], shape, gen)
        recipe = FineTuneRecipe(settings, folder=Path(tmp) / "run", meta={}, ctx=ctx)
        recipe.setup(model, train, val)
        train_loss, images = recipe.train_epoch(1)
        val_loss, val_auc = recipe.validate()
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "grads": {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None},
            "train": torch.tensor([train_loss, images], dtype=torch.float64),
            "val": torch.tensor([val_loss, val_auc], dtype=torch.float64)}


if __name__ == "__main__":
    ctx = init_distributed("cpu")
    result = {mode: one_epoch(ctx, mode=mode) for mode in MODES}
    if ctx.is_main:
        torch.save({**result, "world_size": ctx.world_size}, sys.argv[1])
    leave_together(ctx)
    teardown(ctx)
    leave_process(ctx, 0)
