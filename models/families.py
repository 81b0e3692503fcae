"""The model families ILCscope runs, as data (timm's ``default_cfgs``): one row per family says
how to load it, how its inputs are cut, at which level it scores and what saliency it leaves.

Why a table: ``predict``, the pages and the demo read a family's settings from here instead of
branching on its name, so a family is added in one place. The study's other two models
(end2end, Faster R-CNN) are not here: they run only in the metarepository's containers and come
in as imported predictions (their published AUCs are in `core.reports.published`).

Guessing a family from a checkpoint: every family names the state-dict prefixes only it has
(``FAMILY.signature``); `guess_family` reads the file's keys (weights_only) and picks the one
family whose signature matches, or says which families it could be.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import InputError

__all__ = ["FAMILIES", "Family", "family", "guess_family"]


@dataclass(frozen=True)
class Family:
    """One family.

    name : the CLI's ``--family`` and the store's ``models.kind``.
    title, paper : how pages and the README name it.
    level : the level its scores are stored at ('image' or 'breast').
    windows : 'glam' or 'nyu' (`models.inference.windows.WINDOWS`), or None for GMIC, whose
        ILCscope pipeline resizes the breast box (`models.inference.preprocess`).
    default_draws : augmentation draws when ``--draws`` is not given (the metarepository's run).
    saliency : what its saliency files hold ('cam', 'segmentation', 'heatmaps') or None.
    signature : state-dict key prefixes only this family's checkpoints have.
    patch_model : needs the DenseNet-121 patch classifier (``--patch-model``) for heatmaps.
    channels : input channels (1 image, 3 image + benign + malignant heatmaps).
    """

    name: str
    title: str
    paper: str
    level: str
    windows: str | None
    default_draws: int
    saliency: str | None
    signature: tuple[str, ...]
    load: Callable[[Path, str], object] = field(repr=False, compare=False)
    default_config: str = "paper"
    patch_model: bool = False
    channels: int = 1


def _load_gmic(path: Path, config: str):
    from models.networks.gmic import load_gmic_checkpoint
    return load_gmic_checkpoint(path, config)


def _load_glam(path: Path, config: str):
    from models.networks.glam import load_glam_checkpoint
    return load_glam_checkpoint(path, config)


def _load_nyu(path: Path, config: str):
    from models.networks.nyu_dmv import load_nyu_dmv_checkpoint
    return load_nyu_dmv_checkpoint(path, config)


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("gmic", "GMIC", "Shen et al., Medical Image Analysis 2021", "image", None, 0, "cam",
           ("ds_net.", "left_postprocess_net.", "mil_attn_"), _load_gmic),
    Family("glam", "GLAM", "Liu et al., MIDL 2021", "image", "glam", 0, "segmentation",
           ("global_network.downsampling_branch.", "detection_network.dn_resnet."), _load_glam),
    # the metarepository's nyu_model: one augmented draw (--use-augmentation --num-epochs 1)
    Family("nyu-image", "NYU image-only", "Wu et al., IEEE TMI 2020", "breast", "nyu", 1, None,
           ("four_view_resnet.", "fc1_cc.", "output_layer_cc."), _load_nyu,
           default_config="image"),
)}


def family(name: str) -> Family:
    """The family called ``name``; an unknown name lists the known ones."""
    if name not in FAMILIES:
        raise InputError(f"family {name!r} is unknown; pass one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def guess_family(path: str | Path) -> Family:
    """The one family whose signature the checkpoint's keys carry (read with weights_only)."""
    from models.networks.checkpoints import read_state_dict

    keys = list(read_state_dict(path, family="model"))
    matches = [f for f in FAMILIES.values() if _carries(keys, f.signature)]
    if len(matches) == 1:
        return matches[0]
    what = "several families" if matches else "no known family"
    raise InputError(f"checkpoint {path} matches {what} ({', '.join(f.name for f in matches) or 'none'}"
                     f"); pass --family, one of {', '.join(FAMILIES)}")


def _carries(keys: Iterable[str], signature: tuple[str, ...]) -> bool:
    stripped = [k[len("module."):] if k.startswith("module.") else k for k in keys]
    return all(any(k.startswith(p) for k in stripped) for p in signature)
