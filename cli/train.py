"""``train`` (GMIC fine-tuning runs, `models.training.sweep`) and ``split`` (train / val / test test sets
by exam, `core.splits`)."""
from __future__ import annotations

import argparse

from cli import CommandFailed, comma_list, open_from_args

TRAIN_EXAMPLE = """One run per learning rate (--lr 1e-6:1e-5 --runs 10: ten log-spaced rates; or a list
1e-5,3e-5). Each run keeps two checkpoints in its run folder (final.pt, best.pt by validation
loss), writes one train_epochs row per epoch, then registers the child model (the best epoch)
and scores the --evaluate test sets with it and with its parent. --detach returns at once; follow
the runs with `python -m core runs list`.

examples:
  python -m core testsets create train-ILC --rule 'dataset=demo split=train histology=ILC,none'
  python -m core split --test-set train-ILC --prefix ilc --fractions 0.67,0.33,0 --seed 0
  python -m core train --model-init gmic-demo --mode full --train-set ilc-train \\
      --val-set ilc-val --lr 1e-6:1e-5 --runs 10 --epochs 40 --evaluate test-ILC --json

Split only exams you will not evaluate on (here the demo's train split, so test-ILC is held out)."""


def _fractions(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not three numbers, e.g. 0.6,0.2,0.2") \
            from exc


def register(commands, report, common) -> None:
    """Add ``train`` and ``split`` (``report`` is unused)."""
    # no models import here: torch loads only when a command runs (models.training.sweep checks values)
    p = commands.add_parser("train", parents=[common], help="fine-tune GMIC (one run per lr)",
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            description="Fine-tune GMIC on a training test set, the study's "
                                        "transfer-learning experiment.", epilog=TRAIN_EXAMPLE)
    p.add_argument("--model-init", required=True,
                   help="parent: a GMIC model in the store, gmic-demo, or a checkpoint file")
    p.add_argument("--mode", required=True, help="feature-extraction | full | scratch")
    p.add_argument("--train-set", required=True)
    p.add_argument("--val-set", required=True)
    p.add_argument("--lr", default="1e-5", help="a rate, a list a,b or a range low:high")
    p.add_argument("--runs", type=int, default=None, help="rates in a --lr range (log-spaced)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--preprocess", default="none", help="none | histeq | unsharp | sobel")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--launcher", default="local",
                   help="local (one process) | torchrun (one process per GPU here, DDP) | slurm")
    p.add_argument("--nproc-per-node", type=int, default=1,
                   help="torchrun/slurm: processes (GPUs) per node; --batch-size is the global batch")
    p.add_argument("--nodes", type=int, default=1, help="torchrun/slurm: machines")
    p.add_argument("--rdzv-endpoint", default=None,
                   help="torchrun on several nodes: HOST:PORT of this machine (the others join it)")
    p.add_argument("--partition", default=None, help="slurm: partition")
    p.add_argument("--time-min", type=int, default=240, help="slurm: wall-clock limit, minutes")
    p.add_argument("--account", default=None, help="slurm: account")
    p.add_argument("--evaluate", type=comma_list, default=[],
                   help="test sets to score the best checkpoint on (comma-separated)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", default=None, help="GMIC config (default: the parent's)")
    p.add_argument("--beta", type=float, default=None,
                   help="saliency L1 weight of the loss (default: models.training.loss's)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader processes")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (GPU)")
    p.add_argument("--freeze-bn", action="store_true",
                   help="keep every BatchNorm's running statistics as loaded (small batches)")
    p.add_argument("--mlflow-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else none)")
    p.add_argument("--detach", action="store_true",
                   help="train in a background process and print the run ids")
    p.set_defaults(func=cmd_train)

    s = commands.add_parser("split", parents=[common],
                            help="train / val / test test sets by exam, stratified",
                            description="Split the exams of a test set into <prefix>-train, "
                                        "<prefix>-val and <prefix>-test, stratified by label and "
                                        "histology, reproducible from --seed; never one exam in "
                                        "two sets.")
    s.add_argument("--test-set", required=True)
    s.add_argument("--prefix", required=True)
    s.add_argument("--fractions", type=_fractions, default=[0.6, 0.2, 0.2])
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_split)


def cmd_train(args):
    import os

    from models.training.sweep import TrainRequest, launch_runs, parse_lrs, run_summary
    from core.jobs.workers import launch_record

    request = TrainRequest(
        model_init=args.model_init, mode=args.mode, train_set=args.train_set,
        val_set=args.val_set, lrs=parse_lrs(args.lr, args.runs), epochs=args.epochs,
        batch_size=args.batch_size, preprocess=args.preprocess, device=args.device,
        launcher=args.launcher, evaluate=tuple(args.evaluate), seed=args.seed,
        config=args.config, **({} if args.beta is None else {"beta": args.beta}),
        mlflow_uri=args.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or None,
        workers=args.workers, compile=args.compile, freeze_bn=args.freeze_bn,
        nproc_per_node=args.nproc_per_node, nodes=args.nodes, rdzv_endpoint=args.rdzv_endpoint,
        partition=args.partition, time_min=args.time_min, account=args.account)
    store = open_from_args(args)
    run_ids = launch_runs(store, request, detach=args.detach)
    if args.detach or request.launcher == "slurm" or request.nodes > 1:
        return {"runs": run_ids, "detached": True, "launch": launch_record(store, run_ids[0])}
    runs = [run_summary(store, run_id) for run_id in run_ids]
    failed = [r for r in runs if r["status"] == "failed"]
    if failed and len(failed) == len(runs):
        raise CommandFailed(f"every run failed; first: {failed[0]['error']}")
    return {"runs": runs}


def cmd_split(args):
    from core.splits import create_splits

    return create_splits(open_from_args(args), test_set=args.test_set, prefix=args.prefix,
                         fractions=args.fractions, seed=args.seed)
