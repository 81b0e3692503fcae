"""``predict``: a model of a family ILCscope runs (GMIC or an ensemble of GMICs, GLAM, the NYU
image-only, image + heatmaps and single-image models) over a test set: scores, saliency (the
heatmap families: their cached heatmaps) and patches into the store.

The networks live in ``models`` (imported only when the command runs: core never needs torch);
the family comes from ``--family`` or the checkpoint's keys (`models.families.guess_family`);
this handler resolves the flags and draws the progress bar.
"""
from __future__ import annotations

import argparse

from cli import CommandFailed, comma_list, open_from_args
from core.errors import InputError
from core.progress import tqdm_progress

EXAMPLE = """The model is a checkpoint file, a shipped model (gmic-demo) or a GMIC model already in
the store. Images the model has already scored are skipped (resumable) unless --overwrite.
Results land every --chunk-size images; saliency maps go to <store>_files/saliency/<model>/.

examples:
  python -m core predict --model gmic-demo --test-set test-all --json
  python -m core predict --model model_joint.ckpt --family glam --test-set test-ILC \\
      --name glam --draws 0
  python -m core predict --model sample_imageheatmaps_model.p --family nyu-image-heatmaps \\
      --patch-model sample_patch_model.p --test-set test-ILC --name nyu-heatmaps --json
  python -m core predict --model sample_model_1.p --config cpu-small --test-set test-ILC \\
      --name gmic-cpu-small --device auto --batch-size 8
  python -m core predict --ensemble sample_model_1.p,sample_model_2.p,sample_model_3.p,\\
sample_model_4.p,sample_model_5.p --config paper-1,paper-2,paper-3,paper-4,paper-5 \\
      --test-set test-all --name gmic-ensemble"""



def register(commands, report, common) -> None:
    from models.families import FAMILIES   # a table of names: no torch

    p = commands.add_parser("predict", parents=[common],
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            help="score a test set with GMIC, GLAM or the NYU models: "
                                 "malignant/benign, saliency, patches",
                            description="Run a model (GMIC, a GMIC ensemble: mean y_fusion and "
                                        "saliency, GLAM, or an NYU model: breast level, image "
                                        "level for the single-image ones) over every image of a "
                                        "test set and store the predictions.",
                            epilog=EXAMPLE)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="checkpoint path, shipped model name or a stored model "
                                       "ILCscope runs")
    which.add_argument("--ensemble", type=comma_list, metavar="CKPT1,CKPT2,...",
                       help="comma-separated checkpoints averaged like the official ensemble")
    p.add_argument("--family", metavar="FAMILY",
                   help=f"model family ({', '.join(FAMILIES)}; default: guessed from the "
                        "checkpoint's keys)")
    p.add_argument("--patch-model", metavar="FILE",
                   help="the NYU patch classifier (sample_patch_model.p) whose heatmaps the "
                        f"{' and '.join(f.name for f in FAMILIES.values() if f.patch_model)} "
                        "families read; heatmaps are cached under <store>_files/heatmaps/")
    p.add_argument("--draws", type=int, help="GLAM, NYU: augmented windows averaged per image "
                                             "(0 = the exact window; default: GLAM 0, NYU 1)")
    p.add_argument("--test-set", required=True, help="named test set (see `testsets list`)")
    p.add_argument("--config", type=comma_list, metavar="NAME[,NAME...]",
                   help="network config: GMIC paper, paper-1..5, cpu-small, tiny, demo, one for "
                        "all or one per checkpoint (default: from the checkpoint, else paper); "
                        "GLAM and NYU one (NYU: image, demo; the family sets the heatmap "
                        "channels)")
    p.add_argument("--name", help="model name in the store (default: --model's name or file stem; "
                                  "gmic-ensemble for --ensemble)")
    p.add_argument("--parent", help="the model this one was fine-tuned from")
    p.add_argument("--description", help="free text for the models table")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (for CUDA)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--chunk-size", type=int, default=64, help="images per ingest (default 64)")
    p.add_argument("--overwrite", action="store_true", help="re-score images already scored")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args):
    from models.inference.predict import predict_test_set, resolve_model

    store = open_from_args(args)
    if args.ensemble is not None:
        if len(args.ensemble) < 2:
            raise InputError(f"--ensemble {','.join(args.ensemble)!r} names "
                             f"{len(args.ensemble)} checkpoint; pass two or more, or use --model")
        name, checkpoints = "gmic-ensemble", []
        for spec in args.ensemble:
            checkpoints += resolve_model(store, spec)[1]
    else:
        name, checkpoints = resolve_model(store, args.model)
    fam = _family(args, store, checkpoints)
    if fam.windows is not None:
        return _predict_windows(args, store, fam, name, checkpoints)
    fam.check_patch_model(args.patch_model)
    if args.draws is not None:
        raise InputError("draws applies to the window families (glam, nyu-*); GMIC reads "
                         "the breast box")
    with tqdm_progress("predict") as progress:
        summary = predict_test_set(
            store, checkpoints=checkpoints, name=args.name or name, test_set=args.test_set,
            configs=args.config, parent=args.parent, description=args.description,
            device=args.device, batch_size=args.batch_size, bf16=args.bf16,
            overwrite=args.overwrite, chunk_size=args.chunk_size, progress=progress)
    if summary.n_failed and not summary.n_predicted:
        raise CommandFailed(f"no image of {args.test_set} could be scored ({summary.n_failed} "
                            f"failed), first: {summary.failures[0]}")
    return summary.to_dict()


def _family(args, store, checkpoints):
    """--family, else the stored model's kind, else the family the checkpoint's keys name."""
    from models.families import FAMILIES, family, guess_family

    if args.family is not None:
        return family(args.family)
    models = store.models()
    kind = models.loc[models["model"] == (args.model or ""), "kind"]
    if len(kind) and kind.iat[0] in FAMILIES:
        return FAMILIES[kind.iat[0]]
    return guess_family(checkpoints[0])


def _predict_windows(args, store, fam, name, checkpoints):
    from models.inference.predict_windows import predict_windows

    if args.ensemble is not None or len(checkpoints) != 1:
        raise InputError(f"ensemble is for GMIC; {fam.title} runs one checkpoint (pass --model)")
    if args.config is not None and len(args.config) != 1:
        raise InputError(f"config {','.join(args.config)!r}: {fam.title} takes one config")
    with tqdm_progress("predict") as progress:
        summary = predict_windows(
            store, fam=fam, checkpoint=checkpoints[0], name=args.name or name,
            test_set=args.test_set, config=args.config[0] if args.config else None,
            draws=args.draws, patch_model=args.patch_model, parent=args.parent,
            description=args.description,
            device=args.device, batch_size=args.batch_size, overwrite=args.overwrite,
            chunk_size=args.chunk_size, progress=progress)
    if summary.n_failed and not summary.n_predicted:
        raise CommandFailed(f"no image of {args.test_set} could be scored ({summary.n_failed} "
                            f"failed), first: {summary.failures[0]}")
    return summary.to_dict()
