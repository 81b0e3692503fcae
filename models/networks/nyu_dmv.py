"""NYU deep multi-view CNN: the view-wise four-view model and the single-image model.

Wu et al., "Deep neural networks improve radiologists' performance in breast cancer screening",
IEEE TMI 39 (2020); reference code nyukat/breast_cancer_classifier (AGPL, ``src/modeling``),
weights non-commercial. Written here from the paper and the fixture in
``shared/fixtures/nyu_dmv_reference`` (no official code is copied); module names follow the
official state-dict keys so the released files load with ``strict=True``.

Three networks, each with 1 input channel (image only) or 3 (image, benign heatmap, malignant
heatmap, in that order; see ``models.inference.heatmaps``):

* ``SplitBreastModel`` (the released view-wise model, ``sample_image_model.p`` /
  ``sample_imageheatmaps_model.p``): two ResNet-22 columns with first-conv padding 0, ``cc``
  for L-CC and R-CC and ``mlo`` for L-MLO and R-MLO (each registered under three names: ``cc``
  = ``l_cc`` = ``r_cc``, so the state dict lists every column tensor three times); per view a
  spatial mean (256); ``[left, right]`` concatenated per view angle -> ``fc1_*`` 512->512 + ReLU
  -> ``output_layer_*.fc_layer`` 512->8 -> (4, 2) -> log-softmax over the last axis. Rows are
  the labels ``LABELS`` (left_benign, right_benign, left_malignant, right_malignant), columns
  (negative, positive). The breast-level probability is the mean of the CC and MLO heads'
  positive probabilities per label (the official ``run_model`` aggregation, 1 epoch).
* ``ImageBreastModel`` (``*__ModeImage_weights.p``): the same columns with one head per view;
  only ever read through the single-image model.
* ``SingleImageBreastModel`` (the metarepository's ``nyu_model_single``): one column, ``fc1``
  256->256 + ReLU, ``output_layer.fc_layer`` 256->4 -> (2, 2) log-softmax; rows (benign,
  malignant). Its weights are a slice of an ``ImageBreastModel`` checkpoint
  (:func:`single_state_from_image_state`). The official forward ends with ``[:2]`` on the batch
  axis (a batch of more than two is silently truncated); this port returns every row.
  ``SingleImageViews`` holds the four views' slices of one checkpoint, for scoring whole exams.

Preprocessing each expects (``models.inference.windows``): the cropped view flipped to face right,
a window of CC 2677 x 1942 / MLO 2974 x 1748 pixels, the image channel standardised per image (mean
0, population sd 1); heatmap channels cut with the same window, not standardised.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.errors import InputError
from models.networks.checkpoints import load_checkpoint, read_state_dict
from models.networks.resnet22 import ResNet22

__all__ = [
    "CONFIGS",
    "INPUT_SIZES",
    "LABELS",
    "VIEWS",
    "DMVConfig",
    "FourViewResNet",
    "ImageBreastModel",
    "SingleImageBreastModel",
    "SingleImageViews",
    "SplitBreastModel",
    "breast_probabilities",
    "build_nyu_dmv",
    "build_nyu_single",
    "checkpoint_filter_fn",
    "load_nyu_dmv_checkpoint",
    "load_nyu_single_checkpoint",
    "load_nyu_single_views",
    "single_state_from_image_state",
]

VIEWS = ("L-CC", "R-CC", "L-MLO", "R-MLO")                  # official VIEWS.LIST
LABELS = ("left_benign", "right_benign", "left_malignant", "right_malignant")
SINGLE_LABELS = ("benign", "malignant")
INPUT_SIZES = {"CC": (2677, 1942), "MLO": (2974, 1748)}    # (rows, cols), official INPUT_SIZE_DICT
_ALIASES = {"cc": ("l_cc", "r_cc"), "mlo": ("l_mlo", "r_mlo")}


@dataclass(frozen=True)
class DMVConfig:
    """One variant of the NYU models.

    Args:
        input_channels: 1 = image only; 3 = image + benign + malignant heatmaps.
        width: base width of the ResNet-22 columns (16: 256 output channels).
        gaussian_noise_std: sd of the input noise added in training mode only (0.01 officially).
        input_shape: None for the official windows (``INPUT_SIZES``, one per view angle); else
            one (rows, cols) window for both angles, for small test and demo configs.
    """

    input_channels: int = 1
    width: int = 16
    gaussian_noise_std: float = 0.01
    input_shape: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.input_channels not in (1, 3):
            raise InputError(f"DMVConfig.input_channels is {self.input_channels!r}; pass 1 (image only) "
                             "or 3 (image + heatmaps)")

    @property
    def features(self) -> int:
        return 16 * self.width


CONFIGS = {
    "image": DMVConfig(input_channels=1),
    "image-heatmaps": DMVConfig(input_channels=3),
    # the official networks at a quarter of the width on one 512 x 320 window: the demo's
    # models (models.demo.train_windows) and the tests; the heatmap families load it with 3 channels
    "demo": DMVConfig(input_channels=1, width=4, input_shape=(512, 320)),
}


def _column(cfg: DMVConfig) -> ResNet22:
    return ResNet22(cfg.width, input_channels=cfg.input_channels, first_layer_padding=0)


def _noise(x: Tensor, module: nn.Module, std: float) -> Tensor:
    return x + torch.randn_like(x) * std if module.training and std else x


def _pool(h: Tensor) -> Tensor:
    return h.flatten(2).mean(-1)                                  # (N, C, h, w) -> (N, C)


class OutputLayer(nn.Module):
    """``fc_layer`` then reshape to (N, *shape) and log-softmax over the last axis."""

    def __init__(self, in_features: int, shape: tuple[int, int]) -> None:
        super().__init__()
        self.shape = shape
        self.fc_layer = nn.Linear(in_features, shape[0] * shape[1])

    def forward(self, h: Tensor) -> Tensor:
        return F.log_softmax(self.fc_layer(h).view(h.shape[0], *self.shape), dim=-1)


class FourViewResNet(nn.Module):
    """Two ResNet-22 columns: ``cc`` reads L-CC and R-CC, ``mlo`` reads L-MLO and R-MLO.

    ``l_cc``/``r_cc`` and ``l_mlo``/``r_mlo`` are the same module objects registered again, as
    in the official code, so the state dict (and a strict load) carries all three names.
    """

    def __init__(self, cfg: DMVConfig) -> None:
        super().__init__()
        self.cc = _column(cfg)
        self.mlo = _column(cfg)
        self.l_cc = self.cc
        self.l_mlo = self.mlo
        self.r_cc = self.cc
        self.r_mlo = self.mlo

    def column(self, view: str) -> ResNet22:
        return self.cc if view.endswith("CC") else self.mlo

    def forward(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        return {view: self.column(view)(x[view]) for view in VIEWS}


def _check_views(x: dict[str, Tensor], channels: int) -> None:
    missing = [v for v in VIEWS if v not in x]
    if missing:
        raise InputError(f"the four-view input lacks {missing}; pass a dict with keys {list(VIEWS)}")
    for v in VIEWS:
        if x[v].dim() != 4 or x[v].shape[1] != channels:
            raise InputError(f"view {v} has shape {tuple(x[v].shape)}; pass (N, {channels}, H, W) float32")


def breast_probabilities(log_softmax_cc: Tensor, log_softmax_mlo: Tensor) -> Tensor:
    """(N, 4) breast-level probabilities in ``LABELS`` order: per label, the mean of the CC and
    MLO heads' positive-class probabilities (official ``run_model``, one epoch)."""
    return (log_softmax_cc[:, :, 1].exp() + log_softmax_mlo[:, :, 1].exp()) / 2


class SplitBreastModel(nn.Module):
    """The view-wise four-view model (see the module docstring)."""

    def __init__(self, config: DMVConfig = DMVConfig()) -> None:
        super().__init__()
        self.config = config
        f = config.features
        self.four_view_resnet = FourViewResNet(config)
        self.fc1_cc = nn.Linear(2 * f, 2 * f)
        self.fc1_mlo = nn.Linear(2 * f, 2 * f)
        self.output_layer_cc = OutputLayer(2 * f, (4, 2))
        self.output_layer_mlo = OutputLayer(2 * f, (4, 2))

    def forward(self, x: dict[str, Tensor], *, intermediates: bool = False) -> dict[str, Tensor]:
        """Score one batch of exams.

        Parameters
        ----------
        x : dict view -> float32 tensor (N, input_channels, H, W), views ``VIEWS``; CC views
            2677 x 1942 and MLO views 2974 x 1748 for the released weights (other sizes run).

        Returns
        -------
        dict with
            ``CC``, ``MLO``: (N, 4, 2) log-softmax of each head; rows ``LABELS``, columns
            (negative, positive);
            ``breast_probs``: (N, 4) breast-level probability per label in ``LABELS`` order;
            with ``intermediates``: ``pooled_<view>`` (N, 256), ``fc1_cc``/``fc1_mlo`` (N, 512,
            before the ReLU) and ``logits_cc``/``logits_mlo`` (N, 8).
        """
        _check_views(x, self.config.input_channels)
        x = {v: _noise(x[v], self, self.config.gaussian_noise_std) for v in VIEWS}
        pooled = {v: _pool(h) for v, h in self.four_view_resnet(x).items()}
        out: dict[str, Tensor] = {}
        for angle, fc1, head in (("cc", self.fc1_cc, self.output_layer_cc),
                                 ("mlo", self.fc1_mlo, self.output_layer_mlo)):
            side = "CC" if angle == "cc" else "MLO"
            h = fc1(torch.cat([pooled[f"L-{side}"], pooled[f"R-{side}"]], dim=1))
            out[side] = head(F.relu(h))
            if intermediates:
                out[f"fc1_{angle}"] = h
                out[f"logits_{angle}"] = head.fc_layer(F.relu(h))
        out["breast_probs"] = breast_probabilities(out["CC"], out["MLO"])
        if intermediates:
            out.update({f"pooled_{v}": pooled[v] for v in VIEWS})
        return out


class ImageBreastModel(nn.Module):
    """The image-wise four-view model: the same columns, one (4, 2) head per view.

    The official code never runs it (its image-mode predictions assert (2, 2) heads); its
    checkpoints feed :class:`SingleImageBreastModel`. ``forward`` returns dict view -> (N, 4, 2).
    """

    def __init__(self, config: DMVConfig = DMVConfig()) -> None:
        super().__init__()
        self.config = config
        f = config.features
        self.four_view_resnet = FourViewResNet(config)
        for key in ("lcc", "rcc", "lmlo", "rmlo"):
            self.add_module(f"fc1_{key}", nn.Linear(f, f))
        for key in ("lcc", "rcc", "lmlo", "rmlo"):
            self.add_module(f"output_layer_{key}", OutputLayer(f, (4, 2)))

    def forward(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        _check_views(x, self.config.input_channels)
        x = {v: _noise(x[v], self, self.config.gaussian_noise_std) for v in VIEWS}
        out = {}
        for v, h in self.four_view_resnet(x).items():
            key = v.lower().replace("-", "")
            out[v] = getattr(self, f"output_layer_{key}")(F.relu(getattr(self, f"fc1_{key}")(_pool(h))))
        return out


class SingleImageBreastModel(nn.Module):
    """The single-image model: one column, benign and malignant heads (see the module docstring)."""

    def __init__(self, config: DMVConfig = DMVConfig()) -> None:
        super().__init__()
        self.config = config
        self.view_resnet = _column(config)
        self.fc1 = nn.Linear(config.features, config.features)
        self.output_layer = OutputLayer(config.features, (2, 2))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Score single views.

        Parameters
        ----------
        x : (N, input_channels, H, W) float32, one view (CC 2677 x 1942 or MLO 2974 x 1748);
            the weights must be those of that view (:func:`load_nyu_single_checkpoint`).

        Returns
        -------
        dict with ``log_softmax``: (N, 2, 2), rows (benign, malignant), columns (negative,
        positive); ``probs``: (N, 2) = exp(log_softmax[:, :, 1]), columns (benign, malignant).
        """
        if x.dim() != 4 or x.shape[1] != self.config.input_channels:
            raise InputError(f"input has shape {tuple(x.shape)}; pass (N, {self.config.input_channels}, H, W)")
        h = _pool(self.view_resnet(_noise(x, self, self.config.gaussian_noise_std)))
        y = self.output_layer(F.relu(self.fc1(h)))
        return {"log_softmax": y, "probs": y[:, :, 1].exp()}


class SingleImageViews(nn.Module):
    """The single-image model of each of the four views, sliced from one checkpoint: what
    scoring a whole exam image by image needs (L-CC and R-CC share a column but not ``fc1``)."""

    def __init__(self, config: DMVConfig = DMVConfig()) -> None:
        super().__init__()
        self.config = config
        self.view_models = nn.ModuleDict({_view_keys(v)[1]: SingleImageBreastModel(config) for v in VIEWS})

    def forward(self, x: Tensor, views: Sequence[str]) -> dict[str, Tensor]:
        """Score ``x`` (N, input_channels, H, W), row i through the model of ``views[i]``
        ('L-CC', ...); returns ``probs`` (N, 2), columns (benign, malignant)."""
        if len(views) != len(x):
            raise InputError(f"{len(views)} view names for a batch of {len(x)}; pass one per row")
        probs = x.new_empty(len(x), len(SINGLE_LABELS))
        for view in sorted(set(views)):
            rows = [i for i, v in enumerate(views) if v == view]
            probs[rows] = self.view_models[_view_keys(view)[1]](x[rows])["probs"]
        return {"probs": probs}


# --- building and loading -----------------------------------------------------------------------


def _resolve_config(config: str | DMVConfig, channels: int | None = None) -> DMVConfig:
    """The config named ``config``; ``channels`` overrides its input channels (a family says
    whether heatmaps come in, the config only the size)."""
    if not isinstance(config, DMVConfig):
        if config not in CONFIGS:
            raise InputError(f"unknown NYU model config {config!r}; pass one of {sorted(CONFIGS)}")
        config = CONFIGS[config]
    return config if channels is None else replace(config, input_channels=channels)


def build_nyu_dmv(config: str | DMVConfig = "image", *, weights: str | Path | None = None) -> SplitBreastModel:
    """The view-wise model in eval mode; ``weights``: a checkpoint path, loaded strictly."""
    if weights is not None:
        return load_nyu_dmv_checkpoint(weights, config)
    return SplitBreastModel(_resolve_config(config)).eval()


def build_nyu_single(config: str | DMVConfig = "image", *, view: str = "L-CC",
                     weights: str | Path | None = None) -> SingleImageBreastModel:
    """The single-image model for ``view`` in eval mode; ``weights`` as :func:`load_nyu_single_checkpoint`."""
    if weights is not None:
        return load_nyu_single_checkpoint(weights, view, config)
    _view_keys(view)
    return SingleImageBreastModel(_resolve_config(config)).eval()


def checkpoint_filter_fn(state_dict: dict, model: nn.Module | None = None) -> dict:
    """Map a four-view checkpoint to this module's keys.

    Unwraps ``{"model": sd}`` (the official format) and ``{"state_dict": sd}``, strips a
    ``module.`` (DataParallel) prefix, and completes the column aliases: a file holding only
    ``four_view_resnet.cc.*`` (or only ``l_cc``/``r_cc``) gets the other names of the same
    tensors, so files written by other ports load too.
    """
    for wrapper in ("model", "state_dict"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
    out = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}
    for canon, aliases in _ALIASES.items():
        names = (canon, *aliases)
        for key in list(out):
            for name in names:
                prefix = f"four_view_resnet.{name}."
                if key.startswith(prefix):
                    rest = key[len(prefix):]
                    for other in names:
                        out.setdefault(f"four_view_resnet.{other}.{rest}", out[key])
    return out


def load_nyu_dmv_checkpoint(path: str | Path, config: str | DMVConfig = "image", *,
                            channels: int | None = None) -> SplitBreastModel:
    """Load ``sample_image_model.p`` (config "image") or ``sample_imageheatmaps_model.p``
    ("image-heatmaps") strictly, ``weights_only=True``, on the CPU; eval mode. ``channels``
    overrides the config's input channels."""
    return load_checkpoint(path, SplitBreastModel(_resolve_config(config, channels)),
                           filter_fn=checkpoint_filter_fn, family="NYU view-wise")


def _view_keys(view: str) -> tuple[str, str]:
    if view not in VIEWS:
        raise InputError(f"view is {view!r}; pass one of {list(VIEWS)}")
    return view.split("-")[1].lower(), view.lower().replace("-", "")


def single_state_from_image_state(state: dict, view: str) -> dict:
    """The ``SingleImageBreastModel`` state for ``view`` sliced from an ``ImageBreastModel`` state:
    ``view_resnet.*`` <- ``four_view_resnet.<cc|mlo>.*``, ``fc1.*`` <- ``fc1_<lcc|rcc|lmlo|rmlo>.*``
    and the first 4 rows (benign and malignant) of ``output_layer_<view>.fc_layer``."""
    angle, key = _view_keys(view)
    prefix = f"four_view_resnet.{angle}."
    out = {"view_resnet." + k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    out.update({"fc1." + k[len(f"fc1_{key}."):]: v for k, v in state.items() if k.startswith(f"fc1_{key}.")})
    for leaf in ("weight", "bias"):
        src = f"output_layer_{key}.fc_layer.{leaf}"
        if src in state:
            out[f"output_layer.fc_layer.{leaf}"] = state[src][:4]
    return out


def load_nyu_single_checkpoint(path: str | Path, view: str,
                               config: str | DMVConfig = "image") -> SingleImageBreastModel:
    """Load the single-image model of ``view`` strictly from ``ImageOnly__ModeImage_weights.p``
    (config "image") or ``ImageHeatmaps__ModeImage_weights.p`` ("image-heatmaps"), i.e. an
    ``ImageBreastModel`` checkpoint, or from a file holding a single-image state dict."""
    model = SingleImageBreastModel(_resolve_config(config))
    _view_keys(view)
    raw = checkpoint_filter_fn(read_state_dict(path, family="NYU single-image"))
    return _load_single(model, raw, view, path)


def load_nyu_single_views(path: str | Path, config: str | DMVConfig = "image", *,
                          channels: int | None = None) -> SingleImageViews:
    """:func:`load_nyu_single_checkpoint` for all four views from one read of ``path``; a file
    holding one single-image state dict serves every view."""
    model = SingleImageViews(_resolve_config(config, channels))
    raw = checkpoint_filter_fn(read_state_dict(path, family="NYU single-image"))
    for view in VIEWS:
        _load_single(model.view_models[_view_keys(view)[1]], raw, view, path)
    return model.eval()


def _load_single(model: SingleImageBreastModel, raw: dict, view: str, path) -> SingleImageBreastModel:
    state = raw if any(k.startswith("view_resnet.") for k in raw) else single_state_from_image_state(raw, view)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        raise InputError(f"{path} is not a NYU single-image ({model.config.input_channels}-channel) or "
                         f"ImageBreastModel checkpoint: {len(missing)} keys missing, {len(unexpected)} "
                         f"unexpected, {len(wrong)} of the wrong shape (first: {first}); check the config")
    model.load_state_dict(state, strict=True)
    return model.eval()
