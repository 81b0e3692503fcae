"""The demo's fine-tuned child: the demo GMIC fine-tuned on the demo's ILC training exams.

Why it ships: the study's central experiment is a parent and its ILC-tuned child scored on the
same ILC cases; the hosted demo cannot train (read-only, and 2 CPU cores), so the child that
the recipe below makes ships as ``models/demo/checkpoints/gmic-demo-ilc.pt`` with its training
history. ``python -m core demo`` (`add_demo_child`) registers it with its parent, scores the
demo with it, and records its training run (a ``runs`` row with its per-epoch losses), so
the Benchmark, Saliency and Fine-tuning pages show parent and child.

The recipe (`ChildRecipe`; ``python -m models.demo.finetune`` re-makes the checkpoint): build
the default demo store (seed 0) in a temporary folder; ``train-ILC`` = its train split's ILC and
healthy exams, split by exam into ``ilc-train`` and ``ilc-val`` (`core.splits`, seed 0); full
fine-tuning of the shipped demo GMIC (`models.training.sweep`, the CLI's own path) on ``ilc-train`` with
``ilc-val`` choosing the best epoch. ``test-ILC``'s exams are never trained on.
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
import torch

from core.errors import InputError
from core.progress import ProgressFn
from core.store import Store, write_result
from core.store.runs import run_frame

__all__ = ["CHILD_CHECKPOINT", "ChildRecipe", "DEMO_CHILD", "DEMO_RUN", "TRAIN_SETS",
           "add_demo_child", "make_child", "split_demo_ilc", "train_child"]

CHILD_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "gmic-demo-ilc.pt"
DEMO_CHILD = "gmic-demo-ilc"
DEMO_RUN = f"train-demo-{DEMO_CHILD}"   # the finished run the demo store records for it
TRAIN_SETS = {"train-ILC": "dataset=demo split=train histology=ILC,none"}
SPLIT_PREFIX = "ilc"   # ilc-train, ilc-val


@dataclass(frozen=True)
class ChildRecipe:
    """Every setting of the child's run; the defaults made the shipped checkpoint."""

    mode: str = "full"
    lr: float = 3e-6
    epochs: int = 20
    batch_size: int = 8
    seed: int = 0
    freeze_bn: bool = False
    fractions: tuple[float, float, float] = (0.67, 0.33, 0.0)


def split_demo_ilc(store: Store, recipe: ChildRecipe = ChildRecipe()) -> bool:
    """``train-ILC`` and its exam split ``ilc-train`` / ``ilc-val`` in a demo store; False
    when the demo is too small to have such exams (nothing split)."""
    from core.splits import create_splits

    if not store.create_testsets(TRAIN_SETS)["train-ILC"]:
        return False
    create_splits(store, test_set="train-ILC", prefix=SPLIT_PREFIX, fractions=recipe.fractions,
                  seed=recipe.seed)
    return True


def train_child(store: Store, recipe: ChildRecipe = ChildRecipe(), *,
                parent: str | Path = "gmic-demo", evaluate: tuple[str, ...] = ()) -> str:
    """Run the recipe in a demo ``store`` (`models.training.sweep`, the CLI's own path); returns the
    run id (its child model registered, ``evaluate`` scored)."""
    from models.training.sweep import TrainRequest, launch_runs

    if not split_demo_ilc(store, recipe):
        raise InputError("this demo store has no ILC or healthy training exams to fine-tune on")
    request = TrainRequest(model_init=str(parent), mode=recipe.mode,
                           train_set=f"{SPLIT_PREFIX}-train", val_set=f"{SPLIT_PREFIX}-val",
                           lrs=(recipe.lr,), epochs=recipe.epochs, batch_size=recipe.batch_size,
                           seed=recipe.seed, device="cpu", freeze_bn=recipe.freeze_bn,
                           evaluate=evaluate)
    (run_id,) = launch_runs(store, request, detach=False)
    return run_id


def make_child(out: Path, recipe: ChildRecipe = ChildRecipe(), *, parent: Path | None = None,
               progress: ProgressFn | None = None) -> dict:
    """Train the child by ``recipe`` on a fresh default demo store; save it to ``out``."""
    from core.demo.build import build_demo
    from core.store import open_store
    from core.store.runs import get_run
    from models.inference.predict import DEMO_CHECKPOINT
    from models.training.recipe import best_path, final_path

    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "demo.duckdb")
        build_demo(store, progress=progress)
        parent = Path(parent or DEMO_CHECKPOINT)
        row = get_run(store, train_child(store, recipe, parent=parent))
        if row["status"] != "done":
            raise RuntimeError(f"the child's run {row['status']}: {row.get('error')}")
        folder = store.files_dir / row["folder"]
        best = torch.load(best_path(folder), weights_only=True)
        final = torch.load(final_path(folder), weights_only=True)
        payload = {"state_dict": best["state_dict"], "config": best["config"],
                   "recipe": dataclasses.asdict(recipe), "parent": parent.stem,
                   "best_epoch": final["best_epoch"], "best_val_loss": final["best_val_loss"],
                   "history": final["history"]}
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(payload, out.with_suffix(".tmp"))
        shutil.move(out.with_suffix(".tmp"), out)
    return {k: payload[k] for k in ("best_epoch", "best_val_loss")}


def add_demo_child(store: Store, *, parent: str, test_set: str = "test-all",
                   progress: ProgressFn | None = None) -> int:
    """Register the shipped child beside ``parent``, score ``test_set`` with it, and record its
    training run (one ``runs`` row, its ``train_epochs``); 0 when the checkpoint is absent.
    The test split only: scores on its own training exams would flatter the child (and it keeps
    the hosted demo's cold start: a third of the scoring saved)."""
    from models.inference.predict import predict_test_set

    if not CHILD_CHECKPOINT.is_file():
        return 0
    saved = torch.load(CHILD_CHECKPOINT, map_location="cpu", weights_only=True)
    recipe = ChildRecipe(**{k: tuple(v) if isinstance(v, list) else v
                            for k, v in saved["recipe"].items()})
    if not split_demo_ilc(store, recipe):   # a demo too small to have trained the child on
        return 0
    description = (f"{parent} fine-tuned ({recipe.mode}, lr {recipe.lr:g}, {recipe.epochs} "
                   f"epochs, best epoch {saved['best_epoch']}) on the demo's ILC and healthy "
                   "training exams (models/demo/finetune.py); never trained on test-ILC")
    summary = predict_test_set(store, checkpoints=[CHILD_CHECKPOINT], name=DEMO_CHILD,
                               test_set=test_set, parent=parent, description=description,
                               synthetic=True, device="cpu", batch_size=32, chunk_size=512,
                               progress=progress)
    _record_run(store, saved, recipe, parent)
    return summary.n_predicted


def _record_run(store: Store, saved: dict, recipe: ChildRecipe, parent: str) -> None:
    """The child's training run as the Fine-tuning page reads runs (done, with its epochs)."""
    run_id = DEMO_RUN
    history = pd.DataFrame(saved["history"]).assign(run_id=run_id)
    params = {"model_init": parent, "mode": recipe.mode, "train_set": f"{SPLIT_PREFIX}-train",
              "val_set": f"{SPLIT_PREFIX}-val", "lrs": [recipe.lr], "lr": recipe.lr,
              "epochs": recipe.epochs, "batch_size": recipe.batch_size, "preprocess": "none",
              "device": "cpu", "launcher": "local", "evaluate": ["test-ILC", "test-IDC"],
              "seed": recipe.seed, "freeze_bn": recipe.freeze_bn, "sweep": run_id,
              "parent_model": parent, "config": saved["config"], "child_model": DEMO_CHILD,
              "best_epoch": saved["best_epoch"], "best_val_loss": saved["best_val_loss"]}
    elapsed = float(history["elapsed_s"].sum())
    ended = datetime(2026, 1, 1)   # a fixed stamp: the demo store is the same on every build
    row = {"run_id": run_id, "kind": "train", "params": params, "code_version": "demo",
           "status": "done", "started_at": ended - pd.Timedelta(seconds=elapsed),
           "ended_at": ended, "progress_done": len(history), "progress_total": len(history),
           "ingested": {}, "chunks": [], "folder": f"runs/{run_id}",   # no folder: nothing live
           "message": "shipped with the demo"}
    with tempfile.TemporaryDirectory() as tmp:
        store.ingest(write_result(tmp, {"runs": run_frame(row), "train_epochs": history}))


def main(argv: list[str] | None = None) -> int:
    """``python -m models.demo.finetune [--out PATH] [--parent CKPT] [--lr] [--epochs]``."""
    parser = argparse.ArgumentParser(prog="python -m models.demo.finetune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=CHILD_CHECKPOINT)
    parser.add_argument("--parent", type=Path, default=None, help="default: the demo GMIC")
    defaults = ChildRecipe()
    for field in ("lr", "epochs", "seed"):
        parser.add_argument(f"--{field}", type=type(getattr(defaults, field)),
                            default=getattr(defaults, field))
    parser.add_argument("--freeze-bn", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    recipe = dataclasses.replace(defaults, lr=args.lr, epochs=args.epochs, seed=args.seed,
                                 freeze_bn=args.freeze_bn)
    print(make_child(args.out, recipe, parent=args.parent), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
