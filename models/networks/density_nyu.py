"""NYU breast density models (Wu et al., ICASSP 2018): the histogram baseline and the view-wise CNN.

Nan Wu, Krzysztof J. Geras, Yiqiu Shen, et al., "Breast density classification with deep
convolutional neural networks", ICASSP 2018; reference code nyukat/breast_density_classifier
(BSD 2-Clause). This file is our own re-implementation from the paper's description and the
fixture in ``shared/data/nyu_density`` (README + expected.json); module names follow the official
state-dict keys so the released ``model.p`` files load with ``strict=True``. Weights are never
shipped: the user passes the path of ``saved_models/BreastDensity_*/model.p``.

Histogram baseline, per exam: the 200 float32 features of `core.density.histogram.exam_features`
(a normalised 50-bin histogram of each view, in the order L-CC, R-CC, L-MLO, R-MLO, with three
recipes for NumPy's float32 rounding; torch-free, so they live in core), then ``fc1`` 200 -> 100,
ReLU, ``fc2`` 100 -> 4, softmax over the BI-RADS density classes (0 almost entirely fatty .. 3
extremely dense).

Sizes: the histogram does not depend on the image size, so other sizes are accepted (the
official code requires 2600 x 2000; ``require_official_size=True`` enforces it). The model was
trained on 8-bit images; 16-bit input works (the bins span each view's own range) but is outside
what the weights have seen.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.vocabulary import DENSITY_CATEGORY_NAMES as CATEGORY_NAMES
from core.density.histogram import NUM_BINS, VIEWS, check_exam, exam_features
from core.errors import InputError
from models.networks.checkpoints import read_error

__all__ = [
    "CLASS_NAMES",
    "CNN_MIN_SHAPE",
    "NYUDensityCNN",
    "NYUDensityPrediction",
    "NYUHistogramMLP",
    "build_nyu_density",
    "cnn_inputs",
    "load_nyu_density",
    "predict_density",
]

CNN_MIN_SHAPE = (1159, 1135)                  # smallest (H, W) whose conv5c output is >= 1 x 1
CLASS_NAMES = CATEGORY_NAMES                  # 0 almost entirely fatty .. 3 extremely dense


# --- networks ---------------------------------------------------------------------------------


class NYUHistogramMLP(nn.Module):
    """The histogram baseline: ``fc1`` 200 -> 100, ReLU, ``fc2`` 100 -> 4 (20,504 parameters)."""

    def __init__(self, num_bins: int = NUM_BINS) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4 * num_bins, 100)
        self.fc2 = nn.Linear(100, 4)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """x: (N, 200) float32 from `exam_features`. Returns ``logits`` and ``probabilities``, (N, 4)."""
        logits = self.fc2(F.relu(self.fc1(x)))
        return {"logits": logits, "probabilities": F.softmax(logits, dim=1)}


class _ViewPairConv(nn.Module):
    """One 3x3 valid conv layer with two weight sets: ``cc`` for both CC views, ``mlo`` for both MLOs."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.cc = nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride)
        self.mlo = nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride)

    def forward(self, views: dict[str, Tensor]) -> dict[str, Tensor]:
        return {v: F.relu((self.cc if v.endswith("CC") else self.mlo)(x)) for v, x in views.items()}


# (out channels, stride) of the 13 conv layers; the pooling between them is in `NYUDensityCNN`.
_CNN_LAYERS = ((32, 2), (64, 2), (64, 1), (64, 1), (128, 1), (128, 1), (128, 1),
               (128, 1), (128, 1), (128, 1), (256, 1), (256, 1), (256, 1))
_POOL_AFTER = {0: 3, 3: 2, 6: 2, 9: 2}   # layer index -> max-pool size (and stride) after it
_PAD_BEFORE_POOL = 6                      # one zero column on the right before that pool


class NYUDensityCNN(nn.Module):
    """The paper's multi-view CNN (5,813,252 parameters; weights not in the fixture).

    conv1 32 s2 -> 3x3 max-pool -> conv2a 64 s2, 2b, 2c -> 2x2 pool -> conv3a/b/c 128 -> one zero
    column on the right -> 2x2 pool -> conv4a/b/c 128 -> 2x2 pool -> conv5a/b/c 256 -> global
    average pool -> concat (L-CC, R-CC, L-MLO, R-MLO) = 1024 -> fc1 1024 ReLU -> fc2 4.
    All convs are 3x3, unpadded, ReLU; CC views share one weight set and MLO views the other.
    ``_conv_layer_ls`` keeps the official module name so the released state dict loads strictly.
    """

    def __init__(self) -> None:
        super().__init__()
        layers, in_ch = [], 1
        for out_ch, stride in _CNN_LAYERS:
            layers.append(_ViewPairConv(in_ch, out_ch, stride))
            in_ch = out_ch
        self._conv_layer_ls = nn.ModuleList(layers)
        self.fc1 = nn.Linear(4 * in_ch, 4 * in_ch)
        self.fc2 = nn.Linear(4 * in_ch, 4)

    def forward(self, views: dict[str, Tensor]) -> dict[str, Tensor]:
        """views: the four `VIEWS`, each (N, 1, H, W) float32 standardised (`cnn_inputs`).

        Returns ``logits`` and ``probabilities``, each (N, 4).
        """
        x = {v: views[v] for v in VIEWS}
        for i, layer in enumerate(self._conv_layer_ls):
            x = layer(x)
            if i == _PAD_BEFORE_POOL:
                x = {v: F.pad(t, (0, 1, 0, 0)) for v, t in x.items()}
            if i in _POOL_AFTER:
                k = _POOL_AFTER[i]
                x = {v: F.max_pool2d(t, kernel_size=k, stride=k) for v, t in x.items()}
        h = torch.cat([x[v].flatten(2).mean(-1) for v in VIEWS], dim=1)
        logits = self.fc2(F.relu(self.fc1(h)))
        return {"logits": logits, "probabilities": F.softmax(logits, dim=1)}


_BUILDERS = {"histogram": NYUHistogramMLP, "cnn": NYUDensityCNN}


def build_nyu_density(variant: str = "histogram") -> nn.Module:
    """A freshly initialised NYU density model: 'histogram' (the default) or 'cnn'."""
    if variant not in _BUILDERS:
        raise InputError(f"variant is {variant!r}; pass 'histogram' or 'cnn'")
    return _BUILDERS[variant]()


def _state_keys(variant: str) -> set[str]:
    with torch.device("meta"):      # names only: no memory, no random init
        return set(_BUILDERS[variant]().state_dict())


def _variant_of(keys: set[str]) -> str | None:
    for variant in _BUILDERS:
        if keys == _state_keys(variant):
            return variant
    if any(k.startswith("_conv_layer_ls.") for k in keys):
        return "cnn"
    if any(k.startswith(("fc1.", "fc2.")) for k in keys) and len(keys) <= 4:
        return "histogram"
    return None


def load_nyu_density(path: str | Path, *, variant: str | None = None) -> nn.Module:
    """Load the released NYU density weights (legacy or zip ``torch.save`` state dict) on the CPU.

    Parameters
    ----------
    path : path to ``BreastDensity_BaselineHistogramModel/model.p`` (or the CNN's ``model.p``).
    variant : {'histogram', 'cnn', None}, keyword-only
        None detects the variant from the state-dict keys.

    Returns
    -------
    NYUHistogramMLP or NYUDensityCNN, in eval mode, on the CPU.
    """
    path = Path(path)
    if variant is not None and variant not in _BUILDERS:
        raise InputError(f"variant is {variant!r}; pass 'histogram', 'cnn' or None to detect it")
    if not path.is_file():
        raise InputError(f"NYU density weights {path} do not exist; pass the path of the released model.p")
    try:
        raw = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # pickle / zip errors come in many types
        raise read_error(path, "NYU density", exc) from exc
    if not isinstance(raw, Mapping) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise InputError(f"NYU density weights {path} hold a {type(raw).__name__}, not a state dict "
                         "of tensors; pass the released model.p")
    found = _variant_of(set(raw))
    if found is None:
        raise InputError(f"NYU density weights {path} have keys {sorted(raw)[:4]}... matching neither the "
                         "histogram model (fc1/fc2) nor the CNN (_conv_layer_ls.*); pass the released model.p")
    if variant is not None and found != variant:
        raise InputError(f"NYU density weights {path} are the {found} variant's, not the {variant}'s; "
                         f"pass variant={found!r} or None")
    own = _state_keys(found)
    if set(raw) != own:
        missing, unexpected = sorted(own - set(raw)), sorted(set(raw) - own)
        raise InputError(f"NYU density weights {path} ({found}) miss {missing[:3]} ({len(missing)}) and have "
                         f"unexpected {unexpected[:3]} ({len(unexpected)}); pass the released model.p")
    model = _BUILDERS[found]()
    try:
        model.load_state_dict(dict(raw), strict=True)
    except RuntimeError as exc:
        raise InputError(f"NYU density weights {path} ({found}) have tensors of the wrong shape: "
                         f"{str(exc).splitlines()[-1].strip()}") from exc
    return model.eval()


# --- inference --------------------------------------------------------------------------------


def cnn_inputs(images: Mapping[str, np.ndarray], *, require_official_size: bool = False,
               device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """The CNN's input: each view as float32 (1, 1, H, W), minus its mean, over its std."""
    views = check_exam(images, require_official_size=require_official_size)
    out = {}
    for v in VIEWS:
        h, w = views[v].shape
        if h < CNN_MIN_SHAPE[0] or w < CNN_MIN_SHAPE[1]:
            raise InputError(f"view {v} is {h} x {w}; the CNN's unpadded convs need at least "
                             f"{CNN_MIN_SHAPE[0]} x {CNN_MIN_SHAPE[1]} (official: 2600 x 2000)")
        x = views[v].astype(np.float32)
        x -= x.mean()
        x /= x.std()
        out[v] = torch.from_numpy(x)[None, None].to(device)
    return out


@dataclass(frozen=True)
class NYUDensityPrediction:
    """probabilities, logits: float64 (4,), class i = ``CLASS_NAMES[i]``; category: argmax;
    variant: 'histogram' or 'cnn'; features: float32 (200,) histogram input (None for the CNN)."""

    probabilities: np.ndarray
    logits: np.ndarray
    category: int
    variant: str
    features: np.ndarray | None


def predict_density(model: nn.Module, images: Mapping[str, np.ndarray], *, recipe: str = "reference",
                    require_official_size: bool = False) -> NYUDensityPrediction:
    """Run a loaded NYU density model on one exam.

    Parameters
    ----------
    model : NYUHistogramMLP or NYUDensityCNN (from `load_nyu_density`); its device is used.
    images : mapping with the four `VIEWS` -> ndarray (H, W) integer gray levels.
    recipe : histogram arithmetic (histogram model only), see
        `core.density.histogram.histogram_details`.
    require_official_size : raise unless every view is 2600 x 2000.

    Returns
    -------
    NYUDensityPrediction
    """
    device = next(model.parameters()).device
    if isinstance(model, NYUHistogramMLP):
        features = exam_features(images, recipe=recipe, require_official_size=require_official_size)
        x, variant = torch.from_numpy(features)[None].to(device), "histogram"
    elif isinstance(model, NYUDensityCNN):
        features, variant = None, "cnn"
        x = cnn_inputs(images, require_official_size=require_official_size, device=device)
    else:
        raise InputError(f"model is a {type(model).__name__}; pass one from load_nyu_density")
    with torch.no_grad():
        out = model(x)
    probs = out["probabilities"][0].double().cpu().numpy()
    return NYUDensityPrediction(probs, out["logits"][0].double().cpu().numpy(),
                                int(np.argmax(probs)), variant, features)
