"""The model families ILCscope runs, as data (timm's ``default_cfgs``): one row per family says
how to load it, how its inputs are cut, at which level it scores and what saliency it leaves.

Why a table: ``predict``, the pages and the demo read a family's settings from here instead of
branching on its name, so a family is added in one place. The study's other two models
(end2end, Faster R-CNN) are not here: they run only in the metarepository's containers and come
in as imported predictions (their published AUCs are in `core.reports.published`).

Guessing a family from a checkpoint: every family names the state-dict prefixes only it has
(``FAMILY.signature``) and, where image-only and image + heatmaps checkpoints share their keys,
the first conv whose input channels tell them apart (``FAMILY.first_conv``, 1 or 3);
`guess_family` reads the file's keys (weights_only) and picks the one family that fits both, or
says which families it could be.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import InputError

__all__ = ["FAMILIES", "Family", "family", "guess_family"]


def _plain_forward(model, x, views: Sequence[str]) -> dict:
    return model(x)


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
    signature : alternatives of state-dict key prefixes only this family's checkpoints have
        (a checkpoint matches when it carries every prefix of one alternative).
    load : (checkpoint path, config name) -> the network, strictly loaded, eval mode, CPU.
    scores : the output holding the scores: image level (N, 2) benign, malignant; breast level
        (N, 4) in `models.networks.nyu_dmv.LABELS` order.
    forward : (network, batch, view names) -> outputs; views matter to per-view heads only.
    patch_model : needs the DenseNet-121 patch classifier (``--patch-model``) for heatmaps.
    channels : input channels (1 image, 3 image + benign + malignant heatmaps).
    first_conv : candidate keys of the first conv's weight, whose dim 1 is ``channels``.
    """

    name: str
    title: str
    paper: str
    level: str
    windows: str | None
    default_draws: int
    saliency: str | None
    signature: tuple[tuple[str, ...], ...]
    load: Callable[[Path, str], object] = field(repr=False, compare=False)
    default_config: str = "paper"
    scores: str = "y_global"
    forward: Callable = field(default=_plain_forward, repr=False, compare=False)
    patch_model: bool = False
    channels: int = 1
    first_conv: tuple[str, ...] = ()

    def check_patch_model(self, path) -> None:
        """A patch model is given exactly when this family reads heatmaps (one line otherwise)."""
        if self.patch_model and path is None:
            raise InputError(f"family {self.name} reads heatmaps made by the NYU patch classifier; "
                             "pass --patch-model FILE (sample_patch_model.p)")
        if not self.patch_model and path is not None:
            takes = ", ".join(f.name for f in FAMILIES.values() if f.patch_model)
            raise InputError(f"family {self.name} reads no heatmaps, so --patch-model {path} has no "
                             f"use; drop it (families that take one: {takes})")


def _load_gmic(path: Path, config: str):
    from models.networks.gmic import load_gmic_checkpoint
    return load_gmic_checkpoint(path, config)


def _load_glam(path: Path, config: str):
    from models.networks.glam import load_glam_checkpoint
    return load_glam_checkpoint(path, config)


def _nyu_loader(channels: int, *, single: bool) -> Callable[[Path, str], object]:
    """The family sets the input channels, ``--config`` only the size ('image', 'tiny')."""
    def load(path: Path, config: str):
        from models.networks import nyu_dmv
        loader = nyu_dmv.load_nyu_single_views if single else nyu_dmv.load_nyu_dmv_checkpoint
        return loader(path, config, channels=channels)
    return load


def _per_view_forward(model, x, views: Sequence[str]) -> dict:
    return model(x, views)


_NYU = "Wu et al., IEEE TMI 2020"
_SPLIT = ("four_view_resnet.", "fc1_cc.", "output_layer_cc.")
_IMAGE_WISE = (("four_view_resnet.", "fc1_lcc.", "output_layer_lcc."),
               ("view_resnet.", "fc1.", "output_layer.fc_layer."))
_NYU_CONV = tuple(f"four_view_resnet.{c}.first_conv.weight" for c in ("cc", "l_cc", "r_cc")) + (
    "view_resnet.first_conv.weight",)


def _nyu(name: str, title: str, *, single: bool, heatmaps: bool) -> Family:
    """The NYU rows differ only in the head (view-wise breast level, or single-image image
    level) and in the heatmap channels; one augmented draw, as the metarepository's nyu_model."""
    channels = 3 if heatmaps else 1
    return Family(
        name, title, _NYU, "image" if single else "breast", "nyu", 1,
        "heatmaps" if heatmaps else None, _IMAGE_WISE if single else (_SPLIT,),
        _nyu_loader(channels, single=single),
        default_config="image-heatmaps" if heatmaps else "image",
        scores="probs" if single else "breast_probs",
        forward=_per_view_forward if single else _plain_forward,
        patch_model=heatmaps, channels=channels, first_conv=_NYU_CONV)


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("gmic", "GMIC", "Shen et al., Medical Image Analysis 2021", "image", None, 0, "cam",
           (("ds_net.", "left_postprocess_net.", "mil_attn_"),), _load_gmic),
    Family("glam", "GLAM", "Liu et al., MIDL 2021", "image", "glam", 0, "segmentation",
           (("global_network.downsampling_branch.", "detection_network.dn_resnet."),),
           _load_glam),
    _nyu("nyu-image", "NYU image-only", single=False, heatmaps=False),
    _nyu("nyu-image-heatmaps", "NYU image + heatmaps", single=False, heatmaps=True),
    _nyu("nyu-single", "NYU single-image", single=True, heatmaps=False),
    _nyu("nyu-single-heatmaps", "NYU single-image + heatmaps", single=True, heatmaps=True),
)}


def family(name: str) -> Family:
    """The family called ``name``; an unknown name lists the known ones."""
    if name not in FAMILIES:
        raise InputError(f"family {name!r} is unknown; pass one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def guess_family(path: str | Path) -> Family:
    """The one family whose signature the checkpoint's keys carry and whose input channels its
    first conv has (read with weights_only)."""
    from models.networks.checkpoints import read_state_dict

    state = {k[len("module."):] if k.startswith("module.") else k: v
             for k, v in read_state_dict(path, family="model").items()}
    carried = [f for f in FAMILIES.values() if _carries(state, f.signature)]
    matches = [f for f in carried if _channels(state, f) in (None, f.channels)]
    if len(matches) == 1:
        return matches[0]
    what = "several families" if matches else "no known family"
    why = ""
    if carried and not matches:
        why = f"; its first conv reads {_channels(state, carried[0])} channels, not 1 or 3"
    raise InputError(f"checkpoint {path} matches {what} ({', '.join(f.name for f in matches) or 'none'}"
                     f"{why}); pass --family, one of {', '.join(FAMILIES)}")


def _carries(keys: Iterable[str], signature: tuple[tuple[str, ...], ...]) -> bool:
    keys = list(keys)
    return any(all(any(k.startswith(p) for k in keys) for p in prefixes) for prefixes in signature)


def _channels(state: dict, fam: Family) -> int | None:
    """Input channels of the family's first conv in ``state`` (None: it names none there)."""
    key = next((k for k in fam.first_conv if k in state), None)
    return None if key is None or state[key].dim() != 4 else int(state[key].shape[1])
